"""Server-sent events: a running generation written as OpenAI's streaming chunks.

One event per coalesced chunk (see :meth:`~healthnav.serving.replica.Replica.generate_here`),
``chat.completion.chunk`` or ``text_completion`` objects, an optional usage chunk, then
``[DONE]``. A client that goes away cancels the generation, which frees its admission slot.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from healthnav.serving import openai_api as oa
from healthnav.serving.engine import Chunk
from healthnav.serving.messages import GenerationError
from healthnav.serving.replica import GenerationStream

CLIENT_CLOSED = 499
"""The status a request is counted under when the client left before the end (nginx's convention)."""


@dataclass(frozen=True)
class StreamFormat:
    """How one stream's events look: its id, model name, creation time and object type."""

    rid: str
    model: str
    chat: bool
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def object(self) -> str:
        return "chat.completion.chunk" if self.chat else "text_completion"

    def opening(self) -> str | None:
        """The first event of a chat stream announces the assistant's role."""
        return (
            oa.sse(oa.chat_chunk(self.rid, self.model, self.created, role="assistant", content=""))
            if self.chat
            else None
        )

    def chunk(self, c: Chunk) -> str:
        if self.chat:
            return oa.sse(
                oa.chat_chunk(self.rid, self.model, self.created, content=c.text, finish=c.finish_reason)
            )
        return oa.sse(oa.completion_chunk(self.rid, self.model, self.created, c.text, c.finish_reason))

    def usage(self, last: Chunk) -> str:
        return oa.sse(
            oa.usage_chunk(
                self.rid, self.model, self.created, self.object, last.prompt_tokens, last.completion_tokens
            )
        )


def error_event(err: GenerationError) -> str:
    return oa.sse(oa.error_body(err.message, type="server_error"))


DONE = oa.sse("[DONE]")


async def sse_events(
    fmt: StreamFormat,
    stream: GenerationStream,
    first: Chunk,
    *,
    include_usage: bool,
    on_end: Callable[[int, Chunk], None],
) -> AsyncIterator[str]:
    """The events of one stream; ``on_end(status, last chunk)`` runs however the stream ends."""
    last = first
    status = 200
    done = False
    try:
        if (opening := fmt.opening()) is not None:
            yield opening
        if first.is_visible:
            yield fmt.chunk(first)
        async for item in stream:
            if isinstance(item, GenerationError):
                status = 500
                yield error_event(item)
                include_usage = False
                break
            last = item
            if item.is_visible:
                yield fmt.chunk(item)
        if include_usage:
            yield fmt.usage(last)
        yield DONE
        done = True
    finally:
        if not done:
            stream.cancel()
            status = CLIENT_CLOSED if status == 200 else status
        on_end(status, last)
