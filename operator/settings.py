"""Operator settings: cluster-wide defaults a platform team sets once (Helm values → env).

Everything comes from ``HEALTHNAV_*`` environment variables (lists and maps as JSON), so the
same image runs on EKS, GKE or a laptop with different values and no code change, e.g.::

    HEALTHNAV_TRAINER_IMAGE=ghcr.io/acme/healthnav-trainer:0.1.0
    HEALTHNAV_DEFAULT_OUTPUT_URI=s3://acme-models/finetunes/
    HEALTHNAV_DEFAULT_NODE_SELECTOR='{"cloud.google.com/gke-nodepool": "l4-pool"}'
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_GPU_TOLERATION: dict[str, Any] = {
    "key": "nvidia.com/gpu",
    "operator": "Exists",
    "effect": "NoSchedule",
}


class OperatorSettings(BaseSettings):
    """Defaults applied to every FineTuneJob (and ModelServe) this operator reconciles."""

    model_config = SettingsConfigDict(env_prefix="HEALTHNAV_", extra="ignore", frozen=True)

    trainer_image: str = "ghcr.io/healthnav/trainer:0.1.0"
    """Image of the training pod; runs `hnav train`."""
    serving_image: str = "ghcr.io/healthnav/server:0.1.0"
    """Image of ModelServe's Ray head and workers (Ray + vLLM + healthnav[serve]) when spec.image is unset."""
    ray_version: str = "2.60.0"
    """Ray version inside the serving image (KubeRay's rayClusterConfig.rayVersion)."""
    image_pull_policy: str = "IfNotPresent"
    """imagePullPolicy of operator-created pods."""
    image_pull_secrets: list[str] = Field(default_factory=list)
    """Secrets for pulling images from a private registry."""
    default_output_uri: str | None = None
    """s3:// output root used when a FineTuneJob has no spec.output."""
    s3_endpoint_url: str | None = None
    """AWS_ENDPOINT_URL_S3 for training pods (MinIO, GCS interoperability); unset on AWS."""
    aws_region: str | None = None
    """AWS_DEFAULT_REGION for training pods."""
    gpu_type_labels: list[str] = Field(
        default_factory=lambda: ["cloud.google.com/gke-accelerator", "k8s.amazonaws.com/accelerator"]
    )
    """Node labels that carry the accelerator type; spec.resources.gpuType must match one of them."""
    default_node_selector: dict[str, str] = Field(default_factory=dict)
    """Node selector applied to every training pod (spec.resources.nodeSelector wins on conflicts)."""
    default_tolerations: list[dict[str, Any]] = Field(default_factory=lambda: [dict(DEFAULT_GPU_TOLERATION)])
    """Tolerations added to every training pod (GPU node pools are usually tainted)."""
    default_affinity: dict[str, Any] | None = None
    """Affinity used when a FineTuneJob specifies none."""
    ttl_seconds_after_finished: int = 7 * 86400
    """How long finished training Jobs (and their pods' logs) are kept."""
    run_as_user: int = 1000
    """UID of training pods (the trainer image's non-root user)."""
    resync_seconds: float = 300.0
    """Re-check unfinished FineTuneJobs this often even without events (a safety net, not polling)."""
    evaluation_timeout_seconds: float = 1800.0
    """How long after training a FineTuneJob with spec.evaluation waits for evaluation metrics."""
    read_metrics: bool = True
    """Read <output>/metrics.json from storage after success (needs S3 access from the operator)."""
    verify_adapters: bool = True
    """Record in ModelServe status whether each live adapter answers as its training did (the
    operator calls the Serve Service; off where the operator cannot reach it)."""
    adapter_verification_timeout_seconds: float = 120.0
    """How long one verification call may take (it loads the adapter and scores its probes)."""
    max_status_retries: int = 5
    """Retries of a status write that lost an optimistic-concurrency race."""
    job_priority_seconds: float = 2.0
    """How long a reconcile holds back its follow-up calls (children, status) while other
    FineTuneJobs' Jobs are still being created: a burst gets all its Jobs first. Bounded so a
    steady stream of new FineTuneJobs cannot starve the ones already started."""

    def storage_env(self) -> list[dict[str, str]]:
        """Env vars that point a pod's boto3 at the configured S3 endpoint and region."""
        env = []
        if self.s3_endpoint_url:
            env.append({"name": "AWS_ENDPOINT_URL_S3", "value": self.s3_endpoint_url})
        if self.aws_region:
            env.append({"name": "AWS_DEFAULT_REGION", "value": self.aws_region})
        return env


@functools.cache
def get_settings() -> OperatorSettings:
    """Process-wide settings, read from the environment once."""
    return OperatorSettings()
