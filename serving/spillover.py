"""Spillover: answer from an OpenAI-compatible upstream when the local model cannot, or by weight.

Why: the app must never wait on a cold or saturated model, and moving its traffic from the paid
API to a fine-tune should be gradual. When ``ServeAppConfig.spillover`` is set, a request goes
upstream instead of being answered locally when

* the weighted coin says so (``weight`` percent of requests, decided before any local work:
  the migration path, from 100% API down to 0%);
* the local attempt is refused with a 503 the configuration lists in ``when``: admission full
  (``saturated``, the :data:`~healthnav.serving.messages.OVERLOADED` answer) or the engine unable
  to generate (``notReady``, :class:`~healthnav.serving.engine.EngineUnavailable`).

Only refusals that happen before anything was sent to the client spill (a non-streaming answer,
or a stream's first chunk), so a client never sees two models in one answer. Requests are
validated and the model name resolved locally first, so a bad request is the same 4xx whoever
would have answered it.

Chat completions and completions are forwarded as the client's request (its known fields; the
``model`` replaced by the upstream's) and the upstream's answer is relayed as it came, a stream
byte for byte, with :data:`SERVED_BY_HEADER` and :data:`REASON_HEADER`. The assessment API asks
:meth:`Spillover.complete_text` for the text of its trained prompt instead, so its red-flag layer,
parsing and disclaimer apply to an upstream answer exactly as to a local one.

An upstream that cannot be reached or fails answers 502, one that is too slow 504, both in the
API's error shape (never 500). Each forwarded request increments
``healthnav_spillover_requests_total{reason}``; neither the metric nor the log carries request
text, and the upstream's key is read from the environment variable the config names (a Secret in
Kubernetes), never from the config itself.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal, Protocol

import httpx
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from healthnav.serving import openai_api as oa
from healthnav.serving.config import SpilloverConfig
from healthnav.serving.errors import ApiError

log = logging.getLogger("healthnav.serving")

SERVED_BY_HEADER = "x-healthnav-served-by"
"""Response header naming who generated the answer (``upstream`` on spilled requests)."""
REASON_HEADER = "x-healthnav-spillover-reason"
"""Response header saying why a request was spilled: not_ready, saturated or weight."""

Reason = Literal["not_ready", "saturated", "weight"]
"""Why a request went upstream; also the metric's only label."""

UPSTREAM_PATHS = {"chat": "chat/completions", "completion": "completions"}
"""The upstream endpoint for each OpenAI route, relative to its base URL."""
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
CONNECT_TIMEOUT_S = 10.0

_REFUSALS: dict[str, tuple[str, Reason]] = {
    "overloaded": ("saturated", "saturated"),
    "engine_unavailable": ("notReady", "not_ready"),
}
"""ApiError code of a local refusal → (the ``when`` entry enabling its spill, the reason reported)."""

_WHY = {
    "not_ready": "the local model is not ready",
    "saturated": "the local model is at capacity",
    "weight": "this request was routed to the spillover upstream (spillover weight)",
}


class Counter(Protocol):
    """What :class:`Spillover` uses of a metric counter (Ray's, or a test's)."""

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None: ...


def weighted(weight: int, draw: float) -> bool:
    """Whether a request whose uniform draw in [0, 1) is ``draw`` goes upstream at ``weight`` percent."""
    return draw * 100 < weight


def reason_for(exc: ApiError, when: Sequence[str]) -> Reason | None:
    """Why a local refusal may be answered upstream instead, or None (not a spillable 503, or its
    reason not listed in ``when``)."""
    if exc.status != 503 or exc.code not in _REFUSALS:
        return None
    enabled_by, reason = _REFUSALS[exc.code]
    return reason if enabled_by in when else None


def spill_headers(reason: Reason) -> dict[str, str]:
    return {SERVED_BY_HEADER: "upstream", REASON_HEADER: reason}


NOT_FORWARDED = frozenset({*oa.UNSUPPORTED, "parallel_tool_calls"})
"""Fields left out of a forwarded request: what validation let through of them asks for nothing
(``tool_choice: none``, ``top_k: -1``, …), and vLLM's names or a tool option without tools could
make a strict upstream refuse the whole request."""


def request_body(req: BaseModel, model: str) -> dict[str, Any]:
    """The client's request as the upstream gets it: the fields it set, with the upstream's model."""
    body = req.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude=set(NOT_FORWARDED))
    return {**body, "model": model}


