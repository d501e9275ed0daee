"""End-to-end checks of the token cache shared by replicas (`cache:`), against real
redis-server processes and oidc-provider, with 20 tokenproxy processes carrying app traffic:

- the fleet makes one token request per refresh interval (as one replica would), not one per
  replica, across several lifetimes, and no app request fails;
- Redis killed mid-run: no request fails, every replica falls back to its own fetches; Redis
  restarted empty: the breakers close and the fleet is back to one request per interval;
- Redis stopped with SIGSTOP (a hang): a replica starting then still gets its token within the
  Redis timeout plus a fetch, and requests do not wait;
- bad data in Redis (tampered, moved from another token request's key, garbage, an expired
  token sealed with the right key) is rejected, counted, replaced, and no request fails;
- no token or encryption key appears in Redis in the clear, or in the logs;
- TLS and ACL: replicas share a token through a rediss:// server with a user and password;
  one with a wrong password falls back and still serves.

The bound on token requests: a refresh round starts when the first replica's refresh timer
fires (75-80% of the lifetime it saw), and only the lock holder fetches; a replica whose timer
fires later finds the new token fresh (under 70% of its lifetime gone) and takes it. Rounds
are therefore at least 0.7 of a lifetime apart, so a window of W seconds holds at most
W / (0.7 * TTL) + 1 token requests, the same bound as a single replica's.
Called from check.py."""
import base64
import json
import os
import signal
import subprocess
import threading
import time

import redis as redislib
import requests
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from procs import free_port, stop

REPLICAS = 20
# What the cache's Redis user may run: the same list as deploy/kubernetes/redis-cache.yaml.
ACL_COMMANDS = "+get +set +del +eval +evalsha +script|load +ping +hello"
FLEET_TTL = 6
RESOURCE = "https://fleet.e2e.test"


def stat(env, resource=RESOURCE):
    return env.stats().get(f"basic-client {resource}", 0)


def bound(window):
    return int(window / (0.7 * FLEET_TTL)) + 1


