#!/usr/bin/env python3
"""Benchmark: wrk against (a) nginx direct, (b) nginx as a reverse proxy adding a static
Authorization header, (c) a tokenproxy reverse listener, (d) the tokenproxy forward listener
(absolute-form requests from a wrk Lua script), (e) a second tokenproxy reverse listener with the
access log on (JSON lines to a file, as a container runtime keeps stdout), (f) a third with the
shared token cache on (a redis-server on loopback): the cache is on the token path only, so (f)
should match (c), (g) a fourth whose client has `token_type: dpop` (an ES256 proof signed
for every request), (h) a fifth with `tracing` at `sample_ratio: 1` (three spans a request,
exported to an nginx location that takes them), and TLS origination: (i) nginx and (j) a
tokenproxy reverse listener each sending over verified TLS (keep-alive, session reuse) to the
origin's TLS port. Then (a)-(d), the compared builds and the floor once more at one connection
(wrk -c1): the p50 each proxy adds over direct, against nginx's, and its CPU time per request
there. Same wrk settings for all, several runs each,
medians; prints req/s, p50 and p99 with ratios to (b) and (a), tokenproxy's RSS idle and at 256
connections, and the token fetches during the run. For (b), (c) and (d) it also prints the
proxy's own CPU time per request, user and kernel, read from /proc: on loopback the kernel's
TCP work is most of it, and it is the same for any proxy making the same system calls.
Not part of CI's pass/fail.

Usage: bench.py [--runs 3] [--duration 10] [--connections 64] [--pin] [--workers 1] [--think 0]
                [--compare NAME=BINARY ...] [--floor] [--all] [--binary PATH]
  --all      then run bench_https.py (interception) and bench_h2.py (h2c in, HTTP/1.1 and h2c
             out) with the same --pin and --runs: every scenario side by side with nginx
  --pin      servers on CPU 0, wrk on CPU 1 (needs 2 cores)
  --compare  another tokenproxy binary (another commit, another allocator), run as one more
             reverse target "c NAME" in the same interleaved runs, with its own RSS figures
  --binary   measure this tokenproxy build (a PGO build from pgo.py, another commit) as (c)-(h)
             and (j) instead of building target/release/tokenproxy; --all passes it on
  --floor    add (k), examples/hyper_floor.rs: a bare hyper reverse proxy (one upstream
             connection per client connection, a static header, nothing else), the floor
             under tokenproxy's figures on this stack
  --workers  nginx worker_processes and tokenproxy worker threads (same number for both)
  --think    milliseconds each wrk connection waits between requests (a wrk delay() hook).
             0 saturates the servers, and latency then mostly reflects throughput; a think
             time that keeps the load under every target's capacity compares latency at
             (nearly) the same request rate.
Everything listens on 127.0.0.1 and is stopped by PID at the end.
"""
import argparse
import base64
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from procs import free_port, stop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROCS = []


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_config(tmp, name, workers, servers):
    return f"""
worker_processes {workers};
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/{name}.body; proxy_temp_path {tmp}/{name}.proxy;
    fastcgi_temp_path {tmp}/{name}.fcgi; uwsgi_temp_path {tmp}/{name}.uwsgi; scgi_temp_path {tmp}/{name}.scgi;
    default_type text/plain;
    keepalive_requests 1000000;
{servers}
}}
"""


def origin_config(tmp, port, tls=None):
    """The origin (and token endpoint): one nginx with one worker, shared by every target;
    `tls`: (port, certificate, key) of a TLS listener too."""
    tls_server = "" if not tls else f"""
    server {{
        listen 127.0.0.1:{tls[0]} ssl backlog=4096;
        ssl_certificate {tls[1]}; ssl_certificate_key {tls[2]};
        location / {{ return 200 "ok\\n"; }}
    }}"""
    return nginx_config(tmp, "origin", 1, tls_server + f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "ok\\n"; }}
        location = /token {{
            default_type application/json;
            return 200 '{{"access_token":"bench-token-0123456789","token_type":"Bearer","expires_in":3600}}';
        }}
        location = /dpop-token {{
            default_type application/json;
            return 200 '{{"access_token":"bench-token-0123456789","token_type":"DPoP","expires_in":3600}}';
        }}
        # The OTLP collector of (h): takes every export and keeps nothing (an empty
        # ExportTraceServiceResponse is a valid answer).
        location = /v1/traces {{ default_type application/x-protobuf; return 200 ""; }}
    }}""")


def tokenproxy_config(ports, access_log=False, cache=None, dpop=False, traced=None, tls=None):
    """`traced`: a sample_ratio, with spans exported to the origin nginx; None: no tracing."""
    log = "access_log:\n  enabled: true\n" if access_log else ""
    if traced is not None:
        log += f"tracing:\n  otlp_endpoint: http://127.0.0.1:{ports['origin']}\n  sample_ratio: {traced}\n"
    if cache:
        log += (f"cache:\n  redis:\n    url: redis://127.0.0.1:{ports['redis']}\n"
                f"  encryption_key: {{ file: {cache} }}\n")
    return f"""{log}
