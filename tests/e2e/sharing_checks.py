"""End-to-end checks of shared token sources: 20 upstreams in 4 groups, each group asking
oidc-provider for the same token (same client, scope and resource), make exactly 4 token
requests; every upstream's requests carry a verified token for its group; a 401 from one
upstream of a group makes one new token request, for the whole group. Called from check.py,
which adds the upstreams below to the config."""
import subprocess
import os

GROUPS, PER_GROUP = 4, 5


def upstreams_yaml(http_port):
    out = []
    for g in range(1, GROUPS + 1):
        for i in range(1, PER_GROUP + 1):
            out.append(f"""  grp{g}u{i}:
    url: http://127.0.0.1:{http_port}
    match: [grp{g}u{i}.e2e.test]
    client: basic
    scopes: [g{g}:read]
    resource: [https://g{g}.e2e.test]
""")
    return "".join(out)


def curl(env, host, path):
    clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", "-x", env.fwd,
                        f"http://{host}{path}"], capture_output=True, text=True, timeout=20, env=clean)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def checks(env, check):
    def fetches(g):
        return env.stats().get(f"basic-client https://g{g}.e2e.test", 0)

    def four_requests_for_twenty_upstreams():
        assert [fetches(g) for g in range(1, GROUPS + 1)] == [1] * GROUPS, env.stats()
        for g in range(1, GROUPS + 1):
            tokens = set()
            for i in range(1, PER_GROUP + 1):
                code, body = curl(env, f"grp{g}u{i}.e2e.test", "/echo")
                assert code == 200, (g, i, code, body)
                env.verify(body, f"https://g{g}.e2e.test", "basic-client", f"g{g}:read")
                tokens.add(body)
            assert len(tokens) == 1, f"group {g} used {len(tokens)} tokens"
        assert [fetches(g) for g in range(1, GROUPS + 1)] == [1] * GROUPS, env.stats()
    check("20 upstreams in 4 groups of identical token requests make exactly 4 token requests, "
          "each upstream's token verified", four_requests_for_twenty_upstreams)

    def one_refetch_per_group():
        _, before = curl(env, "grp2u1.e2e.test", "/echo")
        code, _ = curl(env, "grp2u4.e2e.test", "/401")
        assert code == 401, code
        assert [fetches(g) for g in range(1, GROUPS + 1)] == [1, 2, 1, 1], env.stats()
        _, after = curl(env, "grp2u1.e2e.test", "/echo")
        assert after != before, "the group's other upstreams got the new token"
        env.verify(after, "https://g2.e2e.test", "basic-client", "g2:read")
    check("a 401 from one upstream of a group makes one token request, for the whole group",
          one_refetch_per_group)
