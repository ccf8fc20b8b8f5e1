"""End-to-end training on the CPU with small real models (QLoRA through bitsandbytes' CPU backend).

Nothing is mocked: a real Mistral/Llama/Gemma architecture with a locally trained tokenizer, a
dataset in the datapipe's format (manifest + sha256-verified shards), real checkpoints, a real
S3-protocol server for the round trip, and the real ``hnav train`` process for preemption.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from healthnav.contracts import storage
from healthnav.contracts.errors import EXIT_CONFIG_ERROR, EXIT_OK, EXIT_PREEMPTED
from healthnav.contracts.prompts import render_prompt
from healthnav.trainer.config import TrainerConfig
from healthnav.trainer.tinymodel import FAMILIES, create_tiny_model
from healthnav.trainer.train import run

from .helpers import corpus, file_uri, make_records, write_dataset

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_config(model: Path | str, dataset: str, output: str, **training: Any) -> TrainerConfig:
    method = training.pop("method", "qlora")
    settings = {
        "maxSteps": 12,
        "learningRate": 5e-3,
        "batchSize": 1,
        "gradientAccumulationSteps": 1,
        "maxSeqLength": 256,
        "warmupSteps": 0,
        **training,
    }
    return TrainerConfig.model_validate(
        {
            "baseModel": str(model),
            "dataset": dataset,
            "output": output,
            "method": method,
            "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targetModules": ALL_LINEAR},
            "training": settings,
        }
    )


@pytest.fixture(scope="module")
def records():
    return make_records(12)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, records) -> str:
    return write_dataset(file_uri(tmp_path_factory.mktemp("ds")), records)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, records) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {f: create_tiny_model(root / f, f, corpus(records)) for f in FAMILIES}


def _run(cfg: TrainerConfig, tmp_path: Path) -> Any:
    out = io.StringIO()
    result = run(cfg, stdout=out, termination_log=str(tmp_path / "termination-log"))
    result.progress = [json.loads(line) for line in out.getvalue().splitlines()]
    return result


@pytest.mark.parametrize("family", FAMILIES)
def test_qlora_trains_each_family_and_writes_artifacts(family, tiny_models, dataset, tmp_path) -> None:
    out = tmp_path / "out"
    (tmp_path / "termination-log").touch()
    cfg = make_config(tiny_models[family], dataset, file_uri(out))
    result = _run(cfg, tmp_path)
    assert result.exit_code == EXIT_OK, result.message
    losses = [p["loss"] for p in result.progress]
    assert len(losses) == 12 and result.progress[-1]["percent"] == 100.0
    assert set(result.progress[0]) >= {
        "step",
        "totalSteps",
        "epoch",
        "loss",
        "lr",
        "tokensPerSecond",
        "etaSeconds",
    }
    assert sum(losses[-3:]) / 3 < losses[0] - 0.1, losses

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 12 and metrics["method"] == "qlora" and metrics["tokensPerSecond"] > 0
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= {
        p.name for p in (out / "adapter").iterdir()
    }
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    card = (out / "model-card.md").read_text()
    assert "Intended use" in card and "trainer-test" in card and "nf4" in card
    assert (tmp_path / "termination-log").read_text().startswith("succeeded: 12 steps")

    # the adapter loads onto the plain (unquantised) base, as the transformers serving engine does
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_models[family]), str(out / "adapter")
    )
    assert any("lora_A" in n for n, _ in model.named_parameters())

    # and answers there as the probes training recorded over the 4-bit base say it does, so a
    # serving replica accepts it (healthnav/contracts/probes.py)
    import torch
    from transformers import AutoTokenizer

    from healthnav.contracts.probes import AdapterProbes, judge
    from healthnav.trainer.probes import token_logprobs

    probes = AdapterProbes.read(out / "adapter")
    assert probes is not None and probes.precision.startswith("qlora")
    tok = AutoTokenizer.from_pretrained(str(out / "adapter"))
    with torch.inference_mode():
        served = [
            [None, *token_logprobs(model.eval(), tok(p.text, return_tensors="pt")["input_ids"])]
            for p in probes.probes
        ]
    verdict = judge(probes, served)
    assert verdict.ok, verdict.message


def test_packed_logits_equal_unpacked(tiny_models, records) -> None:
    """No cross-example attention: an example's logits are the same packed with others or alone."""
    import torch

    from healthnav.trainer.data import tokenize_record
    from healthnav.trainer.model import load_model
    from healthnav.trainer.train import _batch_tensors

    cfg = make_config(tiny_models["llama"], "file:///unused", "file:///unused")
    loaded = load_model(cfg, str(tiny_models["llama"]), "cpu")
    model = loaded.model.eval()
    examples = [tokenize_record(r, loaded.tokenizer, 256) for r in records[:3]]

    def logits(batch: list[Any]) -> Any:
        kwargs, _, _ = _batch_tensors(batch, "cpu")
        kwargs["logits_to_keep"] = 0
        with torch.no_grad():
            return model(**kwargs).logits[0]

    packed = logits(examples)
    start = len(examples[0])
    middle = packed[start : start + len(examples[1])]
    alone = logits([examples[1]])
    assert torch.allclose(middle, alone, atol=1e-5), (middle - alone).abs().max()
    # and the neighbours' content cannot leak in: change example 0 entirely, example 1 is unmoved
    changed = logits([examples[2], examples[1]])[len(examples[2]) :]
    assert torch.allclose(changed, alone, atol=1e-5)


