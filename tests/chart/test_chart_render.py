"""The chart renders, lints and encodes the promises it makes: restricted pod security, RBAC that
is exactly what the operator's code does, settings the operator really reads, and values that
fail with the offending key's name. Uses the real ``helm`` binary; no cluster needed."""

from __future__ import annotations

import os
from typing import Any

import pytest
from chart_helpers import (
    CHART,
    KUBE_VERSION,
    PRESETS,
    by_kind,
    helm,
    one,
    operator_container,
    plain_env,
    render,
    rule_allows,
    template_args,
    values_args,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("preset", list(PRESETS))
def test_helm_lint_strict(preset: str) -> None:
    helm("lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART), *values_args(preset))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_pod_runs_restricted(preset: str) -> None:
    """Pod Security Standard "restricted", field by field, for every container the chart runs."""
    docs = render(preset)
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]
    assert workloads, "the chart renders no workload"
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, container["name"]
            assert sc["readOnlyRootFilesystem"] is True, container["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], container["name"]
            assert not sc["capabilities"].get("add"), container["name"]
            assert sc.get("privileged") is not True, container["name"]
            assert "memory" in container["resources"]["limits"], container["name"]
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["port"] == "health"
        # A read-only root needs a writable /tmp (Python, kopf) and HOME pointing at it.
        mounts = {m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        assert "/tmp" in mounts


@pytest.mark.parametrize("preset", list(PRESETS))
def test_operator_cli_accepts_the_rendered_arguments(preset: str) -> None:
    """The StatefulSet's args parse with the real `hnav operator run` command (flag names, types,
    and the namespace options' mutual exclusion), so a typo cannot ship."""
    import typer

    from healthnav.operator.cli import app

    container = operator_container(render(preset))
    assert container["command"] == ["hnav"]
    args = [a.replace("$(POD_INDEX)", "1") for a in container["args"]]
    assert args[:2] == ["operator", "run"]
    run = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    ctx = run.make_context("run", args[2:])
    params = ctx.params
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert params["liveness"].endswith(f":{ports['health']}/healthz")
    assert params["metrics_port"] == ports["metrics"]
    values_namespaces = {"default": [], "kind": ["default"], "eks": ["healthnav"], "gke": ["healthnav"]}
    values_namespaces["local"] = ["healthnav"]
    assert (params["namespace"] or []) == values_namespaces[preset]
    assert params["all_namespaces"] is (not values_namespaces[preset])


@pytest.mark.parametrize("preset", list(PRESETS))
def test_env_is_what_operator_settings_read(preset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every HEALTHNAV_* variable the chart sets is a field of OperatorSettings and parses (JSON
    lists and maps included) into the value the preset intended."""
    import yaml

    from healthnav.operator.settings import OperatorSettings

    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in PRESETS[preset]:
        _deep_merge(values, yaml.safe_load(path.read_text()))
    env = plain_env(operator_container(render(preset)))
    fields = set(OperatorSettings.model_fields)
    for name in env:
        if name.startswith("HEALTHNAV_"):
            assert name.removeprefix("HEALTHNAV_").lower() in fields, f"{name} is not an operator setting"
    for key in [k for k in os.environ if k.startswith("HEALTHNAV_")]:
        monkeypatch.delenv(key)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    trainer = values["trainer"]
    assert settings.trainer_image == trainer["image"]
    assert settings.serving_image == values["serving"]["image"]
    assert settings.ray_version == values["serving"]["rayVersion"]
    assert settings.default_tolerations == trainer["defaultTolerations"]
    assert settings.default_node_selector == trainer["defaultNodeSelector"]
    assert settings.gpu_type_labels == trainer["gpuTypeLabels"]
    assert settings.run_as_user == trainer["runAsUser"]
    assert settings.ttl_seconds_after_finished == trainer["ttlSecondsAfterFinished"]
    assert settings.default_output_uri == (values["storage"]["defaultOutputUri"] or None)
    assert settings.s3_endpoint_url == (values["storage"]["s3EndpointUrl"] or None)
    # The operator's own boto3 reads use the same endpoint as the training pods.
    assert env.get("AWS_ENDPOINT_URL_S3") == (values["storage"]["s3EndpointUrl"] or None)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def _rules(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> list[dict[str, Any]]:
    return [
        rule
        for d in by_kind(docs, kind)
        if d["metadata"]["name"].endswith(name_suffix)
        for rule in d.get("rules", [])
    ]


@pytest.mark.parametrize(
    "values",
    [{}, {"rbac.scope": "namespace", "watchNamespaces[0]": "team-a"}],
    ids=["cluster", "namespace"],
)
def test_operator_holds_every_permission_it_grants_trainers(values: dict[str, str]) -> None:
    """Kubernetes refuses to let a subject create a Role granting more than it holds (escalation
    prevention): the chart's rules must cover the trainer Role the operator's code builds."""
    from healthnav.operator.finetunejob_manifests import progress_role

    docs = render(values=values)
    rules = _rules(docs, "ClusterRole") + _rules(docs, "Role")
    ftj = {"metadata": {"name": "triage-v3", "namespace": "team-a", "uid": "u"}}
    trainer_role = progress_role(ftj)
    for rule in trainer_role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [None]:
                        assert rule_allows(rules, group, resource, verb, name), (group, resource, verb)


# What the operator's code does (operator/finetunejob_*.py, kube.py) - and nothing else.
EXPECTED_NAMESPACED = {
    ("healthnav.io", "finetunejobs"): {"get", "list", "watch"},
    ("healthnav.io", "finetunejobs/status"): {"patch"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch"},
    ("", "pods"): {"list", "watch"},
    ("", "configmaps"): {"get", "list", "watch", "create", "patch", "update"},
    ("", "serviceaccounts"): {"get", "create"},
    ("rbac.authorization.k8s.io", "roles"): {"get", "create"},
    ("rbac.authorization.k8s.io", "rolebindings"): {"get", "create"},
    ("", "events"): {"create"},
    ("healthnav.io", "modelserves"): {"get", "list", "watch"},
    ("healthnav.io", "modelserves/status"): {"patch"},
    ("ray.io", "rayservices"): {"get", "list", "watch", "create", "patch"},
}


def _grants(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert "resourceNames" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_cluster_scope_rbac_is_exactly_what_the_operator_uses() -> None:
    docs = render()
    namespaced = _grants(
        next(d for d in by_kind(docs, "ClusterRole") if d["metadata"]["name"] == "hn-healthnav")["rules"]
    )
    assert namespaced == EXPECTED_NAMESPACED
    cluster = _grants(
        one(
            [d for d in by_kind(docs, "ClusterRole") if d["metadata"]["name"].endswith("-cluster")],
            "ClusterRole",
        )["rules"]
    )
    assert cluster == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
        ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
    }
    all_rules = [r for d in by_kind(docs, "ClusterRole") for r in d["rules"]]
    for rule in all_rules:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
    for verb in ("get", "list", "watch"):
        assert not rule_allows(all_rules, "", "secrets", verb, None)
    assert not rule_allows(all_rules, "", "pods", "create", None)
    assert not rule_allows(all_rules, "rbac.authorization.k8s.io", "roles", "escalate", None)
    assert not rule_allows(all_rules, "rbac.authorization.k8s.io", "roles", "bind", None)


def test_without_modelserve_no_ray_permissions() -> None:
    docs = render(values={"rbac.modelServe": "false"})
    rules = _rules(docs, "ClusterRole")
    assert not rule_allows(rules, "ray.io", "rayservices", "get", None)
    assert not rule_allows(rules, "healthnav.io", "modelserves", "list", None)
    assert rule_allows(rules, "healthnav.io", "finetunejobs", "list", None)


def test_namespace_scope_creates_nothing_cluster_scoped() -> None:
    docs = render(
        values={"rbac.scope": "namespace", "watchNamespaces[0]": "team-a", "watchNamespaces[1]": "team-b"}
    )
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert _grants([r for r in roles[0]["rules"] if r["apiGroups"] != ["kopf.dev"]]) == EXPECTED_NAMESPACED
    peerings = by_kind(docs, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    args = operator_container(docs)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args and "--all-namespaces" not in args


def test_cluster_scope_with_namespaces_binds_only_there() -> None:
    docs = render(values={"watchNamespaces[0]": "team-a"})
    bindings = by_kind(docs, "RoleBinding")
    assert [b["metadata"]["namespace"] for b in bindings] == ["team-a"]
    assert bindings[0]["roleRef"]["kind"] == "ClusterRole"
    crbs = by_kind(docs, "ClusterRoleBinding")
    assert [b["roleRef"]["name"] for b in crbs] == ["hn-healthnav-cluster"]
    cluster = next(d for d in by_kind(docs, "ClusterRole") if d["metadata"]["name"].endswith("-cluster"))
    # kopf follows the watched namespaces (list/watch); nothing else cluster-wide.
    assert _grants(cluster["rules"]) == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
        ("", "namespaces"): {"list", "watch"},
    }


def test_replicas_get_distinct_peering_priorities() -> None:
    """kopf pauses every replica that shares the top priority: each replica's ordinal is its
    priority, and the peering object the replicas patch is created by the chart."""
    docs = render()
    sts = one(docs, "StatefulSet")
    assert sts["spec"]["replicas"] == 2
    container = operator_container(docs)
    assert "--priority=$(POD_INDEX)" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert (
        env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    peering = one(docs, "ClusterKopfPeering")
    assert f"--peering={peering['metadata']['name']}" in container["args"]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]


def test_kind_preset_runs_standalone_without_gpu_defaults() -> None:
    docs = render("kind")
    container = operator_container(docs)
    assert "--standalone" in container["args"]
    assert not by_kind(docs, "PodDisruptionBudget") and not by_kind(docs, "KopfPeering")
    assert container["envFrom"] == [{"secretRef": {"name": "minio-creds"}}]
    assert plain_env(container)["HEALTHNAV_DEFAULT_TOLERATIONS"] == "[]"


@pytest.mark.parametrize("preset", ["eks", "gke"])
def test_cloud_presets_carry_workload_identity(preset: str) -> None:
    docs = render(preset)
    key = {"eks": "eks.amazonaws.com/role-arn", "gke": "iam.gke.io/gcp-service-account"}[preset]
    accounts = {
        (d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in by_kind(docs, "ServiceAccount")
    }
    assert key in accounts[("healthnav-system", "hn-healthnav")]["metadata"]["annotations"]
    assert key in accounts[("healthnav", "healthnav-trainer")]["metadata"]["annotations"]
    assert key in accounts[("healthnav", "healthnav-serving")]["metadata"]["annotations"]
    tolerations = plain_env(operator_container(docs))["HEALTHNAV_DEFAULT_TOLERATIONS"]
    assert "nvidia.com/gpu" in tolerations


def test_service_monitor_selects_the_metrics_service() -> None:
    docs = render(values={"metrics.serviceMonitor.enabled": "true"})
    monitor = one(docs, "ServiceMonitor")
    service = next(d for d in by_kind(docs, "Service") if d["metadata"]["name"].endswith("-metrics"))
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "a" * 64
    container = operator_container(render(values={"image.digest": digest}))
    assert container["image"] == f"ghcr.io/healthnav/operator@{digest}"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rbac.scope": "everything"}, "/rbac/scope"),
        ({"replicaCount": "0"}, "/replicaCount"),
        ({"storage.defaultOutputUri": "http://169.254.169.254/"}, "/storage/defaultOutputUri"),
        ({"watchNamespaces[0]": "Bad_NS"}, "/watchNamespaces/0"),
        ({"trainer.defaultTolerations[0].operator": "Sometimes"}, "/trainer/defaultTolerations/0/operator"),
        ({"storge.region": "x"}, "storge"),
        ({"image.digest": "latest"}, "/image/digest"),
        ({"rbac.scope": "namespace"}, "rbac.scope=namespace needs watchNamespaces"),
        ({"operator.peering.enabled": "false"}, "replicaCount > 1 needs operator.peering.enabled"),
        ({"trainer.serviceAccount.create": "true"}, "trainer.serviceAccount.create needs watchNamespaces"),
        ({"serving.serviceAccount.create": "true"}, "serving.serviceAccount.create needs watchNamespaces"),
    ],
)
def test_bad_values_fail_naming_the_key(values: dict[str, str], message: str) -> None:
    proc = helm(*template_args(values=values), check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
