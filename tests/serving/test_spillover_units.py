"""Spillover without Ray: when a request goes upstream, and what forwarding answers.

The upstream is :mod:`upstream_stub`, a small OpenAI-compatible server on 127.0.0.1 standing in
for the internet API (which this machine cannot reach and tests must not pay for); an
unreachable upstream is a port nothing listens on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError
from upstream_stub import ANSWER, STREAM_PARTS, StubUpstream, stub_upstream

from healthnav.devenv.processes import free_port
from healthnav.serving import openai_api as oa
from healthnav.serving.config import ServeAppConfig, SpilloverConfig
from healthnav.serving.errors import ApiError, overloaded
from healthnav.serving.messages import GenerationError
from healthnav.serving.spillover import (
    REASON_HEADER,
    SERVED_BY_HEADER,
    Spillover,
    reason_for,
    request_body,
    weighted,
)

pytestmark = pytest.mark.unit
KEY_ENV = "HEALTHNAV_TEST_UPSTREAM_KEY"
UPSTREAM_KEY = "sk-upstream-test-key"


class FakeCounter:
    """Records increments the way Ray's Counter is called."""

    def __init__(self) -> None:
        self.counts: dict[str, float] = {}

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        assert tags is not None and set(tags) == {"reason"}  # reason is the only label
        self.counts[tags["reason"]] = self.counts.get(tags["reason"], 0) + value


@pytest.fixture(scope="module")
def upstream() -> Iterator[StubUpstream]:
    with stub_upstream() as stub:
        yield stub


@pytest.fixture
def stub(upstream: StubUpstream, monkeypatch: pytest.MonkeyPatch) -> StubUpstream:
    monkeypatch.setenv(KEY_ENV, UPSTREAM_KEY)
    upstream.seen.clear()
    upstream.mode = "ok"
    return upstream


def _spillover(url: str, **kw: Any) -> tuple[Spillover, FakeCounter]:
    cfg = SpilloverConfig.model_validate({"baseURL": url, "model": "gpt-up", "apiKeyEnv": KEY_ENV, **kw})
    counter = FakeCounter()
    return Spillover(cfg, counter), counter


def _chat(stream: bool = False) -> oa.ChatCompletionRequest:
    return oa.ChatCompletionRequest.model_validate(
        {
            "model": "triage",
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 8,
            "stream": stream,
        }
    )


# --- deciding ---------------------------------------------------------------------------------------


def test_the_weight_is_a_percentage_of_uniform_draws() -> None:
    assert not any(weighted(0, d / 100) for d in range(100))
    assert all(weighted(100, d / 100) for d in range(100))
    assert sum(weighted(30, d / 100) for d in range(100)) == 30


def test_only_refusals_the_config_lists_spill() -> None:
    both = ["notReady", "saturated"]
    unavailable = ApiError.from_generation(
        GenerationError(503, "engine died", type="engine_unavailable", code="engine_unavailable")
    )
    assert reason_for(overloaded(), both) == "saturated"
    assert reason_for(unavailable, both) == "not_ready"
    assert reason_for(overloaded(), ["notReady"]) is None
    assert reason_for(unavailable, ["saturated"]) is None
    assert reason_for(ApiError(400, "bad", param="messages"), both) is None  # the client's fault stays a 4xx
    assert reason_for(ApiError(503, "adapter registry unavailable"), both) is None


def test_the_server_config_accepts_https_or_this_host_only_and_validates_the_rest() -> None:
    ok = {"model": "gpt-up"}
    SpilloverConfig.model_validate({"baseURL": "https://api.openai.com/v1", **ok})
    SpilloverConfig.model_validate({"baseURL": "http://127.0.0.1:8080/v1", **ok})
    for bad in (
        {"baseURL": "http://api.openai.com/v1", **ok},  # the key would cross the network in clear
        {"baseURL": "https://api.openai.com/v1?x=1", **ok},
        {"baseURL": "https://api.openai.com/v1", **ok, "weight": 150},
        {"baseURL": "https://api.openai.com/v1", **ok, "when": ["sometimes"]},
        {"baseURL": "https://api.openai.com/v1", **ok, "when": ["saturated", "saturated"]},
    ):
        with pytest.raises(ValidationError):
            SpilloverConfig.model_validate(bad)
    assert ServeAppConfig(base_model="file:///m").spillover is None  # off by default


