"""The reconcile loop shared by the FineTuneJob and ModelServe controllers.

Both controllers are level-based: every trigger runs the same ``reconcile`` of one object,
which looks at the whole current state. What that needs, and what lives here once:

* a key queue (:meth:`Reconciler.requeue` / :meth:`Reconciler.run_requeues`): one background
  task retries failures, honours requeue delays and runs the periodic safety-net resync, so
  there is no timer per object;
* coalescing (:meth:`Reconciler.reconcile_safely`): while a reconcile of an object runs, further
  triggers only mark it dirty and it runs once more afterwards;
* failure counting, one backoff with jitter (:func:`backoff`), metrics and a log line without
  the spec's contents;
* the optimistic-concurrency loop (:meth:`Reconciler.reconcile`): a 409 on the status write
  means somebody else wrote, so start over from fresh state;
* the status merge patch with the resourceVersion precondition, and best-effort Events.

Status is each kind's typed model (:class:`~healthnav.operator.conditions.ObservedStatus`),
computed by its status module; the loop only writes what changed.

Each controller keeps its domain logic (what to create, how to derive status) in its own
module and implements :meth:`Reconciler._reconcile_once`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from healthnav.contracts.validation import describe_validation_error
from healthnav.operator import metrics
from healthnav.operator.conditions import ObservedStatus, StatusEvent
from healthnav.operator.kube import Kube, KubeError
from healthnav.operator.settings import OperatorSettings

Key = tuple[str, str]
SpecT = TypeVar("SpecT", bound=BaseModel)
StatusT = TypeVar("StatusT", bound=ObservedStatus)

MAX_BACKOFF_SECONDS = 300.0
SPEC_ERRORS_SHOWN = 5


def backoff(failures: int) -> float:
    """Delay before retry number ``failures``: 1, 2, 4 … s with ±25% jitter, capped at five minutes."""
    return min(MAX_BACKOFF_SECONDS, 2.0 ** min(max(0, failures - 1), 10)) * (0.75 + random.random() / 2)


def parse_spec_as(model: type[SpecT], body: Mapping[str, Any]) -> tuple[SpecT | None, str | None]:
    """The object's spec as ``model``, or None and a message naming the offending field.

    An invalid spec is a status the user sees, not an exception: it must never crash or retry.
    """
    try:
        return model.model_validate(body.get("spec") or {}), None
    except ValidationError as exc:
        return None, describe_validation_error(exc, root="spec", limit=SPEC_ERRORS_SHOWN)


class Reconciler:
    """Scheduling, retries and status writes for one custom resource kind.

    Subclasses set ``api_version``/``plural``/``kind``/``log``, implement
    :meth:`_reconcile_once` and may override the hooks below.
    """

    api_version: ClassVar[str]
    plural: ClassVar[str]
    kind: ClassVar[str]
    log: ClassVar[logging.Logger]
    # False: a successful reconcile that asks to be requeued keeps the failure count, for a
    # controller that also counts an expected-but-unavailable state (ModelServe without KubeRay).
    reset_failures_on_requeue: ClassVar[bool] = True

    def __init__(
        self, kube: Kube, settings: OperatorSettings, event_executor: Executor | None = None
    ) -> None:
        self.kube = kube
        self.settings = settings
        self._locks: dict[Key, asyncio.Lock] = {}
        self._due: dict[Key, float] = {}
        self._failures: dict[Key, int] = {}
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        # Events are best effort and must not queue in front of the reconciles' API calls.
        self._event_executor = event_executor or kube.executor
        self.phases: dict[Key, str | None] = {}
        metrics.PHASES.register(self.kind, lambda: self.phases)

    # --- hooks ----------------------------------------------------------------------------

    def needs_resync(self, phase: str | None) -> bool:
        """Whether the periodic resync re-reads an object in ``phase`` (default: never)."""
        return False

    def _cached_body(self, key: Key) -> Mapping[str, Any] | None:
        """The object last seen, to start a non-fresh reconcile from instead of a GET."""
        return None

    def _status_written(self, key: Key, written: dict[str, Any]) -> None:
        """Called with the object as returned by a successful status write."""

    def transition_events(self, old: Any, new: Any) -> Iterable[StatusEvent]:
        """The Events a status change from ``old`` to ``new`` is worth (default: none)."""
        return ()

    async def _reconcile_once(self, key: Key, body: dict[str, Any]) -> float | None:
        """One pass over ``body``; returns a requeue delay or None. A 409 restarts it."""
        raise NotImplementedError

    # --- bookkeeping ----------------------------------------------------------------------

    def forget(self, key: Key) -> None:
        for store in (self.phases, self._due, self._failures, self._locks):
            store.pop(key, None)  # type: ignore[attr-defined]

    def close(self) -> None:
        """Drop pending retries (the operator is shutting down)."""
        self._due.clear()

    def record_failure(self, key: Key) -> int:
        """Count one more failure of ``key`` (cleared by a successful reconcile); returns the count."""
        self._failures[key] = self._failures.get(key, 0) + 1
        return self._failures[key]

    # --- scheduling -----------------------------------------------------------------------

    def requeue(self, key: Key, delay: float) -> None:
        """Reconcile ``key`` again after ``delay`` seconds (an earlier pending retry wins)."""
        due = time.monotonic() + delay
        if key not in self._due or self._due[key] > due:
            self._due[key] = due
            self._wakeup.set()

    async def run_requeues(self, stop: asyncio.Event | None = None) -> None:
        """Run due retries and requeues, and resync periodically, until ``stop`` is set."""
        next_resync = time.monotonic() + self.settings.resync_seconds
        while stop is None or not stop.is_set():
            now = time.monotonic()
            if now >= next_resync:
                for key, phase in list(self.phases.items()):
                    if self.needs_resync(phase):
                        self._due.setdefault(key, now)
                next_resync = now + self.settings.resync_seconds
            due = [k for k, t in self._due.items() if t <= now]
            for key in due:
                self._due.pop(key, None)
                task = asyncio.create_task(self.reconcile_safely(*key, fresh=True))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            wait = min([next_resync - now, *(t - now for t in self._due.values())], default=1.0)
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.05, min(wait, 60.0)))

    async def reconcile_safely(
        self, namespace: str, name: str, body: Mapping[str, Any] | None = None, fresh: bool = False
    ) -> None:
        """Reconcile, coalescing triggers: while one runs for an object, further triggers only
        mark it dirty and it runs once more afterwards (a burst of child events costs two
        reconciles, not one per event).

        ``fresh``: read the object from the API server rather than the last one seen, for
        retries and the periodic resync, whose point is not to trust what was seen before."""
        key = (namespace, name)
        if key in self._running:
            self._dirty.add(key)
            return
        self._running.add(key)
        try:
            await self._reconcile_counted(key, body, fresh)
            while key in self._dirty:
                self._dirty.discard(key)
                await self._reconcile_counted(key, None)
        finally:
            self._running.discard(key)

    async def _reconcile_counted(self, key: Key, body: Mapping[str, Any] | None, fresh: bool = False) -> None:
        """Reconcile; on error count it, log it (without the spec) and retry with backoff."""
        namespace, name = key
        started = time.perf_counter()
        try:
            requeue = await self.reconcile(namespace, name, body, fresh)
        except Exception as exc:
            n = self.record_failure(key)
            delay = backoff(n)
            metrics.RECONCILES.labels(self.kind, "error").inc()
            metrics.ERRORS.labels(self.kind, type(exc).__name__).inc()
            self.log.warning(
                "reconcile of %s/%s failed (%s: %s); retry %d in %.1fs",
                namespace,
                name,
                type(exc).__name__,
                exc,
                n,
                delay,
            )
            self.requeue(key, delay)
            return
        finally:
            metrics.RECONCILE_SECONDS.labels(self.kind).observe(time.perf_counter() - started)
        if requeue is None or self.reset_failures_on_requeue:
            self._failures.pop(key, None)
        metrics.RECONCILES.labels(self.kind, "ok").inc()
        if requeue is not None:
            self.requeue(key, requeue)

    # --- the reconcile --------------------------------------------------------------------

    async def reconcile(
        self, namespace: str, name: str, body: Mapping[str, Any] | None = None, fresh: bool = False
    ) -> float | None:
        """One reconcile of ``namespace/name``; returns a requeue delay or None.

        Starts from ``body`` (or the last one seen unless ``fresh``), re-reading after a 409.
        """
        key = (namespace, name)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            for attempt in range(self.settings.max_status_retries):
                if body is None and attempt == 0 and not fresh:
                    body = self._cached_body(key)
                if body is None or attempt > 0:
                    body = await self.kube.run(
                        self.kube.get_or_none, self.api_version, self.plural, namespace, name
                    )
                    if body is None:
                        self.forget(key)
                        return None
                try:
                    return await self._reconcile_once(key, dict(body))
                except KubeError as exc:
                    if not exc.is_conflict or exc.is_already_exists:
                        raise
                    metrics.RECONCILES.labels(self.kind, "conflict").inc()
                    body = None  # somebody else wrote: start over from fresh state
            raise RuntimeError(f"status of {namespace}/{name} kept conflicting")

    async def _write_status(self, key: Key, obj: dict[str, Any], old: StatusT, new: StatusT) -> None:
        """Merge-patch status with the object's resourceVersion as precondition (stale → 409)."""
        namespace, name = key
        old_doc = obj.get("status") or {}
        patch_status: dict[str, Any] = new.to_status()
        for gone in set(old_doc) - set(patch_status):
            patch_status[gone] = None  # merge patch: null deletes
        patch = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "status": patch_status}
        written = await self.kube.run(
            self.kube.merge_patch, self.api_version, self.plural, namespace, name, patch, "status"
        )
        self._status_written(key, written)
        for event in self.transition_events(old, new):
            self._event(written, event.type, event.reason, event.message)

    def _event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event without making the reconcile wait for (or fail on) it."""
        involved = {"apiVersion": self.api_version, "kind": self.kind, "metadata": obj["metadata"]}

        def post() -> None:
            try:
                self.kube.post_event(involved, type_, reason, message)
            except Exception as exc:  # events are best effort
                self.log.debug("event %s for %s not posted: %s", reason, obj["metadata"]["name"], exc)

        self._event_executor.submit(post)
