"""The chart-installed operator runs as a pod, and FineTuneJobs train in real pods on the real node.

What these prove that the kwok-backed tests cannot: the images start, the chart's RBAC and probes
work, the trainer image downloads its dataset and base model from S3, trains, reports progress
through its ConfigMap into ``kubectl get ftj``, writes its outputs to S3, resumes from a
checkpoint in a replacement pod, and fails fast with its own message on a configuration error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from kube_helpers import wait_for

from healthnav.devenv.node import NODE_NAME

from .e2e_helpers import (
    E2E,
    NAMESPACE,
    OPERATOR_NAMESPACE,
    finetunejob,
    staged_base_model,
    staged_dataset,
    unique,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _ftj(e2e: E2E, name: str) -> dict[str, Any]:
    return e2e.get("ftj", name, "-n", NAMESPACE)


def _trainer_pods(e2e: E2E, name: str) -> list[dict[str, Any]]:
    return e2e.pods(NAMESPACE, f"healthnav.io/finetunejob={name}")


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def test_the_chart_runs_the_operator_as_a_ready_pod_under_its_service_account(
    e2e: E2E, operator_release: dict[str, Any]
) -> None:
    pod = operator_release
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert pod["spec"]["serviceAccountName"] == "healthnav"
    assert pod["spec"]["containers"][0]["image"] == "ghcr.io/healthnav/operator:0.1.0"
    ready = _condition(pod, "Ready")
    assert ready and ready["status"] == "True"
    probes = pod["spec"]["containers"][0]
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Ready through its probes, and running the operator: kopf logs each of its startup handlers
    # (operator/finetunejob_handlers.py, operator/modelserve_handlers.py) once it has succeeded.
    logs = e2e.kubectl("logs", "-n", OPERATOR_NAMESPACE, pod["metadata"]["name"])
    assert "Activity '_startup' succeeded." in logs, logs[-2000:]
    assert "Activity '_ms_startup' succeeded." in logs, logs[-2000:]


@pytest.fixture(scope="module")
def staged(e2e: E2E, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    work = tmp_path_factory.mktemp("e2e-data")
    return staged_base_model(work), staged_dataset(work)


def test_a_finetunejob_trains_in_a_real_pod_reporting_progress_until_succeeded(
    e2e: E2E, operator_release: dict[str, Any], staged: tuple[str, str]
) -> None:
    base, dataset = staged
    name = unique("train")
    started = time.monotonic()
    # The trainer patches progress at most every 10 s (and once at the end), so the run must
    # outlast that window for an intermediate step to be visible: the tiny model runs ~35 steps
    # a second here, 1200 steps about half a minute (longer on a slower or busier machine).
    e2e.apply(
        finetunejob(name, base, dataset, max_steps=1200, checkpoint_every_steps=400, gates={"rougeL": 0.0})
    )
    seen: list[tuple[int, float | None]] = []

    def finished() -> str | None:
        status = _ftj(e2e, name).get("status", {})
        progress = status.get("progress") or {}
        if progress.get("step") is not None and (not seen or seen[-1][0] != progress["step"]):
            seen.append((progress["step"], progress.get("loss")))
        return status.get("phase") if status.get("phase") in ("Succeeded", "Failed") else None

    phase = wait_for(finished, timeout=900, what=f"FineTuneJob {name} to finish", interval=1.0)
    ftj = _ftj(e2e, name)
    assert phase == "Succeeded", json.dumps(ftj.get("status"), indent=1)
    (pod,) = _trainer_pods(e2e, name)
    assert pod["spec"]["nodeName"] == NODE_NAME  # it ran for real, not on a kwok node
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    # PROGRESS and LOSS moved while it ran (what `kubectl get ftj` shows).
    steps = [s for s, _ in seen]
    assert len(steps) >= 2 and steps == sorted(steps), seen
    assert all(loss is not None for _, loss in seen[1:]), seen
    columns = e2e.kubectl("get", "ftj", name, "-n", NAMESPACE)
    assert "100" in columns.splitlines()[1]  # the PROGRESS column at the end
    status = ftj["status"]
    assert status["output"]["adapterUri"].endswith(f"/{NAMESPACE}/{name}/adapter/")
    assert status["output"]["metrics"]["trainLoss"] > 0
    gate = _condition(ftj, "GatePassed")
    assert gate and gate["status"] == "True"
    from healthnav.contracts import storage

    assert storage.exists(status["output"]["adapterUri"] + "adapter_config.json")
    print(f"apply -> Succeeded in {time.monotonic() - started:.0f} s; progress seen: {seen}")


STEPS = 1200
CHECKPOINT_EVERY = 100


def test_a_deleted_training_pod_is_replaced_and_resumes_from_its_checkpoint(
    e2e: E2E, operator_release: dict[str, Any], staged: tuple[str, str]
) -> None:
    from healthnav.contracts import storage
    from healthnav.contracts.run_output import RunOutput

    base, dataset = staged
    name = unique("resume")
    # About half a minute of training with a checkpoint every few seconds (the tiny model runs
    # ~35 steps a second here): the pod is deleted once its first checkpoint is in S3 and while
    # it is still training, so the replacement must resume, not start over or find it finished.
    # (Not keyed on status.progress: the trainer patches that at most every 10 s.)
    e2e.apply(finetunejob(name, base, dataset, max_steps=STEPS, checkpoint_every_steps=CHECKPOINT_EVERY))
    latest = RunOutput.for_job("s3://models/finetunes/", NAMESPACE, name).checkpoints.join("latest.json")

    def checkpointed_and_training() -> str | None:
        pods = [p for p in _trainer_pods(e2e, name) if p["status"].get("phase") == "Running"]
        return pods[0]["metadata"]["name"] if pods and storage.exists(latest) else None

    first = wait_for(
        checkpointed_and_training, timeout=600, what="training past its first checkpoint", interval=0.5
    )
    e2e.kubectl("delete", "pod", "-n", NAMESPACE, first, "--wait=false")
    phase = wait_for(
        lambda: (
            _ftj(e2e, name).get("status", {}).get("phase") in ("Succeeded", "Failed")
            and _ftj(e2e, name)["status"]["phase"]
        ),
        timeout=900,
        what=f"FineTuneJob {name} to finish after its pod was deleted",
        interval=1.0,
    )
    ftj = _ftj(e2e, name)
    assert phase == "Succeeded", json.dumps(ftj.get("status"), indent=1)
    # the deleted pod is gone from the API; the Job's replacement finished the run
    names = {p["metadata"]["name"] for p in _trainer_pods(e2e, name)}
    assert names and first not in names

    metrics = json.loads(
        storage.read_text(ftj["status"]["output"]["adapterUri"].replace("adapter/", "metrics.json"))
    )
    assert CHECKPOINT_EVERY <= metrics["resumedFromStep"] < STEPS, metrics["resumedFromStep"]
    assert ftj["status"]["progress"]["step"] == STEPS == metrics["steps"]


def test_a_trainer_exiting_78_fails_the_finetunejob_at_once_with_its_message(
    e2e: E2E, operator_release: dict[str, Any], staged: tuple[str, str], tmp_path: Path
) -> None:
    base, _ = staged
    name = unique("badcfg")
    # A dataset prefix with no manifest.json: the trainer's configuration error (exit 78).
    e2e.apply(finetunejob(name, base, "s3://data/datasets/does-not-exist/v1/"))
    phase = wait_for(
        lambda: _ftj(e2e, name).get("status", {}).get("phase") == "Failed" and "Failed",
        timeout=300,
        what=f"FineTuneJob {name} to fail",
        interval=1.0,
    )
    assert phase == "Failed"
    ftj = _ftj(e2e, name)
    pods = _trainer_pods(e2e, name)
    assert len(pods) == 1, "a configuration error must not be retried"
    assert pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 78
    messages = " ".join(c.get("message", "") for c in ftj["status"]["conditions"])
    assert "manifest" in messages.lower() and "does-not-exist" in messages
