"""FineTuneJob against a real control plane: the API server validates, the real Job controller
runs (kwok plays the kubelet), and the operator runs as a subprocess like in a pod."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from ftj_helpers import INVALID, manifest, valid_spec
from kube_helpers import CRDS, apply_crd, wait_for
from operator_proc import OperatorProcess

from healthnav.contracts import storage
from healthnav.contracts.errors import EXIT_CONFIG_ERROR
from healthnav.contracts.progress import TrainingProgress
from healthnav.operator.finetunejob_manifests import FTJ_LABEL
from healthnav.operator.finetunejob_spec import API_VERSION, PLURAL
from healthnav.operator.kube import Kube, KubeError
from healthnav.trainer.config import ProgressTarget
from healthnav.trainer.progress import ConfigMapProgressReporter

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def kube(cluster: Any) -> Iterator[Kube]:
    k = Kube(cluster.api_client())
    apply_crd(k, CRDS / "finetunejob.yaml")
    yield k
    k.close()


def new_namespace(kube: Kube, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


@pytest.fixture(scope="module")
def ns(kube: Kube) -> str:
    return new_namespace(kube, "ftj")


@pytest.fixture(scope="module")
def operator(
    cluster: Any, kube: Kube, ns: str, s3: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        cluster.kubeconfig,
        [ns],
        tmp_path_factory.mktemp("op") / "operator.log",
        env={"HEALTHNAV_EVALUATION_TIMEOUT_SECONDS": "120"},
    ).start()
    yield op
    op.stop()


def get_ftj(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    return kube.get(API_VERSION, PLURAL, ns, name)


def phase_is(kube: Kube, ns: str, name: str, *phases: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        ftj = get_ftj(kube, ns, name)
        return ftj if (ftj.get("status") or {}).get("phase") in phases else None

    return check


def create_ftj(kube: Kube, ns: str, name: str, **spec: Any) -> dict[str, Any]:
    return kube.create(manifest(name, ns, {**valid_spec(), **spec}))


def test_valid_finetunejob_runs_to_succeeded_with_progress_and_output(
    kube: Kube, ns: str, operator: OperatorProcess, s3_bucket: str
) -> None:
    name = "triage"
    run_output = f"s3://{s3_bucket}/ft/{ns}/{name}/"
    # What the trainer writes at the end of a run (no GPU here: kwok stands in for the pod).
    storage.write_text(
        run_output + "metrics.json", json.dumps({"trainLoss": 0.81, "evalLoss": 0.93, "steps": 200})
    )
    create_ftj(
        kube,
        ns,
        name,
        output={"uri": f"s3://{s3_bucket}/ft/"},
        podAnnotations={"healthnav.dev/fake-run-duration": "12s"},
    )

    job = wait_for(lambda: kube.get_or_none("batch/v1", "jobs", ns, name), 20, "the Job")
    pod_spec = job["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "FineTuneJob"
    cm = kube.get("v1", "configmaps", ns, f"{name}-config")
    assert f"output: {run_output}" in cm["data"]["trainer.yaml"]

    ftj = wait_for(phase_is(kube, ns, name, "Running"), 30, "Running")
    pod = kube.list("v1", "pods", ns, f"{FTJ_LABEL}={name}")[0]
    assert pod["spec"]["nodeName"].startswith("gke-l4")  # gpuType nvidia-l4 → an L4 node

    # Progress through the least-privilege path: the trainer's reporter, authenticated exactly
    # like the pod (a token for its ServiceAccount), patching only <name>-progress.
    sa = pod_spec["serviceAccountName"]
    token = kube.request(
        "POST",
        f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        },
    )["status"]["token"]
    from kubernetes import client

    cfg = client.Configuration()
    admin = kube.api.configuration
    cfg.host, cfg.ssl_ca_cert, cfg.verify_ssl = admin.host, admin.ssl_ca_cert, admin.verify_ssl
    cfg.api_key = {"authorization": f"Bearer {token}"}
    as_pod = client.ApiClient(cfg)
    reporter = ConfigMapProgressReporter(
        ProgressTarget(namespace=ns, config_map=f"{name}-progress"), api=client.CoreV1Api(as_pod)
    )
    progress = TrainingProgress.at(
        step=50, total_steps=200, epoch=0.75, loss=1.234, tokens_per_second=812.5, eta_seconds=300
    )
    assert reporter.report(progress, force=True)
    ftj = wait_for(
        lambda: (
            (get_ftj(kube, ns, name).get("status") or {}).get("progress", {}).get("step") == 50
            and get_ftj(kube, ns, name)
        ),
        15,
        "progress in status",
    )
    assert ftj["status"]["progress"]["percent"] == 25.0 and ftj["status"]["progress"]["loss"] == 1.234

    # ... and that is all the pod's identity may do.
    pod_kube = Kube(as_pod)
    for method, path, body in [
        ("PATCH", f"/api/v1/namespaces/{ns}/configmaps/{name}-config", {"data": {"x": "y"}}),
        ("GET", f"/api/v1/namespaces/{ns}/secrets", None),
        ("GET", f"/api/v1/namespaces/{ns}/pods", None),
        (
            "PATCH",
            f"/apis/{API_VERSION}/namespaces/{ns}/{PLURAL}/{name}/status",
            {"status": {"phase": "Succeeded"}},
        ),
    ]:
        with pytest.raises(KubeError) as err:
            pod_kube.request(method, path, body=body, content_type="application/merge-patch+json")
        assert err.value.status == 403, (method, path)

    ftj = wait_for(phase_is(kube, ns, name, "Succeeded", "Failed"), 60, "Succeeded")
    status = ftj["status"]
    assert status["phase"] == "Succeeded", status
    assert status["output"]["adapterUri"] == run_output + "adapter/"
    assert status["output"]["metrics"] == {"trainLoss": 0.81, "evalLoss": 0.93, "steps": 200.0}
    assert status["startTime"] and status["completionTime"] and status["jobName"] == name
    complete = next(c for c in status["conditions"] if c["type"] == "Complete")
    assert complete["status"] == "True" and complete["observedGeneration"] == 1

    def posted_reasons() -> set[str]:
        return {
            e["reason"]
            for e in kube.list("v1", "events", ns)
            if e["involvedObject"]["name"] == name and e["involvedObject"]["kind"] == "FineTuneJob"
        }

    # Events are posted after the status write, off the reconcile's path: wait for them, with a deadline.
    wanted = {"JobCreated", "Running", "Succeeded"}
    wait_for(lambda: wanted <= posted_reasons(), 20, f"events {sorted(wanted)}")

    metrics_text = operator.metrics()
    assert 'healthnav_operator_objects{kind="FineTuneJob",phase="Succeeded"}' in metrics_text
    assert "healthnav_operator_reconcile_duration_seconds_bucket" in metrics_text

    # Deleting the FineTuneJob deletes everything it owns (garbage collection via ownerReferences).
    kube.delete(API_VERSION, PLURAL, ns, name)
    wait_for(
        lambda: (
            kube.get_or_none("batch/v1", "jobs", ns, name) is None
            and kube.get_or_none("v1", "configmaps", ns, f"{name}-progress") is None
        ),
        30,
        "children deleted",
    )


def test_failing_pod_is_retried_then_failed_with_the_reason(
    kube: Kube, ns: str, operator: OperatorProcess
) -> None:
    create_ftj(
        kube,
        ns,
        "oom",
        backoffLimit=1,
        podAnnotations={
            "healthnav.dev/fake-exit-code": "1",
            "healthnav.dev/fake-termination-message": "CUDA out of memory",
        },
    )
    create_ftj(
        kube,
        ns,
        "badconfig",
        backoffLimit=2,
        podAnnotations={
            "healthnav.dev/fake-exit-code": str(EXIT_CONFIG_ERROR),
            "healthnav.dev/fake-termination-message": "dataset has no manifest.json",
        },
    )

    bad = wait_for(phase_is(kube, ns, "badconfig", "Failed"), 40, "badconfig Failed")["status"]
    # A configuration error fails at once (podFailurePolicy), it is not retried.
    assert next(c for c in bad["conditions"] if c["type"] == "Failed")["reason"] == "PodFailurePolicy"
    assert (
        bad["message"]
        == f"trainer exited with code {EXIT_CONFIG_ERROR} (Error): dataset has no manifest.json"
    )
    assert len(kube.list("v1", "pods", ns, f"{FTJ_LABEL}=badconfig")) == 1

    oom = wait_for(phase_is(kube, ns, "oom", "Failed"), 90, "oom Failed")["status"]
    assert next(c for c in oom["conditions"] if c["type"] == "Failed")["reason"] == "BackoffLimitExceeded"
    assert "CUDA out of memory" in oom["message"] and oom["failedAttempts"] == 2
    assert len(kube.list("v1", "pods", ns, f"{FTJ_LABEL}=oom")) == 2


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_api_server_rejects_invalid_manifest_naming_the_field(kube: Kube, ns: str, case: Any) -> None:
    body = case.build(f"bad-{case.id}"[:50] if case.in_spec else "x", ns)
    with pytest.raises(KubeError) as err:
        kube.request(
            "POST",
            f"/apis/{API_VERSION}/namespaces/{ns}/{PLURAL}",
            body=body,
            query={"fieldValidation": "Strict"},
        )
    assert err.value.status in (400, 422), err.value
    message = err.value.body.get("message", "")
    assert case.field in message, f"{case.id}: {message}"


def test_spec_is_immutable_except_suspend(kube: Kube, ns: str) -> None:
    create_ftj(kube, ns, "immutable", suspend=True)

    def patch(spec: dict[str, Any]) -> dict[str, Any]:
        return kube.merge_patch(API_VERSION, PLURAL, ns, "immutable", {"spec": spec})

    for change, field in [
        ({"training": {"epochs": 5}}, "spec.training"),
        ({"baseModel": {"uri": "s3://models/other/"}}, "spec.baseModel"),
        ({"queueName": "late"}, "spec.queueName"),
        ({"resources": {"gpus": 2}}, "spec.resources"),
    ]:
        with pytest.raises(KubeError) as err:
            patch(change)
        assert err.value.status == 422 and field in err.value.body["message"], err.value.body["message"]
    assert patch({"suspend": False})["spec"]["suspend"] is False


def test_unschedulable_gpu_type_is_a_condition(kube: Kube, ns: str, operator: OperatorProcess) -> None:
    create_ftj(kube, ns, "nogpu", resources={"gpus": 1, "gpuType": "nvidia-h100"})
    ftj = wait_for(
        lambda: next(
            (
                c
                for c in (get_ftj(kube, ns, "nogpu").get("status") or {}).get("conditions", [])
                if c["type"] == "Schedulable" and c["status"] == "False"
            ),
            None,
        ),
        30,
        "Schedulable=False",
    )
    assert ftj["reason"] == "Unschedulable" and "node" in ftj["message"]
    assert get_ftj(kube, ns, "nogpu")["status"]["phase"] == "Pending"


def test_suspend_resume_and_job_deleted_behind_the_operators_back(
    kube: Kube, ns: str, operator: OperatorProcess
) -> None:
    name = "pausable"
    create_ftj(kube, ns, name, podAnnotations={"healthnav.dev/fake-run-duration": "300s"})
    wait_for(phase_is(kube, ns, name, "Running"), 30, "Running")
    kube.merge_patch(API_VERSION, PLURAL, ns, name, {"spec": {"suspend": True}})
    wait_for(phase_is(kube, ns, name, "Suspended"), 20, "Suspended")
    assert kube.get("batch/v1", "jobs", ns, name)["spec"]["suspend"] is True
    kube.merge_patch(API_VERSION, PLURAL, ns, name, {"spec": {"suspend": False}})
    wait_for(phase_is(kube, ns, name, "Running"), 30, "Running again")

    uid = kube.get("batch/v1", "jobs", ns, name)["metadata"]["uid"]
    kube.delete("batch/v1", "jobs", ns, name)
    job = wait_for(
        lambda: (
            (j := kube.get_or_none("batch/v1", "jobs", ns, name))
            and j["metadata"]["uid"] != uid
            and not j["metadata"].get("deletionTimestamp")
            and j
        ),
        30,
        "Job recreated",
    )
    assert job["metadata"]["ownerReferences"][0]["name"] == name
    cond = wait_for(
        lambda: next(
            (
                c
                for c in get_ftj(kube, ns, name)["status"]["conditions"]
                if c["type"] == "JobCreated" and c["reason"] == "JobRecreated"
            ),
            None,
        ),
        20,
        "JobRecreated condition",
    )
    assert cond["status"] == "True"
    kube.delete(API_VERSION, PLURAL, ns, name)


def _jobs_by_ftj(kube: Kube, ns: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for job in kube.list("batch/v1", "jobs", ns, FTJ_LABEL):
        out.setdefault(job["metadata"]["labels"][FTJ_LABEL], []).append(job["metadata"]["uid"])
    return out


def test_operator_killed_and_restarted_mid_flight(cluster: Any, kube: Kube, tmp_path: Path, s3: Any) -> None:
    ns = new_namespace(kube, "restart")
    op = OperatorProcess(cluster.kubeconfig, [ns], tmp_path / "op.log").start()
    names = [f"r{i}" for i in range(8)]
    try:
        for name in names:
            create_ftj(kube, ns, name, podAnnotations={"healthnav.dev/fake-run-duration": "6s"})
        time.sleep(0.3)  # some Jobs created, some not yet: kill it in the middle
        op.kill()
        before = _jobs_by_ftj(kube, ns)
        op.start()
        wait_for(
            lambda: all(
                (get_ftj(kube, ns, n).get("status") or {}).get("phase") == "Succeeded" for n in names
            ),
            90,
            "all Succeeded",
        )
        after = _jobs_by_ftj(kube, ns)
        assert sorted(after) == names and all(len(uids) == 1 for uids in after.values()), after
        assert all(after[n] == uids for n, uids in before.items())  # the same Jobs, not replacements
        for n in names:
            assert len(kube.list("v1", "pods", ns, f"{FTJ_LABEL}={n}")) == 1
            assert get_ftj(kube, ns, n)["status"]["jobName"] == n
    finally:
        op.stop()


@pytest.mark.slow
def test_100_finetunejobs_at_once_all_get_a_job(cluster: Any, kube: Kube, tmp_path: Path, s3: Any) -> None:
    ns = new_namespace(kube, "burst")
    op = OperatorProcess(cluster.kubeconfig, [ns], tmp_path / "op.log").start()
    names = [f"b{i:03d}" for i in range(100)]
    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda n: create_ftj(kube, ns, n, suspend=True), names))
        wait_for(lambda: len(_jobs_by_ftj(kube, ns)) == 100, 120, "100 Jobs", interval=1)
        wait_for(
            lambda: all(
                (f.get("status") or {}).get("phase") == "Suspended"
                for f in kube.list(API_VERSION, PLURAL, ns)
            ),
            120,
            "100 statuses",
            interval=1,
        )
        assert all(len(v) == 1 for v in _jobs_by_ftj(kube, ns).values())
    finally:
        op.stop()
