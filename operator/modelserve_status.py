"""Pure functions: which adapters are servable, and what the typed :class:`ModelServeStatus` says.

Two rules keep the status honest:

* an adapter goes into the RayService only when its source says it is ready (a FineTuneJob
  that Succeeded, has an adapter URI and — when it has an evaluation gate — passed it, unless
  the entry opts out with ``allowUngated``, which status records);
* ``Ready`` is True only when KubeRay reports the Serve application RUNNING with serve
  endpoints (and KubeRay's own Ready condition, where it has one, agrees); an adapter is
  ``Active`` only once KubeRay has observed the RayService generation that contains it and
  the application is RUNNING on a cluster that is not mid-upgrade, and — where the operator
  verifies adapters — once the running engine has scored the adapter's training probes as
  training did (:class:`AdapterChecks`); one it answers differently is ``Refused``.

:func:`compute_status` records what KubeRay reports about the RayService, then one small
function per condition (AdaptersResolved, AdaptersVerified, RayServiceSynced, UpgradeInProgress,
Ready) sets it, and the phase follows from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from healthnav.contracts.probes import AdapterVerification
from healthnav.operator.conditions import ConditionSet, StatusEvent, find_condition, now_rfc3339
from healthnav.operator.modelserve_spec import (
    AdapterStatus,
    ApplicationStatus,
    ModelServeSpec,
    ModelServeStatus,
)
from healthnav.operator.rayservice import APP_NAME, adapters_in, endpoint, ray_service_name

READY = "Ready"
UPGRADE_IN_PROGRESS = "UpgradeInProgress"
ADAPTERS_RESOLVED = "AdaptersResolved"
ADAPTERS_VERIFIED = "AdaptersVerified"
RAY_SERVICE_SYNCED = "RayServiceSynced"

RUNNING = "RUNNING"
FAILED_APP_STATES = frozenset({"DEPLOY_FAILED", "UNHEALTHY"})
MAX_ADAPTER_MESSAGE = 1024
MAX_APPLICATION_MESSAGE = 4096
KUBERAY_MISSING = (
    "the ray.io/v1 RayService API is not served: install KubeRay (its CRDs and ray-operator) "
    "in this cluster; the ModelServe is retried with backoff"
)


@dataclass(frozen=True)
class AdapterResolution:
    """One spec.adapters entry, resolved (``uri`` set) or pending (``reason`` set)."""

    name: str
    uri: str | None = None
    reason: str | None = None
    message: str | None = None
    ungated: bool = False


@dataclass(frozen=True)
class AdapterChecks:
    """What the serving engine found for each live adapter on ``revision`` (absent: not yet).

    The operator asks the running application (``GET /adapters/{name}/verification``) once per
    adapter files and serving revision; the verdict is kept in status, so a restart does not ask
    again and a new base model or engine (a new revision) does.
    """

    revision: str
    results: Mapping[str, AdapterVerification] = field(default_factory=dict)


def adapters_to_verify(rs: Mapping[str, Any] | None) -> dict[str, str]:
    """{name: uri} of the adapters the application serves now, on the current spec (empty while
    it deploys or upgrades: an answer then could come from the previous configuration)."""
    if rs is None or not KubeRayView.of(rs).serving_current_spec:
        return {}
    return adapters_in(rs)


def recorded_verifications(
    old: ModelServeStatus, live: Mapping[str, str], revision: str
) -> dict[str, AdapterVerification]:
    """The verdicts ``old`` status holds for the same adapter files on the same revision."""
    return {
        a.name: AdapterVerification(adapter=a.name, state=a.verification, message=a.message or "")
        for a in old.adapters
        if a.verification and a.name in live and a.uri == live[a.name] and a.verified_revision == revision
    }


def resolve_adapters(
    spec: ModelServeSpec,
    finetunejobs: Mapping[str, Mapping[str, Any] | None],
    previous: list[Mapping[str, Any]] | None = None,
) -> list[AdapterResolution]:
    """Resolve every adapter; ``finetunejobs`` maps each referenced name to its body (None: absent).

    A FineTuneJob deleted after its adapter went live keeps serving the last resolved URI (the
    artifacts outlive the job in S3): deleting a training record must not take production down.
    """
    before = {a.get("name"): a for a in previous or [] if a.get("uri") and a.get("state") != "Pending"}
    out: list[AdapterResolution] = []
    for entry in spec.adapters:
        if entry.uri is not None:
            out.append(AdapterResolution(entry.name, uri=entry.uri))
            continue
        job_name = entry.from_fine_tune_job
        assert job_name is not None  # the spec validator guarantees exactly one source
        ftj = finetunejobs.get(job_name)
        if ftj is None:
            kept = before.get(entry.name)
            if kept:
                out.append(
                    AdapterResolution(
                        entry.name,
                        uri=kept["uri"],
                        message=f"FineTuneJob {job_name} no longer exists; serving its last resolved adapter",
                        ungated=bool(kept.get("ungated")),
                    )
                )
            else:
                out.append(
                    AdapterResolution(
                        entry.name, reason="FineTuneJobNotFound", message=f"FineTuneJob {job_name} not found"
                    )
                )
            continue
        status = ftj.get("status") or {}
        phase = status.get("phase") or "Pending"
        if phase != "Succeeded":
            reason = "FineTuneJobFailed" if phase == "Failed" else "FineTuneJobNotSucceeded"
            out.append(
                AdapterResolution(entry.name, reason=reason, message=f"FineTuneJob {job_name} is {phase}")
            )
            continue
        uri = (status.get("output") or {}).get("adapterUri")
        if not uri:
            out.append(
                AdapterResolution(
                    entry.name,
                    reason="AdapterUriMissing",
                    message=f"FineTuneJob {job_name} succeeded without status.output.adapterUri",
                )
            )
            continue
        gate = find_condition(status.get("conditions"), "GatePassed")
        gated = bool((ftj.get("spec") or {}).get("evaluation")) or gate is not None
        passed = bool(gate and gate.get("status") == "True")
        if gated and not passed:
            why = (gate or {}).get("message") or "not evaluated yet"
            if not entry.allow_ungated:
                out.append(
                    AdapterResolution(
                        entry.name,
                        reason="GateNotPassed",
                        message=f"FineTuneJob {job_name} did not pass its evaluation gate: {why}",
                    )
                )
                continue
            out.append(
                AdapterResolution(
                    entry.name,
                    uri=uri,
                    ungated=True,
                    message=f"served despite the evaluation gate (allowUngated): {why}",
                )
            )
            continue
        out.append(AdapterResolution(entry.name, uri=uri))
    return out


@dataclass
class RayServiceView:
    """What the operator observed about its RayService."""

    installed: bool = True
    """False when the ray.io/v1 RayService API is not served (KubeRay's CRDs missing)."""
    body: Mapping[str, Any] | None = None
    error: str | None = None
    """Why the RayService could not be written (the API server's message)."""
    head_failure: str | None = None
    """Why a Ray head pod cannot start (read from the pods only while not Ready): KubeRay's
    RayService status says nothing about a head that crash-loops, so without it the ModelServe
    would sit in ``Deploying`` with no hint."""
    extra: dict[str, Any] = field(default_factory=dict)


# A container waiting for one of these reasons will not start by itself.
STUCK_WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
MAX_HEAD_MESSAGE = 512


def head_pod_failure(pods: list[Mapping[str, Any]]) -> str | None:
    """Why the Ray head cannot come up, from its pods' container statuses; None when it can.

    >>> pod = {"metadata": {"name": "h"}, "status": {"containerStatuses": [{"name": "ray-head",
    ...     "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
    ...     "lastState": {"terminated": {"exitCode": 1, "message": "boom"}}}]}}
    >>> head_pod_failure([pod])
    'Ray head pod h: container ray-head CrashLoopBackOff after 3 restart(s), last exit code 1: boom'
    """
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "?")
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason not in STUCK_WAITING_REASONS:
                continue
            text = f"Ray head pod {name}: container {cs.get('name')} {reason}"
            if restarts := cs.get("restartCount"):
                text += f" after {restarts} restart(s)"
            last = (cs.get("lastState") or {}).get("terminated") or {}
            if "exitCode" in last:
                text += f", last exit code {last['exitCode']}"
            detail = (last.get("message") or waiting.get("message") or "").strip()
            if detail:
                text += f": {detail}"
            return text[:MAX_HEAD_MESSAGE]
    return None


