"""End-to-end checks of `tracing:` (OpenTelemetry traces over OTLP/HTTP).

The receiver is a plain Python HTTP server that decodes each POST /v1/traces with the
opentelemetry-proto package's own ExportTraceServiceRequest. The app is a Python script traced
by the OpenTelemetry SDK: it starts a span, injects W3C traceparent into a requests call
through the forward listener (the SDK's propagator, not ours), and exports its span to the
same receiver. Tokens come from oidc-provider; nginx echoes the traceparent it received.

Checked: one trace runs app span -> tokenproxy server span -> token wait and attempt -> nginx,
the upstream's parent being tokenproxy's attempt span; the token fetch (against oidc-provider
and a real redis-server as the shared cache) is a root span with its Redis commands under it
and the outcome, grant, auth method and status on it, linked from the token wait; an app that
does not sample gets no tokenproxy spans for its request; `token` and `exec` export their
spans before exiting; no secret, token, query or header value anywhere in what the receiver
got; a dead receiver changes nothing for the app and is counted. Called from check.py."""
import base64
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)

from procs import free_port

CONFIG = """
proxy:
  listen: 127.0.0.1:{fwd}
admin:
  listen: 127.0.0.1:{admin}
clients:
  basic:
    token_endpoint: http://127.0.0.1:{idp}/token
    client_id: basic-client
    client_secret: {{ env: E2E_BASIC_SECRET }}
upstreams:
  traced:
    url: http://127.0.0.1:{http}
    match: [traced.e2e.test]
    client: basic
    scopes: [inventory:read]
    resource: [https://inventory.e2e.test]
cache:
  redis: {{ url: "redis://127.0.0.1:{redis}" }}
  encryption_key: {{ file: {key} }}
tracing:
  otlp_endpoint: http://127.0.0.1:{otlp}
  service_name: tokenproxy-e2e
"""

# The traced app: the OpenTelemetry SDK's tracer, its W3C propagator and its OTLP exporter.
APP = r"""
import os, sys, requests
from opentelemetry import trace, propagate
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ALWAYS_OFF
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

sampled = sys.argv[1] == "sampled"
provider = TracerProvider(sampler=ALWAYS_ON if sampled else ALWAYS_OFF,
                          resource=Resource.create({"service.name": "e2e-app"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=os.environ["OTLP"])))
trace.set_tracer_provider(provider)
with trace.get_tracer("e2e-app").start_as_current_span("checkout") as span:
    headers = {"X-Api-Key": "CANARY-HEADER-e2e"}
    propagate.inject(headers)
    r = requests.get("http://traced.e2e.test/trace?sig=CANARY-QUERY-e2e", headers=headers,
                     proxies={"http": os.environ["FWD"]}, timeout=10)
    ctx = span.get_span_context()
    print(r.status_code, format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"), r.text)
provider.shutdown()
"""


class Receiver:
    """An OTLP/HTTP receiver: spans as dicts, and every body as received."""

    def __init__(self, port):
        self.spans, self.raw, self.lock = [], b"", threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                export = ExportTraceServiceRequest.FromString(body)
                with receiver.lock:
                    receiver.raw += body
                    for rs in export.resource_spans:
                        service = {a.key: a.value.string_value for a in rs.resource.attributes}.get("service.name")
                        for ss in rs.scope_spans:
                            for s in ss.spans:
                                receiver.spans.append({
                                    "name": s.name, "kind": s.kind, "service": service,
                                    "trace": s.trace_id.hex(), "id": s.span_id.hex(),
                                    "parent": s.parent_span_id.hex(),
                                    "links": [link.span_id.hex() for link in s.links],
                                    "attrs": {a.key: _value(a.value) for a in s.attributes},
                                })
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, pick, n=1, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                found = [s for s in self.spans if pick(s)]
            if len(found) >= n:
                return found
            time.sleep(0.05)
        with self.lock:
            raise AssertionError(f"fewer than {n} spans; have {self.spans}")


