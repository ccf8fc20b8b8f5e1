"""ModelServe reconcile: resolve adapters, apply the RayService, mirror its status.

Level-based like the FineTuneJob controller: every trigger (the ModelServe, its RayService, a
referenced FineTuneJob, a retry) runs the same :meth:`ModelServeController.reconcile`, which
looks at the whole current state, so a restart or a missed event cannot leave it stuck.

The RayService is written with server-side apply (field manager ``healthnav-operator``): the
operator owns exactly the fields it renders, KubeRay owns status, and a field the operator
stops rendering (an adapter removed) disappears from the object. A hash annotation of the
rendered object skips writes that would change nothing, so KubeRay status churn costs one GET.

KubeRay not installed is an expected state, not an error: the ModelServe gets
``Ready=False, reason=KubeRayNotInstalled`` and an Event, and is retried with a backoff
capped at five minutes (no hot loop, no crash).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any

from healthnav.operator import metrics
from healthnav.operator.adapter_verification import AdapterVerifier
from healthnav.operator.conditions import StatusEvent
from healthnav.operator.finetunejob_spec import API_VERSION as FTJ_API_VERSION
from healthnav.operator.finetunejob_spec import PLURAL as FTJ_PLURAL
from healthnav.operator.kube import FIELD_MANAGER, Kube, KubeError, path_for
from healthnav.operator.modelserve_spec import API_VERSION, KIND, PLURAL, ModelServeSpec, ModelServeStatus
from healthnav.operator.modelserve_status import (
    RUNNING,
    AdapterChecks,
    KubeRayView,
    RayServiceView,
    adapters_to_verify,
    compute_status,
    head_pod_failure,
    recorded_verifications,
    resolve_adapters,
    transition_events,
)
from healthnav.operator.rayservice import (
    DESIRED_HASH_ANNOTATION,
    MS_LABEL,
    RAY_API_VERSION,
    RAY_SERVICE_PLURAL,
    ResolvedAdapter,
    ray_service,
    service_account,
    serving_revision,
    spec_at,
)
from healthnav.operator.reconciler import Key, Reconciler, backoff, parse_spec_as
from healthnav.operator.schedule import active_capacity
from healthnav.operator.settings import OperatorSettings

log = logging.getLogger("healthnav.operator.modelserve")
NOT_SERVING_RECHECK_S = 15.0
"""How often a ModelServe that is not serving yet re-reads its head pods (one LIST each)."""


def _sooner(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


def parse_spec(body: Mapping[str, Any]) -> tuple[ModelServeSpec | None, str | None]:
    """The ModelServe's spec, or None and a message naming the field (shown in status)."""
    return parse_spec_as(ModelServeSpec, body)


