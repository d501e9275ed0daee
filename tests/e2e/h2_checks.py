"""End-to-end checks of HTTP/2, gRPC and WebSocket: curl with prior knowledge and over ALPN,
nginx as an HTTP/2 upstream (TLS by ALPN, and h2c), a grpcio client and server, a websockets
client and server (both servers check the token against the JWKS; resource_servers.py), and
h2load. Called from check.py with its Env."""
import base64
import json
import os
import re
import socket
import ssl
import subprocess
import time

import grpc
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

GRPC = ("https://grpc.e2e.test", "basic-client", "grpc:call")
INVENTORY = ("https://inventory.e2e.test", "basic-client", "inventory:read")


def curl(*args):
    clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code} %{http_version}", *args],
                       capture_output=True, text=True, timeout=20, env=clean)
    body, _, tail = r.stdout.rpartition("\n")
    code, _, version = tail.partition(" ")
    return int(code or 0), version, body


def checks(env, check):
    ca = os.path.join(env.trust_dir, "ca.pem")

    def curl_h2c():
        code, version, body = curl("--http2-prior-knowledge", f"http://127.0.0.1:{env.rev_port}/echo")
        assert (code, version) == (200, "2"), (code, version, body)
        env.verify(body, *INVENTORY)
    check("curl --http2-prior-knowledge against the reverse listener gets a verified JWT", curl_h2c)

    def curl_h2_in_tunnel():
        code, version, body = curl("--http2", "-x", env.fwd, "--cacert", ca, "https://inventory.e2e.test/echo")
        assert (code, version) == (200, "2"), (code, version, body)
        env.verify(body, *INVENTORY)
    check("curl --http2 via the proxy to an https:// URL negotiates h2 in the tunnel", curl_h2_in_tunnel)

    def nginx_http2_upstreams():
        for host in ["h2tls.e2e.test", "h2c.e2e.test"]:
            code, _, body = curl("-x", env.fwd, f"http://{host}/proto")
            assert code == 200, (host, code, body)
            protocol, _, authorization = body.partition("|")
            assert protocol == "HTTP/2.0", (host, body[:40])
            env.verify(authorization, *GRPC)
    check("upstreams over HTTP/2: nginx by ALPN (protocol: auto, TLS) and h2c (protocol: http2)",
          nginx_http2_upstreams)

    def grpc_reverse():
        with grpc.insecure_channel(f"127.0.0.1:{env.grpc_rev_port}") as ch:
            grpc_calls(ch)
    check("gRPC (grpcio) unary and server streaming through the reverse listener, trailers intact",
          grpc_reverse)

    def grpc_intercepted():
        with open(ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        options = [("grpc.http_proxy", env.fwd)]
        with grpc.secure_channel("grpc.e2e.test:443", creds, options=options) as ch:
            grpc_calls(ch)
    check("gRPC (grpcio) over TLS through the forward listener (CONNECT, intercepted, ALPN h2)",
          grpc_intercepted)

    def grpc_own_errors():
        with grpc.insecure_channel(f"127.0.0.1:{env.grpc_dead_port}") as ch:
            try:
                ch.unary_unary("/e2e.Echo/Unary")(b"x", timeout=10)
                raise AssertionError("a call to a dead upstream succeeded")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
                assert e.details().startswith("upstream_unreachable: "), e.details()
        # Without tokenproxy, the server itself refuses: the token is what it checks.
        with grpc.insecure_channel(f"127.0.0.1:{env.grpc_port}") as ch:
            try:
                ch.unary_unary("/e2e.Echo/Unary")(b"x", timeout=10)
                raise AssertionError("the server took a call without a token")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAUTHENTICATED, (e.code(), e.details())
    check("gRPC clients get tokenproxy's own failures as gRPC status (UNAVAILABLE)", grpc_own_errors)

    def websockets_everywhere():
        with ws_connect(f"ws://127.0.0.1:{env.ws_rev_port}/chat") as ws:
            ws_round(env, ws, "reverse")
        ctx = ssl.create_default_context(cafile=ca)
        with ws_connect("wss://ws.e2e.test/chat", proxy=env.fwd, ssl=ctx) as ws:
            ws_round(env, ws, "wss through CONNECT")
        absolute_form_ws(env)
        try:
            with ws_connect(f"ws://127.0.0.1:{env.ws_port}/chat"):
                raise AssertionError("the server took a handshake without a token")
        except InvalidStatus as e:
            assert e.response.status_code == 401, e
    check("WebSocket (websockets) through the reverse listener, wss:// via CONNECT and ws:// "
          "absolute-form; the server refuses a handshake without a token", websockets_everywhere)

    def websocket_outlives_its_token():
        with ws_connect(f"ws://127.0.0.1:{env.ws_rev_port}/chat") as ws:
            first = ws_round(env, ws, "start")
            deadline = first["exp"] + 1.5
            assert deadline - time.time() < 30, first
            while time.time() < deadline:
                ws_round(env, ws, "still here")
                time.sleep(0.5)
            # The handshake's token has expired; the stream is unaffected, and a new
            # handshake carries the refreshed token.
            assert time.time() > first["exp"]
            ws_round(env, ws, "after expiry")
        with ws_connect(f"ws://127.0.0.1:{env.ws_rev_port}/chat") as ws:
            later = ws_round(env, ws, "new")
        assert later["jti"] != first["jti"] and later["exp"] > first["exp"], (first, later)
    check("a WebSocket keeps flowing past its handshake token's expiry; new handshakes get the new token",
          websocket_outlives_its_token)

    def h2load():
        r = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "10",
                            f"http://127.0.0.1:{env.rev_port}/echo"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr[-500:]
        done = re.search(r"requests: 2000 total, 2000 started, 2000 done, 2000 succeeded", r.stdout)
        codes = re.search(r"status codes: (\d+) 2xx", r.stdout)
        assert done and codes and codes.group(1) == "2000", r.stdout[-800:]
    check("h2load: 2000 requests, 4 connections x 10 streams, all 200", h2load)


def grpc_calls(ch):
    reply, call = ch.unary_unary("/e2e.Echo/Unary").with_call(b"hi", timeout=10)
    assert reply == b"echo:hi", reply
    trailing = dict(call.trailing_metadata())
    assert trailing.get("x-served-by") == "grpcio", trailing
    assert trailing.get("x-client-id") == "basic-client", trailing
    replies = list(ch.unary_stream("/e2e.Echo/Stream")(b"s", timeout=10))
    assert replies == [b"0:s", b"1:s", b"2:s"], replies
    try:
        ch.unary_unary("/e2e.Echo/Fail")(b"x", timeout=10)
        raise AssertionError("Fail succeeded")
    except grpc.RpcError as e:
        assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, "no such thing"), (e.code(), e.details())


def ws_round(env, ws, text):
    ws.send(text)
    answer = json.loads(ws.recv(timeout=10))
    assert answer["echo"] == text, answer
    return answer


def absolute_form_ws(env):
    """ws:// through the forward listener as an absolute-form request, as a plain HTTP proxy
    client sends it; one masked text frame each way (RFC 6455 §5.2)."""
    with socket.create_connection(("127.0.0.1", env.fwd_port), timeout=10) as s:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET http://ws.e2e.test/chat HTTP/1.1\r\nHost: ws.e2e.test\r\nConnection: Upgrade\r\n"
                   f"Upgrade: websocket\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(1)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        payload, mask = b"absolute", os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        first = s.recv(2)
        assert first[0] == 0x81, first
        body = b""
        while len(body) < first[1]:
            body += s.recv(first[1] - len(body))
        assert json.loads(body)["echo"] == "absolute", body
