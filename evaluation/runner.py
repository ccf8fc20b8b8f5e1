"""Run one model over the evaluation items and aggregate its metrics.

Failures are expected in production evaluation (an endpoint times out, a replica restarts):
a failed item is recorded with its error and skipped, the metrics are computed over what
succeeded, and the result is marked ``partial``. After ``max_consecutive_failures`` failures in
a row the model is given up on (an endpoint that is down would otherwise cost one timeout per
record) and the rest are counted as not evaluated. Gates fail partial results by default.

Per-item results never go to logs (they hold test-set text); they are written to the
evaluation's ``predictions.jsonl`` artifact next to the report.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from healthnav.contracts.prompts import parse_assessment_output
from healthnav.evaluation.bertscore import BertScorer
from healthnav.evaluation.embeddings import Embedder
from healthnav.evaluation.metrics import (
    CostModel,
    assessment_parses,
    bleu,
    choice_from_text,
    estimate_tokens,
    mcq_prediction,
    mean,
    percentile,
    rouge_l,
    triage_scores,
)
from healthnav.evaluation.models import (
    BatchGenerating,
    EvaluatedModel,
    Generation,
    LoglikelihoodUnsupported,
    ModelError,
)
from healthnav.evaluation.reference import ReferenceIndex
from healthnav.evaluation.tasks import EvalItem

log = logging.getLogger(__name__)

MCQ_GENERATION_TOKENS = 16
"""Tokens generated to read a letter when log-likelihood scoring is unavailable."""


@dataclass
class ItemResult:
    """What one model did on one item (the ``predictions.jsonl`` row)."""

    id: str
    kind: str
    prediction: str | None = None
    ttft_s: float | None = None
    total_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    choice: int | None = None
    choice_norm: int | None = None
    gold: int | None = None
    option_logprobs: list[float] | None = None
    risk_pred: str | None = None
    parsed: bool | None = None
    """Triage only: the answer has a valid risk level, an assessment and recommendations."""
    risk_gold: str | None = None
    rule_escalated: bool | None = None
    error: str | None = None


@dataclass
class ModelEvaluation:
    """One column of the comparison: a model's metrics, items and what went wrong."""

    label: str
    name: str
    metrics: dict[str, Any]
    results: list[ItemResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return bool(self.metrics.get("partial"))

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "name": self.name, "metrics": self.metrics, "notes": self.notes}


def _rule_escalates(item: EvalItem) -> bool:
    """Would the server's deterministic red-flag layer escalate this patient input on its own?"""
    from healthnav.serving.redflags import detect_red_flags

    history = ""
    current = []
    for line in item.input.splitlines():
        if re.match(r"\s*medical history\s*:", line, re.IGNORECASE):
            history = line.split(":", 1)[1]
        else:
            current.append(line)
    return bool(detect_red_flags("\n".join(current), history=history))


def _score_item(
    engine: EvaluatedModel,
    item: EvalItem,
    max_new_tokens: int,
    cost: CostModel,
    state: dict[str, Any],
    generated: Generation | None = None,
) -> ItemResult:
    result = ItemResult(id=item.id, kind=item.kind, gold=item.gold, risk_gold=item.risk_level)
    if item.kind == "mcq":
        if state["loglikelihood"]:
            try:
                lls = engine.loglikelihood(item.prompt, item.choices)
            except LoglikelihoodUnsupported as exc:
                state["loglikelihood"] = False
                state["notes"].append(
                    f"multiple choice scored by the generated answer, not log-likelihood: {exc}"
                )
            else:
                result.option_logprobs = lls
                result.choice, result.choice_norm = mcq_prediction(lls, item.choices)
                return result
        gen = engine.generate(item.prompt, MCQ_GENERATION_TOKENS)
        result.prediction = gen.text
        result.choice = result.choice_norm = choice_from_text(gen.text, item.labels, item.choices)
        return result

    gen = generated or engine.generate(item.prompt, max_new_tokens)
    result.prediction = gen.text
    # a batched answer's seconds are its share of the batch: a cost, not a latency anyone waited
    result.ttft_s, result.total_s = gen.ttft_s, None if gen.batched else gen.total_s
    result.prompt_tokens, result.completion_tokens = gen.prompt_tokens, gen.completion_tokens
    result.cost_usd = cost.self_hosted(gen.total_s)
    if item.kind == "triage":
        result.risk_pred = parse_assessment_output(gen.text).risk_level
        result.parsed = assessment_parses(gen.text)
        result.rule_escalated = _rule_escalates(item)
    return result


