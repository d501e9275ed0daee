#!/usr/bin/env python3
"""Benchmark: tokenproxy behind a corporate proxy (squid with Basic authentication), side by
side in one run with squid alone.

Targets, wrk against each in turn (interleaved runs, medians):
  (a) squid alone: wrk sends absolute-form requests with Proxy-Authorization to squid, which
      forwards them to an nginx origin: what an app behind the corporate proxy had before;
  (b) tokenproxy (reverse listener) -> squid (absolute form) -> nginx: the same path with a
      token added;
  (c) tokenproxy -> nginx directly (the same upstream with upstream_proxy: false), for the
      cost of the parent hop itself;
  (d) tokenproxy -> squid CONNECT tunnel -> nginx over TLS: the usual case (an https API);
  (e) tokenproxy -> nginx over TLS directly.
Prints req/s, p50, p99, and the CPU time per request (user+system µs, from /proc) of
tokenproxy and of squid; and how many connections tokenproxy held to squid after the run (the
pooled connections are reused, one CONNECT per pooled TLS connection). Everything on 127.0.0.1,
stopped by PID at the end. Not part of CI's pass/fail.

Usage: bench_parent.py [--runs 3] [--duration 8] [--connections 32]
"""
import argparse
import base64
import os
import shutil
import statistics
import subprocess
import tempfile
import time

from bench import NGINX, PROCS, ROOT, cpu_seconds, children, nginx_config, start, wait, wrk
from procs import free_port, stop

SQUID = """
http_port 127.0.0.1:{port}
workers 1
pid_filename {dir}/squid.pid
access_log none
cache_log {dir}/cache.log
cache deny all
cache_mem 8 MB
coredump_dir {dir}
auth_param basic program /usr/lib/squid/basic_ncsa_auth {dir}/passwd
auth_param basic children 2
auth_param basic credentialsttl 1 hour
acl authed proxy_auth REQUIRED
http_access allow authed
http_access deny all
shutdown_lifetime 0 seconds
"""


def connections_to(port):
    """Established TCP connections whose far end is 127.0.0.1:port (from /proc/net/tcp)."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            rem, state = fields[2], fields[3]
            if state == "01" and int(rem.split(":")[1], 16) == port:
                n += 1
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    args.think = 0

    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "tokenproxy"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "tokenproxy")
    tmp = tempfile.mkdtemp(prefix="tokenproxy-bench-parent-")
    os.chmod(tmp, 0o777)  # squid, started as root, runs as its own user
    p = {k: free_port() for k in ["origin", "tls", "squid", "rev", "rev_direct", "rev_tls",
                                  "rev_tls_direct", "admin"]}
    password = "bench-" + os.urandom(6).hex()
    subprocess.run(["htpasswd", "-bc", f"{tmp}/passwd", "tp", password], check=True, capture_output=True)
    os.chmod(f"{tmp}/passwd", 0o644)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:FALSE",
                    "-keyout", f"{tmp}/tls.key", "-out", f"{tmp}/tls.crt"], check=True, capture_output=True)
    with open(f"{tmp}/origin.conf", "w") as f:
        f.write(nginx_config(tmp, "origin", 1, f"""
    server {{
        listen 127.0.0.1:{p['origin']} backlog=4096;
        location / {{ return 200 "ok\\n"; }}
        location = /token {{
            default_type application/json;
            return 200 '{{"access_token":"bench-token-0123456789","token_type":"Bearer","expires_in":3600}}';
        }}
    }}
    server {{
        listen 127.0.0.1:{p['tls']} ssl backlog=4096;
        ssl_certificate {tmp}/tls.crt;
        ssl_certificate_key {tmp}/tls.key;
        location / {{ return 200 "ok\\n"; }}
    }}"""))
    with open(f"{tmp}/squid.conf", "w") as f:
        f.write(SQUID.format(port=p["squid"], dir=tmp))
    upstream = """  {name}:
    url: {url}
    match: []
    listen: 127.0.0.1:{listen}
    client: bench
    ca_file: {tmp}/tls.crt
    upstream_proxy: {via}
"""
    ups = "".join(upstream.format(name=n, url=u, listen=p[l], via=v, tmp=tmp) for n, u, l, v in [
        ("via", f"http://127.0.0.1:{p['origin']}", "rev", "true"),
        ("direct", f"http://127.0.0.1:{p['origin']}", "rev_direct", "false"),
        ("tls", f"https://127.0.0.1:{p['tls']}", "rev_tls", "true"),
        ("tls-direct", f"https://127.0.0.1:{p['tls']}", "rev_tls_direct", "false"),
    ])
    with open(f"{tmp}/tokenproxy.yaml", "w") as f:
        f.write(f"""
