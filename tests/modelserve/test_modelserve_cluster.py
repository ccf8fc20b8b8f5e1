"""ModelServe against a real control plane with KubeRay's real RayService CRD (from its Go module).

The API server validates ModelServes (OpenAPI + CEL) and RayServices (KubeRay's schema, which
prunes anything it does not know — so a round trip proves the builder emits valid fields).
KubeRay's ray-operator itself is not run (it would need real Ray pods): the tests play its
part by patching the RayService status subresource exactly as it does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from kube_helpers import CRDS, apply_crd, wait_for
from ms_helpers import INVALID, manifest, schedule, spillover, valid_spec
from operator_proc import OperatorProcess

from healthnav.devenv.kuberay import install_crds, uninstall_crds
from healthnav.operator.finetunejob_spec import API_VERSION as FTJ_API_VERSION
from healthnav.operator.kube import Kube, KubeError
from healthnav.operator.modelserve_controller import NOT_SERVING_RECHECK_S, ModelServeController
from healthnav.operator.modelserve_spec import API_VERSION, PLURAL, ModelServeSpec
from healthnav.operator.rayservice import APP_NAME, ResolvedAdapter, adapters_in, ray_service
from healthnav.operator.settings import OperatorSettings

pytestmark = pytest.mark.cluster
SETTINGS = OperatorSettings(verify_adapters=False)  # the verification test gives its own verifier


@pytest.fixture(scope="module")
def kube(cluster: Any) -> Iterator[Kube]:
    k = Kube(cluster.api_client())
    apply_crd(k, CRDS / "modelserve.yaml")
    apply_crd(k, CRDS / "finetunejob.yaml")
    yield k
    k.close()


@pytest.fixture
def ns(kube: Kube) -> str:
    name = f"ms-{uuid.uuid4().hex[:6]}"
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


@pytest.fixture(scope="module")
def kuberay(cluster: Any, kube: Kube) -> None:
    install_crds(cluster.api_client())


def _create_ms(kube: Kube, ns: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    body = manifest(name, ns, spec)
    return kube.request(
        "POST",
        f"/apis/{API_VERSION}/namespaces/{ns}/{PLURAL}",
        body=body,
        query={"fieldValidation": "Strict"},
    )


def _reconcile(controller: ModelServeController, ns: str, name: str) -> float | None:
    return asyncio.run(controller.reconcile(ns, name))


def _ms(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    return kube.get(API_VERSION, PLURAL, ns, name)


def _cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def _events(kube: Kube, ns: str, name: str) -> list[str]:
    items = kube.list("v1", "events", ns)
    return [
        e["reason"]
        for e in items
        if e["involvedObject"]["name"] == name and e["involvedObject"]["kind"] == "ModelServe"
    ]


def _is_subset(want: Any, have: Any, path: str = "") -> list[str]:
    """Paths in ``want`` missing or different in ``have`` (the API server may only add defaults)."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return [path]
        return [p for k, v in want.items() for p in _is_subset(v, have.get(k, _MISSING), f"{path}.{k}")]
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return [path]
        return [
            p
            for i, (w, h) in enumerate(zip(want, have, strict=True))
            for p in _is_subset(w, h, f"{path}[{i}]")
        ]
    return [] if want == have else [path]


_MISSING = object()


def _ftj(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": FTJ_API_VERSION,
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "baseModel": {"uri": "s3://models/biomistral-7b/"},
            "dataset": {"uri": "s3://data/datasets/triage/v3/"},
            "resources": {"gpus": 1, "gpuType": "nvidia-l4"},
            "output": {"uri": "s3://models/finetunes/"},
        },
    }


def _succeed_ftj(kube: Kube, ns: str, name: str, gate: str | None = None) -> str:
    """Write the status the FineTuneJob operator writes on success."""
    uri = f"s3://models/finetunes/{ns}/{name}/adapter/"
    status: dict[str, Any] = {"phase": "Succeeded", "output": {"adapterUri": uri}, "conditions": []}
    if gate:
        status["conditions"].append(
            {
                "type": "GatePassed",
                "status": gate,
                "reason": "Gates",
                "message": "rougeL 0.21 < 0.30",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
            }
        )
    kube.merge_patch(FTJ_API_VERSION, "finetunejobs", ns, name, {"status": status}, "status")
    return uri


