"""End-to-end checks of credentials that are not long-lived secrets: the real tokenproxy binary
against federation_server.py (PyJWT verifies every assertion and subject token against its
issuer's JWKS) and oidc-provider (the first leg of an exchange chain). Projected tokens are
minted by the fake Kubernetes issuer and written the way kubelet writes them; the GitHub
Actions runner is faked on the same server. A tokenproxy of its own runs at RUST_LOG=trace so
that the canary check reads everything it logs. Called from check.py."""
import os
import re
import subprocess
import sys
import time

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from procs import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
SA_EMAIL = "orders@demo-project.iam.gserviceaccount.com"
K8S_SUB = "system:serviceaccount:shop:orders"
NO_PROXY = {"http": None, "https": None}


class Kubelet:
    """Writes a projected token the way kubelet's atomic writer does: a new timestamped
    directory, a `..data` symlink swapped to it by rename, `token` pointing through it."""

    def __init__(self, root, fed):
        self.root, self.fed, self.n = root, fed, 0
        os.makedirs(root, exist_ok=True)

    def mint(self, aud, lifetime=600, sub=K8S_SUB):
        r = requests.get(f"{self.fed}/k8s/mint", params={"sub": sub, "aud": aud, "lifetime": lifetime},
                         timeout=5, proxies=NO_PROXY)
        r.raise_for_status()
        return r.text

    def write(self, token):
        self.n += 1
        d = f"..2026_12_04_00_00_{self.n:02d}.{os.getpid()}"
        os.mkdir(os.path.join(self.root, d))
        with open(os.path.join(self.root, d, "token"), "w") as f:
            f.write(token)
        tmp = os.path.join(self.root, "..data_tmp")
        os.symlink(d, tmp)
        os.rename(tmp, os.path.join(self.root, "..data"))
        link = os.path.join(self.root, "token")
        if not os.path.islink(link):
            os.symlink("..data/token", link)
        return link


def service_account_key(tmp, token_url):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = os.path.join(tmp, "sa-key.json")
    import json
    with open(path, "w") as f:
        json.dump({"type": "service_account", "project_id": "demo-project", "private_key_id": "sa-key-1",
                   "private_key": pem, "client_email": SA_EMAIL, "client_id": "1234567890",
                   "token_uri": token_url}, f)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return path, public, pem


CONFIG = """
proxy:
  listen: 127.0.0.1:{fwd}
admin:
  listen: 127.0.0.1:{admin}
tokens:
  backoff_min: 200ms
  backoff_max: 1s
  min_refresh_interval: 200ms
clients:
  fed:
    token_endpoint: {fed}/token
    auth_method: client_assertion
    client_assertion: {{ file: {fed_token} }}
  gha:
    token_endpoint: {fed}/token
    client_id: orders-ci
    auth_method: client_assertion
    client_assertion: {{ github_actions: {{ audience: api://AzureADTokenExchange }} }}
  sts:
    token_endpoint: {fed}/token
    grant: token_exchange
    auth_method: none
    subject_token: {{ file: {sts_token} }}
    actor_token: {{ file: {actor_token} }}
  home:
    token_endpoint: http://127.0.0.1:{idp_port}/token
    client_id: basic-client
    client_secret: {{ env: E2E_BASIC_SECRET }}
  chain:
    token_endpoint: {fed}/token
    grant: token_exchange
    auth_method: none
    subject_token: {{ client: home, resource: [https://inventory.e2e.test], scopes: [inventory:read] }}
  google:
    grant: jwt_bearer
    private_key: {{ file: {sa_key} }}
    scopes_in: assertion
  basic:
    token_endpoint: {fed}/token
    client_id: basic
    client_secret: {{ env: FED_BASIC_SECRET }}
upstreams:
  fed:
    url: http://127.0.0.1:{http}
    match: [fed.e2e.test]
    client: fed
    scopes: [orders:read]
  gha:
    url: http://127.0.0.1:{http}
    match: [gha.e2e.test]
    client: gha
    scopes: [deploy]
  sts:
    url: http://127.0.0.1:{http}
    match: [sts.e2e.test]
    client: sts
    scopes: [sts:read]
    audience: https://api.e2e.test
  chain:
    url: http://127.0.0.1:{http}
    match: [chain.e2e.test]
    client: chain
    scopes: [chain:read]
  google:
    url: http://127.0.0.1:{http}
    match: [google.e2e.test]
    client: google
    scopes: [https://www.googleapis.com/auth/cloud-platform]
  basic:
    url: http://127.0.0.1:{http}
    match: [basic.e2e.test]
    client: basic
    scopes: [baseline]
"""


