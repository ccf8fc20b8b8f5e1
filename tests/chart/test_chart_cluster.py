"""The chart against a real API server (the local control plane): every rendered object passes
server-side validation, `helm install` succeeds, and the operator - running with the chart's
ServiceAccount's own token and exactly the StatefulSet's args and env - reconciles a
FineTuneJob end to end (RBAC sufficient) while that identity is refused what it should never do
(RBAC not excessive)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from chart_helpers import (
    CHART,
    PRESETS,
    by_kind,
    helm,
    one,
    plain_env,
    render,
    set_args,
)

from healthnav.devenv.cluster import kubectl_path
from healthnav.devenv.processes import free_port

pytestmark = pytest.mark.cluster

T = TypeVar("T")


def uid() -> str:
    return uuid.uuid4().hex[:6]


def kubectl(
    cluster: Any, *args: str, stdin: str | None = None, check: bool = True, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [kubectl_path(), f"--kubeconfig={kubeconfig or cluster.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}{proc.stdout}")
    return proc


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def to_yaml(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def apply_crds(cluster: Any, docs: list[dict[str, Any]]) -> None:
    """CRDs are applied for real (a CR cannot be dry-run before its kind exists)."""
    crds = by_kind(docs, "CustomResourceDefinition")
    kubectl(
        cluster,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=chart-tests",
        "-f",
        "-",
        stdin=to_yaml(crds),
    )
    names = [f"crd/{c['metadata']['name']}" for c in crds]
    kubectl(cluster, "wait", "--for=condition=Established", "--timeout=30s", *names)


def create_namespace(cluster: Any, name: str, labels: dict[str, str] | None = None) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
    kubectl(cluster, "apply", "-f", "-", stdin=to_yaml([ns]))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_rendered_object_passes_server_side_validation(cluster: Any, preset: str) -> None:
    """`kubectl apply --dry-run=server --validate=strict`: the API server's own OpenAPI schemas,
    unknown fields rejected, admission run - exact, offline, for each preset."""
    suffix = uid()
    release_ns, watched = f"hn-sys-{suffix}", f"hn-watch-{suffix}"
    values = {"watchNamespaces[0]": watched} if preset != "default" else {}
    docs = render(preset, release=f"r{suffix}", namespace=release_ns, values=values, include_crds=True)
    apply_crds(cluster, docs)
    create_namespace(cluster, release_ns)
    create_namespace(cluster, watched)
    rest = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    proc = kubectl(
        cluster,
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        stdin=to_yaml(rest),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
    assert proc.stdout.count("(server dry run)") == len(rest)


def test_operator_pod_is_admitted_under_restricted_pod_security(cluster: Any) -> None:
    """The namespace enforces Pod Security "restricted": the API server's PodSecurity admission
    admits the chart's pod; the same pod without `capabilities.drop: [ALL]` is refused (so the
    check is live, not vacuous)."""
    ns = f"hn-restricted-{uid()}"
    create_namespace(
        cluster,
        ns,
        {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        },
    )
    sts = one(render(namespace=ns), "StatefulSet")
    template = sts["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "operator-probe", "namespace": ns, "labels": template["metadata"]["labels"]},
        "spec": {**template["spec"], "serviceAccountName": "default"},
    }
    proc = kubectl(cluster, "apply", "--dry-run=server", "-f", "-", stdin=to_yaml([pod]), check=False)
    assert proc.returncode == 0, proc.stderr
    del pod["spec"]["containers"][0]["securityContext"]["capabilities"]
    proc = kubectl(cluster, "apply", "--dry-run=server", "-f", "-", stdin=to_yaml([pod]), check=False)
    assert proc.returncode != 0 and "restricted" in proc.stderr


# --- helm install and the operator under the chart's identity ----------------------------------


class Release:
    """An installed release: its namespaces, ServiceAccount and a kubeconfig holding that
    account's own token (what the operator's pod gets in-cluster)."""

    def __init__(self, cluster: Any, name: str, namespace: str, watched: list[str], kubeconfig: Path) -> None:
        self.cluster, self.name, self.namespace, self.watched = cluster, name, namespace, watched
        self.kubeconfig = kubeconfig

    @property
    def fullname(self) -> str:
        return f"{self.name}-healthnav"

    @property
    def subject(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"

    def can_i(self, *args: str) -> bool:
        """Ask the API server's authorizer as the ServiceAccount itself (its token, not --as)."""
        proc = kubectl(self.cluster, "auth", "can-i", *args, check=False, kubeconfig=self.kubeconfig)
        assert proc.stdout.strip() in ("yes", "no"), proc.stderr
        return proc.stdout.strip() == "yes"


