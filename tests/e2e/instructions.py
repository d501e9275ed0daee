#!/usr/bin/env python3
"""User-space instructions per proxied request, counted by callgrind: the figure to compare
changes to the request path by, since it repeats to about 0.5% where timings on a shared VM
move 5-10%.

Runs the release binary (or --binary) under `valgrind --tool=callgrind` against the bench
origin (nginx), warms it up, then brackets a fixed wrk load on the reverse and the forward
listener with `callgrind_control -z` / `-d`, and divides the instructions by the requests.

Usage: instructions.py [--binary PATH] [--seconds 4] [--connections 8]
Everything listens on 127.0.0.1 and is stopped by PID at the end.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import tempfile
import time

from bench import NGINX, PROCS, ROOT, origin_config, start, tokenproxy_config, wait
from procs import free_port, stop


def load(url, seconds, connections, script=None):
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]
    if script:
        argv[1:1] = ["-s", script]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    return int(re.search(r"(\d+) requests in", out).group(1))


def counted(pid, tmp, url, args, script=None):
    """Instructions per request for one target."""
    load(url, 1, args.connections, script)  # warm-up: connections, pools, caches
    subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True, check=True)
    requests = load(url, args.seconds, args.connections, script)
    for f in glob.glob(f"{tmp}/callgrind.out.*"):
        os.remove(f)
    subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, check=True)
    total = 0
    for f in glob.glob(f"{tmp}/callgrind.out.*"):
        with open(f) as fh:
            m = re.search(r"^summary:\s+(\d+)", fh.read(), re.M)
            total += int(m.group(1)) if m else 0
    return total / max(requests, 1), requests


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary")
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()
    binary = args.binary
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "tokenproxy"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "tokenproxy")
    tmp = tempfile.mkdtemp(prefix="tokenproxy-callgrind-")
    ports = {k: free_port() for k in ["origin", "rev", "fwd", "admin"]}
    with open(f"{tmp}/origin.conf", "w") as f:
        f.write(origin_config(tmp, ports["origin"]))
    with open(f"{tmp}/tokenproxy.yaml", "w") as f:
        f.write(tokenproxy_config(ports))
    lua = f"{tmp}/forward.lua"
    with open(lua, "w") as f:
        f.write('wrk.path = "http://origin.bench/"\n')
    try:
        start([NGINX, "-p", tmp, "-c", f"{tmp}/origin.conf", "-g", "daemon off;"])
        wait(f"http://127.0.0.1:{ports['origin']}/")
        tp = start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.out.%p",
                    binary, "run", "-c", f"{tmp}/tokenproxy.yaml", "--workers", "1"],
                   env={"RUST_LOG": "warn"})
        wait(f"http://127.0.0.1:{ports['admin']}/readyz", timeout=60)
        rev = counted(tp.pid, tmp, f"http://127.0.0.1:{ports['rev']}/", args)
        fwd = counted(tp.pid, tmp, f"http://127.0.0.1:{ports['fwd']}/", args, lua)
    finally:
        for p in reversed(PROCS):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# {binary} · callgrind · wrk -t1 -c{args.connections} -d{args.seconds}s · 1 worker")
    print(f"reverse: {rev[0]:,.0f} instructions per request ({rev[1]} requests)")
    print(f"forward: {fwd[0]:,.0f} instructions per request ({fwd[1]} requests)")


if __name__ == "__main__":
    main()
