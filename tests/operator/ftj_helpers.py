"""Shared FineTuneJob manifests for the operator tests: one valid spec, and the invalid ones
that both the API server (CEL + OpenAPI) and the pydantic models must reject."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from healthnav.operator.finetunejob_spec import API_VERSION, KIND


def valid_spec() -> dict[str, Any]:
    return {
        "baseModel": {"uri": "s3://models/biomistral-7b/"},
        "dataset": {"uri": "s3://data/datasets/triage/v3/"},
        "method": "qlora",
        "resources": {"gpus": 1, "gpuType": "nvidia-l4", "cpu": "8", "memory": "32Gi"},
        "output": {"uri": "s3://models/finetunes/"},
    }


def manifest(name: str, namespace: str = "default", spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec if spec is not None else valid_spec(),
    }


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(m: dict[str, Any]) -> None:
        node = m
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    return apply


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def apply(m: dict[str, Any]) -> None:
        node = m
        parts = path.split(".")
        for part in parts[:-1]:
            node = node[part]
        del node[parts[-1]]

    return apply


@dataclass(frozen=True)
class Invalid:
    id: str
    mutate: Callable[[dict[str, Any]], None]
    field: str
    """The field path the API server's error must name (e.g. spec.training.learningRate)."""
    in_spec: bool = True
    """False when only the API server can check it (metadata, unknown top-level fields)."""

    def build(self, name: str, namespace: str = "default") -> dict[str, Any]:
        m = copy.deepcopy(manifest(name, namespace))
        self.mutate(m)
        return m


INVALID: list[Invalid] = [
    Invalid("bad-method", _set("spec.method", "full"), "spec.method"),
    Invalid(
        "quantization-with-lora",
        lambda m: m["spec"].update(method="lora", quantization={"bits": 4}),
        "spec.quantization",
    ),
    Invalid("lora-rank-zero", _set("spec.lora.r", 0), "spec.lora.r"),
    Invalid("learning-rate-zero", _set("spec.training.learningRate", 0), "spec.training.learningRate"),
    Invalid("negative-epochs", _set("spec.training.epochs", -1), "spec.training.epochs"),
    Invalid(
        "metadata-endpoint-uri",
        _set("spec.baseModel.uri", "http://169.254.169.254/latest/meta-data/"),
        "spec.baseModel.uri",
    ),
    Invalid(
        "gce-metadata-uri",
        _set("spec.baseModel.uri", "https://metadata.google.internal/computeMetadata/v1/"),
        "spec.baseModel.uri",
    ),
    Invalid("hub-id-as-dataset", _set("spec.dataset.uri", "someorg/some-dataset"), "spec.dataset.uri"),
    Invalid("file-output", _set("spec.output.uri", "file:///tmp/out/"), "spec.output.uri"),
    Invalid("bad-bucket", _set("spec.output.uri", "s3://Bad_Bucket/x/"), "spec.output.uri"),
    Invalid("dot-dot-path", _set("spec.baseModel.uri", "s3://models/../secrets/"), "spec.baseModel.uri"),
    Invalid("qlora-without-gpu", _set("spec.resources.gpus", 0), "spec.resources.gpus"),
    Invalid("bad-memory-quantity", _set("spec.resources.memory", "lots"), "spec.resources.memory"),
    Invalid(
        "exists-toleration-with-value",
        _set("spec.resources.tolerations", [{"key": "gpu", "operator": "Exists", "value": "x"}]),
        "spec.resources.tolerations[0].value",
    ),
    Invalid("bad-queue-name", _set("spec.queueName", "Bad_Queue"), "spec.queueName"),
    Invalid("backoff-too-high", _set("spec.backoffLimit", 100), "spec.backoffLimit"),
    Invalid("deadline-too-short", _set("spec.activeDeadlineSeconds", 10), "spec.activeDeadlineSeconds"),
    Invalid(
        "gate-above-one", _set("spec.evaluation", {"gates": {"rougeL": 1.5}}), "spec.evaluation.gates.rougeL"
    ),
    Invalid(
        "regression-metrics-without-bound",
        _set("spec.evaluation", {"gates": {"regressionMetrics": ["rougeL"]}}),
        "spec.evaluation.gates.regressionMetrics",
    ),
    Invalid("quantization-bits", _set("spec.quantization", {"bits": 3}), "spec.quantization.bits"),
    Invalid(
        "bad-secret-name",
        _set("spec.baseModel.secretRef", {"name": "Bad Name"}),
        "spec.baseModel.secretRef.name",
    ),
    Invalid("missing-dataset", _delete("spec.dataset"), "spec.dataset"),
    Invalid("unknown-field", _set("spec.epochs", 3), "spec.epochs"),
    Invalid("name-too-long", _set("metadata.name", "a" * 60), "metadata.name", in_spec=False),
    Invalid("name-with-dots", _set("metadata.name", "triage.v3"), "metadata.name", in_spec=False),
]