proxy:
  upstream_proxy:
    url: http://127.0.0.1:{p['squid']}
    username: tp
    password: {password}
admin:
  listen: 127.0.0.1:{p['admin']}
clients:
  bench:
    token_endpoint: http://127.0.0.1:{p['origin']}/token
    client_id: bench
    client_secret: bench-secret
upstreams:
{ups}""")
    lua = f"{tmp}/squid.lua"
    auth = base64.b64encode(f"tp:{password}".encode()).decode()
    with open(lua, "w") as f:
        f.write(f'wrk.path = "http://127.0.0.1:{p["origin"]}/"\n'
                f'wrk.headers["Proxy-Authorization"] = "Basic {auth}"\n')
    try:
        origin = start([NGINX, "-p", tmp, "-c", f"{tmp}/origin.conf", "-g", "daemon off;"])
        squid_bin = shutil.which("squid") or "/usr/sbin/squid"
        squid = start([squid_bin, "-N", "-f", f"{tmp}/squid.conf"])
        tp = start([binary, "run", "-c", f"{tmp}/tokenproxy.yaml"])
        wait(f"http://127.0.0.1:{p['admin']}/readyz")
        time.sleep(2)  # squid's auth helpers
        wait(f"http://127.0.0.1:{p['origin']}/")
        through = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-x",
                                  f"http://tp:{password}@127.0.0.1:{p['squid']}",
                                  f"http://127.0.0.1:{p['origin']}/"], capture_output=True, text=True)
        if through.stdout != "200":
            raise SystemExit(f"squid does not pass requests: {through.stdout} {through.stderr}\n"
                             + open(f"{tmp}/cache.log").read()[-2000:])
        squid_pids = [squid.pid] + children(squid.pid)
        for c in list(squid_pids[1:]):
            squid_pids += children(c)
        del origin
        targets = [
            ("a squid alone (absolute form)", f"http://127.0.0.1:{p['squid']}/", lua),
            ("b tokenproxy -> squid -> nginx", f"http://127.0.0.1:{p['rev']}/", None),
            ("c tokenproxy -> nginx", f"http://127.0.0.1:{p['rev_direct']}/", None),
            ("d tokenproxy -> squid CONNECT -> nginx TLS", f"http://127.0.0.1:{p['rev_tls']}/", None),
            ("e tokenproxy -> nginx TLS", f"http://127.0.0.1:{p['rev_tls_direct']}/", None),
        ]
        for name, url, script in targets[1:]:
            once = subprocess.run(["curl", "-sS", "-w", " %{http_code}", url], capture_output=True, text=True)
            if not once.stdout.endswith(" 200"):
                raise SystemExit(f"{name}: {once.stdout} {once.stderr}")
        results = {name: [] for name, _, _ in targets}
        for _, url, script in targets:  # warm-up: connections and the token
            wrk(url, argparse.Namespace(connections=args.connections, duration=1), script)
        for _ in range(args.runs):
            for name, url, script in targets:
                tp_before = cpu_seconds([tp.pid])
                sq_before = cpu_seconds(squid_pids)
                rps, p50, p99, _, _ = wrk(url, args, script)
                tp_after, sq_after = cpu_seconds([tp.pid]), cpu_seconds(squid_pids)
                count = rps * args.duration
                tp_us = sum(b - a for a, b in zip(tp_before, tp_after)) * 1e6 / count
                sq_us = sum(b - a for a, b in zip(sq_before, sq_after)) * 1e6 / count
                results[name].append((rps, p50, p99, tp_us, sq_us))
        held = connections_to(p["squid"])
        print(f"tokenproxy behind squid ({args.connections} connections, {args.duration}s x {args.runs} runs, medians)")
        print(f"{'target':46} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'tp µs/req':>10} {'squid µs/req':>13}")
        base = statistics.median(r[0] for r in results[targets[0][0]])
        for name, _, _ in targets:
            rows = results[name]
            med = [statistics.median(r[i] for r in rows) for i in range(5)]
            print(f"{name:46} {med[0]:9.0f} {med[1]:7.2f} {med[2]:7.2f} {med[3]:10.1f} {med[4]:13.1f}"
                  f"   ({med[0] / base:.2f}x a)")
        print(f"connections from tokenproxy to squid held after the runs: {held} "
              f"(two upstreams through it, {args.connections} wrk connections each)")
    finally:
        for proc in reversed(PROCS):
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
