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

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from healthnav.contracts.progress import TrainingProgress
from healthnav.contracts.uris import S3_URI, STORAGE_URI, check_uri
from healthnav.evaluation.gates import EvaluationGates
from healthnav.operator.conditions import Condition, ObservedStatus, conditions_field
from healthnav.operator.crdgen import AGE_COLUMN, CRDSpec, PrinterColumn, cel, validations
from healthnav.operator.spec_types import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    FINETUNEJOB_MAX_NAME_LENGTH,
    NO_DOT_DOT,
    NO_FILE,
    NO_OTHER_SCHEME,
    LabelValue,
    ModelSource,
    Quantity,
    SecretRef,
    Toleration,
    uri_field,
)
from healthnav.schema import CamelModel
from healthnav.trainer.config import LoraSpec, QuantizationSpec, TrainingSpec

GROUP = "healthnav.io"
VERSION = "v1alpha1"
KIND = "FineTuneJob"
PLURAL = "finetunejobs"
API_VERSION = f"{GROUP}/{VERSION}"

MAX_NAME_LENGTH = FINETUNEJOB_MAX_NAME_LENGTH


class DatasetSource(CamelModel):
    """A dataset built by ``hnav data build`` (manifest.json + JSONL shards)."""

    uri: str = uri_field(STORAGE_URI, NO_OTHER_SCHEME, NO_DOT_DOT)
    """s3://bucket/prefix/ (or file:///path baked into the image) of the dataset version."""
    secret_ref: SecretRef | None = None
    """Credentials for the dataset's bucket."""

    _uri = field_validator("uri")(classmethod(lambda cls, v: check_uri(v)))


class OutputSpec(CamelModel):
    """Where the adapter, checkpoints, metrics and model card are written."""

    uri: str = uri_field(S3_URI, NO_FILE, NO_DOT_DOT)
    """s3://bucket/prefix/ root; this job writes under <uri>/<namespace>/<name>/."""
    secret_ref: SecretRef | None = None
    """Credentials for the output bucket."""

    _uri = field_validator("uri")(classmethod(lambda cls, v: check_uri(v, allow_file=False)))


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


class OutputStatus(CamelModel):
    """What a finished run produced."""

    uri: str | None = None
    """This run's output prefix: <spec.output.uri>/<namespace>/<name>/."""
    adapter_uri: str | None = None
    """The trained LoRA adapter (safetensors + adapter_config.json + tokenizer)."""
    metrics: dict[str, float] = Field(default_factory=dict, max_length=128)
    """Numeric metrics from metrics.json (training) and eval/metrics.json (evaluation)."""


class FineTuneJobStatus(ObservedStatus):
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
    progress: TrainingProgress | None = None
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
