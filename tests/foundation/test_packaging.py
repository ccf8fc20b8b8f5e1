"""One installable project: the CLI describes every command, the base install stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from healthnav.cli import app

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def test_cli_lists_every_command_group() -> None:
    out = CliRunner().invoke(app, ["--help"]).output
    for group in ("data", "train", "eval", "serve", "plan", "operator", "dev", "demo"):
        assert group in out


@pytest.mark.parametrize("group", [["dev"], ["dev", "cluster"], ["dev", "s3"], ["data"], ["operator"]])
def test_group_help_describes_commands(group: list[str]) -> None:
    result = CliRunner().invoke(app, [*group, "--help"])
    assert result.exit_code == 0, result.output
    assert "Commands" in result.output


def test_operator_and_cli_never_import_heavy_libraries() -> None:
    code = (
        "import sys, healthnav.cli, healthnav.operator, healthnav.trainer.config, healthnav.serving.config;"
        "heavy = {'torch', 'ray', 'transformers', 'vllm'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_repo_root_on_sys_path_does_not_shadow_stdlib_operator() -> None:
    """`python -m pip` from the checkout must still get the standard library's operator."""
    out = subprocess.run(
        [sys.executable, "-c", "import operator; print(operator.itemgetter(1)([5, 7]))"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "7"
