"""GPU benchmark: time to first token and decode speed of the transformers serving engine on CUDA.

The serving layer's own cost is measured by ``serving_latency`` (zero-cost engine, CPU). This
one measures the other half of the issue's "under 1 s to first token" on the model size the
roadmap serves: a Mistral-7B-shaped model (bf16, random weights, same geometry as
BioMistral-7B) in :class:`healthnav.serving.engines.transformers.TransformersEngine`, the engine ``hnav
serve`` and ModelServe run with ``engine: transformers``. Prompts are real assessment prompts
from the shared prompt renderer. With ``--adapter`` (the QLoRA adapter ``trainer_gpu --keep``
trained) it also measures the same requests through the LoRA adapter; without ``--model`` it writes
the model with a random r=16 q/k/v/o adapter and a vocabulary fitted to its tokenizer (a random
model's out-of-vocabulary tokens decode to nothing, which would inflate time to first text).

Random weights rarely emit end-of-sequence, so every request decodes ``--max-tokens`` tokens:
decode speed is measured over a fixed length. vLLM (the production engine) batches and uses
CUDA graphs; expect it to be faster than this single-stream figure, not slower.

Without CUDA it prints "skipped", leaves the last GPU result in place and exits 0.

    python -m bench.engine_gpu [--model DIR] [--adapter DIR] [--requests 5] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "engine_gpu.json"
sys.path.insert(0, str(HERE))

CASES = [
    dict(age=54, sex="male", symptoms="crushing chest pressure spreading to the left arm, sweating",
         duration="40 minutes", history="hypertension, type 2 diabetes", medications="metformin, lisinopril"),
    dict(age=29, sex="female", symptoms="sore throat, mild fever of 38.1 C, no cough", duration="2 days"),
    dict(age=7, sex="male", symptoms="itchy rash on both forearms after playing in the garden",
         duration="1 day", allergies="none known"),
    dict(age=71, sex="female", symptoms="increasing shortness of breath on exertion, swollen ankles",
         duration="2 weeks", history="heart failure, atrial fibrillation", medications="furosemide"),
    dict(age=35, sex="female", symptoms="throbbing one-sided headache with nausea and light sensitivity",
         duration="6 hours", history="similar episodes twice a year"),
]  # fmt: skip


def prompts(n: int) -> list[str]:
    from healthnav.contracts.prompts import PatientCase, render_assessment_prompt

    return [render_assessment_prompt(PatientCase(**CASES[i % len(CASES)])) for i in range(n)]


async def measure(engine: Any, texts: list[str], max_tokens: int, adapter: str | None) -> dict[str, Any]:
    """Sequential greedy requests: TTFT, end-to-end latency and decode tokens/s per request."""
    from healthnav.serving.engine import Sampling

    sampling = Sampling(max_tokens=max_tokens, temperature=0)
    ttft, total, decode_tps, prompt_tokens, completion_tokens = [], [], [], [], []
    for i, prompt in enumerate(texts):
        started = time.perf_counter()
        first = None
        last = None
        async for chunk in engine.generate(prompt, sampling, adapter=adapter, request_id=f"b{i}"):
            if first is None and chunk.text:
                first = time.perf_counter()
            last = chunk
        end = time.perf_counter()
        first = first or end
        ttft.append((first - started) * 1000)
        total.append((end - started) * 1000)
        tokens = last.completion_tokens if last else 0
        decode_tps.append((tokens - 1) / (end - first) if tokens > 1 and end > first else 0.0)
        prompt_tokens.append(last.prompt_tokens if last else 0)
        completion_tokens.append(tokens)
    return {
        "adapter": adapter,
        "requests": len(texts),
        "promptTokensMean": round(statistics.mean(prompt_tokens), 1),
        "completionTokensMean": round(statistics.mean(completion_tokens), 1),
        "ttftMs": {"p50": round(statistics.median(ttft), 1), "max": round(max(ttft), 1)},
        "latencyMs": {"p50": round(statistics.median(total), 1), "max": round(max(total), 1)},
        "decodeTokensPerSecond": round(statistics.median(decode_tps), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, help="model directory (default: write a 7B-shaped one)")
    parser.add_argument("--adapter", type=Path, help="LoRA adapter directory to measure as well")
    parser.add_argument("--layers", type=int, default=32, help="layers of the written model")
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    import torch

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        # keep the figures a GPU machine wrote: a CPU run has nothing to replace them with
        print(json.dumps({"benchmark": "engine_gpu", "skipped": "no CUDA device on this machine"}))
        return

    from trainer_gpu import software_versions, write_model

    from healthnav.serving.config import ServeAppConfig
    from healthnav.serving.engines.transformers import TransformersEngine

    with tempfile.TemporaryDirectory(prefix="hnav-engine-bench-") as tmp:
        model = args.model
        if model is None:
            corpus = prompts(len(CASES))
            if args.adapter is None:
                args.adapter = Path(tmp) / "adapter"
            model = write_model(
                Path(tmp) / "model", args.layers, corpus, fit_vocab=True, adapter=args.adapter
            )
        cfg = ServeAppConfig.model_validate(
            {
                "baseModel": f"file://{model.resolve()}",
                "engine": "transformers",
                "engineArgs": {"dtype": "bfloat16", "maxModelLen": 4096},
                "numGpusPerReplica": 1,
                "adapterCacheDir": str(Path(tmp) / "adapters"),
            }
        )
        t0 = time.perf_counter()
        engine = TransformersEngine(cfg)
        load_s = time.perf_counter() - t0
        texts = prompts(args.requests)

        async def run_all() -> list[dict[str, Any]]:
            await measure(engine, texts[:1], 4, None)  # warm-up: CUDA context, kernel selection
            runs = [await measure(engine, texts, args.max_tokens, None)]
            if args.adapter is not None:
                await engine.add_adapter("bench", args.adapter)
                await measure(engine, texts[:1], 4, "bench")
                runs.append(await measure(engine, texts, args.max_tokens, "bench"))
            return runs

        runs = asyncio.run(run_all())
    summary = {
        "benchmark": "engine_gpu",
        "device": torch.cuda.get_device_name(0),
        "software": software_versions(),
        "engine": "TransformersEngine (healthnav.serving.engines.transformers), bf16, one request at a time",
        "model": "Mistral-7B-shaped, random weights, vocabulary fitted to its tokenizer"
        if args.model is None
        else str(args.model.name),
        "loadSeconds": round(load_s, 1),
        "peakGpuMemoryGiB": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "runs": runs,
        "goal_ttft_ms": 1000,
    }
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
