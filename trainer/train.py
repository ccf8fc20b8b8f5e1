"""The training run: one readable loop from dataset URI to adapter URI.

Order of events (``run``):

1. read and verify the dataset (manifest + sha256 of every shard) and stage the base model;
2. load the base model (4-bit NF4 for QLoRA) and attach LoRA adapters;
3. tokenise with the shared prompt contract and build the whole step plan up front;
4. resume from ``<output>/checkpoints/latest.json`` if a previous pod left one;
5. train: padding-free packed micro-batches, loss on response tokens only, normalised by the
   number of response tokens in the *optimizer step* (not per micro-batch, which would weight
   short examples more), gradient clipping, AdamW + warmup/cosine;
6. checkpoint every N steps / M minutes and on SIGTERM; stop on a non-finite loss;
7. write adapter/, metrics.json, loss_curve.png, model-card.md (and merged/) to the output URI.

Errors are sorted by what retrying would achieve (:mod:`healthnav.contracts.errors`): a
:class:`~healthnav.contracts.errors.ConfigurationError` (bad config, corrupt data, divergence —
a retry would fail identically) exits ``EXIT_CONFIG_ERROR`` so the operator fails the Job at
once; anything else exits ``EXIT_RETRYABLE`` and the Job's backoffLimit gives it another pod,
which resumes from the last checkpoint. The files written are the run-output layout
(:class:`~healthnav.contracts.run_output.RunOutput`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import resource
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from healthnav.contracts import storage
from healthnav.contracts.dataset import iter_records, load_manifest
from healthnav.contracts.errors import EXIT_OK, EXIT_PREEMPTED, ConfigurationError, exit_code_for
from healthnav.contracts.models import ADAPTER_CONFIG, materialize
from healthnav.contracts.progress import TrainingProgress
from healthnav.contracts.run_output import RunOutput
from healthnav.trainer import checkpoint as ckpt
from healthnav.trainer.config import TERMINATION_LOG, TrainerConfig
from healthnav.trainer.data import IGNORE_INDEX, Plan, build_plan, collate, epoch_progress, tokenize_records
from healthnav.trainer.model import load_model, merge_and_save, select_device
from healthnav.trainer.probes import record_probes
from healthnav.trainer.progress import ConfigMapProgressReporter, ProgressPrinter
from healthnav.trainer.report import plot_loss_curve, render_model_card, write_json, write_termination_message

log = logging.getLogger(__name__)


class TrainingDivergedError(ConfigurationError):
    """The loss became NaN or infinite: the same settings would diverge again, so it is not retried."""


@dataclass
class RunResult:
    exit_code: int
    message: str
    step: int = 0
    total_steps: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str) -> DistInfo:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; gloo on the CPU, NCCL on GPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return DistInfo(rank=dist.get_rank(), local_rank=local_rank, world_size=dist.get_world_size())


class _PreemptionFlag:
    """SIGTERM sets a flag; the loop checkpoints at the next micro-batch boundary and exits 143."""

    def __init__(self) -> None:
        self.set = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[_PreemptionFlag]:
        def handler(signum: int, frame: Any) -> None:
            log.warning("received signal %d: checkpointing and exiting", signum)
            self.set = True

        try:
            previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread: no signal handling possible
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)


class _Trackers:
    """Optional W&B / MLflow logging (``reportTo``); each needs its own credentials from the environment."""

    def __init__(self, config: TrainerConfig, enabled: bool) -> None:
        self._wandb: Any = None
        self._mlflow: Any = None
        if not enabled:
            return
        for name in config.report_to:
            try:
                module = __import__(name)
            except ImportError as exc:
                raise ConfigurationError(
                    f"reportTo: {name} requested but the {name} package is not installed"
                ) from exc
            params = {**config.training.to_dict(), "method": config.method, "r": config.lora.r}
            if name == "wandb":
                module.init(
                    project=os.environ.get("WANDB_PROJECT", "healthnav"), name=config.run_name, config=params
                )
                self._wandb = module
            else:
                module.start_run(run_name=config.run_name)
                module.log_params(params)
                self._mlflow = module

    def log(self, values: dict[str, float], step: int) -> None:
        values = {k: v for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}
        with contextlib.suppress(Exception):
            if self._wandb:
                self._wandb.log(values, step=step)
            if self._mlflow:
                self._mlflow.log_metrics(values, step=step)

    def finish(self) -> None:
        with contextlib.suppress(Exception):
            if self._wandb:
                self._wandb.finish()
            if self._mlflow:
                self._mlflow.end_run()


def peak_memory_bytes(device: str) -> int:
    if device == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _batch_tensors(examples: list[Any], device: str) -> tuple[dict[str, Any], Any, int]:
    """Model kwargs for one flattened micro-batch, the scored targets, and its token count."""
    import torch

    batch = collate(examples)
    positions = batch.target_positions
    cu = torch.tensor(batch.cu_seq_lens, dtype=torch.int32, device=device)
    kwargs = {
        "input_ids": torch.tensor([batch.input_ids], device=device),
        "position_ids": torch.tensor([batch.position_ids], device=device),
        # variable-length attention metadata (flash-attn's names; our packed SDPA reads the same)
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": batch.max_length,
        "max_length_k": batch.max_length,
        # the LM head only runs where a loss is taken: prompts need no logits
        "logits_to_keep": torch.tensor(positions, device=device),
        "use_cache": False,
    }
    targets = torch.tensor([batch.targets[i] for i in positions], device=device)
    return kwargs, targets, len(batch.input_ids)


# ------------------------------------------------------------------------------------------- run


class Trainer:
    """Holds the run's objects; ``train()`` is the loop, ``finalize()`` writes the artifacts."""

    def __init__(self, config: TrainerConfig, *, stdout: TextIO | None = None) -> None:
        self.config = config
        self.printer = ProgressPrinter(stdout)
        try:
            self.run = RunOutput.parse(config.output)
        except ValueError as exc:
            raise ConfigurationError(f"output: {exc}") from exc

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        import torch
        from transformers import get_cosine_schedule_with_warmup

        cfg = self.config
        t = cfg.training
        self.device = select_device(cfg)
        self.dist = _init_distributed(self.device)
        self.manifest = load_manifest(cfg.dataset)
        records = list(iter_records(cfg.dataset, "train", manifest=self.manifest))
        if not records:
            raise ConfigurationError(f"dataset: {cfg.dataset} has no training records")
        self.base_path = materialize(cfg.base_model, field="baseModel")
        self.loaded = load_model(cfg, self.base_path, self.device, self.dist.local_rank)
        self.model = self.loaded.model
        self.examples, self.data_stats = tokenize_records(records, self.loaded.tokenizer, t.max_seq_length)
        if not self.examples:
            raise ConfigurationError(
                f"dataset: none of {len(records)} records has a response token within "
                f"training.maxSeqLength={t.max_seq_length}"
            )
        try:
            self.plan: Plan = build_plan(
                [len(e) for e in self.examples],
                [e.target_count for e in self.examples],
                epochs=t.epochs,
                batch_size=t.batch_size,
                gradient_accumulation_steps=t.gradient_accumulation_steps,
                max_seq_length=t.max_seq_length,
                packing=t.packing,
                seed=t.seed,
                max_steps=t.max_steps,
                world_size=self.dist.world_size,
            )
        except ValueError as exc:
            raise ConfigurationError(f"training: {exc}") from exc
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
        self.scheduler = get_cosine_schedule_with_warmup(
            self.optimizer,
            num_warmup_steps=min(t.warmup_steps, len(self.plan)),
            num_training_steps=len(self.plan),
        )
        self.state = ckpt.TrainState(plan_fingerprint=self.plan.fingerprint)
        self.resumed_from_step: int | None = None
        """The checkpoint step this attempt started from (None: from scratch); in metrics.json."""
        self._resume()
        self.ddp_model: Any = self.model
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.dist.local_rank] if self.device == "cuda" else None
            self.ddp_model = DistributedDataParallel(self.model, device_ids=ids)
        self.reporter = (
            ConfigMapProgressReporter(cfg.progress)
            if cfg.progress is not None and self.dist.is_main
            else None
        )
        self.trackers = _Trackers(cfg, enabled=self.dist.is_main)
        log.info(
            "run %s: %d examples (%d tokens, %d response tokens, %d skipped, %d truncated), %d steps, "
            "method=%s device=%s attention=%s world=%d",
            cfg.run_name,
            self.data_stats.examples,
            self.data_stats.tokens,
            self.data_stats.target_tokens,
            self.data_stats.skipped,
            self.data_stats.truncated,
            len(self.plan),
            cfg.method,
            self.device,
            self.loaded.attn_implementation,
            self.dist.world_size,
        )

    def _resume(self) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        found = ckpt.find_latest(self.run)
        if found is None:
            return
        step, uri = found
        loaded = ckpt.load_checkpoint(uri)
        try:
            if loaded.state.plan_fingerprint != self.plan.fingerprint:
                raise ConfigurationError(
                    f"checkpoint {uri} was written for a different dataset or training settings; "
                    "use a new output URI (or delete its checkpoints/) to start over"
                )
            weights = load_file(str(loaded.adapter_dir / "adapter_model.safetensors"), device=self.device)
            set_peft_model_state_dict(self.model, weights)
            self.optimizer.load_state_dict(loaded.optimizer)
            self.scheduler.load_state_dict(loaded.scheduler)
            ckpt.restore_rng(loaded.rng)
            self.state = loaded.state
            self.resumed_from_step = step
        finally:
            loaded.cleanup()
        log.info("resumed from %s at step %d of %d", uri, step, len(self.plan))

    # -- loop ----------------------------------------------------------------------------------
    def _save(self, rng_state: dict[str, Any]) -> None:
        if self.dist.is_main:
            ckpt.save_checkpoint(
                self.run,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                rng_state=rng_state,
                state=self.state,
            )
        self._barrier()

    def _barrier(self) -> None:
        if self.dist.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def _any_rank(self, flag: bool) -> bool:
        if self.dist.world_size == 1:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def _sum_ranks(self, value: float) -> float:
        if self.dist.world_size == 1:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item())

    def train(self, preempt: _PreemptionFlag) -> bool:
        """Run the remaining steps; returns False when preempted (a checkpoint was written)."""
        import torch
        import torch.nn.functional as F

        t = self.config.training
        total = len(self.plan)
        world = self.dist.world_size
        self.model.train()
        session_start = time.monotonic()
        session_steps = 0
        last_ckpt = time.monotonic()
        while self.state.step < total:
            step_index = self.state.step
            step = self.plan.steps[step_index]
            rng_at_step_start = ckpt.capture_rng()
            if self._any_rank(preempt.set):
                self._save(rng_at_step_start)
                return False
            step_start = time.monotonic()
            loss_sum = 0.0
            tokens = 0
            micro_batches = step.micro_batches[self.dist.rank]
            for i, mb in enumerate(micro_batches):
                if world == 1 and preempt.set:
                    # weights only change at optimizer.step(): dropping the partial gradients and
                    # saving the state as of this step's start loses nothing but this step's work
                    self.optimizer.zero_grad(set_to_none=True)
                    self._save(rng_at_step_start)
                    return False
                kwargs, targets, n_tokens = _batch_tensors([self.examples[j] for j in mb], self.device)
                sync = world == 1 or i == len(micro_batches) - 1
                ctx = contextlib.nullcontext() if sync else self.ddp_model.no_sync()
                with ctx:
                    logits = self.ddp_model(**kwargs).logits[0].float()
                    mb_loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
                    if not torch.isfinite(mb_loss):
                        raise TrainingDivergedError(
                            f"loss became {mb_loss.item()} at step {step_index + 1}; lower "
                            f"training.learningRate (now {t.learning_rate}) or check the data"
                        )
                    # DDP averages gradients over ranks; x world turns that back into a sum
                    (mb_loss * world / step.target_tokens).backward()
                loss_sum += float(mb_loss.detach())
                tokens += n_tokens
            grad_norm = torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], t.max_grad_norm
            )
            if not torch.isfinite(grad_norm):
                raise TrainingDivergedError(
                    f"gradient norm became {float(grad_norm)} at step {step_index + 1}"
                )
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)

            loss = self._sum_ranks(loss_sum) / step.target_tokens
            step_seconds = time.monotonic() - step_start
            self.state.step += 1
            self.state.tokens_seen += step.tokens
            self.state.target_tokens_seen += step.target_tokens
            self.state.train_seconds += step_seconds
            self.state.loss_history.append((self.state.step, round(loss, 6)))
            self.state.lr_history.append((self.state.step, lr))
            session_steps += 1
            if self.dist.is_main:
                self._report(loss, lr, session_start, session_steps)
            due = (
                self.state.step % t.checkpoint_every_steps == 0
                or time.monotonic() - last_ckpt >= t.checkpoint_every_minutes * 60
                or self.state.step == total
            )
            if self._any_rank(due):
                self._save(ckpt.capture_rng())
                last_ckpt = time.monotonic()
        return True

    def _report(self, loss: float, lr: float, session_start: float, session_steps: int) -> None:
        total = len(self.plan)
        elapsed = time.monotonic() - session_start
        eta = (total - self.state.step) * elapsed / max(session_steps, 1)
        tps = self.state.tokens_seen / self.state.train_seconds if self.state.train_seconds > 0 else None
        progress = TrainingProgress.at(
            step=self.state.step,
            total_steps=total,
            epoch=epoch_progress(self.plan, self.state.step),
            loss=loss,
            tokens_per_second=tps,
            eta_seconds=eta,
        )
        self.printer.emit({**progress.payload(), "lr": lr})
        if self.reporter is not None:
            self.reporter.report(progress, force=self.state.step == total)
        self.trackers.log({"loss": loss, "lr": lr, "tokensPerSecond": tps or 0.0}, self.state.step)

    # -- outputs -------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        s = self.state
        tail = [v for _, v in s.loss_history[-10:]]
        return {
            "trainLoss": round(sum(tail) / len(tail), 6) if tail else None,
            "finalLoss": s.loss_history[-1][1] if s.loss_history else None,
            "initialLoss": s.loss_history[0][1] if s.loss_history else None,
            "steps": s.step,
            "totalSteps": len(self.plan),
            "resumedFromStep": self.resumed_from_step,
            "epochs": epoch_progress(self.plan, s.step),
            "tokens": s.tokens_seen,
            "responseTokens": s.target_tokens_seen,
            "tokensPerSecond": round(s.tokens_seen / s.train_seconds, 2) if s.train_seconds else None,
            "trainSeconds": round(s.train_seconds, 3),
            "examples": self.data_stats.examples,
            "skippedExamples": self.data_stats.skipped,
            "truncatedExamples": self.data_stats.truncated,
            "method": self.config.method,
            "device": self.device,
            "worldSize": self.dist.world_size,
            "attention": self.loaded.attn_implementation,
            "peakMemoryBytes": peak_memory_bytes(self.device),
        }

    def finalize(self, wall_seconds: float) -> dict[str, Any]:
        """Write the adapter and reports locally, then upload them idempotently (metrics.json last)."""
        metrics = {**self.metrics(), "wallSeconds": round(wall_seconds, 3)}
        if not self.dist.is_main:
            return metrics
        adapter_uri = str(self.run.adapter)
        with tempfile.TemporaryDirectory(prefix="hnav-out-") as tmp:
            out = Path(tmp)
            adapter_dir = out / RunOutput.ADAPTER
            self.model.save_pretrained(adapter_dir, safe_serialization=True)
            _record_base_model(adapter_dir, self.config.base_model)
            precision = f"{self.config.method} over {str(self.model.dtype).removeprefix('torch.')}"
            if (probes := record_probes(self.model, self.loaded.tokenizer, precision=precision)) is not None:
                probes.write(adapter_dir)  # what serving checks the loaded adapter against
            self.loaded.tokenizer.save_pretrained(adapter_dir)
            if self.config.merge_adapter:
                merge_and_save(self.base_path, adapter_dir, out / RunOutput.MERGED, self.device)
            plot_loss_curve(
                self.state.loss_history, out / RunOutput.LOSS_CURVE, title=f"{self.config.run_name} loss"
            )
            manifest = self.manifest.model_dump(mode="json")
            card = render_model_card(self.config, metrics, manifest, adapter_uri)
            (out / RunOutput.MODEL_CARD).write_text(card)
            write_json(out / RunOutput.METRICS, metrics)
            storage.upload_dir(out, self.run.prefix, last=(RunOutput.METRICS,))
        self.trackers.finish()
        return metrics