class Fleet:
    def __init__(self, env, start, wait_http, name="fleet", resource=RESOURCE):
        self.env, self.start, self.wait_http = env, start, wait_http
        self.resource = resource
        self.binary = env.binary
        self.tmp = os.path.join(env.tmp, name)
        os.makedirs(self.tmp, exist_ok=True)
        self.key = os.urandom(32)
        self.key_file = os.path.join(self.tmp, "cache.key")
        with open(self.key_file, "w") as f:
            f.write(base64.b64encode(self.key).decode())
        self.redis_port = free_port()
        self.redis = None
        self.replicas = []  # (process, forward port, admin port, log)
        self.results = []  # (code, seconds, body)
        self.stopping = threading.Event()

    def start_redis(self, port, extra=(), name="redis"):
        # --dir: a replica's full sync writes an RDB file there, never into the checkout.
        return self.start(name, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", self.tmp, "--dbfilename", f"{name}.rdb", *extra],
                          log=os.path.join(self.tmp, f"{name}.log"))

    def wait_redis(self, port):
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if redislib.Redis(port=port, socket_timeout=1).ping():
                    return
            except redislib.RedisError:
                time.sleep(0.05)
        raise AssertionError(f"redis on {port} did not start")

    def config(self, i, cache):
        fwd, admin = free_port(), free_port()
        text = f"""proxy:
  listen: 127.0.0.1:{fwd}
admin:
  listen: 127.0.0.1:{admin}
tokens:
  fetch_timeout: 5s
clients:
  basic:
    token_endpoint: http://127.0.0.1:{self.env.idp_port}/token
    client_id: basic-client
    client_secret: {{ env: E2E_BASIC_SECRET }}
upstreams:
  fleet:
    url: http://127.0.0.1:{self.env.http_port}
    match: [fleet.e2e.test]
    client: basic
    scopes: [fleet:read]
    resource: [{self.resource}]
  fleet2:
    url: http://127.0.0.1:{self.env.http_port}
    match: [fleet2.e2e.test]
    client: basic
    scopes: [fleet:read]
    resource: [https://fleet2.e2e.test]
{cache}"""
        path = os.path.join(self.tmp, f"replica{i}.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path, fwd, admin

    def cache_yaml(self, url=None, extra=""):
        url = url or f"redis://127.0.0.1:{self.redis_port}"
        return f"""cache:
  redis:
    url: {url}
    key_prefix: e2e
    timeout: 100ms
{extra}  encryption_key: {{ file: {self.key_file} }}
"""

    def start_replica(self, i, cache, wait=True):
        path, fwd, admin = self.config(i, cache)
        log = os.path.join(self.tmp, f"replica{i}.log")
        p = self.start(f"replica {i}", [self.binary, "run", "-c", path], log=log,
                       env={"RUST_LOG": "info", "E2E_BASIC_SECRET": self.env.basic_secret})
        if wait:
            self.wait_http(f"http://127.0.0.1:{admin}/readyz")
        return p, fwd, admin, log

    def metric(self, admin, name):
        text = requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=5, proxies={"http": None}).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    def total(self, name):
        return sum(self.metric(admin, name) for _, _, admin, _ in self.replicas)

    def traffic(self):
        """App requests round-robin over the replicas until stopped, recording each."""
        sessions = [requests.Session() for _ in self.replicas]
        for s, (_, fwd, _, _) in zip(sessions, self.replicas):
            s.proxies = {"http": f"http://127.0.0.1:{fwd}"}
        verified = set()
        while not self.stopping.is_set():
            for s in sessions:
                started = time.time()
                try:
                    r = s.get("http://fleet.e2e.test/echo", timeout=10)
                    self.results.append((r.status_code, time.time() - started, r.text))
                    if r.status_code == 200 and r.text not in verified:
                        verified.add(r.text)  # each new token checked while it is valid
                        self.env.verify(r.text, self.resource, "basic-client", "fleet:read")
                except Exception as e:  # noqa: BLE001 - recorded as a failed request
                    self.results.append((0, time.time() - started, repr(e)))
            time.sleep(0.05)

    def run_traffic(self, seconds):
        """Traffic for `seconds`; returns this stretch's results, all asserted 200."""
        first = len(self.results)
        time.sleep(seconds)
        stretch = self.results[first:]
        bad = [(c, body[:200]) for c, _, body in stretch if c != 200]
        assert stretch, "no requests were made"
        assert not bad, f"{len(bad)} of {len(stretch)} requests failed: {bad[:3]}"
        return stretch

    def key_of(self, r, prefix="e2e"):
        keys = sorted(k.decode() for k in r.scan_iter(match=f"{{{prefix}:*}}:token"))
        return keys