def _kuberay_status(kube: Kube, ns: str, name: str, app: str = "RUNNING", endpoints: int = 1) -> None:
    """Patch the RayService status subresource the way KubeRay's controller does."""
    rs = kube.get("ray.io/v1", "rayservices", ns, name)
    status = {
        "observedGeneration": rs["metadata"]["generation"],
        "numServeEndpoints": endpoints,
        "serviceStatus": "Running" if app == "RUNNING" else "",
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if app == "RUNNING" and endpoints else "False",
                "reason": "NonZeroServeEndpoints" if endpoints else "ZeroServeEndpoints",
                "message": "",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
                "observedGeneration": rs["metadata"]["generation"],
            },
            {
                "type": "UpgradeInProgress",
                "status": "False",
                "reason": "NoPendingCluster",
                "message": "",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
                "observedGeneration": rs["metadata"]["generation"],
            },
        ],
        "activeServiceStatus": {
            "rayClusterName": f"{name}-x7k2p",
            "applicationStatuses": {APP_NAME: {"status": app, "message": "", "serveDeploymentStatuses": {}}},
            "rayClusterStatus": {"readyWorkerReplicas": 1, "desiredWorkerReplicas": 1},
        },
    }
    kube.merge_patch("ray.io/v1", "rayservices", ns, name, {"status": status}, "status")


# --- tests (the first runs before KubeRay's CRDs are installed) --------------------------------


def test_missing_kuberay_is_a_condition_and_event_then_recovers(cluster: Any, kube: Kube, ns: str) -> None:
    uninstall_crds(cluster.api_client())
    _create_ms(kube, ns, "triage", valid_spec())
    controller = ModelServeController(kube, SETTINGS)
    first = _reconcile(controller, ns, "triage")
    second = _reconcile(controller, ns, "triage")
    ms = _ms(kube, ns, "triage")
    ready = _cond(ms, "Ready")
    assert (ready["status"], ready["reason"], ms["status"]["phase"]) == (
        "False",
        "KubeRayNotInstalled",
        "Pending",
    )
    assert first is not None and second is not None and first > 0 and second > 0  # retried, with backoff
    wait_for(lambda: "KubeRayNotInstalled" in _events(kube, ns, "triage"), 10, "Warning event")

    install_crds(cluster.api_client())
    # created, not serving yet: no backoff any more, just the periodic look at the Ray head pods
    assert _reconcile(controller, ns, "triage") == NOT_SERVING_RECHECK_S
    assert kube.get_or_none("ray.io/v1", "rayservices", ns, "triage") is not None
    assert _cond(_ms(kube, ns, "triage"), "Ready")["reason"] != "KubeRayNotInstalled"


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_api_server_rejects_invalid_manifest_naming_the_field(kube: Kube, case: Any) -> None:
    body = case.build(f"bad-{uuid.uuid4().hex[:6]}")
    with pytest.raises(KubeError) as err:
        kube.request(
            "POST",
            f"/apis/{API_VERSION}/namespaces/default/{PLURAL}",
            body=body,
            query={"fieldValidation": "Strict"},
        )
    assert err.value.status in (400, 422), err.value  # 400: strict decoding (unknown field)
    assert case.field in err.value.body.get("message", ""), err.value.body.get("message")


def test_api_server_accepts_spillover_and_fills_in_its_defaults(kube: Kube, ns: str) -> None:
    spec = valid_spec()
    spec["spillover"] = {"upstream": spillover()["upstream"]}
    created = _create_ms(kube, ns, "spill", spec)
    assert created["spec"]["spillover"]["when"] == ["notReady", "saturated"]
    assert created["spec"]["spillover"]["weight"] == 0
    parsed = ModelServeSpec.model_validate(created["spec"]).spillover
    assert parsed is not None and parsed.upstream.base_url == "https://api.openai.com/v1"


