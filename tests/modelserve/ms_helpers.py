"""Shared ModelServe manifests: one valid spec, and invalid ones both the API server (OpenAPI +
CEL) and the pydantic models must reject, each with the field the error has to name."""

from __future__ import annotations

from typing import Any

from kube_helpers import InvalidManifest, custom_resource, set_path

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


def spillover(**changes: Any) -> dict[str, Any]:
    """A valid spec.spillover block (the paid API as upstream), with ``changes`` applied."""
    block: dict[str, Any] = {
        "upstream": {
            "baseURL": "https://api.openai.com/v1",
            "model": "gpt-4o-mini",
            "apiKeySecretRef": {"name": "openai", "key": "api-key"},
        },
        "when": ["notReady", "saturated"],
        "weight": 100,
    }
    for key, value in changes.items():
        if key in ("baseURL", "model", "apiKeySecretRef"):
            block["upstream"][key] = value
        else:
            block[key] = value
    return block


def schedule(**window_changes: Any) -> dict[str, Any]:
    """A valid spec.autoscaling.schedule (clinic hours, New York), its window changed as given."""
    window = {
        "name": "clinic-hours",
        "days": ["Mon", "Tue", "Wed", "Thu", "Fri"],
        "start": "07:30",
        "end": "19:00",
        "minReplicas": 1,
        "maxReplicas": 4,
    }
    window.update(window_changes)
    return {"timeZone": "America/New_York", "windows": [window]}


