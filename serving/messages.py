"""What crosses the Ray handle when one replica forwards a request to another: typed, picklable values.

A replica that receives a request for an adapter it does not hold forwards it to a replica
that does (see :mod:`healthnav.serving.replica`); the request, the streamed chunks and the
final completion travel as these frozen dataclasses (and :class:`~healthnav.serving.engine.Chunk`),
pickled by Ray once each. A refusal travels as a :class:`GenerationError` value rather than an
exception: Ray would wrap a raised exception in its own error type, and a refusal (overload,
an adapter that cannot load, a prompt too long) is an answer, not a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from healthnav.serving.engine import Chunk, EngineRequestError, EngineUnavailable, Sampling

RETRY_AFTER_S = 2
"""Seconds an overloaded replica asks clients to wait (the ``Retry-After`` header)."""


@dataclass(frozen=True)
class GenerateRequest:
    """One generation: the rendered prompt, how to sample, and which adapter (None: the base model)."""

    prompt: str
    sampling: Sampling
    adapter: str | None = None
    adapter_uri: str | None = None
    """Where the adapter's files are, so whichever replica runs it can load it."""


@dataclass(frozen=True)
class GenerationError:
    """A generation refused or failed, as OpenAI's error shape will tell the client."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None

    @classmethod
    def from_engine(cls, exc: EngineRequestError | EngineUnavailable) -> GenerationError:
        if isinstance(exc, EngineUnavailable):
            return cls(503, exc.message, type="engine_unavailable", code="engine_unavailable")
        return cls(exc.status, exc.message, param=exc.param)


OVERLOADED = GenerationError(
    503,
    f"the model is at capacity; retry after {RETRY_AFTER_S} s",
    type="overloaded_error",
    code="overloaded",
)
"""What a replica answers when :class:`~healthnav.serving.admission.Admission` refuses a request."""


@dataclass(frozen=True)
class Completion:
    """A whole generation, for a non-streaming request."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    ttft: float | None
    """Seconds from admission to the first chunk (None when nothing was generated)."""
    logprobs: dict[str, Any] | None = None

    @classmethod
    def from_chunks(cls, text: str, last: Chunk, ttft: float | None) -> Completion:
        return cls(text, last.finish_reason, last.prompt_tokens, last.completion_tokens, ttft, last.logprobs)


EMPTY_CHUNK = Chunk("", "stop")
"""What a generation that produced nothing at all stands for."""