def checks(env, check, start, wait_http):
    fleet = Fleet(env, start, wait_http)
    fleet.redis = fleet.start_redis(fleet.redis_port)
    fleet.wait_redis(fleet.redis_port)
    r = redislib.Redis(port=fleet.redis_port, socket_timeout=2)
    before = {RESOURCE: stat(env), "https://fleet2.e2e.test": stat(env, "https://fleet2.e2e.test")}
    procs = [fleet.start_replica(i, fleet.cache_yaml(), wait=False) for i in range(REPLICAS)]
    for _, _, admin, _ in procs:
        wait_http(f"http://127.0.0.1:{admin}/readyz", timeout=30)
    fleet.replicas = procs
    thread = threading.Thread(target=fleet.traffic, daemon=True)
    thread.start()

    def one_fetch_at_start():
        assert stat(env) - before[RESOURCE] == 1, env.stats()
        assert stat(env, "https://fleet2.e2e.test") - before["https://fleet2.e2e.test"] == 1, env.stats()
        assert fleet.total("tokenproxy_cache_fleet_fetches_total") == 2
        assert fleet.total('tokenproxy_cache_locks_total{outcome="acquired"}') >= 2
    check(f"{REPLICAS} replicas starting together make one token request per token request", one_fetch_at_start)

    def one_fetch_per_interval():
        start_count, window = stat(env), 3.5 * FLEET_TTL
        calls = lambda: sum(v["calls"] for v in r.info("commandstats").values())  # noqa: E731
        commands = calls()
        stretch = fleet.run_traffic(window)
        fetched = stat(env) - start_count
        commands = calls() - commands
        tokens = {body for _, _, body in stretch}
        assert 3 <= fetched <= bound(window), f"{fetched} token requests in {window}s (bound {bound(window)})"
        assert len(tokens) <= fetched + 1, f"{len(tokens)} distinct tokens for {fetched} fetches"
        lifetimes = window / FLEET_TTL
        print(f"     {fetched} token requests for {REPLICAS} replicas over {lifetimes} lifetimes "
              f"({len(stretch)} requests, all 200; without the cache about "
              f"{REPLICAS * int(window / (0.77 * FLEET_TTL))}); Redis commands per replica per lifetime: "
              f"{commands / REPLICAS / lifetimes:.1f} (2 upstreams)")
    check(f"across 3.5 lifetimes the fleet makes at most W/(0.7 TTL)+1 token requests, no request fails",
          one_fetch_per_interval)

    def joining_a_warm_fleet():
        before = stat(env, "https://fleet2.e2e.test")
        p, _, admin, _ = fleet.start_replica(REPLICAS + 1, fleet.cache_yaml())
        took = fleet.metric(admin, 'tokenproxy_token_fetch_duration_seconds_sum{upstream="fleet2"}')
        hits = fleet.metric(admin, 'tokenproxy_cache_reads_total{outcome="hit"}')
        stop(p)
        q, _, direct_admin, _ = fleet.start_replica(REPLICAS + 2, "")
        direct = fleet.metric(direct_admin, 'tokenproxy_token_fetch_duration_seconds_sum{upstream="fleet2"}')
        stop(q)
        assert hits >= 1, hits
        assert stat(env, "https://fleet2.e2e.test") - before == 1, "only the replica without a cache fetched"
        print(f"     token for a replica joining a warm fleet: {took * 1000:.1f} ms (a Redis hit); "
              f"from the authorization server: {direct * 1000:.1f} ms")
    check("a replica joining a warm fleet takes the shared token without a token request",
          joining_a_warm_fleet)

    def a_401_renews_once_for_the_fleet():
        # fleet2's token lives an hour: only the 401s can renew it.
        before = stat(env, "https://fleet2.e2e.test")
        tokens = set()
        for _, fwd, _, _ in fleet.replicas:
            r = requests.get("http://fleet2.e2e.test/401", proxies={"http": f"http://127.0.0.1:{fwd}"}, timeout=10)
            assert r.status_code == 401, r.status_code
        for _, fwd, _, _ in fleet.replicas:
            r = requests.get("http://fleet2.e2e.test/echo", proxies={"http": f"http://127.0.0.1:{fwd}"}, timeout=10)
            assert r.status_code == 200, r.status_code
            tokens.add(r.text)
        assert stat(env, "https://fleet2.e2e.test") - before == 1, "one token request for 20 replicas' 401s"
        assert len(tokens) == 1, f"{len(tokens)} tokens across the fleet after the 401s"
        env.verify(tokens.pop(), "https://fleet2.e2e.test", "basic-client", "fleet:read")
    check("a 401 (a revoked token) on every replica makes one token request for the whole fleet",
          a_401_renews_once_for_the_fleet)

    def tampered_foreign_garbage_expired():
        keys = fleet.key_of(r)
        assert len(keys) == 2, keys
        mine = None
        for k in keys:  # the fleet upstream's key: the one whose value opens to its token
            mine = k if r.pttl(k) < FLEET_TTL * 1000 else mine
        other = [k for k in keys if k != mine][0]

        def inject(value, why):
            seen = fleet.total('tokenproxy_cache_reads_total{outcome="rejected"}')
            r.set(mine, value, px=FLEET_TTL * 1000)
            deadline = time.time() + 2.5 * FLEET_TTL
            while fleet.total('tokenproxy_cache_reads_total{outcome="rejected"}') <= seen:
                assert time.time() < deadline, f"{why}: not rejected within {2.5 * FLEET_TTL}s"
                time.sleep(0.2)
            fleet.run_traffic(0.5)

        value = r.get(mine).decode()
        head, blob = value.rsplit(":", 1)
        flipped = blob[:-3] + ("A" if blob[-3] != "A" else "B") + blob[-2:]
        inject(f"{head}:{flipped}", "tampered")
        inject(r.get(other), "moved from another token request's key")
        inject("1:99999999999999:AAAA", "garbage with a far expiry")
        inject(os.urandom(64), "random bytes")
        now = int(time.time() * 1000)
        exp = now - 60_000
        entry = json.dumps({"access_token": "expired-token", "token_type": "Bearer", "iat": now - 120_000,
                            "exp": exp}).encode()
        nonce = os.urandom(12)
        sealed = AESGCM(fleet.key).encrypt(nonce, entry, f"{mine}\n{exp}".encode())
        inject(f"1:{exp}:" + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("="), "expired token")
        fleet.run_traffic(FLEET_TTL)
    check("tampered, foreign, garbage and expired values in Redis are rejected, counted and replaced; "
          "no request fails", tampered_foreign_garbage_expired)

    def no_secret_in_redis_or_logs():
        values = b"".join(r.get(k) or b"" for k in r.scan_iter())
        tokens = {body[len("Bearer "):] for _, _, body in fleet.results if body.startswith("Bearer ")}
        assert tokens
        for t in tokens:
            assert t.encode() not in values, "a token in Redis in the clear"
        key_b64 = base64.b64encode(fleet.key)
        assert fleet.key not in values and key_b64 not in values
        for _, _, _, log in fleet.replicas:
            with open(log, "rb") as f:
                text = f.read()
            assert key_b64 not in text and env.basic_secret.encode() not in text
            for t in tokens:
                assert t.encode() not in text, f"a token in {log}"
    check("no token or encryption key in Redis in the clear, nor in the logs (canary)", no_secret_in_redis_or_logs)

    def redis_killed_and_restarted():
        fleet.redis.send_signal(signal.SIGKILL)
        fleet.redis.wait()
        fleet.run_traffic(2 * FLEET_TTL)
        opened = [fleet.metric(a, "tokenproxy_cache_breaker_open") for _, _, a, _ in fleet.replicas]
        assert all(o == 1 for o in opened), f"breakers: {opened}"
        fleet.redis = fleet.start_redis(fleet.redis_port, name="redis-restarted")
        fleet.wait_redis(fleet.redis_port)
        deadline = time.time() + 30
        while fleet.total("tokenproxy_cache_breaker_open") > 0:
            assert time.time() < deadline, "breakers still open 30s after Redis came back"
            fleet.run_traffic(0.5)
        fleet.run_traffic(FLEET_TTL)  # one round to fill the empty Redis
        start_count, window = stat(env), 3 * FLEET_TTL
        fleet.run_traffic(window)
        fetched = stat(env) - start_count
        assert fetched <= bound(window), f"{fetched} token requests after Redis came back (bound {bound(window)})"
    check("Redis killed: no request fails, every replica falls back; restarted empty: back to one "
          "request per interval", redis_killed_and_restarted)

    def redis_hangs():
        fleet.redis.send_signal(signal.SIGSTOP)
        try:
            stretch = fleet.run_traffic(FLEET_TTL)
            slowest = max(t for _, t, _ in stretch)
            assert slowest < 1.0, f"a request took {slowest:.2f}s while Redis hung"
            started = time.time()
            p, fwd, admin, log = fleet.start_replica(REPLICAS, fleet.cache_yaml(), wait=False)
            wait_http(f"http://127.0.0.1:{admin}/readyz", timeout=10)
            ready = time.time() - started
            code, _ = requests.get("http://fleet.e2e.test/echo", proxies={"http": f"http://127.0.0.1:{fwd}"},
                                   timeout=5).status_code, None
            assert code == 200
            assert ready < 3.0, f"a new replica took {ready:.2f}s to get its tokens while Redis hung"
            stop(p)
        finally:
            fleet.redis.send_signal(signal.SIGCONT)
    check("Redis stopped (SIGSTOP): requests do not wait, a new replica gets its token past the timeout",
          redis_hangs)

    fleet.stopping.set()
    thread.join(timeout=15)
    for p, _, _, _ in fleet.replicas:
        stop(p)
    tls_and_acl(env, check, fleet)


