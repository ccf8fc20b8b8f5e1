"""The CUDA path (bf16 compute, 4-bit NF4 weights, flash-attn varlen if installed); skipped without a GPU."""

from __future__ import annotations

import io
import json

import pytest

from healthnav.contracts.errors import EXIT_OK
from healthnav.trainer.config import TrainerConfig
from healthnav.trainer.tinymodel import create_tiny_model

from .helpers import corpus, file_uri, make_records, write_dataset

pytestmark = pytest.mark.gpu


def test_qlora_on_cuda_uses_4bit_bf16_and_learns(tmp_path) -> None:
    import torch
    from bitsandbytes.nn import Linear4bit

    from healthnav.trainer.model import load_model
    from healthnav.trainer.train import run

    records = make_records(12)
    model_dir = create_tiny_model(tmp_path / "m", "mistral", corpus(records), hidden_size=128)
    cfg = TrainerConfig.model_validate(
        {
            "baseModel": str(model_dir),
            "dataset": write_dataset(file_uri(tmp_path / "ds"), records),
            "output": file_uri(tmp_path / "out"),
            "method": "qlora",
            "device": "cuda",
            "training": {
                "maxSteps": 20,
                "learningRate": 5e-3,
                "batchSize": 1,
                "maxSeqLength": 256,
                "gradientAccumulationSteps": 1,
                "warmupSteps": 0,
            },
        }
    )
    loaded = load_model(cfg, str(model_dir), "cuda")
    assert loaded.compute_dtype == torch.bfloat16
    assert any(isinstance(m, Linear4bit) for m in loaded.model.modules())
    del loaded

    out = io.StringIO()
    result = run(cfg, stdout=out)
    assert result.exit_code == EXIT_OK, result.message
    losses = [json.loads(line)["loss"] for line in out.getvalue().splitlines()]
    assert losses[-1] < losses[0]
    assert result.metrics["device"] == "cuda" and result.metrics["peakMemoryBytes"] > 0