def manifest(name: str, namespace: str = "default", spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return custom_resource(API_VERSION, KIND, name, namespace, spec if spec is not None else valid_spec())


class Invalid(InvalidManifest):
    def valid(self, name: str, namespace: str) -> dict[str, Any]:
        return manifest(name, namespace)


INVALID: list[Invalid] = [
    Invalid(
        "min-above-max",
        set_path("spec.autoscaling", {"minReplicas": 5, "maxReplicas": 2}),
        "spec.autoscaling.minReplicas",
    ),
    Invalid("max-zero", set_path("spec.autoscaling.maxReplicas", 0), "spec.autoscaling.maxReplicas"),
    Invalid(
        "adapter-both-sources",
        set_path("spec.adapters", [{"name": "a", "fromFineTuneJob": "a", "uri": "s3://models/a/"}]),
        "spec.adapters[0].uri",
    ),
    Invalid("adapter-no-source", set_path("spec.adapters", [{"name": "a"}]), "spec.adapters[0].uri"),
    Invalid(
        "adapter-names-duplicate",
        set_path(
            "spec.adapters", [{"name": "a", "uri": "s3://models/a/"}, {"name": "a", "fromFineTuneJob": "x"}]
        ),
        "spec.adapters",
    ),
    Invalid(
        "lora-rank-unsupported", set_path("spec.engineArgs.maxLoraRank", 24), "spec.engineArgs.maxLoraRank"
    ),
    Invalid(
        "gpu-memory-zero",
        set_path("spec.engineArgs.gpuMemoryUtilization", 0),
        "spec.engineArgs.gpuMemoryUtilization",
    ),
    Invalid(
        "gpu-memory-above-one",
        set_path("spec.engineArgs.gpuMemoryUtilization", 1.2),
        "spec.engineArgs.gpuMemoryUtilization",
    ),
    Invalid("bad-engine", set_path("spec.engine", "tgi"), "spec.engine"),
    # (vLLM with gpusPerReplica: 0 is valid: the server image's CPU variant runs vLLM's CPU build)
    Invalid(
        "adapter-http-uri",
        set_path("spec.adapters", [{"name": "a", "uri": "http://169.254.169.254/latest/"}]),
        "spec.adapters[0].uri",
    ),
    Invalid(
        "base-model-metadata-uri",
        set_path("spec.baseModel.uri", "https://metadata.google.internal/computeMetadata/v1/"),
        "spec.baseModel.uri",
    ),
    Invalid(
        "bad-adapter-name",
        set_path("spec.adapters", [{"name": "Bad Name", "uri": "s3://m/a/"}]),
        "spec.adapters[0].name",
    ),
    Invalid(
        "allow-ungated-on-uri",
        set_path("spec.adapters", [{"name": "a", "uri": "s3://models/a/", "allowUngated": True}]),
        "spec.adapters[0].allowUngated",
    ),
    Invalid(
        "adapter-named-like-base",
        set_path("spec.adapters", [{"name": "base", "uri": "s3://models/a/"}]),
        "spec.adapters",
    ),
    Invalid(
        "spillover-http-url",
        set_path("spec.spillover", spillover(baseURL="http://api.openai.com/v1")),
        "spec.spillover.upstream.baseURL",
    ),
    Invalid(
        "spillover-not-a-url",
        set_path("spec.spillover", spillover(baseURL="https://exa mple.com/v1")),
        "spec.spillover.upstream.baseURL",
    ),
    Invalid(
        "spillover-weight-150", set_path("spec.spillover", spillover(weight=150)), "spec.spillover.weight"
    ),
    Invalid(
        "spillover-unknown-reason",
        set_path("spec.spillover", spillover(when=["notReady", "sometimes"])),
        "spec.spillover.when[1]",
    ),
    Invalid(
        "spillover-repeated-reason",
        set_path("spec.spillover", spillover(when=["saturated", "saturated"])),
        "spec.spillover.when[1]",
    ),
    Invalid(
        "spillover-key-without-secret-key",
        set_path("spec.spillover", spillover(apiKeySecretRef={"name": "openai"})),
        "spec.spillover.upstream.apiKeySecretRef.key",
    ),
    Invalid(
        "spillover-without-upstream",
        set_path("spec.spillover", {"weight": 50}),
        "spec.spillover.upstream",
    ),
    Invalid(
        "window-min-above-max",
        set_path("spec.autoscaling.schedule", schedule(minReplicas=5, maxReplicas=2)),
        "spec.autoscaling.schedule.windows[0].minReplicas",
    ),
    Invalid(
        "window-start-equals-end",
        set_path("spec.autoscaling.schedule", schedule(start="09:00", end="09:00")),
        "spec.autoscaling.schedule.windows[0].end",
    ),
    Invalid(
        "window-hour-25",
        set_path("spec.autoscaling.schedule", schedule(start="25:00")),
        "spec.autoscaling.schedule.windows[0].start",
    ),
    Invalid(
        "window-unknown-day",
        set_path("spec.autoscaling.schedule", schedule(days=["Mon", "Funday"])),
        "spec.autoscaling.schedule.windows[0].days[1]",
    ),
    Invalid(
        "window-repeated-day",
        set_path("spec.autoscaling.schedule", schedule(days=["Mon", "Mon"])),
        "spec.autoscaling.schedule.windows[0].days[1]",
    ),
    Invalid(
        "schedule-time-zone-with-space",
        set_path("spec.autoscaling.schedule", {**schedule(), "timeZone": "New York"}),
        "spec.autoscaling.schedule.timeZone",
    ),
    Invalid(
        "schedule-without-windows",
        set_path("spec.autoscaling.schedule", {"timeZone": "UTC", "windows": []}),
        "spec.autoscaling.schedule.windows",
    ),
    Invalid(
        "schedule-repeated-window-name",
        set_path("spec.autoscaling.schedule", {"windows": schedule()["windows"] * 2}),
        "spec.autoscaling.schedule.windows",
    ),
    Invalid("bad-memory", set_path("spec.resources.memory", "lots"), "spec.resources.memory"),
    Invalid("unknown-field", set_path("spec.replicas", 3), "spec.replicas"),
    Invalid("missing-base-model", lambda m: m["spec"].pop("baseModel"), "spec.baseModel"),
    Invalid("name-too-long", set_path("metadata.name", "a" * 48), "metadata.name", in_spec=False),
    Invalid("name-starts-with-digit", set_path("metadata.name", "1triage"), "metadata.name", in_spec=False),
]
