"""End-to-end checks of `tokenproxy exec` and `tokenproxy token` against oidc-provider: the
commands' requests carry tokens the resource server accepts. Called from check.py."""
import os
import subprocess
import sys

INVENTORY = ("https://inventory.e2e.test", "basic-client", "inventory:read")


def checks(env, check):
    def tokenproxy(*args):
        secrets = {"E2E_BASIC_SECRET": env.basic_secret, "E2E_POST_SECRET": env.post_secret,
                   "E2E_HMAC_SECRET": env.idp_env["HMAC_SECRET"]}
        clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        r = subprocess.run([env.binary, *args], capture_output=True, text=True, timeout=60,
                           env={**clean, **secrets})
        assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-800:]}"
        return r.stdout

    def exec_curl_https():
        # Interception is on in this config: exec sets HTTPS_PROXY and CURL_CA_BUNDLE itself.
        out = tokenproxy("exec", "-c", env.config, "--ephemeral", "--",
                         "curl", "-sS", "--fail", "https://inventory.e2e.test/echo")
        env.verify(out, *INVENTORY)
    check("tokenproxy exec runs curl with a verified JWT for an https:// URL", exec_curl_https)

    def exec_python_and_reverse_url():
        script = ("import os, requests\n"
                  "print(requests.get('http://orders.e2e.test/echo', timeout=10).text)\n"
                  "print(requests.get(os.environ['TOKENPROXY_URL_INVENTORY'] + '/echo', timeout=10).text)\n")
        out = tokenproxy("exec", "-c", env.config, "--ephemeral", "--", sys.executable, "-c", script)
        orders, inventory = out.strip().splitlines()
        env.verify(orders, "https://orders.e2e.test", "post-client", "orders:read")
        env.verify(inventory, *INVENTORY)
    check("tokenproxy exec runs a Python requests script: proxy variables and TOKENPROXY_URL_INVENTORY",
          exec_python_and_reverse_url)

    def token_command():
        raw = tokenproxy("token", "-c", env.config, "inventory").strip()
        env.verify("Bearer " + raw, *INVENTORY)
        header = tokenproxy("token", "-c", env.config, "orders", "--format", "header").strip()
        assert header.startswith("Authorization: Bearer "), header[:30]
        env.verify(header[len("Authorization: "):], "https://orders.e2e.test", "post-client", "orders:read")
    check("tokenproxy token prints a token the resource server accepts, with the configured scope", token_command)
