"""Benchmark: ``hnav eval`` and lm-evaluation-harness score the same served model the same (issue 15).

A platform team checks a fine-tune with lm-evaluation-harness; healthnav's gates use ``hnav eval``.
If the two disagreed on the same model and items, one of them would be wrong. This serves
SmolLM2-135M-Instruct (the packaged base model, ``make base-model``) with healthnav's Ray Serve
app (transformers engine, CPU), then scores the multiple-choice test split of
``bench/data/mcq/dataset.yaml`` (39 MedQA/MedMCQA-style items) twice against the same
``/v1/completions``:

* ``hnav eval`` (:func:`healthnav.evaluation.pipeline.run_evaluation`, ``mcqScoring:
  loglikelihood``): each option's continuation log-likelihood from ``echo`` + ``logprobs``;
* ``lm_eval --model local-completions`` with a local task YAML whose documents are the very
  items ``hnav eval`` loads (prompt, option continuations, gold index), ``target_delimiter: ""``
  because healthnav's continuations carry their own leading text.

It reports both accuracies (``acc`` and ``acc_norm``), how many items the two pick the same
option on, and the largest per-option log-likelihood difference. Results go to
``bench/results/lm_eval_agreement.json``.

    .venv/bin/python -m bench.lm_eval_agreement      # about 3 minutes on 2 cores
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATASET = Path(__file__).resolve().parent / "data" / "mcq" / "dataset.yaml"
RESULTS = Path(__file__).resolve().parent / "results" / "lm_eval_agreement.json"
SERVED = "smollm2"
TASK = "healthnav_mcq"


def task_yaml(docs: Path) -> str:
    """The lm-eval task: one document per ``hnav eval`` item, scored by option log-likelihood."""
    return "\n".join(
        [
            f"task: {TASK}",
            "dataset_path: json",
            f"dataset_kwargs: {{data_files: {{test: {json.dumps(str(docs))}}}}}",
            "test_split: test",
            "output_type: multiple_choice",
            "doc_to_text: prompt",
            "doc_to_choice: choices",
            "doc_to_target: gold",
            'target_delimiter: ""',
            "metric_list: [{metric: acc}, {metric: acc_norm}]",
            "",
        ]
    )


def build_dataset(work: Path) -> Path:
    from healthnav.datapipe.build import build_dataset as build
    from healthnav.datapipe.build import load_config

    config, base = load_config(DATASET)
    out = work / "dataset"
    build(config, base, output=str(out))
    return out


def hnav_eval(url: str, dataset: Path, out: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``hnav eval`` against the endpoint: (candidate metrics, predictions by item id)."""
    from healthnav.evaluation.pipeline import EvalConfig, run_evaluation

    config = EvalConfig.model_validate(
        {
            "dataset": str(dataset),
            "endpoint": url,
            "model": SERVED,
            "skipBase": True,
            "mcqScoring": "loglikelihood",
            "output": str(out),
            "timeoutSeconds": 120,
        }
    )
    outcome = run_evaluation(config)
    rows = [json.loads(line) for line in (out / "eval" / "predictions.jsonl").read_text().splitlines()]
    return outcome.metrics, {r["id"]: r for r in rows if r["model"] == "candidate" and r["kind"] == "mcq"}