@dataclass(frozen=True)
class KubeRayView:
    """What KubeRay reports about the RayService, read once from its body."""

    synced: bool
    active_cluster: str | None
    pending_cluster: str | None
    cluster_status: Mapping[str, Any]
    endpoints: int
    applications: Mapping[str, Mapping[str, Any]]
    conditions: list[Mapping[str, Any]]
    pending_applications: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """The Serve applications on the cluster being prepared (a first deploy or an upgrade)."""

    @classmethod
    def of(cls, rs: Mapping[str, Any]) -> KubeRayView:
        rs_status = rs.get("status") or {}
        active = rs_status.get("activeServiceStatus") or {}
        pending = rs_status.get("pendingServiceStatus") or {}
        return cls(
            synced=(rs_status.get("observedGeneration") or 0)
            >= ((rs.get("metadata") or {}).get("generation") or 1),
            active_cluster=active.get("rayClusterName"),
            pending_cluster=(rs_status.get("pendingServiceStatus") or {}).get("rayClusterName"),
            cluster_status=active.get("rayClusterStatus") or {},
            endpoints=int(rs_status.get("numServeEndpoints") or 0),
            applications=active.get("applicationStatuses") or {},
            conditions=list(rs_status.get("conditions") or []),
            pending_applications=pending.get("applicationStatuses") or {},
        )

    @property
    def app(self) -> Mapping[str, Any]:
        return self.applications.get(APP_NAME) or {}

    @property
    def app_state(self) -> str:
        return self.app.get("status") or ""

    def condition(self, type_: str) -> Mapping[str, Any]:
        return find_condition(self.conditions, type_) or {}

    @property
    def upgrading(self) -> bool:
        """A new-cluster upgrade is under way (a pending cluster, or KubeRay's condition says so)."""
        return bool(self.pending_cluster) or self.condition(UPGRADE_IN_PROGRESS).get("status") == "True"

    @property
    def serving_current_spec(self) -> bool:
        """The application is RUNNING, with endpoints, on the spec KubeRay last observed, and no
        other cluster is being prepared: what answers now is what the RayService says."""
        return self.app_state == RUNNING and self.endpoints > 0 and self.synced and not self.upgrading

    def pending_app_summary(self) -> str | None:
        """What the cluster being prepared says about the app: its state and each deployment's
        message (e.g. replicas failing to start), so a stuck first deploy says why."""
        app = self.pending_applications.get(APP_NAME) or {}
        if not app:
            return None
        parts = [f"application {APP_NAME} {app.get('status') or 'pending'} on the new Ray cluster"]
        for name, dep in sorted((app.get("serveDeploymentStatuses") or {}).items()):
            if dep.get("message"):
                parts.append(f"{name} {dep.get('status') or ''}: {dep['message']}".strip())
        return "; ".join(parts)[:MAX_APPLICATION_MESSAGE]


