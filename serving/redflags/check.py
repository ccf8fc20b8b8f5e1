"""The whole red-flag check of one message: rules with context, age, language, semantic net.

Order and cost (per message, one CPU core): normalise, one Hyperscan prefilter pass and the
few concept expressions it lets through, one spaCy tokenisation with a NegEx pass per context
category, CLD2 language identification; the semantic net only when the rules did not already
escalate. Everything heavy is loaded once per process on first use.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from healthnav.serving.redflags.catalogue import Catalogue, Presentation, catalogue
from healthnav.serving.redflags.context import Assertion, shared_context
from healthnav.serving.redflags.language import LanguageVerdict, identify_language
from healthnav.serving.redflags.matcher import (
    ConceptMatch,
    find_concepts,
    normalise,
    sentence_spans,
    shared_prefilter,
)
from healthnav.serving.redflags.semantic import SemanticHit, shared_semantic_net

EMERGENCY_ADVICE = (
    "Call your local emergency number (911 in the US, 112 in the EU, 999 in the UK) now or go to "
    "the nearest emergency department. Do not drive yourself and do not wait to see if it gets better."
)

_AGE = re.compile(
    r"\b(\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten|eleven)\s*"
    r"(day|days|week|weeks|wk|wks|month|months|mth|mths|mo|year|years|yr|yrs)\s*olds?\b"
    r"|\b(\d{1,2})\s*(yo|y/o)\b"
)
_NUMBERS = {
    w: i
    for i, w in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"]
    )
}
_UNIT_YEARS = {"d": 1 / 365, "w": 1 / 52, "m": 1 / 12, "y": 1.0}
_NEWBORN = re.compile(r"\b(newborn|new born|neonate|recien nacido|neugeboren\w*|nouveau ne)\b")


@dataclass(frozen=True)
class RedFlag:
    """One emergency presentation found: what, why (the matched words), and what to do."""

    id: str
    label: str
    advice: str
    evidence: list[str] = field(default_factory=list)
    source: str = "rules"  # "rules" or "semantic"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Finding:
    concept: str
    text: str
    assertion: Assertion


@dataclass(frozen=True)
class RedFlagCheck:
    """Everything the layer concluded about one message."""

    flags: list[RedFlag]
    language: LanguageVerdict
    findings: list[Finding]
    semantic: list[SemanticHit]
    age_years: float | None
    semantic_available: bool = True

    @property
    def escalate(self) -> bool:
        return bool(self.flags)

    def to_dict(self) -> dict[str, object]:
        return {
            "red_flags": [f.to_dict() for f in self.flags],
            "escalate": self.escalate,
            "language": self.language.to_dict(),
            "findings": [asdict(f) for f in self.findings],
            "semantic": [h.to_dict() for h in self.semantic],
            "semantic_available": self.semantic_available,
            "age_years": self.age_years,
        }


def age_from_text(text: str) -> float | None:
    """The youngest age stated as "<n> <unit> old" (or "newborn") in normalised text, in years."""
    ages = []
    for m in _AGE.finditer(text):
        if m.group(3):
            ages.append(float(m.group(3)))
            continue
        n = int(m.group(1)) if m.group(1).isdigit() else _NUMBERS[m.group(1)]
        ages.append(n * _UNIT_YEARS[m.group(2)[0]])
    if _NEWBORN.search(text):
        ages.append(0.02)
    return min(ages) if ages else None


def _present_concepts(
    matches: list[ConceptMatch], assertions: list[Assertion], cat: Catalogue, history_concepts: set[str]
) -> dict[str, list[str]]:
    """Concept id -> the words that made it current (persisting or risk-factor rules applied)."""
    out: dict[str, list[str]] = {}
    for m, a in zip(matches, assertions, strict=True):
        concept = cat.concepts[m.concept].concept
        current = a == "present" or (a == "resolved" and concept.persists)
        if a == "historical" and concept.counts_when_historical:
            current = True
        if current:
            out.setdefault(m.concept, []).append(m.text)
    for c in history_concepts:
        if cat.concepts[c].concept.counts_when_historical:
            out.setdefault(c, []).append(f"history: {c.replace('_', ' ')}")
    return out


def _fires(p: Presentation, present: dict[str, list[str]], age_years: float | None) -> list[str] | None:
    """The evidence when ``p`` fires, else None."""
    if p.max_age_years is not None and (age_years is None or age_years >= p.max_age_years):
        return None
    for group in p.when:
        if all(c in present for c in group):
            return list(dict.fromkeys(w for c in group for w in present[c]))
    return None


def _history_concepts(history: str, cat: Catalogue) -> set[str]:
    """Risk-factor concepts named in the medical-history field (family history excluded)."""
    if not history.strip():
        return set()
    text = normalise(history)
    matches = [
        m
        for m in find_concepts(text, cat, shared_prefilter())
        if cat.concepts[m.concept].concept.counts_when_historical
    ]
    if not matches:
        return set()
    assertions = shared_context().assertions(text, [(m.start, m.end) for m in matches])
    kept = ("present", "historical", "resolved")
    return {m.concept for m, a in zip(matches, assertions, strict=True) if a in kept}


def check_red_flags(
    text: str,
    *,
    history: str = "",
    age_years: float | None = None,
    semantic: bool = True,
    wait_for_models: bool = False,
) -> RedFlagCheck:
    """The red-flag layer on one message. ``history``: the medical-history field (risk factors
    only, never an emergency by itself); ``age_years``: the patient's age if known;
    ``wait_for_models``: block until the prefilter and semantic net are built (tests, benchmarks)
    instead of running without them while they build in the background."""
    cat = catalogue()
    norm = normalise(text)
    matches = find_concepts(norm, cat, shared_prefilter(block=wait_for_models))
    inside = [cat.concepts[m.concept].concept.negatable_inside for m in matches]
    assertions = shared_context().assertions(norm, [(m.start, m.end) for m in matches], inside)
    stated_age = age_from_text(norm)
    known = [a for a in (age_years, stated_age) if a is not None]
    age = min(known) if known else None
    present = _present_concepts(matches, assertions, cat, _history_concepts(history, cat))
    flags: list[RedFlag] = []
    for p in cat.presentations:
        evidence = _fires(p, present, age)
        if evidence is not None:
            flags.append(RedFlag(p.id, p.label, p.advice, evidence))
    hits: list[SemanticHit] = []
    available = True
    if semantic and not flags:
        net = shared_semantic_net(block=wait_for_models)
        available = net is not None
        if net is not None:
            hits = net.hits(_clean_sentences(norm, matches, assertions))
            for h in hits:
                if all(f.id != h.presentation for f in flags):
                    p = cat.presentation(h.presentation)
                    flags.append(RedFlag(p.id, p.label, p.advice, [f"similar to: {h.prototype}"], "semantic"))
    findings = [Finding(m.concept, m.text, a) for m, a in zip(matches, assertions, strict=True)]
    return RedFlagCheck(flags, identify_language(text), findings, hits, age, available)


def _clean_sentences(text: str, matches: list[ConceptMatch], assertions: list[Assertion]) -> list[str]:
    """Sentences with no negated, historical, hypothetical or family finding: the semantic net
    cannot read context, so it only looks where the context layer saw nothing to discount."""
    out = []
    for s, e in sentence_spans(text):
        if any(s <= m.start < e and a != "present" for m, a in zip(matches, assertions, strict=True)):
            continue
        out.append(text[s:e].strip())
    return [s for s in out if s]
