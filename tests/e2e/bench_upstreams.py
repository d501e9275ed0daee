#!/usr/bin/env python3
"""Memory per upstream: starts the release binary with 1, 50 and 200 upstreams (one client,
each with its own scope, so its own token source, url and reverse listener) against the bench origin (nginx,
which also answers the token requests), and prints RSS once ready, the growth per upstream
over the 1-upstream base, the /metrics page size and the token fetches at start as the metrics count them (a shared fetch under each of its
upstreams).
Not part of CI's pass/fail.

Usage: bench_upstreams.py [--counts 1,50,200] [--binary PATH] [--no-listen] [--same-request]
Everything listens on 127.0.0.1 and is stopped by PID at the end.
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

from bench import NGINX, PROCS, ROOT, origin_config, rss_kib, start, wait
from procs import free_port, stop


def config(ports, n, admin, token_port, listen=True, same=False):
    lines = [f"admin:\n  listen: 127.0.0.1:{admin}",
             "clients:\n  bench:",
             f"    token_endpoint: http://127.0.0.1:{token_port}/token",
             "    client_id: bench\n    client_secret: bench-secret",
             "upstreams:"]
    for i in range(n):
        lines.append(f"  api{i}:\n    url: http://127.0.0.1:{token_port}/api{i}\n    match: [api{i}.bench]\n"
                     f"    listen: 127.0.0.1:{ports[i]}\n    client: bench\n    scopes: [{'api' if same else f'api{i}'}:read]")
        if not listen:
            lines[-1] = lines[-1].replace(f"    listen: 127.0.0.1:{ports[i]}\n", "")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="1,50,200")
    ap.add_argument("--binary")
    ap.add_argument("--no-listen", action="store_true", help="upstreams without reverse listeners")
    ap.add_argument("--same-request", action="store_true",
                    help="every upstream asks for the same scopes, so all share one token source")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    if not args.binary:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "tokenproxy"], cwd=ROOT, check=True)
    binary = args.binary or os.path.join(ROOT, "target", "release", "tokenproxy")
    tmp = tempfile.mkdtemp(prefix="tokenproxy-bench-upstreams-")
    origin_port = free_port()
    with open(f"{tmp}/origin.conf", "w") as f:
        f.write(origin_config(tmp, origin_port))
    rows = []
    try:
        start([NGINX, "-p", tmp, "-c", f"{tmp}/origin.conf", "-g", "daemon off;"])
        wait(f"http://127.0.0.1:{origin_port}/")
        for n in counts:
            admin = free_port()
            ports = [free_port() for _ in range(n)]
            cfg = f"{tmp}/tokenproxy-{n}.yaml"
            with open(cfg, "w") as f:
                f.write(config(ports, n, admin, origin_port, listen=not args.no_listen, same=args.same_request))
            tp = start([binary, "run", "-c", cfg, "--workers", "1"], env={"RUST_LOG": "warn"})
            wait(f"http://127.0.0.1:{admin}/readyz", timeout=60)
            time.sleep(1.0)
            rss = rss_kib(tp.pid)
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics") as r:
                metrics = r.read().decode()
            fetches = sum(int(float(line.rsplit(" ", 1)[1])) for line in metrics.splitlines()
                          if line.startswith('tokenproxy_token_fetches_total{outcome="success"'))
            rows.append((n, rss, len(metrics), fetches))
            stop(tp)
            PROCS.remove(tp)
    finally:
        for p in reversed(PROCS):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    base = rows[0][1]
    print(f"# {time.strftime('%Y-%m-%d')} · {binary}")
    print("| upstreams | RSS MiB | per upstream over the first, KiB | /metrics KB | fetches at start, counted under each upstream |")
    print("|---|---|---|---|---|")
    for n, rss, size, fetches in rows:
        per = (rss - base) / (n - rows[0][0]) if n != rows[0][0] else 0
        print(f"| {n} | {rss / 1024:.1f} | {per:.1f} | {size / 1000:.0f} | {fetches} |")


if __name__ == "__main__":
    main()