def test_the_forwarded_body_is_what_the_client_set_with_the_upstreams_model() -> None:
    body = request_body(_chat(), "gpt-up")
    assert body == {
        "model": "gpt-up",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 8,
        "stream": False,
    }
    # no-op values of options this server refuses otherwise are not passed on to a stricter API
    harmless = oa.ChatCompletionRequest.model_validate(
        {**body, "tool_choice": "none", "top_k": -1, "parallel_tool_calls": False, "seed": 7}
    )
    assert request_body(harmless, "gpt-up") == {**body, "seed": 7}


# --- forwarding -------------------------------------------------------------------------------------


def test_a_forwarded_request_gets_the_upstreams_answer_with_headers_and_is_counted(
    stub: StubUpstream,
) -> None:
    spill, counter = _spillover(stub.url)
    response = asyncio.run(spill.forward("chat", _chat(), False, "saturated"))
    assert response.status_code == 200
    assert response.headers[SERVED_BY_HEADER] == "upstream" and response.headers[REASON_HEADER] == "saturated"
    body = json.loads(response.body)
    assert body["choices"][0]["message"]["content"] == ANSWER and body["model"] == "gpt-up"
    (seen,) = stub.requests_to("/v1/chat/completions")
    assert seen["authorization"] == f"Bearer {UPSTREAM_KEY}" and seen["body"]["model"] == "gpt-up"
    assert counter.counts == {"saturated": 1}


def test_a_stream_passes_through_as_the_upstream_sent_it(stub: StubUpstream) -> None:
    spill, counter = _spillover(stub.url)

    async def go() -> tuple[Any, bytes]:
        response = await spill.forward(
            "completion", oa.CompletionRequest(model="m", prompt="hi", stream=True), True, "weight"
        )
        return response, b"".join([c async for c in response.body_iterator])

    response, raw = asyncio.run(go())
    assert response.media_type == "text/event-stream" and response.headers[REASON_HEADER] == "weight"
    events = [line[6:] for line in raw.decode().split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == "".join(STREAM_PARTS)
    assert counter.counts == {"weight": 1}


def test_an_assessment_gets_the_text_of_one_greedy_chat_turn(stub: StubUpstream) -> None:
    spill, _ = _spillover(stub.url)
    assert asyncio.run(spill.complete_text("the trained prompt", 64, "not_ready")) == (ANSWER, False)
    (seen,) = stub.requests_to("/v1/chat/completions")
    assert seen["body"]["messages"] == [{"role": "user", "content": "the trained prompt"}]
    assert seen["body"]["temperature"] == 0 and seen["body"]["max_tokens"] == 64


@pytest.mark.parametrize("stream", [False, True])
def test_an_unreachable_upstream_is_a_502_saying_so(stream: bool) -> None:
    spill, counter = _spillover(f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(ApiError) as err:
        asyncio.run(spill.forward("chat", _chat(stream), stream, "not_ready"))
    assert err.value.status == 502 and err.value.code == "upstream_unavailable"
    assert (
        err.value.message == "the local model is not ready, and the spillover upstream could not be reached"
    )
    assert err.value.headers[SERVED_BY_HEADER] == "upstream"
    assert counter.counts == {"not_ready": 1}


def test_a_failing_upstream_is_a_502_and_a_slow_one_a_504(stub: StubUpstream) -> None:
    spill, _ = _spillover(stub.url, timeoutSeconds=0.5)

    async def refusal(mode: str, call: Any) -> ApiError:
        stub.mode = mode
        with pytest.raises(ApiError) as err:
            await call
        return err.value

    async def go() -> list[ApiError]:  # one event loop, as in a replica: the client lives on it
        return [
            await refusal("fail", spill.forward("chat", _chat(), False, "saturated")),
            await refusal("fail", spill.complete_text("prompt", 8, "saturated")),
            await refusal("slow", spill.forward("chat", _chat(), False, "saturated")),
        ]

    failed, failed_text, slow = asyncio.run(go())
    assert failed.status == 502 and "answered HTTP 500" in failed.message
    assert failed_text.status == 502
    assert slow.status == 504 and "did not answer in time" in slow.message