def install(cluster: Any, tmp_path: Path, values: dict[str, str], watched: list[str]) -> Release:
    suffix = uid()
    name, namespace = f"hn{suffix}", f"hn-sys-{suffix}"
    for ns in watched:
        create_namespace(cluster, ns)
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "HELM_CACHE_HOME": str(tmp_path / "helm"),
        "HELM_CONFIG_HOME": str(tmp_path / "helm"),
        "HELM_DATA_HOME": str(tmp_path / "helm"),
    }
    helm(
        "install",
        name,
        str(CHART),
        "--namespace",
        namespace,
        "--create-namespace",
        "--wait",
        "--timeout",
        "120s",
        *set_args(values),
        env=env,
    )
    status = json.loads(helm("status", name, "-n", namespace, "-o", "json", env=env).stdout)
    assert status["info"]["status"] == "deployed"
    assert f"statefulset/{name}-healthnav" in status["info"]["notes"]  # NOTES.txt rendered for users
    token = kubectl(
        cluster, "create", "token", f"{name}-healthnav", "-n", namespace, "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    sa_config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [
            {"name": "operator", "context": {"cluster": admin["clusters"][0]["name"], "user": "operator"}}
        ],
        "current-context": "operator",
    }
    kubeconfig = tmp_path / f"{name}.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(sa_config))
    kubeconfig.chmod(0o600)
    return Release(cluster, name, namespace, watched, kubeconfig)


@pytest.fixture(scope="module")
def release(cluster: Any, tmp_path_factory: pytest.TempPathFactory, s3: Any) -> Release:
    """The chart installed with cluster-scope RBAC bound in one watched namespace, peering on."""
    watched = f"hn-team-{uid()}"
    tmp = tmp_path_factory.mktemp("release")
    return install(
        cluster,
        tmp,
        {"watchNamespaces[0]": watched, "storage.s3EndpointUrl": s3.env["AWS_ENDPOINT_URL_S3"]},
        [watched],
    )