def test_rayservice_round_trips_through_kuberays_schema(kuberay: None, kube: Kube, ns: str) -> None:
    spec = valid_spec()
    _create_ms(kube, ns, "triage", spec)
    controller = ModelServeController(kube, SETTINGS)
    _reconcile(controller, ns, "triage")
    stored = kube.get("ray.io/v1", "rayservices", ns, "triage")
    ms = _ms(kube, ns, "triage")
    built = ray_service(
        ms,
        ModelServeSpec.model_validate(ms["spec"]),
        [ResolvedAdapter("derm-v1", "s3://models/adapters/derm-v1/")],
        SETTINGS,
    )
    # Nothing the builder wrote was pruned or rewritten by KubeRay's structural schema.
    assert _is_subset(built["spec"], stored["spec"]) == []
    assert stored["metadata"]["ownerReferences"][0]["uid"] == ms["metadata"]["uid"]
    assert adapters_in(stored) == {"derm-v1": "s3://models/adapters/derm-v1/"}  # triage-v3 waits for its job
    sa = kube.get("v1", "serviceaccounts", ns, "triage-serve")
    assert sa["metadata"]["ownerReferences"][0]["kind"] == "ModelServe"
    adapters = {a["name"]: a for a in ms["status"]["adapters"]}
    assert (
        adapters["triage-v3"]["state"] == "Pending"
        and adapters["triage-v3"]["reason"] == "FineTuneJobNotFound"
    )
    assert ms["status"]["endpoint"] == f"http://triage-serve-svc.{ns}.svc:8000"
    assert _cond(ms, "Ready")["status"] == "False"


def test_the_schedule_moves_replica_bounds_in_place_and_wakes_at_the_next_boundary(
    kuberay: None, kube: Kube, ns: str
) -> None:
    spec = valid_spec()
    spec["autoscaling"] = {"minReplicas": 0, "maxReplicas": 2, "schedule": schedule()}
    _create_ms(kube, ns, "triage", spec)
    controller = ModelServeController(kube, SETTINGS)
    ny = ZoneInfo("America/New_York")

    def serve_bounds() -> tuple[tuple[int, int], str | None, str]:
        rs = kube.get("ray.io/v1", "rayservices", ns, "triage")
        a = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]["args"]["autoscaling"]
        return (
            (a["minReplicas"], a["maxReplicas"]),
            _ms(kube, ns, "triage")["status"].get("scheduleWindow"),
            rs["metadata"]["uid"],
        )

    controller.clock = lambda: datetime(2026, 12, 7, 18, 0, tzinfo=ny)  # Monday, clinic open
    _reconcile(controller, ns, "triage")
    _kuberay_status(kube, ns, "triage")  # serving: only the schedule asks to come back
    requeue = _reconcile(controller, ns, "triage")
    bounds, window, uid = serve_bounds()
    assert bounds == (1, 4) and window == "clinic-hours"
    assert requeue is not None and 3600 <= requeue <= 3600 + 2  # closes at 19:00
    controller.clock = lambda: datetime(2026, 12, 7, 19, 0, 1, tzinfo=ny)
    requeue = _reconcile(controller, ns, "triage")
    bounds, window, same_uid = serve_bounds()
    assert bounds == (0, 2) and window is None and same_uid == uid  # updated in place
    assert requeue is not None and abs(requeue - (12.5 * 3600 - 1)) < 3  # Tuesday 07:30


