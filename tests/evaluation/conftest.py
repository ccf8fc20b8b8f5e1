"""Fixtures for evaluation tests (builders in ``eval_helpers``): all tiny, CPU, nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_helpers import make_records, train_lora, write_dataset

from healthnav.contracts.records import TrainingRecord


@pytest.fixture(scope="session")
def eval_records() -> list[TrainingRecord]:
    return make_records()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, eval_records: list[TrainingRecord]) -> Path:
    from healthnav.trainer.tinymodel import create_tiny_model

    corpus = [t for r in eval_records for t in (r.instruction, r.input, r.output)]
    return create_tiny_model(tmp_path_factory.mktemp("tiny") / "model", "llama", corpus, vocab_size=1024)


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory, eval_records: list[TrainingRecord]) -> Path:
    return write_dataset(
        tmp_path_factory.mktemp("ds") / "dataset", {"train": eval_records, "test": eval_records}
    )


@pytest.fixture(scope="session")
def trained_adapter(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, eval_records: list[TrainingRecord]
) -> Path:
    return train_lora(tiny_model, eval_records, tmp_path_factory.mktemp("lora") / "adapter")


@pytest.fixture(scope="session")
def broken_adapter(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, eval_records: list[TrainingRecord]
) -> Path:
    return train_lora(tiny_model, eval_records, tmp_path_factory.mktemp("lora") / "broken", broken=True)
