"""Pure functions: which adapters are servable, and what ModelServe.status says.

Two rules keep the status honest:

* an adapter goes into the RayService only when its source says it is ready (a FineTuneJob
  that Succeeded, has an adapter URI and — when it has an evaluation gate — passed it, unless
  the entry opts out with ``allowUngated``, which status records);
* ``Ready`` is True only when KubeRay reports the Serve application RUNNING with serve
  endpoints (and KubeRay's own Ready condition, where it has one, agrees); an adapter is
  ``Active`` only once KubeRay has observed the RayService generation that contains it and
  the application is RUNNING on a cluster that is not mid-upgrade.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from healthnav.operator.conditions import get_condition, set_condition
from healthnav.operator.modelserve_spec import ModelServeSpec
from healthnav.operator.rayservice import APP_NAME, adapters_in, endpoint, ray_service_name

READY = "Ready"
UPGRADE_IN_PROGRESS = "UpgradeInProgress"
ADAPTERS_RESOLVED = "AdaptersResolved"
RAY_SERVICE_SYNCED = "RayServiceSynced"

RUNNING = "RUNNING"
FAILED_APP_STATES = frozenset({"DEPLOY_FAILED", "UNHEALTHY"})


@dataclass(frozen=True)
class AdapterResolution:
    """One spec.adapters entry, resolved (``uri`` set) or pending (``reason`` set)."""

    name: str
    uri: str | None = None
    reason: str | None = None
    message: str | None = None
    ungated: bool = False


def _conditions(body: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return list(((body or {}).get("status") or {}).get("conditions") or [])


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
        gate = get_condition(status.get("conditions"), "GatePassed")
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
    extra: dict[str, Any] = field(default_factory=dict)


def _app_status(rs_status: Mapping[str, Any], which: str = "activeServiceStatus") -> Mapping[str, Any] | None:
    apps = ((rs_status.get(which) or {}).get("applicationStatuses")) or {}
    return apps.get(APP_NAME)


def compute_status(
    ms: Mapping[str, Any],
    spec: ModelServeSpec | None,
    spec_error: str | None,
    resolutions: list[AdapterResolution],
    view: RayServiceView,
    now: str | None = None,
) -> dict[str, Any]:
    """The full ModelServe.status for what was observed (conditions merged with the old ones)."""
    meta = ms["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], meta.get("generation")
    old = dict(ms.get("status") or {})
    conds = list(old.get("conditions") or [])

    def cond(type_: str, status: str, reason: str, message: str = "") -> None:
        nonlocal conds
        conds = set_condition(conds, type_, status, reason, message, generation=generation, now=now)  # type: ignore[arg-type]

    status: dict[str, Any] = {"observedGeneration": generation}

    if spec is None:
        cond(READY, "False", "InvalidSpec", spec_error or "invalid spec")
        status.update(phase="Failed", message=spec_error, conditions=conds)
        return status

    pending = [r for r in resolutions if r.uri is None]
    if pending:
        cond(
            ADAPTERS_RESOLVED,
            "False",
            "AdaptersPending",
            "; ".join(f"{r.name}: {r.message}" for r in pending),
        )
    else:
        cond(ADAPTERS_RESOLVED, "True", "AllResolved", f"{len(resolutions)} adapter(s) resolved")

    if not view.installed:
        message = (
            "the ray.io/v1 RayService API is not served: install KubeRay (its CRDs and ray-operator) "
            "in this cluster; the ModelServe is retried with backoff"
        )
        cond(READY, "False", "KubeRayNotInstalled", message)
        status.update(phase="Pending", message=message, conditions=conds)
        status["adapters"] = _adapter_statuses(resolutions, set())
        status["activeAdapters"] = []
        return status
    if view.body is None:
        message = view.error or "creating the RayService"
        cond(READY, "False", "RayServiceNotCreated" if view.error else "Creating", message)
        status.update(phase="Failed" if view.error else "Pending", message=message, conditions=conds)
        status["adapters"] = _adapter_statuses(resolutions, set())
        status["activeAdapters"] = []
        return status

    rs = view.body
    rs_meta = rs.get("metadata") or {}
    rs_status = rs.get("status") or {}
    status["rayServiceName"] = ray_service_name(name)
    status["endpoint"] = endpoint(name, namespace)

    synced = (rs_status.get("observedGeneration") or 0) >= (rs_meta.get("generation") or 1)
    cond(
        RAY_SERVICE_SYNCED,
        "True" if synced else "False",
        "Observed" if synced else "WaitingForKubeRay",
        "KubeRay has observed the current RayService spec"
        if synced
        else "KubeRay has not yet observed the current RayService spec (is ray-operator running?)",
    )

    active_cluster = (rs_status.get("activeServiceStatus") or {}).get("rayClusterName")
    pending_cluster = (rs_status.get("pendingServiceStatus") or {}).get("rayClusterName")
    if active_cluster:
        status["activeRayClusterName"] = active_cluster
    if pending_cluster:
        status["pendingRayClusterName"] = pending_cluster
    cluster_status = (rs_status.get("activeServiceStatus") or {}).get("rayClusterStatus") or {}
    if active_cluster:
        status["replicas"] = int(cluster_status.get("readyWorkerReplicas") or 0)
        status["desiredReplicas"] = int(cluster_status.get("desiredWorkerReplicas") or 0)
    endpoints = int(rs_status.get("numServeEndpoints") or 0)
    status["serveEndpoints"] = endpoints

    apps = ((rs_status.get("activeServiceStatus") or {}).get("applicationStatuses")) or {}
    status["applications"] = [
        {
            "name": n,
            "status": a.get("status") or "",
            **({"message": a["message"][:4096]} if a.get("message") else {}),
        }
        for n, a in sorted(apps.items())
    ]

    rs_upgrade = get_condition(_conditions(rs), UPGRADE_IN_PROGRESS)
    upgrading = bool(pending_cluster) or bool(rs_upgrade and rs_upgrade.get("status") == "True")
    if upgrading:
        cond(
            UPGRADE_IN_PROGRESS,
            "True",
            (rs_upgrade or {}).get("reason") or "PendingClusterExists",
            f"KubeRay is preparing RayCluster {pending_cluster or '(pending)'} (new-cluster upgrade)",
        )
    else:
        cond(UPGRADE_IN_PROGRESS, "False", (rs_upgrade or {}).get("reason") or "NoPendingCluster", "")

    app = _app_status(rs_status)
    app_state = (app or {}).get("status") or ""
    rs_ready = get_condition(_conditions(rs), READY)
    kuberay_agrees = rs_ready is None or rs_ready.get("status") == "True"
    ready = app_state == RUNNING and endpoints > 0 and kuberay_agrees
    if ready:
        cond(
            READY,
            "True",
            "ApplicationRunning",
            f"application {APP_NAME} RUNNING with {endpoints} serve endpoint(s)",
        )
    elif app_state in FAILED_APP_STATES:
        cond(
            READY,
            "False",
            "ApplicationFailed",
            f"application {APP_NAME} {app_state}: {(app or {}).get('message') or ''}",
        )
    elif app_state == RUNNING and endpoints == 0:
        cond(
            READY,
            "False",
            "ZeroServeEndpoints",
            "application RUNNING but no pod is behind the serve Service yet",
        )
    elif app_state == RUNNING:
        cond(
            READY,
            "False",
            (rs_ready or {}).get("reason") or "NotReady",
            (rs_ready or {}).get("message") or "",
        )
    elif app_state:
        cond(READY, "False", "ApplicationDeploying", f"application {APP_NAME} is {app_state}")
    else:
        reason = (rs_ready or {}).get("reason") or "WaitingForRayCluster"
        cond(
            READY,
            "False",
            reason,
            (rs_ready or {}).get("message") or "waiting for KubeRay to start the Ray cluster",
        )

    configured = adapters_in(rs)
    if not ready:
        active: list[str] = []
    elif synced and not upgrading:
        active = sorted(configured)
    else:
        # Traffic still goes to the previous configuration: keep reporting what was active.
        active = sorted(_still(old, configured))
    status["activeAdapters"] = active
    status["adapters"] = _adapter_statuses(resolutions, set(active))

    if ready and upgrading:
        phase, message = "Upgrading", "serving; a new Ray cluster is being prepared"
    elif ready:
        phase, message = "Ready", None
    elif app_state in FAILED_APP_STATES:
        phase, message = "Failed", f"application {app_state}: {(app or {}).get('message') or ''}".strip()
    else:
        phase, message = "Deploying", get_condition(conds, READY)["message"]  # type: ignore[index]
    status.update(phase=phase, message=message, conditions=conds)
    return status


def _still(old: Mapping[str, Any], configured: Mapping[str, str]) -> set[str]:
    """Adapters active before that the old application still routes to (present in the old config)."""
    return {a for a in old.get("activeAdapters") or [] if a in configured}


def _adapter_statuses(resolutions: list[AdapterResolution], active: set[str]) -> list[dict[str, Any]]:
    out = []
    for r in resolutions:
        entry: dict[str, Any] = {"name": r.name}
        if r.uri is None:
            entry["state"] = "Pending"
        else:
            entry["state"] = "Active" if r.name in active else "Deploying"
            entry["uri"] = r.uri
        if r.reason:
            entry["reason"] = r.reason
        if r.message:
            entry["message"] = r.message[:1024]
        if r.ungated:
            entry["ungated"] = True
        out.append(entry)
    return out


def status_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return {k: v for k, v in old.items() if v is not None} != {k: v for k, v in new.items() if v is not None}


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


def transition_events(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Event]:
    """Kubernetes Events for what changed between two statuses (what ``kubectl describe`` shows)."""
    events: list[Event] = []
    old_ready = get_condition(old.get("conditions"), READY) or {}
    new_ready = get_condition(new.get("conditions"), READY) or {}
    if (old_ready.get("status"), old_ready.get("reason")) != (
        new_ready.get("status"),
        new_ready.get("reason"),
    ):
        if new_ready.get("status") == "True":
            events.append(Event("Normal", "Ready", new_ready.get("message") or "serving"))
        elif new_ready.get("reason") in (
            "KubeRayNotInstalled",
            "ApplicationFailed",
            "InvalidSpec",
            "RayServiceNotCreated",
        ):
            events.append(Event("Warning", new_ready["reason"], new_ready.get("message") or ""))
        elif old_ready.get("status") == "True":
            events.append(
                Event("Warning", "NotReady", new_ready.get("message") or new_ready.get("reason") or "")
            )
    old_adapters = {a["name"]: a for a in old.get("adapters") or []}
    for a in new.get("adapters") or []:
        before = old_adapters.get(a["name"]) or {}
        if a["state"] == before.get("state") and a.get("uri") == before.get("uri"):
            continue
        if a["state"] == "Active":
            events.append(
                Event("Normal", "AdapterActivated", f"adapter {a['name']} is live ({a.get('uri')})")
            )
        elif a["state"] == "Deploying":
            events.append(
                Event("Normal", "AdapterDeploying", f"adapter {a['name']} added to the Serve config")
            )
        elif a["state"] == "Pending" and before.get("state") != "Pending":
            events.append(Event("Normal", "AdapterPending", f"adapter {a['name']}: {a.get('message') or ''}"))
        if a.get("ungated") and not before.get("ungated"):
            events.append(
                Event(
                    "Warning",
                    "UngatedAdapter",
                    f"adapter {a['name']} is served without a passed evaluation gate",
                )
            )
    return events
