#!/usr/bin/env python3
"""An authorization server for credentials that are not long-lived secrets, with PyJWT and
none of tokenproxy's code, for the end-to-end tests. It plays three parties on one port:

- a Kubernetes service-account issuer (`/k8s`: OIDC metadata and JWKS, and `/k8s/mint`, which
  the test calls the way kubelet calls the TokenRequest API);
- a GitHub Actions runner (`/actions/token?audience=…`, bearer-authenticated with the runner's
  request token, answering `{"value": <OIDC token>}`; its issuer is `/gha`);
- the authorization server itself (`/token`), which verifies every presented token against
  its issuer's JWKS, fetched over HTTP with PyJWKClient:
  * `client_credentials` with a federated `client_assertion` (RFC 7523 §2.2): a Kubernetes
    token with audience `fed-idp`, or a GitHub Actions token with audience
    `api://AzureADTokenExchange`; the client is found from (iss, sub), as Entra's federated
    identity credentials do; a `client_id`, if sent, must be that client's;
  * `client_credentials` with `client_secret_basic` (client `basic`), for the latency baseline;
  * `token-exchange` (RFC 8693): a Kubernetes subject token with audience `sts`, or an access
    token from oidc-provider (verified with oidc-provider's JWKS), optional actor token;
  * `jwt-bearer` (RFC 7523 §2.1): an assertion signed with a service account's key (its public
    key given in SA_PUBLIC_PEM), `iss` = the account's email, `aud` = this token endpoint,
    a `scope` claim (Google's form), at most an hour long.
  Tokens it issues are RS256 JWTs (`/jwks`) naming the client, the subject, the scope and the
  grant. Every refusal is logged and counted; `/__stats` shows the counts, the `jti` of the
  last assertion each client presented, and the last refusals.

Env: FED_PORT, OIDC_ISSUER (oidc-provider's issuer URL), SA_EMAIL, SA_PUBLIC_PEM,
RUNNER_TOKEN, BASIC_SECRET, TTL (seconds of issued tokens). Runs until terminated.
"""
import base64
import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

PORT = int(os.environ["FED_PORT"])
BASE = f"http://127.0.0.1:{PORT}"
TOKEN_URL = f"{BASE}/token"
OIDC_ISSUER = os.environ["OIDC_ISSUER"]
SA_EMAIL = os.environ["SA_EMAIL"]
SA_PUBLIC = serialization.load_pem_public_key(os.environ["SA_PUBLIC_PEM"].encode())
RUNNER_TOKEN = os.environ["RUNNER_TOKEN"]
BASIC_SECRET = os.environ["BASIC_SECRET"]
TTL = int(os.environ.get("TTL", "3600"))

# Federated identity credentials: (issuer, subject) -> client.
FEDERATED = {
    (f"{BASE}/k8s", "system:serviceaccount:shop:orders"): "orders-workload",
    (f"{BASE}/gha", "repo:acme/orders:ref:refs/heads/main"): "orders-ci",
}
AUDIENCE = {f"{BASE}/k8s": "fed-idp", f"{BASE}/gha": "api://AzureADTokenExchange"}


def make_key(kid):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return key, jwk


KEYS = {name: make_key(name) for name in ("k8s", "gha", "as")}
JWKS = {
    f"{BASE}/k8s": jwt.PyJWKClient(f"{BASE}/k8s/openid/v1/jwks"),
    f"{BASE}/gha": jwt.PyJWKClient(f"{BASE}/gha/jwks"),
    OIDC_ISSUER: jwt.PyJWKClient(f"{OIDC_ISSUER}/jwks"),
}
LOCK = threading.Lock()
STATS = {"issued": {}, "refused": 0, "refusals": [], "last_jti": {}, "requests": 0}


def sign(name, claims):
    key, jwk = KEYS[name]
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": jwk["kid"]})


def mint(issuer_name, sub, aud, lifetime):
    now = int(time.time())
    return sign(issuer_name, {"iss": f"{BASE}/{issuer_name}", "sub": sub, "aud": aud, "iat": now,
                              "nbf": now, "exp": now + lifetime, "jti": str(uuid.uuid4())})


class Refused(Exception):
    def __init__(self, error, why, status=400):
        super().__init__(why)
        self.error, self.status = error, status


def verify_presented(token, audience=None, issuers=None):
    """Verifies a JWT against its issuer's JWKS: signature, exp, nbf, and the audience."""
    try:
        iss = jwt.decode(token, options={"verify_signature": False})["iss"]
    except (jwt.PyJWTError, KeyError) as e:
        raise Refused("invalid_grant", f"unreadable token: {e}") from e
    if iss not in JWKS or (issuers and iss not in issuers):
        raise Refused("invalid_grant", f"untrusted issuer {iss}")
    aud = audience or AUDIENCE.get(iss)
    try:
        key = JWKS[iss].get_signing_key_from_jwt(token)
        return jwt.decode(token, key.key, algorithms=["RS256"], audience=aud, issuer=iss,
                          options={"require": ["exp", "iat"] if iss != OIDC_ISSUER else ["exp"]})
    except jwt.PyJWTError as e:
        raise Refused("invalid_grant", f"{iss}: {e}") from e


def issue(client, sub, scope, grant, extra=None):
    now = int(time.time())
    claims = {"iss": BASE, "sub": sub, "client_id": client, "scope": scope, "grant": grant,
              "aud": "https://api.e2e.test", "iat": now, "exp": now + TTL, "jti": str(uuid.uuid4())}
    claims.update(extra or {})
    with LOCK:
        STATS["issued"][grant] = STATS["issued"].get(grant, 0) + 1
    return {"access_token": sign("as", claims), "token_type": "Bearer", "expires_in": TTL, "scope": scope}


