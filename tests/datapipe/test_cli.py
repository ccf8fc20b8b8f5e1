"""``hnav data`` commands through typer's runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from dp_helpers import write_config
from typer.testing import CliRunner

from healthnav.datapipe.cli import app

pytestmark = pytest.mark.unit
runner = CliRunner()


def test_deidentify_keeps_line_order(tmp_path: Path) -> None:
    text = "Call me at 617-555-0100\nno identifiers here, 400 mg ibuprofen\n\nmy name is Jane Roe\n"
    result = runner.invoke(app, ["deidentify", "-"], input=text)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "Call me at [PHONE]",
        "no identifiers here, 400 mg ibuprofen",
        "",
        "my name is [NAME]",
    ]
    f = tmp_path / "in.txt"
    f.write_text("seen 2024-01-02\n")
    assert runner.invoke(app, ["deidentify", str(f)]).stdout == "seen [DATE]\n"


def test_build_verify_inspect_and_bad_config(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml")
    result = runner.invoke(app, ["build", str(cfg), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "quarantined 1" in result.stdout
    out = tmp_path / "out"
    ok = runner.invoke(app, ["verify", str(out)])
    assert ok.exit_code == 0 and "records verified" in ok.stdout
    shown = runner.invoke(app, ["inspect", str(out), "--split", "test", "--samples", "1"])
    assert shown.exit_code == 0 and '"task": "mcq"' in shown.stdout
    (out / "test-00000.jsonl").write_text("tampered\n")
    bad = runner.invoke(app, ["verify", str(out)])
    assert bad.exit_code == 1 and "test-00000.jsonl" in bad.output
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "name: x\nversion: v1\noutput: /tmp/x\nsources: [{name: a, format: nope, paths: [x], license: MIT}]\n"
    )
    res = runner.invoke(app, ["build", str(broken)])
    assert res.exit_code == 2 and "sources.0.format" in res.output