def evaluate_adapter(config: TrainerConfig) -> str:
    """Run the post-training evaluation and gates; returns a one-line verdict for the message.

    A failed gate is a result, not an error: training succeeded and the operator turns the verdict
    into the GatePassed condition. An evaluation that cannot run raises (retryable: the next
    attempt resumes from the final checkpoint and only re-evaluates).
    """
    from healthnav.evaluation.pipeline import EvalConfig, run_evaluation

    outcome = run_evaluation(
        EvalConfig(
            dataset=config.dataset,
            base_model=config.base_model,
            adapter=str(RunOutput.parse(config.output).adapter),
            gates=config.evaluation,
            output=config.output,
        )
    )
    log.info("evaluation: %s", outcome.gate.message)
    return f"evaluation gates {'passed' if outcome.passed else 'failed'}"


def _record_base_model(adapter_dir: Path, base_model: str) -> None:
    """Name the base model by its URI in adapter_config.json (not the pod's temporary path)."""
    path = adapter_dir / ADAPTER_CONFIG
    data = json.loads(path.read_text())
    data["base_model_name_or_path"] = base_model
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def _exit_for(exc: BaseException) -> tuple[int, str]:
    """Exit code and one-line message: a configuration error's own message, else the exception's type too."""
    code = exit_code_for(exc)
    return code, str(exc) if isinstance(exc, ConfigurationError) else f"{type(exc).__name__}: {exc}"


