"""End-to-end checks of TLS interception: real clients call https:// URLs through HTTPS_PROXY,
each trusting tokenproxy's generated CA by its own mechanism, and the resource server's JWT
checks pass. Called from check.py with its Env."""
import os
import shutil
import subprocess

import httpx
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENTS = os.path.join(HERE, "clients")
INVENTORY = ("https://inventory.e2e.test", "basic-client", "inventory:read")


def run(argv, env, cwd=CLIENTS):
    clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd, env={**clean, **env})
    assert r.returncode == 0, f"{argv[0]} exited {r.returncode}: {r.stderr[-800:]}"
    return r.stdout


def checks(env, check):
    trust = env.trust_dir
    bundle, ca, p12 = (os.path.join(trust, f) for f in ["bundle.pem", "ca.pem", "truststore.p12"])
    url = "https://inventory.e2e.test/echo"

    def curl_https_proxy():
        out = run(["curl", "-sS", "--fail", "--max-time", "10", url],
                  {"https_proxy": env.fwd, "CURL_CA_BUNDLE": bundle})
        env.verify(out, *INVENTORY)
    check("curl via https_proxy to an https:// URL gets a verified JWT (CURL_CA_BUNDLE)", curl_https_proxy)

    def python_requests():
        os.environ["HTTPS_PROXY"], os.environ["REQUESTS_CA_BUNDLE"] = env.fwd, bundle
        try:
            r = requests.get("https://orders.e2e.test/echo", timeout=10)
            assert r.status_code == 200, (r.status_code, r.text)
            env.verify(r.text, "https://orders.e2e.test", "post-client", "orders:read")
        finally:
            del os.environ["HTTPS_PROXY"], os.environ["REQUESTS_CA_BUNDLE"]
    check("Python requests via HTTPS_PROXY gets a verified JWT (REQUESTS_CA_BUNDLE)", python_requests)

    def python_httpx():
        os.environ["HTTPS_PROXY"], os.environ["SSL_CERT_FILE"] = env.fwd, bundle
        try:
            r = httpx.get(url, timeout=10)
            assert r.status_code == 200, (r.status_code, r.text)
            env.verify(r.text, *INVENTORY)
        finally:
            del os.environ["HTTPS_PROXY"], os.environ["SSL_CERT_FILE"]
    check("Python httpx via HTTPS_PROXY gets a verified JWT (SSL_CERT_FILE)", python_httpx)

    def node_undici():
        out = run(["node", "undici.mjs", url], {"HTTPS_PROXY": env.fwd, "NODE_EXTRA_CA_CERTS": ca})
        env.verify(out, *INVENTORY)
        # undici tunnels http:// too (CONNECT host:80): served as plaintext HTTP in the tunnel.
        out = run(["node", "undici.mjs", "http://inventory.e2e.test/echo"], {"HTTP_PROXY": env.fwd})
        env.verify(out, *INVENTORY)
    check("Node undici EnvHttpProxyAgent gets a verified JWT for https:// and http:// (NODE_EXTRA_CA_CERTS)",
          node_undici)

    def node_axios():
        out = run(["node", "axios.mjs", url], {"HTTPS_PROXY": env.fwd, "NODE_EXTRA_CA_CERTS": ca})
        env.verify(out, *INVENTORY)
    check("Node axios with https-proxy-agent gets a verified JWT", node_axios)

    def java_httpclient():
        out = run(["java", "-Djavax.net.ssl.trustStore=" + p12, "-Djavax.net.ssl.trustStorePassword=changeit",
                   "-Djavax.net.ssl.trustStoreType=PKCS12", "Fetch.java", url],
                  {"PROXY_PORT": str(env.fwd_port)})
        env.verify(out, *INVENTORY)
    check("Java HttpClient gets a verified JWT (truststore.p12)", java_httpclient)

    def go_net_http():
        go = shutil.which("go") or "/usr/lib/go/bin/go"
        cache = os.path.join(env.tmp, "gocache")
        out = run([go, "run", "fetch.go", url], {"HTTPS_PROXY": env.fwd, "SSL_CERT_FILE": bundle,
                                                  "GOCACHE": cache, "GOPATH": os.path.join(env.tmp, "gopath"),
                                                  "GO111MODULE": "off"})
        env.verify(out, *INVENTORY)
    check("Go net/http gets a verified JWT (SSL_CERT_FILE)", go_net_http)

    def opted_out_refused():
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "10", "-w", "%{http_connect}",
                            "-x", env.fwd, "https://authfail.e2e.test/echo"], capture_output=True, text=True)
        assert r.stdout == "403", r.stdout
    check("CONNECT to an upstream with intercept: false is refused", opted_out_refused)

    def unmatched_not_intercepted():
        # The origin's own certificate (nginx's) verifies; ours would not.
        r = requests.get(f"https://127.0.0.1:{env.tls_port}/plain", timeout=10, verify=env.cert,
                         proxies={"https": env.fwd})
        assert r.status_code == 200 and r.text.strip() == "plain", (r.status_code, r.text)
        metrics = requests.get(env.admin("/metrics"), timeout=5).text
        assert 'tokenproxy_connects_total{outcome="tunnelled"}' in metrics, metrics
    check("an unmatched https:// host is tunnelled: the client sees the origin's own certificate",
          unmatched_not_intercepted)
