"""FineTuneJob reconcile: observe, create what is missing, derive status, write it if it changed.

Level-based, like a controller-runtime reconciler: every trigger (the FineTuneJob itself, its
Job, its pods, its progress ConfigMap, a retry, the periodic resync) runs the same
:meth:`FineTuneJobController.reconcile` for that object, which looks at the whole current
state. Nothing depends on having seen a particular event, which is what makes a restart at
any moment safe:

* children have deterministic names and are created with create-or-get, so a second
  operator process (or a replay) finds the Job rather than creating another;
* status is recomputed from the Job, pods and progress ConfigMap (see
  :mod:`finetunejob_status`) and written with the object's resourceVersion as a
  precondition, so a stale writer loses (409) and retries from fresh state.

A Job deleted behind the operator's back is recreated (Warning event ``JobRecreated``): the
trainer resumes from its last checkpoint in the output prefix, so the cost is bounded, and
"the FineTuneJob says Running but nothing runs" is never a state the user can get stuck in.
To stop training, set ``spec.suspend: true`` or delete the FineTuneJob.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from healthnav.contracts.run_output import RunOutput
from healthnav.operator import metrics
from healthnav.operator.conditions import StatusEvent
from healthnav.operator.finetunejob_manifests import children, run_output
from healthnav.operator.finetunejob_spec import (
    API_VERSION,
    KIND,
    PLURAL,
    TERMINAL_PHASES,
    FineTuneJobSpec,
    FineTuneJobStatus,
)
from healthnav.operator.finetunejob_status import Observation, compute_status, transition_events
from healthnav.operator.kube import Kube
from healthnav.operator.reconciler import Key, Reconciler, parse_spec_as
from healthnav.operator.settings import OperatorSettings

log = logging.getLogger("healthnav.operator.finetunejob")

# Lookups into the operator's in-memory indexes of children (kopf indexes in production).
ChildLookup = Callable[[Key], list[dict[str, Any]]]


def parse_spec(body: Mapping[str, Any]) -> tuple[FineTuneJobSpec | None, str | None]:
    """The FineTuneJob's spec, or None and a message naming the field (shown in status)."""
    return parse_spec_as(FineTuneJobSpec, body)


