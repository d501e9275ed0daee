"""End-to-end checks of proxy.upstream_proxy: tokenproxy behind a corporate proxy.

Debian's squid, with Basic authentication by its own basic_ncsa_auth helper over an htpasswd
file made by apache2-utils' htpasswd, and tinyproxy with BasicAuth, both on loopback, are the
parents. Through squid: token requests (plaintext in absolute form; mutual TLS to the
token endpoint in a CONNECT tunnel), an http:// upstream (absolute form, seen in squid's
access log), an https:// upstream with a certificate-bound token (CONNECT, client certificate
inside), passthrough and curl's own CONNECT chained; no_proxy and upstream_proxy: false going
direct (absent from the log); Proxy-Authorization never reaching nginx. A wrong password is
502 upstream_proxy_refused with squid's 407, shown in /status for the token, and recovers after
a reload with the right one; the passwords never show in the log, /metrics or /status.
Through tinyproxy: a token and an https:// upstream by CONNECT, plaintext in absolute form.
Called from check.py."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import requests

from procs import free_port, stop

CONFIG = """
proxy:
  listen: 127.0.0.1:{fwd}
  upstream_proxy:
    url: http://127.0.0.1:{parent}
    username: tp
    password: {password}
    no_proxy: [localhost]
admin:
  listen: 127.0.0.1:{admin}
clients:
  basic:
    token_endpoint: http://127.0.0.1:{idp}/token
    client_id: basic-client
    client_secret: {{ env: E2E_BASIC_SECRET }}
  mtls:
    token_endpoint: https://127.0.0.1:{mtls}/token
    client_id: mtls-client
    auth_method: tls_client_auth
    certificate: {{ file: {mtls_cert} }}
    private_key: {{ file: {mtls_key} }}
    ca_file: {pki_ca}
  inside:
    token_endpoint: http://127.0.0.1:{idp}/token
    client_id: post-client
    client_secret: {{ env: E2E_POST_SECRET }}
    auth_method: client_secret_post
    upstream_proxy: false
