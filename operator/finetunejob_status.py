"""Pure status computation: what the world looks like → FineTuneJob.status.

The status is *derived*, never accumulated: from the Job, its pods, the progress ConfigMap and
(after success) the metrics read from storage. A restarted operator therefore recomputes the
same status from the same world: nothing is lost when it dies, and an unchanged world gives
a byte-identical status, so the handler can skip the write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from healthnav.evaluation.gates import EvaluationGates, evaluate_gates
from healthnav.operator.conditions import get_condition, now_rfc3339, remove_condition, set_condition
from healthnav.operator.finetunejob_manifests import TRAINER_CONTAINER, adapter_uri
from healthnav.operator.finetunejob_spec import TERMINAL_PHASES, FineTuneJobSpec, Progress

MAX_MESSAGE = 1024
MAX_METRICS = 128

# Condition types (metav1.Condition.type) used by FineTuneJob.
JOB_CREATED = "JobCreated"
SCHEDULABLE = "Schedulable"
RUNNING = "Running"
COMPLETE = "Complete"
FAILED = "Failed"
SUSPENDED = "Suspended"
EVALUATED = "Evaluated"
GATE_PASSED = "GatePassed"

# Conditions whose becoming True (or False, for the positive ones) deserves a Warning event.
_WARN_WHEN_TRUE = {FAILED}
_WARN_WHEN_FALSE = {SCHEDULABLE, GATE_PASSED, EVALUATED}
# Condition transitions worth an Event of their own (phase changes always get one).
_EVENT_CONDITIONS = {JOB_CREATED, SCHEDULABLE, GATE_PASSED, EVALUATED}


@dataclass
class Observation:
    """Everything the reconcile saw, gathered by the handler (I/O) for this pure function."""

    job: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    progress: dict[str, Any] | None = None
    run_output: str | None = None
    metrics: dict[str, Any] | None = None
    """Training metrics.json, once read (None: not read / not reachable)."""
    eval_metrics: dict[str, Any] | None = None
    """eval/metrics.json, once read."""
    evaluation_timeout_seconds: float = 1800.0
    job_recreated: bool = False
    spec_error: str | None = None
    now: str = field(default_factory=now_rfc3339)


@dataclass(frozen=True)
class EventSpec:
    """A Kubernetes Event to post about a transition."""

    type: str  # Normal | Warning
    reason: str
    message: str


def _job_condition(job: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond
    return None


def _sorted_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        pods, key=lambda p: (p.get("metadata", {}).get("creationTimestamp") or "", p["metadata"]["name"])
    )


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == TRAINER_CONTAINER:
            state = status.get("state") or {}
            return state.get("terminated") or (status.get("lastState") or {}).get("terminated")
    return None


def pod_failure_message(pods: list[dict[str, Any]]) -> str | None:
    """Why the newest failed pod failed: exit code, reason, and the trainer's termination message."""
    for pod in reversed(_sorted_pods(pods)):
        status = pod.get("status") or {}
        if status.get("phase") != "Failed":
            continue
        term = _terminated(pod)
        if term:
            text = f"trainer exited with code {term.get('exitCode')}"
            if term.get("reason"):
                text += f" ({term['reason']})"
            message = (term.get("message") or "").strip()
            if message:
                text += f": {message}"
            return text[:MAX_MESSAGE]
        if status.get("reason") or status.get("message"):
            return f"pod {status.get('reason', 'Failed')}: {status.get('message', '')}".strip()[:MAX_MESSAGE]
    return None


