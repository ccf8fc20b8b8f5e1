"""Base-model staging and loading: quantised (QLoRA) or not (LoRA), on CUDA or the CPU.

QLoRA: the frozen base weights are stored by bitsandbytes as 4-bit NF4 with double
quantisation; matmuls run in bf16 on a GPU. bitsandbytes (>= 0.45) also has a CPU backend, so
the very same Linear4bit path trains in the tests; on the CPU the compute dtype is float32
because most CPUs have no fast bf16 matmul.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthnav.datapipe import storage
from healthnav.trainer.attention import choose_attn_implementation
from healthnav.trainer.config import TrainerConfig

log = logging.getLogger(__name__)


class ModelConfigError(ValueError):
    """The base model or LoRA settings cannot work (missing model, unknown target modules)."""


def cache_root() -> Path:
    return Path(os.environ.get("HEALTHNAV_CACHE", Path.home() / ".cache" / "healthnav"))


def resolve_base_model(base_model: str) -> str:
    """A local directory (or hub id) that ``from_pretrained`` can read.

    ``s3://`` prefixes are mirrored into a cache keyed by the URI (download_dir skips files that
    are already identical, so a restarted pod does not fetch 14 GB again).
    """
    if base_model.startswith("s3://"):
        dest = cache_root() / "models" / hashlib.sha256(base_model.encode()).hexdigest()[:16]
        try:
            storage.download_dir(base_model, dest)
        except storage.StorageError as exc:
            raise ModelConfigError(f"baseModel: {exc}") from exc
        return str(dest)
    if base_model.startswith("file://"):
        path = storage.StorageURI.parse(base_model).local_path
    else:
        path = Path(base_model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelConfigError(
                f"baseModel: {path} has no config.json; not a Hugging Face model directory"
            )
        return str(path)
    if storage.is_hub_id(base_model):
        return base_model
    raise ModelConfigError(
        f"baseModel: {base_model!r} is neither an existing directory, an s3:// prefix nor a hub id"
    )


def select_device(config: TrainerConfig) -> str:
    import torch

    if config.device == "cuda" and not torch.cuda.is_available():
        raise ModelConfigError("device: cuda requested but no CUDA device is visible")
    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return config.device


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str
    compute_dtype: Any
    attn_implementation: str
    base_path: str


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, token=os.environ.get("HF_TOKEN"))
    if tokenizer.pad_token_id is None:
        # never used for padding during training; generation with batches needs one
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(config: TrainerConfig, base_path: str, device: str, local_rank: int = 0) -> LoadedModel:
    """Base model (quantised for QLoRA) with LoRA adapters attached and gradient checkpointing on."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

    token = os.environ.get("HF_TOKEN")
    tokenizer = load_tokenizer(base_path)
    hf_config = AutoConfig.from_pretrained(base_path, token=token)
    on_gpu = device == "cuda"
    compute_dtype = torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
    if on_gpu and compute_dtype is torch.float32:
        compute_dtype = torch.float16
    attn = choose_attn_implementation(device, hf_config.model_type)
    kwargs: dict[str, Any] = {
        "dtype": compute_dtype,
        "attn_implementation": attn,
        "token": token,
        "device_map": {"": local_rank} if on_gpu else {"": "cpu"},
    }
    if config.method == "qlora":
        q = config.quantization
        assert q is not None  # the config validator fills it for qlora
        if q.bits == 4:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=q.type,
                bnb_4bit_use_double_quant=q.double_quant,
                bnb_4bit_compute_dtype=compute_dtype,
            )
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    model = AutoModelForCausalLM.from_pretrained(base_path, **kwargs)
    model.config.use_cache = False
    ckpt_kwargs = {"use_reentrant": False}
    if config.method == "qlora":
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=config.training.gradient_checkpointing,
            gradient_checkpointing_kwargs=ckpt_kwargs,
        )
    elif config.training.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=ckpt_kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt_kwargs)
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=list(config.lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(config.training.seed)
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise ModelConfigError(f"lora.targetModules: {exc}") from exc
    return LoadedModel(model, tokenizer, device, compute_dtype, attn, base_path)


def merge_and_save(base_path: str, adapter_dir: Path, out_dir: Path, device: str) -> None:
    """Full-precision base + adapter merged into plain weights (what a server without LoRA loads).

    The base is reloaded unquantised: merging into 4-bit weights would round the update away.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype, token=os.environ.get("HF_TOKEN"))
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)
    load_tokenizer(base_path).save_pretrained(out_dir)
