#!/usr/bin/env python3
"""Benchmark of intercepted HTTPS: the same client (examples/tlsload.rs, keep-alive TLS
connections) against (e) nginx terminating TLS with its own certificate and proxying over
verified TLS with upstream keep-alive, adding a static Authorization header, and (f) tokenproxy
intercepting CONNECT to the same host and sending to the same origin over verified TLS.
Prints req/s, p50, p99 and each proxy's CPU per request (user + kernel, from /proc), and the
time of a first request to a new host (a newly minted certificate, through tokenproxy).
Not part of CI's pass/fail.

Usage: bench_https.py [--runs 3] [--seconds 8] [--connections 64] [--pin] [--first 20]
                      [--binary PATH]
  --binary  measure this tokenproxy build (a PGO build from pgo.py) instead of
            target/release/tokenproxy
Everything listens on 127.0.0.1 and is stopped by PID at the end.
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

from bench import NGINX, PROCS, ROOT, children, cpu_seconds, medians, nginx_config, start, wait
from procs import free_port, stop

TOKEN = "bench-token-0123456789"


def certificate(tmp):
    """One self-signed certificate for api.bench (what nginx presents) and the origin."""
    cert, key, conf = f"{tmp}/tls.crt", f"{tmp}/tls.key", f"{tmp}/openssl.cnf"
    with open(conf, "w") as f:  # no default extensions: a server certificate, not a CA
        f.write("[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = api.bench\n")
    subprocess.run(["openssl", "req", "-x509", "-config", conf, "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                    "-addext", "subjectAltName=DNS:api.bench,DNS:origin.bench,IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:FALSE",
                    "-addext", "extendedKeyUsage=serverAuth",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def configs(tmp, ports, cert, key, workers):
    origin = nginx_config(tmp, "origin", 1, f"""
    server {{
        listen 127.0.0.1:{ports['origin']};
        location = /token {{
            default_type application/json;
            return 200 '{{"access_token":"{TOKEN}","token_type":"Bearer","expires_in":3600}}';
        }}
    }}
    server {{
        listen 127.0.0.1:{ports['origin_tls']} ssl backlog=4096;
        ssl_certificate {cert}; ssl_certificate_key {key};
        location / {{ return 200 "ok\\n"; }}
    }}""")
    proxy = nginx_config(tmp, "proxy", workers, f"""
    upstream origin_tls {{ server 127.0.0.1:{ports['origin_tls']}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{ports['nginx']} ssl backlog=4096;
        ssl_certificate {cert}; ssl_certificate_key {key};
        location / {{
            proxy_pass https://origin_tls;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {TOKEN}";
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {cert};
            proxy_ssl_name origin.bench;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
        }}
    }}""")
    tokenproxy = f"""
proxy:
  listen: 127.0.0.1:{ports['fwd']}
  intercept:
    ca: generate
    trust_dir: {tmp}/trust
admin:
  listen: 127.0.0.1:{ports['admin']}
clients:
  bench:
    token_endpoint: http://127.0.0.1:{ports['origin']}/token
    client_id: bench
    client_secret: bench-secret
upstreams:
  api:
    url: https://127.0.0.1:{ports['origin_tls']}
    match: [api.bench, "*.first.bench"]
    client: bench
    ca_file: {cert}