def compute_status(
    ms: Mapping[str, Any],
    spec: ModelServeSpec | None,
    spec_error: str | None,
    resolutions: list[AdapterResolution],
    view: RayServiceView,
    now: str | None = None,
    checks: AdapterChecks | None = None,
    window: str | None = None,
) -> ModelServeStatus:
    """The full ModelServe.status for what was observed (conditions merged with the old ones).

    ``checks`` None: the operator does not verify adapters, and a live adapter is Active.
    ``window``: the autoscaling.schedule window in force (None: the defaults).
    """
    meta = ms["metadata"]
    generation = meta.get("generation")
    old = ModelServeStatus.from_status(ms.get("status"))
    conds = ConditionSet(old.conditions, generation=generation, now=now or now_rfc3339())
    status = ModelServeStatus(observed_generation=generation, schedule_window=window)
    if spec is None:
        conds.set(READY, "False", "InvalidSpec", spec_error or "invalid spec")
        return _finish(status, conds, "Failed", spec_error)
    _adapters_resolved(conds, resolutions)
    if not view.installed:
        conds.set(READY, "False", "KubeRayNotInstalled", KUBERAY_MISSING)
        return _without_ray_service(status, conds, resolutions, "Pending", KUBERAY_MISSING)
    if view.body is None:
        message = view.error or "creating the RayService"
        conds.set(READY, "False", "RayServiceNotCreated" if view.error else "Creating", message)
        return _without_ray_service(
            status, conds, resolutions, "Failed" if view.error else "Pending", message
        )

    kuberay = KubeRayView.of(view.body)
    _record_ray_service(status, kuberay, meta["name"], meta["namespace"])
    _ray_service_synced(conds, kuberay)
    upgrading = _upgrade_in_progress(conds, kuberay)
    ready = _ready(conds, kuberay, view.head_failure)
    configured = adapters_in(view.body)
    carried: dict[str, AdapterStatus] = {}
    if not ready:
        live: set[str] = set()
    elif kuberay.synced and not upgrading:
        live = set(configured)
    else:  # traffic still goes to the previous configuration: keep reporting what was active
        live = {a for a in old.active_adapters if a in configured}
        carried = {a.name: a for a in old.adapters if a.name in live}  # verified on that configuration
    status.adapters = _adapter_statuses(resolutions, live, checks, carried)
    status.active_adapters = sorted(a.name for a in status.adapters if a.state == "Active")
    refused = _adapters_verified(conds, status.adapters, checks)
    if ready and upgrading:
        return _finish(status, conds, "Upgrading", "serving; a new Ray cluster is being prepared")
    if ready:
        return _finish(status, conds, "Ready", refused)
    if kuberay.app_state in FAILED_APP_STATES:
        message = f"application {kuberay.app_state}: {kuberay.app.get('message') or ''}".strip()
        return _finish(status, conds, "Failed", message)
    ready_cond = conds.get(READY)
    return _finish(status, conds, "Deploying", ready_cond.message if ready_cond else None)