def test_overfit_then_greedy_generation_reproduces_answer(tiny_models, tmp_path) -> None:
    few = make_records(3)
    ds = write_dataset(file_uri(tmp_path / "ds"), few)
    out = tmp_path / "out"
    cfg = make_config(tiny_models["mistral"], ds, file_uri(out), maxSteps=60, learningRate=1e-2)
    result = _run(cfg, tmp_path)
    assert result.exit_code == EXIT_OK, result.message

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out / "adapter"))
    base = AutoModelForCausalLM.from_pretrained(tiny_models["mistral"])
    model = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    record = few[1]
    ids = tok(render_prompt(record.instruction, record.input), return_tensors="pt")
    generated = model.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
    text = tok.decode(generated[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip() == record.output


@pytest.mark.slow  # three runs, one of them a fresh `hnav train` process
def test_sigterm_checkpoints_then_resume_ends_at_same_step_with_same_result(
    tiny_models, dataset, tmp_path
) -> None:
    """A preempted `hnav train` exits 143 after a checkpoint; the next attempt finishes the same run."""
    total = 40
    interrupted = tmp_path / "interrupted"
    cfg = make_config(
        tiny_models["llama"], dataset, file_uri(interrupted), maxSteps=total, checkpointEverySteps=1000
    )
    config_file = tmp_path / "train.json"
    config_file.write_text(json.dumps(cfg.to_dict()))
    env = {**os.environ, "PYTHONPATH": "", "HEALTHNAV_TERMINATION_LOG": str(tmp_path / "term")}
    (tmp_path / "term").touch()
    proc = subprocess.Popen(
        [sys.executable, "-m", "healthnav.cli", "train", "--config", str(config_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["step"] >= 3:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == EXIT_PREEMPTED
    last_step = json.loads(rest.splitlines()[-1])["step"] if rest.strip() else 3
    assert last_step < total
    latest = json.loads((interrupted / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == last_step
    assert "preempted" in (tmp_path / "term").read_text()

    resumed = _run(cfg, tmp_path)
    assert resumed.exit_code == EXIT_OK, resumed.message
    assert resumed.progress[0]["step"] == last_step + 1 and resumed.progress[-1]["step"] == total

    straight = _run(
        make_config(tiny_models["llama"], dataset, file_uri(tmp_path / "straight"), maxSteps=total), tmp_path
    )
    a = json.loads((interrupted / "metrics.json").read_text())
    b = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert a["steps"] == b["steps"] == total
    assert a["resumedFromStep"] == last_step and b["resumedFromStep"] is None
    assert a["finalLoss"] == pytest.approx(b["finalLoss"], rel=1e-4)
    assert straight.exit_code == EXIT_OK


def test_dataset_with_bad_checksum_is_refused(tiny_models, records, tmp_path) -> None:
    ds = write_dataset(file_uri(tmp_path / "ds"), records)
    shard = tmp_path / "ds" / "train-00000.jsonl"
    shard.write_text(shard.read_text().replace("Vitamin C", "Vitamin D"))
    (tmp_path / "termination-log").touch()
    result = _run(make_config(tiny_models["mistral"], ds, file_uri(tmp_path / "out")), tmp_path)
    assert result.exit_code == EXIT_CONFIG_ERROR
    assert "train-00000.jsonl" in result.message and "sha256" in result.message
    assert "sha256 mismatch" in (tmp_path / "termination-log").read_text()
    assert not (tmp_path / "out").exists()


def test_nan_loss_stops_with_clear_error(tiny_models, dataset, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    create_tiny_model(broken, "llama", corpus(make_records(12)))
    weights = load_file(broken / "model.safetensors")
    weights["model.norm.weight"][0] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    result = _run(make_config(broken, dataset, file_uri(tmp_path / "out"), method="lora"), tmp_path)
    assert result.exit_code == EXIT_CONFIG_ERROR
    assert "loss became nan at step 1" in result.message


def test_cli_rejects_invalid_config_with_exit_78(tmp_path) -> None:
    from typer.testing import CliRunner

    from healthnav.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("baseModel: m\ndataset: file:///d\noutput: file:///o\ntraining:\n  learningRat: 0.1\n")
    result = CliRunner().invoke(app, ["train", "--config", str(bad)])
    assert result.exit_code == EXIT_CONFIG_ERROR
    assert "training.learningRat" in result.output


def test_s3_round_trip(s3, s3_bucket, tiny_models, records, tmp_path) -> None:
    """Dataset, base model and output all in S3; a rerun finds the finished checkpoint and skips training."""
    bucket = f"s3://{s3_bucket}"
    ds = write_dataset(f"{bucket}/datasets/test/v1/", records)
    storage.upload_dir(tiny_models["gemma"], f"{bucket}/models/tiny-gemma/")
    output = f"{bucket}/finetunes/default/job-1/"
    os.environ["HEALTHNAV_CACHE"] = str(tmp_path / "cache")
    try:
        cfg = make_config(f"{bucket}/models/tiny-gemma/", ds, output, maxSteps=4, checkpointEverySteps=2)
        first = _run(cfg, tmp_path)
        assert first.exit_code == EXIT_OK, first.message
        keys = {u.key for u, _ in storage.list_objects(output)}
        prefix = "finetunes/default/job-1/"
        assert {
            prefix + "adapter/adapter_model.safetensors",
            prefix + "adapter/adapter_config.json",
            prefix + "metrics.json",
            prefix + "model-card.md",
            prefix + "checkpoints/latest.json",
            prefix + "checkpoints/step-00000002/state.json",
            prefix + "checkpoints/step-00000004/optimizer.pt",
        } <= keys
        metrics = json.loads(storage.read_text(output + "metrics.json"))
        assert metrics["steps"] == 4

        again = _run(cfg, tmp_path)
        assert again.exit_code == EXIT_OK and again.progress == []  # resumed at the end: nothing retrained
        assert json.loads(storage.read_text(output + "metrics.json"))["finalLoss"] == metrics["finalLoss"]
    finally:
        os.environ.pop("HEALTHNAV_CACHE", None)


@pytest.mark.slow
def test_ddp_two_cpu_processes_with_gloo(tiny_models, dataset, tmp_path) -> None:
    """torchrun with 2 processes (gloo): each trains its share of every step, rank 0 writes the outputs."""
    out = tmp_path / "out"
    cfg = make_config(tiny_models["llama"], dataset, file_uri(out), maxSteps=6, maxSeqLength=128)
    config_file = tmp_path / "train.json"
    config_file.write_text(json.dumps(cfg.to_dict()))
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc-per-node",
            "2",
            "-m",
            "healthnav.cli",
            "train",
            "--config",
            str(config_file),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ""},
        timeout=300,
    )
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    progress = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [p["step"] for p in progress] == [1, 2, 3, 4, 5, 6]  # only rank 0 reports
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["worldSize"] == 2 and metrics["steps"] == 6
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_evaluation_gates_run_in_the_training_pod(tiny_models, records, tmp_path) -> None:
    """With gates configured, the trainer evaluates right after training and leaves the verdict
    in <output>/eval/metrics.json, where the operator reads it for GatePassed."""
    test_split = write_dataset(file_uri(tmp_path / "ds"), records)  # a 2-record test split
    out = tmp_path / "out"
    cfg = make_config(tiny_models["mistral"], test_split, file_uri(out), maxSteps=4)
    cfg = cfg.model_copy(update={"evaluation": {"rougeL": 0.99, "minExamples": 1}})
    cfg = TrainerConfig.model_validate(cfg.to_dict())
    result = _run(cfg, tmp_path)
    assert result.exit_code == EXIT_OK, result.message
    assert result.message.endswith("evaluation gates failed")  # a 4-step tiny model cannot reach 0.99
    verdict = json.loads((out / "eval" / "metrics.json").read_text())
    assert verdict["passed"] is False and verdict["gates"]["reason"] == "GatesFailed"
    assert (out / "eval" / "report.html").exists()
