"""The trainer's configuration: the one schema the operator renders and the trainer reads.

The operator's FineTuneJob spec reuses :class:`LoraSpec`, :class:`QuantizationSpec` and
:class:`TrainingSpec` as-is, so a field cannot mean one thing in the CRD and another in the
training pod. Only pydantic is imported here: the operator loads this without torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from healthnav.evaluation.gates import EvaluationGates
from healthnav.schema import CamelModel

TERMINATION_LOG = "/dev/termination-log"
"""Where the trainer writes its one-line result; Kubernetes reports it as the pod's termination message.

Exit codes are the platform's (:mod:`healthnav.contracts.errors`): 78 for a configuration or data
error (the operator's podFailurePolicy fails the Job at once), 143 when preempted, 1 otherwise.
"""


class LoraSpec(CamelModel):
    """LoRA adapter shape (PEFT LoraConfig)."""

    r: int = Field(default=16, ge=1, le=256)
    """Rank of the update matrices. vLLM serves ranks 8, 16, 32, 64, 128, 256."""
    alpha: int = Field(default=32, ge=1, le=1024)
    """Scaling numerator; the update is scaled by alpha / r."""
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Dropout on the LoRA path during training."""
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1, max_length=32
    )
    """Module names (suffixes) that receive adapters; the attention projections by default."""


class QuantizationSpec(CamelModel):
    """How the frozen base model is quantised for QLoRA (bitsandbytes)."""

    bits: Literal[4, 8] = 4
    """Bits per base-model weight."""
    type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type; nf4 is the QLoRA paper's NormalFloat."""
    double_quant: bool = True
    """Quantise the quantisation constants too (saves ~0.4 bits per parameter)."""


class TrainingSpec(CamelModel):
    """Optimisation hyperparameters."""

    epochs: float = Field(default=3, gt=0, le=100)
    """Passes over the training split (fractions allowed)."""
    learning_rate: float = Field(default=2.0e-4, gt=0, le=1.0)
    """Peak learning rate (AdamW), reached after warmup then decayed by cosine."""
    batch_size: int = Field(default=4, ge=1, le=1024)
    """Examples per device per step (with packing: rows of maxSeqLength tokens)."""
    gradient_accumulation_steps: int = Field(default=4, ge=1, le=1024)
    """Micro-batches accumulated per optimizer step."""
    max_seq_length: int = Field(default=2048, ge=64, le=131072)
    """Longest sequence in tokens; longer examples are truncated, never padded up to it."""
    warmup_steps: int = Field(default=100, ge=0)
    """Linear warmup steps."""
    packing: bool = True
    """Pack several examples per row without cross-example attention (no padding waste)."""
    seed: int = Field(default=42, ge=0)
    """Seed for data order, LoRA init and dropout: the same seed gives the same adapter."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps (overrides epochs)."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass: less memory, ~20% more compute."""
    checkpoint_every_steps: int = Field(default=200, ge=1)
    """Write a resumable checkpoint every N optimizer steps."""
    checkpoint_every_minutes: float = Field(default=30, gt=0)
    """...and at least this often in wall-clock time."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay on adapter weights."""
    max_grad_norm: float = Field(default=1.0, gt=0)
    """Gradient clipping norm."""


class ProgressTarget(CamelModel):
    """Where the trainer publishes progress for the operator to mirror into FineTuneJob.status.

    The trainer may patch exactly this one ConfigMap (a Role restricted by resourceNames),
    nothing else in the cluster: that is the least-privilege path for progress.
    """

    namespace: str
    config_map: str


class TrainerConfig(CamelModel):
    """Everything one training run needs; written by the operator into the Job's ConfigMap."""

    base_model: str
    """s3:// or file:// prefix of a Hugging Face model directory, a local path, or a hub id."""
    dataset: str
    """s3:// or file:// prefix of a datapipe dataset (manifest.json + shards)."""
    output: str
    """s3:// or file:// prefix for this run: adapter/, checkpoints/, metrics.json, model-card.md."""
    method: Literal["qlora", "lora"] = "qlora"
    lora: LoraSpec = Field(default_factory=LoraSpec)
    quantization: QuantizationSpec | None = None
    """Required for qlora (defaults to nf4 + double quant); must be absent for lora."""
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    run_name: str = "healthnav"
    """Shown in logs, the model card and experiment trackers."""
    progress: ProgressTarget | None = None
    """Publish progress to the cluster; None when running on a laptop."""
    report_to: list[Literal["wandb", "mlflow"]] = Field(default_factory=list)
    """Optional experiment trackers (need their own credentials in the environment)."""
    merge_adapter: bool = False
    """Also write a merged full-precision model under merged/."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """Where to train; auto picks CUDA when present."""
    evaluation: EvaluationGates | None = None
    """Evaluate the adapter against the base model on the test split right after training, in the
    same pod, and write ``<output>/eval/`` (report and ``metrics.json`` with the gate verdict) for
    the operator's Evaluated/GatePassed conditions. None skips evaluation."""

    @model_validator(mode="after")
    def _quantization_matches_method(self) -> TrainerConfig:
        if self.method == "qlora" and self.quantization is None:
            self.quantization = QuantizationSpec()
        if self.method == "lora" and self.quantization is not None:
            raise ValueError("quantization is only valid with method: qlora")
        return self