class ChartOperator:
    """`hnav operator run` with the installed StatefulSet's command, args and env, as the
    ServiceAccount: only ports are moved to free local ones."""

    def __init__(self, rel: Release, log_path: Path, extra_env: dict[str, str]) -> None:
        sts = json.loads(
            kubectl(rel.cluster, "get", "statefulset", rel.fullname, "-n", rel.namespace, "-o", "json").stdout
        )
        container = sts["spec"]["template"]["spec"]["containers"][0]
        self.health_port, self.metrics_port = free_port(), free_port()
        args = []
        for arg in container["args"]:
            if arg.startswith("--liveness="):
                arg = f"--liveness=http://127.0.0.1:{self.health_port}/healthz"
            elif arg.startswith("--metrics-port="):
                arg = f"--metrics-port={self.metrics_port}"
            args.append(arg.replace("$(POD_INDEX)", "1"))
        args.append("--metrics-address=127.0.0.1")
        assert container["command"] == ["hnav"]
        self.argv = [sys.executable, "-m", "healthnav.cli", *args]
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            **plain_env(container),
            "POD_ID": f"{rel.fullname}-1",
            "KUBECONFIG": str(rel.kubeconfig),
            **extra_env,
        }
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ChartOperator:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd="/", start_new_session=True
            )

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1).read()
                return True
            except OSError:
                return False

        wait_for(healthy, 60, "the operator's /healthz")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def chart_operator(release: Release, tmp_path: Path, s3: Any) -> Iterator[ChartOperator]:
    # AWS_* from the test S3 server stand in for storage.credentialsSecret (envFrom).
    creds = {k: v for k, v in s3.env.items() if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    op = ChartOperator(release, tmp_path / "operator.log", creds).start()
    yield op
    op.stop()


def test_helm_install_creates_a_ready_operator_statefulset(release: Release) -> None:
    sts = json.loads(
        kubectl(
            release.cluster, "get", "statefulset", release.fullname, "-n", release.namespace, "-o", "json"
        ).stdout
    )
    assert sts["status"].get("readyReplicas") == 2
    pods = json.loads(
        kubectl(
            release.cluster,
            "get",
            "pods",
            "-n",
            release.namespace,
            "-l",
            "app.kubernetes.io/component=operator",
            "-o",
            "json",
        ).stdout
    )["items"]
    # The downward API source of each replica's peering priority exists on every pod.
    assert sorted(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"] for p in pods) == ["0", "1"]
    peering = json.loads(
        kubectl(
            release.cluster,
            "get",
            "kopfpeerings.kopf.dev",
            release.fullname,
            "-n",
            release.watched[0],
            "-o",
            "json",
        ).stdout
    )
    assert peering["kind"] == "KopfPeering"


def test_operator_as_the_chart_service_account_reconciles_a_finetunejob(
    release: Release, chart_operator: ChartOperator, s3_bucket: str
) -> None:
    from healthnav.contracts import storage

    ns, name = release.watched[0], f"ftj-{uid()}"
    run_output = f"s3://{s3_bucket}/finetunes/{ns}/{name}/"
    # What the trainer writes at the end (kwok stands in for the GPU pod); the operator reads it
    # with the chart's S3 settings.
    storage.write_text(run_output + "metrics.json", json.dumps({"trainLoss": 0.8, "steps": 10}))
    ftj = {
        "apiVersion": "healthnav.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "baseModel": {"uri": "s3://models/biomistral-7b/"},
            "dataset": {"uri": "s3://data/datasets/triage/v3/"},
            "method": "qlora",
            "resources": {"gpus": 1, "gpuType": "nvidia-l4", "cpu": "8", "memory": "32Gi"},
            "output": {"uri": f"s3://{s3_bucket}/finetunes/"},
        },
    }
    kubectl(release.cluster, "apply", "-f", "-", stdin=to_yaml([ftj]))

    def get(kind: str, obj: str) -> dict[str, Any] | None:
        proc = kubectl(release.cluster, "get", kind, obj, "-n", ns, "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def succeeded() -> dict[str, Any] | None:
        current = get("finetunejob", name)
        return current if current and (current.get("status") or {}).get("phase") == "Succeeded" else None

    try:
        done = wait_for(succeeded, 90, "FineTuneJob Succeeded")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nstatus: {(get('finetunejob', name) or {}).get('status')}\n"
            f"operator log:\n{chart_operator.log()[-4000:]}"
        ) from None
    job = get("job", name)
    assert job is not None and job["metadata"]["ownerReferences"][0]["name"] == name
    # Everything the operator creates per job, created under the chart's RBAC.
    assert get("serviceaccount", f"{name}-trainer") and get("role", f"{name}-progress")
    assert get("rolebinding", f"{name}-progress") and get("configmap", f"{name}-config")
    assert done["status"]["output"]["metrics"]
    events = json.loads(
        kubectl(
            release.cluster,
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            f"involvedObject.name={name}",
            "-o",
            "json",
        ).stdout
    )["items"]
    assert any(e.get("reportingComponent") == "healthnav-operator" for e in events), "no Event was posted"
    # The active replica's keep-alive landed in the chart's peering object.
    peering = json.loads(
        kubectl(
            release.cluster, "get", "kopfpeerings.kopf.dev", release.fullname, "-n", ns, "-o", "json"
        ).stdout
    )
    assert f"{release.fullname}-1" in (peering.get("status") or {})
    # No request of the operator was refused: the chart grants all it uses.
    log = chart_operator.log()
    assert "Forbidden" not in log and "status=403" not in log, log[-4000:]
    # Nor did any reconcile fail and retry (e.g. a RoleBinding sent before its Role exists,
    # which the API server answers 404 for a subject that is not cluster-admin).
    assert "reconcile of" not in log, log[-4000:]


@pytest.fixture
def kuberay_crds(cluster: Any) -> list[str]:
    """KubeRay's RayService/RayCluster CRDs (its controller is not needed to see the operator act)."""
    from healthnav.devenv.kuberay import install_crds

    return install_crds(cluster.api_client())


def test_operator_as_the_chart_service_account_reconciles_a_modelserve(
    release: Release, kuberay_crds: list[str], chart_operator: ChartOperator, s3_bucket: str
) -> None:
    """ModelServe → RayService (server-side apply creates it: needs create and patch), status
    written, Events posted - under the chart's RBAC."""
    ns, name = release.watched[0], f"ms-{uid()}"
    ms = {
        "apiVersion": "healthnav.io/v1alpha1",
        "kind": "ModelServe",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "baseModel": {"uri": f"s3://{s3_bucket}/models/tiny/"},
            "adapters": [{"name": "triage", "uri": f"s3://{s3_bucket}/adapters/triage/"}],
            "engine": "transformers",
            "resources": {"gpusPerReplica": 0, "cpu": "2", "memory": "4Gi"},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
        },
    }
    kubectl(release.cluster, "apply", "-f", "-", stdin=to_yaml([ms]))

    def reconciled() -> dict[str, Any] | None:
        proc = kubectl(release.cluster, "get", "modelserve", name, "-n", ns, "-o", "json", check=False)
        current = json.loads(proc.stdout) if proc.returncode == 0 else {}
        return current if (current.get("status") or {}).get("rayServiceName") else None

    try:
        done = wait_for(reconciled, 60, "ModelServe status with its RayService")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\noperator log:\n{chart_operator.log()[-4000:]}") from None
    ray_service = json.loads(
        kubectl(
            release.cluster,
            "get",
            "rayservices.ray.io",
            done["status"]["rayServiceName"],
            "-n",
            ns,
            "-o",
            "json",
        ).stdout
    )
    assert ray_service["metadata"]["ownerReferences"][0]["name"] == name
    assert done["status"]["phase"] in ("Pending", "Deploying")  # no KubeRay controller runs here
    log = chart_operator.log()
    assert "Forbidden" not in log and "status=403" not in log, log[-4000:]


