"""End to end on tiny real models: adapters vs base, gates, stored report, bad input, partial results."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eval_helpers import make_records, write_dataset
from typer.testing import CliRunner

from healthnav.cli import app
from healthnav.evaluation.pipeline import EvalConfig, EvaluationInputError, run_evaluation

GATES = {"rougeL": 0.30, "mcqAccuracy": 0.45, "maxRegressionVsBase": 0.0}


@pytest.fixture(scope="module")
def trained_run(
    tiny_model: Path, trained_adapter: Path, dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ft") / "finetune"
    reference = tmp_path_factory.mktemp("ref") / "reference.jsonl"
    reference.write_text(
        "".join(
            json.dumps(
                {"id": r.id, "prompt": r.instruction, "answer": r.output, "latencySeconds": 1.5 + i / 10}
            )
            + "\n"
            for i, r in enumerate(make_records()[:5])
        )
    )
    outcome = run_evaluation(
        EvalConfig(
            dataset=str(dataset_dir),
            base_model=str(tiny_model),
            adapter=str(trained_adapter),
            reference=str(reference),
            output=f"file://{out}",
            gates=GATES,
            max_new_tokens=40,
        )
    )
    assert outcome.output == f"file://{out}/eval/"
    return out, json.loads((out / "eval" / "metrics.json").read_text())


def test_adapter_trained_on_the_test_distribution_beats_its_base_and_passes(
    trained_run: tuple[Path, dict],
) -> None:
    _, doc = trained_run
    cand, base = doc["candidate"], doc["base"]
    for key in ("rougeL", "bleu", "semanticSimilarity", "mcqAccuracy", "riskLevelAccuracy"):
        assert cand[key] > base[key], key
    assert cand["redFlagRecall"] == 1.0
    assert doc["passed"] is True and doc["gates"]["reason"] == "GatesPassed"
    assert doc["partial"] is False
    assert doc["metrics"]["rougeL"] == cand["rougeL"]  # the flat summary the operator copies to status
    assert cand["counts"] == {
        **cand["counts"],
        "mcqAccuracy": 3,
        "riskLevelAccuracy": 2,
        "redFlagRecall": 1,
        "rougeL": 5,
        "failed": 0,
    }
    assert cand["costPerQueryUsd"] > 0 and cand["latencyP95Seconds"] >= cand["latencyP50Seconds"] > 0
    ref = doc["reference"]
    assert ref["rougeL"] == pytest.approx(1.0)  # the reference answers are the gold outputs here
    assert ref["coverage"] == pytest.approx(5 / 8)
    assert ref["costPerQueryUsd"] > cand["costPerQueryUsd"]


def test_report_renders_with_its_plots(trained_run: tuple[Path, dict]) -> None:
    import matplotlib.image

    out, _ = trained_run
    eval_dir = out / "eval"
    md = (eval_dir / "report.md").read_text()
    assert "| ROUGE-L F1 |" in md and "Base + adapter" in md and "API reference" in md
    assert "## Gates: PASSED" in md
    html = (eval_dir / "report.html").read_text()
    assert "<table>" in html and '<img src="metrics.png"' in html and '<img src="latency.png"' in html
    for name in ("metrics.png", "latency.png"):
        image = matplotlib.image.imread(eval_dir / name)
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0  # a real, non-blank plot
    rows = [json.loads(line) for line in (eval_dir / "predictions.jsonl").read_text().splitlines()]
    assert {r["model"] for r in rows} == {"base", "candidate", "reference"}


def test_broken_adapter_fails_its_gate(
    tiny_model: Path, broken_adapter: Path, dataset_dir: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--dataset",
            str(dataset_dir),
            "--base-model",
            str(tiny_model),
            "--adapter",
            str(broken_adapter),
            "--output",
            str(tmp_path),
            "--gates",
            json.dumps({"gates": GATES}),
            "--max-new-tokens",
            "24",
        ],
    )
    assert result.exit_code == 3, result.output
    doc = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert doc["passed"] is False and doc["gates"]["reason"] == "GatesFailed"
    failed = {c["metric"] for c in doc["gates"]["checks"] if not c["passed"]}
    assert "rougeL" in failed
    assert "## Gates: FAILED" in (tmp_path / "eval" / "report.md").read_text()


def test_evaluation_output_to_s3(tiny_model: Path, dataset_dir: Path, s3_bucket: str) -> None:
    from healthnav.contracts import storage

    outcome = run_evaluation(
        EvalConfig(
            dataset=str(dataset_dir),
            base_model=str(tiny_model),
            max_examples=3,
            output=f"s3://{s3_bucket}/finetunes/ns/job/",
            max_new_tokens=8,
        )
    )
    keys = sorted(u.key for u, _ in storage.list_objects(f"s3://{s3_bucket}/finetunes/ns/job/eval/"))
    assert keys == [
        f"finetunes/ns/job/eval/{n}"
        for n in (
            "latency.png",
            "metrics.json",
            "metrics.png",
            "predictions.jsonl",
            "report.html",
            "report.md",
        )
    ]
    assert outcome.passed and outcome.gate.reason == "NoGates"


@pytest.mark.unit
def test_missing_test_split_is_a_clear_error(tmp_path: Path) -> None:
    ds = write_dataset(tmp_path / "ds", {"train": make_records()})
    with pytest.raises(EvaluationInputError, match="no 'test' split"):
        run_evaluation(EvalConfig(dataset=str(ds), base_model="/nonexistent", output=str(tmp_path)))
    with pytest.raises(EvaluationInputError, match="no manifest"):
        run_evaluation(EvalConfig(dataset=str(tmp_path / "nothing"), base_model="/x", output=str(tmp_path)))


@pytest.mark.unit
def test_mismatched_schema_names_shard_and_line(tmp_path: Path) -> None:
    ds = write_dataset(tmp_path / "ds", {"test": make_records()[:2]})
    shard = ds / "test-00000.jsonl"
    lines = shard.read_text().splitlines()
    lines[1] = json.dumps({"question": "old format", "answer": "x"})
    shard.write_text("\n".join(lines) + "\n")
    manifest = json.loads((ds / "manifest.json").read_text())
    import hashlib

    manifest["shards"][0].update(
        sha256=hashlib.sha256(shard.read_bytes()).hexdigest(), bytes=shard.stat().st_size
    )
    (ds / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(
        app, ["eval", "--dataset", str(ds), "--base-model", "/x", "--output", str(tmp_path)]
    )
    assert result.exit_code == 78
    assert "test-00000.jsonl line 2" in result.output


@pytest.mark.unit
def test_bad_gates_option_is_a_config_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--dataset",
            str(tmp_path),
            "--base-model",
            "/x",
            "--output",
            str(tmp_path),
            "--gates",
            "{rougel: 0.3}",
        ],
    )
    assert result.exit_code == 78 and "rougel" in result.output


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """An endpoint that accepts requests and answers too late: what a stuck replica looks like."""

    def do_POST(self) -> None:
        time.sleep(1.0)
        try:
            self.send_response(500)
            self.end_headers()
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.unit
def test_endpoint_timeout_keeps_partial_results_and_fails_gates(
    slow_endpoint: str, dataset_dir: Path, tmp_path: Path
) -> None:
    outcome = run_evaluation(
        EvalConfig(
            dataset=str(dataset_dir),
            endpoint=slow_endpoint,
            model="triage-v3",
            output=str(tmp_path),
            timeout_seconds=0.2,
            max_consecutive_failures=2,
            gates={"rougeL": 0.1},
        )
    )
    assert outcome.partial and not outcome.passed
    doc = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert doc["partial"] is True
    errors = doc["candidate"]["errors"]
    assert len(errors) == 8
    assert "timed out" in errors[0]["error"] and "not evaluated: gave up after 2" in errors[-1]["error"]
    assert "Partial results" in (tmp_path / "eval" / "report.md").read_text()
