"""ModelServe without a cluster: CRD generation, the RayService builder, adapter resolution,
and status derivation."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ms_helpers import INVALID, manifest, spillover, valid_spec
from pydantic import ValidationError

from healthnav.contracts.probes import AdapterVerification
from healthnav.operator.crdgen import render_crd_yaml
from healthnav.operator.modelserve_spec import MODELSERVE_CRD, ModelServeSpec, ModelServeStatus
from healthnav.operator.modelserve_status import (
    AdapterChecks,
    AdapterResolution,
    RayServiceView,
    adapters_to_verify,
    compute_status,
    head_pod_failure,
    recorded_verifications,
    resolve_adapters,
    transition_events,
)
from healthnav.operator.rayservice import (
    APP_NAME,
    REVISION_ANNOTATION,
    SPILLOVER_KEY_ENV,
    ResolvedAdapter,
    adapters_in,
    ray_service,
)
from healthnav.operator.settings import OperatorSettings
from healthnav.serving.config import IMPORT_PATH, SERVE_ENV, ServeAppConfig

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
SETTINGS = OperatorSettings(serving_image="ghcr.io/acme/serving:1.2.3", s3_endpoint_url="http://minio:9000")


def _ms(spec: dict[str, Any] | None = None, name: str = "triage", generation: int = 1) -> dict[str, Any]:
    m = manifest(name, "clinic", spec)
    m["metadata"].update(uid="1234-abcd", generation=generation, resourceVersion="7")
    return m


def _build(
    spec: dict[str, Any] | None = None, adapters: list[ResolvedAdapter] | None = None
) -> dict[str, Any]:
    ms = _ms(spec)
    return ray_service(ms, ModelServeSpec.model_validate(ms["spec"]), adapters or [], SETTINGS)


# --- CRD --------------------------------------------------------------------------------------


def test_committed_crd_equals_generated() -> None:
    committed = (REPO / "charts/healthnav/crds/modelserve.yaml").read_text()
    assert committed == render_crd_yaml(MODELSERVE_CRD), "run `hnav operator crds` and commit the result"


def test_crd_has_names_columns_and_status() -> None:
    crd = yaml.safe_load(render_crd_yaml(MODELSERVE_CRD))
    assert crd["metadata"]["name"] == "modelserves.healthnav.io"
    assert crd["spec"]["names"]["shortNames"] == ["ms"]
    assert crd["spec"]["names"]["categories"] == ["healthnav"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Ready", "Replicas", "Adapters", "Verified", "Endpoint", "Age"]


@pytest.mark.parametrize("case", [c for c in INVALID if c.in_spec], ids=lambda c: c.id)
def test_pydantic_rejects_what_the_api_server_rejects(case: Any) -> None:
    with pytest.raises(ValidationError):
        ModelServeSpec.model_validate(case.build("x")["spec"])


def test_valid_spec_and_defaults() -> None:
    spec = ModelServeSpec.model_validate({"baseModel": {"uri": "s3://models/m/"}})
    assert spec.engine == "vllm" and spec.autoscaling.min_replicas == 1 and spec.autoscaling.max_replicas == 4
    assert spec.resources.gpus_per_replica == 1 and spec.engine_args.max_lora_rank == 16
    ModelServeSpec.model_validate(valid_spec())


# --- RayService builder -----------------------------------------------------------------------


def test_rayservice_shape() -> None:
    rs = _build(adapters=[ResolvedAdapter("derm-v1", "s3://models/adapters/derm-v1/")])
    meta = rs["metadata"]
    assert (rs["apiVersion"], rs["kind"], meta["name"], meta["namespace"]) == (
        "ray.io/v1",
        "RayService",
        "triage",
        "clinic",
    )
    owner = meta["ownerReferences"][0]
    assert owner["kind"] == "ModelServe" and owner["uid"] == "1234-abcd" and owner["controller"] is True
    assert meta["labels"]["healthnav.io/modelserve"] == "triage"

    serve = yaml.safe_load(rs["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    assert app["name"] == APP_NAME and app["import_path"] == IMPORT_PATH and app["route_prefix"] == "/"
    args = ServeAppConfig.model_validate(app["args"])  # the server's own schema parses it
    assert args.base_model == "s3://models/biomistral-7b/"
    assert [(a.name, a.uri) for a in args.adapters] == [("derm-v1", "s3://models/adapters/derm-v1/")]
    assert args.autoscaling.max_replicas == 4 and args.num_gpus_per_replica == 1
    assert args.adapters_prefix is None  # removed adapters must not stay discoverable

    cluster = rs["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0" and head["rayStartParams"]["num-cpus"] == "0"
    head_container = head["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head_container["resources"]["requests"]
    assert head_container["image"] == "ghcr.io/acme/serving:1.2.3"

    (worker,) = cluster["workerGroupSpecs"]
    assert (worker["minReplicas"], worker["maxReplicas"]) == (1, 4)
    pod = worker["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["memory"] == "32Gi"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    keys = {t["matchExpressions"][0]["key"] for t in terms}
    assert keys == {"cloud.google.com/gke-accelerator", "k8s.amazonaws.com/accelerator"}
    assert all(t["matchExpressions"][0]["values"] == ["nvidia-l4"] for t in terms)
    assert pod["serviceAccountName"] == head["template"]["spec"]["serviceAccountName"] == "triage-serve"
    assert {"name": "AWS_ENDPOINT_URL_S3", "value": "http://minio:9000"} in container["env"]


def test_ray_serve_env_is_on_head_and_worker_containers() -> None:
    """The proxy and replicas read Ray Serve's settings when their processes start, so the
    throughput mode the serving layer was tuned with only takes effect from the pods' env."""
    cluster = _build()["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        env = {e["name"]: e.get("value") for e in group["template"]["spec"]["containers"][0]["env"]}
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
        assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0"
        assert {k: env[k] for k in SERVE_ENV} == SERVE_ENV


def test_operator_gets_serve_env_without_importing_ray() -> None:
    """The operator image has no Ray: the constant must come from the pydantic-only config."""
    code = (
        "import sys; import healthnav.operator.rayservice as r; "
        "from healthnav.serving.config import SERVE_ENV; "
        "assert r.SERVE_ENV is SERVE_ENV; "
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_adapter_changes_touch_only_serve_config_but_model_changes_touch_the_cluster() -> None:
    """KubeRay updates Serve in place iff rayClusterConfig is unchanged (ignoring replica counts)."""
    base = _build()
    with_adapter = _build(adapters=[ResolvedAdapter("triage-v3", "s3://models/finetunes/clinic/t/adapter/")])
    assert with_adapter["spec"]["rayClusterConfig"] == base["spec"]["rayClusterConfig"]
    assert with_adapter["spec"]["serveConfigV2"] != base["spec"]["serveConfigV2"]

    scaled = valid_spec()
    scaled["autoscaling"] = {"minReplicas": 2, "maxReplicas": 8}
    autoscaled = _build(scaled)
    strip = ("replicas", "minReplicas", "maxReplicas")
    groups = [
        [
            {k: v for k, v in g.items() if k not in strip}
            for g in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        ]
        for rs in (base, autoscaled)
    ]
    assert groups[0] == groups[1]

    for change in (
        lambda s: s["baseModel"].update(uri="s3://models/meditron-7b/"),
        lambda s: s.update(engine="transformers"),
        lambda s: s.update(image="ghcr.io/acme/serving:2.0.0"),
        lambda s: s["engineArgs"].update(maxModelLen=8192),
    ):
        spec = copy.deepcopy(valid_spec())
        change(spec)
        other = _build(spec)
        head = other["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["metadata"]["annotations"]
        base_head = base["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["metadata"]["annotations"]
        assert head[REVISION_ANNOTATION] != base_head[REVISION_ANNOTATION]
        assert other["spec"]["rayClusterConfig"] != base["spec"]["rayClusterConfig"]


def test_name_limit_and_own_service_account() -> None:
    spec = valid_spec()
    spec["serviceAccountName"] = "s3-reader"
    spec["apiKeySecretRef"] = {"name": "serving-keys"}
    rs = _build(spec)
    pod = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert pod["serviceAccountName"] == "s3-reader"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["HEALTHNAV_API_KEYS"]["valueFrom"]["secretKeyRef"] == {
        "name": "serving-keys",
        "key": "api-keys",
    }
    with pytest.raises(ValueError, match="47"):
        ray_service(_ms(name="a" * 48), ModelServeSpec.model_validate(valid_spec()), [], SETTINGS)


def _serve_args(rs: dict[str, Any]) -> dict[str, Any]:
    (app,) = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"]
    return dict(app["args"])


def _envs(rs: dict[str, Any]) -> list[dict[str, dict[str, Any]]]:
    cluster = rs["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [{e["name"]: e for e in p["template"]["spec"]["containers"][0]["env"]} for p in pods]


def test_without_spillover_the_serve_config_and_pods_are_as_before() -> None:
    rs = _build()
    args = _serve_args(rs)
    assert "spillover" not in args and "spillover" not in rs["spec"]["serveConfigV2"]
    assert set(args) == {f.alias for n, f in ServeAppConfig.model_fields.items() if n != "spillover"}
    assert all(SPILLOVER_KEY_ENV not in env for env in _envs(rs))


def test_spillover_reaches_the_server_and_its_key_only_as_a_secret_key_ref() -> None:
    spec = valid_spec()
    spec["spillover"] = spillover(weight=40, when=["saturated"])
    rs = _build(spec)
    assert _serve_args(rs)["spillover"] == {
        "baseURL": "https://api.openai.com/v1",
        "model": "gpt-4o-mini",
        "apiKeyEnv": SPILLOVER_KEY_ENV,
        "when": ["saturated"],
        "weight": 40,
        "timeoutSeconds": 60.0,
    }
    ServeAppConfig.model_validate(_serve_args(rs))  # the server's own schema reads it
    for env in _envs(rs):  # head (HTTP proxy) and workers (the replicas that forward)
        assert env[SPILLOVER_KEY_ENV] == {
            "name": SPILLOVER_KEY_ENV,
            "valueFrom": {"secretKeyRef": {"name": "openai", "key": "api-key"}},
        }
    text = yaml.safe_dump(rs)
    assert "apiKeySecretRef" not in text and "api-key" not in rs["spec"]["serveConfigV2"]


def test_moving_the_spillover_weight_updates_the_application_in_place() -> None:
    spec = valid_spec()
    spec["spillover"] = spillover(weight=100)
    before = _build(spec)
    spec["spillover"] = spillover(weight=20)
    after = _build(spec)
    assert after["spec"]["rayClusterConfig"] == before["spec"]["rayClusterConfig"]
    assert after["spec"]["serveConfigV2"] != before["spec"]["serveConfigV2"]


def test_spillover_defaults_to_both_reasons_and_weight_zero() -> None:
    spec = valid_spec()
    spec["spillover"] = {"upstream": spillover()["upstream"]}
    block = ModelServeSpec.model_validate(spec).spillover
    assert block is not None and block.when == ["notReady", "saturated"] and block.weight == 0


# --- adapter resolution -----------------------------------------------------------------------


def _ftj(
    phase: str, uri: str | None = None, gate: str | None = None, evaluation: bool = False
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if uri:
        status["output"] = {"adapterUri": uri}
    if gate:
        status["conditions"] = [{"type": "GatePassed", "status": gate, "message": "rougeL 0.2 < 0.3"}]
    return {"spec": {"evaluation": {"gates": {}}} if evaluation else {}, "status": status}


def _spec_with(*adapters: dict[str, Any]) -> ModelServeSpec:
    spec = valid_spec()
    spec["adapters"] = list(adapters)
    return ModelServeSpec.model_validate(spec)


def test_resolution_waits_for_success_and_gate() -> None:
    uri = "s3://models/finetunes/clinic/t/adapter/"
    spec = _spec_with({"name": "t", "fromFineTuneJob": "t"})
    cases = [
        (None, "FineTuneJobNotFound"),
        (_ftj("Running"), "FineTuneJobNotSucceeded"),
        (_ftj("Failed"), "FineTuneJobFailed"),
        (_ftj("Succeeded"), "AdapterUriMissing"),
        (_ftj("Succeeded", uri, gate="False", evaluation=True), "GateNotPassed"),
        (_ftj("Succeeded", uri, evaluation=True), "GateNotPassed"),  # gate not decided yet
    ]
    for body, reason in cases:
        (r,) = resolve_adapters(spec, {"t": body})
        assert (r.uri, r.reason) == (None, reason)
    (ok,) = resolve_adapters(spec, {"t": _ftj("Succeeded", uri)})
    assert (ok.uri, ok.reason, ok.ungated) == (uri, None, False)
    (gated,) = resolve_adapters(spec, {"t": _ftj("Succeeded", uri, gate="True", evaluation=True)})
    assert gated.uri == uri

    ungated_spec = _spec_with({"name": "t", "fromFineTuneJob": "t", "allowUngated": True})
    (forced,) = resolve_adapters(ungated_spec, {"t": _ftj("Succeeded", uri, gate="False", evaluation=True)})
    assert forced.uri == uri and forced.ungated is True


def test_deleted_finetunejob_keeps_serving_its_last_adapter() -> None:
    spec = _spec_with({"name": "t", "fromFineTuneJob": "t"})
    previous = [{"name": "t", "state": "Active", "uri": "s3://m/ft/t/adapter/"}]
    (r,) = resolve_adapters(spec, {"t": None}, previous)
    assert r.uri == "s3://m/ft/t/adapter/" and "no longer exists" in (r.message or "")


# --- status -----------------------------------------------------------------------------------


def _rs(
    adapters: list[ResolvedAdapter],
    app_status: str | None = "RUNNING",
    endpoints: int = 2,
    synced: bool = True,
    pending_cluster: str | None = None,
    ready: str | None = "True",
) -> dict[str, Any]:
    rs = _build(adapters=adapters)
    rs["metadata"]["generation"] = 3
    status: dict[str, Any] = {"observedGeneration": 3 if synced else 2, "numServeEndpoints": endpoints}
    active: dict[str, Any] = {
        "rayClusterName": "triage-abcde",
        "rayClusterStatus": {"readyWorkerReplicas": 2, "desiredWorkerReplicas": 3},
    }
    if app_status:
        active["applicationStatuses"] = {
            APP_NAME: {"status": app_status, "message": "boom" if "FAIL" in app_status else ""}
        }
    status["activeServiceStatus"] = active
    if pending_cluster:
        status["pendingServiceStatus"] = {"rayClusterName": pending_cluster}
    conds = []
    if ready:
        conds.append({"type": "Ready", "status": ready, "reason": "NonZeroServeEndpoints"})
    conds.append(
        {
            "type": "UpgradeInProgress",
            "status": "True" if pending_cluster else "False",
            "reason": "NoPendingCluster",
        }
    )
    status["conditions"] = conds
    rs["status"] = status
    return rs


def _status(
    rs: dict[str, Any] | None,
    resolutions: list[AdapterResolution],
    old: dict[str, Any] | None = None,
    checks: AdapterChecks | None = None,
):
    ms = _ms()
    if old:
        ms["status"] = old
    spec = ModelServeSpec.model_validate(ms["spec"])
    status = compute_status(
        ms, spec, None, resolutions, RayServiceView(body=rs), now="2025-01-01T00:00:00Z", checks=checks
    )
    return status.to_status()


def _events(old: dict[str, Any], new: dict[str, Any]) -> list[Any]:
    return transition_events(ModelServeStatus.from_status(old), ModelServeStatus.from_status(new))


def _cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_ready_only_when_running_with_endpoints() -> None:
    a = [ResolvedAdapter("derm-v1", "s3://m/derm/")]
    res = [
        AdapterResolution("derm-v1", uri="s3://m/derm/"),
        AdapterResolution("triage-v3", reason="X", message="m"),
    ]
    ok = _status(_rs(a), res)
    assert _cond(ok, "Ready")["status"] == "True" and ok["phase"] == "Ready"
    assert ok["endpoint"] == "http://triage-serve-svc.clinic.svc:8000"
    assert ok["activeAdapters"] == ["derm-v1"] and ok["replicas"] == 2 and ok["desiredReplicas"] == 3
    assert {x["name"]: x["state"] for x in ok["adapters"]} == {"derm-v1": "Active", "triage-v3": "Pending"}
    assert _cond(ok, "AdaptersResolved")["status"] == "False"

    for rs, reason in (
        (_rs(a, app_status="DEPLOYING"), "ApplicationDeploying"),
        (_rs(a, endpoints=0), "ZeroServeEndpoints"),
        (_rs(a, app_status="DEPLOY_FAILED"), "ApplicationFailed"),
        (_rs(a, app_status=None, ready=None), "WaitingForRayCluster"),
        (_rs(a, ready="False"), "NonZeroServeEndpoints"),
    ):
        st = _status(rs, res)
        assert _cond(st, "Ready")["status"] == "False" and _cond(st, "Ready")["reason"] == reason
        assert st["activeAdapters"] == []
    failed = _status(_rs(a, app_status="DEPLOY_FAILED"), res)
    assert failed["phase"] == "Failed" and "boom" in failed["message"]
    assert failed["applications"] == [{"name": APP_NAME, "status": "DEPLOY_FAILED", "message": "boom"}]


def _head_pod(waiting: str | None, restarts: int = 0, last: dict[str, Any] | None = None) -> dict[str, Any]:
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    cs = {"name": "ray-head", "restartCount": restarts, "state": state, "lastState": {}}
    if last:
        cs["lastState"] = {"terminated": last}
    return {"metadata": {"name": "triage-head-x"}, "status": {"containerStatuses": [cs]}}


def test_crash_looping_head_keeps_the_modelserve_not_ready_with_the_reason() -> None:
    a = [ResolvedAdapter("derm-v1", "s3://m/derm/")]
    res = [AdapterResolution("derm-v1", uri="s3://m/derm/")]
    pod = _head_pod("CrashLoopBackOff", 4, {"exitCode": 1, "message": "ray: command not found"})
    failure = head_pod_failure([pod])
    assert failure is not None and "CrashLoopBackOff" in failure and "exit code 1" in failure
    assert "ray: command not found" in failure
    ms = _ms()
    spec = ModelServeSpec.model_validate(ms["spec"])
    view = RayServiceView(body=_rs(a, app_status=None, ready=None), head_failure=failure)
    st = compute_status(ms, spec, None, res, view, now="2025-01-01T00:00:00Z").to_status()
    ready = _cond(st, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "RayHeadFailing"
    assert "CrashLoopBackOff" in ready["message"] and st["phase"] != "Ready"
    # a head that is merely starting (or image pull never attempted) is not a failure
    assert head_pod_failure([_head_pod("ContainerCreating")]) is None
    assert head_pod_failure([_head_pod(None)]) is None
    assert "ErrImageNeverPull" in (head_pod_failure([_head_pod("ErrImageNeverPull")]) or "")


def test_still_ready_while_kuberay_upgrades_and_omits_the_active_applications() -> None:
    a = [ResolvedAdapter("derm-v1", "s3://m/derm/")]
    rs = _rs(a, app_status=None, ready="True", pending_cluster="triage-fghij")  # as KubeRay 1.5 reports it
    st = _status(rs, [AdapterResolution("derm-v1", uri="s3://m/derm/")])
    assert _cond(st, "Ready")["status"] == "True" and st["phase"] == "Upgrading"
    # but no Ready condition from KubeRay and no application status: not serving
    st = _status(_rs(a, app_status=None, ready=None), [AdapterResolution("derm-v1", uri="s3://m/derm/")])
    assert _cond(st, "Ready")["status"] == "False"


def test_a_first_deploy_that_is_stuck_says_why_from_the_pending_cluster() -> None:
    a = [ResolvedAdapter("derm-v1", "s3://m/derm/")]
    rs = _rs(a, app_status=None, ready="False")
    rs["status"]["pendingServiceStatus"] = {
        "rayClusterName": "triage-fghij",
        "applicationStatuses": {
            APP_NAME: {
                "status": "DEPLOYING",
                "serveDeploymentStatuses": {
                    "LLMServer": {"status": "UPDATING", "message": "1 replicas failed to start"}
                },
            }
        },
    }
    st = _status(rs, [AdapterResolution("derm-v1", uri="s3://m/derm/")])
    ready = _cond(st, "Ready")
    assert ready["status"] == "False" and st["phase"] != "Ready"
    assert "LLMServer UPDATING: 1 replicas failed to start" in ready["message"]


def test_new_adapter_is_deploying_until_kuberay_observes_it_and_upgrade_is_reported() -> None:
    old_adapters = [ResolvedAdapter("derm-v1", "s3://m/derm/")]
    both = [*old_adapters, ResolvedAdapter("triage-v3", "s3://m/t/")]
    res = [AdapterResolution(a.name, uri=a.uri) for a in both]
    previous = _status(_rs(old_adapters), res[:1])
    assert previous["activeAdapters"] == ["derm-v1"]
    unsynced = _status(_rs(both, synced=False), res, old=previous)
    assert unsynced["activeAdapters"] == ["derm-v1"]
    assert {x["name"]: x["state"] for x in unsynced["adapters"]} == {
        "derm-v1": "Active",
        "triage-v3": "Deploying",
    }
    synced = _status(_rs(both), res, old=unsynced)
    assert synced["activeAdapters"] == ["derm-v1", "triage-v3"]
    reasons = [e.reason for e in _events(unsynced, synced)]
    assert "AdapterActivated" in reasons

    upgrading = _status(_rs(both, pending_cluster="triage-fghij"), res, old=synced)
    assert upgrading["phase"] == "Upgrading" and _cond(upgrading, "UpgradeInProgress")["status"] == "True"
    assert upgrading["pendingRayClusterName"] == "triage-fghij"


def _verdict(name: str, state: str, message: str = "m") -> AdapterVerification:
    return AdapterVerification(adapter=name, state=state, message=message)


def test_a_live_adapter_is_active_only_once_its_engine_answers_as_in_training() -> None:
    live = [ResolvedAdapter("derm-v1", "s3://m/derm/"), ResolvedAdapter("triage-v3", "s3://m/t/")]
    res = [AdapterResolution(a.name, uri=a.uri) for a in live]
    rs = _rs(live)
    assert adapters_to_verify(rs) == {"derm-v1": "s3://m/derm/", "triage-v3": "s3://m/t/"}

    unchecked = _status(rs, res, checks=AdapterChecks("rev1"))
    assert {a["name"]: a["state"] for a in unchecked["adapters"]} == {
        "derm-v1": "Verifying",
        "triage-v3": "Verifying",
    }
    assert unchecked["activeAdapters"] == [] and unchecked["phase"] == "Ready"  # the base model serves
    assert _cond(unchecked, "AdaptersVerified")["status"] == "Unknown"

    refusal = "refused: it answers differently from training (2.1 nats/token ...)"
    checks = AdapterChecks(
        "rev1",
        {"derm-v1": _verdict("derm-v1", "Verified"), "triage-v3": _verdict("triage-v3", "Refused", refusal)},
    )
    checked = _status(rs, res, old=unchecked, checks=checks)
    derm, triage = checked["adapters"]
    assert (derm["state"], derm["verification"], derm["verifiedRevision"]) == ("Active", "Verified", "rev1")
    assert (triage["state"], triage["verification"], triage["message"]) == ("Refused", "Refused", refusal)
    assert checked["activeAdapters"] == ["derm-v1"]
    verified = _cond(checked, "AdaptersVerified")
    assert (verified["status"], verified["reason"]) == ("False", "AdapterRefused") and refusal in verified[
        "message"
    ]
    assert checked["phase"] == "Ready" and "triage-v3" in checked["message"]
    events = {e.reason: e for e in _events(unchecked, checked)}
    assert events["AdapterRefused"].type == "Warning" and refusal in events["AdapterRefused"].message
    assert "AdapterActivated" in events

    # The verdicts live in status: the same files on the same revision are not asked again; a new
    # revision (base model, engine) or new files are.
    old = ModelServeStatus.from_status(checked)
    uris = adapters_to_verify(rs)
    assert recorded_verifications(old, uris, "rev1") == checks.results
    assert recorded_verifications(old, uris, "rev2") == {}
    assert recorded_verifications(old, {**uris, "triage-v3": "s3://m/t2/"}, "rev1").keys() == {"derm-v1"}


def test_no_adapter_is_verified_while_the_application_deploys_or_upgrades() -> None:
    live = [ResolvedAdapter("derm-v1", "s3://m/derm/")]
    assert adapters_to_verify(_rs(live, synced=False)) == {}
    assert adapters_to_verify(_rs(live, pending_cluster="triage-fghij")) == {}
    assert adapters_to_verify(_rs(live, app_status="DEPLOYING")) == {}
    assert adapters_to_verify(_rs(live, endpoints=0)) == {}
    assert adapters_to_verify(None) == {}

    # Mid-upgrade the old cluster serves: its verified adapters stay Active with their verdicts.
    res = [AdapterResolution("derm-v1", uri="s3://m/derm/")]
    before = _status(
        _rs(live), res, checks=AdapterChecks("rev1", {"derm-v1": _verdict("derm-v1", "Verified")})
    )
    during = _status(_rs(live, pending_cluster="triage-fghij"), res, old=before, checks=AdapterChecks("rev2"))
    assert during["phase"] == "Upgrading" and during["activeAdapters"] == ["derm-v1"]
    assert during["adapters"] == before["adapters"]


def test_without_verification_a_live_adapter_is_active_and_no_condition_is_set() -> None:
    live = [ResolvedAdapter("derm-v1", "s3://m/derm/")]
    st = _status(_rs(live), [AdapterResolution("derm-v1", uri="s3://m/derm/")])
    assert st["activeAdapters"] == ["derm-v1"] and "verification" not in st["adapters"][0]
    assert all(c["type"] != "AdaptersVerified" for c in st["conditions"])


def test_kuberay_missing_is_a_condition_and_an_event() -> None:
    ms = _ms()
    spec = ModelServeSpec.model_validate(ms["spec"])
    st = compute_status(ms, spec, None, [], RayServiceView(installed=False)).to_status()
    ready = _cond(st, "Ready")
    assert (ready["status"], ready["reason"], st["phase"]) == ("False", "KubeRayNotInstalled", "Pending")
    assert [e.reason for e in _events({}, st)] == ["KubeRayNotInstalled"]
    again = compute_status({**ms, "status": st}, spec, None, [], RayServiceView(installed=False))
    assert _events(st, again.to_status()) == []


def test_adapters_in_reads_back_serve_config() -> None:
    rs = _build(adapters=[ResolvedAdapter("a", "s3://m/a/")])
    assert adapters_in(rs) == {"a": "s3://m/a/"}
    assert adapters_in({"spec": {"serveConfigV2": "{not yaml"}}) == {}


def test_example_manifest_is_valid() -> None:
    doc = yaml.safe_load((REPO / "examples/modelserve.yaml").read_text())
    spec = ModelServeSpec.model_validate(doc["spec"])
    assert [a.name for a in spec.adapters] == ["triage-v3", "derm-v1"]
