"""Pure status computation: what the world looks like → the typed :class:`FineTuneJobStatus`.

The status is *derived*, never accumulated: from the Job, its pods, the progress ConfigMap and
(after success) the metrics read from storage. A restarted operator therefore recomputes the
same status from the same world: nothing is lost when it dies, and an unchanged world gives
a byte-identical status, so the handler can skip the write.

:func:`compute_status` picks the one situation the Job is in (no Job yet, failed, complete,
suspended, active) and hands it to a small function that sets that situation's conditions and
returns the phase and message; what every situation shares (the Job's name, start time,
attempts, progress) is recorded first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from healthnav.contracts.progress import TrainingProgress
from healthnav.contracts.run_output import RunOutput
from healthnav.evaluation.gates import EvaluationGates, evaluate_gates
from healthnav.operator.conditions import ConditionSet, StatusEvent, find_condition, now_rfc3339
from healthnav.operator.finetunejob_manifests import TRAINER_CONTAINER
from healthnav.operator.finetunejob_spec import (
    TERMINAL_PHASES,
    FineTuneJobSpec,
    FineTuneJobStatus,
    OutputStatus,
)

MAX_MESSAGE = 1024
MAX_METRICS = 128
EVALUATION_RECHECK_SECONDS = 30.0

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
    """The progress ConfigMap's ``data``."""
    run_output: RunOutput | None = None
    metrics: dict[str, Any] | None = None
    """Training metrics.json, once read (None: not read / not reachable)."""
    eval_metrics: dict[str, Any] | None = None
    """eval/metrics.json, once read."""
    evaluation_timeout_seconds: float = 1800.0
    job_recreated: bool = False
    spec_error: str | None = None
    now: str = field(default_factory=now_rfc3339)


@dataclass
class Derivation:
    """The status being derived: the model, its conditions, and when to look again."""

    status: FineTuneJobStatus
    conditions: ConditionSet
    now: str
    requeue: float | None = None

    def cond(self, type_: str, value: str, reason: str, message: str = "") -> None:
        self.conditions.set(type_, value, reason, message[:MAX_MESSAGE])  # type: ignore[arg-type]

    def output(self) -> OutputStatus:
        """The status's output block, created on first use."""
        if self.status.output is None:
            self.status.output = OutputStatus()
        return self.status.output


Outcome = tuple[str, str | None]
"""(phase, message) of the situation a reconcile found."""