"""
    for name, text in [("origin.conf", origin), ("proxy.conf", proxy), ("tokenproxy.yaml", tokenproxy)]:
        with open(f"{tmp}/{name}", "w") as f:
            f.write(text)


def load(argv, cpu, measured):
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    before = cpu_seconds(measured)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    after = cpu_seconds(measured)
    if out.returncode != 0:
        raise SystemExit(f"tlsload failed: {out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    user, system = ((b - a) * 1e6 / r["requests"] for a, b in zip(before, after))
    return r["rps"], r["p50_ms"], r["p99_ms"], user, system


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--pin", action="store_true")
    ap.add_argument("--first", type=int, default=20)
    ap.add_argument("--binary", help="measure this tokenproxy build instead of target/release/tokenproxy")
    args = ap.parse_args()
    server_cpu, client_cpu = (0, 1) if args.pin else (None, None)
    if not args.binary:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "tokenproxy"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "tlsload"], cwd=ROOT, check=True)
    binary = os.path.abspath(args.binary or os.path.join(ROOT, "target", "release", "tokenproxy"))
    tlsload = os.path.join(ROOT, "target", "release", "examples", "tlsload")
    tmp = tempfile.mkdtemp(prefix="tokenproxy-bench-https-")
    ports = {k: free_port() for k in ["origin", "origin_tls", "nginx", "fwd", "admin"]}
    cert, key = certificate(tmp)
    configs(tmp, ports, cert, key, args.workers)
    common = ["--connections", str(args.connections), "--seconds", str(args.seconds), "--host", "api.bench"]
    try:
        masters = {n: start([NGINX, "-p", tmp, "-c", f"{tmp}/{n}.conf", "-g", "daemon off;"], cpu=server_cpu)
                   for n in ["origin", "proxy"]}
        time.sleep(0.5)
        tp = start([binary, "run", "-c", f"{tmp}/tokenproxy.yaml", "--workers", str(args.workers)],
                   cpu=server_cpu, env={"RUST_LOG": "warn"})
        wait(f"http://127.0.0.1:{ports['admin']}/readyz")
        targets = [
            ("e nginx TLS in, TLS out + header", [tlsload, *common, "--ca", cert,
                                                   "--connect-to", f"127.0.0.1:{ports['nginx']}"],
             children(masters["proxy"].pid)),
            ("f tokenproxy intercepted", [tlsload, *common, "--ca", f"{tmp}/trust/ca.pem",
                                          "--proxy", f"127.0.0.1:{ports['fwd']}"], [tp.pid]),
        ]
        results = {name: [] for name, _, _ in targets}
        for _ in range(args.runs):
            for name, argv, measured in targets:
                results[name].append(load(argv, client_cpu, measured))
        first = subprocess.run([tlsload, "--host", "first.bench", "--ca", f"{tmp}/trust/ca.pem", "--proxy",
                                f"127.0.0.1:{ports['fwd']}", "--first", str(args.first)],
                               capture_output=True, text=True, timeout=120, check=True).stdout
        warm = subprocess.run([tlsload, "--host", "first.bench", "--ca", f"{tmp}/trust/ca.pem", "--proxy",
                               f"127.0.0.1:{ports['fwd']}", "--first", str(args.first)],
                              capture_output=True, text=True, timeout=120, check=True).stdout
    finally:
        for p in reversed(PROCS):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    med = medians(results)
    e = med["e nginx TLS in, TLS out + header"]
    print(f"# {time.strftime('%Y-%m-%d')} · tlsload -c{args.connections} {args.seconds}s · {args.runs} runs, "
          f"medians · workers {args.workers} · pinned {args.pin}")
    print("| target | req/s | vs e | p50 ms | vs e | p99 ms | vs e | CPU µs/req (user+kernel) | vs e |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (rps, p50, p99, user, system) in med.items():
        print(f"| {name} | {rps:,.0f} | {rps / e[0]:.2f}x | {p50:.2f} | {p50 / e[1]:.2f}x | {p99:.2f} | "
              f"{p99 / e[2]:.2f}x | {user:.1f}+{system:.1f} = {user + system:.1f} | {(user + system) / (e[3] + e[4]):.2f}x |")
    new, again = json.loads(first), json.loads(warm)
    print(f"first request to a new host through tokenproxy (CONNECT, handshake with a newly minted "
          f"certificate, GET): p50 {new['p50_ms']:.2f} ms, max {new['max_ms']:.2f} ms over {new['first_requests']}; "
          f"the same hosts again (certificate cached): p50 {again['p50_ms']:.2f} ms")


if __name__ == "__main__":
    main()
