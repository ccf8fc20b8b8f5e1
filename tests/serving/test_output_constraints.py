"""Output constraints without a model: the assessment format, sentence checks, OpenAI field honesty.

The served behaviour (the official ``openai`` client getting 400s naming the field, JSON answers
from a constrained model) is in test_serving_app.py; SmolLM2 under the assessment constraint in
test_constrained_smollm2.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from healthnav.contracts.prompts import format_assessment_output
from healthnav.serving.assessment import (
    ASSESSMENT_PATTERN,
    FALLBACK_RECOMMENDATIONS,
    build_assessment,
    is_sentence,
)
from healthnav.serving.config import ServeAppConfig
from healthnav.serving.engine import ANY_JSON_OBJECT, Sampling
from healthnav.serving.engines.constraints import relax_counted_lines
from healthnav.serving.engines.vllm import sampling_kwargs
from healthnav.serving.openai_api import ChatCompletionRequest, CompletionRequest, sampling_for

pytestmark = pytest.mark.unit

APP_EXPORTS = Path(__file__).parents[2] / "examples" / "data"


def test_the_assessment_constraint_is_the_trained_format() -> None:
    """Every training target the app-export reader writes is a full match: trained == constrained."""
    records = [
        json.loads(line)
        for name in ("app_assessments.jsonl", "app_assessments_synthetic.jsonl")
        for line in (APP_EXPORTS / name).read_text().splitlines()
        if line.strip()
    ]
    targets = [
        format_assessment_output(r["risk_level"], r["assessment"], r["recommendations"])
        for r in records
        if r.get("assessment") and r.get("recommendations")
    ]
    assert len(targets) > 100
    misses = [t for t in targets if not re.fullmatch(ASSESSMENT_PATTERN, t)]
    assert not misses, misses[:3]
    assert not re.fullmatch(
        ASSESSMENT_PATTERN, "Risk level: purple\nAssessment: Fine.\nRecommendations:\n- Rest"
    )


@pytest.mark.parametrize(
    "fragment", [").", "Ileum", "When symptoms symptoms symptoms symptoms", "- 1 2 3", ""]
)
def test_fragments_are_not_sentences(fragment: str) -> None:
    assert not is_sentence(fragment)


@pytest.mark.parametrize("sentence", ["Call 911 now", "Drink plenty of fluids.", "See your GP within a week"])
def test_trained_recommendations_are_sentences(sentence: str) -> None:
    assert is_sentence(sentence)


def test_nothing_from_a_failed_generation_leaks_into_recommendations() -> None:
    text = format_assessment_output(
        "urgent",
        "Possible appendicitis.",
        ["See a doctor today", ").", "Ileum", "Fast symptoms symptoms symptoms"],
    )
    out = build_assessment(text, [], model="m", latency_ms=1)
    assert out["model_output_parsed"] and out["recommendations"] == ["See a doctor today"]
    # cut off by the token limit: the last line may be half a sentence, so it is not used
    cut = format_assessment_output("routine", "Likely a cold.", ["Rest at home", "Drink plenty of"])
    assert build_assessment(cut, [], model="m", latency_ms=1, truncated=True)["recommendations"] == [
        "Rest at home"
    ]
    # cut off inside the assessment: nothing of it is trusted
    out = build_assessment(
        "Risk level: routine\nAssessment: Likely a", [], model="m", latency_ms=1, truncated=True
    )
    assert not out["model_output_parsed"] and out["recommendations"] == FALLBACK_RECOMMENDATIONS
    # a looping model repeats itself, or echoes the format: neither is advice
    loop = format_assessment_output(
        "routine", "Likely a cold.", ["Rest at home", "Rest at home.", "Risk level: 1", "Drink water"]
    )
    assert build_assessment(loop, [], model="m", latency_ms=1)["recommendations"] == [
        "Rest at home",
        "Drink water",
    ]
    # only fragments: the safe advice instead
    junk = format_assessment_output("routine", "Likely a cold.", [").", "Ileum"])
    assert build_assessment(junk, [], model="m", latency_ms=1)["recommendations"] == FALLBACK_RECOMMENDATIONS


def test_counted_free_text_is_relaxed_for_the_parser_and_bounded_by_line() -> None:
    relaxed, bound = relax_counted_lines(ASSESSMENT_PATTERN)
    assert bound == 240 and "{4,}" in relaxed and "{3,}" in relaxed and "{1,4}" in relaxed
    assert relax_counted_lines("[a-z]+") == ("[a-z]+", None)
    # the relaxed pattern accepts at least what the exact one does
    text = format_assessment_output("routine", "Likely a cold.", ["Rest at home"])
    assert re.fullmatch(ASSESSMENT_PATTERN, text) and re.fullmatch(relaxed, text)


def _chat(**kw: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "base", "messages": [{"role": "user", "content": "x"}], **kw}
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tools", [{"type": "function", "function": {"name": "f"}}]),
        ("tool_choice", "auto"),
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("top_logprobs", 3),
        ("top_k", 40),
        ("guided_regex", "a+"),
        ("response_format", {"type": "json_schema"}),
        ("response_format", {"type": "grammar"}),
    ],
)
def test_answer_changing_fields_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as err:
        _chat(**{field: value})
    assert err.value.errors()[0]["loc"][0] == field


def test_harmless_values_are_accepted() -> None:
    req = _chat(tool_choice="none", tools=[], parallel_tool_calls=False, top_k=-1, modalities=["text"])
    assert (
        sampling_for(req, ServeAppConfig.model_validate({"baseModel": "file:///m"}).limits).json_schema
        is None
    )


def test_response_format_becomes_the_engines_json_constraint() -> None:
    limits = ServeAppConfig.model_validate({"baseModel": "file:///m"}).limits
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    as_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    assert sampling_for(_chat(response_format={"type": "text"}), limits).json_schema is None
    assert sampling_for(_chat(response_format={"type": "json_object"}), limits).json_schema == ANY_JSON_OBJECT
    assert sampling_for(_chat(response_format=as_schema), limits).json_schema == schema
    completion = CompletionRequest(model="base", prompt="x", response_format=as_schema)
    assert sampling_for(completion, limits).json_schema == schema


def test_vllm_gets_the_same_constraints_as_structured_outputs() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert "structured_outputs" not in sampling_kwargs(Sampling(max_tokens=4))
    assert sampling_kwargs(Sampling(max_tokens=4, json_schema=schema))["structured_outputs"] == {
        "json": schema
    }
    anything = sampling_kwargs(Sampling(max_tokens=4, json_schema=ANY_JSON_OBJECT))
    assert anything["structured_outputs"] == {"json_object": True}
    regex = sampling_kwargs(Sampling(max_tokens=4, regex=ASSESSMENT_PATTERN))
    assert regex["structured_outputs"] == {"regex": ASSESSMENT_PATTERN}
    with pytest.raises(ValueError, match="one output constraint"):
        Sampling(max_tokens=4, json_schema=schema, regex="a")
