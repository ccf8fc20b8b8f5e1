"""Measurement on a labelled set: recall per type, precision, clinical retention.

A labelled example is ``{"id", "text", "phi": [[substring, TYPE], ...], "keep": [clinical spans]}``.
Recall counts an identifier as caught only if no part of it survives ("Sarah [NAME]" still
identifies Sarah); the placeholder's type need not match the label (a city removed as
``[NAME]`` is still gone). Precision is over words: of the words removed, the share inside a
labelled identifier (the rest is over-removal). Retention: clinical spans that survive verbatim.
No identifier text is kept in the report, only its type and line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from healthnav.datapipe.deid.rules import AGE_AGGREGATE
from healthnav.datapipe.deid.scrubber import Deidentifier

_WORD = re.compile(r"\w+")


class LabelledExample(BaseModel):
    """One line of a labelled set."""

    model_config = ConfigDict(extra="ignore")

    id: str = ""
    text: str
    phi: list[tuple[str, str]] = Field(default_factory=list)
    keep: list[str] = Field(default_factory=list)


def load_labelled(path: Path) -> list[LabelledExample]:
    """Parse a JSONL labelled set; a bad line is a ValueError naming it."""
    examples: list[LabelledExample] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            examples.append(LabelledExample.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ValueError(f"{path}:{lineno}: not a labelled example: {exc}") from exc
    return examples


@dataclass
class RecallReport:
    """Recall, precision and retention on a labelled set."""

    identifiers: int = 0
    caught: int = 0
    by_type: dict[str, list[int]] = field(default_factory=dict)  # type -> [caught, total]
    clinical_total: int = 0
    clinical_kept: int = 0
    removed_words: int = 0
    removed_phi_words: int = 0
    missed: list[str] = field(default_factory=list)  # "TYPE: line N" (no identifier text)
    lost_clinical: list[str] = field(default_factory=list)  # "line N" (no text)

    @property
    def recall(self) -> float:
        return self.caught / self.identifiers if self.identifiers else 1.0

    @property
    def precision(self) -> float:
        return self.removed_phi_words / self.removed_words if self.removed_words else 1.0

    @property
    def clinical_retention(self) -> float:
        return self.clinical_kept / self.clinical_total if self.clinical_total else 1.0

    def to_dict(self) -> dict[str, object]:
        return {
            "identifiers": self.identifiers,
            "recall": round(self.recall, 4),
            "by_type": {
                k: {"caught": v[0], "total": v[1], "recall": round(v[0] / v[1], 4)}
                for k, v in sorted(self.by_type.items())
            },
            "precision_words": round(self.precision, 4),
            "removed_words": self.removed_words,
            "clinical_spans": self.clinical_total,
            "clinical_retention": round(self.clinical_retention, 4),
            "missed": self.missed,
            "lost_clinical": self.lost_clinical,
        }


# words of a labelled identifier that identify nobody on their own ("the" of "the 14th", "aged"
# of "aged 94"): their surviving elsewhere in the text does not make the identifier leak
_NOT_IDENTIFYING = frozenset(
    [
        "the",
        "and",
        "of",
        "on",
        "in",
        "at",
        "her",
        "his",
        "their",
        "aged",
        "age",
        "years",
        "year",
        "old",
        "yrs",
        "young",
        "late",
        "early",
        "mid",
    ]
)


def survives(value: str, out: str, kind: str = "") -> bool:
    """Whether any part (word longer than two characters) of ``value`` is still in ``out``.

    For an age, the aggregate "90 or older" that replaces it does not count as the age surviving.
    """
    if kind == "AGE":
        out = out.replace(AGE_AGGREGATE, " ")
    parts = [p for p in re.split(r"[\s,]+", value) if len(p) > 2 and p.lower() not in _NOT_IDENTIFYING]
    parts = parts or [value]
    return value in out or any(re.search(rf"(?<!\w){re.escape(p)}(?!\w)", out) for p in parts)


def _phi_ranges(text: str, phi: Sequence[tuple[str, str]]) -> list[tuple[int, int]]:
    ranges = []
    for value, _ in phi:
        start = text.find(value)
        while start >= 0:
            ranges.append((start, start + len(value)))
            start = text.find(value, start + 1)
    return ranges


def measure_recall(
    deid: Deidentifier, examples: Iterable[LabelledExample | dict[str, object]], *, batch: int = 64
) -> RecallReport:
    """Score ``deid`` on labelled examples (models or plain dicts of the same shape)."""
    items = [e if isinstance(e, LabelledExample) else LabelledExample.model_validate(e) for e in examples]
    report = RecallReport()
    results = []
    for i in range(0, len(items), batch):
        results += deid.scrub_texts([e.text for e in items[i : i + batch]])
    for lineno, (ex, result) in enumerate(zip(items, results, strict=True), start=1):
        out = result.text
        for value, kind in ex.phi:
            ok = not survives(value, out, kind)
            report.identifiers += 1
            report.caught += ok
            counts = report.by_type.setdefault(kind, [0, 0])
            counts[0] += ok
            counts[1] += 1
            if not ok:
                report.missed.append(f"{kind}: line {lineno}")
        for span in ex.keep:
            report.clinical_total += 1
            kept = span in out
            report.clinical_kept += kept
            if not kept:
                report.lost_clinical.append(f"line {lineno}")
        phi = _phi_ranges(ex.text, ex.phi)
        for start, end, _ in result.spans:
            for m in _WORD.finditer(ex.text, start, end):
                report.removed_words += 1
                report.removed_phi_words += any(a <= m.start() and m.end() <= b for a, b in phi)
    return report
