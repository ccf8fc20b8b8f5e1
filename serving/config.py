"""Configuration of the Ray Serve application: the contract between ModelServe and the server.

The operator renders :class:`ServeAppConfig` into a RayService's ``serveConfigV2`` as the
application's ``args``; ``hnav serve --config FILE`` reads the same model from YAML. Only
pydantic is imported here, so the operator can use it without Ray or torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from healthnav.schema import CamelModel
from healthnav.serving.engines import EngineName

IMPORT_PATH = "healthnav.serving.app:build_app"
"""What a RayService's serveConfigV2 names as the application's import_path."""
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)

SERVE_ENV: dict[str, str] = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
}
"""Ray Serve settings for the serving pods (proxy and replicas read them at process start).

Ray's throughput-optimised mode runs user code and the handle router on the replica's own
event loop instead of hopping threads, buffers request-path logs and talks to replicas over
gRPC; on 2 busy cores it cut the layer's added p50 from about 15-18 ms to about 12 ms and the
single-stream latency by half (``bench/serving_latency.py``; serving HTTP from the engine
replicas, one hop, then took it to about 8 ms). Its "direct ingress" part is turned off:
in Ray 2.60 it runs the HTTP proxy on the head node only and gives each ingress replica its own
port (30000-31000) for an external load balancer that reads Serve's target groups (Anyscale's,
or Ray's HAProxy mode). KubeRay's Serve Service targets port 8000 on the pods and knows nothing
of those ports, so every request would funnel through the head's single proxy instead.