def _finish(
    status: ModelServeStatus, conds: ConditionSet, phase: str, message: str | None
) -> ModelServeStatus:
    status.phase = phase  # type: ignore[assignment]
    status.message = message
    status.conditions = conds.as_list()
    return status


def _without_ray_service(
    status: ModelServeStatus,
    conds: ConditionSet,
    resolutions: list[AdapterResolution],
    phase: str,
    message: str,
) -> ModelServeStatus:
    status.adapters = _adapter_statuses(resolutions, set())
    status.active_adapters = []
    return _finish(status, conds, phase, message)


def _record_ray_service(status: ModelServeStatus, kuberay: KubeRayView, name: str, namespace: str) -> None:
    status.ray_service_name = ray_service_name(name)
    status.endpoint = endpoint(name, namespace)
    if kuberay.active_cluster:
        status.active_ray_cluster_name = kuberay.active_cluster
        status.replicas = int(kuberay.cluster_status.get("readyWorkerReplicas") or 0)
        status.desired_replicas = int(kuberay.cluster_status.get("desiredWorkerReplicas") or 0)
    if kuberay.pending_cluster:
        status.pending_ray_cluster_name = kuberay.pending_cluster
    status.serve_endpoints = kuberay.endpoints
    status.applications = [
        ApplicationStatus(
            name=n,
            status=a.get("status") or "",
            **({"message": a["message"][:MAX_APPLICATION_MESSAGE]} if a.get("message") else {}),
        )
        for n, a in sorted(kuberay.applications.items())
    ]


def _adapters_resolved(conds: ConditionSet, resolutions: list[AdapterResolution]) -> None:
    pending = [r for r in resolutions if r.uri is None]
    if pending:
        conds.set(
            ADAPTERS_RESOLVED,
            "False",
            "AdaptersPending",
            "; ".join(f"{r.name}: {r.message}" for r in pending),
        )
    else:
        conds.set(ADAPTERS_RESOLVED, "True", "AllResolved", f"{len(resolutions)} adapter(s) resolved")


def _ray_service_synced(conds: ConditionSet, kuberay: KubeRayView) -> None:
    if kuberay.synced:
        conds.set(RAY_SERVICE_SYNCED, "True", "Observed", "KubeRay has observed the current RayService spec")
    else:
        conds.set(
            RAY_SERVICE_SYNCED,
            "False",
            "WaitingForKubeRay",
            "KubeRay has not yet observed the current RayService spec (is ray-operator running?)",
        )


