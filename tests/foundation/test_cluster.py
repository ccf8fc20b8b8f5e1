"""The local control plane is a real cluster: scheduling onto GPU nodes, Jobs completing and failing."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from kubernetes import client

from healthnav.devenv import processes
from healthnav.devenv.cluster import LocalCluster, kubectl_path

pytestmark = pytest.mark.cluster


def _gpu_job(name: str, annotations: dict[str, str] | None = None, backoff: int = 0) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "healthnav/trainer:test",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                },
            },
        },
    }


def _wait_job(batch: client.BatchV1Api, ns: str, name: str, timeout: float = 60) -> client.V1Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = batch.read_namespaced_job(name, ns)
        if any(c.type in ("Complete", "Failed") and c.status == "True" for c in job.status.conditions or []):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {name} did not finish in {timeout} s")


def _namespace(core: client.CoreV1Api, name: str) -> str:
    core.create_namespace({"metadata": {"name": name}})
    return name


def test_gpu_job_is_scheduled_on_a_gpu_node_and_completes(cluster: LocalCluster) -> None:
    api = cluster.api_client()
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    ns = _namespace(core, "gpu-ok")
    batch.create_namespaced_job(ns, _gpu_job("train"))
    job = _wait_job(batch, ns, "train")
    assert job.status.succeeded == 1
    assert any(c.type == "Complete" and c.status == "True" for c in job.status.conditions)
    (pod,) = core.list_namespaced_pod(ns, label_selector="job-name=train").items
    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels["cloud.google.com/gke-accelerator"] == "nvidia-l4"
    assert node.status.allocatable["nvidia.com/gpu"] == "4"
    assert pod.status.phase == "Succeeded"


def test_failing_pod_reports_exit_code_and_message_and_job_fails(cluster: LocalCluster) -> None:
    api = cluster.api_client()
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    ns = _namespace(core, "gpu-fail")
    ann = {
        "healthnav.dev/fake-exit-code": "78",
        "healthnav.dev/fake-termination-message": "bad config: training.epochs",
    }
    batch.create_namespaced_job(ns, _gpu_job("broken", ann, backoff=1))
    job = _wait_job(batch, ns, "broken")
    assert job.status.failed == 2  # the first try and one retry
    assert any(c.type == "Failed" and c.reason == "BackoffLimitExceeded" for c in job.status.conditions)
    pods = core.list_namespaced_pod(ns, label_selector="job-name=broken").items
    terminated = pods[0].status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.message) == (78, "bad config: training.epochs")


def test_pod_without_gpu_toleration_stays_unscheduled(cluster: LocalCluster) -> None:
    """GKE's GPU taint is modelled: forgetting the toleration is visible as FailedScheduling."""
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    ns = _namespace(core, "gpu-taint")
    job = _gpu_job("untolerated")
    job["spec"]["template"]["spec"]["tolerations"] = []
    client.BatchV1Api(api).create_namespaced_job(ns, job)
    deadline = time.monotonic() + 30
    reason = None
    while time.monotonic() < deadline and reason is None:
        for pod in core.list_namespaced_pod(ns).items:
            for cond in pod.status.conditions or []:
                if cond.type == "PodScheduled" and cond.status == "False":
                    reason = cond.reason
        time.sleep(0.5)
    assert reason == "Unschedulable"


def test_kubectl_shows_gpu_nodes_with_allocatable_gpus(cluster: LocalCluster) -> None:
    out = subprocess.run(
        [kubectl_path(), "--kubeconfig", str(cluster.kubeconfig), "get", "nodes", "-o", "wide"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "gke-l4-pool-0" in out and "nvidia.com/gpu: 4 (NVIDIA-L4)" in out
    assert "eks-a10g-0" in out and "nvidia.com/gpu: 4 (NVIDIA-A10G)" in out


def test_second_cluster_runs_beside_the_first_and_down_leaves_nothing(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    other = LocalCluster("side-by-side", tmp_path / "other", tie_to_parent=True).up()
    state = other._load_state()
    assert set(state.ports.values()).isdisjoint(cluster._load_state().ports.values())
    assert client.CoreV1Api(other.api_client()).list_node().items
    other.down()
    assert not any(processes.alive(pid) for pid in state.pids.values())
    assert not any(processes.port_open(port) for port in state.ports.values())
    assert not (tmp_path / "other").exists()
    # the first cluster is untouched
    assert client.CoreV1Api(cluster.api_client()).list_node().items
