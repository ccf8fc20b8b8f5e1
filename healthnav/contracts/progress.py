"""The training progress payload: what the trainer publishes and the operator shows in status.

The trainer pod may patch exactly one ConfigMap (``<name>-progress``, a Role restricted by
resourceNames); its ``data.progress`` (:data:`PROGRESS_KEY`) holds :class:`TrainingProgress`
as compact JSON. The operator parses it back with the same model
(:meth:`TrainingProgress.from_configmap`) and writes it as ``FineTuneJob.status.progress``,
whose CRD schema is generated from this model too. One model, three uses: the payload cannot
drift between writer, reader and schema.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationError

from healthnav.schema import CamelModel

PROGRESS_KEY = "progress"
"""Key in the progress ConfigMap's ``data`` holding the JSON payload."""


def _finite(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


class TrainingProgress(CamelModel):
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

    @classmethod
    def at(
        cls,
        *,
        step: int,
        total_steps: int,
        epoch: float,
        loss: float | None,
        tokens_per_second: float | None,
        eta_seconds: float | None,
    ) -> TrainingProgress:
        """The progress at a point in training: ``percent`` is a whole-step fraction (one decimal),
        the step is clamped to the plan, and non-finite numbers become null (valid JSON always)."""
        total = max(int(total_steps), 1)
        done = min(max(int(step), 0), total)
        return cls(
            percent=round(100.0 * done / total, 1),
            step=done,
            total_steps=total,
            epoch=round(float(epoch), 3),
            loss=_finite(loss, 4),
            tokens_per_second=_finite(tokens_per_second, 1),
            eta_seconds=None
            if eta_seconds is None or not math.isfinite(eta_seconds)
            else max(0, round(eta_seconds)),
        )

    def payload(self) -> dict[str, Any]:
        """The trainer's payload: every progress key (null when unknown), without ``updatedAt``."""
        return self.to_dict(exclude={"updated_at"})

    def configmap_patch(self) -> dict[str, Any]:
        """Strategic-merge patch that sets only ``data.progress`` (other keys, e.g. the config, stay)."""
        return {"data": {PROGRESS_KEY: json.dumps(self.payload(), separators=(",", ":"))}}

    @classmethod
    def from_configmap(cls, data: Mapping[str, Any] | None) -> TrainingProgress | None:
        """The payload in a progress ConfigMap's ``data``; None when absent or malformed.

        Everything the trainer writes is untrusted input to the operator: unknown keys are
        dropped and values validated, so a buggy trainer cannot write arbitrary content into
        the FineTuneJob status.
        """
        raw = (data or {}).get(PROGRESS_KEY)
        if not raw:
            return None
        try:
            doc = json.loads(raw) if isinstance(raw, str) else raw
            if not isinstance(doc, dict):
                return None
            return cls.model_validate({k: v for k, v in doc.items() if k in _KNOWN_KEYS})
        except (ValueError, ValidationError):
            return None


_KNOWN_KEYS = frozenset(
    {name for name in TrainingProgress.model_fields}
    | {f.alias for f in TrainingProgress.model_fields.values() if f.alias}
)
