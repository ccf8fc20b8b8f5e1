"""Batched greedy answers on a real language model score the same as one-at-a-time answers.

``hnav eval --batch-size`` (and the demo) answer eight prompts at once to use a CPU's throughput;
that is only acceptable if the answers, and so every metric, are those a one-at-a-time run gives.
SmolLM2-135M-Instruct (prepared from its package) on prompts of different lengths, so the batch
is left-padded. Skipped where the model's package is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_helpers import write_dataset

from healthnav.contracts.prompts import render_prompt
from healthnav.contracts.records import TrainingRecord
from healthnav.evaluation.models import InProcessModel
from healthnav.evaluation.pipeline import EvalConfig, EvaluationInputError, run_evaluation

pytestmark = pytest.mark.slow

QUESTIONS = [
    "I have had a fever and a sore throat for two days. What should I do?",
    "What is a normal resting heart rate?",
    "My ankle is swollen after I twisted it playing football yesterday, but I can walk on it. "
    "Should I see a doctor, and what can I do at home in the meantime?",
    "Is it safe to take ibuprofen with paracetamol?",
    "Why do I get headaches in the afternoon?",
]


def test_batched_greedy_answers_equal_one_at_a_time(smollm2: Path) -> None:
    model = InProcessModel.load(smollm2, device="cpu")
    prompts = [render_prompt(q, "") for q in QUESTIONS]
    alone = [model.generate(p, 32) for p in prompts]
    batched = model.generate_batch(prompts, 32)
    assert [g.text for g in batched] == [g.text for g in alone]
    assert [g.completion_tokens for g in batched] == [g.completion_tokens for g in alone]
    assert [g.prompt_tokens for g in batched] == [g.prompt_tokens for g in alone]
    assert all(g.batched and g.ttft_s is None and g.total_s > 0 for g in batched)


def _records() -> list[TrainingRecord]:
    return [
        TrainingRecord(
            id=f"q{i}", source="instructions", license="CC0-1.0", instruction=q, output="See a doctor."
        )
        for i, q in enumerate(QUESTIONS)
    ]


def test_batch_size_changes_no_quality_metric_and_reports_no_latency(smollm2: Path, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "ds", {"train": _records(), "test": _records()})
    docs = {}
    for size in (1, 4):
        run_evaluation(
            EvalConfig(
                dataset=str(dataset),
                base_model=str(smollm2),
                output=f"file://{tmp_path}/b{size}",
                max_new_tokens=24,
                batch_size=size,
            )
        )
        docs[size] = json.loads((tmp_path / f"b{size}" / "eval" / "metrics.json").read_text())
    one, four = docs[1]["candidate"], docs[4]["candidate"]
    for key in ("rougeL", "bleu", "semanticSimilarity", "bertScore", "completionTokensMean"):
        assert four[key] == pytest.approx(one[key]), key
    assert one["latencyP95Seconds"] > 0 and four["latencyP95Seconds"] is None
    assert four["costPerQueryUsd"] > 0
    assert any("batches of up to 4" in n for n in docs[4]["notes"])


def test_a_base_column_is_reused_only_from_the_same_dataset_and_settings(
    tiny_model: Path, trained_adapter: Path, broken_adapter: Path, dataset_dir: Path, tmp_path: Path
) -> None:
    other = write_dataset(tmp_path / "other", {"train": _records(), "test": _records()})

    def config(out: str, adapter: Path, **extra: object) -> EvalConfig:
        fields: dict[str, object] = {
            "dataset": str(dataset_dir),
            "base_model": str(tiny_model),
            "adapter": str(adapter),
            "output": f"file://{tmp_path}/{out}",
            "max_new_tokens": 24,
            "gates": {"maxRegressionVsBase": 0.0, "regressionMetrics": ["rougeL"]},
        }
        return EvalConfig(**{**fields, **extra})

    run_evaluation(config("first", trained_adapter))
    first = tmp_path / "first" / "eval" / "metrics.json"
    base = json.loads(first.read_text())["base"]

    # a second candidate against the first run's base: no base run, the regression gate still applies
    broken = run_evaluation(config("second", broken_adapter, base_from=str(first)))
    second = json.loads((tmp_path / "second" / "eval" / "metrics.json").read_text())
    assert second["base"] == base
    assert any("reused from" in n for n in second["notes"])
    (check,) = [c for c in broken.gate.checks if c.kind == "regression"]
    assert check.baseline == pytest.approx(base["rougeL"]) and check.value == second["candidate"]["rougeL"]

    with pytest.raises(EvaluationInputError, match="different dataset"):
        run_evaluation(config("third", broken_adapter, base_from=str(first), dataset=str(other)))
    with pytest.raises(EvaluationInputError, match="different maxNewTokens"):
        run_evaluation(config("fourth", broken_adapter, base_from=str(first), max_new_tokens=9))
    with pytest.raises(EvaluationInputError, match=r"not a readable metrics\.json"):
        run_evaluation(config("fifth", broken_adapter, base_from=str(tmp_path / "missing.json")))
    with pytest.raises(ValueError, match="baseFrom"):
        config("sixth", broken_adapter, base_from=str(first), skip_base=True)
