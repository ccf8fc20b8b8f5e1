"""The deployed model measured as users see it gives the same scores as the model in-process.

A real Ray Serve app (transformers engine, CPU) serves the tiny base model and the trained
adapter; ``run_evaluation`` goes through ``/v1/completions`` with the openai client. The
healthnav server does not return prompt log-probabilities, so multiple choice is scored by the
generated letter on both sides here, and the endpoint run must say that it fell back.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from healthnav.evaluation.pipeline import EvalConfig, run_evaluation

pytestmark = pytest.mark.slow

COMPARED = ("rougeL", "bleu", "semanticSimilarity", "mcqAccuracy", "riskLevelAccuracy", "redFlagRecall")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint(tiny_model: Path, trained_adapter: Path) -> Iterator[str]:
    import ray
    from healthnav.serving.app import build_app
    from healthnav.serving.config import ServeAppConfig
    from ray import serve

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
    port = _free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(cfg.to_dict()), name="healthnav", route_prefix="/", blocking=False)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def _predictions(out: Path, model: str) -> dict[str, str | None]:
    rows = [json.loads(line) for line in (out / "eval" / "predictions.jsonl").read_text().splitlines()]
    return {r["id"]: r["prediction"] for r in rows if r["model"] == model}


def test_served_scores_equal_in_process_scores(
    endpoint: str, tiny_model: Path, trained_adapter: Path, dataset_dir: Path, tmp_path: Path
) -> None:
    common = {"dataset": str(dataset_dir), "maxNewTokens": 40, "mcqScoring": "generated"}
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
        assert _predictions(tmp_path / "s", label) == _predictions(tmp_path / "l", label)
    local_doc = json.loads((tmp_path / "l" / "eval" / "metrics.json").read_text())
    served_doc = json.loads((tmp_path / "s" / "eval" / "metrics.json").read_text())
    for label in ("candidate", "base"):
        for key in COMPARED:
            assert served_doc[label][key] == pytest.approx(local_doc[label][key], abs=1e-6), (label, key)
    assert served.metrics["latencyP50Seconds"] > 0 and served.metrics["ttftP50Seconds"] > 0


def test_endpoint_without_prompt_logprobs_falls_back_and_says_so(
    endpoint: str, dataset_dir: Path, tmp_path: Path
) -> None:
    run_evaluation(
        EvalConfig(
            dataset=str(dataset_dir),
            endpoint=endpoint,
            model="triage",
            output=str(tmp_path),
            max_new_tokens=8,
            skip_base=True,
        )
    )
    doc = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert doc["candidate"]["mcqMethod"] == "generated"
    assert any("not log-likelihood" in n for n in doc["notes"])
