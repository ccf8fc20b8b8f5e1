"""GGUF to a Hugging Face directory: dequantised safetensors, tokenizer, chat template, generation config.

transformers reads GGUF itself (with the ``gguf`` package): it dequantises every tensor to
float32 and maps the GGUF metadata onto a transformers config and a fast tokenizer that
keeps the chat template. The model it returns still remembers its GGUF origin in
``config.quantization_config``, which would make every later ``from_pretrained`` look for
the GGUF again, so the weights are copied into a model built from the cleaned config and
saved from there: an ordinary directory that transformers, peft and vLLM open like any other.

Weights are stored in bfloat16, the upstream checkpoint's dtype (half the bytes of float32 to
stage, download and cache). The Q4_1 GGUF already carries 4-bit quantisation noise (a step of
1/16 of each block's range); rounding its dequantised values to bfloat16's 8-bit mantissa adds
far less, and every engine that loads the directory upcasts the same bfloat16 values.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthnav.models.catalog import ModelNotAvailable

STORED_DTYPE = "bfloat16"


@dataclass(frozen=True)
class ConvertedModel:
    """What the conversion wrote, for the model card."""

    architecture: str
    parameters: int
    dtype: str
    vocab_size: int
    max_position_embeddings: int
    has_chat_template: bool


def _require_gguf() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ModelNotAvailable(
            "converting a GGUF needs the gguf package, which is not installed: "
            "pip install 'gguf>=0.10' (healthnav's 'models' extra)"
        ) from None


def plain_config(config: Any, upstream: str) -> Any:
    """The model's config without its GGUF origin, named after the upstream model."""
    clean = copy.deepcopy(config)
    if hasattr(clean, "quantization_config"):
        del clean.quantization_config
    clean._name_or_path = upstream
    return clean


def portable_tokenizer_config(path: Path) -> None:
    """Name the tokenizer class every transformers release knows, and drop load-time-only keys.

    transformers 5 records its new ``TokenizersBackend`` class; vLLM's CPU build ships with
    transformers 4, where that name does not exist. ``PreTrainedTokenizerFast`` reads the same
    ``tokenizer.json`` in both, so the directory loads in the trainer, the evaluator and vLLM.
    """
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("is_local", "local_files_only"):
        config.pop(key, None)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def convert_gguf(gguf_path: Path, dest: Path, *, upstream: str) -> ConvertedModel:
    """Write the Hugging Face directory for ``gguf_path`` into ``dest`` (which must be empty or new)."""
    _require_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = plain_config(loaded.config, upstream)
    dtype = getattr(torch, STORED_DTYPE)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict())
    del loaded
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    tokenizer.model_max_length = int(config.max_position_embeddings)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    portable_tokenizer_config(dest / "tokenizer_config.json")
    return ConvertedModel(
        architecture=type(model).__name__,
        parameters=sum(p.numel() for p in model.parameters()),
        dtype=STORED_DTYPE,
        vocab_size=int(config.vocab_size),
        max_position_embeddings=int(config.max_position_embeddings),
        has_chat_template=bool(tokenizer.chat_template),
    )