class ModelServeController(Reconciler):
    """Owns reconciliation of ModelServes for one operator process.

    Every reconcile reads the ModelServe afresh (it keeps no cached copy) and there is no
    periodic resync: RayService and FineTuneJob events, and retries, drive it.
    """

    api_version = API_VERSION
    plural = PLURAL
    kind = KIND
    log = log
    # "KubeRay not installed" is counted as a failure too, so its retries back off even though
    # the reconcile itself succeeded.
    reset_failures_on_requeue = False

    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        event_executor: Executor | None = None,
        *,
        verifier: AdapterVerifier | None = None,
    ) -> None:
        super().__init__(kube, settings, event_executor)
        if verifier is None and settings.verify_adapters:
            verifier = AdapterVerifier(settings.adapter_verification_timeout_seconds)
        self.verifier = verifier
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        """Now, for autoscaling.schedule (tests set another clock)."""
        """None: adapters go Active once live, unverified (``verify_adapters`` off)."""

    def transition_events(self, old: ModelServeStatus, new: ModelServeStatus) -> list[StatusEvent]:
        return transition_events(old, new)

    # --- the reconcile --------------------------------------------------------------------

    async def _reconcile_once(self, key: Key, ms: dict[str, Any]) -> float | None:
        namespace = key[0]
        if ms["metadata"].get("deletionTimestamp"):
            return None  # garbage collection removes the RayService and ServiceAccount
        old_status = ModelServeStatus.from_status(ms.get("status"))
        spec, spec_error = parse_spec(ms)
        requeue: float | None = None
        resolutions = []
        view = RayServiceView()
        capacity = None
        if spec is not None:
            capacity = active_capacity(spec.autoscaling, self.clock())
            spec = spec_at(spec, capacity)
            if capacity.next_change_seconds is not None:  # wake at the next window boundary
                requeue = capacity.next_change_seconds + 1.0
            jobs = sorted({a.from_fine_tune_job for a in spec.adapters if a.from_fine_tune_job})
            bodies = await asyncio.gather(
                *(
                    self.kube.run(self.kube.get_or_none, FTJ_API_VERSION, FTJ_PLURAL, namespace, j)
                    for j in jobs
                )
            )
            previous = (ms.get("status") or {}).get("adapters")
            resolutions = resolve_adapters(spec, dict(zip(jobs, bodies, strict=True)), previous)
            ready = [ResolvedAdapter(r.name, r.uri) for r in resolutions if r.uri is not None]
            view = await self._apply(ms, spec, ready)
            if not view.installed:
                n = self.record_failure(key)
                requeue = _sooner(requeue, backoff(n) if n > 1 else 5.0)
            elif view.body is not None and KubeRayView.of(view.body).app_state != RUNNING:
                # Not serving yet: look at the head pods (KubeRay's status does not say when the
                # head crash-loops) and look again soon, since pod changes do not wake us.
                view.head_failure = head_pod_failure(await self._head_pods(namespace, key[1]))
                requeue = _sooner(requeue, NOT_SERVING_RECHECK_S)
        checks = None
        if spec is not None and self.verifier is not None:
            checks = await self._check_adapters(key, old_status, spec, view)
            if view.body is not None and set(adapters_to_verify(view.body)) - set(checks.results):
                requeue = min(requeue or NOT_SERVING_RECHECK_S, NOT_SERVING_RECHECK_S)  # ask again soon
        new_status = compute_status(
            ms,
            spec,
            spec_error,
            resolutions,
            view,
            checks=checks,
            window=capacity.window if capacity else None,
        )
        if new_status.differs_from(old_status):
            await self._write_status(key, ms, old_status, new_status)
        self.phases[key] = new_status.phase
        return requeue

    async def _check_adapters(
        self, key: Key, old: ModelServeStatus, spec: ModelServeSpec, view: RayServiceView
    ) -> AdapterChecks:
        """Verdicts for the live adapters: kept from status, or asked of the application."""
        assert self.verifier is not None
        revision = serving_revision(spec, self.settings)
        live = adapters_to_verify(view.body)
        results = recorded_verifications(old, live, revision)
        if todo := {n: u for n, u in live.items() if n not in results}:
            results |= await self.verifier.verify(key[1], key[0], todo)
        return AdapterChecks(revision, results)

    async def _apply(
        self, ms: dict[str, Any], spec: ModelServeSpec, adapters: list[ResolvedAdapter]
    ) -> RayServiceView:
        """Make the RayService (and default ServiceAccount) match the spec; observe the result."""
        meta = ms["metadata"]
        desired = ray_service(ms, spec, adapters, self.settings)
        if not await self._kuberay_installed():
            return RayServiceView(installed=False)
        current = await self.kube.run(
            self.kube.get_or_none, RAY_API_VERSION, RAY_SERVICE_PLURAL, meta["namespace"], meta["name"]
        )
        if not spec.service_account_name:
            _, created = await self.kube.run(self.kube.create_or_get, service_account(ms))
            if created:
                metrics.CHILDREN_CREATED.labels(KIND, "ServiceAccount").inc()
        want = desired["metadata"]["annotations"][DESIRED_HASH_ANNOTATION]
        have = ((current or {}).get("metadata") or {}).get("annotations", {}).get(DESIRED_HASH_ANNOTATION)
        if current is not None and have == want:
            return RayServiceView(body=current)
        try:
            applied = await self.kube.run(self._server_side_apply, desired)
        except KubeError as exc:
            if exc.status in (400, 422):
                # The RayService CRD rejected what we rendered: report it, do not hot-loop.
                return RayServiceView(error=f"RayService rejected: {exc.body.get('message') or exc}")
            raise
        if current is None:
            metrics.CHILDREN_CREATED.labels(KIND, "RayService").inc()
            log.info("created RayService %s/%s", meta["namespace"], meta["name"])
        return RayServiceView(body=applied)

    async def _head_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        selector = f"{MS_LABEL}={name},app.kubernetes.io/component=ray-head"
        return await self.kube.run(self.kube.list, "v1", "pods", namespace, selector)

    async def _kuberay_installed(self) -> bool:
        """Is ``ray.io/v1 rayservices`` served? (API discovery; cheap, and honest after an install.)"""
        try:
            doc = await self.kube.run(self.kube.request, "GET", f"/apis/{RAY_API_VERSION}")
        except KubeError as exc:
            if exc.status != 404:
                raise
            return False
        return any(r.get("name") == RAY_SERVICE_PLURAL for r in doc.get("resources") or [])

    def _server_side_apply(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        return self.kube.request(
            "PATCH",
            path_for(RAY_API_VERSION, RAY_SERVICE_PLURAL, meta["namespace"], meta["name"]),
            body=json.dumps(body),
            content_type="application/apply-patch+yaml",
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
        )