def unschedulable(pods: list[dict[str, Any]]) -> str | None:
    """The scheduler's message when the current pod cannot be placed (no GPU node fits, …)."""
    live = [p for p in _sorted_pods(pods) if (p.get("status") or {}).get("phase") in (None, "", "Pending")]
    if not live:
        return None
    for cond in (live[-1].get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return (cond.get("message") or cond.get("reason") or "Unschedulable")[:MAX_MESSAGE]
    return None


def running_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    for pod in reversed(_sorted_pods(pods)):
        if (pod.get("status") or {}).get("phase") == "Running" and not pod["metadata"].get(
            "deletionTimestamp"
        ):
            return pod
    return None


def parse_progress(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """The progress ConfigMap's ``data.progress`` JSON, validated; None when absent or malformed.

    Everything the trainer writes is untrusted input to the operator: it is parsed with the
    :class:`Progress` model and unknown keys are dropped, so a buggy trainer cannot write
    arbitrary content into the FineTuneJob status.
    """
    raw = (data or {}).get("progress")
    if not raw:
        return None
    try:
        doc = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(doc, dict):
            return None
        known = {k: v for k, v in doc.items() if k in Progress.model_fields or k in _PROGRESS_ALIASES}
        return Progress.model_validate(known).to_dict(exclude_none=True)
    except (ValueError, ValidationError):
        return None


_PROGRESS_ALIASES = {f.alias for f in Progress.model_fields.values() if f.alias}


def flatten_metrics(doc: dict[str, Any] | None, prefix: str = "", depth: int = 2) -> dict[str, float]:
    """Numeric leaves of a metrics.json, dotted keys, at most two levels deep and 128 entries."""
    out: dict[str, float] = {}
    for key, value in (doc or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            if value == value and value not in (float("inf"), float("-inf")):  # JSON-safe only
                out[name] = float(value)
        elif isinstance(value, dict) and depth > 1 and key != "counts":
            out.update(flatten_metrics(value, f"{name}.", depth - 1))
        if len(out) >= MAX_METRICS:
            break
    return dict(list(out.items())[:MAX_METRICS])


def split_eval_metrics(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(candidate, base) from an evaluation metrics.json.

    Accepts the flat form ({rougeL: …}) and the comparison form ({candidate: {...}, base: {...}},
    each either the metrics or {metrics: {...}}).
    """

    def unwrap(value: Any) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            return None
        inner = value.get("metrics")
        return inner if isinstance(inner, dict) else value

    if "candidate" in doc:
        return unwrap(doc["candidate"]) or {}, unwrap(doc.get("base"))
    return doc, unwrap(doc.get("base")) if isinstance(doc.get("base"), dict) else None


def _seconds_between(start: str | None, end: str) -> float:
    if not start:
        return 0.0
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (b - a).total_seconds()


def compute_status(
    ftj: dict[str, Any], spec: FineTuneJobSpec | None, obs: Observation
) -> tuple[dict[str, Any], float | None]:
    """(new status, seconds until the operator should look again or None)."""
    meta = ftj["metadata"]
    generation = meta.get("generation")
    old: dict[str, Any] = dict(ftj.get("status") or {})
    status: dict[str, Any] = dict(old)
    conds: list[dict[str, Any]] = [dict(c) for c in old.get("conditions") or []]
    now = obs.now
    requeue: float | None = None

    def cond(type_: str, value: str, reason: str, message: str = "") -> None:
        nonlocal conds
        conds = set_condition(
            conds, type_, value, reason, message[:MAX_MESSAGE], generation=generation, now=now
        )  # type: ignore[arg-type]

    def finish(phase: str, message: str | None) -> tuple[dict[str, Any], float | None]:
        status["phase"] = phase
        if message:
            status["message"] = message[:MAX_MESSAGE]
        else:
            status.pop("message", None)
        status["conditions"] = conds
        status["observedGeneration"] = generation
        return status, requeue

    if spec is None or obs.spec_error:
        cond(FAILED, "True", "InvalidSpec", obs.spec_error or "invalid spec")
        return finish("Failed", obs.spec_error or "invalid spec")

    job = obs.job
    if obs.run_output:
        output = dict(status.get("output") or {})
        output["uri"] = obs.run_output
        status["output"] = output

    if job is None:
        if old.get("phase") in TERMINAL_PHASES:
            # The Job was garbage-collected after ttlSecondsAfterFinished: the result stands.
            return finish(old["phase"], old.get("message"))
        cond(JOB_CREATED, "False", "JobNotCreated", "the training Job does not exist yet")
        return finish("Pending", "waiting for the training Job to be created")

    job_status = job.get("status") or {}
    status["jobName"] = job["metadata"]["name"]
    previous = get_condition(conds, JOB_CREATED)
    if obs.job_recreated or (previous and previous.get("reason") == "JobRecreated"):
        cond(
            JOB_CREATED,
            "True",
            "JobRecreated",
            "the training Job was deleted outside the operator; recreated it",
        )
    else:
        cond(JOB_CREATED, "True", "JobCreated", f"created Job {job['metadata']['name']}")
    if job_status.get("startTime") and not status.get("startTime"):
        status["startTime"] = job_status["startTime"]
    if job_status.get("failed"):
        status["failedAttempts"] = int(job_status["failed"])
    progress = parse_progress(obs.progress)
    if progress:
        status["progress"] = progress

    failed = _job_condition(job, "Failed")
    complete = _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet")
    suspended = bool((job.get("spec") or {}).get("suspend"))

    if failed:
        reason = failed.get("reason") or "JobFailed"
        message = pod_failure_message(obs.pods) or failed.get("message") or reason
        cond(FAILED, "True", reason, message)
        cond(RUNNING, "False", reason, "training stopped")
        conds = remove_condition(conds, SUSPENDED)
        status["completionTime"] = status.get("completionTime") or failed.get("lastTransitionTime") or now
        return finish("Failed", message)

    if complete and not _job_condition(job, "Complete") and job_status.get("active"):
        complete = None  # SuccessCriteriaMet while pods still terminate: not done yet
    if complete:
        cond(RUNNING, "False", "TrainingComplete", "training finished")
        cond(COMPLETE, "True", "TrainingSucceeded", "the trainer exited successfully")
        conds = remove_condition(conds, SUSPENDED)
        done_at = job_status.get("completionTime") or complete.get("lastTransitionTime") or now
        output = dict(status.get("output") or {})
        if obs.run_output:
            output["adapterUri"] = adapter_uri(obs.run_output)
        metrics = flatten_metrics(obs.metrics)
        if progress is not None or "progress" in status:
            status["progress"] = {**(status.get("progress") or {}), "percent": 100.0, "etaSeconds": 0.0}

        if spec.evaluation is None:
            if metrics:
                output["metrics"] = metrics
            status["output"] = output
            status["completionTime"] = status.get("completionTime") or done_at
            return finish("Succeeded", None)

        # Evaluation requested: the adapter is not done until its gates are decided.
        if obs.eval_metrics is None:
            if metrics:
                output["metrics"] = metrics
            status["output"] = output
            waited = _seconds_between(done_at, now)
            if waited > obs.evaluation_timeout_seconds:
                message = f"no evaluation metrics (eval/metrics.json) {int(waited)} s after training finished"
                cond(EVALUATED, "False", "EvaluationTimeout", message)
                cond(GATE_PASSED, "False", "NotEvaluated", "the adapter was not evaluated")
                cond(FAILED, "True", "EvaluationTimeout", message)
                status["completionTime"] = status.get("completionTime") or now
                return finish("Failed", message)
            cond(EVALUATED, "False", "EvaluationPending", "waiting for evaluation metrics")
            requeue = 30.0
            return finish("Evaluating", "training finished; waiting for evaluation metrics")

        candidate, base = split_eval_metrics(obs.eval_metrics)
        result = evaluate_gates(candidate, base, spec.evaluation.gates or EvaluationGates())
        output["metrics"] = {**metrics, **flatten_metrics(candidate, depth=1)}
        output["metrics"] = dict(list(output["metrics"].items())[:MAX_METRICS])
        status["output"] = output
        cond(EVALUATED, "True", "MetricsFound", "evaluation metrics read from eval/metrics.json")
        cond(GATE_PASSED, "True" if result.passed else "False", result.reason, result.message)
        status["completionTime"] = status.get("completionTime") or now
        return finish("Succeeded", None if result.passed else f"quality gate failed: {result.message}")

    if suspended:
        cond(RUNNING, "False", "Suspended", "the training Job is suspended")
        if spec.suspend:
            cond(SUSPENDED, "True", "SuspendedByUser", "spec.suspend is true; checkpoints are kept")
            return finish("Suspended", "suspended")
        if spec.queue_name:
            message = f"waiting for Kueue to admit the Job in LocalQueue {spec.queue_name}"
            cond(SCHEDULABLE, "False", "WaitingForQuota", message)
            return finish("Pending", message)
        return finish("Pending", "resuming")

    conds = remove_condition(conds, SUSPENDED)
    pending_reason = unschedulable(obs.pods)
    if pending_reason:
        cond(SCHEDULABLE, "False", "Unschedulable", pending_reason)
        cond(RUNNING, "False", "Unschedulable", "the training pod cannot be scheduled")
        return finish("Pending", f"unschedulable: {pending_reason}")
    pod = running_pod(obs.pods)
    if pod is not None:
        cond(
            SCHEDULABLE,
            "True",
            "Scheduled",
            f"pod {pod['metadata']['name']} is on node {pod['spec'].get('nodeName', '?')}",
        )
        attempt = int(job_status.get("failed") or 0) + 1
        reason = "Retrying" if attempt > 1 else "TrainerRunning"
        message = f"attempt {attempt} of {spec.backoff_limit + 1}"
        if attempt > 1:
            message += f"; previous: {pod_failure_message(obs.pods) or 'failed'}"
        cond(RUNNING, "True", reason, message)
        return finish("Running", None)
    if int(job_status.get("succeeded") or 0) > 0 or any(
        (p.get("status") or {}).get("phase") == "Succeeded" for p in obs.pods
    ):
        return finish("Running", "the trainer exited successfully; waiting for the Job to complete")
    if get_condition(conds, SCHEDULABLE) and any(
        (p.get("status") or {}).get("phase") == "Failed" for p in obs.pods
    ):
        cond(
            RUNNING, "False", "Retrying", f"waiting for a new pod; previous: {pod_failure_message(obs.pods)}"
        )
    return finish("Pending", "waiting for the training pod to start")


def status_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    return json.dumps(old or {}, sort_keys=True) != json.dumps(new, sort_keys=True)


def transition_events(old: dict[str, Any] | None, new: dict[str, Any]) -> list[EventSpec]:
    """One Event per condition whose status changed, and one per phase change."""
    old = old or {}
    events: list[EventSpec] = []
    if old.get("phase") != new.get("phase") and not (
        old.get("phase") is None and new.get("phase") == "Pending"
    ):
        bad = new.get("phase") == "Failed"
        events.append(
            EventSpec(
                "Warning" if bad else "Normal",
                str(new.get("phase")),
                new.get("message") or f"phase {old.get('phase') or '<none>'} -> {new.get('phase')}",
            )
        )
    old_conds = {c["type"]: c for c in old.get("conditions") or []}
    for c in new.get("conditions") or []:
        if c["type"] not in _EVENT_CONDITIONS:
            continue
        prev = old_conds.get(c["type"])
        if prev is not None and prev.get("status") == c["status"] and prev.get("reason") == c["reason"]:
            continue
        warn = (c["type"] in _WARN_WHEN_TRUE and c["status"] == "True") or (
            c["type"] in _WARN_WHEN_FALSE and c["status"] == "False" and c["reason"] != "EvaluationPending"
        )
        if c["type"] == SCHEDULABLE and c["status"] == "True" and prev is None:
            continue  # scheduled at the first try: the Running event says it all
        if c["reason"] == "EvaluationPending":
            continue
        events.append(EventSpec("Warning" if warn else "Normal", c["reason"], c.get("message") or c["type"]))
    return events
