"""kopf wiring for ModelServe: thin handlers that feed :class:`ModelServeController`.

Triggers, each running the same level-based reconcile of the affected ModelServe:

* ModelServes themselves (every event, including the initial listing after a restart);
* RayServices carrying the ``healthnav.io/modelserve`` label (server-side label selector), so
  KubeRay's status updates flow into ModelServe.status;
* FineTuneJobs: a kopf index maps ``(namespace, FineTuneJob)`` to the ModelServes whose adapters
  reference it, so a job reaching Succeeded (or passing its gate) rolls its adapter out at once.

If KubeRay's CRDs are absent, kopf only warns that it cannot watch RayServices; ModelServes
still reconcile (to ``KubeRayNotInstalled``) and are retried by the controller's own backoff
(:meth:`~healthnav.operator.reconciler.Reconciler.run_requeues`, started here).
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from healthnav.operator.finetunejob_spec import PLURAL as FTJ_PLURAL
from healthnav.operator.kube import Kube
from healthnav.operator.modelserve_controller import ModelServeController
from healthnav.operator.modelserve_spec import GROUP, PLURAL, VERSION
from healthnav.operator.rayservice import MS_LABEL, RAY_SERVICE_PLURAL
from healthnav.operator.settings import get_settings


def configure_watching(settings: kopf.OperatorSettings) -> None:
    """Only RayServices this operator made are streamed by the API server."""
    settings.watching.label_selectors["ray.io", RAY_SERVICE_PLURAL] = MS_LABEL


@kopf.on.startup()
async def _ms_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure_watching(settings)
    controller = ModelServeController(Kube.from_environment(), get_settings())
    memo.ms = controller
    # Retries (and the KubeRayNotInstalled backoff) run in this one background task.
    memo.ms_task = asyncio.create_task(controller.run_requeues())


@kopf.on.cleanup()
async def _ms_cleanup(memo: kopf.Memo, **_: Any) -> None:
    task = getattr(memo, "ms_task", None)
    if task is not None:
        task.cancel()
    controller: ModelServeController | None = getattr(memo, "ms", None)
    if controller is not None:
        controller.close()
        controller.kube.close()


@kopf.index(GROUP, VERSION, PLURAL)
def ms_by_finetunejob(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[Any, Any]:
    """(namespace, FineTuneJob name) → names of the ModelServes that serve its adapter."""
    return {
        (namespace, a["fromFineTuneJob"]): name
        for a in spec.get("adapters") or []
        if isinstance(a, dict) and a.get("fromFineTuneJob")
    }


@kopf.on.event(GROUP, VERSION, PLURAL)
async def ms_event(event: kopf.RawEvent, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    controller: ModelServeController = memo.ms
    if event["type"] == "DELETED":
        controller.forget((namespace, name))
        return
    await controller.reconcile_safely(namespace, name)


@kopf.on.event("ray.io", "v1", RAY_SERVICE_PLURAL, labels={MS_LABEL: kopf.PRESENT})
async def ms_rayservice_event(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    await memo.ms.reconcile_safely(namespace, labels[MS_LABEL])


@kopf.on.event(GROUP, VERSION, FTJ_PLURAL)
async def ms_finetunejob_event(
    namespace: str, name: str, memo: kopf.Memo, ms_by_finetunejob: kopf.Index[Any, str], **_: Any
) -> None:
    for ms_name in sorted(set(ms_by_finetunejob.get((namespace, name), ()))):
        await memo.ms.reconcile_safely(namespace, ms_name)
