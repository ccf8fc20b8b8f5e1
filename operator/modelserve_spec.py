"""The ModelServe custom resource (``modelserves.healthnav.io/v1alpha1``) as pydantic models.

These models are the single source of truth: the CRD YAML is generated from them
(:mod:`healthnav.operator.crdgen`), and the operator validates what it reads with them. The
serving knobs are the server's own models from :mod:`healthnav.serving.config`
(:class:`~healthnav.serving.config.EngineArgs`, :class:`~healthnav.serving.config.AutoscalingSpec`),
so ``spec.engineArgs`` and ``spec.autoscaling`` cannot mean one thing in the CRD and another in
the Ray Serve application: the operator copies them into :class:`ServeAppConfig` unchanged.

As for FineTuneJob, cross-field rules are written twice on purpose: as CEL (the API server
rejects a bad manifest at ``kubectl apply`` time with a message naming the field) and as
pydantic validators (the operator never acts on an object that slipped past an older CRD).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from healthnav.contracts.probes import VerificationState
from healthnav.contracts.uris import STORAGE_URI
from healthnav.operator.conditions import Condition, ObservedStatus, conditions_field
from healthnav.operator.crdgen import AGE_COLUMN, CRDSpec, PrinterColumn, cel, validations
from healthnav.operator.schedule import ModelServeAutoscaling
from healthnav.operator.spec_types import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    FINETUNEJOB_MAX_NAME_LENGTH,
    LabelValue,
    ModelSource,
    Quantity,
    SecretRef,
    Toleration,
)
from healthnav.schema import CamelModel
from healthnav.serving.config import (
    SPILLOVER_REASONS,
    UPSTREAM_HTTPS_URL,
    VLLM_LORA_RANKS,
    EngineArgs,
    SpilloverReason,
)
from healthnav.serving.engines import ENGINES_DESCRIPTION, GPU_ENGINES, EngineName

GROUP = "healthnav.io"
VERSION = "v1alpha1"
KIND = "ModelServe"
PLURAL = "modelserves"
API_VERSION = f"{GROUP}/{VERSION}"

# The RayService carries the ModelServe's name. KubeRay (ray-operator/controllers/ray/utils,
# MaxRayServiceNameLength = MaxRayClusterNameLength - 6 = 47) refuses longer RayService names,
# because it derives RayCluster names (<name>-<5 random chars>) and then pod and Service names
# from them; it also requires a DNS-1035 label (starts with a letter).
MAX_NAME_LENGTH = 47
DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
ADAPTER_NAME = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"
ADAPTER_URI = STORAGE_URI
MAX_ADAPTERS = 32

_ADAPTER_URI_RULES = validations(
    cel(
        "!self.matches('^[A-Za-z][A-Za-z0-9+.-]*:') || self.startsWith('s3://') || self.startsWith('file:///')",
        "only s3://bucket/prefix/ or file:///path are accepted; http(s) and other schemes are refused "
        "(they could reach link-local or cloud metadata endpoints): stage the adapter in S3",
    ),
    cel("!self.contains('/../') && !self.endsWith('/..')", "must not contain '..' path segments"),
)


class AdapterSpec(CamelModel):
    """A LoRA adapter served next to the base model, addressed by ``name`` in the request's
    ``model`` field. Exactly one of fromFineTuneJob or uri."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.fromFineTuneJob) != has(self.uri)",
                "exactly one of fromFineTuneJob or uri must be set",
                field_path=".uri",
            ),
            cel(
                "!(has(self.allowUngated) && self.allowUngated) || has(self.fromFineTuneJob)",
                "allowUngated applies only to fromFineTuneJob adapters",
                field_path=".allowUngated",
            ),
        )
    )

    name: str = Field(min_length=1, max_length=63, pattern=ADAPTER_NAME)
    """Name clients use as the OpenAI ``model`` field to reach this adapter."""
    from_fine_tune_job: str | None = Field(
        default=None, max_length=FINETUNEJOB_MAX_NAME_LENGTH, pattern=DNS_LABEL
    )
    """A FineTuneJob in this namespace: the adapter goes live once it has Succeeded (and passed its
    evaluation gate when it has one); until then it is listed as pending in status."""
    uri: str | None = Field(
        default=None, max_length=1024, pattern=ADAPTER_URI, json_schema_extra=_ADAPTER_URI_RULES
    )
    """s3://bucket/prefix/ or file:///path of a PEFT adapter (adapter_config.json + weights)."""
    allow_ungated: bool = False
    """Serve the FineTuneJob's adapter even if its evaluation gate failed (recorded in status)."""

    @model_validator(mode="after")
    def _one_source(self) -> AdapterSpec:
        if (self.from_fine_tune_job is None) == (self.uri is None):
            raise ValueError("exactly one of fromFineTuneJob or uri must be set")
        if self.allow_ungated and self.from_fine_tune_job is None:
            raise ValueError("allowUngated applies only to fromFineTuneJob adapters")
        return self


