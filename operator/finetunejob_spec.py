"""The FineTuneJob custom resource (``finetunejobs.healthnav.io/v1alpha1``) as pydantic models.

These models are the single source of truth: the CRD YAML is generated from them
(:mod:`healthnav.operator.crdgen`), the operator validates what it reads with them, and the
training hyperparameters are the trainer's own :class:`~healthnav.trainer.config.LoraSpec`,
:class:`~healthnav.trainer.config.QuantizationSpec` and
:class:`~healthnav.trainer.config.TrainingSpec`, so a field cannot mean one thing in the CRD
and another in the training pod. Quality gates are the evaluator's
:class:`~healthnav.evaluation.gates.EvaluationGates`.

Cross-field rules are written twice on purpose, side by side: as CEL (enforced by the API
server at ``kubectl apply`` time, with a message naming the field) and as a pydantic validator
(enforced when the operator reads the object). The invalid-manifest tests feed the same bad
manifests to both.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from healthnav.evaluation.gates import EvaluationGates
from healthnav.operator.conditions import Condition, conditions_field
from healthnav.operator.crdgen import AGE_COLUMN, CRDSpec, PrinterColumn, cel, validations
from healthnav.schema import CamelModel
from healthnav.trainer.config import LoraSpec, QuantizationSpec, TrainingSpec

GROUP = "healthnav.io"
VERSION = "v1alpha1"
KIND = "FineTuneJob"
PLURAL = "finetunejobs"
API_VERSION = f"{GROUP}/{VERSION}"

# Longest FineTuneJob name: it names the Job, whose pods carry it in a 63-character label, and
# derived objects append suffixes such as "-progress".
MAX_NAME_LENGTH = 52

# URI patterns (RE2 for the API server, Rust regex for pydantic: only the common subset).
S3_URI = r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^\s]*)?$"
FILE_URI = r"^file:///[^\s]*$"
HUB_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9_.\-]+$"
MODEL_URI = rf"({S3_URI})|({FILE_URI})|({HUB_ID})"
DATASET_URI = rf"({S3_URI})|({FILE_URI})"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
# The Kubernetes resource.Quantity syntax (as controller-gen writes it for quantities).
QUANTITY = rf"^(\+|-)?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$"

# A scheme other than s3:// or file:// (http, https, gs, hf, ...) gets its own message: an
# http(s) URL fetched from inside the cluster could reach link-local or cloud metadata endpoints
# (169.254.169.254, metadata.google.internal), so remote models must be staged in S3 first.
_NO_OTHER_SCHEME = cel(
    "!self.matches('^[A-Za-z][A-Za-z0-9+.-]*:') || self.startsWith('s3://') || self.startsWith('file:///')",
    "only s3://bucket/prefix, file:///path or a model hub id (org/name) are accepted; http(s) and other "
    "schemes are refused (they could reach link-local or cloud metadata endpoints): stage the files in S3",
)
_NO_DOT_DOT = cel(
    "!self.contains('/../') && !self.endsWith('/..')",
    "must not contain '..' path segments",
)
_NO_FILE = cel(
    "!self.startsWith('file:')",
    "must be an s3:// URI: a file:// path inside the training pod would be lost when it exits",
)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def check_uri(value: str, *, allow_file: bool = True) -> str:
    """The pydantic twin of the URI CEL rules (the patterns are shared via Field(pattern=...))."""
    if _SCHEME.match(value) and not value.startswith(("s3://", "file:///")):
        raise ValueError(_NO_OTHER_SCHEME["message"])
    if "/../" in value or value.endswith("/.."):
        raise ValueError(_NO_DOT_DOT["message"])
    if not allow_file and value.startswith("file:"):
        raise ValueError(_NO_FILE["message"])
    return value


Quantity = int | Annotated[str, Field(pattern=QUANTITY, max_length=64)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]


class SecretRef(CamelModel):
    """A Secret in the FineTuneJob's namespace whose keys become environment variables of the
    training pod (e.g. AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, HF_TOKEN). Omit it to use the
    pod's ServiceAccount identity (IRSA, GKE Workload Identity)."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Name of the Secret."""


