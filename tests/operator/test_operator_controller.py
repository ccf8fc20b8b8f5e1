"""The FineTuneJob controller's create path against an in-memory API server that keeps the two
rules of the real one this path depends on: names are unique (409 AlreadyExists) and - for a
subject without the ``bind`` verb, like the chart's ServiceAccount - a RoleBinding is refused
with 404 while the Role it references does not exist (RBAC escalation check).

The cluster tests run the same code against a real API server; these pin down ordering and
the number of API round trips deterministically, which a real server under load cannot.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from ftj_helpers import manifest, valid_spec

from healthnav.operator.finetunejob_controller import FineTuneJobController, creation_waves
from healthnav.operator.kube import KubeError
from healthnav.operator.settings import OperatorSettings

pytestmark = pytest.mark.unit

# How long the fake API server takes to answer a create, by kind: a Role that is slower than
# its RoleBinding is what a busy API server produces now and then; here it happens every time.
CREATE_DELAY = {"Role": 0.02}


class FakeApiServer:
    """Just enough of the Kubernetes API for ``FineTuneJobController`` (plain dicts, async)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self._rv = itertools.count(100)

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if fn == self.create_or_get:
            await asyncio.sleep(CREATE_DELAY.get(args[0]["kind"], 0.0))
        await asyncio.sleep(0)
        return fn(*args, **kwargs)

    async def run_urgent(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.calls.append(("urgent", args[0]["kind"] if args and isinstance(args[0], dict) else ""))
        return await self.run(fn, *args, **kwargs)

    def _key(self, obj: dict[str, Any]) -> tuple[str, str, str]:
        return (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])

    def create_or_get(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.calls.append(("create", obj["kind"]))
        if obj["kind"] == "RoleBinding":
            role = ("Role", obj["metadata"]["namespace"], obj["roleRef"]["name"])
            if role not in self.objects:
                status = {"reason": "NotFound", "message": f"role {role[2]} not found"}
                raise KubeError(404, "Not Found", status)
        key = self._key(obj)
        if key in self.objects:
            return self.objects[key], False
        stored = {**obj, "metadata": {**obj["metadata"], "uid": f"uid-{key[2]}"}}
        self.objects[key] = stored
        return stored, True

    def get_or_none(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", plural))
        return self.objects.get(("FineTuneJob", namespace, name))

    def merge_patch(
        self,
        api_version: str,
        plural: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        subresource: str = "",
    ) -> dict[str, Any]:
        self.calls.append(("patch", f"{plural}/{subresource}" if subresource else plural))
        kind = "FineTuneJob" if plural == "finetunejobs" else "Job"
        obj = self.objects[(kind, namespace, name)]
        if subresource == "status":
            obj["status"] = {k: v for k, v in patch["status"].items() if v is not None}
        else:
            obj["spec"].update(patch.get("spec", {}))
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        return obj

    def post_event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.calls.append(("event", reason))


def _controller(api: FakeApiServer) -> FineTuneJobController:
    jobs = lambda key: [  # noqa: E731 - the operator's index of Jobs, read from the fake server
        o for (kind, ns, name), o in api.objects.items() if kind == "Job" and (ns, name) == key
    ]
    return FineTuneJobController(
        api,  # type: ignore[arg-type]
        OperatorSettings(read_metrics=False),
        jobs=jobs,
        pods=lambda key: [],
        progress=lambda key: [],
    )


def _ftj(api: FakeApiServer, name: str, suspend: bool = False) -> dict[str, Any]:
    ftj = manifest(name, "team", {**valid_spec(), "suspend": suspend})
    ftj["metadata"].update(uid=f"uid-{name}", generation=1, resourceVersion="1")
    api.objects[("FineTuneJob", "team", name)] = ftj
    return ftj


def test_role_binding_is_created_after_its_role() -> None:
    """The first reconcile succeeds under a non-admin identity: no 404 from the RoleBinding."""
    api = FakeApiServer()
    ftj = _ftj(api, "derm")

    async def scenario() -> float | None:
        return await _controller(api).reconcile("team", "derm", body=ftj)

    asyncio.run(scenario())  # raises KubeError(404) if the binding races its Role
    kinds = [kind for call, kind in api.calls if call == "create"]
    assert kinds.index("Role") < kinds.index("RoleBinding")
    assert {"Job", "ServiceAccount", "ConfigMap", "Role", "RoleBinding"} <= {k for k, _, _ in api.objects}
    job = api.objects[("Job", "team", "derm")]
    assert job["spec"]["suspend"] is False  # released once everything its pod needs exists
    assert api.objects[("FineTuneJob", "team", "derm")]["status"]["jobName"] == "derm"


def test_job_is_the_first_call_and_a_childs_event_needs_no_read() -> None:
    """Create → Job latency: the Job is the first API call, in the urgent lane; the reconcile
    that the Job's own event triggers starts from the FineTuneJob last seen (no GET)."""
    api = FakeApiServer()
    ftj = _ftj(api, "derm", suspend=True)
    controller = _controller(api)

    async def scenario() -> None:
        controller.observe(("team", "derm"), ftj)
        await controller.reconcile_safely("team", "derm", body=ftj)
        api.calls.clear()
        await controller.reconcile_safely("team", "derm")  # e.g. the Job's ADDED event

    asyncio.run(scenario())
    calls = [c for c in api.calls if c[0] != "event"]  # Events are posted from their own thread
    assert ("get", "finetunejobs") not in calls and calls == [], calls


def test_first_call_is_the_urgent_job_create() -> None:
    api = FakeApiServer()
    ftj = _ftj(api, "derm")
    asyncio.run(_controller(api).reconcile("team", "derm", body=ftj))
    assert api.calls[:2] == [("urgent", "Job"), ("create", "Job")]


def test_resync_reads_the_finetunejob_afresh() -> None:
    """The safety net does not trust the cached copy: a FineTuneJob deleted while its DELETED
    event was missed is noticed (GET → 404) and forgotten, not recreated."""
    api = FakeApiServer()
    ftj = _ftj(api, "derm", suspend=True)
    controller = _controller(api)

    async def scenario() -> None:
        controller.observe(("team", "derm"), ftj)
        await controller.reconcile_safely("team", "derm", body=ftj)
        del api.objects[("FineTuneJob", "team", "derm")]
        api.calls.clear()
        await controller.reconcile_safely("team", "derm", fresh=True)

    asyncio.run(scenario())
    assert [c for c in api.calls if c[0] != "event"] == [("get", "finetunejobs")]
    assert ("team", "derm") not in controller.phases


def test_creation_waves_put_bindings_last_and_keep_the_rest_concurrent() -> None:
    objs = [{"kind": k} for k in ("ServiceAccount", "RoleBinding", "ConfigMap", "Role")]
    assert creation_waves(objs) == [
        [{"kind": "ServiceAccount"}, {"kind": "ConfigMap"}, {"kind": "Role"}],
        [{"kind": "RoleBinding"}],
    ]
    assert creation_waves([{"kind": "ConfigMap"}]) == [[{"kind": "ConfigMap"}]]
