#!/usr/bin/env python3
"""System calls per proxied request at one connection (performance issue, item 1): what the
one-connection path does beyond nginx, counted by `strace -c` (counts, not times: strace slows
everything, but a request makes the same calls).

Runs nginx (one worker) as a reverse proxy adding a static header, and a tokenproxy reverse
listener (one worker, or --runtime current-thread), each in front of the same origin nginx,
sends a fixed number of keep-alive requests over one connection (ab -k -c 1), and prints the
system calls per request by name, side by side.

Usage: syscalls.py [--binary PATH] [--requests 5000] [--runtime multi-thread|current-thread]
Everything listens on 127.0.0.1 and is stopped by PID at the end.
"""
import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time

from bench import NGINX, PROCS, ROOT, children, nginx_config, origin_config, start, wait
from bench_runtime import nginx_proxy, tokenproxy_config
from procs import free_port, stop


def counted(pids, url, requests):
    """{syscall: calls per request} of `pids` (and their threads) while ab sends `requests`."""
    out = tempfile.mktemp(prefix="strace-")
    argv = ["strace", "-f", "-c", "-o", out]
    for pid in pids:
        argv += ["-p", str(pid)]
    tracer = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    subprocess.run(["ab", "-q", "-k", "-n", str(requests), "-c", "1", url], capture_output=True, timeout=300,
                   check=True)
    tracer.terminate()
    tracer.wait(timeout=30)
    calls = {}
    with open(out) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
            if m and m.group(2) != "total":
                calls[m.group(2)] = int(m.group(1)) / requests
    os.unlink(out)
    return calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "tokenproxy"))
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--runtime", default="multi-thread")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="tokenproxy-syscalls-")
    port = {k: free_port() for k in ["origin", "nginx", "rev", "admin"]}
    try:
        with open(f"{tmp}/origin.conf", "w") as f:
            f.write(origin_config(tmp, port["origin"]))
        with open(f"{tmp}/proxy.conf", "w") as f:
            f.write(nginx_proxy(tmp, "proxy", 1, port["nginx"], port["origin"]))
        start([NGINX, "-p", tmp, "-c", f"{tmp}/origin.conf", "-g", "daemon off;"])
        proxy = start([NGINX, "-p", tmp, "-c", f"{tmp}/proxy.conf", "-g", "daemon off;"])
        with open(f"{tmp}/tp.yaml", "w") as f:
            f.write(tokenproxy_config(port["origin"], port["rev"], port["admin"]))
        flags = ["--workers", "1"] if args.runtime == "multi-thread" else ["--runtime", args.runtime]
        tp = start([args.binary, "run", "-c", f"{tmp}/tp.yaml", *flags], env={"RUST_LOG": "warn"})
        wait(f"http://127.0.0.1:{port['origin']}/")
        wait(f"http://127.0.0.1:{port['admin']}/readyz")
        time.sleep(0.3)
        nginx = counted(children(proxy.pid), f"http://127.0.0.1:{port['nginx']}/", args.requests)
        ours = counted([tp.pid], f"http://127.0.0.1:{port['rev']}/", args.requests)
    finally:
        for p in reversed(PROCS):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# system calls per request, ab -k -c 1 -n {args.requests}, one worker each "
          f"(tokenproxy {args.runtime})")
    print("| call | nginx | tokenproxy |")
    print("|---|---:|---:|")
    for name in sorted(set(nginx) | set(ours), key=lambda n: -(ours.get(n, 0) + nginx.get(n, 0))):
        if max(ours.get(name, 0), nginx.get(name, 0)) >= 0.01:
            print(f"| {name} | {nginx.get(name, 0):.2f} | {ours.get(name, 0):.2f} |")
    print(f"| total | {sum(nginx.values()):.2f} | {sum(ours.values()):.2f} |")


if __name__ == "__main__":
    main()
