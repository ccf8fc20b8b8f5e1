"""Spillover through real Ray Serve on the CPU: who answers, with which headers, and what is counted.

The upstream is :mod:`upstream_stub`, a small OpenAI-compatible server on 127.0.0.1 that stands
in for the internet API (the paid API cannot be reached from this machine, and tests must not
pay for it). The engine is the zero-cost EchoEngine, so each case is decided by configuration:
one Ray instance runs four applications side by side,

* ``/``: spillover at weight 0, one slow generation at a time and no queue (saturation on demand);
* ``/down``: an engine that cannot generate (as one still loading or dead), spillover at weight 0;
* ``/all``: spillover at weight 100;
* ``/off``: the unavailable engine without spillover (today's behaviour).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from upstream_stub import ANSWER, STREAM_PARTS, StubUpstream, stub_upstream

from healthnav.serving.assessment import DISCLAIMER
from healthnav.serving.config import ServeAppConfig
from healthnav.serving.engines import ECHO_FACTORY
from healthnav.serving.spillover import REASON_HEADER, SERVED_BY_HEADER

KEY_ENV = "HEALTHNAV_TEST_SPILLOVER_KEY"
UPSTREAM_KEY = "sk-upstream-never-in-config"
UPSTREAM_MODEL = "gpt-up"
CHAT = {
    "model": "base",
    "messages": [{"role": "user", "content": "What helps a sore throat?"}],
    "max_tokens": 4,
}
RAY_LABELS = {"deployment", "replica", "application", "route"}
"""Labels Ray Serve adds to every metric a replica records (Ray's own are capitalised, and
OpenTelemetry's start with otel_)."""
EMERGENCY = {"symptoms": "Crushing chest pain spreading to my left arm, sweating", "age": 58, "sex": "male"}


@dataclass
class Stack:
    url: str
    upstream: StubUpstream
    metrics_port: int

    def post(self, path: str, body: object) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, timeout=60)


def _app(upstream_url: str, spill_weight: int | None, **engine_options: Any) -> Any:
    from healthnav.serving.app import compose_app

    cfg: dict[str, Any] = {
        "modelName": "base",
        "baseModel": "file:///unused",
        "engine": "transformers",
        "numGpusPerReplica": 0,
        "numCpusPerReplica": 0.25,
        "apiKeysEnv": None,
        "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
        "limits": {
            "maxTokens": 64,
            "maxOngoingRequests": 1,
            "maxQueuedRequests": 0,
            "requestTimeoutSeconds": 60,
        },
    }
    if spill_weight is not None:
        cfg["spillover"] = {
            "baseURL": upstream_url,
            "model": UPSTREAM_MODEL,
            "apiKeyEnv": KEY_ENV,
            "weight": spill_weight,
        }
    return compose_app(
        ServeAppConfig.model_validate(cfg), engine_factory=ECHO_FACTORY, engine_options=engine_options
    )


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    import ray
    from ray import serve

    from healthnav.serving.local import local_serve

    os.environ[KEY_ENV] = UPSTREAM_KEY  # replicas inherit the environment Ray starts with (a Secret in k8s)
    try:
        with stub_upstream() as upstream:
            up = upstream.url
            with local_serve(_app(up, 0, token_delay_s=0.2), name="spill") as url:
                for name, app in (
                    ("down", _app(up, 0, unavailable=True)),
                    ("all", _app(up, 100)),
                    ("off", _app(up, None, unavailable=True)),
                ):
                    serve.run(app, name=name, route_prefix=f"/{name}", blocking=False)
                port = ray._private.worker._global_node.metrics_export_port
                yield Stack(url, upstream, port)
    finally:
        os.environ.pop(KEY_ENV, None)


@pytest.fixture
def upstream(stack: Stack) -> Iterator[StubUpstream]:
    stack.upstream.seen.clear()
    stack.upstream.mode = "ok"
    yield stack.upstream
    stack.upstream.mode = "ok"