def _upgrade_in_progress(conds: ConditionSet, kuberay: KubeRayView) -> bool:
    """A new-cluster upgrade is under way (a pending cluster, or KubeRay's own condition says so)."""
    rs_upgrade = kuberay.condition(UPGRADE_IN_PROGRESS)
    upgrading = kuberay.upgrading
    if upgrading:
        conds.set(
            UPGRADE_IN_PROGRESS,
            "True",
            rs_upgrade.get("reason") or "PendingClusterExists",
            f"KubeRay is preparing RayCluster {kuberay.pending_cluster or '(pending)'} (new-cluster upgrade)",
        )
    else:
        conds.set(UPGRADE_IN_PROGRESS, "False", rs_upgrade.get("reason") or "NoPendingCluster", "")
    return upgrading


def _ready(conds: ConditionSet, kuberay: KubeRayView, head_failure: str | None = None) -> bool:
    """Ready only when the application is RUNNING with serve endpoints and KubeRay agrees."""
    state, endpoints = kuberay.app_state, kuberay.endpoints
    rs_ready = kuberay.condition(READY)
    kuberay_agrees = not rs_ready or rs_ready.get("status") == "True"  # where it has a Ready condition
    # During a new-cluster upgrade KubeRay 1.5 stops reporting the active cluster's applications
    # while its own Ready stays True with serve endpoints: the old cluster still serves.
    serving_through_upgrade = not state and rs_ready.get("status") == "True"
    if (state == RUNNING or serving_through_upgrade) and endpoints > 0 and kuberay_agrees:
        conds.set(
            READY,
            "True",
            "ApplicationRunning",
            f"application {APP_NAME} RUNNING with {endpoints} serve endpoint(s)",
        )
        return True
    if head_failure:
        conds.set(READY, "False", "RayHeadFailing", head_failure)
    elif state in FAILED_APP_STATES:
        message = f"application {APP_NAME} {state}: {kuberay.app.get('message') or ''}"
        conds.set(READY, "False", "ApplicationFailed", message)
    elif state == RUNNING and endpoints == 0:
        conds.set(
            READY,
            "False",
            "ZeroServeEndpoints",
            "application RUNNING but no pod is behind the serve Service yet",
        )
    elif state == RUNNING:
        conds.set(READY, "False", rs_ready.get("reason") or "NotReady", rs_ready.get("message") or "")
    elif state:
        conds.set(READY, "False", "ApplicationDeploying", f"application {APP_NAME} is {state}")
    else:
        reason = rs_ready.get("reason") or "WaitingForRayCluster"
        message = kuberay.pending_app_summary() or rs_ready.get("message")
        conds.set(READY, "False", reason, message or "waiting for KubeRay to start the Ray cluster")
    return False


def _adapter_statuses(
    resolutions: list[AdapterResolution],
    live: set[str],
    checks: AdapterChecks | None = None,
    carried: Mapping[str, AdapterStatus] | None = None,
) -> list[AdapterStatus]:
    """One entry per spec.adapters entry; ``live``: routed to by the running application,
    ``carried``: live entries whose state stands from before (traffic on the old configuration)."""
    out = []
    for r in resolutions:
        if (kept := (carried or {}).get(r.name)) is not None:
            out.append(kept)
            continue
        entry = AdapterStatus(name=r.name, state="Pending" if r.uri is None else "Deploying")
        if r.uri is not None:
            entry.uri = r.uri
        if r.reason:
            entry.reason = r.reason
        if r.message:
            entry.message = r.message[:MAX_ADAPTER_MESSAGE]
        if r.ungated:
            entry.ungated = True
        if r.uri is not None and r.name in live:
            _verified_state(entry, checks)
        out.append(entry)
    return out


def _verified_state(entry: AdapterStatus, checks: AdapterChecks | None) -> None:
    """A live adapter: Active when servable (or unchecked by design), else Verifying or Refused."""
    verdict = checks.results.get(entry.name) if checks is not None else None
    if checks is None:
        entry.state = "Active"
    elif verdict is None:
        entry.state = "Verifying"
    else:
        entry.state = "Active" if verdict.servable else "Refused"
        entry.verification = verdict.state
        entry.verified_revision = checks.revision
        if entry.message is None:
            entry.message = verdict.message[:MAX_ADAPTER_MESSAGE]