def client_credentials(form, headers):
    scope = form.get("scope", "")
    auth = headers.get("Authorization", "")
    if auth.startswith("Basic "):
        cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        if (cid, secret) != ("basic", BASIC_SECRET):
            raise Refused("invalid_client", "bad basic credentials", 401)
        return issue("basic", "basic", scope, "client_credentials")
    if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
        raise Refused("invalid_client", "no client authentication", 401)
    try:
        claims = verify_presented(form.get("client_assertion", ""))
    except Refused as e:
        raise Refused("invalid_client", str(e), 401) from e
    client = FEDERATED.get((claims["iss"], claims.get("sub")))
    if client is None:
        raise Refused("invalid_client", f"no federated credential for {claims['iss']} {claims.get('sub')}", 401)
    if "client_id" in form and form["client_id"] != client:
        raise Refused("invalid_client", "client_id does not match the assertion", 401)
    with LOCK:
        STATS["last_jti"][client] = claims.get("jti")
    return issue(client, claims["sub"], scope, "client_credentials")


def token_exchange(form, headers):
    stype = form.get("subject_token_type")
    if stype == "urn:ietf:params:oauth:token-type:jwt":
        subject = verify_presented(form.get("subject_token", ""), audience="sts", issuers=[f"{BASE}/k8s"])
    elif stype == "urn:ietf:params:oauth:token-type:access_token":
        subject = verify_presented(form.get("subject_token", ""), audience="https://inventory.e2e.test",
                                   issuers=[OIDC_ISSUER])
    else:
        raise Refused("invalid_request", f"subject_token_type {stype}")
    extra = {"exchanged_from": subject["iss"]}
    if "actor_token" in form:
        actor = verify_presented(form["actor_token"], audience="sts", issuers=[f"{BASE}/k8s"])
        extra["act"] = {"sub": actor["sub"]}
    if form.get("requested_token_type", "urn:ietf:params:oauth:token-type:access_token") != \
            "urn:ietf:params:oauth:token-type:access_token":
        raise Refused("invalid_request", "only access tokens are issued")
    answer = issue("sts", subject.get("sub") or subject.get("client_id"), form.get("scope", ""),
                   "token_exchange", {**extra, "audience": form.get("audience")})
    answer["issued_token_type"] = "urn:ietf:params:oauth:token-type:access_token"
    return answer


def jwt_bearer(form, headers):
    assertion = form.get("assertion", "")
    try:
        claims = jwt.decode(assertion, SA_PUBLIC, algorithms=["RS256"], audience=TOKEN_URL, issuer=SA_EMAIL,
                            options={"require": ["exp", "iat", "iss", "aud"]})
    except jwt.PyJWTError as e:
        raise Refused("invalid_grant", f"assertion: {e}") from e
    if jwt.get_unverified_header(assertion).get("kid") != "sa-key-1":
        raise Refused("invalid_grant", "kid is not the key file's private_key_id")
    if claims["exp"] - claims["iat"] > 3600:
        raise Refused("invalid_grant", "assertion lasts over an hour")
    if "scope" not in claims or "scope" in form:
        raise Refused("invalid_scope", "the scopes belong in the assertion's scope claim")
    return issue(SA_EMAIL, claims.get("sub", SA_EMAIL), claims["scope"], "jwt_bearer")


GRANTS = {
    "client_credentials": client_credentials,
    "urn:ietf:params:oauth:grant-type:token-exchange": token_exchange,
    "urn:ietf:params:oauth:grant-type:jwt-bearer": jwt_bearer,
}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        print(fmt % args, flush=True)

    def send(self, status, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/k8s/.well-known/openid-configuration":
            return self.send(200, {"issuer": f"{BASE}/k8s", "jwks_uri": f"{BASE}/k8s/openid/v1/jwks"})
        if url.path == "/k8s/openid/v1/jwks":
            return self.send(200, {"keys": [KEYS["k8s"][1]]})
        if url.path == "/gha/jwks":
            return self.send(200, {"keys": [KEYS["gha"][1]]})
        if url.path == "/jwks":
            return self.send(200, {"keys": [KEYS["as"][1]]})
        if url.path == "/k8s/mint":
            lifetime = int(q.get("lifetime", "600"))
            return self.send(200, mint("k8s", q["sub"], q["aud"], lifetime), "application/jwt")
        if url.path == "/actions/token":
            if self.headers.get("Authorization") != f"bearer {RUNNER_TOKEN}":
                return self.send(401, {"message": "bad runner token"})
            aud = q.get("audience", "https://github.com/acme")
            return self.send(200, {"count": 1, "value": mint("gha", "repo:acme/orders:ref:refs/heads/main", aud, 300)})
        if url.path == "/__stats":
            with LOCK:
                return self.send(200, STATS)
        return self.send(404, {"error": "not_found"})

    def do_POST(self):
        if urlparse(self.path).path != "/token":
            return self.send(404, {"error": "not_found"})
        length = int(self.headers.get("Content-Length", "0"))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        with LOCK:
            STATS["requests"] += 1
        try:
            grant = GRANTS.get(form.get("grant_type"))
            if grant is None:
                raise Refused("unsupported_grant_type", form.get("grant_type", "none"))
            return self.send(200, grant(form, self.headers))
        except Refused as e:
            with LOCK:
                STATS["refused"] += 1
                STATS["refusals"] = (STATS["refusals"] + [f"{e.error}: {e}"])[-10:]
            print(f"refused: {e.error}: {e}", flush=True)
            return self.send(e.status, {"error": e.error, "error_description": str(e)})


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