@pytest.mark.parametrize(
    "args",
    [
        ("get", "secrets", "-n", "kube-system"),
        ("list", "secrets", "-n", "{watched}"),  # the operator never reads Secrets, even where it works
        ("delete", "nodes"),
        ("create", "clusterrolebindings"),
        ("create", "pods", "-n", "{watched}"),
        ("create", "pods/exec", "-n", "{watched}"),
        ("list", "finetunejobs.healthnav.io", "-n", "default"),  # not a watched namespace
        ("create", "jobs.batch", "-n", "default"),
        ("escalate", "roles.rbac.authorization.k8s.io", "-n", "{watched}"),
        ("bind", "clusterroles.rbac.authorization.k8s.io"),
        ("update", "finetunejobs.healthnav.io", "-n", "{watched}"),  # status only, never the spec
        ("patch", "clusterkopfpeerings.kopf.dev"),  # namespaced peering in this mode
    ],
    ids=lambda a: " ".join(a).replace("{watched}", "W"),
)
def test_chart_service_account_is_refused_outside_its_role(release: Release, args: tuple[str, ...]) -> None:
    assert not release.can_i(*(a.replace("{watched}", release.watched[0]) for a in args))


def test_chart_service_account_may_do_what_the_operator_needs(release: Release) -> None:
    """The positive side of the same checks (so the refusals above are not an auth failure)."""
    w = release.watched[0]
    assert release.can_i("create", "jobs.batch", "-n", w)
    assert release.can_i("patch", "finetunejobs.healthnav.io", "--subresource=status", "-n", w)
    assert release.can_i("watch", "pods", "-n", w)
    assert release.can_i("list", "customresourcedefinitions.apiextensions.k8s.io")


