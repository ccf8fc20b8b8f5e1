"""The red-flag layer on the independent vignette suite (written without access to the rules).

Goals (issue 16): recall of emergencies >= 99 %, false alarms <= 5 % of routine messages. The
suite also holds emergencies in languages the catalogue does not cover; those cannot be
escalated by rules that cannot read them, so the test asserts what the layer promises for
them instead: every one is refused ("cannot triage this language", never a low risk level).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "bench" / "data" / "redflags" / "vignettes.jsonl"

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(not SUITE.is_file(), reason=f"independent suite not present at {SUITE}"),
]


def test_recall_and_false_alarms_on_the_independent_suite() -> None:
    spec = importlib.util.spec_from_file_location("redflag_recall", REPO / "bench" / "redflag_recall.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses resolve their module by name
    spec.loader.exec_module(bench)  # the benchmark's own scoring: one definition of recall
    result = bench.score(bench.load_suite(SUITE))
    assert result["n_emergency"] >= 250 and result["n_not_emergency"] >= 150
    assert result["recall_in_catalogue_languages"] >= 0.99, result["misses"]
    assert result["false_alarm_rate"] <= 0.05, result["false_alarms"]
    # every emergency is either escalated or answered "cannot triage this language"
    assert result["emergencies_escalated_or_refused_with_safe_advice"] == 1.0, result["misses"]