proxy:
  listen: 127.0.0.1:{ports['fwd']}
admin:
  listen: 127.0.0.1:{ports['admin']}
clients:
  bench:
    token_endpoint: http://127.0.0.1:{ports['origin']}/{"dpop-token" if dpop else "token"}
    token_type: {"dpop" if dpop else "bearer"}
    client_id: bench
    client_secret: bench-secret
upstreams:
  origin:
    url: http://127.0.0.1:{ports['origin']}
    match: [origin.bench]
    listen: 127.0.0.1:{ports['rev']}
    client: bench
""" + ("" if not tls else f"""  origin_tls:
    url: https://127.0.0.1:{ports['origin_tls']}
    listen: 127.0.0.1:{ports['rev_tls']}
    client: bench
    ca_file: {tls}
""")


def wait(url, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001
            time.sleep(0.05)
    raise SystemExit(f"{url} not ready")


def start(argv, cpu=None, env=None, stdout=subprocess.DEVNULL):
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    p = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.DEVNULL,
                         env={**os.environ, **(env or {})})
    PROCS.append(p)
    return p


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pids):
    """User and system CPU seconds used so far by these processes (all their threads)."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user, system = user + int(fields[11]), system + int(fields[12])
    return user / tick, system / tick


def children(pid):
    """The worker processes of an nginx master."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not m:
        raise SystemExit(f"cannot read the latency {text!r}")
    v, unit = float(m.group(1)), m.group(2)
    if unit == "m":
        return v * 60_000
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def floor_binary():
    """Builds examples/hyper_floor.rs, the floor under tokenproxy's figures, and returns its path."""
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "hyper_floor"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release", "examples", "hyper_floor")


def medians(results):
    """{name: [wrk() tuples, one a run]} → {name: the median of each of wrk()'s five figures}."""
    return {n: tuple(statistics.median(r[i] for r in rs) for i in range(5)) for n, rs in results.items()}