@pytest.fixture(scope="module")
def ns_release(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Release:
    """The chart installed with ``rbac.scope=namespace``: nothing granted cluster-wide."""
    team = f"hn-a-{uid()}"
    return install(
        cluster,
        tmp_path_factory.mktemp("ns-release"),
        {
            "rbac.scope": "namespace",
            "watchNamespaces[0]": team,
            "replicaCount": "1",
            "podDisruptionBudget.enabled": "false",
        },
        [team],
    )


def test_namespace_scope_install_grants_only_in_watched_namespaces(cluster: Any, ns_release: Release) -> None:
    rel, team_a, team_b = ns_release, ns_release.watched[0], f"hn-b-{uid()}"
    create_namespace(cluster, team_b)
    assert rel.can_i("create", "jobs.batch", "-n", team_a)
    assert rel.can_i("patch", "kopfpeerings.kopf.dev", "-n", team_a)
    assert not rel.can_i("create", "jobs.batch", "-n", team_b)
    assert not rel.can_i("list", "finetunejobs.healthnav.io", "--all-namespaces")
    assert not rel.can_i("list", "customresourcedefinitions.apiextensions.k8s.io")
    assert not rel.can_i("patch", "clusterkopfpeerings.kopf.dev")
    assert not rel.can_i("list", "namespaces")


def test_namespace_scoped_operator_reconciles_within_seconds_of_starting(
    ns_release: Release, tmp_path: Path
) -> None:
    """Without cluster-wide permission kopf's namespace listing is refused; the operator must
    not stall in kopf's ~54 s of retries before falling back, but serve its namespace at once.
    The FineTuneJob exists before the operator starts, so its Job proves the initial listing
    and the reconcile both ran."""
    ns, name = ns_release.watched[0], f"ftj-{uid()}"
    ftj = {
        "apiVersion": "healthnav.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "baseModel": {"uri": "s3://models/biomistral-7b/"},
            "dataset": {"uri": "s3://data/datasets/triage/v3/"},
            "resources": {"gpus": 1},
            "output": {"uri": "s3://models/finetunes/"},
            "suspend": True,
        },
    }
    kubectl(ns_release.cluster, "apply", "-f", "-", stdin=to_yaml([ftj]))
    started = time.monotonic()
    op = ChartOperator(ns_release, tmp_path / "operator.log", {}).start()
    try:

        def job_exists() -> bool:
            proc = kubectl(ns_release.cluster, "get", "job", name, "-n", ns, check=False)
            return proc.returncode == 0

        # 25 s: far below kopf's 54 s of retries, generous for a busy 2-core test machine.
        try:
            wait_for(job_exists, 25, "the FineTuneJob's Job")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noperator log:\n{op.log()[-4000:]}") from None
        elapsed = time.monotonic() - started
        log = op.log()
    finally:
        op.stop()
    # an HTTP 403 anywhere (not the digits inside a timestamp or a byte count)
    forbidden = re.search(r"(?<![\d.:])403(?!\d)|Forbidden", log)
    assert "Not enough permissions" not in log and not forbidden, log[-4000:]
    assert elapsed < 25


def test_clusterwide_install_uses_a_cluster_peering(cluster: Any, tmp_path: Path) -> None:
    """Watching every namespace: ClusterKopfPeering, ClusterRoleBinding; still no Secrets."""
    rel = install(cluster, tmp_path, {"replicaCount": "1", "podDisruptionBudget.enabled": "false"}, [])
    assert rel.can_i("patch", "clusterkopfpeerings.kopf.dev")
    assert rel.can_i("list", "finetunejobs.healthnav.io", "--all-namespaces")
    assert not rel.can_i("get", "secrets", "--all-namespaces")
    kubectl(cluster, "get", "clusterkopfpeering", rel.fullname)