class ModelSource(CamelModel):
    """Where the base model's weights and tokenizer come from."""

    uri: str = Field(
        min_length=1,
        max_length=1024,
        pattern=MODEL_URI,
        json_schema_extra=validations(_NO_OTHER_SCHEME, _NO_DOT_DOT),
    )
    """s3://bucket/prefix/ or file:///path of a Hugging Face model directory, or a hub id (org/name)."""
    secret_ref: SecretRef | None = None
    """Credentials for the model's location (S3 keys or an HF_TOKEN for gated hub models)."""

    _uri = field_validator("uri")(classmethod(lambda cls, v: check_uri(v)))


class DatasetSource(CamelModel):
    """A dataset built by ``hnav data build`` (manifest.json + JSONL shards)."""

    uri: str = Field(
        min_length=1,
        max_length=1024,
        pattern=DATASET_URI,
        json_schema_extra=validations(_NO_OTHER_SCHEME, _NO_DOT_DOT),
    )
    """s3://bucket/prefix/ (or file:///path baked into the image) of the dataset version."""
    secret_ref: SecretRef | None = None
    """Credentials for the dataset's bucket."""

    _uri = field_validator("uri")(classmethod(lambda cls, v: check_uri(v)))


class OutputSpec(CamelModel):
    """Where the adapter, checkpoints, metrics and model card are written."""

    uri: str = Field(
        min_length=1,
        max_length=1024,
        pattern=S3_URI,
        json_schema_extra=validations(_NO_FILE, _NO_DOT_DOT),
    )
    """s3://bucket/prefix/ root; this job writes under <uri>/<namespace>/<name>/."""
    secret_ref: SecretRef | None = None
    """Credentials for the output bucket."""

    _uri = field_validator("uri")(classmethod(lambda cls, v: check_uri(v, allow_file=False)))


class Toleration(CamelModel):
    """A pod toleration (core/v1 Toleration) so the pod may land on tainted GPU nodes."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.operator != 'Exists' || !has(self.value)",
                "value must be empty when operator is Exists",
                field_path=".value",
            ),
            cel(
                "has(self.key) || self.operator == 'Exists'",
                "a toleration without a key must use operator Exists",
                field_path=".operator",
            ),
        )
    )

    key: str | None = Field(default=None, max_length=317)
    """Taint key to tolerate; empty with operator Exists tolerates every taint."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Equal matches key and value; Exists matches any value of key."""
    value: str | None = Field(default=None, max_length=63)
    """Taint value to match (operator Equal)."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = Field(default=None, ge=0)
    """For NoExecute: how long the pod stays bound after the taint appears."""

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("value must be empty when operator is Exists")
        if self.key is None and self.operator != "Exists":
            raise ValueError("a toleration without a key must use operator Exists")
        return self


class ResourcesSpec(CamelModel):
    """What the training pod asks the scheduler for, and where it may run."""

    gpus: int = Field(default=1, ge=0, le=16)
    """nvidia.com/gpu count (requests = limits). QLoRA needs at least one."""
    gpu_type: LabelValue | None = None
    """Accelerator type, e.g. nvidia-l4, nvidia-a10g, nvidia-tesla-a100: matched against the
    cloud's accelerator node label (GKE cloud.google.com/gke-accelerator, EKS
    k8s.amazonaws.com/accelerator, or the operator's configured labels)."""
    cpu: Quantity = "8"
    """CPU request (Kubernetes quantity)."""
    memory: Quantity = "32Gi"
    """Memory request and limit (Kubernetes quantity)."""
    shm_size: Quantity = "8Gi"
    """Size limit of the in-memory /dev/shm volume (PyTorch data loader workers share tensors there)."""
    node_selector: dict[str, LabelValue] = Field(default_factory=dict, max_length=32)
    """Node labels the pod requires, merged over the operator's defaults (these win)."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Tolerations, added to the operator's defaults (which tolerate the nvidia.com/gpu taint)."""
    affinity: dict[str, Any] | None = None
    """Pod affinity (core/v1 Affinity). Required node-affinity terms are combined (AND) with the
    gpuType constraint."""

    @model_validator(mode="after")
    def _quantities_are_str(self) -> ResourcesSpec:
        self.cpu, self.memory, self.shm_size = str(self.cpu), str(self.memory), str(self.shm_size)
        return self


