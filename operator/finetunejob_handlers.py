"""kopf wiring for FineTuneJob: thin handlers that feed :class:`FineTuneJobController`.

What is watched, and why it stays cheap:

* FineTuneJobs (all events, including the initial listing after a restart);
* batch/v1 Jobs, pods and ConfigMaps **carrying the operator's labels only**, filtered by
  the API server (``settings.watching.label_selectors``), so the operator never streams the
  cluster's other pods or ConfigMaps;
* each of those is kept as a small projection in a kopf index (memory: a few hundred bytes per
  object) and every event triggers a reconcile of the owning FineTuneJob.

No timers per object: retries, evaluation re-checks and the safety-net resync run in one
background task of the controller.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from healthnav.operator.finetunejob_controller import (
    FineTuneJobController,
    project_job,
    project_pod,
    project_progress,
)
from healthnav.operator.finetunejob_manifests import FTJ_LABEL, ROLE_LABEL
from healthnav.operator.finetunejob_spec import GROUP, PLURAL, VERSION
from healthnav.operator.kube import Kube
from healthnav.operator.settings import get_settings

CHILD_LABELS = {FTJ_LABEL: kopf.PRESENT}
PROGRESS_LABELS = {FTJ_LABEL: kopf.PRESENT, ROLE_LABEL: "progress"}


def configure_watching(settings: kopf.OperatorSettings) -> None:
    """Server-side label selectors: the API server sends only the operator's own children."""
    settings.watching.label_selectors["batch", "jobs"] = FTJ_LABEL
    settings.watching.label_selectors["v1", "pods"] = FTJ_LABEL
    settings.watching.label_selectors["v1", "configmaps"] = f"{FTJ_LABEL},{ROLE_LABEL}=progress"


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    configure_watching(settings)
    # Status and events are written by the controller itself, not by kopf's progress storage.
    settings.posting.level = 100  # kopf's own per-handler events would only duplicate ours
    settings.execution.max_workers = 8
    indices: Any = kwargs  # kopf passes every index as a keyword argument named after it

    def lookup(index_name: str) -> Any:
        index = indices[index_name]
        return lambda key: list(index.get(key, ()))

    kube = Kube.from_environment(max_workers=12, urgent_workers=16)
    controller = FineTuneJobController(
        kube,
        get_settings(),
        jobs=lookup("ftj_jobs"),
        pods=lookup("ftj_pods"),
        progress=lookup("ftj_progress"),
    )
    memo.ftj = controller
    memo.ftj_task = asyncio.create_task(controller.run_requeues())


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    task = getattr(memo, "ftj_task", None)
    if task is not None:
        task.cancel()
    controller: FineTuneJobController | None = getattr(memo, "ftj", None)
    if controller is not None:
        controller.kube.close()


# --- indexes of children, keyed by (namespace, FineTuneJob name) -------------------------------


@kopf.index("batch", "v1", "jobs", labels=CHILD_LABELS)
def ftj_jobs(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[FTJ_LABEL]): project_job(body)}


@kopf.index("v1", "pods", labels=CHILD_LABELS)
def ftj_pods(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[FTJ_LABEL]): project_pod(body)}


@kopf.index("v1", "configmaps", labels=PROGRESS_LABELS)
def ftj_progress(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[FTJ_LABEL]): project_progress(body)}


# --- triggers --------------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, PLURAL)
async def ftj_event(
    event: kopf.RawEvent, body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_: Any
) -> None:
    controller: FineTuneJobController = memo.ftj
    key = (namespace, name)
    if event["type"] == "DELETED":
        controller.forget(key)
        return
    raw = event["object"]
    if controller.observe(key, raw):
        await controller.reconcile_safely(namespace, name, body=raw)


@kopf.on.event("batch", "v1", "jobs", labels=CHILD_LABELS)
async def ftj_job_event(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    await memo.ftj.reconcile_safely(namespace, labels[FTJ_LABEL])


@kopf.on.event("v1", "pods", labels=CHILD_LABELS)
async def ftj_pod_event(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    await memo.ftj.reconcile_safely(namespace, labels[FTJ_LABEL])


@kopf.on.event("v1", "configmaps", labels=PROGRESS_LABELS)
async def ftj_progress_event(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    await memo.ftj.reconcile_safely(namespace, labels[FTJ_LABEL])
