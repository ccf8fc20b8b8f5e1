"""``make demo`` timed from an empty demo directory, with its three evaluation columns (issue 15).

Runs ``python -m healthnav.demo`` (every stage, or those named in ``BENCH_DEMO_STAGES``, e.g.
``"S3 Dataset Base Fine-tune Evaluate shuffled Serve"`` for the host stages) in a fresh
``HEALTHNAV_DEMO_DIR`` so nothing is reused: the dataset is built, both adapters (the real
fine-tune and the shuffled-output control) are trained, everything is evaluated. Installed
prerequisites (``make venv binaries base-model images``) are not timed: they are the install.

Writes bench/results/demo.json: seconds per stage and in total, the trainer's tokens/s, and
base / fine-tune / shuffled-control metrics with the gate's verdict on each adapter.
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

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "demo.json"
SHOWN = (
    "riskLevelAccuracy",
    "assessmentParseRate",
    "rougeL",
    "bertScore",
    "semanticSimilarity",
    "mcqAccuracy",
)


def _columns(summary: dict[str, Any]) -> dict[str, Any]:
    evaluation = summary.get("evaluation") or {}
    control = summary.get("shuffledControl") or {}
    named = {
        "base": evaluation.get("base"),
        "fineTune": evaluation.get("fineTune"),
        "shuffled": control.get("metrics"),
    }
    return {name: {k: (m or {}).get(k) for k in SHOWN} for name, m in named.items() if m}


def main() -> int:
    stages = os.environ.get("BENCH_DEMO_STAGES", "").split()
    with tempfile.TemporaryDirectory(prefix="hnav-bench-demo-") as tmp:
        env = {**os.environ, "HEALTHNAV_DEMO_DIR": tmp, "COLUMNS": "160"}
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "healthnav.demo", *stages], cwd=REPO, env=env)
        wall = time.monotonic() - started
        summary = json.loads((Path(tmp) / "summary.json").read_text())
        trained = json.loads((Path(tmp) / "finetunes/demo/triage-v1/metrics.json").read_text())
    result = {
        "command": "python -m bench demo" + (f"  (BENCH_DEMO_STAGES={' '.join(stages)!r})" if stages else ""),
        "cpus": os.cpu_count(),
        "passed": summary["passed"],
        "wallSeconds": round(wall, 1),
        "stages": {s["stage"]: {"seconds": s["seconds"], "result": s["result"]} for s in summary["stages"]},
        "fineTuneTokensPerSecond": trained.get("tokensPerSecond"),
        "metrics": _columns(summary),
        "controlGate": (summary.get("shuffledControl") or {}).get("gate", {}).get("message"),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
