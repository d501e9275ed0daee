#!/usr/bin/env python3
"""A resource server that really verifies DPoP (RFC 9449 §4.3 and §7), with PyJWT and none of
tokenproxy's code, for the end-to-end tests.

For each request it checks, in this order, and answers 401 with a `DPoP` challenge naming the
first check that failed:
  - `Authorization: DPoP <token>` (a bearer token is refused), the token verified against the
    authorization server's JWKS (audience https://dpop.e2e.test, scope dpop:read);
  - exactly one `DPoP` header, a JWS with `typ: dpop+jwt`, an asymmetric `alg` (ES256 and
    EdDSA accepted), a public `jwk` without private members, and a signature by that key;
  - `htm` = the request method, `htu` = http://127.0.0.1:<port><path> (no query);
  - `iat` within 60 s of now;
  - `ath` = base64url(SHA-256(token));
  - the RFC 7638 thumbprint of the proof's `jwk` = the token's `cnf.jkt`;
  - on paths under /nonce, `nonce` = the nonce this server issued (else `use_dpop_nonce`
    with a `DPoP-Nonce` header);
  - `jti` never seen before.
On success: 200 with JSON {method, path, jkt, jti, nonce, token, proof} (the token and the
proof are echoed so that the test can replay them; a real server would not).

Env: IDP_PORT, DPOP_PORT. Runs until terminated.
"""
import base64
import hashlib
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

IDP = f"http://127.0.0.1:{os.environ['IDP_PORT']}"
PORT = int(os.environ["DPOP_PORT"])
JWKS = jwt.PyJWKClient(f"{IDP}/jwks")
NONCE = "rs-" + os.urandom(8).hex()
SEEN = set()
LOCK = threading.Lock()


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(jwk):
    members = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}
    required = {k: jwk[k] for k in members[jwk["kty"]]}
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":"))
    return b64(hashlib.sha256(canonical.encode()).digest())


class Refused(Exception):
    def __init__(self, error, why):
        super().__init__(why)
        self.error = error


def check(method, path, headers):
    auth = headers.get("Authorization", "")
    if not auth.startswith("DPoP "):
        raise Refused("invalid_token", "not a DPoP token (Authorization: DPoP <token>)")
    token = auth[len("DPoP "):]
    try:
        key = JWKS.get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=["RS256"], audience="https://dpop.e2e.test", issuer=IDP)
    except jwt.PyJWTError as e:
        raise Refused("invalid_token", f"token: {e}") from e
    if "dpop:read" not in claims.get("scope", "").split():
        raise Refused("insufficient_scope", "scope dpop:read missing")
    proofs = headers.get_all("DPoP") or []
    if len(proofs) != 1:
        raise Refused("invalid_dpop_proof", f"{len(proofs)} DPoP headers")
    proof = proofs[0]
    header = jwt.get_unverified_header(proof)
    if header.get("typ") != "dpop+jwt":
        raise Refused("invalid_dpop_proof", "typ is not dpop+jwt")
    if header.get("alg") not in ("ES256", "EdDSA"):
        raise Refused("invalid_dpop_proof", f"alg {header.get('alg')}")
    jwk = header.get("jwk") or {}
    if "d" in jwk:
        raise Refused("invalid_dpop_proof", "private key in the proof")
    try:
        p = jwt.decode(proof, jwt.PyJWK(jwk).key, algorithms=[header["alg"]],
                       options={"verify_aud": False, "require": ["iat", "jti", "htm", "htu"]})
    except jwt.PyJWTError as e:
        raise Refused("invalid_dpop_proof", f"signature: {e}") from e
    if p["htm"] != method:
        raise Refused("invalid_dpop_proof", f"htm {p['htm']} is not {method}")
    htu = f"http://127.0.0.1:{PORT}{path.split('?')[0]}"
    if p["htu"] != htu:
        raise Refused("invalid_dpop_proof", f"htu {p['htu']} is not {htu}")
    if abs(time.time() - p["iat"]) > 60:
        raise Refused("invalid_dpop_proof", "iat is not within 60s")
    if p.get("ath") != b64(hashlib.sha256(token.encode()).digest()):
        raise Refused("invalid_dpop_proof", "ath does not match the token")
    if thumbprint(jwk) != claims.get("cnf", {}).get("jkt"):
        raise Refused("invalid_token", "the proof's key is not the token's cnf.jkt")
    if path.startswith("/nonce") and p.get("nonce") != NONCE:
        raise Refused("use_dpop_nonce", "nonce required")
    with LOCK:
        if p["jti"] in SEEN:
            raise Refused("invalid_dpop_proof", "jti replayed")
        SEEN.add(p["jti"])
    return {"method": method, "path": path, "jkt": claims["cnf"]["jkt"], "jti": p["jti"],
            "nonce": p.get("nonce"), "token": token, "proof": proof}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        try:
            body, status, extra = json.dumps(check(self.command, self.path, self.headers)), 200, {}
        except Refused as e:
            status = 401
            body = json.dumps({"error": e.error, "why": str(e)})
            extra = {"WWW-Authenticate": f'DPoP error="{e.error}", algs="ES256 EdDSA"'}
            if e.error == "use_dpop_nonce":
                extra["DPoP-Nonce"] = NONCE
        data = body.encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **extra}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = handle_any

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