def lm_eval(url: str, model: Path, dataset: Path, work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """lm-evaluation-harness against the same endpoint: (task results, samples by item id)."""
    from healthnav.evaluation.pipeline import load_items

    docs = work / "lm_eval" / "docs.jsonl"
    docs.parent.mkdir(parents=True)
    with docs.open("w") as f:
        for item in load_items(str(dataset)):
            if item.kind == "mcq":
                f.write(
                    json.dumps(
                        {
                            "id": item.id,
                            "prompt": item.prompt,
                            "choices": list(item.choices),
                            "gold": item.gold,
                        }
                    )
                    + "\n"
                )
    (docs.parent / f"{TASK}.yaml").write_text(task_yaml(docs))
    model_args = ",".join(
        [
            f"base_url={url}/v1/completions",
            f"model={SERVED}",
            "tokenizer_backend=huggingface",
            f"tokenizer={model}",
            "tokenized_requests=False",  # the server takes text prompts; lm-eval decodes its tokens
            "num_concurrent=1",
            "max_retries=1",
        ]
    )
    out = work / "lm_eval" / "out"
    cmd = [
        str(Path(sys.executable).with_name("lm_eval")),
        "--model",
        "local-completions",
        "--model_args",
        model_args,
        "--include_path",
        str(docs.parent),
        "--tasks",
        TASK,
        "--batch_size",
        "1",
        "--output_path",
        str(out),
        "--log_samples",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OPENAI_API_KEY": "unused"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"lm_eval failed ({done.returncode}):\n{done.stderr[-4000:]}")
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"][TASK]
    samples = [
        json.loads(line) for line in next(out.rglob(f"samples_{TASK}_*.jsonl")).read_text().splitlines()
    ]
    return results, {s["doc"]["id"]: s for s in samples}


def agreement(ours: dict[str, dict[str, Any]], theirs: dict[str, Any]) -> dict[str, Any]:
    """Same chosen option per item, and the largest per-option log-likelihood difference."""
    same, diffs, disagreements = 0, [], []
    for item_id, row in ours.items():
        sample = theirs[item_id]
        lls = [float(r[0]) for r in sample["filtered_resps"]]
        theirs_choice = max(range(len(lls)), key=lambda i: (lls[i], -i))
        same += theirs_choice == row["choice"]
        if theirs_choice != row["choice"]:
            disagreements.append({"id": item_id, "hnavEval": row["choice"], "lmEval": theirs_choice})
        diffs += [abs(a - b) for a, b in zip(row["option_logprobs"], lls, strict=True)]
    return {
        "items": len(ours),
        "sameChoice": same,
        "maxOptionLoglikelihoodDiff": round(max(diffs), 6) if diffs else None,
        "disagreements": disagreements[:10],
    }


def main() -> None:
    from healthnav.models.prepare import find_prepared
    from healthnav.serving.app import build_app
    from healthnav.serving.config import ServeAppConfig
    from healthnav.serving.local import local_serve

    model = find_prepared()
    if model is None:
        sys.exit("needs the packaged base model: run `make base-model`")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dataset = build_dataset(work)
        cfg = ServeAppConfig.model_validate(
            {
                "modelName": SERVED,
                "baseModel": f"file://{model}",
                "engine": "transformers",
                "numGpusPerReplica": 0,
                "numCpusPerReplica": 1,
                "apiKeysEnv": None,
                "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
            }
        )
        with local_serve(build_app(cfg.to_dict())) as url:
            t0 = time.monotonic()
            metrics, ours = hnav_eval(url, dataset, work / "hnav")
            hnav_s = time.monotonic() - t0
            t0 = time.monotonic()
            results, theirs = lm_eval(url, model, dataset, work)
            lm_s = time.monotonic() - t0
    figures = {
        "model": "smollm2-135m-instruct (transformers engine, healthnav Ray Serve app, CPU)",
        "dataset": str(DATASET.relative_to(ROOT)),
        "hnavEval": {
            "mcqAccuracy": metrics.get("mcqAccuracy"),
            "mcqAccuracyNorm": metrics.get("mcqAccuracyNorm"),
            "seconds": round(hnav_s, 1),
        },
        "lmEval": {
            "acc": results.get("acc,none"),
            "acc_norm": results.get("acc_norm,none"),
            "seconds": round(lm_s, 1),
        },
        "agreement": agreement(ours, theirs),
    }
    a = figures["agreement"]
    figures["agree"] = bool(
        a["sameChoice"] == a["items"]
        and figures["hnavEval"]["mcqAccuracy"] is not None
        and abs(figures["hnavEval"]["mcqAccuracy"] - figures["lmEval"]["acc"]) < 1e-9
        and abs(figures["hnavEval"]["mcqAccuracyNorm"] - figures["lmEval"]["acc_norm"]) < 1e-9
    )
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
