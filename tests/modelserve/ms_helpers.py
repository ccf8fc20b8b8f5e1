"""Shared ModelServe manifests: one valid spec, and invalid ones both the API server (OpenAPI +
CEL) and the pydantic models must reject, each with the field the error has to name."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from healthnav.operator.modelserve_spec import API_VERSION, KIND


def valid_spec() -> dict[str, Any]:
    return {
        "baseModel": {"uri": "s3://models/biomistral-7b/"},
        "adapters": [
            {"name": "triage-v3", "fromFineTuneJob": "triage-v3"},
            {"name": "derm-v1", "uri": "s3://models/adapters/derm-v1/"},
        ],
        "engine": "vllm",
        "engineArgs": {"maxModelLen": 4096, "gpuMemoryUtilization": 0.9, "maxLoras": 4, "maxLoraRank": 16},
        "resources": {"gpusPerReplica": 1, "gpuType": "nvidia-l4", "cpu": "8", "memory": "32Gi"},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetOngoingRequests": 8},
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
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        node[parts[-1]] = value

    return apply


@dataclass(frozen=True)
class Invalid:
    id: str
    mutate: Callable[[dict[str, Any]], None]
    field: str
    """The field path the API server's error must name."""
    in_spec: bool = True
    """False when only the API server can check it (metadata)."""

    def build(self, name: str, namespace: str = "default") -> dict[str, Any]:
        m = copy.deepcopy(manifest(name, namespace))
        self.mutate(m)
        return m


INVALID: list[Invalid] = [
    Invalid(
        "min-above-max",
        _set("spec.autoscaling", {"minReplicas": 5, "maxReplicas": 2}),
        "spec.autoscaling.minReplicas",
    ),
    Invalid("max-zero", _set("spec.autoscaling.maxReplicas", 0), "spec.autoscaling.maxReplicas"),
    Invalid(
        "adapter-both-sources",
        _set("spec.adapters", [{"name": "a", "fromFineTuneJob": "a", "uri": "s3://models/a/"}]),
        "spec.adapters[0].uri",
    ),
    Invalid("adapter-no-source", _set("spec.adapters", [{"name": "a"}]), "spec.adapters[0].uri"),
    Invalid(
        "adapter-names-duplicate",
        _set(
            "spec.adapters", [{"name": "a", "uri": "s3://models/a/"}, {"name": "a", "fromFineTuneJob": "x"}]
        ),
        "spec.adapters",
    ),
    Invalid("lora-rank-unsupported", _set("spec.engineArgs.maxLoraRank", 24), "spec.engineArgs.maxLoraRank"),
    Invalid(
        "gpu-memory-zero",
        _set("spec.engineArgs.gpuMemoryUtilization", 0),
        "spec.engineArgs.gpuMemoryUtilization",
    ),
    Invalid(
        "gpu-memory-above-one",
        _set("spec.engineArgs.gpuMemoryUtilization", 1.2),
        "spec.engineArgs.gpuMemoryUtilization",
    ),
    Invalid("bad-engine", _set("spec.engine", "tgi"), "spec.engine"),
    Invalid("vllm-without-gpu", _set("spec.resources.gpusPerReplica", 0), "spec.resources.gpusPerReplica"),
    Invalid(
        "adapter-http-uri",
        _set("spec.adapters", [{"name": "a", "uri": "http://169.254.169.254/latest/"}]),
        "spec.adapters[0].uri",
    ),
    Invalid(
        "base-model-metadata-uri",
        _set("spec.baseModel.uri", "https://metadata.google.internal/computeMetadata/v1/"),
        "spec.baseModel.uri",
    ),
    Invalid(
        "bad-adapter-name",
        _set("spec.adapters", [{"name": "Bad Name", "uri": "s3://m/a/"}]),
        "spec.adapters[0].name",
    ),
    Invalid(
        "allow-ungated-on-uri",
        _set("spec.adapters", [{"name": "a", "uri": "s3://models/a/", "allowUngated": True}]),
        "spec.adapters[0].allowUngated",
    ),
    Invalid(
        "adapter-named-like-base",
        _set("spec.adapters", [{"name": "base", "uri": "s3://models/a/"}]),
        "spec.adapters",
    ),
    Invalid("bad-memory", _set("spec.resources.memory", "lots"), "spec.resources.memory"),
    Invalid("unknown-field", _set("spec.replicas", 3), "spec.replicas"),
    Invalid("missing-base-model", lambda m: m["spec"].pop("baseModel"), "spec.baseModel"),
    Invalid("name-too-long", _set("metadata.name", "a" * 48), "metadata.name", in_spec=False),
    Invalid("name-starts-with-digit", _set("metadata.name", "1triage"), "metadata.name", in_spec=False),
]
