"""The echo engine: zero cost, for load tests and benchmarks of the serving layer itself."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from healthnav.serving.config import ServeAppConfig
from healthnav.serving.engine import Chunk, EngineRequestError, EngineUnavailable, Sampling, check_context


class EchoEngine:
    """A zero-cost engine for load tests and benchmarks: isolates the serving layer's own overhead.

    It emits ``max_tokens`` one-word chunks, optionally ``token_delay_s`` apart, so latency and
    throughput measured through HTTP are the serving layer, Ray Serve and SSE, not a model. With
    ``identify`` the first chunk is ``"<pid>:<adapter> "`` instead, so a test can see which
    replica process generated a request (adapter affinity). It refuses what it cannot fake
    (log-probabilities, a JSON ``response_format``) and ignores the assessment format's
    ``regex``: its words never parse, so an assessment gets the server's conservative fallback.
    With ``unavailable`` every generation fails as a dead or still-loading engine does
    (:class:`~healthnav.serving.engine.EngineUnavailable`), for tests of what the server then does.
    """

    def __init__(
        self,
        config: ServeAppConfig,
        token_delay_s: float = 0.0,
        identify: bool = False,
        unavailable: bool = False,
    ) -> None:
        self.max_model_len = config.engine_args.max_model_len
        self.token_delay_s = token_delay_s
        self.identify = identify
        self.unavailable = unavailable

    async def add_adapter(self, name: str, path: Path) -> None:
        return None

    async def remove_adapter(self, name: str) -> None:
        return None

    async def generate(
        self, prompt: str, sampling: Sampling, *, adapter: str | None, request_id: str
    ) -> AsyncIterator[Chunk]:
        prompt_tokens = len(prompt.split())
        if self.unavailable:
            raise EngineUnavailable("the echo engine is set up as unavailable (not loaded)")
        if sampling.logprobs is not None:
            raise EngineRequestError("the echo benchmark engine has no log-probabilities", param="logprobs")
        if sampling.json_schema is not None:
            raise EngineRequestError("the echo benchmark engine cannot produce JSON", param="response_format")
        check_context(prompt_tokens, sampling.max_tokens, self.max_model_len)
        if sampling.max_tokens == 0:
            yield Chunk("", "length", prompt_tokens, 0)
            return
        for i in range(1, sampling.max_tokens + 1):
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            last = i == sampling.max_tokens
            text = f"{os.getpid()}:{adapter or '-'} " if self.identify and i == 1 else "ok "
            yield Chunk(text, "length" if last else None, prompt_tokens, i)
