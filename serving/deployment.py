"""How the serving deployment is placed and scaled: pure functions of the configuration (unit-tested)."""

from __future__ import annotations

import os
from typing import Any

from healthnav.serving.config import ServeAppConfig
from healthnav.serving.messages import RETRY_AFTER_S

HTTP_HEADROOM = 16
"""Requests a replica takes beyond its engine's admission limit and queue (see llm_deployment_options)."""


def autoscaling_config(cfg: ServeAppConfig) -> dict[str, Any]:
    a = cfg.autoscaling
    return {
        "min_replicas": a.min_replicas,
        "initial_replicas": max(a.min_replicas, 1) if a.max_replicas >= 1 else 0,
        "max_replicas": a.max_replicas,
        "target_ongoing_requests": a.target_ongoing_requests,
        "upscale_delay_s": a.upscale_delay_seconds,
        "downscale_delay_s": a.downscale_delay_seconds,
    }


def llm_deployment_options(cfg: ServeAppConfig) -> dict[str, Any]:
    """Options of the deployment: GPUs, autoscaling, and Ray's per-replica cap above our admission.

    The engine's concurrency is bounded by :class:`Admission` (``maxOngoingRequests`` generating,
    ``maxQueuedRequests`` waiting). Ray's ``max_ongoing_requests`` is set above that, with
    :data:`HTTP_HEADROOM` for health checks, model listings and adapter requests passing through
    to another replica, so a saturated replica still answers in our words (an OpenAI-shaped 503,
    or an emergency assessment). Past Ray's cap, or while the deployment scales up from zero,
    the proxy queues requests and answers 503 with ``Retry-After`` itself beyond
    ``max_queued_requests``. That queue also holds every request until a replica has accepted
    it, so a burst passes through it even when replicas have room (more so while a CPU-bound
    engine holds the replica's GIL); it is sized to two replicas' worth of requests.
    """
    lim = cfg.limits
    queue = lim.max_queued_requests
    waiting = queue if queue >= 0 else 3 * lim.max_ongoing_requests
    cap = lim.max_ongoing_requests + waiting + HTTP_HEADROOM
    return {
        "name": "LLMServer",
        "ray_actor_options": {"num_cpus": cfg.num_cpus_per_replica, "num_gpus": cfg.num_gpus_per_replica},
        "autoscaling_config": autoscaling_config(cfg),
        "max_ongoing_requests": cap,
        "max_queued_requests": 2 * cap if queue >= 0 else -1,
        "backpressure_config": {"status_code": 503, "retry_after_s": RETRY_AFTER_S},
        "health_check_period_s": 10,
        "health_check_timeout_s": 30,
        "graceful_shutdown_timeout_s": lim.request_timeout_seconds,
    }


def api_keys(cfg: ServeAppConfig) -> list[str]:
    """API keys from the environment variable the config names (a Kubernetes Secret in production)."""
    if not cfg.api_keys_env:
        return []
    return [k.strip() for k in os.environ.get(cfg.api_keys_env, "").split(",") if k.strip()]