class ServeResources(CamelModel):
    """What each model replica (one Ray worker pod) asks for, and where it may run."""

    gpus_per_replica: int = Field(default=1, ge=0, le=8)
    """nvidia.com/gpu per model replica (tensor parallelism when > 1); 0 runs on the CPU (the transformers
    engine, or vllm with the server image's CPU variant)."""
    gpu_type: LabelValue | None = None
    """Accelerator type, e.g. nvidia-l4, nvidia-a10g: matched against the cloud's accelerator node label
    (GKE cloud.google.com/gke-accelerator, EKS k8s.amazonaws.com/accelerator, or the operator's)."""
    cpu: Quantity = "8"
    """CPU request of each worker pod."""
    memory: Quantity = "32Gi"
    """Memory request and limit of each worker pod (weights are staged through host memory)."""
    shm_size: Quantity = "8Gi"
    """Size of the in-memory /dev/shm volume (NCCL and vLLM workers share tensors there)."""
    head_cpu: Quantity = "2"
    """CPU request of the Ray head pod (GCS, Serve controller, HTTP proxy; no model replicas)."""
    head_memory: Quantity = "8Gi"
    """Memory request and limit of the Ray head pod."""
    node_selector: dict[str, LabelValue] = Field(default_factory=dict, max_length=32)
    """Node labels worker pods require, merged over the operator's defaults (these win)."""
    head_node_selector: dict[str, LabelValue] = Field(default_factory=dict, max_length=32)
    """Node labels the Ray head pod requires (a CPU node pool: the head runs no model replica)."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Tolerations of worker pods, added to the operator's defaults (which tolerate nvidia.com/gpu)."""

    @model_validator(mode="after")
    def _quantities_are_str(self) -> ServeResources:
        for name in ("cpu", "memory", "shm_size", "head_cpu", "head_memory"):
            setattr(self, name, str(getattr(self, name)))
        return self


