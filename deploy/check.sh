#!/usr/bin/env bash
# Offline checks of deploy/ (run by .ci/run): manifests against the Kubernetes schemas, alert
# rules with promtool, the dashboard as JSON, the systemd unit where systemd-analyze exists.
# Installs what it needs on a fresh Debian machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v promtool >/dev/null 2>&1; then
  echo "deploy: installing promtool (Debian package prometheus)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
venv="$here/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0 PyYAML==6.0.2

"$venv/bin/python" "$here/check.py"
promtool check rules "$here/monitoring/alerts.yaml"
if command -v systemd-analyze >/dev/null 2>&1; then
  # The unit's syntax and options; the binary not being installed here is expected.
  problems=$(systemd-analyze verify "$here/systemd/tokenproxy.service" 2>&1 \
    | grep -v "Command /usr/local/bin/tokenproxy is not executable" || true)
  if [ -n "$problems" ]; then
    echo "$problems"
    exit 1
  fi
  echo "systemd unit: ok"
fi
