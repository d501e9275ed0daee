#!/usr/bin/env python3
"""Benchmark of HTTP/2: h2load (h2c, prior knowledge; by default 100 concurrent streams over
4 connections) against
  (g) nginx taking h2c and proxying over HTTP/1.1 keep-alive, adding a static Authorization
      header, and (h) a tokenproxy reverse listener doing the same (upstream protocol: auto);
  (i) nginx taking h2c and proxying over HTTP/2 (grpc_pass, h2c to the origin) with the static
      header, and (j) tokenproxy doing the same (upstream protocol: http2).
The origin is one nginx worker answering 200 on an HTTP/1.1 and an h2c port. Prints req/s,
p50 and p99 (from h2load's per-request log), each proxy's CPU per request (user + kernel, from
/proc), tokenproxy's RSS with 1,000 concurrent streams, and its memory per idle HTTP/2
connection. Not part of CI's pass/fail.

Usage: bench_h2.py [--runs 3] [--requests 200000] [--connections 4] [--streams 25] [--pin]
                   [--origin-cpu N] [--compare NAME=BINARY ...] [--binary PATH]
  --binary  measure this tokenproxy build (a PGO build from pgo.py) instead of
            target/release/tokenproxy
Everything listens on 127.0.0.1 and is stopped by PID at the end.
"""
import argparse
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

from bench import NGINX, PROCS, ROOT, children, cpu_seconds, medians, nginx_config, rss_kib, start, wait
from procs import free_port, stop

TOKEN = "bench-token-0123456789"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def configs(tmp, ports):
    origin = nginx_config(tmp, "origin", 1, f"""
    server {{
        listen 127.0.0.1:{ports['origin']} backlog=4096;
        location / {{ return 200 "ok\\n"; }}
        location = /token {{
            default_type application/json;
            return 200 '{{"access_token":"{TOKEN}","token_type":"Bearer","expires_in":3600}}';
        }}
    }}
    server {{
        listen 127.0.0.1:{ports['origin_h2c']} http2 backlog=4096;
        http2_max_requests 1000000;
        location / {{ return 200 "ok\\n"; }}
    }}""")
    proxy = nginx_config(tmp, "proxy", 1, f"""
    upstream origin {{ server 127.0.0.1:{ports['origin']}; keepalive 256; }}
    upstream origin_h2c {{ server 127.0.0.1:{ports['origin_h2c']}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{ports['nginx_h1']} http2 backlog=4096;
        http2_max_requests 1000000;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {TOKEN}";
        }}
    }}
    server {{
        listen 127.0.0.1:{ports['nginx_h2']} http2 backlog=4096;
        http2_max_requests 1000000;
        location / {{
            grpc_pass grpc://origin_h2c;
            grpc_set_header Authorization "Bearer {TOKEN}";
        }}
    }}""")
    tokenproxy = f"""
proxy:
  listen: 127.0.0.1:{ports['fwd']}
  http2_max_concurrent_streams: 256
admin:
  listen: 127.0.0.1:{ports['admin']}
clients:
  bench:
    token_endpoint: http://127.0.0.1:{ports['origin']}/token
    client_id: bench
    client_secret: bench-secret
upstreams:
  h1:
    url: http://127.0.0.1:{ports['origin']}
    listen: 127.0.0.1:{ports['rev_h1']}
    client: bench
  h2:
    url: http://127.0.0.1:{ports['origin_h2c']}
    listen: 127.0.0.1:{ports['rev_h2']}
    client: bench
    protocol: http2
"""
    return origin, proxy, tokenproxy