class EvaluationSpec(CamelModel):
    """Evaluate the adapter after training and gate its promotion to serving."""

    # (Repeated regressionMetrics are rejected by the pydantic model only: a CEL uniqueness
    # rule over an unbounded list exceeds the API server's cost budget.)

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.gates.regressionMetrics) || has(self.gates.maxRegressionVsBase)",
                "regressionMetrics needs maxRegressionVsBase",
                field_path=".gates.regressionMetrics",
            ),
        )
    )

    gates: EvaluationGates = Field(default_factory=EvaluationGates)
    """Minimum quality (and maximum latency/cost) the adapter must reach; see GatePassed."""


_IMMUTABLE = (
    "is immutable once the FineTuneJob exists (only spec.suspend may change): delete and re-create it"
)


def _immutable() -> dict[str, Any]:
    return validations(cel("self == oldSelf", _IMMUTABLE))


# Optional spec fields: a per-field `self == oldSelf` rule does not run when the field is
# added or removed, so the spec-level rules below catch that.
_OPTIONAL_SPEC_FIELDS = (
    "quantization",
    "output",
    "evaluation",
    "queueName",
    "serviceAccountName",
    "priorityClassName",
)


class FineTuneJobSpec(CamelModel):
    """Desired state of a FineTuneJob: fine-tune baseModel on dataset with (Q)LoRA and write an adapter."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.method == 'qlora' || !has(self.quantization)",
                "quantization is only valid with method: qlora",
                field_path=".quantization",
                reason="FieldValueForbidden",
            ),
            cel(
                "self.method != 'qlora' || !has(self.resources) || self.resources.gpus >= 1",
                "method qlora needs resources.gpus >= 1 (4/8-bit kernels run on CUDA)",
                field_path=".resources.gpus",
            ),
            *(
                cel(
                    f"has(self.{name}) == has(oldSelf.{name})",
                    f"{name} cannot be added or removed once the FineTuneJob exists "
                    "(only spec.suspend may change): delete and re-create it",
                    field_path=f".{name}",
                )
                for name in _OPTIONAL_SPEC_FIELDS
            ),
        )
    )

    base_model: ModelSource = Field(json_schema_extra=_immutable())
    """Base model to adapt."""
    dataset: DatasetSource = Field(json_schema_extra=_immutable())
    """Training data (the train split; the test split feeds evaluation)."""
    method: Literal["qlora", "lora"] = Field(default="qlora", json_schema_extra=_immutable())
    """qlora: 4/8-bit quantised frozen base + LoRA (fits 7B on one 24 GB GPU); lora: bf16 base."""
    lora: LoraSpec = Field(default_factory=LoraSpec, json_schema_extra=_immutable())
    """LoRA adapter shape."""
    quantization: QuantizationSpec | None = Field(default=None, json_schema_extra=_immutable())
    """Base-model quantisation, qlora only (nf4 + double quantisation when omitted)."""
    training: TrainingSpec = Field(default_factory=TrainingSpec, json_schema_extra=_immutable())
    """Optimisation hyperparameters."""
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, json_schema_extra=_immutable())
    """GPU, CPU, memory and placement of the training pod."""
    output: OutputSpec | None = Field(default=None, json_schema_extra=_immutable())
    """Output root; the operator's default output URI when omitted."""
    evaluation: EvaluationSpec | None = Field(default=None, json_schema_extra=_immutable())
    """Evaluate after training and set the Evaluated/GatePassed conditions."""
    queue_name: str | None = Field(
        default=None, max_length=63, pattern=DNS_LABEL, json_schema_extra=_immutable()
    )
    """Kueue LocalQueue; the Job then waits (suspended) until Kueue admits it."""
    active_deadline_seconds: int = Field(default=86400, ge=60, le=30 * 86400, json_schema_extra=_immutable())
    """Wall-clock limit of the whole Job, retries included."""
    backoff_limit: int = Field(default=2, ge=0, le=20, json_schema_extra=_immutable())
    """Retries after a failed pod (node disruptions and preemptions do not count)."""
    suspend: bool = False
    """Stop training (the pod is deleted, checkpoints stay) until set back to false."""
    service_account_name: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN, json_schema_extra=_immutable()
    )
    """ServiceAccount of the training pod (carry IRSA / Workload Identity annotations for S3 on
    it); by default the operator creates <name>-trainer. Either way it may patch only this
    job's progress ConfigMap."""
    priority_class_name: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN, json_schema_extra=_immutable()
    )
    """PriorityClass of the training pod (preemption order on shared GPU pools)."""
    pod_annotations: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, max_length=32, json_schema_extra=_immutable()
    )
    """Extra annotations on the training pod (e.g. cluster-autoscaler safe-to-evict: "false")."""

    @model_validator(mode="after")
    def _cross_field(self) -> FineTuneJobSpec:
        if self.method != "qlora" and self.quantization is not None:
            raise ValueError("quantization is only valid with method: qlora")
        if self.method == "qlora" and self.resources.gpus < 1:
            raise ValueError("method qlora needs resources.gpus >= 1 (4/8-bit kernels run on CUDA)")
        return self


