"""Answers of the API being replaced, read from a JSONL file so the comparison needs no network.

One JSON object per line::

    {"prompt": "...", "answer": "...", "id": "medqa-12", "latencySeconds": 2.1,
     "ttftSeconds": 0.6, "promptTokens": 812, "completionTokens": 240}

Only ``prompt`` and ``answer`` are required. A line is matched to a test record by ``id`` when
given, otherwise by its prompt: either the rendered model prompt or the record's instruction
and input as the app sent them (whitespace-normalised). Records without a reference answer
are left out of the reference column and the report says how many were covered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import Field, ValidationError

from healthnav.contracts import storage
from healthnav.contracts.errors import ConfigurationError
from healthnav.contracts.uris import StorageURI
from healthnav.contracts.validation import describe_validation_error
from healthnav.evaluation.tasks import EvalItem
from healthnav.schema import CamelModel


class ReferenceFileError(ConfigurationError):
    """The reference file is unreadable or a line is invalid; the message names the line."""


class ReferenceAnswer(CamelModel):
    prompt: str = Field(min_length=1)
    answer: str
    id: str | None = None
    latency_seconds: float | None = Field(default=None, ge=0)
    ttft_seconds: float | None = Field(default=None, ge=0)
    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def parse_reference(text: str, *, source: str = "reference") -> list[ReferenceAnswer]:
    answers = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            answers.append(ReferenceAnswer.model_validate_json(line))
        except ValidationError as exc:
            problems = describe_validation_error(exc)
            raise ReferenceFileError(f"{source} line {lineno}: invalid reference answer: {problems}") from exc
    if not answers:
        raise ReferenceFileError(f"{source}: no reference answers")
    return answers


def load_reference(uri: str) -> list[ReferenceAnswer]:
    """Read a reference JSONL from a path, file:// or s3:// URI."""
    try:
        text = storage.read_text(StorageURI.parse_location(uri))
    except (storage.StorageError, ValueError) as exc:
        raise ReferenceFileError(f"reference file {uri}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ReferenceFileError(f"reference file {uri}: not UTF-8 text") from exc
    return parse_reference(text, source=uri)


@dataclass
class ReferenceIndex:
    """Looks up the reference answer for an evaluation item."""

    by_id: dict[str, ReferenceAnswer]
    by_prompt: dict[str, ReferenceAnswer]

    @classmethod
    def build(cls, answers: list[ReferenceAnswer]) -> ReferenceIndex:
        return cls(
            by_id={a.id: a for a in answers if a.id},
            by_prompt={_norm(a.prompt): a for a in answers},
        )

    def lookup(self, item: EvalItem) -> ReferenceAnswer | None:
        if item.id in self.by_id:
            return self.by_id[item.id]
        for key in (item.prompt, f"{item.instruction}\n\n{item.input}", item.instruction):
            if (hit := self.by_prompt.get(_norm(key))) is not None:
                return hit
        return None
