"""Prompt rendering: the single function every stage uses to turn a record or a request into text.

The trainer renders training examples with :func:`render_example`, the evaluator scores the
test split with :func:`render_prompt`, and the server renders live chat and assessment
requests through the same :func:`render_prompt`. A prompt format that differs between
training and serving silently degrades a fine-tune; having one function rules that out.

The format is Alpaca-style plain text rather than a tokenizer chat template: the roadmap's
data is instruction/input/output, and it works for every base-model family (Mistral, Llama,
Gemma), including small locally-built tokenizers that carry no chat template.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

SYSTEM_PREAMBLE = (
    "Below is an instruction that describes a medical question or task, paired with an input "
    "that provides further context. Write a response that appropriately completes the request."
)
RESPONSE_MARKER = "### Response:\n"

ASSESSMENT_INSTRUCTION = (
    "Assess the patient's symptoms. Give the risk level (one of: self-care, routine, urgent, "
    "emergency), a short assessment, and recommendations."
)
RISK_LEVELS: tuple[str, ...] = ("self-care", "routine", "urgent", "emergency")
MCQ_INSTRUCTION = (
    "Answer the following multiple-choice medical question. Give the letter and text of the "
    "correct option, then explain."
)


class HasInstruction(Protocol):
    instruction: str
    input: str
    output: str


def render_prompt(instruction: str, input: str = "") -> str:
    """The model's prompt for an instruction (and optional input); the response follows it."""
    parts = [SYSTEM_PREAMBLE, f"### Instruction:\n{instruction.strip()}"]
    if input.strip():
        parts.append(f"### Input:\n{input.strip()}")
    parts.append(RESPONSE_MARKER)
    return "\n\n".join(parts)


def render_example(record: HasInstruction) -> tuple[str, str]:
    """(prompt, completion) for training: loss is taken on the completion only."""
    return render_prompt(record.instruction, record.input), record.output.strip()


def render_chat(messages: Sequence[Mapping[str, str]]) -> str:
    """Render OpenAI-style chat messages with the same template the model was trained on.

    The last user message is the instruction; system text and earlier turns become the input,
    so single-turn chat is byte-identical to a training prompt.
    """
    if not messages:
        raise ValueError("messages must not be empty")
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last_user is None:
        raise ValueError("messages must contain a user message")
    context = [
        f"{m.get('role', 'user').capitalize()}: {m.get('content', '')}"
        for i, m in enumerate(messages)
        if i != last_user and m.get("content")
    ]
    return render_prompt(str(messages[last_user].get("content", "")), "\n".join(context))


@dataclass(frozen=True)
class PatientCase:
    """What an assessment needs; the app's export and the live API both map onto it."""

    symptoms: str
    age: int | None = None
    sex: str | None = None
    duration: str | None = None
    history: str | None = None
    medications: str | None = None
    allergies: str | None = None


def format_assessment_input(case: PatientCase) -> str:
    """The input block of an assessment prompt; datapipe's app reader and the server share it."""
    lines = []
    if case.age is not None:
        # HIPAA Safe Harbor aggregates ages over 89; training data can only carry "90 or older",
        # so live requests are rendered the same way (no train/serve skew).
        lines.append(f"Age: {case.age}" if case.age < 90 else "Age: 90 or older")
    if case.sex:
        lines.append(f"Sex: {case.sex}")
    lines.append(f"Symptoms: {case.symptoms.strip()}")
    for label, value in (
        ("Duration", case.duration),
        ("Medical history", case.history),
        ("Medications", case.medications),
        ("Allergies", case.allergies),
    ):
        if value and value.strip():
            lines.append(f"{label}: {value.strip()}")
    return "\n".join(lines)


def render_assessment_prompt(case: PatientCase) -> str:
    return render_prompt(ASSESSMENT_INSTRUCTION, format_assessment_input(case))


def format_assessment_output(risk_level: str, assessment: str, recommendations: Iterable[str]) -> str:
    """The answer format assessments are trained on, so the server can parse what it generates."""
    if risk_level not in RISK_LEVELS:
        raise ValueError(f"risk_level must be one of {RISK_LEVELS}, got {risk_level!r}")
    recs = "\n".join(f"- {r.strip()}" for r in recommendations if r.strip())
    return f"Risk level: {risk_level}\nAssessment: {assessment.strip()}\nRecommendations:\n{recs}".rstrip()


@dataclass(frozen=True)
class ParsedAssessment:
    risk_level: str | None
    assessment: str
    recommendations: list[str]


_RISK_RE = re.compile(r"risk level:\s*([a-z\- ]+)", re.IGNORECASE)
_ASSESS_RE = re.compile(r"assessment:\s*(.+?)(?:\n\s*recommendations:|\Z)", re.IGNORECASE | re.DOTALL)
_RECS_RE = re.compile(r"recommendations:\s*(.+)\Z", re.IGNORECASE | re.DOTALL)


def parse_assessment_output(text: str) -> ParsedAssessment:
    """Best-effort parse of generated text; fields it cannot find come back empty, never raise."""
    risk = None
    if m := _RISK_RE.search(text):
        candidate = m.group(1).strip().lower().replace(" ", "-")
        risk = next((r for r in RISK_LEVELS if candidate.startswith(r)), None)
    assessment = m.group(1).strip() if (m := _ASSESS_RE.search(text)) else ""
    recs: list[str] = []
    if m := _RECS_RE.search(text):
        recs = [ln.strip().lstrip("-*• ").strip() for ln in m.group(1).splitlines()]
        recs = [r for r in recs if r]
    return ParsedAssessment(risk_level=risk, assessment=assessment, recommendations=recs)


def format_mcq_input(question: str, options: Mapping[str, str]) -> str:
    """A multiple-choice question with its lettered options, the input every MCQ record carries."""
    lines = [question.strip(), ""]
    lines += [f"{letter}. {text.strip()}" for letter, text in options.items()]
    return "\n".join(lines)


def format_mcq_output(letter: str, text: str, explanation: str = "") -> str:
    """The answer MCQ records are trained on, and each option the evaluator scores: ``Answer: C. <text>``."""
    out = f"Answer: {letter}. {text.strip()}"
    if explanation.strip():
        out += f"\nExplanation: {explanation.strip()}"
    return out