Phase = Literal["Pending", "Running", "Evaluating", "Succeeded", "Failed", "Suspended"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed"})


class Progress(CamelModel):
    """Training progress as reported by the trainer (copied from <name>-progress)."""

    percent: float | None = Field(default=None, ge=0, le=100)
    """Completed fraction of the planned optimizer steps, 0-100."""
    step: int | None = Field(default=None, ge=0)
    """Optimizer steps done."""
    total_steps: int | None = Field(default=None, ge=0)
    """Optimizer steps planned."""
    epoch: float | None = Field(default=None, ge=0)
    """Current (fractional) epoch."""
    loss: float | None = None
    """Latest training loss."""
    tokens_per_second: float | None = Field(default=None, ge=0)
    """Training throughput."""
    eta_seconds: float | None = Field(default=None, ge=0)
    """Estimated time to finish training."""
    updated_at: str | None = None
    """When the trainer last reported (RFC 3339)."""


class OutputStatus(CamelModel):
    """What a finished run produced."""

    uri: str | None = None
    """This run's output prefix: <spec.output.uri>/<namespace>/<name>/."""
    adapter_uri: str | None = None
    """The trained LoRA adapter (safetensors + adapter_config.json + tokenizer)."""
    metrics: dict[str, float] = Field(default_factory=dict, max_length=128)
    """Numeric metrics from metrics.json (training) and eval/metrics.json (evaluation)."""


class FineTuneJobStatus(CamelModel):
    """Observed state of a FineTuneJob, written by the operator only."""

    phase: Phase | None = None
    """Pending, Running, Evaluating, Succeeded, Failed or Suspended."""
    message: str | None = Field(default=None, max_length=4096)
    """One human-readable line about the current phase (the failure reason when Failed)."""
    conditions: list[Condition] = conditions_field()
    """JobCreated, Schedulable, Running, Complete, Failed, Suspended, Evaluated, GatePassed."""
    observed_generation: int | None = None
    """metadata.generation of the spec this status reflects."""
    job_name: str | None = None
    """The batch/v1 Job running the trainer."""
    start_time: str | None = None
    """When the training Job started (RFC 3339)."""
    completion_time: str | None = None
    """When training (and evaluation) finished, successfully or not (RFC 3339)."""
    failed_attempts: int | None = Field(default=None, ge=0)
    """Training pods that failed so far (retried up to spec.backoffLimit)."""
    progress: Progress | None = None
    """Live training progress."""
    output: OutputStatus | None = None
    """Adapter location and metrics after success."""


FINETUNEJOB_CRD = CRDSpec(
    group=GROUP,
    kind=KIND,
    plural=PLURAL,
    version=VERSION,
    spec_model=FineTuneJobSpec,
    status_model=FineTuneJobStatus,
    description=(
        "FineTuneJob fine-tunes a base language model on a healthnav dataset with QLoRA/LoRA in a "
        "GPU Job, reports progress in status, and records the adapter and its metrics."
    ),
    short_names=("ftj",),
    categories=("healthnav",),
    printer_columns=(
        PrinterColumn("Phase", ".status.phase", description="Lifecycle phase"),
        PrinterColumn("Progress", ".status.progress.percent", "number", "Percent of training steps done"),
        PrinterColumn("Loss", ".status.progress.loss", "number", "Latest training loss"),
        PrinterColumn("Job", ".status.jobName", priority=1, description="Training Job"),
        PrinterColumn("Adapter", ".status.output.adapterUri", priority=1, description="Trained adapter"),
        AGE_COLUMN,
    ),
    root_validations=(
        cel(
            f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
            f"metadata.name must be at most {MAX_NAME_LENGTH} characters "
            "(it names the training Job and its pods)",
        ),
        cel(
            "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
            "metadata.name must be a DNS label (lowercase letters, digits and '-'; no dots)",
        ),
    ),
)
