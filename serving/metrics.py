"""Prometheus metrics of the serving layer, through Ray's metrics pipeline.

``ray.serve.metrics`` objects created inside replicas are exported by every Ray node's metrics
agent (KubeRay exposes it on the ``metrics`` port; a PodMonitor scrapes it), aggregated across
replicas and nodes, next to Ray Serve's own request and replica metrics. A per-process
``prometheus_client`` endpoint would only show one replica's share, so we do not add one.
Labels never carry request content: model name, route, status class, red-flag rule, spillover
reason.
"""

from __future__ import annotations

from typing import Any

LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120]
TTFT_BUCKETS_S = [0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 5, 10, 30]
TPS_BUCKETS = [1, 5, 10, 25, 50, 100, 200, 400, 800, 1600, 3200]


class RequestMetrics:
    """Request-level metrics recorded where HTTP is answered (each ``LLMServer`` replica)."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.latency = metrics.Histogram(
            "healthnav_request_latency_seconds",
            description="End-to-end request latency, including streaming.",
            boundaries=LATENCY_BUCKETS_S,
            tag_keys=("route", "model", "status"),
        )
        self.ttft = metrics.Histogram(
            "healthnav_time_to_first_token_seconds",
            description="Time from request arrival to the first generated token.",
            boundaries=TTFT_BUCKETS_S,
            tag_keys=("route", "model"),
        )
        self.tokens_per_second = metrics.Histogram(
            "healthnav_generation_tokens_per_second",
            description="Completion tokens per second of generation, per request.",
            boundaries=TPS_BUCKETS,
            tag_keys=("model",),
        )
        self.tokens = metrics.Counter(
            "healthnav_tokens_total", description="Prompt and completion tokens.", tag_keys=("model", "kind")
        )
        self.requests = metrics.Counter(
            "healthnav_requests_total",
            description="Requests by route, model (base or adapter) and status.",
            tag_keys=("route", "model", "status"),
        )
        self.red_flags = metrics.Counter(
            "healthnav_red_flags_total",
            description="Assessments escalated, by red-flag rule.",
            tag_keys=("rule",),
        )
        self.spillover = metrics.Counter(
            "healthnav_spillover_requests_total",
            description=(
                "Requests forwarded to the spillover upstream, by reason: not_ready, saturated, weight."
            ),
            tag_keys=("reason",),
        )

    def request(self, route: str, model: str, status: int, seconds: float) -> None:
        tags = {"route": route, "model": model, "status": str(status)}
        self.requests.inc(1, tags=tags)
        self.latency.observe(seconds, tags=tags)

    def generation(
        self, route: str, model: str, ttft_s: float | None, gen_s: float, pt: int, ct: int
    ) -> None:
        if ttft_s is not None:
            self.ttft.observe(ttft_s, tags={"route": route, "model": model})
        if ct and gen_s > 0:
            self.tokens_per_second.observe(ct / gen_s, tags={"model": model})
        # Ray counters refuse increments of 0 (echo with max_tokens=0 generates nothing)
        if pt:
            self.tokens.inc(pt, tags={"model": model, "kind": "prompt"})
        if ct:
            self.tokens.inc(ct, tags={"model": model, "kind": "completion"})


class EngineMetrics:
    """Engine-level metrics of a replica: queue depth, ongoing generations, adapter use and loads."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.queue_depth = metrics.Gauge(
            "healthnav_engine_queue_depth",
            description="Requests on this replica waiting for the engine.",
        )
        self.ongoing = metrics.Gauge(
            "healthnav_engine_ongoing_requests", description="Requests this replica is generating or queuing."
        )
        self.adapter_requests = metrics.Counter(
            "healthnav_adapter_requests_total",
            description="Requests per LoRA adapter.",
            tag_keys=("adapter",),
        )
        self.adapter_loads = metrics.Counter(
            "healthnav_adapter_loads_total",
            description="Adapter loads (cache misses) per adapter.",
            tag_keys=("adapter",),
        )
        self.adapter_refusals = metrics.Counter(
            "healthnav_adapter_refusals_total",
            description="Adapters refused at load: the engine did not answer as training did (probes).",
            tag_keys=("adapter",),
        )

    def set_depth(self, waiting: Any, ongoing: int) -> None:
        self.queue_depth.set(float(waiting or 0))
        self.ongoing.set(float(ongoing))
