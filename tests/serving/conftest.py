"""Serving fixtures: a tiny real model and real, non-trivial LoRA adapters built locally with peft."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthnav.contracts.probes import AdapterProbes


def make_adapter(base: Path, out: Path, seed: int) -> Path:
    """A rank-8 LoRA adapter with random (non-zero) A and B, so it visibly changes generations."""
    from healthnav.trainer.tinymodel import create_random_adapter

    return create_random_adapter(base, out, seed=seed, rank=8, scale=0.5)


def probes_for(base: Path, adapter: Path) -> AdapterProbes:
    """The probes training would have written for ``adapter`` (peft + transformers, float32)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from healthnav.trainer.probes import record_probes

    lm = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    probes = record_probes(
        PeftModel.from_pretrained(lm, adapter), AutoTokenizer.from_pretrained(base), precision="float32"
    )
    assert probes is not None
    return probes


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from healthnav.trainer.tinymodel import create_tiny_model

    return create_tiny_model(tmp_path_factory.mktemp("serving") / "model", family="mistral")


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter(tiny_model, tmp_path_factory.mktemp("serving") / "adapter", seed=1)


@pytest.fixture(scope="session")
def tiny_adapter_probes(tiny_model: Path, tiny_adapter: Path) -> AdapterProbes:
    """What training would have recorded for ``tiny_adapter``."""
    return probes_for(tiny_model, tiny_adapter)


@pytest.fixture(scope="session")
def other_adapter_probes(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> AdapterProbes:
    """Probes of another adapter's weights: what an engine computing the wrong LoRA would match."""
    other = make_adapter(tiny_model, tmp_path_factory.mktemp("serving") / "other", seed=7)
    return probes_for(tiny_model, other)


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


@pytest.fixture(scope="session")
def vllm_adapter_probes(vllm_model: Path, vllm_adapter: Path) -> AdapterProbes:
    return probes_for(vllm_model, vllm_adapter)


@pytest.fixture(scope="session")
def vllm_retrained_probes(vllm_model: Path, vllm_adapter_retrained: Path) -> AdapterProbes:
    return probes_for(vllm_model, vllm_adapter_retrained)
