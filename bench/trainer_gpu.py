"""GPU benchmark: QLoRA on a 7B-shaped model (Mistral-7B geometry, random weights) with healthnav's trainer.

Measures tokens/s per GPU and peak GPU memory for the production path: 4-bit NF4 + double
quantisation, bf16 compute, packed padding-free batches (flash-attn varlen when installed,
otherwise per-example SDPA), gradient checkpointing, loss on response tokens.

Nothing is downloaded: the model is Mistral-7B-shaped (hidden 4096, 32 layers, GQA 32/8,
intermediate 14336, vocab 32000) with random bf16 weights written to a temporary directory
(about 14.5 GB of disk), and a tokenizer trained locally. Throughput does not depend on the
weights' values, so the figures stand for BioMistral-7B.

Without CUDA it prints "skipped", leaves the last GPU result in place and exits 0 (``make bench``
runs it everywhere).

    python -m bench.trainer_gpu [--steps 20] [--records 400] [--layers 32] [--keep DIR]

With ``--keep DIR`` the model is in ``DIR/model`` and the adapter in ``DIR/out/adapter``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "trainer_gpu.json"
sys.path.insert(0, str(HERE))


def write_model(
    path: Path, layers: int, corpus: list[str], *, fit_vocab: bool = False, adapter: Path | None = None
) -> Path:
    """Write a Mistral-7B-shaped model with random bf16 weights (and optionally a random LoRA adapter).

    ``fit_vocab`` sizes the vocabulary to the local tokenizer instead of Mistral's 32000, so every
    token a random model generates decodes to text (a serving benchmark times text, not ids).
    ``adapter`` writes an r=16 q/k/v/o LoRA adapter with non-zero weights next to it.
    """
    import torch
    from transformers import AutoModelForCausalLM, MistralConfig

    from healthnav.trainer.tinymodel import build_tokenizer

    tok = build_tokenizer(corpus, vocab_size=8192)
    cfg = MistralConfig(
        vocab_size=len(tok) if fit_vocab else 32000,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        sliding_window=None,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        rope_theta=1e6,
    )
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    if adapter is not None:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
        lora.init_lora_weights = False  # random A and B: the adapter changes the output
        get_peft_model(model, lora).save_pretrained(adapter, safe_serialization=True)
    del model
    torch.cuda.empty_cache()
    return path


def software_versions() -> dict[str, str]:
    """The versions a GPU figure depends on (the GPU machine's image, not this repo's pins)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "flash-attn"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def write_dataset(path: Path, records: list[Any]) -> str:
    from healthnav.contracts.records import SCHEMA_VERSION

    data = "".join(r.model_dump_json() + "\n" for r in records).encode()
    path.mkdir(parents=True, exist_ok=True)
    (path / "train-00000.jsonl").write_bytes(data)
    shard = {
        "path": "train-00000.jsonl",
        "split": "train",
        "records": len(records),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    (path / "manifest.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "shards": [shard]}))
    return "file://" + str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument(
        "--batch-size", type=int, default=4, help="rows of --max-seq-length tokens per micro-batch"
    )
    parser.add_argument("--max-seq-length", type=int, default=2048)
    parser.add_argument("--keep", type=Path, help="keep the model and the adapter here (for engine_gpu)")
    args = parser.parse_args()

    import torch

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        # keep the figures a GPU machine wrote: a CPU run has nothing to replace them with
        print(json.dumps({"benchmark": "trainer_gpu", "skipped": "no CUDA device on this machine"}))
        return

    from trainer_cpu import make_records

    from healthnav.trainer.config import TrainerConfig
    from healthnav.trainer.train import run

    records = make_records(args.records)
    with tempfile.TemporaryDirectory(prefix="hnav-gpu-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        model = write_model(
            work / "model", args.layers, [f"{r.instruction}\n{r.input}\n{r.output}" for r in records]
        )
        create_s = time.perf_counter() - t0
        dataset = write_dataset(work / "dataset", records)
        cfg = TrainerConfig.model_validate(
            {
                "baseModel": str(model),
                "dataset": dataset,
                "output": "file://" + str(work / "out"),
                "method": "qlora",
                "quantization": {"bits": 4, "type": "nf4", "doubleQuant": True},
                "lora": {
                    "r": 16,
                    "alpha": 32,
                    "dropout": 0.05,
                    "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                },
                "training": {
                    "maxSteps": args.steps,
                    "batchSize": args.batch_size,
                    "gradientAccumulationSteps": 1,
                    "maxSeqLength": args.max_seq_length,
                    "warmupSteps": 2,
                    "learningRate": 2e-4,
                    "checkpointEverySteps": 10_000,
                },
                "device": "cuda",
            }
        )
        torch.cuda.reset_peak_memory_stats()
        out = io.StringIO()
        result = run(cfg, stdout=out)
        if result.exit_code != 0:
            raise SystemExit(f"training failed: {result.message}")
        progress = [json.loads(line) for line in out.getvalue().splitlines()]
    m = result.metrics
    # steady state: drop the first steps (CUDA warm-up, kernel selection)
    steady = progress[len(progress) // 4 :]
    summary = {
        "benchmark": "trainer_gpu",
        "device": torch.cuda.get_device_name(0),
        "software": software_versions(),
        "model": f"Mistral-7B-shaped ({args.layers} layers), random weights, QLoRA nf4 + double quant, bf16",
        "attention": m["attention"],
        "steps": m["steps"],
        "tokensPerStep": args.batch_size * args.max_seq_length,
        "tokensPerSecondPerGpu": m["tokensPerSecond"],
        "steadyTokensPerSecond": steady[-1]["tokensPerSecond"] if steady else None,
        "peakGpuMemoryGiB": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "trainSeconds": m["trainSeconds"],
        "modelCreateSeconds": round(create_s, 1),
        "finalLoss": m["finalLoss"],
    }
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
