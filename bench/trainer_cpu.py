"""CPU benchmark: healthnav's trainer vs the roadmap's script vs TRL SFTTrainer with packing.

Same records (200-400 tokens each, medical-QA shaped), same small Llama-architecture model,
same LoRA settings, one epoch each, one process per variant (so peak RSS is per variant):

* ``roadmap`` - the roadmap's Phase-4 script: HF Trainer, ``padding="max_length"``,
  ``max_length=2048``, loss on all tokens (DataCollatorForLanguageModeling), batch 4.
* ``trl``     - TRL SFTTrainer, ``packing=True`` (best-fit-decreasing, padding-free), rows of 2048,
  completion-only loss, batch 1 x grad-accum 4.
* ``ours``    - ``healthnav.trainer.train.run``: packed, padding-free, per-example attention,
  LM head only on response tokens, batch 1 x 2048 x grad-accum 4.

Reports training time (the headline: the optimisation loop alone) and wall time of the whole
train call (model load, tokenisation, training, saving), their ratios, tokens computed per real
token, and peak RSS. Each variant runs ``--repeats`` times interleaved and the fastest run counts,
because a shared CPU makes single runs noisy. Writes ``bench/results/trainer_cpu.json``.

    .venv/bin/python bench/trainer_cpu.py [--records 32] [--hidden 128] [--layers 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "trainer_cpu.json"
MAX_LEN = 2048
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj"]}

_SYMPTOMS = [
    "fever",
    "cough",
    "headache",
    "chest tightness",
    "nausea",
    "fatigue",
    "dizziness",
    "rash",
    "sore throat",
]
_ANSWERS = [
    "Risk level: routine\nAssessment: likely a viral upper respiratory infection.\n"
    "Recommendations:\n- rest\n- fluids",
    "Risk level: urgent\nAssessment: symptoms could indicate pneumonia.\n"
    "Recommendations:\n- see a doctor today",
    "Risk level: self-care\nAssessment: consistent with a tension headache.\nRecommendations:\n- paracetamol",
    "Risk level: emergency\nAssessment: possible cardiac cause.\nRecommendations:\n- call 911 now",
]


def make_records(n: int) -> list[Any]:
    """Records whose rendered prompt + answer is 200-400 tokens with the benchmark tokenizer."""
    from healthnav.contracts.records import TrainingRecord

    out = []
    for i in range(n):
        visits = 5 + (i * 7) % 8
        history = " ".join(
            f"Day {d}: {_SYMPTOMS[(i + d) % len(_SYMPTOMS)]} with temperature "
            f"{37 + (d % 3)}.{(i + d) % 10} C "
            f"and {_SYMPTOMS[(i * 3 + d) % len(_SYMPTOMS)]}; took paracetamol 500 mg."
            for d in range(visits)
        )
        out.append(
            TrainingRecord(
                id=f"bench-{i}",
                source="bench",
                license="CC0-1.0",
                instruction="Assess the patient's symptoms and give a risk level with recommendations.",
                input=f"Age: {20 + i % 60}\nSymptoms: {history}",
                output=_ANSWERS[i % len(_ANSWERS)] + f"\n- follow up in {1 + i % 7} days",
            )
        )
    return out


def setup(workdir: Path, n: int, hidden: int, layers: int) -> dict[str, Any]:
    import hashlib

    from healthnav.contracts import storage
    from healthnav.contracts.prompts import render_example
    from healthnav.contracts.records import SCHEMA_VERSION
    from healthnav.trainer.tinymodel import create_tiny_model

    records = make_records(n)
    corpus = [f"{r.instruction}\n{r.input}\n{r.output}" for r in records]
    model = create_tiny_model(
        workdir / "model", "llama", corpus, hidden_size=hidden, layers=layers, vocab_size=4096
    )
    data = "".join(r.model_dump_json() + "\n" for r in records).encode()
    ds = workdir / "dataset"
    storage.write_bytes("file://" + str(ds / "train-00000.jsonl"), data)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": "bench",
        "version": "1",
        "shards": [
            {
                "path": "train-00000.jsonl",
                "split": "train",
                "records": n,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        ],
    }
    (ds / "manifest.json").write_text(json.dumps(manifest))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    lengths = []
    for r in records:
        p, c = render_example(r)
        lengths.append(len(tok(p)["input_ids"]) + len(tok(c, add_special_tokens=False)["input_ids"]) + 1)
    return {"model": str(model), "dataset": str(ds), "records": n, "lengths": lengths}


# ---------------------------------------------------------------------------------------- variants


def run_ours(info: dict[str, Any], out: Path) -> dict[str, Any]:
    import io

    import peft  # noqa: F401  (imported before the clock starts, as the other variants do)
    import transformers  # noqa: F401

    from healthnav.trainer.config import TrainerConfig
    from healthnav.trainer.train import run

    cfg = TrainerConfig.model_validate(
        {
            "baseModel": info["model"],
            "dataset": "file://" + info["dataset"],
            "output": "file://" + str(out),
            "method": "lora",
            "lora": LORA,
            "training": {
                "epochs": 1,
                "learningRate": 2e-4,
                "batchSize": 1,
                "gradientAccumulationSteps": 4,
                "maxSeqLength": MAX_LEN,
                "warmupSteps": 0,
                "packing": True,
            },
        }
    )
    start = time.perf_counter()
    result = run(cfg, stdout=io.StringIO())
    wall = time.perf_counter() - start
    assert result.exit_code == 0, result.message
    m = result.metrics
    return {
        "wallSeconds": wall,
        "trainSeconds": m["trainSeconds"],
        "tokensComputed": m["tokens"],
        "steps": m["steps"],
        "finalLoss": m["finalLoss"],
    }


def _hf_model(info: dict[str, Any]) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(info["model"], attn_implementation="sdpa")
    lora = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=LORA["targetModules"],
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _common_args(out: Path) -> dict[str, Any]:
    return dict(
        output_dir=str(out),
        num_train_epochs=1,
        learning_rate=2e-4,
        logging_steps=1000,
        save_strategy="no",
        report_to=[],
        gradient_checkpointing=True,
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=42,
    )


def run_roadmap(info: dict[str, Any], out: Path) -> dict[str, Any]:
    """The roadmap's script, faithfully: every example padded to 2048 tokens."""
    from datasets import Dataset
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from healthnav.contracts.dataset import load_records
    from healthnav.contracts.prompts import render_example

    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(info["model"])
    texts = [p + c + tok.eos_token for p, c in (render_example(r) for r in load_records(info["dataset"]))]
    ds = Dataset.from_dict({"text": texts}).map(
        lambda b: tok(b["text"], padding="max_length", max_length=MAX_LEN, truncation=True),
        batched=True,
        remove_columns=["text"],
    )
    trainer = Trainer(
        model=_hf_model(info),
        args=TrainingArguments(
            per_device_train_batch_size=4, gradient_accumulation_steps=1, **_common_args(out)
        ),
        train_dataset=ds,
        data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
    )
    t0 = time.perf_counter()
    res = trainer.train()
    train_s = time.perf_counter() - t0
    return {
        "wallSeconds": time.perf_counter() - start,
        "trainSeconds": train_s,
        "tokensComputed": len(texts) * MAX_LEN,
        "steps": res.global_step,
        "finalLoss": res.training_loss,
    }