def _spilled(resp: httpx.Response, reason: str) -> bool:
    return resp.headers.get(SERVED_BY_HEADER) == "upstream" and resp.headers.get(REASON_HEADER) == reason


def _events(lines: Iterator[str]) -> list[str]:
    return [line[6:] for line in lines if line.startswith("data: ")]


# --- off, and weight 0 ------------------------------------------------------------------------------


def test_without_spillover_a_model_that_cannot_answer_is_a_503_as_before(
    stack: Stack, upstream: StubUpstream
) -> None:
    resp = stack.post("/off/v1/chat/completions", CHAT)
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "engine_unavailable", resp.text
    assert SERVED_BY_HEADER not in resp.headers and REASON_HEADER not in resp.headers
    assert upstream.seen == []


def test_at_weight_0_a_healthy_model_answers_every_request_itself(
    stack: Stack, upstream: StubUpstream
) -> None:
    for _ in range(10):
        resp = stack.post("/v1/chat/completions", {**CHAT, "max_tokens": 1})
        assert resp.status_code == 200, resp.text
        assert SERVED_BY_HEADER not in resp.headers
        assert resp.json()["choices"][0]["message"]["content"].startswith("ok")
    assert upstream.seen == []


# --- not ready, saturated, weight 100 ---------------------------------------------------------------


def test_a_model_that_is_not_ready_is_answered_upstream_with_headers(
    stack: Stack, upstream: StubUpstream
) -> None:
    resp = stack.post("/down/v1/chat/completions", CHAT)
    assert resp.status_code == 200, resp.text
    assert _spilled(resp, "not_ready"), dict(resp.headers)
    body = resp.json()
    assert body["choices"][0]["message"]["content"] == ANSWER and body["model"] == UPSTREAM_MODEL
    (seen,) = upstream.requests_to("/v1/chat/completions")
    assert seen["authorization"] == f"Bearer {UPSTREAM_KEY}"  # the key from the pod's environment
    assert seen["body"]["messages"] == CHAT["messages"] and seen["body"]["model"] == UPSTREAM_MODEL