def _adapters_verified(
    conds: ConditionSet, adapters: list[AdapterStatus], checks: AdapterChecks | None
) -> str | None:
    """Set AdaptersVerified (when the operator verifies); the phase message when one is refused."""
    if checks is None:
        return None
    refused = [a for a in adapters if a.state == "Refused"]
    verifying = [a.name for a in adapters if a.state == "Verifying"]
    if refused:
        names = ", ".join(a.name for a in refused)
        detail = "; ".join(f"{a.name}: {a.message}" for a in refused)
        conds.set(ADAPTERS_VERIFIED, "False", "AdapterRefused", detail[:MAX_APPLICATION_MESSAGE])
        return f"serving; adapter(s) refused, not served: {names} (see status.adapters)"
    if verifying:
        conds.set(
            ADAPTERS_VERIFIED,
            "Unknown",
            "Verifying",
            f"asking the application (GET /adapters/<name>/verification on the serve Service) about "
            f"{', '.join(verifying)}; if this persists, the operator cannot reach it (set the chart's "
            "serving.verifyAdapters=false to serve adapters unchecked)",
        )
        return None
    checked = [a for a in adapters if a.verification]
    unverified = [a.name for a in checked if a.verification == "NotRecorded"]
    message = f"{len(checked) - len(unverified)} live adapter(s) answer as in training"
    if unverified:
        message += f"; served unverified (no probes recorded): {', '.join(unverified)}"
    conds.set(ADAPTERS_VERIFIED, "True", "Verified", message)
    return None


_WARNING_READY_REASONS = frozenset(
    {"KubeRayNotInstalled", "ApplicationFailed", "InvalidSpec", "RayServiceNotCreated"}
)


def transition_events(old: ModelServeStatus, new: ModelServeStatus) -> list[StatusEvent]:
    """Kubernetes Events for what changed between two statuses (what ``kubectl describe`` shows)."""
    events = _ready_events(old, new)
    before = {a.name: a for a in old.adapters}
    for a in new.adapters:
        events += _adapter_events(before.get(a.name), a)
    return events


def _ready_events(old: ModelServeStatus, new: ModelServeStatus) -> list[StatusEvent]:
    old_ready = next((c for c in old.conditions if c.type == READY), None)
    new_ready = next((c for c in new.conditions if c.type == READY), None)
    if (old_ready and (old_ready.status, old_ready.reason)) == (
        new_ready and (new_ready.status, new_ready.reason)
    ):
        return []
    if new_ready is not None and new_ready.status == "True":
        return [StatusEvent("Normal", "Ready", new_ready.message or "serving")]
    if new_ready is not None and new_ready.reason in _WARNING_READY_REASONS:
        return [StatusEvent("Warning", new_ready.reason, new_ready.message)]
    if old_ready is not None and old_ready.status == "True":
        why = (new_ready.message or new_ready.reason) if new_ready else ""
        return [StatusEvent("Warning", "NotReady", why)]
    return []


def _adapter_events(before: AdapterStatus | None, a: AdapterStatus) -> list[StatusEvent]:
    if before is not None and a.state == before.state and a.uri == before.uri:
        return []
    events = []
    if a.state == "Active":
        events.append(StatusEvent("Normal", "AdapterActivated", f"adapter {a.name} is live ({a.uri})"))
    elif a.state == "Refused":
        events.append(StatusEvent("Warning", "AdapterRefused", f"adapter {a.name}: {a.message or ''}"))
    elif a.state == "Deploying":
        events.append(
            StatusEvent("Normal", "AdapterDeploying", f"adapter {a.name} added to the Serve config")
        )
    elif a.state == "Pending" and (before is None or before.state != "Pending"):
        events.append(StatusEvent("Normal", "AdapterPending", f"adapter {a.name}: {a.message or ''}"))
    if a.ungated and not (before is not None and before.ungated):
        events.append(
            StatusEvent(
                "Warning", "UngatedAdapter", f"adapter {a.name} is served without a passed evaluation gate"
            )
        )
    return events