def wrk(url, args, script=None, cpu=None, measured=()):
    """req/s, p50 ms, p99 ms, and the CPU µs per request (user, system) of `measured`."""
    argv = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", url]
    if script:
        argv[1:1] = ["-s", script]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    before = cpu_seconds(measured)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 30).stdout
    after = cpu_seconds(measured)
    if "Requests/sec" not in out or "50%" not in out:
        raise SystemExit(f"wrk gave no figures for {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} non-2xx answers\n{out}")
    count = int(re.search(r"(\d+) requests in", out).group(1))
    user, system = ((b - a) * 1e6 / count for a, b in zip(before, after))
    return rps, p50, p99, user, system


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--pin", action="store_true")
    ap.add_argument("--think", type=int, default=0)
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=BINARY")
    ap.add_argument("--only", metavar="LETTERS",
                    help="run only these targets (a and b always, compared binaries with c): --only cdk")
    ap.add_argument("--floor", action="store_true",
                    help="add (k): examples/hyper_floor.rs, the least a hyper reverse proxy does per request")
    ap.add_argument("--binary", help="measure this tokenproxy build instead of target/release/tokenproxy")
    ap.add_argument("--all", action="store_true",
                    help="then run bench_https.py (interception) and bench_h2.py (h2c) with the same --pin and --runs")
    args = ap.parse_args()
    compare = [spec.split("=", 1) for spec in args.compare]
    server_cpu, client_cpu = (0, 1) if args.pin else (None, None)

    if args.binary:
        binary = os.path.abspath(args.binary)
    else:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "tokenproxy"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "tokenproxy")
    floor_path = floor_binary() if args.floor else None
    tmp = tempfile.mkdtemp(prefix="tokenproxy-bench-")
    ports = {k: free_port() for k in ["origin", "nginx_proxy", "rev", "fwd", "admin", "origin_tls",
                                      "nginx_tls", "rev_tls", "floor"]}
    from bench_https import certificate  # noqa: E402 (bench_https imports this file)
    cert, key = certificate(tmp)
    logged = {**ports, **{k: free_port() for k in ["rev", "fwd", "admin"]}}
    cached = {**ports, **{k: free_port() for k in ["rev", "fwd", "admin", "redis"]}}
    dpop = {**ports, **{k: free_port() for k in ["rev", "fwd", "admin"]}}
    traced = {**ports, **{k: free_port() for k in ["rev", "fwd", "admin"]}}
    nginx = NGINX
    nginx_conf = lambda name, workers, servers: nginx_config(tmp, name, workers, servers)  # noqa: E731
    origin = origin_config(tmp, ports["origin"], tls=(ports["origin_tls"], cert, key))
    # (b): nginx as the reverse proxy that adds a static token, with as many workers as
    # tokenproxy has threads.
    proxy = nginx_conf("proxy", args.workers, f"""
    upstream origin {{ server 127.0.0.1:{ports['origin']}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{ports['nginx_proxy']} backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer bench-token-0123456789";
        }}
    }}
    upstream origin_tls {{ server 127.0.0.1:{ports['origin_tls']}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{ports['nginx_tls']} backlog=4096;
        location / {{
            proxy_pass https://origin_tls;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer bench-token-0123456789";
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {cert};
            proxy_ssl_name origin.bench;
            proxy_ssl_session_reuse on;
        }}
    }}""")
    for name, text in [("origin", origin), ("proxy", proxy)]:
        with open(f"{tmp}/{name}.conf", "w") as f:
            f.write(text)
    cfg = tokenproxy_config(ports, tls=cert)
    with open(f"{tmp}/tokenproxy.yaml", "w") as f:
        f.write(cfg)
    with open(f"{tmp}/logged.yaml", "w") as f:
        f.write(tokenproxy_config(logged, access_log=True))
    with open(f"{tmp}/cache.key", "w") as f:
        f.write(base64.b64encode(os.urandom(32)).decode())
    with open(f"{tmp}/cached.yaml", "w") as f:
        f.write(tokenproxy_config(cached, cache=f"{tmp}/cache.key"))
    with open(f"{tmp}/dpop.yaml", "w") as f:
        f.write(tokenproxy_config(dpop, dpop=True))
    with open(f"{tmp}/traced.yaml", "w") as f:
        f.write(tokenproxy_config(traced, traced=1))
    others = []  # (name, binary, ports)
    for name, path in compare:
        own = {**ports, **{k: free_port() for k in ["rev", "fwd", "admin"]}}
        with open(f"{tmp}/compare-{name}.yaml", "w") as f:
            f.write(tokenproxy_config(own))
        others.append((name, os.path.abspath(path), own))
    think = f"function delay() return {args.think} end\n" if args.think else ""
    plain = f"{tmp}/plain.lua" if think else None
    if plain:
        with open(plain, "w") as f:
            f.write(think)
    lua = f"{tmp}/forward.lua"
    with open(lua, "w") as f:
        f.write('wrk.path = "http://origin.bench/"\n' + think)
    try:
        masters = {}
        for name in ["origin", "proxy"]:
            masters[name] = start([nginx, "-p", tmp, "-c", f"{tmp}/{name}.conf", "-g", "daemon off;"],
                                  cpu=server_cpu)
        wait(f"http://127.0.0.1:{ports['origin']}/")
        wait(f"http://127.0.0.1:{ports['nginx_proxy']}/")
        proxy_workers = children(masters["proxy"].pid)
        tp = start([binary, "run", "-c", f"{tmp}/tokenproxy.yaml", "--workers", str(args.workers)], cpu=server_cpu,
                   env={"RUST_LOG": "warn"})
        wait(f"http://127.0.0.1:{ports['admin']}/readyz")
        access_log = open(f"{tmp}/access.log", "w")
        tp_logged = start([binary, "run", "-c", f"{tmp}/logged.yaml", "--workers", str(args.workers)],
                          cpu=server_cpu, env={"RUST_LOG": "warn"}, stdout=access_log)
        wait(f"http://127.0.0.1:{logged['admin']}/readyz")
        start(["redis-server", "--port", str(cached["redis"]), "--bind", "127.0.0.1", "--save", ""])
        time.sleep(0.3)
        tp_cached = start([binary, "run", "-c", f"{tmp}/cached.yaml", "--workers", str(args.workers)],
                          cpu=server_cpu, env={"RUST_LOG": "warn"})
        wait(f"http://127.0.0.1:{cached['admin']}/readyz")
        tp_dpop = start([binary, "run", "-c", f"{tmp}/dpop.yaml", "--workers", str(args.workers)],
                        cpu=server_cpu, env={"RUST_LOG": "warn"})
        wait(f"http://127.0.0.1:{dpop['admin']}/readyz")
        tp_traced = start([binary, "run", "-c", f"{tmp}/traced.yaml", "--workers", str(args.workers)],
                          cpu=server_cpu, env={"RUST_LOG": "warn"})
        wait(f"http://127.0.0.1:{traced['admin']}/readyz")
        compared = []  # (name, process, ports)
        for name, path, own in others:
            compared.append((name, start([path, "run", "-c", f"{tmp}/compare-{name}.yaml", "--workers",
                                          str(args.workers)], cpu=server_cpu, env={"RUST_LOG": "warn"}), own))
            wait(f"http://127.0.0.1:{own['admin']}/readyz")
        floor = []
        if args.floor:
            fl = start([floor_path, f"127.0.0.1:{ports['floor']}", f"127.0.0.1:{ports['origin']}"], cpu=server_cpu)
            wait(f"http://127.0.0.1:{ports['floor']}/")
            floor = [("k bare hyper proxy (examples/hyper_floor)", f"http://127.0.0.1:{ports['floor']}/", plain,
                      [fl.pid])]
        time.sleep(0.5)
        idle_rss = rss_kib(tp.pid)
        idle = {name: rss_kib(p.pid) for name, p, _ in compared}

        targets = [  # name, url, wrk script, the proxy processes whose CPU is counted
            ("a nginx direct", f"http://127.0.0.1:{ports['origin']}/", plain, ()),
            ("b nginx proxy+header", f"http://127.0.0.1:{ports['nginx_proxy']}/", plain, proxy_workers),
            ("c tokenproxy reverse", f"http://127.0.0.1:{ports['rev']}/", plain, [tp.pid]),
            ("d tokenproxy forward", f"http://127.0.0.1:{ports['fwd']}/", lua, [tp.pid]),
            ("e tokenproxy reverse +access log", f"http://127.0.0.1:{logged['rev']}/", plain, [tp_logged.pid]),
            ("f tokenproxy reverse +shared cache", f"http://127.0.0.1:{cached['rev']}/", plain, [tp_cached.pid]),
            ("g tokenproxy reverse, DPoP", f"http://127.0.0.1:{dpop['rev']}/", plain, [tp_dpop.pid]),
            ("h tokenproxy reverse, traced (sample_ratio 1)", f"http://127.0.0.1:{traced['rev']}/", plain,
             [tp_traced.pid]),
            ("i nginx proxy+header, TLS to the origin", f"http://127.0.0.1:{ports['nginx_tls']}/", plain,
             proxy_workers),
            ("j tokenproxy reverse, TLS to the origin", f"http://127.0.0.1:{ports['rev_tls']}/", plain, [tp.pid]),
            *((f"c {name}", f"http://127.0.0.1:{own['rev']}/", plain, [p.pid]) for name, p, own in compared),
            *floor,
        ]
        # a-d, the compared builds and the floor, also at one connection
        singles = [t for t in targets if t[0][0] in "abcdk"]
        if args.only:
            targets = [t for t in targets if t[0][0] in "ab" + args.only]
            singles = [t for t in singles if t in targets]
        results = {name: [] for name, _, _, _ in targets}
        one = argparse.Namespace(**{**vars(args), "connections": 1})
        alone = {name: [] for name, _, _, _ in singles}
        for _ in range(args.runs):
            for name, url, script, measured in targets:  # interleaved, so drift hits all alike
                results[name].append(wrk(url, args, script, client_cpu, measured))
            for name, url, script, measured in singles:
                alone[name].append(wrk(url, one, script, client_cpu, measured))
        # RSS under 256 open connections.
        def peak_rss(pid, port):
            peak = 0
            holder = subprocess.Popen(["wrk", "-t1", "-c256", "-d5s", f"http://127.0.0.1:{port}/"],
                                      stdout=subprocess.DEVNULL)
            PROCS.append(holder)
            while holder.poll() is None:
                peak = max(peak, rss_kib(pid))
                time.sleep(0.2)
            return peak
        peak = peak_rss(tp.pid, ports["rev"])
        peaks = {name: peak_rss(p.pid, own["rev"]) for name, p, own in compared}
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['admin']}/metrics") as r:
            metrics = r.read().decode()
        fetches = re.search(r'tokenproxy_token_fetches_total\{outcome="success",upstream="origin"\} (\d+)', metrics)
        with urllib.request.urlopen(f"http://127.0.0.1:{traced['admin']}/metrics") as r:
            spans = r.read().decode()
        exported = re.search(r'tokenproxy_trace_spans_exported_total (\d+)', spans)
        dropped = re.findall(r'tokenproxy_trace_spans_dropped_total\{reason="(\w+)"\} (\d+)', spans)
        with open(f"{tmp}/access.log") as f:
            lines = sum(1 for line in f if line.startswith('{"time"'))
    finally:
        for p in reversed(PROCS):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)

    med = medians(results)
    a, b = med["a nginx direct"], med["b nginx proxy+header"]
    cpu = platform.processor() or platform.machine()
    print(f"# {time.strftime('%Y-%m-%d')} · {os.cpu_count()} cores ({cpu}) · wrk -t1 -c{args.connections} "
          f"-d{args.duration}s · {args.runs} runs, medians · workers {args.workers} · pinned {args.pin}"
          f" · think {args.think} ms")
    print("| target | req/s | vs b | vs a | p50 ms | vs b | vs a | p99 ms | vs b | vs a |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (rps, p50, p99, _, _) in med.items():
        print(f"| {name} | {rps:,.0f} | {rps / b[0]:.2f}x | {rps / a[0]:.2f}x "
              f"| {p50:.2f} | {p50 / b[1]:.2f}x | {p50 / a[1]:.2f}x "
              f"| {p99:.2f} | {p99 / b[2]:.2f}x | {p99 / a[2]:.2f}x |")
    print()
    print("| proxy CPU per request | user µs | kernel µs | total µs | total vs b |")
    print("|---|---|---|---|---|")
    for name, (_, _, _, user, system) in list(med.items())[1:]:
        print(f"| {name} | {user:.1f} | {system:.1f} | {user + system:.1f} | {(user + system) / (b[3] + b[4]):.2f}x |")
    print(f"tokenproxy RSS: idle {idle_rss / 1024:.1f} MiB, at 256 connections {peak / 1024:.1f} MiB")
    for name in idle:
        print(f"c {name} RSS: idle {idle[name] / 1024:.1f} MiB, at 256 connections {peaks[name] / 1024:.1f} MiB")
    print(f"token fetches during the run: {fetches.group(1) if fetches else '?'}")
    print(f"access-log lines written by (e): {lines:,}")
    i, j = med.get("i nginx proxy+header, TLS to the origin"), med.get("j tokenproxy reverse, TLS to the origin")
    if i and j:
        print(f"TLS origination (j vs i): {j[0] / i[0]:.2f}x req/s, {(j[3] + j[4]) / (i[3] + i[4]):.2f}x CPU per request")
    single = medians(alone)
    direct = single["a nginx direct"][1]
    nginx_added = single["b nginx proxy+header"][1] - direct
    print()
    print(f"| one connection (wrk -c1), p50 added over direct ({direct * 1000:.0f} µs) | added µs "
          "| vs b | CPU µs per request (user + kernel) |")
    print("|---|---|---|---|")
    for name, (_, p50, _, user, system) in list(single.items())[1:]:
        added = p50 - direct
        print(f"| {name} | {added * 1000:.0f} | {added / nginx_added:.2f}x "
              f"| {user:.1f} + {system:.1f} = {user + system:.1f} |")
    print(f"spans exported by (h): {int(exported.group(1)) if exported else '?':,}; dropped: "
          + ", ".join(f"{reason} {int(n):,}" for reason, n in dropped))
    if args.all:
        here = os.path.dirname(os.path.abspath(__file__))
        passed = (["--pin"] if args.pin else []) + (["--binary", binary] if args.binary else [])
        for script in ["bench_https.py", "bench_h2.py"]:
            print(flush=True)
            subprocess.run([sys.executable, os.path.join(here, script), "--runs", str(args.runs), *passed],
                           check=True)


if __name__ == "__main__":
    main()
