#!/usr/bin/env python3
"""System calls and page faults per proxied request (performance issue, item 1): what the
path does beyond nginx in the kernel, counted by `strace -c` (counts, not times: strace slows
everything, and a request makes the same calls, except the heap's: see --perf) and the
process's minor faults (/proc).

Runs nginx (one worker) as a reverse proxy adding a static header, and a tokenproxy reverse
listener (one worker, on the runtime --runtime names), each in front of the same origin nginx,
sends a fixed number of keep-alive requests over --connections connections (ab -k), and prints
the system calls per request by name, side by side. `--floor` adds examples/hyper_floor.rs.
At 32 connections `brk` and the faults show glibc trimming and regrowing the heap's top
(docs/performance.md, "Tenth round").

`--perf` counts by `perf stat` tracepoints instead: a fixed list of calls, at full speed. strace
stops the process at every call, which changes how requests overlap, and with that the heap's
pattern: under strace the `brk` calls all but vanish.

Usage: syscalls.py [--binary PATH] [--requests 5000] [--connections 1] [--floor] [--perf]
                   [--runtime auto|multi-thread|current-thread]
  --runtime  tokenproxy's runtime at one worker (auto: the current-thread one, as deployed)
Everything listens on 127.0.0.1 and is stopped by PID at the end.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from bench import NGINX, PROCS, ROOT, children, floor_binary, origin_config, start, wait
from bench_runtime import nginx_proxy, tokenproxy_config
from procs import free_port, stop


def minor_faults(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            total += int(f.read().rsplit(")", 1)[1].split()[7])
    return total


# What --perf counts: the calls a request makes, and those of the heap.
PERF_CALLS = ["recvfrom", "writev", "epoll_wait", "read", "write", "sendto", "futex", "brk", "mmap", "munmap",
              "madvise"]


def counted(pids, url, requests, connections, perf=False):
    """{syscall: calls per request} of `pids` (and their threads) while ab sends `requests`,
    and their minor page faults per request as "(page faults)". `perf`: by `perf stat`
    tracepoints (PERF_CALLS only, and the process runs at full speed) instead of strace."""
    out = tempfile.mktemp(prefix="syscalls-")
    if perf:
        events = ",".join(f"syscalls:sys_enter_{name}" for name in PERF_CALLS)
        argv = ["perf", "stat", "-x,", "-o", out, "-e", events, "-p", ",".join(map(str, pids))]
    else:
        argv = ["strace", "-f", "-c", "-o", out]
        for pid in pids:
            argv += ["-p", str(pid)]
    tracer = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    faults = minor_faults(pids)
    subprocess.run(["ab", "-q", "-k", "-n", str(requests), "-c", str(connections), url], capture_output=True,
                   timeout=300, check=True)
    faults = minor_faults(pids) - faults
    if perf:
        tracer.send_signal(signal.SIGINT)  # perf stat writes its counts on SIGINT
    else:
        tracer.terminate()
    tracer.wait(timeout=30)
    calls = {}
    with open(out) as f:
        for line in f:
            if perf:
                m = re.match(r"(\d+),[^,]*,syscalls:sys_enter_(\w+),", line)
                if m:
                    calls[m.group(2)] = int(m.group(1)) / requests
            else:
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
                if m and m.group(2) != "total":
                    calls[m.group(2)] = int(m.group(1)) / requests
    os.unlink(out)
    calls["(page faults)"] = faults / requests
    return calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "tokenproxy"))
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--floor", action="store_true", help="count examples/hyper_floor.rs too")
    ap.add_argument("--perf", action="store_true",
                    help="count with perf stat (a few calls, no slowdown) instead of strace (every call)")
    ap.add_argument("--runtime", default="auto", choices=["auto", "multi-thread", "current-thread"])
    args = ap.parse_args()
    floor_path = floor_binary() if args.floor else None
    tmp = tempfile.mkdtemp(prefix="tokenproxy-syscalls-")
    port = {k: free_port() for k in ["origin", "nginx", "rev", "admin", "floor"]}
    try:
        with open(f"{tmp}/origin.conf", "w") as f:
            f.write(origin_config(tmp, port["origin"]))
        with open(f"{tmp}/proxy.conf", "w") as f:
            f.write(nginx_proxy(tmp, "proxy", 1, port["nginx"], port["origin"]))
        start([NGINX, "-p", tmp, "-c", f"{tmp}/origin.conf", "-g", "daemon off;"])
        proxy = start([NGINX, "-p", tmp, "-c", f"{tmp}/proxy.conf", "-g", "daemon off;"])
        with open(f"{tmp}/tp.yaml", "w") as f:
            f.write(tokenproxy_config(port["origin"], port["rev"], port["admin"]))
        flags = ["--workers", "1", "--runtime", args.runtime]
        tp = start([args.binary, "run", "-c", f"{tmp}/tp.yaml", *flags], env={"RUST_LOG": "warn"})
        wait(f"http://127.0.0.1:{port['origin']}/")
        wait(f"http://127.0.0.1:{port['admin']}/readyz")
        if args.floor:
            floor = start([floor_path, f"127.0.0.1:{port['floor']}", f"127.0.0.1:{port['origin']}"])
            wait(f"http://127.0.0.1:{port['floor']}/")
        time.sleep(0.3)
        n, c, perf = args.requests, args.connections, args.perf
        columns = {"nginx": counted(children(proxy.pid), f"http://127.0.0.1:{port['nginx']}/", n, c, perf),
                   "tokenproxy": counted([tp.pid], f"http://127.0.0.1:{port['rev']}/", n, c, perf)}
        if args.floor:
            columns["floor"] = counted([floor.pid], f"http://127.0.0.1:{port['floor']}/", n, c, perf)
    finally:
        for p in reversed(PROCS):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# system calls per request, ab -k -c {args.connections} -n {args.requests}, one worker each "
          f"(tokenproxy --runtime {args.runtime}){', perf stat' if args.perf else ', strace'}")
    print("| call | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    names = {name for calls in columns.values() for name in calls}
    for name in sorted(names, key=lambda n: -sum(calls.get(n, 0) for calls in columns.values())):
        if max(calls.get(name, 0) for calls in columns.values()) >= 0.001:
            print(f"| {name} | " + " | ".join(f"{calls.get(name, 0):.3f}" for calls in columns.values()) + " |")
    print("| total calls | " + " | ".join(f"{sum(v for k, v in calls.items() if k != '(page faults)'):.2f}"
                                       for calls in columns.values()) + " |")


if __name__ == "__main__":
    main()
