"""End-to-end checks of the per-upstream connection limits and of the egress guard.

Limits: a real slow upstream (Python's ThreadingHTTPServer with a listen backlog of 5, as a new
user would write it) records the most connections it had at once; curl sends 30 requests in
parallel through the forward listener. With max_connections 4 the upstream never sees more
than 4; every request is answered 200, or 503 upstream_overloaded with Retry-After once the
queue (max_pending) is full, and nothing hangs.

Egress guard: a tokenproxy with deny_destinations [loopback, metadata] refuses curl's
passthrough to a loopback name and address, and its CONNECT, with 403 destination_denied,
while the matched upstream on loopback keeps its token. Called from check.py."""
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from procs import free_port

CONFIG = """
proxy:
  listen: 127.0.0.1:{fwd}
  deny_destinations: [loopback, metadata]
admin:
  listen: 127.0.0.1:{admin}
clients:
  basic:
    token_endpoint: http://127.0.0.1:{idp}/token
    client_id: basic-client
    client_secret: {{ env: E2E_BASIC_SECRET }}
upstreams:
  slow:
    url: http://127.0.0.1:{slow}
    match: [slow.e2e.test]
    client: basic
    scopes: [inventory:read]
    resource: [https://inventory.e2e.test]
    max_connections: 4
    max_pending: 8
  roomy:
    url: http://127.0.0.1:{roomy}
    match: [roomy.e2e.test]
    client: basic
    scopes: [inventory:read]
    resource: [https://inventory.e2e.test]
    max_connections: 4
"""


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def enter(self):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self):
        with self.lock:
            self.now -= 1


def slow_server(port, counter):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            counter.enter()
            super().setup()

        def finish(self):
            super().finish()
            counter.leave()

        def do_GET(self):
            time.sleep(0.25)
            body = b"slow ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 5
        daemon_threads = True

    server = Server(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def checks(env, check, start, wait_http):
    fwd_port, admin_port, slow_port, roomy_port = free_port(), free_port(), free_port(), free_port()
    fwd = f"http://127.0.0.1:{fwd_port}"
    counter, roomy_counter = Counter(), Counter()
    servers = [slow_server(slow_port, counter), slow_server(roomy_port, roomy_counter)]
    cfg = os.path.join(env.tmp, "limits.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(fwd=fwd_port, admin=admin_port, idp=env.idp_port, slow=slow_port,
                            roomy=roomy_port))
    start("tokenproxy (limits)", [env.binary, "run", "-c", cfg], env={"E2E_BASIC_SECRET": env.basic_secret},
          log=os.path.join(env.tmp, "limits.log"))
    wait_http(f"http://127.0.0.1:{admin_port}/readyz")
    clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}

    def parallel(host, n):
        """n parallel curl requests through the proxy: [(status, retry_after)]."""
        argv = ["curl", "-sS", "--parallel", "--parallel-immediate", "--parallel-max", str(n),
                "--max-time", "20", "-x", fwd,
                "-w", "%{http_code} %header{retry-after}\\n"]
        for i in range(n):
            argv += ["-o", "/dev/null", f"http://{host}/r{i}"]
        started = time.monotonic()
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=clean)
        took = time.monotonic() - started
        lines = [line.split(" ") for line in r.stdout.strip().splitlines()]
        return [(int(p[0]), p[1] if len(p) > 1 else "") for p in lines], took

    def cap_and_overload():
        results, took = parallel("slow.e2e.test", 30)
        assert len(results) == 30, results
        ok = sum(1 for s, _ in results if s == 200)
        refused = [(s, ra) for s, ra in results if s == 503]
        assert ok + len(refused) == 30, results
        assert all(ra == "1" for _, ra in refused), refused
        assert ok >= 12, (ok, results)
        assert counter.most <= 4, f"the upstream saw {counter.most} connections at once"
        assert took < 15, took
        print(f"     30 parallel curl requests, max_connections 4, max_pending 8: {ok} served, "
              f"{len(refused)} refused with 503 upstream_overloaded; the upstream saw at most "
              f"{counter.most} connections at once; {took:.1f}s", file=sys.stderr)
    check("limits: a slow Python upstream (backlog 5) never sees more than max_connections; "
          "a full queue gets 503 upstream_overloaded with Retry-After", cap_and_overload)

    def all_served_in_turn():
        results, took = parallel("roomy.e2e.test", 30)
        assert [s for s, _ in results] == [200] * 30, results
        assert roomy_counter.most <= 4, roomy_counter.most
        assert took >= 30 / 4 * 0.25 * 0.9, f"30 requests of 0.25 s, 4 at a time, took only {took:.2f}s"
        metrics = requests.get(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).text
        assert 'tokenproxy_upstream_overloaded_total{upstream="slow"}' in metrics, metrics
        assert 'tokenproxy_upstream_waiting_requests{upstream="roomy"} 0' in metrics, metrics
    check("limits: with room in the queue all 30 are served in turn, 4 at a time", all_served_in_turn)

    def egress_denied():
        for url in [f"http://localhost:{env.http_port}/echo", f"http://127.0.0.1:{env.http_port}/echo",
                    "http://169.254.169.254/latest/meta-data/"]:
            r = subprocess.run(["curl", "-sS", "--max-time", "10", "-x", fwd, url], capture_output=True,
                               text=True, timeout=30, env=clean)
            assert '"destination_denied"' in r.stdout, (url, r.stdout, r.stderr)
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "10", "-w", "%{http_connect}",
                            "-p", "-x", fwd, f"http://localhost:{env.http_port}/echo"],
                           capture_output=True, text=True, timeout=30, env=clean)
        assert r.stdout == "403", r.stdout
        out = subprocess.run(["curl", "-sS", "--fail", "--max-time", "10", "-x", fwd, "http://slow.e2e.test/x"],
                             capture_output=True, text=True, timeout=30, env=clean)
        assert out.stdout == "slow ok", (out.stdout, out.stderr)
        metrics = requests.get(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).text
        assert 'tokenproxy_destinations_denied_total{via="passthrough"} 3' in metrics, metrics
        assert 'tokenproxy_destinations_denied_total{via="tunnel"} 1' in metrics, metrics
    check("deny_destinations: curl's passthrough and CONNECT to loopback and metadata get 403 "
          "destination_denied; the matched upstream on loopback still works", egress_denied)
    for server in servers:
        server.shutdown()
