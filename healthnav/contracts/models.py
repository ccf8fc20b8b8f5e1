"""Model URIs made local, and the one way a base model (plus a LoRA adapter) is loaded.

The trainer, the evaluator and the transformers serving engine all start from a model URI
(:data:`~healthnav.contracts.uris.MODEL_URI`) and all need a directory ``from_pretrained``
can open. :func:`materialize` is the only function that makes one, with one cache layout:
``<cache>/models/<sha256(uri)[:16]>/``, where ``<cache>`` is ``$HEALTHNAV_CACHE`` (default
``~/.cache/healthnav``) unless a caller names another. :func:`~healthnav.contracts.storage.download_dir`
skips files that are already identical, so a restarted pod does not fetch 14 GB again, and the
evaluation that runs in a training pod after training reuses the copy the trainer made.

:func:`load_causal_lm` and :func:`load_tokenizer` load what was materialised, with an adapter
attached through peft when one is given. torch, transformers and peft are imported inside.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from healthnav.contracts import storage
from healthnav.contracts.errors import ConfigurationError
from healthnav.contracts.uris import StorageURI, is_hub_id

MODEL_CONFIG = "config.json"
ADAPTER_CONFIG = "adapter_config.json"


class ModelSourceError(ConfigurationError):
    """A model or adapter URI names nothing that can be loaded; the message names the field and URI."""


def cache_root() -> Path:
    """Where healthnav caches what it downloads or builds: ``$HEALTHNAV_CACHE`` or ``~/.cache/healthnav``."""
    return Path(os.environ.get("HEALTHNAV_CACHE", Path.home() / ".cache" / "healthnav"))


def cache_dir(uri: str, cache: str | Path | None = None) -> Path:
    """The local mirror of a remote model URI: ``<cache>/models/<sha256(uri)[:16]>/``."""
    return Path(cache or cache_root()) / "models" / hashlib.sha256(uri.encode()).hexdigest()[:16]


def materialize(
    uri: str,
    *,
    field: str = "baseModel",
    cache: str | Path | None = None,
    required: str | None = MODEL_CONFIG,
) -> str:
    """A local directory (or hub id) that ``from_pretrained`` can read, for a model or adapter URI.

    * a hub id is returned unchanged (transformers and vLLM use their own hub cache);
    * ``file:///path`` or a local path (absolute, relative or ``~``) must be an existing
      directory, holding ``required`` when it is set;
    * ``s3://…`` is mirrored into :func:`cache_dir`.

    ``field`` names the setting in error messages (``baseModel``, ``adapter``).
    """
    if is_hub_id(uri) and not Path(uri).expanduser().exists():
        return uri
    try:
        location = StorageURI.parse_location(uri)
    except ValueError as exc:
        raise ModelSourceError(f"{field}: {exc}") from exc
    if location.scheme == "s3":
        dest = cache_dir(str(location), cache)
        try:
            storage.download_dir(location, dest)
        except storage.StorageError as exc:
            raise ModelSourceError(f"{field}: {exc}") from exc
        path = dest
    else:
        path = location.local_path
        if not path.is_dir():
            raise ModelSourceError(
                f"{field}: {uri!r} is neither an existing directory, an s3:// prefix nor a hub id"
            )
    if required and not (path / required).is_file():
        raise ModelSourceError(f"{field}: {uri} has no {required}; not a Hugging Face model directory")
    return str(path)


def torch_dtype(name: str, device: str) -> Any:
    """The torch dtype for a setting (``auto``, ``bfloat16``, ``float16``, ``float32``) on ``device``.

    ``auto`` keeps the model's own dtype on a GPU and is float32 on the CPU, where most
    processors have no fast bf16 matmul.
    """
    import torch

    if name == "auto":
        return torch.float32 if device == "cpu" else "auto"
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def load_tokenizer(path: str) -> Any:
    """The model's tokenizer, with a pad token (the EOS token when it has none) for batching."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, token=os.environ.get("HF_TOKEN"))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    path: str,
    *,
    adapter: str | Path | None = None,
    adapter_name: str = "default",
    dtype: Any = "auto",
    device: str | None = None,
    **kwargs: Any,
) -> Any:
    """A causal LM from a materialised directory, with a peft adapter attached when given.

    ``device`` None leaves placement to ``kwargs`` (a ``device_map`` or a quantisation config);
    otherwise the model is moved there. The model is not put in eval mode: the trainer trains it.
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, token=os.environ.get("HF_TOKEN"), **kwargs
    )
    if adapter is not None:
        model = attach_adapter(model, adapter, adapter_name)
    return model.to(device) if device is not None else model


def attach_adapter(model: Any, adapter: str | Path, name: str = "default") -> Any:
    """``model`` with the peft adapter at ``adapter`` loaded under ``name``; returns the peft model.

    The first adapter wraps the base model in a ``PeftModel``; later ones are loaded next to it
    (a replica serves several, activating one per request).
    """
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.load_adapter(str(adapter), adapter_name=name)
        return model
    return PeftModel.from_pretrained(model, str(adapter), adapter_name=name)
