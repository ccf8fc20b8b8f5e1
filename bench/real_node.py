"""The platform on the local cluster's real node, timed (issue 14's figures).

One run, as a user would drive it: ``hnav dev cluster up --real-node`` (images already built),
the chart installs the operator, then

* a CPU FineTuneJob: ``kubectl apply`` → trainer pod Running → FineTuneJob Succeeded;
* a ModelServe (vLLM's CPU build in Ray pods): apply → Ready;
* adapter rollout: a second FineTuneJob's Succeeded → its adapter answering on the live
  ModelServe (same Ray pods);
* a base-model switch under traffic: failed requests while KubeRay moves to a new RayCluster.

Writes bench/results/real_node.json. Needs root and ``make binaries images`` (as ``make test``).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from healthnav.devenv.chart import Release, install_operator, kubectl
from healthnav.devenv.cluster import LocalCluster
from healthnav.devenv.network import NODE_IP
from healthnav.devenv.s3 import LocalS3
from healthnav.devenv.workloads import (
    NAMESPACE,
    SteadyTraffic,
    finetunejob,
    modelserve,
    staged_base_model,
    staged_dataset,
)

RESULTS = Path(__file__).resolve().parent / "results" / "real_node.json"


def wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def get(cluster: LocalCluster, *args: str) -> dict[str, Any]:
    return json.loads(kubectl(cluster, "get", *args, "-o", "json"))


def apply(cluster: LocalCluster, manifest: dict[str, Any]) -> None:
    kubectl(cluster, "apply", "-f", "-", input_text=json.dumps(manifest))


def ftj_phase(cluster: LocalCluster, name: str) -> str:
    return (get(cluster, "ftj", name, "-n", NAMESPACE).get("status") or {}).get("phase") or ""


def ms_status(cluster: LocalCluster, name: str) -> dict[str, Any]:
    return get(cluster, "ms", name, "-n", NAMESPACE).get("status") or {}


def ms_ready(cluster: LocalCluster, name: str) -> bool:
    conds = ms_status(cluster, name).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def pod_running(cluster: LocalCluster, ftj: str) -> bool:
    pods = get(cluster, "pods", "-n", NAMESPACE, "-l", f"healthnav.io/finetunejob={ftj}")["items"]
    return any(p["status"].get("phase") == "Running" for p in pods)


def client(cluster: LocalCluster, ms: str) -> Any:
    from openai import OpenAI

    ip = get(cluster, "svc", f"{ms}-serve-svc", "-n", NAMESPACE)["spec"]["clusterIP"]
    return OpenAI(base_url=f"http://{ip}:8000/v1", api_key="unused", timeout=60, max_retries=0)


def time_finetune(cluster: LocalCluster, base: str, dataset: str, name: str) -> dict[str, float]:
    t0 = time.monotonic()
    apply(cluster, finetunejob(name, base, dataset, max_steps=12, gates={"rougeL": 0.0}))
    wait(lambda: pod_running(cluster, name), 600, "the trainer pod to run")
    running = time.monotonic() - t0
    phase = wait(
        lambda: ftj_phase(cluster, name) in ("Succeeded", "Failed") and ftj_phase(cluster, name), 900, name
    )
    if phase != "Succeeded":
        raise RuntimeError(f"FineTuneJob {name} {phase}")
    return {"applyToPodRunningS": round(running, 1), "applyToSucceededS": round(time.monotonic() - t0, 1)}


def count_switch_failures(cluster: LocalCluster, ms: str, new_base: str) -> dict[str, int]:
    before = {c["metadata"]["name"] for c in get(cluster, "rayclusters", "-n", NAMESPACE)["items"]}
    patch = json.dumps({"spec": {"baseModel": {"uri": new_base}}})

    def switched() -> bool:
        rs = get(cluster, "rayservice", ms, "-n", NAMESPACE).get("status") or {}
        active = (rs.get("activeServiceStatus") or {}).get("rayClusterName")
        return bool(active and active not in before and ms_ready(cluster, ms))

    with SteadyTraffic(client(cluster, ms)) as traffic:
        kubectl(cluster, "patch", "ms", ms, "-n", NAMESPACE, "--type=merge", "-p", patch)
        wait(switched, 900, "the switch to a new RayCluster", interval=2)
        traffic.wait_for_more(10, timeout=120)  # answered by the new cluster too
    return {"requests": traffic.sent, "failed": traffic.failed}


def main() -> None:
    from healthnav.contracts import storage
    from healthnav.contracts.storage import reset_clients

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cluster = LocalCluster("bench-real", work / "cluster", tie_to_parent=True, real_node=True)
        s3 = LocalS3("bench-real", work / "s3", tie_to_parent=True, host=NODE_IP)
        try:
            t0 = time.monotonic()
            cluster.up(timeout=1800)
            figures["clusterUpS"] = round(time.monotonic() - t0, 1)
            s3.up()
            os.environ.update(s3.env)
            reset_clients()
            for bucket in ("models", "data"):
                s3.create_bucket(bucket)
            t0 = time.monotonic()
            install_operator(cluster, s3, Release(watch_namespace=NAMESPACE))
            figures["chartInstallToOperatorReadyS"] = round(time.monotonic() - t0, 1)
            base, dataset = staged_base_model(work), staged_dataset(work)
            figures["finetune"] = time_finetune(cluster, base, dataset, "bench-ftj")

            t0 = time.monotonic()
            apply(cluster, modelserve("bench-ms", base))
            wait(lambda: ms_ready(cluster, "bench-ms"), 900, "ModelServe Ready", interval=2)
            figures["modelServeApplyToReadyS"] = round(time.monotonic() - t0, 1)

            time_finetune(cluster, base, dataset, "bench-rollout")
            done = time.monotonic()
            patch = json.dumps(
                {"spec": {"adapters": [{"name": "triage", "fromFineTuneJob": "bench-rollout"}]}}
            )
            kubectl(cluster, "patch", "ms", "bench-ms", "-n", NAMESPACE, "--type=merge", "-p", patch)
            api = client(cluster, "bench-ms")

            def answers() -> bool:
                try:
                    return bool(api.completions.create(model="triage", prompt="Cough:", max_tokens=4).choices)
                except Exception:
                    return False

            wait(answers, 600, "the adapter to answer", interval=1)
            figures["adapterRolloutSucceededToAnsweringS"] = round(time.monotonic() - done, 1)

            new_base = "s3://models/bench-tiny-mistral-v2/"
            for uri, _ in storage.list_objects(base):
                storage.write_bytes(new_base + uri.key.rsplit("/", 1)[-1], storage.read_bytes(uri))
            figures["baseModelSwitch"] = count_switch_failures(cluster, "bench-ms", new_base)
        finally:
            s3.down()
            cluster.down()
        figures["leftoversAfterDown"] = cluster.node.leftovers()
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