def evaluate_engine(
    label: str,
    engine: EvaluatedModel,
    items: Sequence[EvalItem],
    *,
    embedder: Embedder | None = None,
    bertscorer: BertScorer | None = None,
    cost: CostModel | None = None,
    max_new_tokens: int = 256,
    max_consecutive_failures: int = 3,
    mcq_scoring: str = "loglikelihood",
    batch_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> ModelEvaluation:
    """Score ``engine`` on every item; failures make the result partial instead of raising.

    ``mcq_scoring``: ``loglikelihood`` (lm-evaluation-harness; falls back to ``generated`` when
    the engine cannot return log-probabilities) or ``generated`` (read the letter the model writes).
    ``batch_size`` > 1 answers the free-text items of an in-process model in greedy batches
    (:func:`generate_in_batches`); latency is then not measured (cost per query still is).
    """
    cost = cost or CostModel()
    state: dict[str, Any] = {"loglikelihood": mcq_scoring != "generated", "notes": []}
    pregenerated: dict[str, Generation] = {}
    if batch_size > 1 and isinstance(engine, BatchGenerating):
        pregenerated = generate_in_batches(engine, items, max_new_tokens, batch_size, state["notes"])
    results: list[ItemResult] = []
    consecutive = 0
    aborted: str | None = None
    for index, item in enumerate(items):
        if aborted:
            results.append(
                ItemResult(
                    id=item.id,
                    kind=item.kind,
                    gold=item.gold,
                    risk_gold=item.risk_level,
                    error=f"not evaluated: {aborted}",
                )
            )
            continue
        try:
            results.append(_score_item(engine, item, max_new_tokens, cost, state, pregenerated.get(item.id)))
            consecutive = 0
        except (ModelError, TimeoutError, RuntimeError) as exc:
            consecutive += 1
            message = f"{type(exc).__name__}: {exc}"
            log.warning("%s: item %d of %d failed: %s", label, index + 1, len(items), message)
            results.append(
                ItemResult(
                    id=item.id, kind=item.kind, gold=item.gold, risk_gold=item.risk_level, error=message
                )
            )
            if consecutive >= max_consecutive_failures:
                aborted = f"gave up after {consecutive} consecutive failures (last: {message})"
                state["notes"].append(aborted)
        if progress:
            progress(index + 1, len(items))
    method = "loglikelihood" if state["loglikelihood"] else "generated"
    metrics = aggregate(results, items, embedder=embedder, bertscorer=bertscorer, mcq_method=method)
    return ModelEvaluation(
        label=label, name=engine.name, metrics=metrics, results=results, notes=state["notes"]
    )


def generate_in_batches(
    engine: BatchGenerating,
    items: Sequence[EvalItem],
    max_new_tokens: int,
    batch_size: int,
    notes: list[str],
) -> dict[str, Generation]:
    """Answers to the free-text items, ``batch_size`` prompts of similar length at a time.

    Sorting by prompt length keeps the left padding of each batch small. A batch that fails is
    left out: its items are then asked one at a time, where failures are counted as usual.
    """
    free_text = sorted((i for i in items if i.kind != "mcq"), key=lambda i: len(i.prompt))
    answers: dict[str, Generation] = {}
    for start in range(0, len(free_text), batch_size):
        batch = free_text[start : start + batch_size]
        try:
            done = engine.generate_batch([i.prompt for i in batch], max_new_tokens)
        except (ModelError, RuntimeError) as exc:
            log.warning("a batch of %d failed (%s); asking its items one at a time", len(batch), exc)
            continue
        answers.update((i.id, g) for i, g in zip(batch, done, strict=True))
    if answers:
        notes.append(
            f"free-text answers generated greedily in batches of up to {batch_size}: latency is not "
            "measured (evaluate the served endpoint for it); cost per query is each item's share"
        )
    return answers


def evaluate_reference(
    items: Sequence[EvalItem],
    index: ReferenceIndex,
    *,
    embedder: Embedder | None = None,
    bertscorer: BertScorer | None = None,
    cost: CostModel | None = None,
    name: str = "api-reference",
) -> ModelEvaluation:
    """The API's recorded answers scored like a model (multiple choice by the answer's letter)."""
    cost = cost or CostModel()
    results: list[ItemResult] = []
    covered: list[EvalItem] = []
    for item in items:
        ref = index.lookup(item)
        if ref is None:
            continue
        covered.append(item)
        p_tok = ref.prompt_tokens if ref.prompt_tokens is not None else estimate_tokens(ref.prompt)
        c_tok = ref.completion_tokens if ref.completion_tokens is not None else estimate_tokens(ref.answer)
        r = ItemResult(
            id=item.id,
            kind=item.kind,
            prediction=ref.answer,
            ttft_s=ref.ttft_seconds,
            total_s=ref.latency_seconds,
            prompt_tokens=p_tok,
            completion_tokens=c_tok,
            cost_usd=cost.api(p_tok, c_tok),
            gold=item.gold,
            risk_gold=item.risk_level,
        )
        if item.kind == "mcq":
            r.choice = r.choice_norm = choice_from_text(ref.answer, item.labels, item.choices)
        elif item.kind == "triage":
            r.risk_pred = parse_assessment_output(ref.answer).risk_level
            r.parsed = assessment_parses(ref.answer)
        results.append(r)
    metrics = aggregate(
        results, covered, embedder=embedder, bertscorer=bertscorer, mcq_method="generated", all_queries=True
    )
    notes = [f"reference answers cover {len(covered)} of {len(items)} test records"]
    if len(covered) < len(items):
        metrics["coverage"] = len(covered) / len(items) if items else 0.0
    return ModelEvaluation(label="reference", name=name, metrics=metrics, results=results, notes=notes)


def aggregate(
    results: Sequence[ItemResult],
    items: Sequence[EvalItem],
    *,
    embedder: Embedder | None,
    mcq_method: str,
    all_queries: bool = False,
    bertscorer: BertScorer | None = None,
) -> dict[str, Any]:
    """Flat metrics dict (the keys gates compare on) from per-item results; pure but for the scorers.

    Latency and cost are per generated answer; ``all_queries`` counts every answered item instead
    (the API reference, whose multiple-choice answers were generated too).
    """
    by_id = {i.id: i for i in items}
    ok = [r for r in results if r.error is None]
    gen = [r for r in ok if r.kind in ("generation", "triage") and r.prediction is not None]
    preds = [r.prediction or "" for r in gen]
    refs = [by_id[r.id].reference for r in gen]
    mcq = [r for r in ok if r.kind == "mcq"]
    triage = [r for r in ok if r.kind == "triage"]
    metrics: dict[str, Any] = {
        "rougeL": rouge_l(preds, refs),
        "bleu": bleu(preds, refs),
        "semanticSimilarity": mean(embedder.similarity(preds, refs)) if embedder and gen else None,
        "bertScore": mean(bertscorer.f1(preds, refs)) if bertscorer and gen else None,
        "mcqAccuracy": mean([float(r.choice == r.gold) for r in mcq]),
        "mcqAccuracyNorm": mean([float(r.choice_norm == r.gold) for r in mcq]),
        "mcqMethod": mcq_method if mcq else None,
    }
    scores = triage_scores([r.risk_gold or "" for r in triage], [r.risk_pred for r in triage])
    metrics["riskLevelAccuracy"] = scores.risk_level_accuracy
    metrics["redFlagRecall"] = scores.red_flag_recall
    metrics["assessmentParseRate"] = mean([float(bool(r.parsed)) for r in triage]) if triage else None
    flagged = [r for r in triage if r.risk_gold == "emergency" and r.rule_escalated is not None]
    metrics["redFlagRecallWithRules"] = (
        mean([float(r.risk_pred == "emergency" or bool(r.rule_escalated)) for r in flagged])
        if flagged
        else None
    )
    timed = ok if all_queries else gen
    ttft = [r.ttft_s for r in timed if r.ttft_s is not None]
    total = [r.total_s for r in timed if r.total_s is not None]
    metrics.update(
        ttftP50Seconds=percentile(ttft, 50),
        ttftP95Seconds=percentile(ttft, 95),
        latencyP50Seconds=percentile(total, 50),
        latencyP95Seconds=percentile(total, 95),
        latencyMeanSeconds=mean(total),
        completionTokensMean=mean(
            [float(r.completion_tokens) for r in gen if r.completion_tokens is not None]
        ),
    )
    costed = [r.cost_usd for r in timed if r.cost_usd is not None]
    metrics["costPerQueryUsd"] = mean(costed)
    metrics["counts"] = {
        "rougeL": len(gen),
        "bleu": len(gen),
        "semanticSimilarity": len(gen) if metrics["semanticSimilarity"] is not None else 0,
        "bertScore": len(gen) if metrics["bertScore"] is not None else 0,
        "assessmentParseRate": len(triage),
        "mcqAccuracy": len(mcq),
        "mcqAccuracyNorm": len(mcq),
        "riskLevelAccuracy": scores.n,
        "redFlagRecall": scores.n_red_flags,
        "latency": len(total),
        "items": len(items),
        "evaluated": len(ok),
        "failed": len(results) - len(ok),
    }
    metrics["partial"] = len(ok) < len(items)
    metrics["errors"] = [{"id": r.id, "error": r.error} for r in results if r.error][:50]
    return metrics


def results_jsonl(evaluation: ModelEvaluation) -> str:
    """The model's per-item results as JSON lines (the ``predictions.jsonl`` artifact)."""
    import json

    return "".join(json.dumps({"model": evaluation.label, **asdict(r)}) + "\n" for r in evaluation.results)