def make_tls(tmp):
    """A CA and a certificate for 127.0.0.1 signed by it, by openssl: (ca, cert, key) paths."""
    ca_key, ca, key, csr, cert = (os.path.join(tmp, n) for n in ("ca.key", "ca.pem", "redis.key", "redis.csr",
                                                                "redis.pem"))
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
        "-subj", "/CN=e2e redis CA", "-keyout", ca_key, "-out", ca)
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", key, "-out", csr)
    ext = os.path.join(tmp, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "1",
        "-extfile", ext, "-out", cert)
    return ca, cert, key


def tls_and_acl(env, check, fleet):
    tmp = fleet.tmp
    ca, cert, key = make_tls(tmp)
    password = "e2e-redis-" + os.urandom(8).hex()
    pw_file = os.path.join(tmp, "redis.password")
    with open(pw_file, "w") as f:
        f.write(password)
    port = free_port()
    conf = os.path.join(tmp, "redis-tls.conf")
    with open(conf, "w") as f:
        f.write(f"port 0\ntls-port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\n"
                f"tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\ntls-auth-clients no\n"
                f"user default off\nuser tokenproxy on >{password} ~{{e2etls:* {ACL_COMMANDS}\n")
    tls_redis = fleet.start("redis-tls", ["redis-server", conf], log=os.path.join(tmp, "redis-tls.log"))
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            redislib.Redis(port=port, ssl=True, ssl_ca_certs=ca, username="tokenproxy", password=password,
                           socket_timeout=1).ping()
            break
        except redislib.RedisError:
            time.sleep(0.05)
    else:
        raise AssertionError("the TLS Redis did not start; see redis-tls.log")

    def cache(pw):
        extra = f"    ca_file: {ca}\n    username: tokenproxy\n    password: {{ file: {pw} }}\n"
        return fleet.cache_yaml(url=f"rediss://127.0.0.1:{port}", extra=extra).replace("key_prefix: e2e",
                                                                                           "key_prefix: e2etls")

    def shared_over_tls():
        before = stat(env, "https://fleettls.e2e.test")
        replicas = []
        for i in range(2):
            path, fwd, admin = fleet.config(100 + i, cache(pw_file))
            with open(path) as f:
                text = f.read().replace("https://fleet2.e2e.test", "https://fleettls.e2e.test")
            with open(path, "w") as f:
                f.write(text)
            log = os.path.join(tmp, f"tls{i}.log")
            p = fleet.start(f"tls replica {i}", [env.binary, "run", "-c", path], log=log,
                            env={"RUST_LOG": "info", "E2E_BASIC_SECRET": env.basic_secret})
            replicas.append((p, fwd, admin, log))
            fleet.wait_http(f"http://127.0.0.1:{admin}/readyz")
        for _, fwd, _, _ in replicas:
            r = requests.get("http://fleet2.e2e.test/echo", proxies={"http": f"http://127.0.0.1:{fwd}"}, timeout=5)
            assert r.status_code == 200, r.text
            env.verify(r.text, "https://fleettls.e2e.test", "basic-client", "fleet:read")
        assert stat(env, "https://fleettls.e2e.test") - before == 1, env.stats()
        bad_pw = os.path.join(tmp, "wrong.password")
        with open(bad_pw, "w") as f:
            f.write("not-the-password")
        path, fwd, admin = fleet.config(102, cache(bad_pw))
        log = os.path.join(tmp, "tls-wrong.log")
        p = fleet.start("tls replica, wrong password", [env.binary, "run", "-c", path], log=log,
                        env={"RUST_LOG": "info", "E2E_BASIC_SECRET": env.basic_secret})
        fleet.wait_http(f"http://127.0.0.1:{admin}/readyz")
        r = requests.get("http://fleet2.e2e.test/echo", proxies={"http": f"http://127.0.0.1:{fwd}"}, timeout=5)
        assert r.status_code == 200
        assert fleet.metric(admin, "tokenproxy_cache_breaker_open") == 1
        with open(log, "rb") as f:
            text = f.read()
        assert b"not-the-password" not in text and password.encode() not in text
        for proc, _, _, _ in [*replicas, (p, 0, 0, "")]:
            stop(proc)
    check("replicas share a token through rediss:// with a user and password; a wrong password "
          "falls back and still serves", shared_over_tls)
    stop(tls_redis)
