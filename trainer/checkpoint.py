"""Resumable checkpoints under ``<output>/checkpoints/``.

A checkpoint is a directory ``step-00000042/`` holding the adapter weights (safetensors),
optimizer and scheduler state, the RNG state captured at the start of the *next* step, and
``state.json`` (step, plan fingerprint, loss history, counters). ``latest.json`` names the
newest complete checkpoint and is written only after every file of it is uploaded, so a pod
killed halfway through an upload resumes from the previous one instead of a torn checkpoint.

Only the adapter (a few MB for a 7B model) is saved, never the frozen base model: checkpointing
a QLoRA run costs seconds, which is what lets SIGTERM's grace period be enough.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from healthnav.contracts import storage
from healthnav.contracts.run_output import RunOutput
from healthnav.contracts.uris import StorageURI

log = logging.getLogger(__name__)

LATEST = "latest.json"
STATE = "state.json"


@dataclass
class TrainState:
    """Everything about the run's position that is not a tensor."""

    step: int = 0
    plan_fingerprint: str = ""
    tokens_seen: int = 0
    target_tokens_seen: int = 0
    train_seconds: float = 0.0
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    lr_history: list[tuple[int, float]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        raw = json.loads(text)
        raw["loss_history"] = [tuple(x) for x in raw.get("loss_history", [])]
        raw["lr_history"] = [tuple(x) for x in raw.get("lr_history", [])]
        return cls(**raw)


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(
    run: RunOutput,
    *,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    rng_state: dict[str, Any],
    state: TrainState,
) -> StorageURI:
    """Write a checkpoint for ``state.step`` under the run's ``checkpoints/`` and point latest at it."""
    import torch

    name = step_dir_name(state.step)
    target = run.checkpoints.join(name + "/")
    with tempfile.TemporaryDirectory(prefix="hnav-ckpt-") as tmp:
        local = Path(tmp)
        model.save_pretrained(local / "adapter", safe_serialization=True)
        torch.save(optimizer.state_dict(), local / "optimizer.pt")
        torch.save(scheduler.state_dict(), local / "scheduler.pt")
        torch.save(rng_state, local / "rng.pt")
        (local / STATE).write_text(state.to_json())
        storage.upload_dir(local, target, last=(STATE,))
    storage.write_text(
        run.checkpoints.join(LATEST),
        json.dumps({"step": state.step, "path": name + "/"}),
        content_type="application/json",
    )
    log.info("checkpoint: step %d written to %s", state.step, target)
    return target


def find_latest(run: RunOutput) -> tuple[int, StorageURI] | None:
    """(step, uri) of the newest complete checkpoint, or None for a fresh run."""
    pointer = run.checkpoints.join(LATEST)
    try:
        raw = json.loads(storage.read_text(pointer))
    except storage.StorageError:
        return None
    return int(raw["step"]), run.checkpoints.join(raw["path"])


@dataclass
class LoadedCheckpoint:
    state: TrainState
    adapter_dir: Path
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    workdir: Path

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def load_checkpoint(uri: StorageURI) -> LoadedCheckpoint:
    import torch

    workdir = Path(tempfile.mkdtemp(prefix="hnav-resume-"))
    storage.download_dir(uri, workdir)
    # weights_only: a checkpoint is data; refusing pickled code keeps a tampered bucket from running code here
    return LoadedCheckpoint(
        state=TrainState.from_json((workdir / STATE).read_text()),
        adapter_dir=workdir / "adapter",
        optimizer=torch.load(workdir / "optimizer.pt", weights_only=True),
        scheduler=torch.load(workdir / "scheduler.pt", weights_only=True),
        rng=torch.load(workdir / "rng.pt", weights_only=True),
        workdir=workdir,
    )


def capture_rng() -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
