#!/usr/bin/env python3
"""Offline checks of deploy/: Kubernetes manifests against the API schemas (kubernetes-validate,
which ships them), the kustomize component merged into a sample Deployment, and the Grafana
dashboard as JSON. Alert rules are checked by promtool in check.sh; metric names by
`cargo test --test deploy`. Exits non-zero on any problem."""
import copy
import json
import pathlib
import sys

import kubernetes_validate
import yaml

K8S = "1.30.0"  # native sidecars (restartPolicy: Always on init containers) need 1.29+
HERE = pathlib.Path(__file__).parent
failures = []


def validate(doc, where):
    try:
        kubernetes_validate.validate(doc, K8S, strict=True)
        print(f"ok   {where}: {doc['kind']} {doc['metadata']['name']}")
    except kubernetes_validate.ValidationError as e:
        failures.append(where)
        print(f"FAIL {where}: {e.message} at {'/'.join(map(str, e.path))}")


def merge_by_name(base, patch):
    names = {item["name"]: i for i, item in enumerate(base)}
    for item in patch:
        if item["name"] in names:
            base[names[item["name"]]] = item
        else:
            base.append(item)


for path in sorted((HERE / "kubernetes").glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        validate(doc, path.name)

# The component: strategic-merge the sidecar patch and apply the env patch to a plain app.
app = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "plain-app"},
    "spec": {"selector": {"matchLabels": {"app": "plain"}}, "template": {
        "metadata": {"labels": {"app": "plain"}},
        "spec": {"securityContext": {"runAsNonRoot": True},
                 "initContainers": [{"name": "migrate", "image": "example/migrate:1"}],
                 "containers": [{"name": "app", "image": "example/app:1", "env": [],
                                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                 "volumes": [{"name": "data", "emptyDir": {}}]}}}}
sidecar = yaml.safe_load((HERE / "kubernetes/component/sidecar-patch.yaml").read_text())
merged = copy.deepcopy(app)
pod, ppod = merged["spec"]["template"]["spec"], sidecar["spec"]["template"]["spec"]
pod["securityContext"].update(ppod["securityContext"])
merge_by_name(pod["initContainers"], ppod["initContainers"])
merge_by_name(pod["volumes"], ppod["volumes"])
for op in yaml.safe_load((HERE / "kubernetes/component/env-patch.yaml").read_text()):
    prefix = "/spec/template/spec/containers/0/"
    field = op["path"].removeprefix(prefix).removesuffix("/-")
    assert op["op"] == "add" and op["path"] == f"{prefix}{field}/-" and field in ("env", "volumeMounts"), op
    pod["containers"][0][field].append(op["value"])
validate(merged, "component applied to a Deployment")
if [c["name"] for c in pod["initContainers"]] != ["migrate", "tokenproxy"]:
    failures.append("component keeps existing init containers")
kust = yaml.safe_load((HERE / "kubernetes/component/kustomization.yaml").read_text())
if kust.get("kind") != "Component" or len(kust.get("patches", [])) != 2:
    failures.append("kustomization.yaml is not a Component with two patches")

dashboard = json.loads((HERE / "monitoring/grafana-dashboard.json").read_text())
if not dashboard.get("panels"):
    failures.append("dashboard has no panels")
else:
    print(f"ok   grafana-dashboard.json: {len(dashboard['panels'])} panels")
podmonitor = yaml.safe_load((HERE / "monitoring/podmonitor.yaml").read_text())
if podmonitor["kind"] != "PodMonitor" or not podmonitor["spec"]["podMetricsEndpoints"]:
    failures.append("podmonitor.yaml")

print(f"deploy checks: {len(failures)} failed")
sys.exit(1 if failures else 0)
