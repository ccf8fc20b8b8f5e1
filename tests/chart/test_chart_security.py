"""Security scans of what users install: checkov over the rendered chart (every preset) and
hadolint over the Dockerfiles. Every exception must carry a written justification.

The scanners live in their own virtualenv (hack/scan-requirements.txt): checkov pins old
releases of boto3 and packaging that must not leak into the project's environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from chart_helpers import PRESETS, REPO, helm, template_args

pytestmark = pytest.mark.unit

REQUIREMENTS = REPO / "hack" / "scan-requirements.txt"
DOCKERFILES = sorted((REPO / "images").glob("*/Dockerfile"))


def scan_venv() -> Path:
    """$HEALTHNAV_CACHE/tools/scan, created from the pinned requirements when missing."""
    from healthnav.devenv.binaries import cache_dir

    venv = cache_dir() / "tools" / "scan"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    stamp = venv / f".installed-{digest}"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "-r", str(REQUIREMENTS)], check=True, timeout=900
        )
        stamp.touch()
    return venv / "bin"


@pytest.fixture(scope="module")
def tools() -> Path:
    return scan_venv()


def test_checkov_passes_on_every_preset_with_justified_exceptions(tools: Path, tmp_path: Path) -> None:
    for preset in PRESETS:
        (tmp_path / f"{preset}.yaml").write_text(helm(*template_args(preset)).stdout)
    proc = subprocess.run(
        [
            str(tools / "checkov"),
            "--directory",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--quiet",
            "--compact",
            "--skip-download",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    report = json.loads(proc.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = report["results"]["failed_checks"]
    assert not failed, "\n".join(f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in failed)
    assert report["summary"]["passed"] > 100 and report["summary"]["parsing_errors"] == 0
    for skipped in report["results"].get("skipped_checks", []):
        assert len(skipped.get("suppress_comment") or "") > 40, (
            f"{skipped['check_id']} skipped without a reason"
        )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_is_hadolint_clean(tools: Path, dockerfile: Path) -> None:
    proc = subprocess.run(
        [
            str(tools / "hadolint"),
            "--config",
            str(REPO / "images" / ".hadolint.yaml"),
            "--no-color",
            str(dockerfile),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = dockerfile.read_text()
    # Ignored rules carry their reason on the comment lines just above the ignore pragma.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            rule = line.split("=", 1)[1]
            assert rule in lines[i - 1] or rule in lines[i - 2] or rule in lines[i - 3], (
                f"{rule} not justified"
            )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_images_run_as_a_numeric_non_root_user_from_pinned_bases(dockerfile: Path) -> None:
    """What runAsNonRoot needs (a numeric UID), and reproducible bases."""
    text = dockerfile.read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    bases = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ARG PYTHON_IMAGE=")]
    assert bases and all(":" in b and "latest" not in b and b.count(".") >= 2 for b in bases)
    assert "ENTRYPOINT" in text or "CMD" in text


@pytest.mark.parametrize("script", sorted((REPO / "hack" / "kind").glob("*.sh")), ids=lambda p: p.name)
def test_kind_scripts_are_shellcheck_clean(tools: Path, script: Path) -> None:
    """The kind quickstart cannot run here (no Docker engine); static checks are what is left."""
    proc = subprocess.run(
        [str(tools / "shellcheck"), "--severity=style", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        script.read_text().startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in script.read_text()
    )