def test_finetunejob_success_rolls_adapter_out_in_place_and_status_follows_kuberay(
    kuberay: None, kube: Kube, ns: str
) -> None:
    spec = valid_spec()
    spec["adapters"] = [{"name": "triage-v3", "fromFineTuneJob": "triage-v3"}]
    _create_ms(kube, ns, "triage", spec)
    kube.create(_ftj(ns, "triage-v3"))
    controller = ModelServeController(kube, SETTINGS)
    _reconcile(controller, ns, "triage")
    before = kube.get("ray.io/v1", "rayservices", ns, "triage")
    assert adapters_in(before) == {}

    uri = _succeed_ftj(kube, ns, "triage-v3")
    _reconcile(controller, ns, "triage")
    after = kube.get("ray.io/v1", "rayservices", ns, "triage")
    assert adapters_in(after) == {"triage-v3": uri}
    # Same cluster spec → KubeRay updates the Serve application in place (no new RayCluster).
    assert after["spec"]["rayClusterConfig"] == before["spec"]["rayClusterConfig"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    ms = _ms(kube, ns, "triage")
    assert ms["status"]["adapters"] == [{"name": "triage-v3", "state": "Deploying", "uri": uri}]
    assert ms["status"]["activeAdapters"] == []

    _kuberay_status(kube, ns, "triage", app="DEPLOYING", endpoints=0)
    _reconcile(controller, ns, "triage")
    ms = _ms(kube, ns, "triage")
    assert (_cond(ms, "Ready")["status"], _cond(ms, "Ready")["reason"]) == ("False", "ApplicationDeploying")

    _kuberay_status(kube, ns, "triage")
    _reconcile(controller, ns, "triage")
    ms = _ms(kube, ns, "triage")
    assert _cond(ms, "Ready")["status"] == "True" and ms["status"]["phase"] == "Ready"
    assert ms["status"]["activeAdapters"] == ["triage-v3"] and ms["status"]["replicas"] == 1
    assert ms["status"]["activeRayClusterName"] == "triage-x7k2p"
    wait_for(lambda: "AdapterActivated" in _events(kube, ns, "triage"), 10, "AdapterActivated event")

    # Removing the adapter removes it from serveConfigV2 (server-side apply drops the field).
    kube.merge_patch(API_VERSION, PLURAL, ns, "triage", {"spec": {"adapters": []}})
    _reconcile(controller, ns, "triage")
    assert adapters_in(kube.get("ray.io/v1", "rayservices", ns, "triage")) == {}

    # A base-model change alters the cluster spec: KubeRay's new-cluster upgrade path.
    kube.merge_patch(
        API_VERSION, PLURAL, ns, "triage", {"spec": {"baseModel": {"uri": "s3://models/meditron-7b/"}}}
    )
    _reconcile(controller, ns, "triage")
    upgraded = kube.get("ray.io/v1", "rayservices", ns, "triage")
    assert upgraded["spec"]["rayClusterConfig"] != after["spec"]["rayClusterConfig"]


def test_failed_gate_blocks_adapter_unless_allow_ungated(kuberay: None, kube: Kube, ns: str) -> None:
    spec = valid_spec()
    spec["adapters"] = [{"name": "triage-v3", "fromFineTuneJob": "triage-v3"}]
    _create_ms(kube, ns, "triage", spec)
    ftj = _ftj(ns, "triage-v3")
    ftj["spec"]["evaluation"] = {"gates": {"rougeL": 0.3}}
    kube.create(ftj)
    uri = _succeed_ftj(kube, ns, "triage-v3", gate="False")
    controller = ModelServeController(kube, SETTINGS)
    _reconcile(controller, ns, "triage")
    assert adapters_in(kube.get("ray.io/v1", "rayservices", ns, "triage")) == {}
    (entry,) = _ms(kube, ns, "triage")["status"]["adapters"]
    assert entry["reason"] == "GateNotPassed"

    spec["adapters"][0]["allowUngated"] = True
    kube.merge_patch(API_VERSION, PLURAL, ns, "triage", {"spec": {"adapters": spec["adapters"]}})
    _reconcile(controller, ns, "triage")
    assert adapters_in(kube.get("ray.io/v1", "rayservices", ns, "triage")) == {"triage-v3": uri}
    (entry,) = _ms(kube, ns, "triage")["status"]["adapters"]
    assert entry["ungated"] is True
    wait_for(lambda: "UngatedAdapter" in _events(kube, ns, "triage"), 10, "UngatedAdapter event")


class _VerdictServer:
    """Stands in for a running Serve application's ``GET /adapters/{name}/verification`` on
    loopback (Ray pods do not run in this test; tests/e2e asks real ones): ``verdicts`` maps an
    adapter to its answer, or to None for a 503 (replica not ready)."""

    def __init__(self, verdicts: dict[str, dict[str, str] | None]) -> None:
        import http.server
        import json
        import threading

        self.verdicts, self.asked, self.bases = verdicts, [], set[str]()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                *base, name, _ = self.path.split("/")  # <base>/adapters/<name>/verification
                server.asked.append(name)
                server.bases.add("/".join(base))
                verdict = server.verdicts.get(name)
                body = json.dumps(verdict or {"error": {"message": "engine not ready"}}).encode()
                self.send_response(200 if verdict else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_an_adapter_the_engine_refuses_is_refused_in_status_and_a_verified_one_goes_active(
    kuberay: None, kube: Kube, ns: str
) -> None:
    from healthnav.operator.adapter_verification import AdapterVerifier

    refusal = "refused: it answers differently from training (1.900 nats/token from training's scores)"
    fake = _VerdictServer({"good": None, "bad": {"adapter": "bad", "state": "Refused", "message": refusal}})
    try:
        spec = valid_spec()
        spec["adapters"] = [
            {"name": "good", "uri": "s3://models/good/"},
            {"name": "bad", "uri": "s3://models/bad/"},
        ]
        _create_ms(kube, ns, "triage", spec)
        verifier = AdapterVerifier(5, base_url=lambda name, namespace: f"{fake.url}/{namespace}/{name}")
        controller = ModelServeController(kube, OperatorSettings(), verifier=verifier)
        _reconcile(controller, ns, "triage")
        assert fake.asked == []  # nothing is live yet: nothing to ask
        _kuberay_status(kube, ns, "triage")

        # "good"'s replica is not ready (503): it stays Verifying and the check comes back soon.
        assert _reconcile(controller, ns, "triage") == NOT_SERVING_RECHECK_S
        ms = _ms(kube, ns, "triage")
        states = {a["name"]: a["state"] for a in ms["status"]["adapters"]}
        assert states == {"good": "Verifying", "bad": "Refused"}
        assert ms["status"]["activeAdapters"] == [] and ms["status"]["phase"] == "Ready"
        bad = next(a for a in ms["status"]["adapters"] if a["name"] == "bad")
        assert (bad["verification"], bad["message"]) == ("Refused", refusal)
        assert (_cond(ms, "AdaptersVerified")["status"], _cond(ms, "AdaptersVerified")["reason"]) == (
            "False",
            "AdapterRefused",
        )
        wait_for(lambda: "AdapterRefused" in _events(kube, ns, "triage"), 10, "AdapterRefused event")

        fake.verdicts["good"] = {"adapter": "good", "state": "Verified", "message": "answers as in training"}
        asked = len(fake.asked)
        assert _reconcile(controller, ns, "triage") is None  # nothing left to ask
        assert fake.asked[asked:] == ["good"]  # "bad"'s verdict is kept in status, not asked again
        assert fake.bases == {f"/{ns}/triage/adapters"}  # this ModelServe's application
        ms = _ms(kube, ns, "triage")
        assert ms["status"]["activeAdapters"] == ["good"]
        assert {a["name"]: a["verification"] for a in ms["status"]["adapters"]} == {
            "good": "Verified",
            "bad": "Refused",
        }
    finally:
        fake.close()


# --- the whole operator (kopf wiring, FineTuneJob operator included) ---------------------------


@pytest.mark.slow
def test_operator_rolls_out_adapter_when_its_finetunejob_finishes(
    kuberay: None, cluster: Any, kube: Kube, ns: str, tmp_path: Path
) -> None:
    """kwok runs the training pod to completion → FineTuneJob Succeeded → adapter in serveConfigV2."""
    log = tmp_path / "operator.log"
    # No S3 in this test; the adapter URI is still reported.
    operator = OperatorProcess(cluster.kubeconfig, [ns], log, env={"HEALTHNAV_READ_METRICS": "false"})
    operator.start()
    try:
        spec = valid_spec()
        spec["adapters"] = [{"name": "triage-v3", "fromFineTuneJob": "triage-v3"}]
        _create_ms(kube, ns, "triage", spec)
        wait_for(lambda: kube.get_or_none("ray.io/v1", "rayservices", ns, "triage"), 30, "RayService created")
        kube.create(_ftj(ns, "triage-v3"))
        expected = f"s3://models/finetunes/{ns}/triage-v3/adapter/"
        wait_for(
            lambda: (
                adapters_in(kube.get("ray.io/v1", "rayservices", ns, "triage")) == {"triage-v3": expected}
            ),
            90,
            f"adapter in serveConfigV2 (log: {log})",
        )
        _kuberay_status(kube, ns, "triage")
        ms = wait_for(
            lambda: (m := _ms(kube, ns, "triage"))["status"].get("phase") == "Ready" and m,
            30,
            "ModelServe Ready from the RayService status",
        )
        assert ms["status"]["activeAdapters"] == ["triage-v3"]
    finally:
        operator.stop()
