"""No PHI in what ``hnav data build`` prints, logs or writes about a build (manifest, data card).

The real CLI runs in a subprocess (the real NER model included) over an app export whose rows are
full of identifiers, in identifier columns and in free text; one row is quarantined. Every line it
prints (stdout and stderr, Python logging at DEBUG), and the manifest and data card, must contain
none of them. The served half of the same check is ``tests/serving/test_no_phi_in_logs.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

# the identifiers planted in the export; each must appear nowhere in the build's output
PHI = {
    "name": "Zofia Wiśniewska-Adeyemi",
    "first": "Zofia",
    "relative": "Bartholomew",
    "nurse": "Ngozi",
    "email": "zofia.w.adeyemi@example.org",
    "phone": "412-555-0187",
    "dob": "1931-07-19",
    "address": "88 Quarry Hollow Road",
    "town": "Punxsutawney",
    "mrn": "MRN-44718823",
    "member": "XQH77120934",
    "employee": "EMP-661204",
}


def _export(path: Path) -> None:
    rows = [
        {
            "assessment_id": "asm_9001",
            "user_id": "u_5512",
            "patient_name": PHI["name"],
            "email": PHI["email"],
            "phone": PHI["phone"],
            "date_of_birth": PHI["dob"],
            "address": f"{PHI['address']}, {PHI['town']}",
            "mrn": PHI["mrn"],
            "age": 93,
            "sex": "female",
            "symptoms": (
                f"This is {PHI['first']}, my husband {PHI['relative']} says I was confused this morning. "
                f"Nurse {PHI['nurse']} at the clinic in {PHI['town']} said call {PHI['phone']}. "
                f"Member id {PHI['member']}, employee number {PHI['employee']}."
            ),
            "duration": "1 day",
            "medical_history": "Hypertension",
            "medications": "Amlodipine 5 mg",
            "allergies": "None",
            "risk_level": "urgent",
            "assessment": f"{PHI['first']}, acute confusion in an older adult needs same-day review.",
            "recommendations": ["See a doctor today"],
        },
        {  # quarantined: a long digit run the rules do not place, next to the identifiers
            "assessment_id": "asm_9002",
            "patient_name": PHI["name"],
            "age": 91,
            "symptoms": f"{PHI['first']} here, card 9 9 1 2 3 4 5 6 7 8, dizzy since {PHI['town']} trip",
            "risk_level": "routine",
            "assessment": "Likely benign positional vertigo.",
        },
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _leaks(text: str) -> list[str]:
    """The kinds of planted identifier found in ``text`` (never the values: this is a test log too)."""
    lower = text.lower()
    return [kind for kind, value in PHI.items() if value.lower() in lower]


def test_build_output_manifest_and_datacard_carry_no_phi(tmp_path: Path) -> None:
    _export(tmp_path / "app.jsonl")
    quarantine = tmp_path / "quarantine"
    cfg = {
        "name": "phi",
        "version": "v1",
        "output": str(tmp_path / "out"),
        "deployable": True,
        "sources": [
            {"name": "app", "format": "app", "paths": ["app.jsonl"], "license": "proprietary-internal"}
        ],
        "split": {"test_fraction": 0.0},
        "quarantine_dir": str(quarantine),
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    hnav = Path(sys.executable).with_name("hnav")
    env = {**os.environ, "PYTHONWARNINGS": "always", "HEALTHNAV_LOG_LEVEL": "DEBUG"}
    script = (
        "import logging, sys; logging.basicConfig(level=logging.DEBUG, stream=sys.stderr); "
        "from healthnav.cli import app; sys.argv = ['hnav'] + sys.argv[1:]; app()"
    )
    runs = [
        [str(hnav), "data", "build", str(tmp_path / "cfg.yaml")],
        [sys.executable, "-c", script, "data", "build", str(tmp_path / "cfg.yaml"), "--overwrite"],
    ]
    for argv in runs:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines = (proc.stdout + proc.stderr).splitlines()
        assert lines, "the build printed nothing: the check would be vacuous"
        assert not [(i, _leaks(line)) for i, line in enumerate(lines) if _leaks(line)]
    out = tmp_path / "out"
    manifest = (out / "manifest.json").read_text(encoding="utf-8")
    assert json.loads(manifest)["stats"]["deidentification"]["quarantined"] == 1
    assert _leaks(manifest) == [] and _leaks((out / "datacard.md").read_text(encoding="utf-8")) == []
    assert _leaks("".join(p.read_text(encoding="utf-8") for p in out.glob("*.jsonl"))) == []
    # the reviewers' quarantine folder is the one place the text goes (local, never staged)
    assert _leaks(next(quarantine.glob("*.jsonl")).read_text(encoding="utf-8"))