upstreams:
  plain:
    url: http://127.0.0.1:{http}
    match: [plain.e2e.test]
    client: basic
    scopes: [inventory:read]
    resource: [https://inventory.e2e.test]
  bound:
    url: https://127.0.0.1:{bound}
    match: [bound.e2e.test]
    client: mtls
    scopes: [inventory:read]
    resource: [https://inventory.e2e.test]
    client_certificate: true
    ca_file: {pki_ca}
  h2:
    url: https://127.0.0.1:{h2tls}
    match: [h2.e2e.test]
    client: basic
    scopes: [grpc:call]
    resource: [https://grpc.e2e.test]
    ca_file: {pki_ca}
  near:
    url: http://localhost:{http}
    match: [near.e2e.test]
    client: basic
    scopes: [inventory:read]
    resource: [https://inventory.e2e.test]
  inside:
    url: http://127.0.0.1:{http}
    match: [inside.e2e.test]
    client: inside
    scopes: [orders:write]
    resource: [https://orders.e2e.test]
    upstream_proxy: false
"""

SQUID = """
http_port 127.0.0.1:{port}
pid_filename {dir}/squid.pid
access_log stdio:{dir}/access.log
cache_log {dir}/cache.log
cache deny all
cache_mem 8 MB
coredump_dir {dir}
auth_param basic program /usr/lib/squid/basic_ncsa_auth {dir}/passwd
auth_param basic realm corp
acl authed proxy_auth REQUIRED
http_access allow authed
http_access deny all
shutdown_lifetime 0 seconds
"""

TINYPROXY = """
Port {port}
Listen 127.0.0.1
Timeout 60
LogFile "{dir}/tinyproxy.log"
LogLevel Connect
MaxClients 50
BasicAuth tp {password}
"""


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def checks(env, check, start, wait_http):
    # squid drops to its own user when started as root: its files live in a directory that
    # user may enter.
    pdir = tempfile.mkdtemp(prefix="tokenproxy-parent-")
    os.chmod(pdir, 0o777)
    password = "e2e-parent-" + os.urandom(8).hex()
    wrong = "e2e-wrong-" + os.urandom(8).hex()
    subprocess.run(["htpasswd", "-bc", os.path.join(pdir, "passwd"), "tp", password], check=True,
                   capture_output=True)
    os.chmod(os.path.join(pdir, "passwd"), 0o644)
    squid_port, tiny_port = free_port(), free_port()
    with open(os.path.join(pdir, "squid.conf"), "w") as f:
        f.write(SQUID.format(port=squid_port, dir=pdir))
    with open(os.path.join(pdir, "tinyproxy.conf"), "w") as f:
        f.write(TINYPROXY.format(port=tiny_port, dir=pdir, password=password))
    squid = shutil.which("squid") or "/usr/sbin/squid"
    start("squid", [squid, "-N", "-f", os.path.join(pdir, "squid.conf")],
          log=os.path.join(env.tmp, "squid.out"))
    start("tinyproxy", ["tinyproxy", "-d", "-c", os.path.join(pdir, "tinyproxy.conf")],
          log=os.path.join(env.tmp, "tinyproxy.out"))
    wait_port(squid_port)
    wait_port(tiny_port)
    access_log = os.path.join(pdir, "access.log")

    fwd_port, admin_port = free_port(), free_port()
    fwd = f"http://127.0.0.1:{fwd_port}"
    admin = f"http://127.0.0.1:{admin_port}"
    cfg = os.path.join(env.tmp, "parent.yaml")
    values = dict(fwd=fwd_port, admin=admin_port, parent=squid_port, idp=env.idp_port,
                  mtls=env.mtls_port, bound=env.bound_port, http=env.http_port, h2tls=env.h2tls_port,
                  mtls_cert=env.pki["MTLS_CLIENT_CERT"], mtls_key=env.pki["MTLS_CLIENT_KEY"],
                  pki_ca=env.pki["PKI_CA"])

    def write(pw):
        with open(cfg, "w") as f:
            f.write(CONFIG.format(password=pw, **values))

    write(wrong)
    log = os.path.join(env.tmp, "parent-tokenproxy.log")
    proxy = start("tokenproxy (parent)", [env.binary, "run", "-c", cfg], log=log,
                  env={"RUST_LOG": "debug", "E2E_BASIC_SECRET": env.basic_secret,
                       "E2E_POST_SECRET": env.post_secret})
    wait_http(f"{admin}/livez")
    clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}

    def curl(*args):
        r = subprocess.run(["curl", "-sS", "--max-time", "15", "-x", fwd, "-w", "\n%{http_code}", *args],
                           capture_output=True, text=True, timeout=30, env=clean)
        body, _, code = r.stdout.rpartition("\n")
        return int(code or 0), body

    def squid_log():
        with open(access_log) as f:
            return f.read()

    def wrong_password():
        code, body = curl("http://plain.e2e.test/paths/plain")
        # The basic client's token could not be had either: 503 for want of it, or 502.
        status = ""
        for _ in range(100):
            status = requests.get(f"{admin}/status", timeout=5).text
            if "407" in status:
                break
            time.sleep(0.1)
        assert "parent proxy" in status and "HTTP 407" in status, status
        assert code in (502, 503), (code, body)
        # An upstream through the parent, refused by it: its 407 is the parent's, not the app's.
        code, body = curl("http://bound.e2e.test/echo")
        assert code in (502, 503), (code, body)
        code, body = curl("http://127.0.0.1:%d/plain" % env.http_port)
        assert code == 502 and '"upstream_proxy_refused"' in body and "407" in body, (code, body)
        assert "TCP_DENIED/407" in squid_log(), squid_log()
        metrics = requests.get(f"{admin}/metrics", timeout=5).text
        counts = {via: 0.0 for via in ("token", "passthrough")}
        for line in metrics.splitlines():
            for via in counts:
                if line.startswith(f'tokenproxy_upstream_proxy_refusals_total{{via="{via}"}} '):
                    counts[via] = float(line.rsplit(" ", 1)[1])
        assert counts["token"] >= 1 and counts["passthrough"] >= 1, counts
    check("upstream_proxy: squid with basic_ncsa_auth refuses a wrong password with 407: the token "
          "request's failure is in /status, passthrough gets 502 upstream_proxy_refused, counted",
          wrong_password)

    def reload_with_the_right_password():
        write(password)
        proxy.send_signal(signal.SIGHUP)
        deadline = time.time() + 30
        code, body = 0, ""
        while time.time() < deadline:
            code, body = curl("http://plain.e2e.test/paths/plain")
            if code == 200:
                break
            time.sleep(0.3)
        assert code == 200, (code, body)
        path, _, auth = body.partition("|")
        assert path == "/paths/plain", body
        env.verify(auth, "https://inventory.e2e.test", "basic-client", "inventory:read")
    check("upstream_proxy: after a reload with the right password, tokens come through squid",
          reload_with_the_right_password)

    def through_squid():
        text = squid_log()
        assert f"POST http://127.0.0.1:{env.idp_port}/token" in text, text
        assert f"GET http://127.0.0.1:{env.http_port}/paths/plain" in text, text
        code, body = curl("http://bound.e2e.test/echo")
        assert code == 200, (code, body)
        auth, _, fingerprint = body.partition("|")
        claims = env.verify(auth, "https://inventory.e2e.test", "mtls-client", "inventory:read")
        assert claims["cnf"]["x5t#S256"], claims
        assert fingerprint, body
        code, body = curl("http://h2.e2e.test/proto")
        assert code == 200 and body.startswith("HTTP/2.0|Bearer "), (code, body)
    check("upstream_proxy: through squid, a token in absolute form, an http:// upstream in absolute "
          "form, and mutual TLS (token endpoint and a certificate-bound upstream) inside CONNECT "
          "tunnels, and HTTP/2 by ALPN inside one", through_squid)

    def passthrough_and_tunnels():
        code, body = curl("http://127.0.0.1:%d/plain" % env.http_port)
        assert (code, body) == (200, "plain\n"), (code, body)
        r = subprocess.run(["curl", "-sS", "--max-time", "15", "-p", "-x", fwd, "--cacert", env.cert,
                            f"https://127.0.0.1:{env.tls_port}/plain"],
                           capture_output=True, text=True, timeout=30, env=clean)
        assert r.stdout == "plain\n", (r.stdout, r.stderr)
        text = squid_log()
        assert f"GET http://127.0.0.1:{env.http_port}/plain" in text, text
        assert f"CONNECT 127.0.0.1:{env.tls_port}" in text, text
    check("upstream_proxy: curl's passthrough and its own CONNECT (TLS end to end) are chained "
          "through squid", passthrough_and_tunnels)

    def direct_ones():
        for host, path in [("near.e2e.test", "/paths/near"), ("inside.e2e.test", "/paths/inside")]:
            code, body = curl(f"http://{host}{path}")
            assert code == 200 and body.startswith(path + "|Bearer "), (host, code, body)
        text = squid_log()
        assert "/paths/near" not in text and "/paths/inside" not in text, text
        # The basic client's two tokens (two sets of scopes) went through squid; the inside
        # client's went direct, or there would be a third.
        posts = [l for l in text.splitlines() if f"POST http://127.0.0.1:{env.idp_port}/token" in l
                 and "TCP_MISS/200" in l]
        assert len(posts) == 2, posts
    check("upstream_proxy: no_proxy (localhost) and upstream_proxy: false (an upstream and a client) "
          "go direct, absent from squid's log", direct_ones)

    def proxy_authorization_stays():
        for host in ["plain.e2e.test", "near.e2e.test"]:
            code, body = curl("--proxy-user", "app:app-secret", f"http://{host}/proxyauth")
            assert (code, body) == (200, "[]"), (host, code, body)
        for where in [log]:
            with open(where, errors="replace") as f:
                text = f.read()
            assert password not in text and wrong not in text, where
        for path in ["/metrics", "/status"]:
            text = requests.get(admin + path, timeout=5).text
            assert password not in text and wrong not in text, path
    check("upstream_proxy: no Proxy-Authorization reaches nginx (the app's nor the parent's); the "
          "parent's password is in no log line, metric or /status", proxy_authorization_stays)

    tiny_fwd, tiny_admin = free_port(), free_port()
    tiny_cfg = os.path.join(env.tmp, "tinyproxy.yaml")
    with open(tiny_cfg, "w") as f:
        f.write(CONFIG.format(password=password, **{**values, "fwd": tiny_fwd, "admin": tiny_admin,
                                                    "parent": tiny_port}))
    start("tokenproxy (tinyproxy)", [env.binary, "run", "-c", tiny_cfg],
          log=os.path.join(env.tmp, "tinyproxy-tokenproxy.log"),
          env={"E2E_BASIC_SECRET": env.basic_secret, "E2E_POST_SECRET": env.post_secret})
    wait_http(f"http://127.0.0.1:{tiny_admin}/readyz")

    def through_tinyproxy():
        for host, path in [("bound.e2e.test", "/echo"), ("plain.e2e.test", "/paths/tiny")]:
            r = subprocess.run(["curl", "-sS", "--max-time", "15", "-x", f"http://127.0.0.1:{tiny_fwd}",
                                f"http://{host}{path}"], capture_output=True, text=True, timeout=30, env=clean)
            assert "Bearer " in r.stdout, (host, r.stdout, r.stderr)
        with open(os.path.join(pdir, "tinyproxy.log"), errors="replace") as f:
            text = f.read()
        assert f"CONNECT 127.0.0.1:{env.mtls_port}" in text, text
        assert f"CONNECT 127.0.0.1:{env.bound_port}" in text, text
        assert f"GET http://127.0.0.1:{env.http_port}/paths/tiny" in text, text
    check("upstream_proxy: through tinyproxy with BasicAuth, mutual TLS by CONNECT and plaintext in "
          "absolute form", through_tinyproxy)

    def tunnels_in_squids_log():
        # squid writes a tunnel's line when it closes: once tokenproxy has stopped, its pooled
        # tunnels have.
        stop(proxy)
        deadline = time.time() + 10
        text = ""
        while time.time() < deadline:
            text = squid_log()
            if f"TCP_TUNNEL/200" in text and f"CONNECT 127.0.0.1:{env.bound_port}" in text:
                break
            time.sleep(0.2)
        tunnels = [l for l in text.splitlines() if "TCP_TUNNEL/200" in l]
        assert any(f"CONNECT 127.0.0.1:{env.mtls_port}" in l for l in tunnels), text
        assert any(f"CONNECT 127.0.0.1:{env.bound_port}" in l for l in tunnels), text
        assert any(f"CONNECT 127.0.0.1:{env.h2tls_port}" in l for l in tunnels), text
    check("upstream_proxy: squid's log shows the CONNECT tunnels of the mutual-TLS token request and "
          "of the certificate-bound upstream", tunnels_in_squids_log)
    shutil.rmtree(pdir, ignore_errors=True)
