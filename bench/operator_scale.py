"""FineTuneJob operator at scale: time from `create FineTuneJob` to `Job exists`, and memory.

    python -m bench.operator_scale            # writes bench/results/operator_scale.json

For N = 1, 100, 500 FineTuneJobs created at once (16 client threads) on a real local control
plane (healthnav.devenv), it watches Jobs and records, per object, the time from sending the
create to the Job's ADDED watch event. The floor is the same measurement for N batch/v1 Jobs
created directly with the client (what the operator's own create costs at minimum); the ratio
operator/floor is the overhead of the watch → reconcile → create path. The operator runs as a
subprocess (`hnav operator run`), exactly as in a pod; its RSS is read from /proc after 500.

Goals (issue 3): p99 < 1 s at 100 concurrent, RSS < 200 MB at 500.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import urllib3
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "operator"))

from healthnav.devenv.cluster import LocalCluster  # noqa: E402
from healthnav.operator.finetunejob_manifests import FTJ_LABEL  # noqa: E402
from healthnav.operator.kube import Kube, KubeError, path_for  # noqa: E402

SIZES = (1, 100, 500)
THREADS = 16


class JobWatcher(threading.Thread):
    """Streams Job ADDED events of one namespace; records the first time each name is seen."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        super().__init__(daemon=True)
        self.kube, self.namespace = kube, namespace
        self.seen: dict[str, float] = {}
        self.ready = threading.Event()

    def run(self) -> None:
        # The API server may end a watch at any time; resume from the last resourceVersion
        # (no event is lost: the server replays from there).
        resource_version = ""
        while True:
            try:
                resource_version = self._watch(resource_version)
            except Exception:
                time.sleep(0.05)

    def _watch(self, resource_version: str) -> str:
        api = self.kube.api
        path = path_for("batch/v1", "jobs", self.namespace) + "?watch=1"
        if resource_version:
            path += f"&resourceVersion={resource_version}"
        _, url, headers, _, _ = api.param_serialize(
            method="GET", resource_path=path, auth_settings=["BearerToken"]
        )
        resp = api.rest_client.pool_manager.request(
            "GET", url, headers=headers, preload_content=False, timeout=urllib3.Timeout(connect=10, read=None)
        )
        self.ready.set()
        for line in resp:
            if not line.strip():
                continue
            event = json.loads(line)
            resource_version = event["object"]["metadata"].get("resourceVersion", resource_version)
            name = event["object"]["metadata"]["name"]
            if event["type"] == "ADDED" and name not in self.seen:
                self.seen[name] = time.perf_counter()
        return resource_version


def percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)

    def pct(p: float) -> float:
        return values[min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))]

    return {
        "p50_ms": round(pct(50) * 1000, 1),
        "p99_ms": round(pct(99) * 1000, 1),
        "max_ms": round(values[-1] * 1000, 1),
        "mean_ms": round(statistics.fmean(values) * 1000, 1),
    }


def measure(kube: Kube, namespace: str, objects: list[dict[str, Any]], timeout: float = 300) -> list[float]:
    watcher = JobWatcher(kube, namespace)
    watcher.start()
    watcher.ready.wait(10)
    time.sleep(0.3)
    sent: dict[str, float] = {}

    def create(obj: dict[str, Any]) -> None:
        obj["metadata"]["namespace"] = namespace
        sent[obj["metadata"]["name"]] = time.perf_counter()
        for _ in range(5):
            try:
                kube.create(obj)
                return
            except KubeError as exc:
                if exc.status != 429:
                    raise
                time.sleep(0.2)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(create, objects))
    deadline = time.monotonic() + timeout
    while len(watcher.seen) < len(objects) and time.monotonic() < deadline:
        time.sleep(0.05)
    missing = set(sent) - set(watcher.seen)
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(objects)} never got a Job in {timeout} s")
    return [watcher.seen[name] - sent[name] for name in sent]