class SecretKeyRef(CamelModel):
    """One key of a Secret in the ModelServe's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Name of the Secret."""
    key: str = Field(default="api-keys", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """Key holding comma-separated API keys."""


class UpstreamKeyRef(CamelModel):
    """The Secret key holding the upstream's API key (mounted as an environment variable into the
    Ray pods; it never appears in the RayService's serve config, the status or a log)."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Name of the Secret, in the ModelServe's namespace."""
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """Key of the Secret whose value is the upstream's API key."""


class UpstreamSpec(CamelModel):
    """An OpenAI-compatible API (the paid API the app used before the fine-tune)."""

    base_url: str = Field(
        alias="baseURL",
        max_length=2048,
        pattern=UPSTREAM_HTTPS_URL,
        json_schema_extra=validations(
            cel(
                "isURL(self) && url(self).getScheme() == 'https'",
                "baseURL must be an https:// URL (the API key is sent to it)",
            )
        ),
    )
    """Base URL of the upstream's OpenAI API, https only (e.g. https://api.openai.com/v1)."""
    model: str = Field(min_length=1, max_length=256, pattern=r"^\S+$")
    """Upstream model name sent in place of the request's model (e.g. gpt-4o-mini)."""
    api_key_secret_ref: UpstreamKeyRef
    """Secret key holding the upstream's API key."""


class SpilloverSpec(CamelModel):
    """Forward requests to an OpenAI-compatible upstream when the local model cannot answer them,
    and a share of them always: the migration path from the API to the fine-tune."""

    upstream: UpstreamSpec
    """Where spilled requests go."""
    when: list[SpilloverReason] = Field(
        default_factory=lambda: list(SPILLOVER_REASONS),
        max_length=len(SPILLOVER_REASONS),
        json_schema_extra=validations(x_kubernetes_list_type="set"),
    )
    """Reasons to forward: notReady (no engine ready to generate), saturated (admission would
    answer 503). Both by default; [] forwards only the weighted share."""
    weight: int = Field(default=0, ge=0, le=100)
    """Percent (0-100) of requests sent upstream even when the local model is healthy: start at 100
    and lower it as the fine-tune proves itself."""

    @model_validator(mode="after")
    def _distinct_reasons(self) -> SpilloverSpec:
        if len(set(self.when)) != len(self.when):
            raise ValueError("spillover.when must not repeat a reason")
        return self


_ENGINE_ARGS_RULES = validations(
    cel(
        # has(): the API server also checks rules against the schema default ({}), before the
        # nested defaults are filled in.
        f"!has(self.maxLoraRank) || self.maxLoraRank in {list(VLLM_LORA_RANKS)}",
        f"maxLoraRank must be one of {', '.join(map(str, VLLM_LORA_RANKS))} (the ranks vLLM serves)",
        field_path=".maxLoraRank",
    )
)
_AUTOSCALING_RULES = validations(
    cel(
        "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
        "minReplicas must be <= maxReplicas",
        field_path=".minReplicas",
    )
)


class ModelServeSpec(CamelModel):
    """Desired state of a ModelServe: serve baseModel and its adapters behind an autoscaled,
    OpenAI-compatible endpoint on a KubeRay RayService."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            *(
                cel(
                    f"self.engine != '{name}' || !has(self.resources) || self.resources.gpusPerReplica >= 1",
                    f"engine {name} needs resources.gpusPerReplica >= 1",
                    field_path=".resources.gpusPerReplica",
                )
                for name in GPU_ENGINES
            ),
            cel(
                "!has(self.adapters) || self.adapters.all(a, a.name != self.modelName)",
                "an adapter cannot share the base model's name (spec.modelName)",
                field_path=".adapters",
            ),
        )
    )

    base_model: ModelSource
    """Base model (s3://, file:///, or a hub id). Changing it rolls out a new Ray cluster."""
    model_name: str = Field(default="base", min_length=1, max_length=63, pattern=ADAPTER_NAME)
    """Name under which the base model itself is listed in /v1/models."""
    adapters: list[AdapterSpec] = Field(
        default_factory=list,
        max_length=MAX_ADAPTERS,
        json_schema_extra=validations(
            cel(
                "self.all(a, self.exists_one(b, b.name == a.name))",
                "adapter names must be unique",
                reason="FieldValueDuplicate",
            )
        ),
    )
    """LoRA adapters to serve; adding or removing one updates the running application in place."""
    engine: EngineName = Field(default="vllm", description=ENGINES_DESCRIPTION)
    engine_args: EngineArgs = Field(default_factory=EngineArgs, json_schema_extra=_ENGINE_ARGS_RULES)
    """Engine knobs (vLLM-specific ones are ignored by the transformers engine)."""
    resources: ServeResources = Field(default_factory=ServeResources)
    """GPU, CPU, memory and placement of each model replica."""
    autoscaling: ModelServeAutoscaling = Field(
        default_factory=ModelServeAutoscaling, json_schema_extra=_AUTOSCALING_RULES
    )
    """Ray Serve replica autoscaling; Ray's in-tree autoscaler adds and removes GPU pods to match.
    A schedule gives windows of the week their own bounds (applied in place, no new cluster)."""
    image: str | None = Field(default=None, min_length=1, max_length=512, pattern=r"^[^\s]+$")
    """Serving image (Ray + vLLM + healthnav); the operator's default when unset. Changing it rolls
    out a new Ray cluster."""
    service_account_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN)
    """ServiceAccount of the Ray pods (annotate it for IRSA / Workload Identity to read S3);
    by default the operator creates <name>-serve."""
    api_key_secret_ref: SecretKeyRef | None = None
    """Secret key with comma-separated API keys; without it the endpoint is unauthenticated."""
    spillover: SpilloverSpec | None = None
    """Forward to an OpenAI-compatible upstream while no replica is ready, when admission is full,
    and for weight percent of requests; off when unset."""

    @model_validator(mode="after")
    def _cross_field(self) -> ModelServeSpec:
        names = [a.name for a in self.adapters]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"adapter names must be unique (repeated: {', '.join(duplicates)})")
        if self.model_name in names:
            raise ValueError("an adapter cannot share the base model's name (spec.modelName)")
        if self.engine in GPU_ENGINES and self.resources.gpus_per_replica < 1:
            raise ValueError(f"engine {self.engine} needs resources.gpusPerReplica >= 1")
        return self


Phase = Literal["Pending", "Deploying", "Ready", "Upgrading", "Failed"]


class AdapterStatus(CamelModel):
    """Where one spec.adapters entry stands."""

    name: str
    """The adapter's name (spec.adapters[].name)."""
    state: Literal["Active", "Verifying", "Refused", "Deploying", "Pending"]
    """Active: routed to by the running application (and, where the operator verifies adapters,
    answering as in training); Verifying: live in the application, its check not done yet;
    Refused: the serving engine answers differently from training or cannot load it (requests
    for it get a 502 saying so); Deploying: in the RayService, not yet live; Pending: not
    servable yet (see reason)."""
    uri: str | None = None
    """Resolved adapter location."""
    reason: str | None = None
    """Why it is pending (FineTuneJobNotFound, FineTuneJobNotSucceeded, GateNotPassed, ...)."""
    message: str | None = Field(default=None, max_length=1024)
    """Details for a human."""
    ungated: bool | None = None
    """True when served despite a failed or missing evaluation gate (spec allowUngated)."""
    verification: VerificationState | None = None
    """What the serving engine found when it loaded the adapter: Verified, NotRecorded (no
    probes shipped: unchecked), Refused or LoadFailed; unset until checked."""
    verified_revision: str | None = None
    """The servingRevision the verification ran on: a new base model or engine checks again."""


