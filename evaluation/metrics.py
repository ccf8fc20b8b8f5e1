"""Metric functions: pure, small, and each computed the way its reference implementation does.

* ROUGE-L: ``rouge-score`` (Google's implementation, the one papers report), F1 with stemming.
* BLEU: ``sacrebleu`` corpus BLEU, reported here as a fraction (score / 100) so every quality
  metric shares the 0..1 scale the gates compare on.
* Multiple choice: lm-evaluation-harness's ``acc`` (argmax of summed log-probabilities of each
  option's continuation) and ``acc_norm`` (the same divided by the option's length in
  characters, which removes the bias towards short options).
* Semantic similarity: mean cosine similarity of sentence embeddings (see ``embeddings.py``).

Latency percentiles use numpy's default (linear) interpolation; cost per query is derived
from the GPU's hourly price for self-hosted models and from per-token prices for an API.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import Field

from healthnav.contracts.prompts import RISK_LEVELS, parse_assessment_output
from healthnav.schema import CamelModel


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float | None:
    """Mean ROUGE-L F1 over pairs; None for no pairs."""
    if not predictions:
        return None
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [
        scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references, strict=True)
    ]
    return sum(scores) / len(scores)


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float | None:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, exp smoothing) as a fraction 0..1."""
    if not predictions:
        return None
    import sacrebleu

    return sacrebleu.corpus_bleu(list(predictions), [list(references)]).score / 100.0


def mcq_prediction(logprobs: Sequence[float], choices: Sequence[str]) -> tuple[int, int]:
    """(acc prediction, acc_norm prediction): argmax of log-likelihood, raw and per character.

    Ties go to the first option, as ``numpy.argmax`` does in lm-evaluation-harness.
    """
    if not logprobs or len(logprobs) != len(choices):
        raise ValueError("need one log-likelihood per choice")
    raw = max(range(len(logprobs)), key=lambda i: (logprobs[i], -i))
    norm = max(range(len(logprobs)), key=lambda i: (logprobs[i] / max(len(choices[i]), 1), -i))
    return raw, norm


_LETTER_RE = re.compile(r"answer\s*(?:is)?\s*[:\-]?\s*\(?([A-Z])\b[\).:]?", re.IGNORECASE)
_LEADING_LETTER_RE = re.compile(r"^\s*\(?([A-Z])[\).:](?:\s|$)")


def choice_from_text(text: str, labels: Sequence[str], choices: Sequence[str] = ()) -> int | None:
    """Which option a free-text answer picked, for models scored without log-probabilities.

    Used for the API reference answers and for endpoints that do not return prompt logprobs.
    Looks for ``Answer: C``, a leading ``C.``, a yes/no/maybe word, or an option's full text.
    """
    upper = [label.upper() for label in labels]
    if all(len(label) == 1 for label in upper):
        for regex in (_LETTER_RE, _LEADING_LETTER_RE):
            if (m := regex.search(text)) and m.group(1).upper() in upper:
                return upper.index(m.group(1).upper())
    else:
        words = re.findall(r"[a-z]+", text.lower())
        for word in words[:8]:
            if word in (label.lower() for label in labels):
                return [label.lower() for label in labels].index(word)
    lowered = text.strip().lower()
    for i, choice in enumerate(choices):
        if choice and lowered.startswith(choice.strip().lower()):
            return i
    return None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


class CostModel(CamelModel):
    """Prices behind "estimated cost per query".

    Self-hosted: a query occupies the GPU for its latency; with ``concurrency`` queries batched
    on one GPU (vLLM continuous batching), each pays 1/concurrency of that time. The API: its
    published per-token prices. Defaults: an on-demand NVIDIA L4 (~$0.80/h) and an API at
    $3 / $15 per million input / output tokens, which puts a ~1,000-token assessment near the
    roadmap's $0.01 per query.
    """

    gpu_hourly_usd: float = Field(default=0.80, ge=0)
    """Price of one GPU-hour of the serving node."""
    concurrency: float = Field(default=1.0, gt=0)
    """Queries served at once on one GPU; 1 gives the single-stream upper bound."""
    api_input_usd_per_million: float = Field(default=3.0, ge=0)
    """Reference API's price per million prompt tokens."""
    api_output_usd_per_million: float = Field(default=15.0, ge=0)
    """Reference API's price per million completion tokens."""

    def self_hosted(self, seconds: float) -> float:
        return self.gpu_hourly_usd * seconds / 3600.0 / self.concurrency

    def api(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.api_input_usd_per_million
            + completion_tokens * self.api_output_usd_per_million
        ) / 1e6


def estimate_tokens(text: str) -> int:
    """Token count when the true tokenizer is unknown (API reference answers): ~4 chars a token."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def assessment_parses(text: str) -> bool:
    """Does a generated assessment carry everything the app shows: a valid risk level, an assessment
    text and at least one recommendation? (What the serving layer's structured output guarantees;
    measured on the model's own unconstrained text, it says how well the model learnt the format.)"""
    parsed = parse_assessment_output(text)
    return parsed.risk_level in RISK_LEVELS and bool(parsed.assessment) and bool(parsed.recommendations)


@dataclass(frozen=True)
class Classification:
    """Risk-level accuracy and red-flag recall of triage predictions."""

    risk_level_accuracy: float | None
    red_flag_recall: float | None
    n: int
    n_red_flags: int


def triage_scores(gold: Sequence[str], predicted: Sequence[str | None]) -> Classification:
    """Exact-match risk level accuracy; recall of ``emergency`` (an unparsable answer is a miss)."""
    pairs = list(zip(gold, predicted, strict=True))
    flags = [p for g, p in pairs if g == "emergency"]
    return Classification(
        risk_level_accuracy=(sum(g == p for g, p in pairs) / len(pairs)) if pairs else None,
        red_flag_recall=(sum(p == "emergency" for p in flags) / len(flags)) if flags else None,
        n=len(pairs),
        n_red_flags=len(flags),
    )
