"""Small CPU workloads for the local cluster's real node: staged data and model, and the
FineTuneJob and ModelServe manifests the end-to-end tests and ``bench/real_node.py`` apply.

The base model is a tiny Mistral-architecture model built locally (the pods only need a real
model directory that the trainer, peft and vLLM load; quality is measured elsewhere), the
dataset is built by the real data pipeline from ``examples/datasets/demo.yaml``; both are
staged to the S3 server the pods reach.
"""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "healthnav"  # the namespace the chart-installed operator watches (values-local.yaml)
S3_SECRET = "s3-creds"
REAL_NODE = {"healthnav.dev/real-node": "true"}


@functools.cache
def staged_base_model(work: Path, uri: str = "s3://models/e2e-tiny-mistral/") -> str:
    """A tiny pretrained-shape model (safetensors + tokenizer) staged at ``uri``."""
    from healthnav.contracts import storage
    from healthnav.trainer.tinymodel import create_tiny_model

    local = work / "tiny-mistral"
    if not (local / "config.json").exists():
        corpus = [line for line in (REPO / "examples/data/instruction.jsonl").read_text().splitlines()]
        # hidden 128 / 4 heads: head_dim 32, the smallest vLLM's CPU attention kernels take.
        create_tiny_model(local, "mistral", corpus, hidden_size=128, layers=2, vocab_size=2048)
    storage.upload_dir(local, uri)
    return uri


@functools.cache
def staged_dataset(work: Path, uri: str = "s3://data/datasets/e2e/v1/") -> str:
    """The demo dataset, built by the data pipeline and staged at ``uri`` (manifest last)."""
    from healthnav.datapipe.build import build_dataset, load_config
    from healthnav.datapipe.stage import stage_dataset

    local = work / "dataset"
    if not (local / "manifest.json").exists():
        config, base = load_config(REPO / "examples" / "datasets" / "demo.yaml")
        build_dataset(config, base, output=str(local))
    stage_dataset(local, uri)
    return uri


def finetunejob(
    name: str,
    base_model: str,
    dataset: str,
    *,
    max_steps: int = 12,
    checkpoint_every_steps: int = 4,
    gates: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A CPU FineTuneJob for the real node: LoRA on the tiny model, no GPU asked for."""
    spec: dict[str, Any] = {
        "baseModel": {"uri": base_model, "secretRef": {"name": S3_SECRET}},
        "dataset": {"uri": dataset, "secretRef": {"name": S3_SECRET}},
        "method": "lora",
        "lora": {"r": 8, "alpha": 16, "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "training": {
            "epochs": 1,
            "maxSteps": max_steps,
            "learningRate": 5.0e-3,
            "batchSize": 1,
            "gradientAccumulationSteps": 1,
            "maxSeqLength": 256,
            "warmupSteps": 1,
            "checkpointEverySteps": checkpoint_every_steps,
        },
        "resources": {"gpus": 0, "cpu": "500m", "memory": "3Gi", "nodeSelector": dict(REAL_NODE)},
        "output": {"uri": "s3://models/finetunes/", "secretRef": {"name": S3_SECRET}},
        "backoffLimit": 2,
    }
    if gates is not None:
        spec["evaluation"] = {"gates": gates}
    return {
        "apiVersion": "healthnav.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


def modelserve(name: str, base_model: str, adapters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A CPU ModelServe for the real node: vLLM's CPU build in the server image, no GPU."""
    return {
        "apiVersion": "healthnav.io/v1alpha1",
        "kind": "ModelServe",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "baseModel": {"uri": base_model, "secretRef": {"name": S3_SECRET}},
            "adapters": adapters or [],
            "engine": "vllm",
            "engineArgs": {"maxModelLen": 512, "maxLoras": 2, "maxLoraRank": 16},
            "resources": {
                "gpusPerReplica": 0,
                "cpu": "500m",
                "memory": "6Gi",  # vLLM CPU: ~3 GiB in its three processes + 1 GiB KV cache
                "shmSize": "512Mi",
                "headCpu": "250m",
                "headMemory": "2Gi",
                "nodeSelector": dict(REAL_NODE),
                "headNodeSelector": dict(REAL_NODE),
            },
            "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
        },
    }


class SteadyTraffic:
    """Completions sent one after another from a thread while the ModelServe changes under it.

    What a client of a live endpoint sees during a rollout: every request counts as answered or
    failed, so "zero failed requests" is a measured figure, not an impression. ``client`` is an
    ``openai.OpenAI`` pointing at the serve Service.

    Example::

        with SteadyTraffic(client) as traffic:
            patch_the_base_model()
            wait_until_switched()
            traffic.wait_for_more(10, timeout=120)  # answered by the new cluster too
        assert traffic.sent and traffic.failed == 0
    """

    def __init__(self, client: Any, *, model: str = "base", interval: float = 0.2) -> None:
        self.client, self.model, self.interval = client, model, interval
        self.results: list[bool] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)

    def _send(self) -> None:
        while not self._stop.is_set():
            try:
                self.client.completions.create(model=self.model, prompt="Headache:", max_tokens=4, timeout=60)
                self.results.append(True)
            except Exception:  # any failure is what is being counted
                self.results.append(False)
            self._stop.wait(self.interval)

    @property
    def sent(self) -> int:
        return len(self.results)

    @property
    def failed(self) -> int:
        return self.results.count(False)

    def wait_for_more(self, count: int, timeout: float) -> None:
        """Block until ``count`` more requests than now have finished; TimeoutError otherwise."""
        target, deadline = self.sent + count, time.monotonic() + timeout
        while self.sent < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.sent - target + count} of {count} requests in {timeout} s")
            time.sleep(0.2)

    def __enter__(self) -> SteadyTraffic:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=90)
