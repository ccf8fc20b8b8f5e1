"""Scoring rules checked on hand-computed cases (multiple choice, text metrics, triage, reference)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from healthnav.contracts.prompts import render_prompt
from healthnav.contracts.records import TrainingRecord
from healthnav.evaluation.metrics import (
    CostModel,
    bleu,
    choice_from_text,
    mcq_prediction,
    percentile,
    rouge_l,
    triage_scores,
)
from healthnav.evaluation.models import Generation, LoglikelihoodUnsupported
from healthnav.evaluation.reference import ReferenceFileError, ReferenceIndex, parse_reference
from healthnav.evaluation.runner import evaluate_engine, evaluate_reference
from healthnav.evaluation.tasks import TaskError, build_items, record_to_item


class FakeEngine:
    """Known log-likelihoods per continuation and a fixed generated text: no model needed."""

    kind = "local"
    name = "fake"

    def __init__(self, logprobs: dict[str, float] | None, text: str = "", latency: float = 0.5) -> None:
        self.logprobs = logprobs
        self.text = text
        self.latency = latency

    def generate(self, prompt: str, max_new_tokens: int) -> Generation:
        return Generation(self.text, 0.1, self.latency, 10, 5)

    def loglikelihood(self, context: str, continuations: Sequence[str]) -> list[float]:
        if self.logprobs is None:
            raise LoglikelihoodUnsupported("no logprobs here")
        return [self.logprobs[c] for c in continuations]


def mcq_record(rid: str, answer: str, options: dict[str, str]) -> TrainingRecord:
    return TrainingRecord(
        id=rid,
        source="medqa",
        license="MIT",
        instruction="Pick one.",
        input="Q?",
        output=f"Answer: {answer}. {options[answer]}",
        metadata={"task": "mcq", "options": options, "answer": answer},
    )


@pytest.mark.unit
def test_acc_and_acc_norm_hand_computed() -> None:
    # raw: -2.0 beats -3.0; per character: -2.0/1 = -2.0 loses to -3.0/6 = -0.5
    assert mcq_prediction([-2.0, -3.0], ["A", "Bbbbbb"]) == (0, 1)
    assert mcq_prediction([-1.0, -1.0], ["x", "y"]) == (0, 0)  # ties go to the first option
    with pytest.raises(ValueError):
        mcq_prediction([-1.0], ["a", "b"])


@pytest.mark.unit
def test_mcq_accuracy_from_known_logprobs() -> None:
    opts = {"A": "heart", "B": "a very long option text"}
    items = build_items([mcq_record("q1", "A", opts), mcq_record("q2", "B", opts)])
    choice_a, choice_b = items[0].choices
    assert choice_a == "Answer: A. heart"  # the training output's own form
    # A: -6.0 over 16 chars = -0.375/char; B: -7.0 over 34 chars = -0.206/char
    engine = FakeEngine({choice_a: -6.0, choice_b: -7.0})
    result = evaluate_engine("candidate", engine, items)
    assert result.metrics["mcqAccuracy"] == pytest.approx(0.5)  # raw picks A: right for q1 only
    assert result.metrics["mcqAccuracyNorm"] == pytest.approx(0.5)  # norm picks B: right for q2 only
    assert [r.choice for r in result.results] == [0, 0]
    assert [r.choice_norm for r in result.results] == [1, 1]
    assert result.metrics["mcqMethod"] == "loglikelihood"


@pytest.mark.unit
def test_mcq_falls_back_to_the_generated_letter_and_says_so() -> None:
    items = build_items([mcq_record("q1", "B", {"A": "liver", "B": "heart"})])
    result = evaluate_engine("candidate", FakeEngine(None, text="Answer: B. heart"), items)
    assert result.metrics["mcqAccuracy"] == 1.0
    assert result.metrics["mcqMethod"] == "generated"
    assert any("not log-likelihood" in n for n in result.notes)


@pytest.mark.unit
def _lm_eval_split(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-evaluation-harness's split: trailing context spaces move to the continuation, then the
    continuation's tokens are those of ``encode(context + continuation)`` after ``len(encode(context))``."""
    n_spaces = len(context) - len(context.rstrip(" "))
    if n_spaces:
        continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
    whole = tokenizer(context + continuation).input_ids
    ctx = tokenizer(context).input_ids
    return whole[: len(ctx)], whole[len(ctx) :]