def _job_condition(job: dict[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    """The Job's condition ``type_`` when it is True."""
    cond = find_condition(((job or {}).get("status") or {}).get("conditions"), type_)
    return cond if cond is not None and cond.get("status") == "True" else None


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
) -> tuple[FineTuneJobStatus, float | None]:
    """(new status, seconds until the operator should look again or None)."""
    generation = ftj["metadata"].get("generation")
    old = FineTuneJobStatus.from_status(ftj.get("status"))
    d = Derivation(
        old.model_copy(deep=True), ConditionSet(old.conditions, generation=generation, now=obs.now), obs.now
    )
    phase, message = _situation(d, old, spec, obs)
    d.status.phase = phase  # type: ignore[assignment]
    d.status.message = message[:MAX_MESSAGE] if message else None
    d.status.conditions = d.conditions.as_list()
    d.status.observed_generation = generation
    return d.status, d.requeue


def _situation(
    d: Derivation, old: FineTuneJobStatus, spec: FineTuneJobSpec | None, obs: Observation
) -> Outcome:
    if spec is None or obs.spec_error:
        return _invalid_spec(d, obs.spec_error or "invalid spec")
    if obs.run_output is not None:
        d.output().uri = str(obs.run_output)
    job = obs.job
    if job is None:
        return _no_job(d, old)
    progress = _record_job(d, job, obs)
    failed = _job_condition(job, "Failed")
    if failed:
        return _failed(d, failed, obs)
    complete = _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet")
    if complete and not _job_condition(job, "Complete") and (job.get("status") or {}).get("active"):
        complete = None  # SuccessCriteriaMet while pods still terminate: not done yet
    if complete:
        return _complete(d, spec, job, complete, obs, progress)
    if (job.get("spec") or {}).get("suspend"):
        return _suspended(d, spec)
    d.conditions.remove(SUSPENDED)
    return _active(d, spec, job, obs)


def _invalid_spec(d: Derivation, message: str) -> Outcome:
    d.cond(FAILED, "True", "InvalidSpec", message)
    return "Failed", message


def _no_job(d: Derivation, old: FineTuneJobStatus) -> Outcome:
    if old.phase in TERMINAL_PHASES:
        # The Job was garbage-collected after ttlSecondsAfterFinished: the result stands.
        return old.phase, old.message
    d.cond(JOB_CREATED, "False", "JobNotCreated", "the training Job does not exist yet")
    return "Pending", "waiting for the training Job to be created"


def _record_job(d: Derivation, job: dict[str, Any], obs: Observation) -> TrainingProgress | None:
    """What every situation with a Job shows: its name, start, failed attempts and progress."""
    job_status = job.get("status") or {}
    d.status.job_name = job["metadata"]["name"]
    previous = d.conditions.get(JOB_CREATED)
    if obs.job_recreated or (previous is not None and previous.reason == "JobRecreated"):
        d.cond(
            JOB_CREATED,
            "True",
            "JobRecreated",
            "the training Job was deleted outside the operator; recreated it",
        )
    else:
        d.cond(JOB_CREATED, "True", "JobCreated", f"created Job {job['metadata']['name']}")
    if job_status.get("startTime") and not d.status.start_time:
        d.status.start_time = job_status["startTime"]
    if job_status.get("failed"):
        d.status.failed_attempts = int(job_status["failed"])
    progress = TrainingProgress.from_configmap(obs.progress)
    if progress is not None:
        d.status.progress = progress
    return progress


def _failed(d: Derivation, failed: Mapping[str, Any], obs: Observation) -> Outcome:
    reason = failed.get("reason") or "JobFailed"
    message = pod_failure_message(obs.pods) or failed.get("message") or reason
    d.cond(FAILED, "True", reason, message)
    d.cond(RUNNING, "False", reason, "training stopped")
    d.conditions.remove(SUSPENDED)
    d.status.completion_time = d.status.completion_time or failed.get("lastTransitionTime") or d.now
    return "Failed", message


def _complete(
    d: Derivation,
    spec: FineTuneJobSpec,
    job: dict[str, Any],
    complete: Mapping[str, Any],
    obs: Observation,
    progress: TrainingProgress | None,
) -> Outcome:
    d.cond(RUNNING, "False", "TrainingComplete", "training finished")
    d.cond(COMPLETE, "True", "TrainingSucceeded", "the trainer exited successfully")
    d.conditions.remove(SUSPENDED)
    done_at = (job.get("status") or {}).get("completionTime") or complete.get("lastTransitionTime") or d.now
    output = d.output()
    if obs.run_output is not None:
        output.adapter_uri = str(obs.run_output.adapter)
    metrics = flatten_metrics(obs.metrics)
    if progress is not None or d.status.progress is not None:
        current = d.status.progress or TrainingProgress()
        d.status.progress = current.model_copy(update={"percent": 100.0, "eta_seconds": 0.0})
    if spec.evaluation is None:
        if metrics:
            output.metrics = metrics
        d.status.completion_time = d.status.completion_time or done_at
        return "Succeeded", None
    if obs.eval_metrics is None:
        return _awaiting_evaluation(d, output, metrics, done_at, obs)
    return _gated(d, spec, output, metrics, obs.eval_metrics)


def _awaiting_evaluation(
    d: Derivation, output: OutputStatus, metrics: dict[str, float], done_at: str, obs: Observation
) -> Outcome:
    """Evaluation requested: the adapter is not done until its gates are decided."""
    if metrics:
        output.metrics = metrics
    waited = _seconds_between(done_at, d.now)
    if waited > obs.evaluation_timeout_seconds:
        message = f"no evaluation metrics (eval/metrics.json) {int(waited)} s after training finished"
        d.cond(EVALUATED, "False", "EvaluationTimeout", message)
        d.cond(GATE_PASSED, "False", "NotEvaluated", "the adapter was not evaluated")
        d.cond(FAILED, "True", "EvaluationTimeout", message)
        d.status.completion_time = d.status.completion_time or d.now
        return "Failed", message
    d.cond(EVALUATED, "False", "EvaluationPending", "waiting for evaluation metrics")
    d.requeue = EVALUATION_RECHECK_SECONDS
    return "Evaluating", "training finished; waiting for evaluation metrics"


def _gated(
    d: Derivation,
    spec: FineTuneJobSpec,
    output: OutputStatus,
    metrics: dict[str, float],
    eval_metrics: dict[str, Any],
) -> Outcome:
    assert spec.evaluation is not None
    candidate, base = split_eval_metrics(eval_metrics)
    result = evaluate_gates(candidate, base, spec.evaluation.gates or EvaluationGates())
    output.metrics = dict(list({**metrics, **flatten_metrics(candidate, depth=1)}.items())[:MAX_METRICS])
    d.cond(EVALUATED, "True", "MetricsFound", "evaluation metrics read from eval/metrics.json")
    d.cond(GATE_PASSED, "True" if result.passed else "False", result.reason, result.message)
    d.status.completion_time = d.status.completion_time or d.now
    return "Succeeded", None if result.passed else f"quality gate failed: {result.message}"


def _suspended(d: Derivation, spec: FineTuneJobSpec) -> Outcome:
    d.cond(RUNNING, "False", "Suspended", "the training Job is suspended")
    if spec.suspend:
        d.cond(SUSPENDED, "True", "SuspendedByUser", "spec.suspend is true; checkpoints are kept")
        return "Suspended", "suspended"
    if spec.queue_name:
        message = f"waiting for Kueue to admit the Job in LocalQueue {spec.queue_name}"
        d.cond(SCHEDULABLE, "False", "WaitingForQuota", message)
        return "Pending", message
    return "Pending", "resuming"


def _active(d: Derivation, spec: FineTuneJobSpec, job: dict[str, Any], obs: Observation) -> Outcome:
    """Neither finished nor suspended: unschedulable, running, or waiting for a pod."""
    pending_reason = unschedulable(obs.pods)
    if pending_reason:
        d.cond(SCHEDULABLE, "False", "Unschedulable", pending_reason)
        d.cond(RUNNING, "False", "Unschedulable", "the training pod cannot be scheduled")
        return "Pending", f"unschedulable: {pending_reason}"
    job_status = job.get("status") or {}
    pod = running_pod(obs.pods)
    if pod is not None:
        node = pod["spec"].get("nodeName", "?")
        d.cond(SCHEDULABLE, "True", "Scheduled", f"pod {pod['metadata']['name']} is on node {node}")
        attempt = int(job_status.get("failed") or 0) + 1
        message = f"attempt {attempt} of {spec.backoff_limit + 1}"
        if attempt > 1:
            message += f"; previous: {pod_failure_message(obs.pods) or 'failed'}"
        d.cond(RUNNING, "True", "Retrying" if attempt > 1 else "TrainerRunning", message)
        return "Running", None
    phases = [(p.get("status") or {}).get("phase") for p in obs.pods]
    if int(job_status.get("succeeded") or 0) > 0 or "Succeeded" in phases:
        return "Running", "the trainer exited successfully; waiting for the Job to complete"
    if d.conditions.get(SCHEDULABLE) is not None and "Failed" in phases:
        d.cond(
            RUNNING, "False", "Retrying", f"waiting for a new pod; previous: {pod_failure_message(obs.pods)}"
        )
    return "Pending", "waiting for the training pod to start"


def transition_events(old: FineTuneJobStatus, new: FineTuneJobStatus) -> list[StatusEvent]:
    """One Event per condition whose status changed, and one per phase change."""
    events: list[StatusEvent] = []
    if old.phase != new.phase and not (old.phase is None and new.phase == "Pending"):
        events.append(
            StatusEvent(
                "Warning" if new.phase == "Failed" else "Normal",
                str(new.phase),
                new.message or f"phase {old.phase or '<none>'} -> {new.phase}",
            )
        )
    old_conds = {c.type: c for c in old.conditions}
    for c in new.conditions:
        if c.type not in _EVENT_CONDITIONS or c.reason == "EvaluationPending":
            continue
        prev = old_conds.get(c.type)
        if prev is not None and prev.status == c.status and prev.reason == c.reason:
            continue
        if c.type == SCHEDULABLE and c.status == "True" and prev is None:
            continue  # scheduled at the first try: the Running event says it all
        warn = (c.type in _WARN_WHEN_TRUE and c.status == "True") or (
            c.type in _WARN_WHEN_FALSE and c.status == "False"
        )
        events.append(StatusEvent("Warning" if warn else "Normal", c.reason, c.message or c.type))
    return events