def run_trl(info: dict[str, Any], out: Path) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from healthnav.contracts.dataset import load_records
    from healthnav.contracts.prompts import render_example

    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(info["model"])
    pairs = [render_example(r) for r in load_records(info["dataset"])]
    ds = Dataset.from_dict({"prompt": [p for p, _ in pairs], "completion": [c for _, c in pairs]})
    args = SFTConfig(
        per_device_train_batch_size=1,
        gradient_accumulation_steps=4,
        packing=True,
        max_length=MAX_LEN,
        completion_only_loss=True,
        **_common_args(out),
    )
    trainer = SFTTrainer(model=_hf_model(info), args=args, train_dataset=ds, processing_class=tok)
    computed = sum(len(x) for x in trainer.train_dataset["input_ids"])
    t0 = time.perf_counter()
    res = trainer.train()
    train_s = time.perf_counter() - t0
    return {
        "wallSeconds": time.perf_counter() - start,
        "trainSeconds": train_s,
        "tokensComputed": computed,
        "steps": res.global_step,
        "finalLoss": res.training_loss,
    }


VARIANTS = {"ours": run_ours, "trl": run_trl, "roadmap": run_roadmap}


def child(variant: str, info_path: Path, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    info = json.loads(info_path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        result = VARIANTS[variant](info, Path(tmp) / "out")
    result["peakRssBytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--variants", default="ours,trl,roadmap")
    parser.add_argument(
        "--repeats", type=int, default=2, help="interleaved runs per variant; the fastest counts"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (1 is steadier on a busy box)"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--info", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.info), args.threads)
        return

    with tempfile.TemporaryDirectory(prefix="hnav-bench-") as tmp:
        work = Path(tmp)
        info = setup(work, args.records, args.hidden, args.layers)
        info_path = work / "info.json"
        info_path.write_text(json.dumps(info))
        real = sum(info["lengths"])
        results: dict[str, Any] = {}
        runs: dict[str, list[dict[str, Any]]] = {}
        for variant in [v for _ in range(args.repeats) for v in args.variants.split(",")]:
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    variant,
                    "--info",
                    str(info_path),
                    "--threads",
                    str(args.threads),
                ],
                capture_output=True,
                text=True,
                env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
            )
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{variant} failed:\n{proc.stderr[-4000:]}")
            r = json.loads(line[len("RESULT ") :])
            r["tokensPerRealToken"] = round(r["tokensComputed"] / real, 3)
            r["realTokensPerSecond"] = round(real / r["trainSeconds"], 1)
            runs.setdefault(variant, []).append(r)
            print(variant, json.dumps(r), flush=True)
        for variant, rs in runs.items():
            best = min(rs, key=lambda x: x["trainSeconds"])
            results[variant] = {**best, "allTrainSeconds": [round(x["trainSeconds"], 2) for x in rs]}

    summary: dict[str, Any] = {
        "benchmark": "trainer_cpu",
        "setup": {
            "records": args.records,
            "tokensPerRecord": {
                "min": min(info["lengths"]),
                "max": max(info["lengths"]),
                "mean": round(real / len(info["lengths"]), 1),
            },
            "realTokens": real,
            "model": f"llama architecture, hidden {args.hidden}, {args.layers} layers, vocab 4096",
            "method": "LoRA r16 on q/k/v/o, 1 epoch, gradient checkpointing, fp32",
            "torchThreads": args.threads,
            "cpu": os.cpu_count(),
            "loadAverage": os.getloadavg(),
            "repeats": args.repeats,
        },
        "results": results,
    }
    if "ours" in results:
        ours = results["ours"]
        for other in ("roadmap", "trl"):
            if other in results:
                summary[f"speedupVs{other.capitalize()}Wall"] = round(
                    results[other]["wallSeconds"] / ours["wallSeconds"], 2
                )
                summary[f"speedupVs{other.capitalize()}Train"] = round(
                    results[other]["trainSeconds"] / ours["trainSeconds"], 2
                )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