def test_in_process_loglikelihood_equals_lm_eval_computed_token_by_token(tiny_model: Path) -> None:
    """Scores from the serving engine's echo log-probabilities equal lm-evaluation-harness's
    definition, summed from one unpadded forward per continuation token."""
    import torch

    from healthnav.evaluation.models import InProcessModel

    model = InProcessModel.load(tiny_model, device="cpu")
    engine = model.engine
    context = render_prompt("Which organ pumps blood?", "A. liver\nB. heart")
    conts = ["Answer: B. heart", "Answer: A. liver and more words", " yes"]
    got = model.loglikelihood(context, conts)
    for cont, value in zip(conts, got, strict=True):
        ctx_ids, cont_ids = _lm_eval_split(engine.tokenizer, context, cont)
        expected = 0.0
        for k, token in enumerate(cont_ids):
            prefix = torch.tensor([ctx_ids + cont_ids[:k]])
            with torch.no_grad():
                logits = engine.model(input_ids=prefix).logits[0, -1]
            expected += float(torch.log_softmax(logits, -1)[token])
        assert value == pytest.approx(expected, abs=1e-4)
        assert value < 0 and math.isfinite(value)


@pytest.mark.unit
def test_text_metrics() -> None:
    assert rouge_l(["chest pain"], ["chest pain"]) == pytest.approx(1.0)
    assert rouge_l(["fever"], ["chest pain"]) == 0.0
    assert rouge_l([], []) is None
    assert bleu(["the patient has a fever today"], ["the patient has a fever today"]) == pytest.approx(1.0)
    assert 0 < bleu(["the patient has a fever"], ["the patient has a high fever"]) < 1


def test_bertscore_ranks_a_paraphrase_above_an_unrelated_answer() -> None:
    """BERTScore is part of every report (the roadmap's metric list): the library and the bundled
    MiniLM must both load offline, and the score must order answers by meaning."""
    from healthnav.evaluation.bertscore import LAYER, load_bert_scorer

    scorer, note = load_bert_scorer()
    assert scorer is not None, note
    assert f"layer {LAYER} of 6" in note
    reference = "Risk level: emergency. Call an ambulance now; this may be a heart attack."
    paraphrase, unrelated = (
        "Emergency: phone for an ambulance now, it could be a heart attack.",
        ("Drink plenty of fluids and rest; a cold usually clears up within a week."),
    )
    same, close, far, empty = scorer.f1([reference, paraphrase, unrelated, ""], [reference] * 4)
    assert same == pytest.approx(1.0, abs=1e-4)
    assert same > close > far and empty == 0.0


@pytest.mark.unit
def test_triage_scores_and_red_flag_recall() -> None:
    s = triage_scores(
        ["emergency", "emergency", "routine", "self-care"], ["emergency", "urgent", "routine", None]
    )
    assert s.risk_level_accuracy == pytest.approx(0.5)
    assert s.red_flag_recall == pytest.approx(0.5)
    assert (s.n, s.n_red_flags) == (4, 2)
    assert triage_scores(["routine"], ["routine"]).red_flag_recall is None  # no emergencies: not measurable


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("Answer: C. Hypertension", "ABCD", 2),
        ("B) heart", "ABCD", 1),
        ("The answer is d", "ABCD", 3),
        ("Answer: maybe, because", ("yes", "no", "maybe"), 2),
        ("I cannot tell", "ABCD", None),
    ],
)
def test_choice_from_text(text: str, labels: Sequence[str], expected: int | None) -> None:
    assert choice_from_text(text, list(labels)) == expected


