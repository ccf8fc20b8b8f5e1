"""Turn test records into evaluation items: what to ask the model and how to score the answer.

The record's ``metadata.task`` (written by datapipe's readers) decides the kind of scoring:

* ``mcq`` (MedQA, MedMCQA) and ``yesno`` (PubMedQA): multiple choice, scored by the
  log-likelihood of each option's continuation as lm-evaluation-harness does. Each option is
  rendered exactly as the training output renders the gold answer (``Answer: C. <text>``), so
  the model is asked to score the form it was trained to produce.
* ``triage`` (app assessments): generated, then the risk level is parsed with the same
  :func:`parse_assessment_output` the server uses; emergencies are the red-flag cases.
* anything else: open-ended generation scored with ROUGE-L, BLEU and semantic similarity.

Prompts come only from :func:`healthnav.contracts.prompts.render_prompt`, the function the
trainer and the server use, so evaluation measures the prompt the model actually sees.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from healthnav.contracts.errors import ConfigurationError
from healthnav.contracts.prompts import RISK_LEVELS, format_mcq_output, parse_assessment_output, render_prompt
from healthnav.contracts.records import TrainingRecord

TaskKind = Literal["generation", "triage", "mcq"]
YESNO_OPTIONS: tuple[str, ...] = ("yes", "no", "maybe")


class TaskError(ConfigurationError):
    """A test record cannot be evaluated as its metadata claims; the message names the record."""


@dataclass(frozen=True)
class EvalItem:
    """One scored unit of the test split."""

    id: str
    source: str
    kind: TaskKind
    prompt: str
    reference: str
    choices: tuple[str, ...] = ()
    """Continuations scored by log-likelihood (multiple choice only)."""
    labels: tuple[str, ...] = ()
    """What each choice is called (``A``..``E`` or ``yes``/``no``/``maybe``)."""
    gold: int | None = None
    """Index of the correct choice."""
    risk_level: str | None = None
    """Reference risk level (triage only)."""
    red_flag: bool = False
    """The reference escalates to emergency (triage only): red-flag recall counts these."""
    instruction: str = ""
    input: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _mcq_item(record: TrainingRecord, prompt: str) -> EvalItem:
    meta = record.metadata
    options = meta.get("options")
    if isinstance(options, list):
        options = {chr(ord("A") + i): str(text) for i, text in enumerate(options)}
    if not isinstance(options, Mapping) or len(options) < 2:
        raise TaskError(f"record {record.id}: metadata.options must map at least two letters to option texts")
    labels = tuple(str(k).strip().upper() for k in options)
    answer = str(meta.get("answer", "")).strip().upper()
    if answer not in labels:
        raise TaskError(
            f"record {record.id}: metadata.answer {answer!r} is not one of the options {list(labels)}"
        )
    choices = tuple(
        format_mcq_output(label, str(text)) for label, text in zip(labels, options.values(), strict=True)
    )
    return EvalItem(
        **_common(record, prompt),
        kind="mcq",
        choices=choices,
        labels=labels,
        gold=labels.index(answer),
    )


def _common(record: TrainingRecord, prompt: str) -> dict[str, Any]:
    """The fields every kind of evaluation item takes from its record."""
    return {
        "id": record.id,
        "source": record.source,
        "prompt": prompt,
        "reference": record.output,
        "instruction": record.instruction,
        "input": record.input,
        "metadata": record.metadata,
    }


def _yesno_item(record: TrainingRecord, prompt: str) -> EvalItem:
    answer = str(record.metadata.get("answer", "")).strip().lower()
    if answer not in YESNO_OPTIONS:
        raise TaskError(f"record {record.id}: metadata.answer {answer!r} is not one of {list(YESNO_OPTIONS)}")
    return EvalItem(
        **_common(record, prompt),
        kind="mcq",
        choices=tuple(f"Answer: {o}" for o in YESNO_OPTIONS),
        labels=YESNO_OPTIONS,
        gold=YESNO_OPTIONS.index(answer),
    )


def _triage_item(record: TrainingRecord, prompt: str) -> EvalItem:
    risk = (
        str(record.metadata.get("risk_level") or "").strip().lower()
        or parse_assessment_output(record.output).risk_level
    )
    if risk not in RISK_LEVELS:
        raise TaskError(f"record {record.id}: triage record without a risk level in {list(RISK_LEVELS)}")
    return EvalItem(
        **_common(record, prompt),
        kind="triage",
        risk_level=risk,
        red_flag=risk == "emergency",
    )


def record_to_item(record: TrainingRecord) -> EvalItem:
    """The evaluation item for one record; raises :class:`TaskError` on inconsistent metadata."""
    prompt = render_prompt(record.instruction, record.input)
    task = str(record.metadata.get("task", "")).lower()
    if task == "mcq":
        return _mcq_item(record, prompt)
    if task == "yesno":
        return _yesno_item(record, prompt)
    if task == "triage":
        return _triage_item(record, prompt)
    return EvalItem(
        **_common(record, prompt),
        kind="generation",
    )


def build_items(records: Iterable[TrainingRecord]) -> list[EvalItem]:
    """Items for every record, failing on the first inconsistent one (bad data must not be scored)."""
    items = [record_to_item(r) for r in records]
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise TaskError(f"record id {item.id!r} appears twice in the test split")
        seen.add(item.id)
    return items