class ApplicationStatus(CamelModel):
    """A Ray Serve application as KubeRay reports it for the active cluster."""

    name: str
    """Application name in serveConfigV2."""
    status: str
    """NOT_STARTED, DEPLOYING, RUNNING, DEPLOY_FAILED, DELETING or UNHEALTHY."""
    message: str | None = Field(default=None, max_length=4096)
    """Ray Serve's message (deployment errors)."""


class ModelServeStatus(ObservedStatus):
    """Observed state of a ModelServe, written by the operator only."""

    phase: Phase | None = None
    """Pending, Deploying, Ready, Upgrading or Failed."""
    message: str | None = Field(default=None, max_length=4096)
    """One human-readable line about the current phase."""
    conditions: list[Condition] = conditions_field()
    """Ready, UpgradeInProgress, AdaptersResolved, AdaptersVerified, RayServiceSynced."""
    observed_generation: int | None = None
    """metadata.generation of the spec this status reflects."""
    endpoint: str | None = None
    """In-cluster base URL of the OpenAI-compatible API: http://<name>-serve-svc.<namespace>.svc:8000."""
    ray_service_name: str | None = None
    """The ray.io/v1 RayService this ModelServe owns."""
    active_ray_cluster_name: str | None = None
    """RayCluster currently serving traffic."""
    pending_ray_cluster_name: str | None = None
    """RayCluster being prepared by a new-cluster upgrade."""
    replicas: int | None = None
    """Ready model replicas (Ray GPU worker pods) in the active cluster."""
    desired_replicas: int | None = None
    """Model replicas the autoscaler currently wants."""
    serve_endpoints: int | None = None
    """Pods behind the serve Service."""
    active_adapters: list[str] = Field(default_factory=list)
    """Adapters the running application routes to."""
    adapters: list[AdapterStatus] = Field(default_factory=list)
    """Per-adapter state, including pending ones and why."""
    applications: list[ApplicationStatus] = Field(default_factory=list)
    """Ray Serve application status and message per application."""
    serving_revision: str | None = None
    """Hash of what forces a new Ray cluster (base model, engine, engine args, image, resources)."""
    schedule_window: str | None = None
    """The autoscaling.schedule window in force (unset: the autoscaling defaults apply)."""


MODELSERVE_CRD = CRDSpec(
    group=GROUP,
    kind=KIND,
    plural=PLURAL,
    version=VERSION,
    spec_model=ModelServeSpec,
    status_model=ModelServeStatus,
    description=(
        "ModelServe serves a base language model and its LoRA adapters (from FineTuneJobs or S3) "
        "behind an autoscaled OpenAI-compatible endpoint on a KubeRay RayService."
    ),
    short_names=("ms",),
    categories=("healthnav",),
    printer_columns=(
        PrinterColumn(
            "Ready", '.status.conditions[?(@.type=="Ready")].status', description="Serving traffic"
        ),
        PrinterColumn("Replicas", ".status.replicas", "integer", "Ready model replicas"),
        PrinterColumn("Adapters", ".status.activeAdapters", description="Adapters being routed to"),
        PrinterColumn(
            "Verified",
            '.status.conditions[?(@.type=="AdaptersVerified")].status',
            description="Every live adapter answers as in training (False: one is refused)",
        ),
        PrinterColumn("Endpoint", ".status.endpoint", description="In-cluster base URL"),
        PrinterColumn("Phase", ".status.phase", priority=1, description="Lifecycle phase"),
        PrinterColumn("RayService", ".status.rayServiceName", priority=1, description="Owned RayService"),
        AGE_COLUMN,
    ),
    root_validations=(
        cel(
            f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
            f"metadata.name must be at most {MAX_NAME_LENGTH} characters "
            "(it names the KubeRay RayService, whose limit this is)",
        ),
        cel(
            f"self.metadata.name.matches('{DNS_1035}')",
            "metadata.name must be a DNS-1035 label (starts with a letter; lowercase letters, digits, '-')",
        ),
    ),
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "MAX_NAME_LENGTH",
    "MODELSERVE_CRD",
    "PLURAL",
    "VERSION",
    "AdapterSpec",
    "AdapterStatus",
    "ApplicationStatus",
    "ModelServeSpec",
    "ModelServeStatus",
    "SecretKeyRef",
    "SecretRef",
    "ServeResources",
    "SpilloverSpec",
    "UpstreamKeyRef",
    "UpstreamSpec",
]