def run(
    config: TrainerConfig, *, stdout: TextIO | None = None, termination_log: str | None = None
) -> RunResult:
    """Train from a validated config; never raises: the result carries the exit code and message."""
    started = time.monotonic()
    trainer: Trainer | None = None
    preempt = _PreemptionFlag()
    term = termination_log or os.environ.get("HEALTHNAV_TERMINATION_LOG")
    try:
        with preempt.installed():
            trainer = Trainer(config, stdout=stdout)
            trainer.setup()
            finished = trainer.train(preempt)
            if not finished:
                where = f"{trainer.state.step}/{len(trainer.plan)}"
                msg = f"preempted at step {where}; checkpoint written, the next attempt resumes"
                result = RunResult(EXIT_PREEMPTED, msg, trainer.state.step, len(trainer.plan))
            else:
                metrics = trainer.finalize(time.monotonic() - started)
                msg = (
                    f"succeeded: {metrics['steps']} steps, loss {metrics['trainLoss']}, "
                    f"adapter {trainer.run.adapter}"
                )
                if config.evaluation is not None and trainer.dist.is_main:
                    msg += "; " + evaluate_adapter(config)
                result = RunResult(EXIT_OK, msg, trainer.state.step, len(trainer.plan), metrics)
    except Exception as exc:
        code, msg = _exit_for(exc)
        if not isinstance(exc, ConfigurationError):
            log.exception("training failed (retryable)")
        else:
            log.error("training failed: %s", msg)
        step = trainer.state.step if trainer is not None and hasattr(trainer, "state") else 0
        result = RunResult(code, msg, step)
    finally:
        if trainer is not None and getattr(trainer, "dist", DistInfo()).world_size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    if trainer is None or getattr(trainer, "dist", DistInfo()).is_main:
        write_termination_message(result.message, term or TERMINATION_LOG)
    return result
