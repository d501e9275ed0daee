#!/usr/bin/env bash
# End-to-end tests: the real tokenproxy binary against oidc-provider (authorization server)
# and nginx (upstream, HTTP/1.1 and HTTP/2), a grpcio and a websockets server, with curl, Python
# requests and httpx, Node undici and axios, Java HttpClient, Go net/http, grpcio, websockets
# and h2load as the apps, squid and tinyproxy as parent proxies, redis-server (single, Sentinel
# and Cluster) for the shared cache. Installs what it needs on a
# fresh Debian machine, runs bounded (check.py stops every process it started, by PID), and
# exits non-zero on any failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jdk-headless)
command -v go >/dev/null 2>&1 || [ -x /usr/lib/go/bin/go ] || need_apt+=(golang-go)
command -v h2load >/dev/null 2>&1 || need_apt+=(nghttp2-client)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# Sentinel for the highly available shared cache (ha_checks.py); Cluster needs only redis-server.
command -v redis-sentinel >/dev/null 2>&1 || need_apt+=(redis-sentinel)
# Parent (corporate) proxies for proxy.upstream_proxy, and htpasswd for squid's Basic auth.
command -v squid >/dev/null 2>&1 || [ -x /usr/sbin/squid ] || need_apt+=(squid)
command -v tinyproxy >/dev/null 2>&1 || need_apt+=(tinyproxy)
command -v htpasswd >/dev/null 2>&1 || need_apt+=(apache2-utils)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "e2e: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# nginx-light's package starts a system nginx on port 80, redis-server's a system Redis on
# 6379, squid's and tinyproxy's packages theirs on 3128 and 8888; we run our own on free
# loopback ports.

echo "e2e: npm ci (oidc-provider, undici, axios)"
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"

echo "e2e: building tokenproxy"
(cd "$root" && cargo build --quiet --bin tokenproxy && cargo build --quiet --release --bin tokenproxy)

timeout 900 "$venv/bin/python" "$here/check.py" "$root/target/debug/tokenproxy" "$root/target/release/tokenproxy"
