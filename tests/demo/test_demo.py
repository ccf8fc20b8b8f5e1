"""`make demo` cannot rot: the whole demo runs here, as a newcomer would run it.

Nothing is mocked but the GPU: a real S3-protocol server, a locally built model, QLoRA on the
CPU, Ray Serve, and the operator against a real control plane.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
REPO = Path(__file__).resolve().parents[2]


def _run_demo(demo_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HEALTHNAV_DEMO_DIR": str(demo_dir), "COLUMNS": "200"}
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "KUBECONFIG"):
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "healthnav.demo", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def test_demo_runs_end_to_end_and_reruns_from_cache(tmp_path: Path) -> None:
    first = _run_demo(tmp_path)
    out = first.stdout
    assert first.returncode == 0, out[-4000:] + first.stderr[-4000:]
    # every stage reported, with its time
    for stage in (
        "Local S3 server",
        "Dataset",
        "Base model",
        "Fine-tune with QLoRA",
        "Evaluate",
        "Serve",
        "Operator",
    ):
        assert stage in out
    # the emergency case escalates whatever the tiny model generated; the routine one does not
    assert '"risk_level": "emergency"' in out
    assert "routine assessment" in out and "emergency assessment" in out
    # the operator drove the FineTuneJob to completion on the control plane
    assert "Succeeded" in out
    assert "s3://healthnav-demo/finetunes/demo/triage-v1/adapter/" in out
    assert (tmp_path / "finetunes" / "demo" / "triage-v1" / "adapter" / "adapter_config.json").exists()

    # a second run reuses the dataset, the base model and the adapter
    second = _run_demo(tmp_path, "S3", "Dataset", "Base model", "Fine-tune")
    assert second.returncode == 0, second.stdout[-4000:]
    assert "reused the adapter" in second.stdout
    assert "reusing" in second.stdout
