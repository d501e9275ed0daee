#!/usr/bin/env python3
"""User-space instructions per proxied request, counted by callgrind: the figure to compare
changes to the request path by, since it repeats to about 0.5% where timings on a shared VM
move 5-10%.

Runs the release binary (or --binary) under `valgrind --tool=callgrind` against the bench
origin (nginx), warms it up, then brackets a fixed number of keep-alive requests (ab -k) on
the reverse and the forward listener with `callgrind_control -z` / `-d`, and divides the
instructions by the requests. A fixed count, not a fixed time, so fixed costs (timers,
the runtime's idle work) weigh the same in every run.

`--cache` also simulates the first-level caches and the branch predictor and prints, per
request, the misses, callgrind's cycle estimate and the distinct code a request runs
(`cachesim.py`): where CPU time goes that the instruction count does not show. It runs about
twice as slowly.

`--nginx` counts the bench's nginx proxy (`bench.py`'s (b), one worker, no master process)
instead, reverse only: where hyper and tokenproxy stand against it, on the same terms.

`--floor` counts `examples/hyper_floor.rs` instead, the least a hyper reverse proxy does per
request: the floor under tokenproxy's figures. Its "forward" count is the same listener sent
the absolute-form request an `HTTP_PROXY` client sends: what hyper and http spend on that
form alone. `--path` sets the request's path and query (default `/`).

Usage: instructions.py [--binary PATH | --floor [spawned|same-task] | --nginx] [--requests 20000]
                       [--connections 8] [--traced RATIO] [--path /v1/orders?page=2] [--cache]
Everything listens on 127.0.0.1 and is stopped by PID at the end.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import tempfile

import cachesim
from bench import NGINX, PROCS, ROOT, floor_binary, origin_config, start, tokenproxy_config, wait
from bench_runtime import nginx_proxy
from procs import free_port, stop


def load(target, requests, connections):
    """Exactly `requests` keep-alive requests with ab; `target` is (url, proxy or None)."""
    url, proxy = target
    argv = ["ab", "-q", "-k", "-n", str(requests), "-c", str(connections), url]
    if proxy:
        argv[1:1] = ["-X", proxy]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600).stdout
    done = int(re.search(r"Complete requests:\s+(\d+)", out).group(1))
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))
    if done != requests or failed:
        raise SystemExit(f"{url}: {done} of {requests} requests, {failed} failed\n{out}")
    return done


def counted(pid, tmp, target, args, name):
    """Instructions per request for one target."""
    load(target, 2000, args.connections)  # warm-up: connections, pools, caches
    subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True, check=True)
    requests = load(target, args.requests, args.connections)
    for f in glob.glob(f"{tmp}/callgrind.out.*"):
        os.remove(f)
    subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, check=True)
    total, cache = 0, None
    for f in glob.glob(f"{tmp}/callgrind.out.*"):
        with open(f) as fh:
            m = re.search(r"^summary:\s+(\d+)", fh.read(), re.M)
            total += int(m.group(1)) if m else 0
        if args.cache:
            cache = cachesim.figures(f, requests)
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            shutil.copy(f, os.path.join(args.keep, f"{name}.out"))
    return total / max(requests, 1), requests, cache


def main():
    ap = argparse.ArgumentParser()
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--binary")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--keep", help="copy the callgrind dumps here (reverse.out, forward.out)")
    ap.add_argument("--traced", type=float, metavar="RATIO",
                    help="tracing on at this sample_ratio, exported to the origin nginx (bench's (h))")
    which.add_argument("--floor", nargs="?", const="spawned", choices=["spawned", "same-task"],
                    help="count examples/hyper_floor.rs instead (its upstream connection on a task of its "
                         "own, or polled with the client's as tokenproxy's pool did)")
    ap.add_argument("--path", default="/",
                    help="the request's path and query (default /, which http's URI parser takes on a "
                         "fast path that a longer origin-form target does not)")
    ap.add_argument("--cache", action="store_true",
                    help="also simulate the caches and branch predictor: misses, estimated cycles and "
                         "distinct code run per request")
    which.add_argument("--nginx", action="store_true",
                    help="count the bench's nginx proxy instead (reverse only)")
    args = ap.parse_args()
    binary = args.binary
    if args.nginx:
        binary = NGINX
    elif args.floor:
        binary = floor_binary()
    elif not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "tokenproxy"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "tokenproxy")
    tmp = tempfile.mkdtemp(prefix="tokenproxy-callgrind-")
    ports = {k: free_port() for k in ["origin", "rev", "fwd", "admin"]}
    with open(f"{tmp}/origin.conf", "w") as f:
        f.write(origin_config(tmp, ports["origin"]))
    with open(f"{tmp}/tokenproxy.yaml", "w") as f:
        f.write(tokenproxy_config(ports, traced=args.traced))
    try:
        start([NGINX, "-p", tmp, "-c", f"{tmp}/origin.conf", "-g", "daemon off;"])
        wait(f"http://127.0.0.1:{ports['origin']}/")
        grind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.out.%p"]
        if args.cache:
            grind[2:2] = ["--cache-sim=yes", "--branch-sim=yes", "--dump-instr=yes"]
        if args.nginx:
            with open(f"{tmp}/proxy.conf", "w") as f:
                f.write(nginx_proxy(tmp, "proxy", 1, ports["rev"], ports["origin"]))
            tp = start([*grind, NGINX, "-p", tmp, "-c", f"{tmp}/proxy.conf", "-g",
                        "daemon off; master_process off;"])
            wait(f"http://127.0.0.1:{ports['rev']}/", timeout=60)
        elif args.floor:
            same = ["--same-task"] if args.floor == "same-task" else []
            tp = start([*grind, binary, *same, f"127.0.0.1:{ports['rev']}", f"127.0.0.1:{ports['origin']}"])
            wait(f"http://127.0.0.1:{ports['rev']}/", timeout=60)
        else:
            tp = start([*grind, binary, "run", "-c", f"{tmp}/tokenproxy.yaml", "--workers", "1"],
                       env={"RUST_LOG": "warn"})
            wait(f"http://127.0.0.1:{ports['admin']}/readyz", timeout=60)
        path = args.path
        rev = counted(tp.pid, tmp, (f"http://127.0.0.1:{ports['rev']}{path}", None), args, "reverse")
        # The floor has no forward listener: it takes the absolute-form request on its one
        # listener, as a forward proxy would, and sends it on in origin form.
        fwd_proxy = f"127.0.0.1:{ports['rev' if args.floor else 'fwd']}"
        fwd = None
        if not args.nginx:  # the bench's nginx has no forward listener
            fwd = counted(tp.pid, tmp, (f"http://origin.bench{path}", fwd_proxy), args, "forward")
    finally:
        for p in reversed(PROCS):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# {binary} · callgrind · ab -k -n {args.requests} -c {args.connections} · 1 worker · {args.path}")
    print(f"reverse: {rev[0]:,.0f} instructions per request ({rev[1]} requests)")
    if fwd:
        print(f"forward: {fwd[0]:,.0f} instructions per request ({fwd[1]} requests), "
              f"{fwd[0] / rev[0] - 1:+.1%} over reverse")
    for name, counts in (("reverse", rev), ("forward", fwd)):
        if counts and counts[2]:
            print(f"{name}: {cachesim.describe(counts[2])}")


if __name__ == "__main__":
    main()