Here (pydantic only, no Ray) so both users read one definition: ``hnav serve`` sets these in
its own environment before starting Ray, and the ModelServe operator puts them on the
RayCluster's head and worker containers (``healthnav.operator.rayservice``), because the
proxy reads them when its process starts — setting them inside the app would be too late.
"""


class AdapterRef(CamelModel):
    """A LoRA adapter the server can route to by name (the request's ``model`` field)."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$", max_length=63)
    uri: str
    """s3:// or file:// prefix holding adapter_config.json + adapter weights."""


class EngineArgs(CamelModel):
    """Engine knobs; vLLM-specific ones are ignored by the transformers engine."""

    max_model_len: int = Field(default=4096, ge=128, le=131072)
    """Longest prompt + completion in tokens (sizes the KV cache)."""
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    """Fraction of GPU memory vLLM may use for weights and KV cache, in (0, 1]."""
    max_loras: int = Field(default=4, ge=1, le=64)
    """Adapters resident at once per replica (vLLM max_loras; also the LRU size)."""
    max_lora_rank: int = Field(default=16)
    """Largest adapter rank servable (vLLM accepts 8, 16, 32, 64, 128, 256, 320, 512)."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Weight and activation dtype; auto uses the model's own."""
    enforce_eager: bool = False
    """Disable CUDA graphs (slower, less memory, faster start)."""

    @model_validator(mode="after")
    def _rank_supported(self) -> EngineArgs:
        if self.max_lora_rank not in VLLM_LORA_RANKS:
            raise ValueError(f"maxLoraRank must be one of {VLLM_LORA_RANKS}")
        return self


class AutoscalingSpec(CamelModel):
    """Ray Serve autoscaling; ModelServe.spec.autoscaling maps onto it one to one."""

    min_replicas: int = Field(default=1, ge=0, le=1000)
    """Fewest model replicas kept running (0 scales to zero when idle)."""
    max_replicas: int = Field(default=4, ge=1, le=1000)
    """Most model replicas (each one holds gpusPerReplica GPUs)."""
    target_ongoing_requests: float = Field(default=8, gt=0)
    """In-flight requests per replica the autoscaler aims for."""
    upscale_delay_seconds: float = Field(default=30, ge=0)
    """How long load must stay above target before adding a replica."""
    downscale_delay_seconds: float = Field(default=600, ge=0)
    """How long load must stay below target before removing a replica."""

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be <= maxReplicas")
        return self


class LimitsSpec(CamelModel):
    """Request limits and backpressure: overload answers 503 + Retry-After, never queues forever."""

    max_prompt_chars: int = Field(default=16000, ge=1)
    max_tokens: int = Field(default=1024, ge=1)
    max_ongoing_requests: int = Field(default=32, ge=1)
    max_queued_requests: int = Field(default=64, ge=-1)
    request_timeout_seconds: float = Field(default=120, gt=0)


SpilloverReason = Literal["notReady", "saturated"]
"""When a request may go to the spillover upstream instead of the local model."""
SPILLOVER_REASONS: tuple[SpilloverReason, ...] = ("notReady", "saturated")
UPSTREAM_HTTPS_URL = r"^https://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?(/[^\s?#]*)?$"
"""An upstream base URL as a ModelServe may name it: https only, no query or fragment."""
UPSTREAM_URL = r"^(https://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|http://(127\.0\.0\.1|localhost))(:[0-9]{1,5})?(/[^\s?#]*)?$"
"""What the server itself accepts: https, or plain http to this host only (``hnav serve`` and the
tests' stand-in upstream on 127.0.0.1; an API key never crosses a network unencrypted)."""


class SpilloverConfig(CamelModel):
    """An OpenAI-compatible upstream (the paid API the app used before) and when to forward to it.

    Why: a replica that cannot answer (its engine not ready, or admission full) would otherwise
    answer 503, and the app would wait on a cold or saturated model; and ``weight`` lets traffic
    move from the API to the fine-tune gradually. The operator renders it from ModelServe
    ``spec.spillover``; the key itself never appears here, only the environment variable that
    holds it (a Secret's key mounted into the Ray pods).
    """

    base_url: str = Field(alias="baseURL", max_length=2048, pattern=UPSTREAM_URL)
    """Base URL of the upstream's OpenAI API, e.g. https://api.openai.com/v1."""
    model: str = Field(min_length=1, max_length=256, pattern=r"^\S+$")
    """Model name sent upstream in place of the request's ``model``."""
    api_key_env: str | None = Field(default=None, max_length=253, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Environment variable holding the upstream's API key (sent as a Bearer token); None: no key."""
    when: list[SpilloverReason] = Field(default_factory=lambda: list(SPILLOVER_REASONS), max_length=2)
    """Reasons to forward: notReady (the engine cannot generate now), saturated (admission full)."""
    weight: int = Field(default=0, ge=0, le=100)
    """Percent of requests sent upstream even when the local model could answer them."""
    timeout_seconds: float = Field(default=60, gt=0, le=600)
    """How long an upstream answer may take (a stream: between bytes) before the client gets a 504."""

    @model_validator(mode="after")
    def _distinct_reasons(self) -> SpilloverConfig:
        if len(set(self.when)) != len(self.when):
            raise ValueError("spillover reasons must not repeat")
        return self


class ServeAppConfig(CamelModel):
    """Arguments of ``healthnav.serving.app:build_app``."""

    model_name: str = "base"
    """Name under which the base model is listed in /v1/models."""
    base_model: str
    """s3:// or file:// prefix, local path, or hub id of the base model."""
    engine: EngineName = "vllm"
    """Which engine generates (:data:`healthnav.serving.engines.ENGINES`)."""
    engine_args: EngineArgs = Field(default_factory=EngineArgs)
    adapters: list[AdapterRef] = Field(default_factory=list)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    num_gpus_per_replica: float = Field(default=1, ge=0)
    num_cpus_per_replica: float = Field(default=1, ge=0)
    api_keys_env: str | None = "HEALTHNAV_API_KEYS"
    """Environment variable holding comma-separated API keys; unset or empty disables auth."""
    adapters_prefix: str | None = None
    """s3:// or file:// prefix under which ``<name>/adapter/`` (or ``<name>/``) adapters are found by
    name: a request for an unknown model ``X`` loads ``<prefix>/X/adapter/`` if it exists, so a
    fine-tune uploaded after the server started is servable without a restart. Typically the
    operator's fine-tune output ``s3://models/finetunes/<namespace>/``."""
    adapter_discovery_ttl_seconds: float = Field(default=10, ge=0)
    """How long a lookup under ``adapters_prefix`` (found or not found) is cached."""
    adapter_cache_dir: str = "/tmp/healthnav/adapters"
    adapter_cache_max_bytes: int = Field(default=2 << 30, ge=1)
    """Local disk budget for downloaded adapters; least recently used are evicted first."""
    price_per_gpu_hour: float = Field(default=0.8, ge=0)
    """Used only to estimate cost per query in responses and metrics."""
    spillover: SpilloverConfig | None = None
    """Forward to an OpenAI-compatible upstream when this model cannot answer; None: never."""

    @model_validator(mode="after")
    def _unique_adapters(self) -> ServeAppConfig:
        names = [a.name for a in self.adapters]
        if len(names) != len(set(names)):
            raise ValueError("adapter names must be unique")
        if self.model_name in names:
            raise ValueError("an adapter cannot share the base model's name")
        return self
