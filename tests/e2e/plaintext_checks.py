"""End-to-end checks of `proxy.connect_plaintext`: a tokenproxy with no interception CA, and
real clients that tunnel plaintext through CONNECT (Node undici's EnvHttpProxyAgent for
http://, Python websockets for ws://) get their token; the WebSocket server and the JWT check
verify it. curl's https:// through the same proxy is refused with 403 at CONNECT (port 443
means TLS). Called from check.py."""
import os
import subprocess

from websockets.sync.client import connect as ws_connect

import h2_checks
from procs import free_port

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIG = """
proxy:
  listen: 127.0.0.1:{fwd}
admin:
  listen: 127.0.0.1:{admin}
clients:
  basic:
    token_endpoint: http://127.0.0.1:{idp}/token
    client_id: basic-client
    client_secret: {{ env: E2E_BASIC_SECRET }}
upstreams:
  inventory:
    url: http://127.0.0.1:{http}
    match: [inventory.e2e.test]
    client: basic
    scopes: [inventory:read]
    resource: [https://inventory.e2e.test]
  ws:
    url: http://127.0.0.1:{ws}
    match: [ws.e2e.test]
    client: basic
    scopes: [ws:chat]
    resource: [https://ws.e2e.test]
"""


def checks(env, check, start, wait_http):
    fwd_port, admin_port = free_port(), free_port()
    fwd = f"http://127.0.0.1:{fwd_port}"
    cfg = os.path.join(env.tmp, "plaintext.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(fwd=fwd_port, admin=admin_port, idp=env.idp_port, http=env.http_port,
                              ws=env.ws_port))
    start("tokenproxy (no CA)", [env.binary, "run", "-c", cfg], env={"E2E_BASIC_SECRET": env.basic_secret},
          log=os.path.join(env.tmp, "plaintext.log"))
    wait_http(f"http://127.0.0.1:{admin_port}/readyz")
    clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}

    def undici_tunnels_http():
        r = subprocess.run(["node", "undici.mjs", "http://inventory.e2e.test/echo"], capture_output=True,
                           text=True, timeout=60, cwd=os.path.join(HERE, "clients"),
                           env={**clean, "HTTP_PROXY": fwd})
        assert r.returncode == 0, r.stderr[-600:]
        env.verify(r.stdout, "https://inventory.e2e.test", "basic-client", "inventory:read")
    check("connect_plaintext: Node undici (CONNECT host:80 for http://) gets a verified JWT with no CA",
          undici_tunnels_http)

    def websockets_tunnel_ws():
        with ws_connect("ws://ws.e2e.test/chat", proxy=fwd) as ws:
            h2_checks.ws_round(env, ws, "ws:// through CONNECT, no CA")
    check("connect_plaintext: Python websockets (CONNECT host:80 for ws://) passes the server's token check",
          websockets_tunnel_ws)

    def https_refused_at_connect():
        r = subprocess.run(["curl", "-sS", "--max-time", "10", "https://inventory.e2e.test/echo"],
                           capture_output=True, text=True, timeout=30, env={**clean, "https_proxy": fwd})
        assert r.returncode != 0 and "403" in r.stderr, (r.returncode, r.stderr)
    check("connect_plaintext: https:// (CONNECT :443) without a CA is refused with 403 at CONNECT",
          https_refused_at_connect)
