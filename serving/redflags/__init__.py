"""Deterministic red-flag layer: emergencies escalate whatever the model generated.

A fine-tuned model can under-triage; a patient with crushing chest pain spreading to the jaw
must be told to call an ambulance even if the model says "routine". This layer runs on every
assessment, before and independently of generation:

* ``data/``: the reviewable catalogue (cited sources, concepts with lay/clinical/UK/US wordings
  and misspellings in en/es/de/fr, presentations as combinations of concepts, context cues,
  semantic prototypes) — see ``data/README.md``;
* :mod:`.catalogue` loads and validates it, :mod:`.matcher` finds concepts,
  :mod:`.context` decides which are current (negspacy's NegEx), :mod:`.language` refuses
  languages the catalogue cannot read, :mod:`.semantic` is a second net that can only add flags,
  and :mod:`.check` puts them together.

``hnav serve redflags TEXT`` prints :func:`red_flag_report`. Importing this package is cheap:
spaCy, Hyperscan, CLD2 and the embedding table load on the first check.
"""

from __future__ import annotations

from collections.abc import Iterable

from healthnav.serving.redflags.check import EMERGENCY_ADVICE, RedFlag, RedFlagCheck, check_red_flags

__all__ = [
    "EMERGENCY_ADVICE",
    "RedFlag",
    "RedFlagCheck",
    "check_red_flags",
    "detect_red_flags",
    "emergency_advice",
    "red_flag_report",
]


def detect_red_flags(text: str, *, history: str = "", age_years: float | None = None) -> list[RedFlag]:
    """Every emergency presentation in ``text`` (current symptoms); ``history`` adds risk factors only."""
    return check_red_flags(text, history=history, age_years=age_years).flags


def emergency_advice(flags: Iterable[RedFlag]) -> list[str]:
    """Recommendations for an escalated case: the universal advice first, then each flag's."""
    return [EMERGENCY_ADVICE, *dict.fromkeys(f.advice for f in flags)]


def red_flag_report(text: str, *, history: str = "", age_years: float | None = None) -> dict[str, object]:
    """What ``hnav serve redflags`` prints: ``red_flags``, ``escalate``, ``language``, ``semantic``, ..."""
    return check_red_flags(text, history=history, age_years=age_years).to_dict()
