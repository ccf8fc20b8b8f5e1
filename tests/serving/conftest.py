"""Serving fixtures: a tiny real model and real, non-trivial LoRA adapters built locally with peft."""

from __future__ import annotations

from pathlib import Path

import pytest


def make_adapter(base: Path, out: Path, seed: int) -> Path:
    """A rank-8 LoRA adapter with random (non-zero) A and B, so it visibly changes generations."""
    from healthnav.trainer.tinymodel import create_random_adapter

    return create_random_adapter(base, out, seed=seed, rank=8, scale=0.5)


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
