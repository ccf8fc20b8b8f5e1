"""Serving fixtures: a tiny real model and real, non-trivial LoRA adapters built locally with peft."""

from __future__ import annotations

from pathlib import Path

import pytest


def make_adapter(base: Path, out: Path, seed: int) -> Path:
    """A rank-8 LoRA adapter with random (non-zero) A and B, so it visibly changes generations."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn_like(param) * 0.5)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from healthnav.trainer.tinymodel import create_tiny_model

    return create_tiny_model(tmp_path_factory.mktemp("serving") / "model", family="mistral")


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter(tiny_model, tmp_path_factory.mktemp("serving") / "adapter", seed=1)


@pytest.fixture(scope="session")
def vllm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_model`` with 32-wide attention heads: vLLM's CPU attention takes head sizes 32 to 512."""
    from healthnav.trainer.tinymodel import create_tiny_model

    return create_tiny_model(tmp_path_factory.mktemp("vllm") / "model", family="mistral", hidden_size=128)


@pytest.fixture(scope="session")
def vllm_adapter(vllm_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter(vllm_model, tmp_path_factory.mktemp("vllm") / "adapter", seed=1)


@pytest.fixture(scope="session")
def vllm_adapter_retrained(vllm_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another adapter of the same shape: new weights, as a retrained adapter would have."""
    return make_adapter(vllm_model, tmp_path_factory.mktemp("vllm") / "retrained", seed=2)
