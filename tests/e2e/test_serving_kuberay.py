"""Real KubeRay serves a ModelServe from Ray pods on the real node.

ModelServe → RayService → RayCluster → Ray head and worker pods from the CPU server image (vLLM's
CPU build) → a RUNNING Serve application → ModelServe Ready with its endpoint; the official
``openai`` client gets completions from the base model and from an adapter through the serve
Service's ClusterIP (kube-proxy routes this machine's own traffic to it). A FineTuneJob that
passes its gate rolls its adapter in without restarting the Ray pods, Active only once the
operator pod has asked the Ray pods' vLLM to verify it; an adapter whose probes that engine
cannot reproduce is Refused in status and answers a 502; a new base model rolls to a
new RayCluster while a client keeps sending requests; a crash-looping Ray head keeps the
ModelServe not Ready with the reason in its conditions.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from kube_helpers import wait_for

from healthnav.devenv.node import NODE_NAME
from healthnav.devenv.workloads import SteadyTraffic

from .e2e_helpers import (
    E2E,
    NAMESPACE,
    finetunejob,
    modelserve,
    staged_base_model,
    staged_dataset,
    unique,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

READY_TIMEOUT = 900  # a cold RayCluster: head, worker, vLLM's CPU engine loading


def _ms(e2e: E2E, name: str) -> dict[str, Any]:
    return e2e.get("ms", name, "-n", NAMESPACE)


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def _ready(e2e: E2E, name: str) -> bool:
    cond = _condition(_ms(e2e, name), "Ready")
    return bool(cond and cond["status"] == "True")


def _ray_pods(e2e: E2E, name: str) -> list[dict[str, Any]]:
    return [
        p
        for p in e2e.pods(NAMESPACE, f"healthnav.io/modelserve={name}")
        if p["status"].get("phase") == "Running"
    ]


def _client(e2e: E2E, name: str) -> Any:
    from openai import OpenAI

    svc = e2e.get("svc", f"{name}-serve-svc", "-n", NAMESPACE)
    return OpenAI(
        base_url=f"http://{svc['spec']['clusterIP']}:8000/v1", api_key="unused", timeout=60, max_retries=0
    )


@pytest.fixture(scope="module")
def staged(e2e: E2E, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    work = tmp_path_factory.mktemp("e2e-serving-data")
    return staged_base_model(work), staged_dataset(work)


@pytest.fixture(scope="module")
def served(e2e: E2E, operator_release: dict[str, Any], staged: tuple[str, str]) -> dict[str, Any]:
    """A ModelServe whose adapter comes from a FineTuneJob still training when it is created."""
    base, dataset = staged
    ftj, name = unique("rollout"), unique("ms")
    e2e.apply(finetunejob(ftj, base, dataset, max_steps=8, gates={"rougeL": 0.0}))
    e2e.apply(modelserve(name, base, adapters=[{"name": "triage", "fromFineTuneJob": ftj}]))
    started = time.monotonic()
    wait_for(lambda: _ready(e2e, name), timeout=READY_TIMEOUT, what=f"ModelServe {name} Ready", interval=2.0)
    return {"name": name, "ftj": ftj, "base": base, "ready_seconds": time.monotonic() - started}


def test_a_modelserve_becomes_ready_on_ray_pods_and_answers_with_the_openai_client(
    e2e: E2E, served: dict[str, Any]
) -> None:
    name = served["name"]
    ms = _ms(e2e, name)
    assert ms["status"]["endpoint"].startswith(f"http://{name}-serve-svc.{NAMESPACE}.svc")
    pods = _ray_pods(e2e, name)
    assert {p["spec"]["nodeName"] for p in pods} == {NODE_NAME}
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"ghcr.io/healthnav/server:0.1.0-cpu"}
    rayservice = e2e.get("rayservice", name, "-n", NAMESPACE)
    assert (
        rayservice["status"]["activeServiceStatus"]["applicationStatuses"]["healthnav"]["status"] == "RUNNING"
    )
    client = _client(e2e, name)

    def listed() -> set[str] | None:
        try:
            return {m.id for m in client.models.list().data}
        except Exception:  # openai.APIConnectionError until kube-proxy routes the new endpoints
            return None

    # Ready follows KubeRay's serve endpoints; kube-proxy programs the Service's routes from the
    # same EndpointSlice on its own sync, so the first connection may trail Ready by seconds.
    models = wait_for(listed, timeout=60, what=f"{name}'s Service to route after Ready", interval=1.0)
    assert models >= {"base"}
    done = client.completions.create(
        model="base", prompt="Fever and a sore throat:", max_tokens=8, temperature=0
    )
    assert done.choices[0].text and done.usage.completion_tokens > 0


def test_a_gated_finetune_rolls_its_adapter_in_without_restarting_the_ray_pods(
    e2e: E2E, served: dict[str, Any]
) -> None:
    name = served["name"]
    uids = {p["metadata"]["uid"] for p in _ray_pods(e2e, name)}
    clusters = {c["metadata"]["name"] for c in e2e.get("rayclusters", "-n", NAMESPACE)["items"]}

    def adapter_active() -> bool:
        return "triage" in (_ms(e2e, name).get("status", {}).get("activeAdapters") or [])

    wait_for(adapter_active, timeout=900, what="the FineTuneJob's adapter to go live", interval=2.0)
    (entry,) = [a for a in _ms(e2e, name)["status"]["adapters"] if a["name"] == "triage"]
    # Active means the Ray pods' vLLM scored the trainer pod's probes as training did.
    assert entry["verification"] == "Verified", entry
    client = _client(e2e, name)

    def answers() -> bool:
        try:
            out = client.chat.completions.create(
                model="triage", messages=[{"role": "user", "content": "I have a cough."}], max_tokens=8
            )
            return bool(out.choices[0].message.content)
        except Exception:
            return False

    wait_for(answers, timeout=300, what="the adapter to answer", interval=2.0)
    assert {p["metadata"]["uid"] for p in _ray_pods(e2e, name)} == uids
    assert {c["metadata"]["name"] for c in e2e.get("rayclusters", "-n", NAMESPACE)["items"]} == clusters


def test_an_adapter_that_answers_differently_from_its_training_is_refused_in_status(
    e2e: E2E, served: dict[str, Any], tmp_path: Path
) -> None:
    """The trained adapter's files with probes its engine cannot reproduce (what a LoRA the
    engine mis-applies looks like): the rollout shows it Refused, not Active, and requests for it
    get a 502 that says why, while the base model and the verified adapter keep serving."""
    import openai

    from healthnav.contracts import storage
    from healthnav.contracts.probes import AdapterProbes

    name = served["name"]
    wait_for(
        lambda: "triage" in (_ms(e2e, name).get("status", {}).get("activeAdapters") or []),
        timeout=900,
        what="the FineTuneJob's adapter to go live",
        interval=2.0,
    )
    (trained,) = [a for a in _ms(e2e, name)["status"]["adapters"] if a["name"] == "triage"]
    local = storage.download_dir(trained["uri"], tmp_path / "tampered")
    probes = AdapterProbes.read(local)
    assert probes is not None, "the trainer ships probes with every adapter"
    for probe in probes.probes:
        probe.adapter_logprobs = [-50.0] * len(probe.adapter_logprobs)
    probes.write(local)
    uri = f"s3://models/e2e-tampered/{unique('adapter')}/"
    storage.upload_dir(local, uri, last=("adapter_config.json",))
    patch = [{"op": "add", "path": "/spec/adapters/-", "value": {"name": "tampered", "uri": uri}}]
    e2e.kubectl("patch", "modelserve", name, "-n", NAMESPACE, "--type=json", "-p", json.dumps(patch))

    def refused() -> dict[str, Any] | None:
        status = _ms(e2e, name).get("status", {})
        entry = next((a for a in status.get("adapters") or [] if a["name"] == "tampered"), None)
        return status if entry and entry["state"] == "Refused" else None

    status = wait_for(refused, timeout=300, what="the tampered adapter Refused in status", interval=2.0)
    (entry,) = [a for a in status["adapters"] if a["name"] == "tampered"]
    assert "answers differently from training" in entry["message"], entry
    assert "tampered" not in status["activeAdapters"] and "triage" in status["activeAdapters"]
    verified = _condition({"status": status}, "AdaptersVerified")
    assert verified is not None and (verified["status"], verified["reason"]) == ("False", "AdapterRefused")
    assert status["phase"] == "Ready"

    client = _client(e2e, name)
    with pytest.raises(openai.APIStatusError) as err:
        client.completions.create(model="tampered", prompt="Fever:", max_tokens=4, temperature=0)
    assert err.value.status_code == 502 and "answers differently from training" in str(err.value)
    assert client.completions.create(model="triage", prompt="Fever:", max_tokens=4).choices[0].text


def test_a_new_base_model_rolls_to_a_new_raycluster_without_failed_requests(
    e2e: E2E, served: dict[str, Any], staged: tuple[str, str]
) -> None:
    from healthnav.contracts import storage

    name = served["name"]
    new_base = "s3://models/e2e-tiny-mistral-v2/"
    for uri, _ in storage.list_objects(served["base"]):  # the same weights under a new name
        storage.write_bytes(new_base + uri.key.rsplit("/", 1)[-1], storage.read_bytes(uri))
    before = {c["metadata"]["name"] for c in e2e.get("rayclusters", "-n", NAMESPACE)["items"]}
    patch = f'{{"spec":{{"baseModel":{{"uri":"{new_base}"}}}}}}'

    def switched() -> bool:
        rs = e2e.get("rayservice", name, "-n", NAMESPACE)
        active = rs.get("status", {}).get("activeServiceStatus", {}).get("rayClusterName")
        return bool(active and active not in before and _ready(e2e, name))

    with SteadyTraffic(_client(e2e, name)) as traffic:
        e2e.kubectl("patch", "ms", name, "-n", NAMESPACE, "--type=merge", "-p", patch)
        wait_for(switched, timeout=READY_TIMEOUT, what="the switch to a new RayCluster", interval=2.0)
        traffic.wait_for_more(10, timeout=120)  # answered by the new cluster too
    print(f"base-model switch: {traffic.sent} requests, {traffic.failed} failed")
    assert traffic.sent and traffic.failed == 0


def test_a_crash_looping_ray_head_keeps_the_modelserve_not_ready_with_the_reason(
    e2e: E2E, operator_release: dict[str, Any], staged: tuple[str, str]
) -> None:
    base, _ = staged
    name = unique("broken")
    manifest = modelserve(name, base)
    # The trainer image has no Ray: the head container exits at once, again and again.
    manifest["spec"]["image"] = "ghcr.io/healthnav/trainer:0.1.0"
    e2e.apply(manifest)

    def reason() -> str | None:
        cond = _condition(_ms(e2e, name), "Ready")
        if cond and cond["status"] == "False" and "CrashLoopBackOff" in (cond.get("message") or ""):
            return cond["message"]
        return None

    message = wait_for(
        reason, timeout=300, what="the crash loop in the ModelServe's conditions", interval=2.0
    )
    assert "head" in message.lower()
    e2e.kubectl("delete", "ms", name, "-n", NAMESPACE, "--wait=false")
