"""The training record: the one shape that flows from datapipe to the trainer and the evaluator.

Every reader converts its source into this; the trainer and evaluator read nothing else.
A dataset's ``manifest.json`` carries ``schema_version`` so a reader of an old dataset knows
what it holds.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = "1"


class TrainingRecord(BaseModel):
    """One instruction-tuning example (the roadmap's instruction/input/output, plus provenance)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="Stable id, unique within a dataset (source-prefixed).")
    source: str = Field(
        min_length=1, description="Reader that produced it: medqa, pubmedqa, pubmed, app, ..."
    )
    license: str = Field(min_length=1, description="Licence of the source text (SPDX id or a named licence).")
    instruction: str = Field(min_length=1, description="The task or question put to the model.")
    input: str = Field(default="", description="Optional context: options, abstract, patient details.")
    output: str = Field(min_length=1, description="The answer the model should learn to give.")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Source-specific extras (answer index, ...)."
    )

    @field_validator("instruction", "output")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value
