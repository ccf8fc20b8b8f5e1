"""Shared FineTuneJob manifests for the operator tests: one valid spec, and the invalid ones
that both the API server (CEL + OpenAPI) and the pydantic models must reject."""

from __future__ import annotations

from typing import Any

from kube_helpers import InvalidManifest, custom_resource, delete_path, set_path

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
    return custom_resource(API_VERSION, KIND, name, namespace, spec if spec is not None else valid_spec())


class Invalid(InvalidManifest):
    def valid(self, name: str, namespace: str) -> dict[str, Any]:
        return manifest(name, namespace)


INVALID: list[Invalid] = [
    Invalid("bad-method", set_path("spec.method", "full"), "spec.method"),
    Invalid(
        "quantization-with-lora",
        lambda m: m["spec"].update(method="lora", quantization={"bits": 4}),
        "spec.quantization",
    ),
    Invalid("lora-rank-zero", set_path("spec.lora.r", 0), "spec.lora.r"),
    Invalid("learning-rate-zero", set_path("spec.training.learningRate", 0), "spec.training.learningRate"),
    Invalid("negative-epochs", set_path("spec.training.epochs", -1), "spec.training.epochs"),
    Invalid(
        "metadata-endpoint-uri",
        set_path("spec.baseModel.uri", "http://169.254.169.254/latest/meta-data/"),
        "spec.baseModel.uri",
    ),
    Invalid(
        "gce-metadata-uri",
        set_path("spec.baseModel.uri", "https://metadata.google.internal/computeMetadata/v1/"),
        "spec.baseModel.uri",
    ),
    Invalid("hub-id-as-dataset", set_path("spec.dataset.uri", "someorg/some-dataset"), "spec.dataset.uri"),
    Invalid("file-output", set_path("spec.output.uri", "file:///tmp/out/"), "spec.output.uri"),
    Invalid("bad-bucket", set_path("spec.output.uri", "s3://Bad_Bucket/x/"), "spec.output.uri"),
    Invalid("dot-dot-path", set_path("spec.baseModel.uri", "s3://models/../secrets/"), "spec.baseModel.uri"),
    Invalid("qlora-without-gpu", set_path("spec.resources.gpus", 0), "spec.resources.gpus"),
    Invalid("bad-memory-quantity", set_path("spec.resources.memory", "lots"), "spec.resources.memory"),
    Invalid(
        "exists-toleration-with-value",
        set_path("spec.resources.tolerations", [{"key": "gpu", "operator": "Exists", "value": "x"}]),
        "spec.resources.tolerations[0].value",
    ),
    Invalid("bad-queue-name", set_path("spec.queueName", "Bad_Queue"), "spec.queueName"),
    Invalid("backoff-too-high", set_path("spec.backoffLimit", 100), "spec.backoffLimit"),
    Invalid("deadline-too-short", set_path("spec.activeDeadlineSeconds", 10), "spec.activeDeadlineSeconds"),
    Invalid(
        "gate-above-one",
        set_path("spec.evaluation", {"gates": {"rougeL": 1.5}}),
        "spec.evaluation.gates.rougeL",
    ),
    Invalid(
        "regression-metrics-without-bound",
        set_path("spec.evaluation", {"gates": {"regressionMetrics": ["rougeL"]}}),
        "spec.evaluation.gates.regressionMetrics",
    ),
    Invalid("quantization-bits", set_path("spec.quantization", {"bits": 3}), "spec.quantization.bits"),
    Invalid(
        "bad-secret-name",
        set_path("spec.baseModel.secretRef", {"name": "Bad Name"}),
        "spec.baseModel.secretRef.name",
    ),
    Invalid("missing-dataset", delete_path("spec.dataset"), "spec.dataset"),
    Invalid("unknown-field", set_path("spec.epochs", 3), "spec.epochs"),
    Invalid("name-too-long", set_path("metadata.name", "a" * 60), "metadata.name", in_spec=False),
    Invalid("name-with-dots", set_path("metadata.name", "triage.v3"), "metadata.name", in_spec=False),
]