def upstream_error(reason: Reason, exc: httpx.HTTPError | None = None, status: int | None = None) -> ApiError:
    """The client's answer when the upstream fails: 504 for a timeout, 502 otherwise, never 500."""
    why = _WHY[reason]
    if isinstance(exc, httpx.TimeoutException):
        return ApiError(
            504,
            f"{why}, and the spillover upstream did not answer in time",
            type="timeout_error",
            code="upstream_timeout",
            headers=spill_headers(reason),
        )
    if status is None:
        problem = "could not be reached"
    elif status == 200:
        problem = "sent an answer that is not an OpenAI response"
    else:
        problem = f"answered HTTP {status}"
    return ApiError(
        502,
        f"{why}, and the spillover upstream {problem}",
        type="upstream_error",
        code="upstream_unavailable",
        headers=spill_headers(reason),
    )


class Spillover:
    """One replica's link to the upstream: when to use it, and the forwarding itself."""

    def __init__(
        self, cfg: SpilloverConfig, counter: Counter, draw: Callable[[], float] = random.random
    ) -> None:
        self.cfg = cfg
        self.counter = counter
        self.draw = draw
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        """The HTTP client, made on first use (inside the replica's event loop), key from the env."""
        if self._client is None:
            key = os.environ.get(self.cfg.api_key_env, "").strip() if self.cfg.api_key_env else ""
            self._client = httpx.AsyncClient(
                base_url=self.cfg.base_url.rstrip("/") + "/",
                headers={"Authorization": f"Bearer {key}"} if key else {},
                timeout=httpx.Timeout(self.cfg.timeout_seconds, connect=CONNECT_TIMEOUT_S),
                follow_redirects=False,  # the key must not follow a redirect elsewhere
            )
        return self._client

    def choose(self) -> Reason | None:
        """``weight`` before any local work: whether this request goes upstream regardless."""
        return "weight" if weighted(self.cfg.weight, self.draw()) else None

    def reason_for(self, exc: ApiError) -> Reason | None:
        return reason_for(exc, self.cfg.when)

    async def forward(self, route: str, req: BaseModel, stream: bool, reason: Reason) -> Any:
        """Answer an OpenAI request (``route`` chat or completion) with the upstream's response."""
        self.counter.inc(1, tags={"reason": reason})
        body = request_body(req, self.cfg.model)
        client = self.client()
        try:
            request = client.build_request("POST", UPSTREAM_PATHS[route], json=body)
            response = await client.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise self._failed(reason, exc) from exc
        if response.status_code != 200:
            await response.aclose()
            raise self._failed(reason, status=response.status_code)
        if not stream:
            try:
                data = response.json()
            except ValueError as exc:
                raise self._failed(reason, status=response.status_code) from exc
            return JSONResponse(data, headers=spill_headers(reason))
        return StreamingResponse(
            relay(response, reason),
            media_type="text/event-stream",
            headers={**STREAM_HEADERS, **spill_headers(reason)},
        )

    async def complete_text(self, prompt: str, max_tokens: int, reason: Reason) -> tuple[str, bool]:
        """(text, cut off by max_tokens) of one greedy chat turn on ``prompt``: the assessment API's
        generation when it spills; its own parsing and red-flag layer then apply."""
        req = oa.ChatCompletionRequest(
            model=self.cfg.model,
            messages=[oa.ChatMessage(role="user", content=prompt)],
            max_tokens=max_tokens,
            temperature=0.0,
        )
        self.counter.inc(1, tags={"reason": reason})
        body = request_body(req, self.cfg.model)
        try:
            response = await self.client().post(UPSTREAM_PATHS["chat"], json=body)
        except httpx.HTTPError as exc:
            raise self._failed(reason, exc) from exc
        if response.status_code != 200:
            raise self._failed(reason, status=response.status_code)
        try:
            choice = response.json()["choices"][0]
            return str(choice["message"]["content"] or ""), choice.get("finish_reason") == "length"
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise self._failed(reason, status=response.status_code) from exc

    @staticmethod
    def _failed(reason: Reason, exc: httpx.HTTPError | None = None, status: int | None = None) -> ApiError:
        log.warning(
            "spillover upstream failed (reason %s): %s", reason, type(exc).__name__ if exc else status
        )
        return upstream_error(reason, exc, status)


async def relay(response: httpx.Response, reason: Reason) -> AsyncIterator[bytes]:
    """The upstream's event stream as it comes; a break mid-stream ends it with an error event."""
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        log.warning("spillover upstream stream broke (reason %s): %s", reason, type(exc).__name__)
        error = upstream_error(reason, exc)
        yield oa.sse(oa.error_body(error.message, type=error.type, code=error.code)).encode()
    finally:
        await response.aclose()
