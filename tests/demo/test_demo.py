"""`make demo` cannot rot: the whole demo runs here, as a newcomer would run it.

Nothing is mocked but the GPU: a real S3-protocol server, SmolLM2 from its package, QLoRA on the
CPU and Ray Serve. Stage 8 (the chart-installed operator, a trainer pod and KubeRay's Ray pods on
the real node) is left to tests/e2e, which drives the same chart, images and examples' shapes and
checks more of them; running it twice would cost CI a quarter of an hour.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The host stages take about 13 minutes on 2 quiet cores (two QLoRA runs on SmolLM2, the real one
# and the shuffled-output control, ~3 min each; the evaluations, batched, ~2 and ~1.5 min; Ray
# Serve ~1.5 min), more under load: beyond the suite's 10-minute default, so the test says so.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]
HOST_STAGES = ("S3", "Dataset", "Base model", "Fine-tune", "Evaluate", "shuffled", "Serve")
REPO = Path(__file__).resolve().parents[2]


def _run_demo(demo_dir: Path, *args: str, timeout: float = 2400) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HEALTHNAV_DEMO_DIR": str(demo_dir), "COLUMNS": "200"}
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "KUBECONFIG"):
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "healthnav.demo", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_runs_end_to_end_and_reruns_from_cache(tmp_path: Path) -> None:
    first = _run_demo(tmp_path, *HOST_STAGES)
    out = first.stdout
    assert first.returncode == 0, out[-4000:] + first.stderr[-4000:]
    # every stage reported, with its time
    for stage in (
        "Local S3 server",
        "Dataset",
        "Base model",
        "Fine-tune with QLoRA",
        "Evaluate",
        "shuffled outputs",
        "Serve",
    ):
        assert stage in out
    # the emergency case escalates whatever the tiny model generated; the routine one does not
    assert '"risk_level": "emergency"' in out
    assert "routine assessment" in out and "emergency assessment" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] and [s["stage"] for s in summary["stages"]][-1].startswith("Serve")
    results = {s["stage"]: s["result"] for s in summary["stages"]}
    assert "gate passed" in next(r for stage, r in results.items() if stage.startswith("Evaluate"))
    # the same gate fails the same training on shuffled outputs: it tells answers from format
    assert "gate failed, as it must" in next(r for stage, r in results.items() if "shuffled" in stage)
    control = summary["shuffledControl"]
    assert not control["gate"]["passed"] and control["metrics"]["assessmentParseRate"] > 0
    assert "s3://healthnav-demo/finetunes/demo/triage-v1/adapter/" in out
    assert (tmp_path / "finetunes" / "demo" / "triage-v1" / "adapter" / "adapter_config.json").exists()

    # a second run reuses the dataset, the base model and the adapter
    second = _run_demo(tmp_path, "S3", "Dataset", "Base model", "Fine-tune", timeout=600)
    assert second.returncode == 0, second.stdout[-4000:]
    assert "reused the adapter" in second.stdout
    assert "reusing" in second.stdout
