"""End-to-end checks of client assertions: private_key_jwt with an RSA key in PEM and an EC key
as a JWK, and client_secret_jwt, against oidc-provider, which verifies the assertions with its
own JOSE library; the tokens it issues are verified again here. Keys are made at run time by
Python's `cryptography`, independently of tokenproxy. Called from check.py."""
import base64
import hashlib
import json
import os
import subprocess

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


def make_keys(tmp):
    """Writes the private keys tokenproxy reads; returns the env for the IdP and the paths."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    paths = {"RSA_KEY": os.path.join(tmp, "rsa-key.pem"), "EC_JWK_FILE": os.path.join(tmp, "ec-key.jwk"),
             "OTHER_KEY": os.path.join(tmp, "other-key.pem")}
    for key, path in [(rsa_key, paths["RSA_KEY"]), (other, paths["OTHER_KEY"])]:
        with open(path, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    with open(paths["EC_JWK_FILE"], "w") as f:
        f.write(ECAlgorithm.to_jwk(ec_key))
    idp_env = {"RSA_JWK": RSAAlgorithm.to_jwk(rsa_key.public_key()),
               "EC_JWK": ECAlgorithm.to_jwk(ec_key.public_key()),
               "HMAC_SECRET": "e2e-hmac-" + os.urandom(24).hex()}
    return idp_env, paths


def thumbprint(public_jwk_json):
    """RFC 7638, computed here rather than by tokenproxy."""
    jwk = json.loads(public_jwk_json)
    members = {"RSA": ["e", "kty", "n"], "EC": ["crv", "kty", "x", "y"]}[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def checks(env, check):
    def each_method():
        stats_before = env.stats()
        for upstream, client in [("rsakeyed", "rsa-key-client"), ("eckeyed", "ec-key-client"),
                                 ("hmacsigned", "hmac-client")]:
            r = requests.get(f"http://{upstream}.e2e.test/echo", timeout=10, proxies={"http": env.fwd})
            assert r.status_code == 200, (upstream, r.status_code, r.text)
            env.verify(r.text, "https://inventory.e2e.test", client, "inventory:read")
        assert env.stats() == stats_before, "no new token requests: they were made at start"
        metrics = requests.get(env.admin("/metrics"), timeout=5).text
        for method in ["private_key_jwt", "client_secret_jwt"]:
            assert f'tokenproxy_token_fetches_by_auth_method_total{{auth_method="{method}",outcome="success"}}' in metrics
    check("private_key_jwt (RSA PEM, PS256; EC JWK, ES256, token endpoint by discovery) and client_secret_jwt "
          "get verified JWTs from oidc-provider",
          each_method)

    def status_shows_thumbprints():
        status = requests.get(env.admin("/status"), timeout=5).json()
        by_name = {u["upstream"]: u for u in status["upstreams"]}
        assert by_name["rsakeyed"]["auth_method"] == "private_key_jwt"
        assert by_name["rsakeyed"]["credential"]["key_thumbprint"] == thumbprint(env.idp_env["RSA_JWK"])
        assert by_name["eckeyed"]["credential"]["key_thumbprint"] == thumbprint(env.idp_env["EC_JWK"])
        text = json.dumps(status)
        with open(env.key_paths["RSA_KEY"]) as f:
            assert all(line not in text for line in f.read().splitlines() if "-----" not in line)
    check("/status shows the key thumbprint (RFC 7638, checked independently), never the key", status_shows_thumbprints)

    def wrong_key_refused():
        cfg = os.path.join(env.tmp, "wrong-key.yaml")
        with open(cfg, "w") as f:
            f.write(f"clients:\n  rsa-key:\n    token_endpoint: http://127.0.0.1:{env.idp_port}/token\n"
                    f"    client_id: rsa-key-client\n    auth_method: private_key_jwt\n"
                    f"    private_key: {{ file: {env.key_paths['OTHER_KEY']} }}\n    signing_alg: PS256\n"
                    f"tokens:\n  wait_timeout: 2s\n"
                    f"upstreams:\n  api:\n    url: http://127.0.0.1:{env.http_port}\n    client: rsa-key\n"
                    f"    scopes: [inventory:read]\n    resource: [https://inventory.e2e.test]\n")
        r = subprocess.run([env.binary, "token", "-c", cfg, "api"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 69, (r.returncode, r.stderr)
        assert "invalid_client" in r.stderr, r.stderr
        with open(env.key_paths["OTHER_KEY"]) as f:
            body = [line for line in f.read().splitlines() if "-----" not in line]
        assert not any(line in r.stderr + r.stdout for line in body), "key material in the output"
    check("an assertion signed with a key the server does not know is refused (invalid_client, exit 69)",
          wrong_key_refused)
