"""End-to-end checks of path-prefix routing (`match: [host/prefix/*]`): one host, two
identities. curl through the forward listener and through HTTPS interception gets the orders
client's token under /orders/ and the gateway client's elsewhere; PyJWT checks each against the
authorization server's keys, and nginx echoes the request line it received, so the path sent
is checked too. The path-confusion cases go out with curl --path-as-is. Called from check.py."""
import os
import subprocess

from procs import free_port

CONFIG = """
proxy:
  listen: 127.0.0.1:{fwd}
  intercept:
    ca: generate
    trust_dir: {trust}
admin:
  listen: 127.0.0.1:{admin}
clients:
  basic:
    token_endpoint: http://127.0.0.1:{idp}/token
    client_id: basic-client
    client_secret: {{ env: E2E_BASIC_SECRET }}
  post:
    token_endpoint: http://127.0.0.1:{idp}/token
    client_id: post-client
    client_secret: {{ env: E2E_POST_SECRET }}
    auth_method: client_secret_post
upstreams:
  gateway:
    url: http://127.0.0.1:{http}/paths
    match: [api.e2e.test]
    client: basic
    scopes: [inventory:read]
    resource: [https://inventory.e2e.test]
  orders:
    url: http://127.0.0.1:{http}/paths
    match: [api.e2e.test/orders/*]
    client: post
    scopes: [orders:read]
    resource: [https://orders.e2e.test]
"""

GATEWAY = ("https://inventory.e2e.test", "basic-client", "inventory:read")
ORDERS = ("https://orders.e2e.test", "post-client", "orders:read")


def checks(env, check, start, wait_http):
    fwd_port, admin_port = free_port(), free_port()
    fwd = f"http://127.0.0.1:{fwd_port}"
    trust = os.path.join(env.tmp, "paths-trust")
    cfg = os.path.join(env.tmp, "paths.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(fwd=fwd_port, admin=admin_port, idp=env.idp_port, http=env.http_port,
                              trust=trust))
    start("tokenproxy (paths)", [env.binary, "run", "-c", cfg],
          env={"E2E_BASIC_SECRET": env.basic_secret, "E2E_POST_SECRET": env.post_secret},
          log=os.path.join(env.tmp, "paths.log"))
    wait_http(f"http://127.0.0.1:{admin_port}/readyz")
    clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    bundle = os.path.join(trust, "bundle.pem")

    def curl(url, *extra):
        """(status, body) of one curl through the forward listener."""
        r = subprocess.run(["curl", "-sS", "--path-as-is", "--max-time", "10", "-w", "\n%{http_code}",
                            *extra, url], capture_output=True, text=True, timeout=30,
                           env={**clean, "http_proxy": fwd, "https_proxy": fwd, "CURL_CA_BUNDLE": bundle})
        assert r.returncode == 0, r.stderr
        body, _, status = r.stdout.rpartition("\n")
        return int(status), body

    def routed(url, sent, who):
        status, body = curl(url)
        assert status == 200, (url, status, body)
        uri, _, authorization = body.partition("|")
        assert uri == sent, (url, uri)
        env.verify(authorization, *who)

    def forward_by_path():
        routed("http://api.e2e.test/orders/7?x=1", "/paths/orders/7?x=1", ORDERS)
        routed("http://api.e2e.test/users/1", "/paths/users/1", GATEWAY)
        routed("http://api.e2e.test/ordersx", "/paths/ordersx", GATEWAY)
    check("paths: curl through the forward listener gets each prefix's verified JWT on one host",
          forward_by_path)

    def intercepted_by_path():
        routed("https://api.e2e.test/orders/7", "/paths/orders/7", ORDERS)
        routed("https://api.e2e.test/users/1", "/paths/users/1", GATEWAY)
    check("paths: curl https:// through interception gets each prefix's verified JWT", intercepted_by_path)

    def confusion():
        # Dot segments: routed as the path they name, and sent so.
        routed("http://api.e2e.test/orders/../users/1", "/paths/users/1", GATEWAY)
        routed("https://api.e2e.test/users/../orders/2", "/paths/orders/2", ORDERS)
        routed("http://api.e2e.test/orders/%2e%2e/users", "/paths/users", GATEWAY)
        for path in ["/orders/..%2Fusers", "/orders/..;/users", "//orders/1", "/orders//../users"]:
            for scheme in ["http", "https"]:
                status, body = curl(f"{scheme}://api.e2e.test{path}")
                assert status == 400 and '"bad_request"' in body, (scheme, path, status, body)
                assert "Bearer" not in body, body
    check("paths: dot segments route to the path they name; two-way paths get 400, no token",
          confusion)
