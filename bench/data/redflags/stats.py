"""Validate the red-flag vignettes and print their count tables for README.md.

The vignettes are an evaluation set written independently of the red-flag rules, so this
script deliberately knows nothing about red flags: it checks the file's shape (every line
parses, ids are unique, fields are known and well-typed) and the coverage minimums the set
promises, then prints Markdown tables. Run it after editing the file:

    .venv/bin/python bench/data/redflags/stats.py            # validate, then print tables
    .venv/bin/python bench/data/redflags/stats.py --check    # validate only (exit 1 on a problem)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

HERE = Path(__file__).resolve().parent
DEFAULT_FILE = HERE / "vignettes.jsonl"

Category = Literal[
    "cardiovascular",
    "neurological",
    "respiratory",
    "allergic",
    "psychiatric",
    "toxicological",
    "surgical",
    "obstetric",
    "paediatric",
    "infant",
    "metabolic",
    "eye",
    "trauma",
    "bleeding",
    "infection_sepsis",
    "other",
]
Context = Literal[
    "present", "negated", "historical", "family", "hypothetical", "resolved", "routine", "other"
]

# Coverage the set promises (see README.md); a change that breaks one fails --check.
MIN_EMERGENCY = 250
MIN_NOT_EMERGENCY = 150
MIN_EMERGENCY_PRESENTATIONS = 40
MIN_CASES_PER_PRESENTATION = 4
TOP_PRESENTATIONS = (
    "acute_coronary_syndrome",
    "stroke",
    "severe_breathing_difficulty",
    "anaphylaxis",
    "severe_bleeding",
    "suicidal_intent",
    "prolonged_seizure",
    "unconscious",
)
TRANSLATED_LANGUAGES = ("es", "de", "fr")
MIN_PER_TOP_PRESENTATION_AND_LANGUAGE = 2
MIN_UNCOVERED_LANGUAGE_CASES = 10
COVERED_LANGUAGES = ("en", *TRANSLATED_LANGUAGES)


class Vignette(BaseModel):
    """One patient message and its label; unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^rf-\d{4}$")
    text: str = Field(min_length=3)
    label: Literal["emergency", "not_emergency"]
    presentation: str = Field(pattern=r"^[a-z0-9]+(_[a-z0-9]+)*$")
    category: Category
    context: Context
    language: str = Field(pattern=r"^[a-z]{2,3}$")
    age_years: float | None = Field(default=None, ge=0, le=120)
    source: str = Field(min_length=3)


@dataclass
class Report:
    """What a validation found: the parsed vignettes and one message per problem."""

    vignettes: list[Vignette] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse_lines(lines: Iterable[str]) -> Report:
    """Parse JSONL lines into vignettes, naming the line (and field) of every problem."""
    report = Report()
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            report.problems.append(f"line {number}: empty line")
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as err:
            report.problems.append(f"line {number}: not JSON ({err.msg})")
            continue
        try:
            vignette = Vignette.model_validate(raw)
        except ValidationError as err:
            for e in err.errors():
                where = ".".join(str(p) for p in e["loc"]) or "record"
                report.problems.append(f"line {number}: field {where!r}: {e['msg']}")
            continue
        if vignette.id in seen:
            report.problems.append(
                f"line {number}: id {vignette.id} already used on line {seen[vignette.id]}"
            )
            continue
        seen[vignette.id] = number
        if vignette.label == "emergency" and vignette.context != "present":
            report.problems.append(f"line {number}: field 'context': an emergency must be 'present'")
        report.vignettes.append(vignette)
    return report


def coverage_problems(vignettes: list[Vignette]) -> list[str]:
    """Return one message per coverage minimum the set does not meet."""
    problems = []
    emergencies = [v for v in vignettes if v.label == "emergency"]
    n_not = len(vignettes) - len(emergencies)
    if len(emergencies) < MIN_EMERGENCY:
        problems.append(f"{len(emergencies)} emergency cases, need {MIN_EMERGENCY}")
    if n_not < MIN_NOT_EMERGENCY:
        problems.append(f"{n_not} not_emergency cases, need {MIN_NOT_EMERGENCY}")
    per_presentation = Counter(v.presentation for v in emergencies)
    if len(per_presentation) < MIN_EMERGENCY_PRESENTATIONS:
        problems.append(
            f"{len(per_presentation)} emergency presentations, need {MIN_EMERGENCY_PRESENTATIONS}"
        )
    for name, count in sorted(per_presentation.items()):
        if count < MIN_CASES_PER_PRESENTATION:
            problems.append(
                f"presentation {name}: {count} emergency cases, need {MIN_CASES_PER_PRESENTATION}"
            )
    by_pair = Counter((v.presentation, v.language) for v in emergencies)
    for name in TOP_PRESENTATIONS:
        for lang in TRANSLATED_LANGUAGES:
            if by_pair[(name, lang)] < MIN_PER_TOP_PRESENTATION_AND_LANGUAGE:
                problems.append(
                    f"presentation {name} in {lang}: {by_pair[(name, lang)]} emergency cases, "
                    f"need {MIN_PER_TOP_PRESENTATION_AND_LANGUAGE}"
                )
    for lang in TRANSLATED_LANGUAGES:
        if not any(v.language == lang and v.label == "not_emergency" for v in vignettes):
            problems.append(f"no not_emergency case in {lang}")
    uncovered = sum(v.language not in COVERED_LANGUAGES for v in vignettes)
    if uncovered < MIN_UNCOVERED_LANGUAGE_CASES:
        problems.append(f"{uncovered} cases in uncovered languages, need {MIN_UNCOVERED_LANGUAGE_CASES}")
    return problems


def markdown_table(title: str, counts: Counter[tuple[str, str]], rows: list[str]) -> str:
    """Render counts keyed by (row, label) as a Markdown table with a total column."""
    lines = [f"| {title} | emergency | not_emergency | total |", "|---|---:|---:|---:|"]
    for row in rows:
        e, n = counts[(row, "emergency")], counts[(row, "not_emergency")]
        lines.append(f"| {row} | {e} | {n} | {e + n} |")
    return "\n".join(lines)


def tables(vignettes: list[Vignette]) -> str:
    """All count tables for README.md: label, category, context, language, presentation."""
    out = []
    by_label = Counter(v.label for v in vignettes)
    out.append(
        "| label | cases |\n|---|---:|\n"
        + "\n".join(f"| {k} | {by_label[k]} |" for k in ("emergency", "not_emergency"))
        + f"\n| total | {len(vignettes)} |"
    )
    for title, key in (("category", "category"), ("context", "context"), ("language", "language")):
        counts = Counter((getattr(v, key), v.label) for v in vignettes)
        rows = sorted({r for r, _ in counts}, key=lambda r: (-sum(counts[(r, lab)] for lab in by_label), r))
        out.append(markdown_table(title, counts, rows))
    counts = Counter((v.presentation, v.label) for v in vignettes)
    rows = sorted({r for r, _ in counts}, key=lambda r: (-counts[(r, "emergency")], r))
    out.append(markdown_table("presentation", counts, rows))
    n_pres = len({v.presentation for v in vignettes if v.label == "emergency"})
    out.append(f"{n_pres} distinct emergency presentations.")
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--check", action="store_true", help="validate only; print nothing on success")
    args = parser.parse_args(argv)
    report = parse_lines(args.file.read_text(encoding="utf-8").splitlines())
    problems = report.problems + coverage_problems(report.vignettes)
    for problem in problems:
        print(f"{args.file.name}: {problem}", file=sys.stderr)
    if problems:
        return 1
    if not args.check:
        print(tables(report.vignettes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