def test_a_stream_from_the_upstream_passes_through(stack: Stack, upstream: StubUpstream) -> None:
    body = {"model": "base", "prompt": "Say hello.", "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{stack.url}/down/v1/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200 and _spilled(resp, "not_ready")
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = _events(resp.iter_lines())
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == "".join(STREAM_PARTS)
    # and the official client reads a spilled chat stream like any other
    client = openai.OpenAI(base_url=f"{stack.url}/down/v1", api_key="unused", max_retries=0, timeout=60)
    chunks = client.chat.completions.create(**CHAT, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(STREAM_PARTS)


def test_a_saturated_model_spills_instead_of_answering_503(stack: Stack, upstream: StubUpstream) -> None:
    long = {"model": "base", "prompt": "Tell me everything.", "max_tokens": 64, "stream": True}
    answers: list[httpx.Response] = []
    with httpx.stream("POST", f"{stack.url}/v1/completions", json=long, timeout=60) as busy:
        assert busy.status_code == 200 and SERVED_BY_HEADER not in busy.headers
        # it holds the one slot (no queue) for 64 x 0.2 s unless we hang up (so the line iterator is
        # kept: dropping it closes the stream); a request sent right after its first event may
        # still find the slot free under Ray, so ask until one is refused
        lines = busy.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(_spilled(a, "saturated") for a in answers):
            answers.append(stack.post("/v1/chat/completions", {**CHAT, "max_tokens": 1}))
        assert any(line.startswith("data: ") for line in lines)  # the local stream went on
    assert all(a.status_code == 200 for a in answers), [(a.status_code, a.text[:100]) for a in answers]
    spilled = [a for a in answers if _spilled(a, "saturated")]
    assert spilled, "no request was refused by admission while the slot was held"
    assert spilled[0].json()["choices"][0]["message"]["content"] == ANSWER


def test_at_weight_100_every_request_goes_upstream(stack: Stack, upstream: StubUpstream) -> None:
    for _ in range(5):
        resp = stack.post("/all/v1/chat/completions", CHAT)
        assert resp.status_code == 200 and _spilled(resp, "weight"), resp.text
    resp = stack.post("/all/v1/completions", {"model": "base", "prompt": "hi", "max_tokens": 4})
    assert _spilled(resp, "weight") and resp.json()["choices"][0]["text"] == ANSWER
    assert len(upstream.seen) == 6


# --- assessments ------------------------------------------------------------------------------------


def test_an_upstream_assessment_still_escalates_red_flags_and_carries_the_disclaimer(
    stack: Stack, upstream: StubUpstream
) -> None:
    # the stand-in answers "self-care" whatever it is asked: the red-flag layer must override it
    resp = stack.post("/all/v1/assessments", EMERGENCY)
    assert resp.status_code == 200 and _spilled(resp, "weight"), resp.text
    body = resp.json()
    assert body["risk_level"] == "emergency" and body["escalated"] is True
    assert [f["id"] for f in body["red_flags"]] == ["acute_coronary_syndrome"]
    assert "emergency" in body["recommendations"][0].lower()
    assert body["disclaimer"] == DISCLAIMER and body["model"] == UPSTREAM_MODEL

    calm = stack.post("/down/v1/assessments", {"symptoms": "a stiff neck after sleeping badly", "age": 30})
    assert calm.status_code == 200 and _spilled(calm, "not_ready"), calm.text
    body = calm.json()
    assert body["model_output_parsed"] is True and body["risk_level"] == "self-care"
    assert body["red_flags"] == [] and body["disclaimer"] == DISCLAIMER
    # the upstream was asked with the trained assessment prompt, greedily
    assert all(r["body"]["temperature"] == 0 for r in upstream.requests_to("/v1/chat/completions"))


# --- upstream failures ------------------------------------------------------------------------------


def test_a_failing_upstream_is_a_clear_502_and_an_emergency_is_still_told_to_get_help(
    stack: Stack, upstream: StubUpstream
) -> None:
    upstream.mode = "fail"
    resp = stack.post("/down/v1/chat/completions", CHAT)
    assert resp.status_code == 502, resp.text
    error = resp.json()["error"]
    assert (
        error["code"] == "upstream_unavailable" and "spillover upstream answered HTTP 500" in error["message"]
    )
    assert resp.headers[SERVED_BY_HEADER] == "upstream"
    assessed = stack.post("/down/v1/assessments", EMERGENCY)
    assert assessed.status_code == 200 and assessed.json()["risk_level"] == "emergency", assessed.text


# --- the metric -------------------------------------------------------------------------------------


def test_spilled_requests_are_counted_by_reason_only(stack: Stack, upstream: StubUpstream) -> None:
    stack.post("/all/v1/chat/completions", CHAT)
    stack.post("/down/v1/chat/completions", CHAT)
    wanted = {"weight", "not_ready"}
    deadline = time.monotonic() + 90
    lines: list[str] = []
    while time.monotonic() < deadline:
        try:
            text = httpx.get(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5).text
        except httpx.HTTPError:
            text = ""
        lines = [ln for ln in text.splitlines() if "healthnav_spillover_requests_total{" in ln]
        if all(any(f'reason="{r}"' in ln for ln in lines) for r in wanted):
            break
        time.sleep(0.5)  # polling a condition with a deadline: the agent exports every few seconds
    else:
        pytest.fail(f"the metrics agent never exported the spillover counter for {wanted}: {lines}")
    for line in lines:  # Ray adds its own labels (Component, SessionName, ...); ours is reason only
        keys = {kv.split("=")[0] for kv in line[line.index("{") + 1 : line.index("}")].split(",")}
        ours = {k for k in keys if k[:1].islower() and not k.startswith("otel_")} - RAY_LABELS
        assert ours == {"reason"}, line