def h2load(url, args, tmp, cpu=None, measured=()):
    """req/s, p50 ms, p99 ms, CPU µs per request (user, system) of `measured`."""
    log = f"{tmp}/h2load.log"
    argv = ["h2load", "-n", str(args.requests), "-c", str(args.connections), "-m", str(args.streams),
            "--log-file", log, url]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    before = cpu_seconds(measured)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300).stdout
    after = cpu_seconds(measured)
    done = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded", out)
    if not done or done.group(2) != str(args.requests):
        raise SystemExit(f"h2load did not complete every request against {url}:\n{out}")
    if not re.search(rf"status codes: {args.requests} 2xx", out):
        raise SystemExit(f"non-2xx answers from {url}:\n{out}")
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    with open(log) as f:  # start (s), status, duration (µs) per request
        durations = sorted(int(line.split()[2]) for line in f if line.strip())
    p50 = durations[len(durations) // 2] / 1000
    p99 = durations[int(len(durations) * 0.99)] / 1000
    user, system = ((b - a) * 1e6 / args.requests for a, b in zip(before, after))
    return rps, p50, p99, user, system


def idle_connection_kib(pid, port, n=200):
    """RSS growth per open, idle HTTP/2 connection (preface and SETTINGS sent, nothing else)."""
    time.sleep(0.3)
    before = rss_kib(pid)
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(PREFACE)
        socks.append(s)
    time.sleep(0.5)
    after = rss_kib(pid)
    for s in socks:
        s.close()
    return (after - before) / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--streams", type=int, default=25)
    ap.add_argument("--pin", action="store_true")
    ap.add_argument("--origin-cpu", type=int, default=None,
                    help="pin the origin nginx here instead of with the proxies (with --pin: CPU 0)")
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=BINARY",
                    help="another tokenproxy binary, run as targets \"h NAME\" and \"j NAME\"")
    ap.add_argument("--binary", help="measure this tokenproxy build instead of target/release/tokenproxy")
    args = ap.parse_args()
    server_cpu, client_cpu = (0, 1) if args.pin else (None, None)

    if not args.binary:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "tokenproxy"], cwd=ROOT, check=True)
    binary = os.path.abspath(args.binary or os.path.join(ROOT, "target", "release", "tokenproxy"))
    tmp = tempfile.mkdtemp(prefix="tokenproxy-bench-h2-")
    ports = {k: free_port() for k in ["origin", "origin_h2c", "nginx_h1", "nginx_h2", "rev_h1", "rev_h2",
                                      "fwd", "admin"]}
    origin, proxy, tokenproxy = configs(tmp, ports)
    for name, text in [("origin", origin), ("proxy", proxy)]:
        with open(f"{tmp}/{name}.conf", "w") as f:
            f.write(text)
    with open(f"{tmp}/tokenproxy.yaml", "w") as f:
        f.write(tokenproxy)
    others = []  # (name, binary, ports)
    for spec in args.compare:
        name, path = spec.split("=", 1)
        own = {**ports, **{k: free_port() for k in ["rev_h1", "rev_h2", "fwd", "admin"]}}
        with open(f"{tmp}/compare-{name}.yaml", "w") as f:
            f.write(configs(tmp, own)[2])
        others.append((name, os.path.abspath(path), own))
    try:
        origin_cpu = args.origin_cpu if args.origin_cpu is not None else server_cpu
        masters = {name: start([NGINX, "-p", tmp, "-c", f"{tmp}/{name}.conf", "-g", "daemon off;"],
                               cpu=origin_cpu if name == "origin" else server_cpu)
                   for name in ["origin", "proxy"]}
        wait(f"http://127.0.0.1:{ports['origin']}/")
        time.sleep(0.3)
        proxy_workers = children(masters["proxy"].pid)
        tp = start([binary, "run", "-c", f"{tmp}/tokenproxy.yaml", "--workers", "1"], cpu=server_cpu,
                   env={"RUST_LOG": "warn"})
        wait(f"http://127.0.0.1:{ports['admin']}/readyz")
        compared = []
        for name, path, own in others:
            p = start([path, "run", "-c", f"{tmp}/compare-{name}.yaml", "--workers", "1"], cpu=server_cpu,
                      env={"RUST_LOG": "warn"})
            wait(f"http://127.0.0.1:{own['admin']}/readyz")
            compared.append((name, p, own))
        idle_rss = rss_kib(tp.pid)
        per_conn = idle_connection_kib(tp.pid, ports["rev_h1"])

        targets = [
            ("g nginx h2c→HTTP/1.1", f"http://127.0.0.1:{ports['nginx_h1']}/", proxy_workers),
            ("h tokenproxy h2c→HTTP/1.1", f"http://127.0.0.1:{ports['rev_h1']}/", [tp.pid]),
            ("i nginx h2c→h2c (grpc_pass)", f"http://127.0.0.1:{ports['nginx_h2']}/", proxy_workers),
            ("j tokenproxy h2c→h2c", f"http://127.0.0.1:{ports['rev_h2']}/", [tp.pid]),
            *((f"h {name}", f"http://127.0.0.1:{own['rev_h1']}/", [p.pid]) for name, p, own in compared),
            *((f"j {name}", f"http://127.0.0.1:{own['rev_h2']}/", [p.pid]) for name, p, own in compared),
        ]
        results = {name: [] for name, _, _ in targets}
        for _ in range(args.runs):
            for name, url, measured in targets:
                results[name].append(h2load(url, args, tmp, client_cpu, measured))
        # 1,000 concurrent streams: 10 connections x 100 streams.
        peak = 0
        holder = subprocess.Popen(["h2load", "-n", "200000", "-c", "10", "-m", "100",
                                   f"http://127.0.0.1:{ports['rev_h2']}/"], stdout=subprocess.DEVNULL)
        PROCS.append(holder)
        while holder.poll() is None:
            peak = max(peak, rss_kib(tp.pid))
            time.sleep(0.1)
    finally:
        for p in reversed(PROCS):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)

    med = medians(results)
    print(f"# {time.strftime('%Y-%m-%d')} · {os.cpu_count()} cores · h2load -n {args.requests} "
          f"-c {args.connections} -m {args.streams} · {args.runs} runs, medians · one nginx worker, one "
          f"tokenproxy worker · pinned {args.pin} · origin on CPU "
          f"{args.origin_cpu if args.origin_cpu is not None else ('0, with the proxies' if args.pin else 'any')}")
    print("| target | req/s | vs nginx | p50 ms | p99 ms | p99 vs nginx | CPU µs/req (user+kernel) | CPU vs nginx |")
    print("|---|---|---|---|---|---|---|---|")
    pairs = {"g": "g", "h": "g", "i": "i", "j": "i"}
    names = {n[0]: n for n in reversed(med)}
    for name, (rps, p50, p99, user, system) in med.items():
        ref = med[names[pairs[name[0]]]]
        print(f"| {name} | {rps:,.0f} | {rps / ref[0]:.2f}x | {p50:.2f} | {p99:.2f} | {p99 / ref[2]:.2f}x "
              f"| {user:.1f}+{system:.1f} = {user + system:.1f} | {(user + system) / (ref[3] + ref[4]):.2f}x |")
    print(f"tokenproxy RSS: idle {idle_rss / 1024:.1f} MiB; with 1,000 concurrent streams (10 connections"
          f" x 100) {peak / 1024:.1f} MiB; per idle HTTP/2 connection {per_conn:.1f} KiB")


if __name__ == "__main__":
    main()
