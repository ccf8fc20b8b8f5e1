"""Shared helpers for datapipe tests: the committed example data and a small build config."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "data"
DATA = Path(__file__).parent / "data"


def write_config(path: Path, **overrides: object) -> Path:
    """A build config over the committed examples, written to ``path`` with overrides."""
    cfg: dict[str, object] = {
        "name": "t",
        "version": "v1",
        "output": str(path.parent / "out"),
        "deployable": True,
        "sources": [
            {
                "name": "app",
                "format": "app",
                "paths": [str(EXAMPLES / "app_assessments.jsonl")],
                "license": "proprietary-internal",
            },
            {
                "name": "medqa",
                "format": "medqa",
                "paths": [str(EXAMPLES / "medqa_us_4options.jsonl")],
                "license": "MIT",
                "split": "test",
            },
            {
                "name": "inst",
                "format": "instruction",
                "paths": [str(EXAMPLES / "instruction.json"), str(EXAMPLES / "instruction.jsonl")],
                "license": "CC-BY-4.0",
            },
        ],
        "split": {"test_fraction": 0.0},
        "error_budget": {"max_bad_records": 10, "max_bad_fraction": 0.5},
    }
    cfg.update(overrides)
    path.write_text(yaml.safe_dump(cfg))
    return path