def checks(env, check, start, wait_http):
    tmp = os.path.join(env.tmp, "federation")
    os.makedirs(tmp, exist_ok=True)
    fed_port, fwd_port, admin_port = free_port(), free_port(), free_port()
    fed = f"http://127.0.0.1:{fed_port}"
    runner_token = "e2e-runner-" + os.urandom(8).hex()
    basic_secret = "e2e-fedbasic-" + os.urandom(8).hex()
    sa_key, sa_public, sa_private = service_account_key(tmp, f"{fed}/token")
    start("federation server", [sys.executable, os.path.join(HERE, "federation_server.py")], env={
        "FED_PORT": str(fed_port), "OIDC_ISSUER": f"http://127.0.0.1:{env.idp_port}", "SA_EMAIL": SA_EMAIL,
        "SA_PUBLIC_PEM": sa_public, "RUNNER_TOKEN": runner_token, "BASIC_SECRET": basic_secret, "TTL": "4"},
        log=os.path.join(tmp, "federation_server.log"))
    wait_http(f"{fed}/k8s/openid/v1/jwks")
    fed_kubelet = Kubelet(os.path.join(tmp, "fed-token"), fed)
    sts_kubelet = Kubelet(os.path.join(tmp, "sts-token"), fed)
    actor_kubelet = Kubelet(os.path.join(tmp, "actor-token"), fed)
    presented = []  # every assertion and subject token handed to tokenproxy: canaries

    def give(kubelet, token):
        presented.append(token)
        return kubelet.write(token)

    fed_token = give(fed_kubelet, fed_kubelet.mint("fed-idp"))
    sts_token = give(sts_kubelet, sts_kubelet.mint("sts"))
    actor_token = give(actor_kubelet, actor_kubelet.mint("sts", sub="system:serviceaccount:shop:gateway"))
    cfg = os.path.join(tmp, "tokenproxy.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(fwd=fwd_port, admin=admin_port, fed=fed, fed_token=fed_token, sts_token=sts_token,
                              actor_token=actor_token, idp_port=env.idp_port, sa_key=sa_key, http=env.http_port))
    proxy_env = {"RUST_LOG": "trace", "E2E_BASIC_SECRET": env.basic_secret, "FED_BASIC_SECRET": basic_secret,
                 "ACTIONS_ID_TOKEN_REQUEST_URL": f"{fed}/actions/token?api-version=2.0",
                 "ACTIONS_ID_TOKEN_REQUEST_TOKEN": runner_token}
    log = os.path.join(tmp, "tokenproxy.log")
    start("tokenproxy (federation)", [env.binary, "run", "-c", cfg], env=proxy_env, log=log)
    admin = f"http://127.0.0.1:{admin_port}"
    fwd = f"http://127.0.0.1:{fwd_port}"
    issued_keys = jwt.PyJWKClient(f"{fed}/jwks")

    def call(host):
        return requests.get(f"http://{host}/echo", proxies={"http": fwd}, timeout=10)

    def verified(host):
        r = call(host)
        assert r.status_code == 200, (host, r.status_code, r.text[:300])
        assert r.text.startswith("Bearer "), r.text[:40]
        token = r.text[len("Bearer "):]
        key = issued_keys.get_signing_key_from_jwt(token)
        return jwt.decode(token, key.key, algorithms=["RS256"], audience="https://api.e2e.test", issuer=fed)

    def stats():
        return requests.get(f"{fed}/__stats", timeout=5, proxies=NO_PROXY).json()

    def status_row(name):
        rows = requests.get(f"{admin}/status", timeout=5).json()["upstreams"]
        return next(u for u in rows if u["upstream"] == name)

    def all_ready():
        wait_http(f"{admin}/readyz", timeout=30)
    check("federation: tokenproxy is ready with no long-lived secret but the baseline's", all_ready)

    def federated_assertion():
        claims = verified("fed.e2e.test")
        assert claims["client_id"] == "orders-workload" and claims["sub"] == K8S_SUB, claims
        assert claims["scope"] == "orders:read", claims
        row = status_row("fed")
        a = row["presented"]["client_assertion"]
        assert (a["source"], a["issuer"], a["subject"]) == ("file", f"{fed}/k8s", K8S_SUB), a
    check("federation: a projected service-account token is the client assertion (PyJWT verifies it "
          "against the issuer's JWKS; the client is found from iss and sub)", federated_assertion)

    def rotation():
        fresh = fed_kubelet.mint("fed-idp")
        give(fed_kubelet, fresh)
        want = jwt.decode(fresh, options={"verify_signature": False})["jti"]
        deadline = time.time() + 15
        while time.time() < deadline and stats()["last_jti"].get("orders-workload") != want:
            time.sleep(0.2)
        assert stats()["last_jti"].get("orders-workload") == want, "the rotated token was never presented"
        verified("fed.e2e.test")
    check("federation: a projected token rotated by kubelet's ..data swap is the one sent at the next "
          "fetch, with no restart", rotation)

    def expired_missing_truncated_wrong_audience():
        refused_before = stats()["refused"]
        requests_before = stats()["requests"]
        # Expired: written now, already past its exp. Tokens last 4 s, so the held one runs out.
        give(fed_kubelet, fed_kubelet.mint("fed-idp", lifetime=-30))
        deadline = time.time() + 15
        r = call("fed.e2e.test")
        while time.time() < deadline and r.status_code == 200:
            time.sleep(0.3)
            r = call("fed.e2e.test")
        assert r.status_code == 503 and r.json()["error"] == "assertion_unavailable", (r.status_code, r.text)
        assert "expired" in r.json()["message"], r.text
        ready = requests.get(f"{admin}/readyz", timeout=5)
        assert ready.status_code == 503 and "fed" in ready.text, ready.text
        # Truncated (a half-written file) and missing: still never sent.
        whole = fed_kubelet.mint("fed-idp")
        presented.append(whole)
        fed_kubelet.write(whole[: len(whole) // 2])
        time.sleep(1.5)
        r = call("fed.e2e.test")
        assert r.json()["error"] == "assertion_unavailable" and "not usable" in r.json()["message"], r.text
        os.unlink(os.path.join(fed_kubelet.root, "token"))
        time.sleep(1.5)
        r = call("fed.e2e.test")
        assert "cannot be read" in r.json()["message"], r.text
        assert stats()["refused"] == refused_before, "an unusable assertion reached the server"
        # Wrong audience: sent (tokenproxy cannot know it), refused by the server, said clearly.
        wrong = fed_kubelet.mint("someone-else")
        presented.append(wrong)
        fed_kubelet.write(wrong)
        deadline = time.time() + 15
        while time.time() < deadline and stats()["refused"] == refused_before:
            time.sleep(0.2)
        assert any("Audience doesn't match" in x or "audience" in x.lower() for x in stats()["refusals"]), stats()
        deadline = time.time() + 10
        while time.time() < deadline and "invalid_client" not in (status_row("fed")["last_error"] or ""):
            time.sleep(0.2)
        assert "invalid_client" in (status_row("fed")["last_error"] or ""), status_row("fed")
        assert requests.get(f"{admin}/livez", timeout=5).status_code == 200
        # A good token appears: recovery with no restart.
        give(fed_kubelet, fed_kubelet.mint("fed-idp"))
        deadline = time.time() + 40
        while time.time() < deadline and call("fed.e2e.test").status_code != 200:
            time.sleep(0.5)
        verified("fed.e2e.test")
        assert stats()["requests"] > requests_before
    check("federation: expired, truncated and missing assertions are never sent (503 assertion_unavailable, "
          "/readyz 503), a wrong audience is refused by the server with a clear error, and a fresh "
          "token recovers", expired_missing_truncated_wrong_audience)

    def github_actions():
        claims = verified("gha.e2e.test")
        assert claims["client_id"] == "orders-ci" and claims["sub"].startswith("repo:acme/orders"), claims
        assert status_row("gha")["presented"]["client_assertion"]["source"] == "github_actions"
    check("federation: a GitHub Actions OIDC token, asked of the runner, is the client assertion", github_actions)

    def exchange():
        claims = verified("sts.e2e.test")
        assert claims["grant"] == "token_exchange" and claims["sub"] == K8S_SUB, claims
        assert claims["act"] == {"sub": "system:serviceaccount:shop:gateway"}, claims
        assert claims["audience"] == "https://api.e2e.test" and claims["scope"] == "sts:read", claims
        chained = verified("chain.e2e.test")
        assert chained["grant"] == "token_exchange" and chained["sub"] == "basic-client", chained
        assert chained["exchanged_from"] == f"http://127.0.0.1:{env.idp_port}", chained
    check("federation: token exchange (RFC 8693) of a projected token with an actor token, and of an "
          "oidc-provider access token (another client's) at a second server", exchange)

    def google():
        claims = verified("google.e2e.test")
        assert claims["grant"] == "jwt_bearer" and claims["client_id"] == SA_EMAIL, claims
        assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform", claims
    check("federation: the JWT-bearer grant signed with a Google service-account JSON key (scope claim, kid, "
          "issuer and token_uri from the file) is verified by the server", google)

    def token_and_exec():
        clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        run_env = {**clean, **proxy_env, "RUST_LOG": "warn"}
        raw = subprocess.run([env.binary, "token", "-c", cfg, "google"], capture_output=True, text=True,
                             timeout=60, env=run_env)
        assert raw.returncode == 0, raw.stderr[-500:]
        key = issued_keys.get_signing_key_from_jwt(raw.stdout.strip())
        jwt.decode(raw.stdout.strip(), key.key, algorithms=["RS256"], audience="https://api.e2e.test")
        chained = subprocess.run([env.binary, "token", "-c", cfg, "chain"], capture_output=True, text=True,
                                 timeout=60, env=run_env)
        assert chained.returncode == 0, chained.stderr[-500:]
        out = subprocess.run([env.binary, "exec", "-c", cfg, "--ephemeral", "--", "curl", "-sS", "--fail",
                              "http://gha.e2e.test/echo"], capture_output=True, text=True, timeout=60, env=run_env)
        assert out.returncode == 0, out.stderr[-500:]
        assert out.stdout.startswith("Bearer "), out.stdout[:40]
    check("federation: `tokenproxy token` (JWT-bearer, and an exchange chain) and `tokenproxy exec` in a "
          "GitHub Actions job with no stored secret", token_and_exec)

    def metrics_and_latency():
        text = requests.get(f"{admin}/metrics", timeout=5).text
        for grant in ["client_credentials", "token_exchange", "jwt_bearer"]:
            assert f'tokenproxy_token_fetches_by_grant_total{{grant="{grant}",outcome="success"}}' in text, grant
        assert 'tokenproxy_token_fetches_by_auth_method_total{auth_method="client_assertion",outcome="success"}' in text
        assert re.search(r'tokenproxy_token_fetches_total\{outcome="assertion_unavailable",upstream="fed"\} [1-9]', text)
        # Fetch latency per method against client_secret_basic on the same server: `tokenproxy token`
        # run 9 times per upstream (process start, config, one token request; the same for all,
        # so the differences are the methods'), median wall time.
        clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        run_env = {**clean, **proxy_env, "RUST_LOG": "warn"}
        print("     `tokenproxy token` wall time, median of 9 (runs interleaved), same server:")
        ups = ["basic", "fed", "gha", "sts", "chain", "google"]
        times = {up: [] for up in ups}
        for _ in range(9):
            for up in ups:
                t0 = time.perf_counter()
                r = subprocess.run([env.binary, "token", "-c", cfg, up], capture_output=True, text=True,
                                   timeout=60, env=run_env)
                times[up].append(time.perf_counter() - t0)
                assert r.returncode == 0, (up, r.stderr[-300:])
        medians = {up: sorted(t)[4] * 1000 for up, t in times.items()}
        for up, ms in medians.items():
            print(f"       {up:7s} {ms:6.1f} ms ({ms - medians['basic']:+.1f} ms against client_secret_basic)")
    check("federation: metrics by grant and auth method, assertion_unavailable counted; fetch latency printed",
          metrics_and_latency)

    def canary():
        with open(log, errors="replace") as f:
            text = f.read()
        outputs = {"log": text}
        for path in ["/metrics", "/status", "/readyz"]:
            outputs[path] = requests.get(f"{admin}{path}", timeout=5).text
        canaries = [runner_token, basic_secret, sa_private.splitlines()[5]]
        for token in presented:
            canaries += [token, token.split(".")[2], token.split(".")[1][:40]]
        for where, content in outputs.items():
            for c in canaries:
                if c and c in content:
                    raise AssertionError(f"a presented token, key or secret reached the {where}")
        assert "trace" in text.lower() or "TRACE" in text, "the log was not at trace level"
    check("federation: no assertion, subject or actor token, runner token or key in the trace log, metrics, "
          "/status or /readyz", canary)
