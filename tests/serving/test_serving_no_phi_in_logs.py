"""No PHI in the served API's logs or metric labels.

The real Ray Serve app (transformers engine, tiny real model, CPU: only the GPU is absent) takes
assessments and chat requests full of identifiers; then every file under Ray's session log
directory (controller, proxy, replica and worker logs, access logs), this process's own output,
and every label of every metric Ray's metrics agent exports must contain none of them. The
build half of the same check is ``tests/datapipe/test_no_phi_in_logs.py``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from healthnav.serving.config import ServeAppConfig

pytestmark = pytest.mark.slow
KEYS_ENV = "HEALTHNAV_TEST_PHI_KEYS"
KEY = "sk-test-phi"

PHI = {
    "name": "Oluwaseun Kristiansen-Abara",
    "first": "Oluwaseun",
    "relative": "Thaddeus",
    "email": "seun.kabara@example.net",
    "phone": "503-555-0162",
    "ssn": "078-05-1120",
    "dob": "07/19/1931",
    "address": "4417 Larkspur Bend",
    "town": "Tillamook",
    "mrn": "MRN 99120457",
}


def _leaks(text: str) -> list[str]:
    """Kinds of planted identifier found (never the values: they would end up in this test's log)."""
    lower = text.lower()
    return [kind for kind, value in PHI.items() if value.lower() in lower]


def _metric_labels(port: int, deadline: float) -> str:
    """The label sets of all exported metrics, once healthnav's request counter is among them."""
    text = ""
    while time.monotonic() < deadline:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.HTTPError:
            text = ""
        if "healthnav_requests_total" in text and 'route="assessment"' in text:
            break
        time.sleep(0.5)  # polling a condition with a deadline: the agent exports every few seconds
    else:
        pytest.fail("the metrics agent never exported healthnav_requests_total for the assessment")
    return "\n".join(line[line.index("{") :] for line in text.splitlines() if "{" in line and line[0] != "#")


def test_identifiers_sent_to_the_api_reach_no_log_line_and_no_metric_label(
    tiny_model: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import ray

    from healthnav.serving.app import build_app
    from healthnav.serving.local import local_serve

    os.environ[KEYS_ENV] = KEY
    cfg = ServeAppConfig.model_validate(
        {
            "modelName": "tiny",
            "baseModel": f"file://{tiny_model}",
            "engine": "transformers",
            "numGpusPerReplica": 0,
            "numCpusPerReplica": 0.5,
            "apiKeysEnv": KEYS_ENV,
            "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
            "limits": {"maxTokens": 16, "maxPromptChars": 4000, "requestTimeoutSeconds": 120},
        }
    )
    symptoms = (
        f"This is {PHI['name']}, DOB {PHI['dob']}, SSN {PHI['ssn']}, {PHI['mrn']}. My husband "
        f"{PHI['relative']} found me with crushing chest pain and sweating at {PHI['address']}, "
        f"{PHI['town']}. Call {PHI['phone']} or {PHI['email']}."
    )
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        with local_serve(build_app(cfg.to_dict())) as url:
            node = ray._private.worker._global_node
            logs_dir, metrics_port = Path(node.get_logs_dir_path()), node.metrics_export_port
            answers = [
                httpx.post(
                    f"{url}/v1/assessments",
                    json={"symptoms": symptoms, "age": 93, "sex": "female", "history": symptoms},
                    headers=headers,
                    timeout=120,
                ),
                httpx.post(  # a 400 whose error names the field, never its value
                    f"{url}/v1/assessments",
                    json={"symptoms": symptoms, "age": -1},
                    headers=headers,
                    timeout=120,
                ),
                httpx.post(
                    f"{url}/v1/chat/completions",
                    json={
                        "model": "tiny",
                        "messages": [{"role": "user", "content": symptoms}],
                        "max_tokens": 8,
                    },
                    headers=headers,
                    timeout=120,
                ),
            ]
            assert [a.status_code for a in answers] == [200, 400, 200], [a.text[:200] for a in answers]
            assert answers[0].json()["risk_level"] == "emergency"  # the request was really processed
            labels = _metric_labels(metrics_port, time.monotonic() + 90)
            assert 'route="assessment"' in labels and _leaks(labels) == []
            log_files = [p for p in logs_dir.rglob("*") if p.is_file()]
            assert any("serve" in p.name for p in log_files), (
                "no Serve logs found: the check would be vacuous"
            )
            leaks = {p.name: _leaks(p.read_text(errors="replace")) for p in log_files}
            assert {k: v for k, v in leaks.items() if v} == {}
    finally:
        os.environ.pop(KEYS_ENV, None)
    out, err = capfd.readouterr()
    assert _leaks(out + err) == []