@pytest.mark.unit
def test_percentile_and_cost() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([], 95) is None
    cost = CostModel(gpu_hourly_usd=3.6, concurrency=2)
    assert cost.self_hosted(2.0) == pytest.approx(0.001)
    assert CostModel().api(1_000_000, 0) == pytest.approx(3.0)


@pytest.mark.unit
def test_inconsistent_records_name_the_record() -> None:
    bad = TrainingRecord(
        id="medqa-7",
        source="medqa",
        license="MIT",
        instruction="Q",
        output="Answer: E",
        metadata={"task": "mcq", "options": {"A": "x", "B": "y"}, "answer": "E"},
    )
    with pytest.raises(TaskError, match=r"medqa-7.*answer 'E'"):
        record_to_item(bad)
    triage = TrainingRecord(
        id="app-1",
        source="app",
        license="x",
        instruction="Q",
        output="no risk here",
        metadata={"task": "triage"},
    )
    with pytest.raises(TaskError, match="app-1"):
        record_to_item(triage)
    ok = mcq_record("dup", "A", {"A": "x", "B": "y"})
    with pytest.raises(TaskError, match="twice"):
        build_items([ok, ok])


@pytest.mark.unit
def test_reference_file_errors_name_the_line() -> None:
    with pytest.raises(ReferenceFileError, match=r"line 2.*answer"):
        parse_reference('{"prompt": "a", "answer": "b"}\n{"prompt": "c"}\n')
    with pytest.raises(ReferenceFileError, match="line 1"):
        parse_reference("not json\n")


@pytest.mark.unit
def test_reference_answers_matched_by_id_or_prompt_and_priced_per_token() -> None:
    records = [
        TrainingRecord(
            id="qa-1", source="s", license="l", instruction="What is a fever?", output="A high temperature."
        ),
        mcq_record("q1", "B", {"A": "liver", "B": "heart"}),
        TrainingRecord(id="qa-2", source="s", license="l", instruction="Unanswered?", output="x"),
    ]
    items = build_items(records)
    answers = parse_reference(
        '{"prompt": "What is a fever?", "answer": "A high temperature.", "promptTokens": 1000, '
        '"completionTokens": 400}\n'
        '{"id": "q1", "prompt": "whatever", "answer": "Answer: A. liver", "latencySeconds": 2.0}\n'
    )
    ref = evaluate_reference(items, ReferenceIndex.build(answers), cost=CostModel())
    assert ref.metrics["rougeL"] == pytest.approx(1.0)
    assert ref.metrics["mcqAccuracy"] == 0.0
    assert ref.metrics["coverage"] == pytest.approx(2 / 3)
    # (1000 * $3 + 400 * $15) / 1M = $0.009 for the first; the second is estimated from its text
    assert ref.results[0].cost_usd == pytest.approx(0.009)
    assert ref.metrics["latencyP50Seconds"] == pytest.approx(2.0)  # the API generated its MCQ answers too


@pytest.mark.unit
def test_example_reference_file_is_valid() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "data" / "api_reference_answers.jsonl"
    answers = parse_reference(path.read_text(), source=str(path))
    assert len(answers) >= 5
    assert all(
        a.id and a.prompt.endswith("### Response:\n") and a.answer.startswith("Answer:") for a in answers
    )


@pytest.mark.gpu
def test_loglikelihood_on_gpu_matches_cpu(tiny_model: Path) -> None:
    """bf16 on CUDA ranks the options as float32 on the CPU does (the GPU path of in-process eval)."""
    from healthnav.evaluation.models import InProcessModel

    context = render_prompt("Which organ pumps blood?", "A. liver\nB. heart")
    conts = ["Answer: A. liver", "Answer: B. heart", "Answer: C. kidney"]
    cpu = InProcessModel.load(tiny_model, device="cpu").loglikelihood(context, conts)
    gpu = InProcessModel.load(tiny_model, device="cuda").loglikelihood(context, conts)
    assert gpu == pytest.approx(cpu, rel=0.05, abs=0.1)