def direct_job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "healthnav/trainer:bench",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                }
            },
        },
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    from ftj_helpers import manifest, valid_spec
    from operator_proc import OperatorProcess

    work = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    cluster = LocalCluster(f"bench-operator-{os.getpid()}", work / "cluster", tie_to_parent=True).up()
    kube = Kube(cluster.api_client(), max_workers=THREADS)
    crd = yaml.safe_load((ROOT / "charts/healthnav/crds/finetunejob.yaml").read_text())
    kube.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=crd)
    time.sleep(3)
    run_id = os.getpid()
    namespaces = {n: f"bench-ftj-{n}-{run_id}" for n in SIZES}
    warmup_ns = f"bench-warmup-{run_id}"
    # Namespaces exist before the operator starts: kopf begins watching a namespace when it
    # appears, and that one-off start-up would otherwise be counted as reconcile latency.
    for ns in [warmup_ns, *(x for n in SIZES for x in (namespaces[n], f"bench-job-{n}-{run_id}"))]:
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    op = OperatorProcess(
        cluster.kubeconfig,
        [warmup_ns, *namespaces.values()],
        work / "operator.log",
        env={"HEALTHNAV_READ_METRICS": "false"},
    ).start()
    results: dict[str, Any] = {
        "sizes": {},
        "threads": THREADS,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "note": "FineTuneJobs created suspended, so the numbers "
        "measure the operator's create path, not kwok's pod simulation. One warm-up FineTuneJob "
        "(not counted) first: a just-created CRD answers kopf's first list with 429 'storage is "
        "(re)initializing' and kopf retries after 1 s, which is start-up, not create latency.",
    }
    try:
        rss_idle = rss_mb(op.proc.pid)  # type: ignore[union-attr]
        warm = measure(kube, warmup_ns, [manifest("warmup", "x", {**valid_spec(), "suspend": True})])
        results["warmup_ms"] = round(warm[0] * 1000, 1)
        for n in SIZES:
            ftjs = [manifest(f"ft-{i:04d}", "x", {**valid_spec(), "suspend": True}) for i in range(n)]
            op_lat = measure(kube, namespaces[n], ftjs)
            floor = measure(kube, f"bench-job-{n}-{run_id}", [direct_job(f"job-{i:04d}") for i in range(n)])
            o, f = percentiles(op_lat), percentiles(floor)
            results["sizes"][str(n)] = {
                "operator": o,
                "direct_job_floor": f,
                "ratio_p50": round(o["p50_ms"] / max(f["p50_ms"], 0.1), 2),
                "ratio_p99": round(o["p99_ms"] / max(f["p99_ms"], 0.1), 2),
            }
            print(n, results["sizes"][str(n)], flush=True)
        # Let the operator finish its status writes for all 600 objects, then weigh it.
        time.sleep(10)
        ns500 = namespaces[500]
        jobs = kube.list("batch/v1", "jobs", ns500, FTJ_LABEL)
        results["jobs_at_500"] = len(jobs)
        # Follow-up work done too (children, status): the burst's Jobs came first, not instead.
        statuses = kube.list("healthnav.io/v1alpha1", "finetunejobs", ns500)
        with_status = [f for f in statuses if (f.get("status") or {}).get("jobName")]
        results["ftjs_at_500_with_status"] = len(with_status)
        results["operator_rss_mb"] = {
            "idle": round(rss_idle, 1),
            "after_601_finetunejobs": round(rss_mb(op.proc.pid), 1),
        }  # type: ignore[union-attr]
        results["goals"] = {
            "p99_under_1s_at_100": results["sizes"]["100"]["operator"]["p99_ms"] < 1000,
            "rss_under_200mb_at_500": results["operator_rss_mb"]["after_601_finetunejobs"] < 200,
        }
    finally:
        op.stop()
        kube.close()
        cluster.down()
    out = ROOT / "bench" / "results" / "operator_scale.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
