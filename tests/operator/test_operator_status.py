"""Status is derived from the world (Job, pods, progress, metrics): each scenario a user sees."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ftj_helpers import manifest, valid_spec

from healthnav.contracts.progress import TrainingProgress
from healthnav.contracts.run_output import RunOutput
from healthnav.operator.finetunejob_spec import FineTuneJobSpec, FineTuneJobStatus
from healthnav.operator.finetunejob_status import Observation, compute_status, transition_events

pytestmark = pytest.mark.unit
T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z", "2026-01-01T02:00:00Z"


def _ftj(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    m = manifest("ft", "ml", {**valid_spec(), **spec})
    m["metadata"].update(generation=1, resourceVersion="1", uid="u")
    if status:
        m["status"] = status
    return m


def _job(conds: list[dict[str, Any]] | None = None, suspend: bool = False, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "ft"},
        "spec": {"suspend": suspend},
        "status": {"startTime": T0, "conditions": conds or [], **status},
    }


def _pod(phase: str, name: str = "ft-a", created: str = T0, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {"nodeName": "n1"},
        "status": {"phase": phase, **status},
    }


def _run(ftj: dict[str, Any], obs: Observation) -> dict[str, Any]:
    spec = FineTuneJobSpec.model_validate(ftj["spec"])
    status, _ = compute_status(ftj, spec, obs)
    written = status.to_status()
    FineTuneJobStatus.model_validate(written)  # always valid against the CRD's status schema
    return written


def _events(old: dict[str, Any], new: dict[str, Any]) -> list[Any]:
    return transition_events(FineTuneJobStatus.from_status(old), FineTuneJobStatus.from_status(new))


def _cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_running_with_progress_from_the_trainers_payload() -> None:
    progress = TrainingProgress.at(
        step=50, total_steps=200, epoch=0.75, loss=1.23, tokens_per_second=900.0, eta_seconds=120
    )
    obs = Observation(
        job=_job(active=1), pods=[_pod("Running")], progress=progress.configmap_patch()["data"], now=T1
    )
    status = _run(_ftj(), obs)
    assert status["phase"] == "Running" and status["startTime"] == T0 and status["jobName"] == "ft"
    assert status["progress"] == {
        "percent": 25.0,
        "step": 50,
        "totalSteps": 200,
        "epoch": 0.75,
        "loss": 1.23,
        "tokensPerSecond": 900.0,
        "etaSeconds": 120,
    }
    assert (
        _cond(status, "Running")["status"] == "True" and _cond(status, "Running")["observedGeneration"] == 1
    )


def test_malformed_progress_is_ignored_not_copied() -> None:
    obs = Observation(
        job=_job(active=1),
        pods=[_pod("Running")],
        progress={"progress": json.dumps({"percent": 900, "evil": "x" * 10})},
        now=T1,
    )
    assert "progress" not in _run(_ftj(), obs)
    obs.progress = {"progress": "{not json"}
    assert "progress" not in _run(_ftj(), obs)


def test_unschedulable_is_a_condition_not_a_silent_pending() -> None:
    sched = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
    }
    status = _run(_ftj(), Observation(job=_job(active=1), pods=[_pod("Pending", conditions=[sched])], now=T1))
    assert status["phase"] == "Pending"
    cond = _cond(status, "Schedulable")
    assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in cond["message"]
    assert any(e.type == "Warning" and e.reason == "Unschedulable" for e in _events({}, status))


def test_failure_reason_comes_from_the_pods_termination_message() -> None:
    term = {"terminated": {"exitCode": 78, "reason": "Error", "message": "dataset manifest.json missing"}}
    pods = [_pod("Failed", containerStatuses=[{"name": "trainer", "state": term}])]
    job = _job(
        [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "lastTransitionTime": T1}],
        failed=1,
    )
    status = _run(_ftj(), Observation(job=job, pods=pods, now=T1))
    assert status["phase"] == "Failed" and status["completionTime"] == T1
    assert status["message"] == "trainer exited with code 78 (Error): dataset manifest.json missing"
    assert _cond(status, "Failed")["reason"] == "PodFailurePolicy"
    assert status["failedAttempts"] == 1
    assert next(e.type for e in _events({"phase": "Running"}, status)) == "Warning"


def test_success_reports_adapter_and_metrics() -> None:
    job = _job(
        [{"type": "Complete", "status": "True", "lastTransitionTime": T1}], succeeded=1, completionTime=T1
    )
    obs = Observation(
        job=job,
        pods=[_pod("Succeeded")],
        run_output=RunOutput.parse("s3://models/ft/ml/ft/"),
        metrics={"train_loss": 0.8, "eval": {"loss": 0.9}, "runtime": "long", "ok": True},
        now=T1,
    )
    status = _run(_ftj(), obs)
    assert status["phase"] == "Succeeded" and status["completionTime"] == T1
    assert status["output"] == {
        "uri": "s3://models/ft/ml/ft/",
        "adapterUri": "s3://models/ft/ml/ft/adapter/",
        "metrics": {"train_loss": 0.8, "eval.loss": 0.9},
    }


def test_evaluation_passes_through_evaluating_then_gates() -> None:
    job = _job(
        [{"type": "Complete", "status": "True", "lastTransitionTime": T1}], succeeded=1, completionTime=T1
    )
    ftj = _ftj(evaluation={"gates": {"rougeL": 0.3}})
    obs = Observation(job=job, run_output=RunOutput.parse("s3://models/x/"), now=T1)
    spec = FineTuneJobSpec.model_validate(ftj["spec"])
    computed, requeue = compute_status(ftj, spec, obs)
    status = computed.to_status()
    assert status["phase"] == "Evaluating" and requeue and _cond(status, "Evaluated")["status"] == "False"

    obs.eval_metrics = {"candidate": {"rougeL": 0.41}, "base": {"rougeL": 0.2}}
    status = _run(_ftj(status, evaluation={"gates": {"rougeL": 0.3}}), obs)
    assert status["phase"] == "Succeeded"
    assert _cond(status, "GatePassed")["status"] == "True" and status["output"]["metrics"]["rougeL"] == 0.41

    obs.eval_metrics = {"rougeL": 0.1}
    status = _run(_ftj(evaluation={"gates": {"rougeL": 0.3}}), obs)
    gate = _cond(status, "GatePassed")
    assert (gate["status"], gate["reason"]) == ("False", "GatesFailed") and "rougeL" in gate["message"]

    obs.eval_metrics, obs.now = None, T2  # nobody evaluated for two hours
    status = _run(_ftj(evaluation={"gates": {"rougeL": 0.3}}), obs)
    assert status["phase"] == "Failed" and _cond(status, "Evaluated")["reason"] == "EvaluationTimeout"


def test_suspend_and_kueue_queue() -> None:
    status = _run(_ftj(suspend=True), Observation(job=_job(suspend=True), now=T1))
    assert status["phase"] == "Suspended" and _cond(status, "Suspended")["status"] == "True"
    status = _run(_ftj(queueName="gpu"), Observation(job=_job(suspend=True), now=T1))
    assert status["phase"] == "Pending" and _cond(status, "Schedulable")["reason"] == "WaitingForQuota"


def test_recompute_is_stable_and_keeps_transition_times() -> None:
    obs = Observation(job=_job(active=1), pods=[_pod("Running")], now=T1)
    first = _run(_ftj(), obs)
    obs.now = T2
    second = _run(_ftj(first), obs)
    assert second == first  # nothing changed → identical status → the operator skips the write
    assert _events(first, second) == []


def test_terminal_status_survives_the_job_being_garbage_collected() -> None:
    done = {"phase": "Succeeded", "jobName": "ft", "conditions": []}
    assert _run(_ftj(done), Observation(job=None, now=T2))["phase"] == "Succeeded"


def test_retry_is_visible_while_running_again() -> None:
    term = {"terminated": {"exitCode": 1, "reason": "Error", "message": "CUDA error"}}
    pods = [
        _pod("Failed", "ft-a", T0, containerStatuses=[{"name": "trainer", "state": term}]),
        _pod("Running", "ft-b", T1),
    ]
    status = _run(_ftj(), Observation(job=_job(active=1, failed=1), pods=pods, now=T1))
    running = _cond(status, "Running")
    assert running["reason"] == "Retrying" and "attempt 2 of 3" in running["message"]
    assert "CUDA error" in running["message"]
