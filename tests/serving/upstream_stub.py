"""A small OpenAI-compatible server on 127.0.0.1 that stands in for the paid internet API.

Spillover forwards to an upstream such as api.openai.com, which this machine cannot reach (and
tests must not pay for); this server speaks the same wire format for the two routes spillover
uses (chat completions and completions, JSON and server-sent events), and records what it was
sent so tests can check the forwarded model, body and Bearer key. ``mode`` switches it to failing
(HTTP 500) or slow answers.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from healthnav.devenv.processes import free_port

ANSWER = (
    "Risk level: self-care\n"
    "Assessment: This sounds like a mild muscle strain that should settle.\n"
    "Recommendations:\n"
    "- Rest and take a simple painkiller if needed."
)
"""What the stand-in generates: the assessment format, so an assessment parses it as a model's."""
STREAM_PARTS = ("Hello", " from", " the", " upstream")


@dataclass
class StubUpstream:
    url: str
    """Base URL of its OpenAI API (``…/v1``), as a ModelServe's spillover.upstream.baseURL."""
    seen: list[dict[str, Any]] = field(default_factory=list)
    """One entry per request: path, authorization header and JSON body."""
    mode: str = "ok"
    """ok, fail (HTTP 500) or slow (answers after ``delay_s``)."""
    delay_s: float = 5.0

    def requests_to(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.seen if r["path"] == path]


def _events(chat: bool, model: str) -> AsyncIterator[str]:
    async def gen() -> AsyncIterator[str]:
        for i, part in enumerate(STREAM_PARTS):
            last = i == len(STREAM_PARTS) - 1
            choice: dict[str, Any] = (
                {"index": 0, "delta": {"content": part}, "finish_reason": "stop" if last else None}
                if chat
                else {"index": 0, "text": part, "logprobs": None, "finish_reason": "stop" if last else None}
            )
            obj = "chat.completion.chunk" if chat else "text_completion"
            chunk = {"id": "up-1", "object": obj, "created": 1, "model": model, "choices": [choice]}
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return gen()


def _app(stub: StubUpstream) -> FastAPI:
    app = FastAPI()

    async def answer(request: Request, chat: bool) -> Response:
        body = await request.json()
        stub.seen.append(
            {"path": request.url.path, "authorization": request.headers.get("authorization"), "body": body}
        )
        if stub.mode == "fail":
            return JSONResponse({"error": {"message": "upstream exploded", "type": "server_error"}}, 500)
        if stub.mode == "slow":
            await asyncio.sleep(stub.delay_s)
        model = body["model"]
        if body.get("stream"):
            return StreamingResponse(_events(chat, model), media_type="text/event-stream")
        usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
        if chat:
            message = {"role": "assistant", "content": ANSWER}
            choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": "stop"}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": ANSWER, "logprobs": None, "finish_reason": "stop"}
            obj = "text_completion"
        return JSONResponse(
            {"id": "up-1", "object": obj, "created": 1, "model": model, "choices": [choice], "usage": usage}
        )

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await answer(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await answer(request, chat=False)

    return app


@contextmanager
def stub_upstream(start_timeout_s: float = 30.0) -> Iterator[StubUpstream]:
    """Run the stand-in on a free port of 127.0.0.1 in a thread; stop it on exit."""
    import uvicorn

    port = free_port()
    stub = StubUpstream(url=f"http://127.0.0.1:{port}/v1")
    server = uvicorn.Server(uvicorn.Config(_app(stub), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="stub-upstream", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the stand-in upstream did not start")
        time.sleep(0.05)  # polling a condition with a deadline
    try:
        yield stub
    finally:
        server.should_exit = True
        thread.join(10)
