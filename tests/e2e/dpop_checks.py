"""End-to-end checks of DPoP (RFC 9449): tokenproxy with `token_type: dpop` gets DPoP-bound
tokens (cnf.jkt) from oidc-provider, which demands a nonce, and calls dpop_server.py, which
verifies every proof with PyJWT and the RFC 9449 §4.3 checks, through the forward and the
reverse listener, with and without the resource server's own nonce. The same server refuses a
replayed proof, a proof for another URL, a bearer-only request and a tampered token, so that
its acceptance means something. Called from check.py."""
import base64
import os
import subprocess
import sys
import time

import requests

from procs import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
RESOURCE = "https://dpop.e2e.test"


def checks(env, check, start, wait_http):
    dpop_port, fwd, rev, admin = free_port(), free_port(), free_port(), free_port()
    start("dpop server", [sys.executable, os.path.join(HERE, "dpop_server.py")],
          env={"IDP_PORT": str(env.idp_port), "DPOP_PORT": str(dpop_port)},
          log=os.path.join(env.tmp, "dpop_server.log"))
    cfg = os.path.join(env.tmp, "dpop.yaml")
    with open(cfg, "w") as f:
        f.write(f"""proxy:
  listen: 127.0.0.1:{fwd}
admin:
  listen: 127.0.0.1:{admin}
clients:
  dpop:
    token_endpoint: http://127.0.0.1:{env.idp_port}/token
    client_id: dpop-client
    client_secret: {{ env: E2E_BASIC_SECRET }}
    token_type: dpop
upstreams:
  dpop-api:
    url: http://127.0.0.1:{dpop_port}
    match: [dpop.e2e.test]
    listen: 127.0.0.1:{rev}
    client: dpop
    scopes: [dpop:read]
    resource: [{RESOURCE}]
""")
    log = os.path.join(env.tmp, "tokenproxy-dpop.log")
    start("tokenproxy (dpop)", [env.binary, "run", "-c", cfg], log=log,
          env={"RUST_LOG": "debug", "E2E_BASIC_SECRET": env.basic_secret})
    wait_http(f"http://127.0.0.1:{dpop_port}/", want=401)
    wait_http(f"http://127.0.0.1:{admin}/readyz")
    via_proxy = {"http": f"http://127.0.0.1:{fwd}"}
    served = []

    def metric(name):
        text = requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=5, proxies={"http": None}).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    def bound_tokens_through_both_listeners():
        for _ in range(5):
            r = requests.get("http://dpop.e2e.test/items?page=2", proxies=via_proxy, timeout=10)
            assert r.status_code == 200, (r.status_code, r.text)
            served.append(r.json())
        r = requests.post(f"http://127.0.0.1:{rev}/orders", json={"a": 1}, proxies={"http": None}, timeout=10)
        assert r.status_code == 200, (r.status_code, r.text)
        served.append(r.json())
        assert served[-1]["method"] == "POST"
        assert len({s["jti"] for s in served}) == len(served), "a proof was reused"
        status = requests.get(f"http://127.0.0.1:{admin}/status", timeout=5, proxies={"http": None}).json()
        (up,) = status["upstreams"]
        assert up["dpop"]["jkt"] == served[0]["jkt"], (up["dpop"], served[0]["jkt"])
        assert up["dpop"]["token_endpoint_nonce"] is True
        assert metric('tokenproxy_dpop_nonce_retries_total{name="dpop",server="token_endpoint"}') >= 1
        assert env.stats().get(f"dpop-client {RESOURCE}") == 1, env.stats()
    check("DPoP-bound tokens from oidc-provider (after its use_dpop_nonce) are accepted by an independent "
          "verifier through the forward and reverse listeners, a new proof each time", bound_tokens_through_both_listeners)

    def the_resource_servers_nonce():
        before = metric('tokenproxy_dpop_nonce_retries_total{name="dpop-api",server="upstream"}')
        r = requests.get("http://dpop.e2e.test/nonce/a", proxies=via_proxy, timeout=10)
        assert r.status_code == 200, (r.status_code, r.text)
        assert r.json()["nonce"], r.json()
        r = requests.get("http://dpop.e2e.test/nonce/b", proxies=via_proxy, timeout=10)
        assert r.status_code == 200, (r.status_code, r.text)
        after = metric('tokenproxy_dpop_nonce_retries_total{name="dpop-api",server="upstream"}')
        assert after - before == 1, "one retry, then the nonce is remembered"
    check("a resource server that demands a nonce gets it on the one retry, and from then on",
          the_resource_servers_nonce)

    def the_verifier_is_strict():
        s = served[0]
        url = f"http://127.0.0.1:{dpop_port}"
        h = {"Authorization": f"DPoP {s['token']}", "DPoP": s["proof"]}
        r = requests.get(f"{url}/items", headers=h, proxies={"http": None}, timeout=5)
        assert r.status_code == 401 and "jti replayed" in r.json()["why"], r.text
        r = requests.get(f"{url}/elsewhere", headers=h, proxies={"http": None}, timeout=5)
        assert r.status_code == 401 and "htu" in r.json()["why"], r.text
        r = requests.get(f"{url}/items", headers={"Authorization": f"Bearer {s['token']}"},
                         proxies={"http": None}, timeout=5)
        assert r.status_code == 401 and "not a DPoP token" in r.json()["why"], r.text
        assert r.headers["WWW-Authenticate"].startswith("DPoP ")
        r = requests.get(f"{url}/items", headers={"Authorization": f"DPoP {s['token']}x", "DPoP": s["proof"]},
                         proxies={"http": None}, timeout=5)
        assert r.status_code == 401 and "token" in r.json()["why"], r.text
    check("the verifier refuses a replayed proof, another htu, a bearer-only request and a tampered token",
          the_verifier_is_strict)

    def replicas_share_a_bound_token_through_redis():
        key = os.path.join(env.tmp, "dpop-shared.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-out", key], check=True, capture_output=True)
        enc = os.path.join(env.tmp, "dpop-cache.key")
        with open(enc, "w") as f:
            f.write(base64.b64encode(os.urandom(32)).decode())
        redis_port = free_port()
        start("redis (dpop)", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
              log=os.path.join(env.tmp, "redis-dpop.log"))
        time.sleep(0.3)
        before = env.stats().get(f"dpop-client {RESOURCE}", 0)
        replicas = []
        for i in range(2):
            r_fwd, r_admin = free_port(), free_port()
            with open(cfg) as f:
                text = f.read()
            text = (text.replace(f"127.0.0.1:{fwd}", f"127.0.0.1:{r_fwd}")
                    .replace(f"127.0.0.1:{admin}", f"127.0.0.1:{r_admin}")
                    .replace(f"    listen: 127.0.0.1:{rev}\n", "")
                    .replace("    token_type: dpop\n", f"    token_type: dpop\n    dpop_key: {{ file: {key} }}\n"))
            text += (f"cache:\n  redis:\n    url: redis://127.0.0.1:{redis_port}\n"
                     f"  encryption_key: {{ file: {enc} }}\n")
            path = os.path.join(env.tmp, f"dpop-replica{i}.yaml")
            with open(path, "w") as f:
                f.write(text)
            start(f"tokenproxy (dpop replica {i})", [env.binary, "run", "-c", path],
                  log=os.path.join(env.tmp, f"tokenproxy-dpop-replica{i}.log"),
                  env={"RUST_LOG": "info", "E2E_BASIC_SECRET": env.basic_secret})
            wait_http(f"http://127.0.0.1:{r_admin}/readyz")
            replicas.append(r_fwd)
        seen = []
        for r_fwd in replicas:
            r = requests.get("http://dpop.e2e.test/items", proxies={"http": f"http://127.0.0.1:{r_fwd}"}, timeout=10)
            assert r.status_code == 200, (r.status_code, r.text)
            seen.append(r.json())
        assert seen[0]["token"] == seen[1]["token"], "the replicas share one bound token"
        assert seen[0]["jkt"] == seen[1]["jkt"]
        assert env.stats().get(f"dpop-client {RESOURCE}", 0) - before == 1, env.stats()
    check("two replicas with one dpop_key share a DPoP-bound token through Redis (one token request), "
          "and each one's proofs pass the verifier", replicas_share_a_bound_token_through_redis)

    def no_key_in_the_logs():
        with open(log, errors="replace") as f:
            text = f.read()
        assert "token obtained" in text
        for s in served:
            assert s["token"] not in text, "a DPoP token in the log"
            assert s["proof"] not in text, "a proof in the log"
    check("no DPoP token or proof in tokenproxy's debug log", no_key_in_the_logs)