class FineTuneJobController(Reconciler):
    """Owns reconciliation of FineTuneJobs for one operator process."""

    api_version = API_VERSION
    plural = PLURAL
    kind = KIND
    log = log

    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        jobs: ChildLookup,
        pods: ChildLookup,
        progress: ChildLookup,
        read_json: Callable[[str], dict[str, Any] | None] | None = None,
    ) -> None:
        # Events get their own small pool: they must not queue in front of the API calls.
        super().__init__(
            kube, settings, event_executor=ThreadPoolExecutor(max_workers=2, thread_name_prefix="events")
        )
        self._jobs, self._pods, self._progress = jobs, pods, progress
        self._read_json = read_json or read_json_from_storage
        self._own_writes: dict[Key, str] = {}
        self._metrics_cache: dict[Key, tuple[dict[str, Any] | None, dict[str, Any] | None]] = {}
        # The latest FineTuneJob seen (watch or own write): a reconcile triggered by a child's
        # event starts from it instead of a GET; a stale copy only costs a 409 and a re-read.
        self._bodies: dict[Key, dict[str, Any]] = {}
        # Job creates in flight; the rest of a reconcile waits (briefly) until none are, so
        # under a burst every FineTuneJob gets its Job before any gets its follow-up calls.
        self._job_creates = 0
        self._no_job_creates = asyncio.Event()
        self._no_job_creates.set()

    # --- hooks of the shared reconcile loop -------------------------------------------------

    def needs_resync(self, phase: str | None) -> bool:
        return phase not in TERMINAL_PHASES

    def _cached_body(self, key: Key) -> Mapping[str, Any] | None:
        return self._bodies.get(key)

    def _status_written(self, key: Key, written: dict[str, Any]) -> None:
        self._own_writes[key] = written["metadata"]["resourceVersion"]
        self._remember(key, written)

    def transition_events(self, old: FineTuneJobStatus, new: FineTuneJobStatus) -> list[StatusEvent]:
        return transition_events(old, new)

    # --- bookkeeping driven by the FineTuneJob watch ---------------------------------------

    def observe(self, key: Key, body: Mapping[str, Any]) -> bool:
        """Record the phase and body; False when this event is the echo of our own status write."""
        self.phases[key] = (body.get("status") or {}).get("phase")
        self._remember(key, body)
        rv = body.get("metadata", {}).get("resourceVersion")
        return not (rv and self._own_writes.get(key) == rv)

    def _remember(self, key: Key, body: Mapping[str, Any]) -> None:
        """Keep the body without what the reconcile never reads and that can double its size."""
        dropped = ("managedFields", "annotations")  # kubectl's last-applied copy of the object
        meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in dropped}
        self._bodies[key] = {**body, "metadata": meta}

    def forget(self, key: Key) -> None:
        super().forget(key)
        for store in (self._bodies, self._own_writes, self._metrics_cache):
            store.pop(key, None)  # type: ignore[attr-defined]

    # --- the reconcile --------------------------------------------------------------------

    async def _reconcile_once(self, key: Key, ftj: dict[str, Any]) -> float | None:
        namespace, name = key
        meta = ftj["metadata"]
        if meta.get("deletionTimestamp"):
            return None  # garbage collection removes the children
        old_status = FineTuneJobStatus.from_status(ftj.get("status"))
        if old_status.phase in TERMINAL_PHASES and old_status.observed_generation == meta.get("generation"):
            self.phases[key] = old_status.phase
            return None  # finished; nothing can change any more (the spec is immutable)

        spec, spec_error = parse_spec(ftj)
        obs = Observation(
            spec_error=spec_error, evaluation_timeout_seconds=self.settings.evaluation_timeout_seconds
        )
        requeue: float | None = None
        if spec is not None:
            obs.run_output = run_output(spec, self.settings, namespace, name)
            jobs = [j for j in self._jobs(key) if not j["metadata"].get("deletionTimestamp")]
            job = jobs[0] if jobs else None
            if job is None and self._jobs(key):
                requeue = 1.0  # the old Job is still being deleted; recreate once it is gone
            elif job is None:
                try:
                    job, recreated = await self._create_children(ftj, spec)
                    obs.job_recreated = recreated
                except ValueError as exc:  # no output URI anywhere
                    obs.spec_error = str(exc)
            if job is not None:
                job = await self._sync_suspend(ftj, job, spec)
            obs.job = job
            obs.pods = self._pods(key)
            progress = self._progress(key)
            obs.progress = progress[0] if progress else None
            if job is not None and _job_done(job) and obs.run_output is not None:
                obs.metrics, obs.eval_metrics = await self._read_results(key, spec, obs.run_output)

        new_status, status_requeue = compute_status(ftj, spec if obs.spec_error is None else None, obs)
        if new_status.differs_from(old_status):
            await self._write_status(key, ftj, old_status, new_status)
        self.phases[key] = new_status.phase
        return min((r for r in (requeue, status_requeue) if r is not None), default=None)

    async def _create_children(
        self, ftj: dict[str, Any], spec: FineTuneJobSpec
    ) -> tuple[dict[str, Any], bool]:
        """Create-or-get the Job, then everything its pod needs; returns (Job, recreated).

        The Job goes first, suspended: it is the deterministic "this FineTuneJob has started"
        marker (one round trip after the event), and suspended it creates no pod until the
        ServiceAccount, ConfigMaps and RBAC exist (a pod created earlier would be rejected for
        its missing ServiceAccount and retried with back-off). :meth:`_sync_suspend` then
        releases it.

        Create → Job latency under a burst: the Job is the only API call before it (the body
        comes from the watch event, no status is written first), it goes through the urgent
        thread pool, and the follow-up calls wait while other Jobs are still being created, so
        100 FineTuneJobs at once get their 100 Jobs before the ~600 follow-up calls start.
        """
        before, job_manifest = children(ftj, spec, self.settings)
        job_manifest["spec"]["suspend"] = True
        # The one call a user waits on: it never queues behind other objects' follow-up work.
        self._job_creates += 1
        self._no_job_creates.clear()
        try:
            job, created = await self.kube.run_urgent(self.kube.create_or_get, job_manifest)
        finally:
            self._job_creates -= 1
            if not self._job_creates:
                self._no_job_creates.set()
        # Everything else waits for the other Jobs of a burst, at most job_priority_seconds.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_job_creates.wait(), self.settings.job_priority_seconds)
        await self._ensure(before)
        recreated = False
        if created:
            metrics.CHILDREN_CREATED.labels(KIND, "Job").inc()
            recreated = bool(FineTuneJobStatus.from_status(ftj.get("status")).job_name)
            if recreated:
                self._event(
                    ftj, "Warning", "JobRecreated", f"Job {job['metadata']['name']} was deleted; recreated it"
                )
            log.info("created Job %s/%s", job["metadata"]["namespace"], job["metadata"]["name"])
        return job, recreated

    async def _ensure(self, objects: list[dict[str, Any]]) -> None:
        """Create-or-get ``objects``: concurrently within a wave, waves in dependency order."""
        for wave in creation_waves(objects):
            results = await asyncio.gather(*(self.kube.run(self.kube.create_or_get, obj) for obj in wave))
            for obj, (_, created) in zip(wave, results, strict=True):
                if created:
                    metrics.CHILDREN_CREATED.labels(KIND, obj["kind"]).inc()

    async def _sync_suspend(
        self, ftj: dict[str, Any], job: dict[str, Any], spec: FineTuneJobSpec
    ) -> dict[str, Any]:
        current = bool((job.get("spec") or {}).get("suspend"))
        desired = spec.suspend
        if spec.queue_name and not desired:
            return job  # Kueue decides when a queued Job runs
        if current == desired or _job_done(job):
            return job
        if not desired:
            # Releasing a Job: make sure what its pod needs exists (an operator that died right
            # after creating the suspended Job left them missing). Existing objects cost a 409.
            before, _ = children(ftj, spec, self.settings)
            await self._ensure(before)
        meta = job["metadata"]
        return await self.kube.run(
            self.kube.merge_patch,
            "batch/v1",
            "jobs",
            meta["namespace"],
            meta["name"],
            {"spec": {"suspend": desired}},
        )

    async def _read_results(
        self, key: Key, spec: FineTuneJobSpec, run: RunOutput
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        if not self.settings.read_metrics:
            return None, None
        cached = self._metrics_cache.get(key)
        if cached and (cached[1] is not None or spec.evaluation is None):
            return cached
        train = await self.kube.run(self._read_json, str(run.metrics))
        evaluation = None
        if spec.evaluation is not None:
            evaluation = await self.kube.run(self._read_json, str(run.eval_metrics))
        if train is not None and (evaluation is not None or spec.evaluation is None):
            self._metrics_cache[key] = (train, evaluation)
        return train, evaluation


def creation_waves(objects: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split children into batches that may be created concurrently, in the order they must be.

    A RoleBinding goes after everything else, i.e. after the Role it references: for a subject
    that is not cluster-admin (the chart's ServiceAccount has no ``bind`` verb) the API server's
    escalation check resolves the referenced Role and answers 404 while it does not exist yet,
    which would fail the first reconcile of every FineTuneJob and retry it with back-off.
    """
    first = [o for o in objects if o["kind"] != "RoleBinding"]
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    return [wave for wave in (first, bindings) if wave]


def _job_done(job: Mapping[str, Any]) -> bool:
    for cond in (job.get("status") or {}).get("conditions") or []:
        # SuccessCriteriaMet precedes Complete (Kubernetes >= 1.31): the status may already say
        # Succeeded then, so results must be read from that point on.
        if cond.get("type") in ("Complete", "SuccessCriteriaMet", "Failed") and cond.get("status") == "True":
            return True
    return False


def read_json_from_storage(uri: str) -> dict[str, Any] | None:
    """A JSON document from s3:// or file:// (:mod:`healthnav.contracts.storage`); None when absent.

    The operator may legitimately have no access to the output bucket (credentials only in
    the training pod); then the adapter URI is still reported, the metrics are not.
    """
    from healthnav.contracts import storage

    try:
        doc = json.loads(storage.read_text(uri))
    except storage.StorageError:
        log.info("%s does not exist (yet)", uri)
        return None
    except Exception as exc:  # unreachable endpoint, access denied, malformed JSON
        log.info("could not read %s: %s", uri, type(exc).__name__)
        return None
    return doc if isinstance(doc, dict) else None


def project_job(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the controller needs of a Job (kept in memory for every training Job)."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "deletionTimestamp": meta.get("deletionTimestamp"),
        },
        "spec": {"suspend": (body.get("spec") or {}).get("suspend")},
        "status": dict(body.get("status") or {}),
    }


def project_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "creationTimestamp": meta.get("creationTimestamp"),
            "deletionTimestamp": meta.get("deletionTimestamp"),
        },
        "spec": {"nodeName": (body.get("spec") or {}).get("nodeName")},
        "status": {
            "phase": status.get("phase"),
            "reason": status.get("reason"),
            "message": status.get("message"),
            "conditions": [c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"],
            "containerStatuses": [
                {"name": c.get("name"), "state": c.get("state"), "lastState": c.get("lastState")}
                for c in status.get("containerStatuses") or []
            ],
        },
    }


def project_progress(body: Mapping[str, Any]) -> dict[str, Any]:
    return dict(body.get("data") or {})
