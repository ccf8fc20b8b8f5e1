"""Benchmark of ``hnav eval`` on the CPU: the example dataset, a tiny model, the API reference file.

Builds ``examples/datasets/triage-v1.yaml`` with datapipe (95% test split), creates a tiny
llama-family model (trainer.tinymodel), trains nothing, and runs the full evaluation (base
model in-process + reference answers), timing each phase. What it measures is the evaluator's
own overhead (scoring, embeddings, report, plots) and per-query latency/cost accounting on a
small model; a 7B model's numbers come from running the same command on a GPU node.

    .venv/bin/python -m bench.eval_bench      # writes bench/results/eval.json
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "eval.json"


def main() -> dict:
    from healthnav.contracts.dataset import load_records
    from healthnav.datapipe.build import build_dataset, load_config
    from healthnav.evaluation.embeddings import load_embedder
    from healthnav.evaluation.models import InProcessModel
    from healthnav.evaluation.pipeline import EvalConfig, run_evaluation
    from healthnav.evaluation.tasks import build_items
    from healthnav.trainer.tinymodel import create_tiny_model

    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="hnav-eval-bench-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        config, base = load_config(ROOT / "examples" / "datasets" / "triage-v1.yaml")
        # Nearly everything into the test split, so every task kind (triage, open-ended, MCQ) is scored.
        config = config.model_copy(update={"split": config.split.model_copy(update={"test_fraction": 0.95})})
        build_dataset(config, base_dir=base, output=str(work / "dataset"), progress=False)
        timings["dataset_build_s"] = time.perf_counter() - t
        records = load_records(work / "dataset", "test")
        corpus = [
            x
            for r in load_records(work / "dataset", "train") + records
            for x in (r.instruction, r.input, r.output)
        ]

        t = time.perf_counter()
        model = create_tiny_model(work / "model", "llama", corpus, hidden_size=128, layers=4)
        timings["tiny_model_s"] = time.perf_counter() - t

        t = time.perf_counter()
        load_embedder()
        timings["embedding_model_load_s"] = time.perf_counter() - t

        items = build_items(records)
        engine = InProcessModel.load(model, device="cpu")
        mcq = [i for i in items if i.kind == "mcq"]
        engine.loglikelihood(mcq[0].prompt, mcq[0].choices)  # warm-up
        t = time.perf_counter()
        for item in mcq:
            engine.loglikelihood(item.prompt, item.choices)
        timings["loglikelihood_per_mcq_ms"] = (time.perf_counter() - t) / max(len(mcq), 1) * 1000

        t = time.perf_counter()
        outcome = run_evaluation(
            EvalConfig(
                dataset=str(work / "dataset"),
                base_model=str(model),
                reference=str(ROOT / "examples" / "data" / "api_reference_answers.jsonl"),
                output=str(work / "finetune"),
                max_new_tokens=64,
                gates={"mcqAccuracy": 0.45},
            )
        )
        timings["run_evaluation_s"] = time.perf_counter() - t
        doc = json.loads((work / "finetune" / "eval" / "metrics.json").read_text())

    result = {
        "benchmark": "eval",
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "test_records": len(items),
        "kinds": {k: sum(1 for i in items if i.kind == k) for k in ("mcq", "triage", "generation")},
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "candidate_metrics": dict(doc["metrics"]),
        "reference_metrics": {
            k: doc["reference"][k]
            for k in (
                "mcqAccuracy",
                "latencyP50Seconds",
                "latencyP95Seconds",
                "costPerQueryUsd",
                "ttftP50Seconds",
            )
        },
        "gate": {"passed": outcome.passed, "message": outcome.gate.message},
        "note": "tiny random model on CPU: quality numbers are chance-level by design; timings are the point",
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
