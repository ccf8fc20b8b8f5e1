"""Base-model loading for training: quantised (QLoRA) or not (LoRA), on CUDA or the CPU.

QLoRA: the frozen base weights are stored by bitsandbytes as 4-bit NF4 with double
quantisation; matmuls run in bf16 on a GPU. bitsandbytes (>= 0.45) also has a CPU backend, so
the very same Linear4bit path trains in the tests; on the CPU the compute dtype is float32
because most CPUs have no fast bf16 matmul. Turning the model URI into a directory, and
loading a base model with an adapter, are the platform's (:mod:`healthnav.contracts.models`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthnav.contracts.errors import ConfigurationError
from healthnav.contracts.models import load_causal_lm, load_tokenizer
from healthnav.trainer.attention import choose_attn_implementation
from healthnav.trainer.config import TrainerConfig

log = logging.getLogger(__name__)


class ModelConfigError(ConfigurationError):
    """The LoRA settings or the device cannot work with this model (unknown target modules, no CUDA)."""


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


def load_model(config: TrainerConfig, base_path: str, device: str, local_rank: int = 0) -> LoadedModel:
    """Base model (quantised for QLoRA) with LoRA adapters attached and gradient checkpointing on."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoConfig, BitsAndBytesConfig

    tokenizer = load_tokenizer(base_path)
    hf_config = AutoConfig.from_pretrained(base_path, token=os.environ.get("HF_TOKEN"))
    on_gpu = device == "cuda"
    compute_dtype = torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
    if on_gpu and compute_dtype is torch.float32:
        compute_dtype = torch.float16
    attn = choose_attn_implementation(device, hf_config.model_type)
    kwargs: dict[str, Any] = {
        "attn_implementation": attn,
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
    model = load_causal_lm(base_path, dtype=compute_dtype, **kwargs)
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

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    merged = load_causal_lm(base_path, adapter=adapter_dir, dtype=dtype).merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)
    load_tokenizer(base_path).save_pretrained(out_dir)
