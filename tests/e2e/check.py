#!/usr/bin/env python3
"""End-to-end checks of the real tokenproxy binary against real peers.

Authorization server: oidc-provider (idp.mjs), issuing JWT access tokens.
Upstream: nginx, echoing the Authorization header it receives, plus a 401 location, and over
HTTP/2 (TLS and h2c); a grpcio server and a websockets server that check the token
(resource_servers.py).
Apps: curl (forward listener via -x, reverse listener) and Python requests (HTTP_PROXY); for
https:// through HTTPS_PROXY with TLS interception, curl, Python requests and httpx, Node
undici and axios, Java HttpClient and Go net/http (intercept_checks.py); curl over HTTP/2,
grpcio, websockets and h2load (h2_checks.py). Parent proxies: squid with basic_ncsa_auth and
tinyproxy (parent_checks.py). Traces: an OTLP receiver on opentelemetry-proto and an app
traced by the OpenTelemetry SDK (trace_checks.py). Every process
started here is stopped here, by PID.

Usage: check.py TOKENPROXY_BINARY
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import jwt
import requests

import assertion_checks
import cache_checks
import ha_checks
import dpop_checks
import exec_checks
import federation_checks
import h2_checks
import intercept_checks
import limits_checks
import mtls_checks
import parent_checks
import path_checks
import plaintext_checks
import sharing_checks
import trace_checks

from procs import free_port, stop

HERE = os.path.dirname(os.path.abspath(__file__))
SHORT_TTL = 4
PROCS = []
FAILURES = []
PASSED = []


def start(name, argv, env=None, log=None):
    out = open(log, "ab") if log else subprocess.DEVNULL
    p = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True)
    PROCS.append((name, p))
    return p


def wait_http(url, want=200, timeout=20):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            r = requests.get(url, timeout=2, proxies={"http": None, "https": None})
            if r.status_code == want:
                return r
            last = r.status_code
        except requests.RequestException as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {want} within {timeout}s (last: {last})")


def check(name, fn):
    try:
        fn()
        PASSED.append(name)
        print(f"ok   {name}", flush=True)
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        FAILURES.append(name)
        print(f"FAIL {name}: {e!r}", flush=True)


def curl(*args):
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", *args],
                       capture_output=True, text=True, timeout=20, env={k: v for k, v in os.environ.items()
                                                                         if "proxy" not in k.lower()})
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


class Env:
    def __init__(self, binary, tmp, release=None):
        self.binary, self.tmp = binary, tmp
        # The release build, where a figure (memory of 100 replicas) should be the shipped one's.
        self.release = release or binary
        self.idp_port, self.http_port, self.tls_port = free_port(), free_port(), free_port()
        self.fwd_port, self.rev_port, self.admin_port = free_port(), free_port(), free_port()
        self.basic_secret = "e2e-basic-" + os.urandom(8).hex()
        self.post_secret = "e2e-post-" + os.urandom(8).hex()
        self.idp = None
        self.tokens_seen = set()
        self.trust_dir = os.path.join(tmp, "trust")
        self.idp_env, self.key_paths = assertion_checks.make_keys(tmp)
        self.pki, mtls_env = mtls_checks.make_pki(tmp)
        self.idp_env.update(mtls_env)
        self.mtls_port, self.bound_port = free_port(), free_port()
        self.grpc_port, self.grpc_rev_port, self.grpc_dead_port = free_port(), free_port(), free_port()
        self.ws_port, self.ws_rev_port = free_port(), free_port()
        self.h2tls_port, self.h2c_port = free_port(), free_port()

    @property
    def fwd(self):
        return f"http://127.0.0.1:{self.fwd_port}"

    def admin(self, path):
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def start_idp(self):
        self.idp = start("oidc-provider", ["node", os.path.join(HERE, "idp.mjs")], env={
            "IDP_PORT": str(self.idp_port), "BASIC_SECRET": self.basic_secret,
            "POST_SECRET": self.post_secret, "SHORT_TTL": str(SHORT_TTL),
            "FLEET_TTL": str(cache_checks.FLEET_TTL), **self.idp_env},
            log=os.path.join(self.tmp, "idp.log"))
        wait_http(f"http://127.0.0.1:{self.idp_port}/.well-known/openid-configuration")

    def start_resource_servers(self):
        start("resource servers", [sys.executable, os.path.join(HERE, "resource_servers.py")], env={
            "IDP_PORT": str(self.idp_port), "GRPC_PORT": str(self.grpc_port), "WS_PORT": str(self.ws_port)},
            log=os.path.join(self.tmp, "resource_servers.log"))
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                for port in (self.grpc_port, self.ws_port):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the gRPC and WebSocket servers did not start")

    def stats(self):
        return requests.get(f"http://127.0.0.1:{self.idp_port}/__stats", timeout=5,
                            proxies={"http": None}).json()

    def start_nginx(self):
        cert, key = os.path.join(self.tmp, "tls.crt"), os.path.join(self.tmp, "tls.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        self.cert = cert
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(os.path.join(HERE, "nginx.conf.in")) as f:
            text = f.read()
        for k, v in {"TMP": self.tmp, "HTTP_PORT": self.http_port, "TLS_PORT": self.tls_port,
                     "CERT": cert, "KEY": key, "MTLS_PORT": self.mtls_port, "BOUND_PORT": self.bound_port,
                     "H2TLS_PORT": self.h2tls_port, "H2C_PORT": self.h2c_port,
                     "IDP_PORT": self.idp_port, **self.pki}.items():
            text = text.replace("@" + k + "@", str(v))
        with open(conf, "w") as f:
            f.write(text)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        start("nginx", [nginx, "-p", self.tmp, "-c", conf, "-g", "daemon off;"],
              log=os.path.join(self.tmp, "nginx.out"))
        wait_http(f"http://127.0.0.1:{self.http_port}/plain")

    def start_tokenproxy(self):
        with open(os.path.join(HERE, "tokenproxy.yaml.in")) as f:
            text = f.read()
        for k, v in {"IDP_PORT": self.idp_port, "HTTP_PORT": self.http_port, "FWD_PORT": self.fwd_port,
                     "REV_PORT": self.rev_port, "ADMIN_PORT": self.admin_port,
                     "TRUST_DIR": self.trust_dir, "MTLS_PORT": self.mtls_port,
                     "BOUND_PORT": self.bound_port, "GRPC_PORT": self.grpc_port,
                     "GRPC_REV_PORT": self.grpc_rev_port, "GRPC_DEAD_PORT": self.grpc_dead_port,
                     "DEAD_PORT": free_port(), "WS_PORT": self.ws_port, "WS_REV_PORT": self.ws_rev_port,
                     "H2TLS_PORT": self.h2tls_port, "H2C_PORT": self.h2c_port,
                     **self.key_paths, **self.pki}.items():
            text = text.replace("@" + k + "@", str(v))
        text += sharing_checks.upstreams_yaml(self.http_port)
        cfg = self.config = os.path.join(self.tmp, "tokenproxy.yaml")
        with open(cfg, "w") as f:
            f.write(text)
        self.log = os.path.join(self.tmp, "tokenproxy.log")
        # One worker, as a sidecar with a CPU limit of one gets: the current-thread runtime.
        # The other tokenproxy processes of these checks take the default (one per CPU).
        self.proxy = start("tokenproxy", [self.binary, "run", "-c", cfg, "--workers", "1"], log=self.log,
                           env={"RUST_LOG": "debug", "E2E_BASIC_SECRET": self.basic_secret,
                                "E2E_POST_SECRET": self.post_secret,
                                "E2E_HMAC_SECRET": self.idp_env["HMAC_SECRET"]})
        wait_http(self.admin("/readyz"))

    def verify(self, authorization, audience, client_id, scope):
        assert authorization.startswith("Bearer "), f"no bearer token: {authorization[:40]!r}"
        token = authorization[len("Bearer "):]
        self.tokens_seen.add(token)
        keys = jwt.PyJWKClient(f"http://127.0.0.1:{self.idp_port}/jwks")
        key = keys.get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=audience,
                            issuer=f"http://127.0.0.1:{self.idp_port}")
        assert claims["client_id"] == client_id, claims
        assert scope in claims["scope"].split(), claims
        return claims


def main():
    binary = os.path.abspath(sys.argv[1])
    release = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else None
    tmp = tempfile.mkdtemp(prefix="tokenproxy-e2e-")
    env = Env(binary, tmp, release)
    started = time.time()
    try:
        env.start_nginx()
        env.start_idp()
        env.start_resource_servers()
        env.start_tokenproxy()
        run_checks(env)
    except Exception as e:  # noqa: BLE001 - start-up failed: show the logs below
        FAILURES.append(f"start-up: {e!r}")
        print(f"FAIL start-up: {e!r}", flush=True)
    finally:
        for _, p in reversed(PROCS):
            stop(p)
        if FAILURES:
            for name in ("tokenproxy.log", "idp.log", "error.log", "resource_servers.log"):
                path = os.path.join(tmp, name)
                if os.path.exists(path):
                    print(f"--- {name} (last 40 lines)")
                    with open(path, errors="replace") as f:
                        print("".join(f.readlines()[-40:]))
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"end-to-end checks took {time.time() - started:.0f}s")
    print(f"e2e: {len(PASSED)} passed, {len(FAILURES)} failed")
    sys.exit(1 if FAILURES else 0)


def run_checks(env):
    inv = ("https://inventory.e2e.test", "basic-client", "inventory:read")

    def forward_curl():
        for _ in range(20):
            code, body = curl("-x", env.fwd, "http://inventory.e2e.test/echo")
            assert code == 200, (code, body)
            env.verify(body, *inv)
    check("curl through the forward listener gets a verified JWT (client_secret_basic)", forward_curl)

    def python_http_proxy():
        os.environ["HTTP_PROXY"] = env.fwd
        try:
            s = requests.Session()
            for _ in range(20):
                r = s.get("http://orders.e2e.test/echo", timeout=10)
                assert r.status_code == 200, (r.status_code, r.text)
                env.verify(r.text, "https://orders.e2e.test", "post-client", "orders:read")
        finally:
            del os.environ["HTTP_PROXY"]
    check("Python requests via HTTP_PROXY gets a verified JWT (client_secret_post)", python_http_proxy)

    def reverse_curl():
        for _ in range(5):
            code, body = curl(f"http://127.0.0.1:{env.rev_port}/echo")
            assert code == 200, (code, body)
            env.verify(body, *inv)
    check("curl against the reverse listener gets a verified JWT", reverse_curl)

    def one_fetch_per_upstream():
        s = env.stats()
        assert s.get("basic-client https://inventory.e2e.test") == 1, s
        assert s.get("post-client https://orders.e2e.test") == 1, s
    check("the server saw exactly one token request per upstream", one_fetch_per_upstream)

    intercept_checks.checks(env, check)
    h2_checks.checks(env, check)
    sharing_checks.checks(env, check)
    cache_checks.checks(env, check, start, wait_http)
    ha_checks.checks(env, check, start, wait_http)
    dpop_checks.checks(env, check, start, wait_http)

    def replay_401():
        before = env.stats().get("basic-client https://authfail.e2e.test", 0)
        code, body = curl("-x", env.fwd, "http://authfail.e2e.test/401")
        assert code == 401, (code, body)
        after = env.stats().get("basic-client https://authfail.e2e.test", 0)
        assert after == before + 1, (before, after)
        metrics = requests.get(env.admin("/metrics"), timeout=5).text
        assert 'tokenproxy_upstream_auth_retries_total{upstream="authfail"} 1' in metrics, metrics
    check("an upstream 401 causes exactly one refresh-and-replay", replay_401)

    def short_lifetimes():
        before = env.stats().get("basic-client https://short.e2e.test", 0)
        distinct, deadline = set(), time.time() + 3.5 * SHORT_TTL
        while time.time() < deadline:
            code, body = curl("-x", env.fwd, "http://short.e2e.test/echo")
            assert code == 200, (code, body)
            claims = env.verify(body, "https://short.e2e.test", "basic-client", "short:read")
            assert claims["exp"] > time.time(), "an expired token was injected"
            distinct.add(body)
            time.sleep(0.1)
        # Fetches in this window only: the token has been refreshing since start.
        fetched = env.stats().get("basic-client https://short.e2e.test", 0) - before
        assert len(distinct) >= 3, f"only {len(distinct)} tokens across 3.5 lifetimes"
        assert fetched <= 6, f"{fetched} fetches for ~3.5 lifetimes"
    check(f"tokens are refreshed before expiry across several {SHORT_TTL}s lifetimes, no request fails",
          short_lifetimes)

    def server_down_and_back():
        stop(env.idp)
        codes = []
        deadline = time.time() + 2 * SHORT_TTL
        while time.time() < deadline:
            code, body = curl("-x", env.fwd, "http://short.e2e.test/echo")
            codes.append(code)
            if code == 503:
                err = json.loads(body)
                assert err["error"] == "token_unavailable" and err["upstream"] == "short", err
                break
            assert code == 200, (code, body)
            time.sleep(0.1)
        assert codes[0] == 200, f"the token in hand should serve first: {codes[:5]}"
        assert codes[-1] == 503, f"never reached 503 after expiry: {codes[-5:]}"
        assert requests.get(env.admin("/readyz"), timeout=5).status_code == 503
        env.start_idp()
        wait_http(env.admin("/readyz"), timeout=15)
        code, body = curl("-x", env.fwd, "http://short.e2e.test/echo")
        assert code == 200, (code, body)
    check("with the server stopped: serves until expiry, then 503 token_unavailable, then recovers",
          server_down_and_back)

    def no_secret_in_logs():
        with open(env.log, errors="replace") as f:
            log = f.read()
        assert "token obtained" in log, "debug log missing"
        keys = []
        for path in env.key_paths.values():
            with open(path) as f:
                keys += [line for line in f.read().splitlines() if len(line) > 20 and "-----" not in line]
        with open(env.key_paths["EC_JWK_FILE"]) as f:
            keys.append(json.loads(f.read())["d"])
        for canary in [env.basic_secret, env.post_secret, env.idp_env["HMAC_SECRET"], *keys, *env.tokens_seen]:
            assert canary not in log, "a secret, key or token reached the log"
        for path in ["/metrics", "/status", "/readyz"]:
            text = requests.get(env.admin(path), timeout=5).text
            for canary in [env.basic_secret, env.post_secret, *env.tokens_seen]:
                assert canary not in text, f"a secret or token reached {path}"
    check("no secret or token in logs or admin output", no_secret_in_logs)

    exec_checks.checks(env, check)
    assertion_checks.checks(env, check)
    mtls_checks.checks(env, check)
    federation_checks.checks(env, check, start, wait_http)
    plaintext_checks.checks(env, check, start, wait_http)
    path_checks.checks(env, check, start, wait_http)
    limits_checks.checks(env, check, start, wait_http)
    parent_checks.checks(env, check, start, wait_http)
    trace_checks.checks(env, check, start, wait_http)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
