#!/usr/bin/env python3
"""Benchmark of tokio runtimes (performance issue, item 4): today's multi-thread runtime
against a current-thread runtime per worker, at one and two workers, on the reverse listener,
side by side with nginx (one and two workers) adding a static header, in one run.

  one worker:  (b1) nginx, 1 worker; (m1) tokenproxy --workers 1 (multi-thread: one worker
               thread, work stealing machinery, a separate timer/IO driver hand-off);
               (c1) tokenproxy --runtime current-thread (everything on the main thread).
  two workers: (b2) nginx, 2 workers; (m2) tokenproxy --workers 2; (c2) two tokenproxy
               processes, each --runtime current-thread, sharing the reverse port with
               SO_REUSEPORT (TOKENPROXY_REUSE_PORT=1; the kernel spreads connections, as
               between nginx's workers). Each process fetches its own token.

One-worker targets are pinned to CPU 0 with wrk on CPU 1 (with --pin); two-worker targets use
both cores and share them with wrk, so compare their CPU per request more than their req/s.
Prints req/s, p50, p99 and the servers' CPU per request (user + kernel, all processes).
Not part of CI's pass/fail.

Usage: bench_runtime.py [--runs 3] [--duration 8] [--connections 32] [--pin]
Everything listens on 127.0.0.1 and is stopped by PID at the end.
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time

from bench import NGINX, PROCS, ROOT, children, medians, nginx_config, origin_config, start, wait, wrk
from procs import free_port, stop


def tokenproxy_config(origin, rev, admin):
    return f"""
admin:
  listen: 127.0.0.1:{admin}
clients:
  bench:
    token_endpoint: http://127.0.0.1:{origin}/token
    client_id: bench
    client_secret: bench-secret
upstreams:
  origin:
    url: http://127.0.0.1:{origin}
    listen: 127.0.0.1:{rev}
    client: bench
"""


def nginx_proxy(tmp, name, workers, port, origin):
    return nginx_config(tmp, name, workers, f"""
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096 reuseport;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer bench-token-0123456789";
        }}
    }}""")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--pin", action="store_true")
    ap.add_argument("--think", type=int, default=0)  # wrk() reads it
    args = ap.parse_args()
    server_cpu, client_cpu = (0, 1) if args.pin else (None, None)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "tokenproxy"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "tokenproxy")
    tmp = tempfile.mkdtemp(prefix="tokenproxy-bench-rt-")
    port = {k: free_port() for k in ["origin", "b1", "b2", "m1", "c1", "m2", "c2"]}
    try:
        with open(f"{tmp}/origin.conf", "w") as f:
            f.write(origin_config(tmp, port["origin"]))
        masters = {"origin": start([NGINX, "-p", tmp, "-c", f"{tmp}/origin.conf", "-g", "daemon off;"])}
        for name, workers in [("b1", 1), ("b2", 2)]:
            with open(f"{tmp}/{name}.conf", "w") as f:
                f.write(nginx_proxy(tmp, name, workers, port[name], port["origin"]))
            masters[name] = start([NGINX, "-p", tmp, "-c", f"{tmp}/{name}.conf", "-g", "daemon off;"],
                                  cpu=server_cpu if workers == 1 else None)
        wait(f"http://127.0.0.1:{port['origin']}/")

        def proxy(name, rev, flags, env=None, cpu=None):
            admin = free_port()
            with open(f"{tmp}/{name}.yaml", "w") as f:
                f.write(tokenproxy_config(port["origin"], rev, admin))
            p = start([binary, "run", "-c", f"{tmp}/{name}.yaml", *flags], cpu=cpu,
                      env={"RUST_LOG": "warn", **(env or {})})
            wait(f"http://127.0.0.1:{admin}/readyz")
            return p

        m1 = proxy("m1", port["m1"], ["--workers", "1"], cpu=server_cpu)
        c1 = proxy("c1", port["c1"], ["--runtime", "current-thread"], cpu=server_cpu)
        m2 = proxy("m2", port["m2"], ["--workers", "2"])
        shared = {"TOKENPROXY_REUSE_PORT": "1"}
        c2 = [proxy(f"c2-{i}", port["c2"], ["--runtime", "current-thread"], env=shared) for i in range(2)]
        time.sleep(0.5)
        url = lambda name: f"http://127.0.0.1:{port[name]}/"  # noqa: E731
        targets = [
            ("b1 nginx, 1 worker", url("b1"), children(masters["b1"].pid), client_cpu),
            ("m1 tokenproxy multi-thread, 1 worker", url("m1"), [m1.pid], client_cpu),
            ("c1 tokenproxy current-thread", url("c1"), [c1.pid], client_cpu),
            ("b2 nginx, 2 workers", url("b2"), children(masters["b2"].pid), None),
            ("m2 tokenproxy multi-thread, 2 workers", url("m2"), [m2.pid], None),
            ("c2 tokenproxy 2 x current-thread, SO_REUSEPORT", url("c2"), [p.pid for p in c2], None),
        ]
        results = {name: [] for name, _, _, _ in targets}
        for _ in range(args.runs):
            for name, target, measured, cpu in targets:
                results[name].append(wrk(target, args, None, cpu, measured))
    finally:
        for p in reversed(PROCS):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)

    med = medians(results)
    print(f"# {time.strftime('%Y-%m-%d')} · {os.cpu_count()} cores · wrk -t1 -c{args.connections} "
          f"-d{args.duration}s · {args.runs} runs, medians · one-worker targets pinned {args.pin}")
    print("| target | req/s | vs nginx | p50 ms | p99 ms | CPU µs/req (user+kernel) | CPU vs nginx |")
    print("|---|---|---|---|---|---|---|")
    for name, (rps, p50, p99, user, system) in med.items():
        ref = med["b1 nginx, 1 worker"] if name[1] == "1" else med["b2 nginx, 2 workers"]
        print(f"| {name} | {rps:,.0f} | {rps / ref[0]:.2f}x | {p50:.2f} | {p99:.2f} "
              f"| {user:.1f}+{system:.1f} = {user + system:.1f} | {(user + system) / (ref[3] + ref[4]):.2f}x |")


if __name__ == "__main__":
    main()
