"""The deployed model measured as users see it gives the same scores as the model in-process.

A real Ray Serve app (transformers engine, CPU) serves the tiny base model and the trained
adapter; ``run_evaluation`` goes through ``/v1/completions`` with the openai client. Multiple
choice is scored by log-likelihood on both sides, as lm-evaluation-harness does: in-process from
the logits, through the server from ``echo`` + ``logprobs`` prompt log-probabilities. The
per-option log-likelihoods, not just the accuracies, must agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthnav.evaluation.gates import QUALITY_METRICS
from healthnav.evaluation.pipeline import EvalConfig, run_evaluation

pytestmark = pytest.mark.slow

COMPARED = QUALITY_METRICS  # every quality metric must agree between served and in-process


@pytest.fixture(scope="module")
def endpoint(tiny_model: Path, trained_adapter: Path) -> Iterator[str]:
    from healthnav.serving.app import build_app
    from healthnav.serving.config import ServeAppConfig
    from healthnav.serving.local import local_serve

    cfg = ServeAppConfig.model_validate(
        {
            "modelName": "tiny",
            "baseModel": f"file://{tiny_model}",
            "engine": "transformers",
            "adapters": [{"name": "triage", "uri": f"file://{trained_adapter}"}],
            "numGpusPerReplica": 0,
            "numCpusPerReplica": 0.5,
            "apiKeysEnv": None,
            "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
        }
    )
    with local_serve(build_app(cfg.to_dict())) as url:
        yield url


def _rows(out: Path, model: str) -> dict[str, dict]:
    rows = [json.loads(line) for line in (out / "eval" / "predictions.jsonl").read_text().splitlines()]
    return {r["id"]: r for r in rows if r["model"] == model}


def test_served_scores_equal_in_process_scores(
    endpoint: str, tiny_model: Path, trained_adapter: Path, dataset_dir: Path, tmp_path: Path
) -> None:
    common = {"dataset": str(dataset_dir), "maxNewTokens": 40, "mcqScoring": "loglikelihood"}
    run_evaluation(
        EvalConfig.model_validate(
            {
                **common,
                "baseModel": str(tiny_model),
                "adapter": str(trained_adapter),
                "output": str(tmp_path / "l"),
            }
        )
    )
    served = run_evaluation(
        EvalConfig.model_validate(
            {
                **common,
                "endpoint": endpoint,
                "model": "triage",
                "endpointBaseModel": "tiny",
                "output": str(tmp_path / "s"),
                "timeoutSeconds": 120,
            }
        )
    )
    assert not served.partial, served.gate.message
    for label in ("candidate", "base"):
        local, remote = _rows(tmp_path / "l", label), _rows(tmp_path / "s", label)
        assert local.keys() == remote.keys()
        mcq = [i for i, r in local.items() if r["kind"] == "mcq"]
        assert mcq, "the dataset must contain multiple-choice items"
        for item in local:
            assert remote[item]["prediction"] == local[item]["prediction"], (label, item)
            assert remote[item]["choice"] == local[item]["choice"], (label, item)
        for item in mcq:
            assert remote[item]["option_logprobs"] == pytest.approx(local[item]["option_logprobs"], abs=1e-3)
    local_doc = json.loads((tmp_path / "l" / "eval" / "metrics.json").read_text())
    served_doc = json.loads((tmp_path / "s" / "eval" / "metrics.json").read_text())
    for label in ("candidate", "base"):
        assert served_doc[label]["mcqMethod"] == local_doc[label]["mcqMethod"] == "loglikelihood"
        for key in COMPARED:
            assert served_doc[label][key] == pytest.approx(local_doc[label][key], abs=1e-6), (label, key)
    assert not any("not log-likelihood" in n for n in served_doc["notes"])
    assert served.metrics["latencyP50Seconds"] > 0 and served.metrics["ttftP50Seconds"] > 0