def _value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def checks(env, check, start, wait_http):
    fwd_port, admin_port, otlp_port, redis_port = free_port(), free_port(), free_port(), free_port()
    fwd, admin = f"http://127.0.0.1:{fwd_port}", f"http://127.0.0.1:{admin_port}"
    receiver = Receiver(otlp_port)
    start("redis (trace)", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", env.tmp],
          log=os.path.join(env.tmp, "redis-trace.log"))
    key = os.path.join(env.tmp, "trace-cache.key")
    with open(key, "w") as f:
        f.write(base64.b64encode(os.urandom(32)).decode())
    os.chmod(key, 0o400)
    cfg = os.path.join(env.tmp, "trace.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(fwd=fwd_port, admin=admin_port, idp=env.idp_port, http=env.http_port,
                              redis=redis_port, key=key, otlp=otlp_port))
    secret_env = {"E2E_BASIC_SECRET": env.basic_secret}
    start("tokenproxy (trace)", [env.binary, "run", "-c", cfg], env=secret_env,
          log=os.path.join(env.tmp, "trace.log"))
    wait_http(f"{admin}/readyz")
    app_env = {**{k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
               "FWD": fwd, "OTLP": f"http://127.0.0.1:{otlp_port}/v1/traces"}
    seen = {}

    def app(mode):
        out = subprocess.run([sys.executable, "-c", APP, mode], capture_output=True, text=True,
                             timeout=60, env=app_env)
        assert out.returncode == 0, out.stderr
        status, trace_id, span_id, body = out.stdout.strip().split(" ", 3)
        assert status == "200", out.stdout
        traceparent, authorization = body.split("|", 1)
        env.verify(authorization, "https://inventory.e2e.test", "basic-client", "inventory:read")
        seen["token"] = authorization[len("Bearer "):]
        return trace_id, span_id, traceparent

    def one_trace():
        trace_id, app_span, traceparent = app("sampled")
        spans = receiver.wait(lambda s: s["trace"] == trace_id, n=4)
        mine = [s for s in spans if s["service"] == "tokenproxy-e2e"]
        server = [s for s in mine if s["kind"] == 2]
        assert len(server) == 1 and server[0]["parent"] == app_span, spans
        server = server[0]
        attrs = server["attrs"]
        assert attrs["http.request.method"] == "GET" and attrs["http.response.status_code"] == 200, attrs
        assert attrs["tokenproxy.upstream"] == "traced" and attrs["url.path"] == "/trace", attrs
        attempt = [s for s in mine if s["kind"] == 3]
        assert len(attempt) == 1 and attempt[0]["parent"] == server["id"], mine
        version, trace_at_nginx, parent_at_nginx, flags = traceparent.split("-")
        assert (trace_at_nginx, parent_at_nginx, flags) == (trace_id, attempt[0]["id"], "01"), traceparent
        wait = [s for s in mine if s["name"] == "token wait"]
        assert len(wait) == 1 and wait[0]["parent"] == server["id"], mine
        fetch = receiver.wait(lambda s: s["name"] == "token fetch")[0]
        assert wait[0]["links"] == [fetch["id"]], (wait, fetch)
        fa = fetch["attrs"]
        assert fetch["parent"] == "" and fa["tokenproxy.outcome"] == "success", fetch
        assert fa["tokenproxy.grant"] == "client_credentials", fa
        assert fa["tokenproxy.auth_method"] == "client_secret_basic", fa
        assert fa["http.response.status_code"] == 200 and fa["server.address"] == "127.0.0.1", fa
        post = receiver.wait(lambda s: s["trace"] == fetch["trace"] and s["name"] == "POST")
        assert post[0]["parent"] == fetch["id"] and post[0]["attrs"]["http.response.status_code"] == 200, post
        redis = receiver.wait(lambda s: s["trace"] == fetch["trace"] and s["name"].startswith("redis "), n=3)
        assert all(s["parent"] == fetch["id"] and s["attrs"]["db.system.name"] == "redis" for s in redis), redis
        names = sorted({s["name"] for s in redis})
        print(f"     one trace: app span -> tokenproxy GET (server) -> token wait + GET (client) -> nginx; "
              f"token fetch with POST (oidc-provider) and {names} under it", file=sys.stderr)
    check("tracing: a traced Python app's trace continues through tokenproxy to nginx, the token "
          "fetch (oidc-provider, redis-server cache) is linked, parents and attributes right", one_trace)

    def unsampled():
        trace_id, _, traceparent = app("unsampled")
        assert traceparent.split("-")[1] == trace_id and traceparent.endswith("-00"), traceparent
        marker, _, _ = app("sampled")  # exported after the unsampled one, if it were
        receiver.wait(lambda s: s["trace"] == marker, n=4)
        with receiver.lock:
            leaked = [s for s in receiver.spans if s["trace"] == trace_id]
        assert not leaked, leaked
    check("tracing: an app that does not sample gets no tokenproxy spans; the upstream still sees "
          "its trace id, unsampled", unsampled)

    def token_command_flushes():
        before = len(receiver.wait(lambda s: s["name"] == "token fetch"))
        out = subprocess.run([env.binary, "token", "-c", cfg, "traced"], capture_output=True, text=True,
                             timeout=60, env={**os.environ, **secret_env})
        assert out.returncode == 0, out.stderr
        seen["cli"] = out.stdout.strip()
        with receiver.lock:
            fetches = [s for s in receiver.spans if s["name"] == "token fetch"]
        assert len(fetches) == before + 1, fetches
        assert fetches[-1]["attrs"]["tokenproxy.outcome"] == "success", fetches[-1]
    check("tracing: `tokenproxy token` exports its fetch span before it exits", token_command_flushes)

    def exec_flushes():
        out = subprocess.run([env.binary, "exec", "-c", cfg, "--ephemeral", "--", "curl", "-sS",
                              "http://traced.e2e.test/trace"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, **secret_env})
        assert out.returncode == 0, out.stderr
        trace_id = out.stdout.split("|")[0].split("-")[1]
        with receiver.lock:  # no waiting: exec has exited, so its spans are in
            mine = [s for s in receiver.spans if s["trace"] == trace_id]
        assert sorted(s["name"] for s in mine) == ["GET", "GET", "token wait"], mine
    check("tracing: `tokenproxy exec` exports its request's spans before it exits", exec_flushes)

    def no_secret():
        with receiver.lock:
            raw = receiver.raw
        for canary in [env.basic_secret, seen["token"], seen["cli"], "CANARY-QUERY-e2e", "CANARY-HEADER-e2e"]:
            assert canary.encode() not in raw, f"{canary[:12]}... reached a span"
    check("tracing: no secret, token, query or header value in anything the receiver got", no_secret)

    def dead_receiver():
        receiver.server.shutdown()
        receiver.server.server_close()
        started = time.monotonic()
        for _ in range(20):
            r = requests.get("http://traced.e2e.test/trace", proxies={"http": fwd}, timeout=10)
            assert r.status_code == 200, r.text
        took = time.monotonic() - started
        deadline = time.time() + 10
        while time.time() < deadline:
            metrics = requests.get(f"{admin}/metrics", timeout=5).text
            line = [x for x in metrics.splitlines()
                    if x.startswith('tokenproxy_trace_spans_dropped_total{reason="export_failed"}')]
            if line and float(line[0].split()[-1]) >= 60:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(line)
        assert took < 5, took
        print(f"     receiver down: 20 requests answered 200 in {took:.2f}s; {line[0]}", file=sys.stderr)
    check("tracing: with the receiver down the app's requests are unaffected and the lost spans counted",
          dead_receiver)
