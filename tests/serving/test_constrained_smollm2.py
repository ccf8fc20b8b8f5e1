"""Constrained decoding on a real language model: SmolLM2-135M-Instruct (prepared from its package).

A base model was never trained on the assessment format; constrained to it (lm-format-enforcer in
the transformers engine) every answer must still parse, with sentence-shaped recommendations,
and a ``response_format`` JSON schema must come back as JSON valid against it. Skipped where the
model's package is not installed (``hnav models prepare smollm2-135m-instruct`` converts it once).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from healthnav.contracts.prompts import PatientCase, render_assessment_prompt, render_prompt
from healthnav.serving.assessment import ASSESSMENT_PATTERN, build_assessment, is_sentence
from healthnav.serving.config import ServeAppConfig
from healthnav.serving.engine import Sampling

pytestmark = pytest.mark.slow

CASES = [
    PatientCase(symptoms="Runny nose, mild sore throat and sneezing", age=30, duration="2 days"),
    PatientCase(symptoms="Headache for three days, worse in the mornings, with mild nausea", age=66),
    PatientCase(symptoms="Persistent dry cough without fever", age=25, sex="female", duration="2 weeks"),
    PatientCase(symptoms="Itchy red rash on both forearms after gardening", age=41),
    PatientCase(symptoms="Burning when passing urine and needing to go often", age=29, sex="female"),
    PatientCase(symptoms="Twisted my ankle playing football; swollen but I can walk on it", age=19),
]


@pytest.fixture(scope="module")
def engine(smollm2: Path) -> Any:
    from healthnav.serving.engines.transformers import TransformersEngine

    cfg = ServeAppConfig.model_validate(
        {"baseModel": f"file://{smollm2}", "engine": "transformers", "numGpusPerReplica": 0}
    )
    return TransformersEngine(cfg)


def _generate(engine: Any, prompt: str, sampling: Sampling) -> tuple[str, str | None]:
    async def go() -> tuple[str, str | None]:
        text, finish = "", None
        async for chunk in engine.generate(prompt, sampling, adapter=None, request_id="t"):
            text, finish = text + chunk.text, chunk.finish_reason or finish
        return text, finish

    return asyncio.run(go())


def test_every_constrained_assessment_of_the_base_model_parses(engine: Any) -> None:
    import re

    sampling = Sampling(max_tokens=256, temperature=0.0, regex=ASSESSMENT_PATTERN)
    parsed, started = 0, time.perf_counter()
    for case in CASES:
        text, finish = _generate(engine, render_assessment_prompt(case), sampling)
        assert re.fullmatch(ASSESSMENT_PATTERN, text) or finish == "length", text
        out = build_assessment(text, [], model="smollm2", latency_ms=0, truncated=finish == "length")
        parsed += out["model_output_parsed"]
        assert out["risk_level"] in ("self-care", "routine", "urgent", "emergency")
        assert out["assessment"] and out["recommendations"]
        assert all(is_sentence(r) for r in out["recommendations"]), out["recommendations"]
    took = time.perf_counter() - started
    print(f"\nparse rate {parsed}/{len(CASES)} in {took:.1f}s")
    assert parsed == len(CASES)


def test_a_json_schema_response_format_comes_back_valid(engine: Any) -> None:
    schema = {
        "type": "object",
        "properties": {"condition": {"type": "string"}, "see_doctor": {"type": "boolean"}},
        "required": ["condition", "see_doctor"],
    }
    prompt = render_prompt("Name the likely condition and say whether to see a doctor, as JSON.", "Sneezing")
    text, finish = _generate(engine, prompt, Sampling(max_tokens=64, temperature=0.0, json_schema=schema))
    assert finish == "stop", text
    answer = json.loads(text)
    assert isinstance(answer["condition"], str) and isinstance(answer["see_doctor"], bool)
