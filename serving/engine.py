"""The engine contract: what the serving layer (and the evaluator) ask of a model.

An engine turns a rendered prompt into a stream of :class:`Chunk` objects, optionally through a
named LoRA adapter it was given a local path for. This module holds only the contract and the
engine-neutral pieces every engine shares (sampling, stop strings, context checks, OpenAI
log-probabilities); the engines themselves live in :mod:`healthnav.serving.engines`, declared
once in its registry. Nothing heavy is imported here: the operator and the evaluator load it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from healthnav.contracts.errors import ConfigurationError, RetryableError


class EngineRequestError(ConfigurationError):
    """A request the engine cannot serve as asked (too long a prompt, ...): the client's fault, a 4xx."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


class EngineUnavailable(RetryableError):
    """The engine itself stopped (vLLM's engine core died): not the request's fault, a 503.

    The replica's health check fails with it too, so Ray Serve replaces the replica; the client is
    told to retry, and a retry lands on a healthy replica or on this one once it is back.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters shared by every engine (OpenAI semantics: temperature 0 is greedy)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None
    """Return each token's log-probability and the N most likely alternatives (None: don't)."""
    echo: bool = False
    """Score the prompt tokens too (OpenAI legacy ``echo``); ``max_tokens=0`` scores only them."""
    json_schema: dict[str, Any] | None = None
    """Constrain the output to JSON valid against this schema (:data:`ANY_JSON_OBJECT`: any object)."""
    regex: str | None = None
    """Constrain the output to a full match of this regular expression (the assessment format)."""

    def __post_init__(self) -> None:
        if self.json_schema is not None and self.regex is not None:
            raise ValueError("one output constraint at a time: json_schema or regex")

    @property
    def constrained(self) -> bool:
        return self.json_schema is not None or self.regex is not None


ANY_JSON_OBJECT: dict[str, Any] = {"type": "object"}
"""The ``json_schema`` of OpenAI's ``response_format: {"type": "json_object"}``: any JSON object."""


@dataclass
class Chunk:
    """One streamed piece of a generation; the last one carries ``finish_reason``.

    A plain dataclass: it crosses the Ray handle as it is when a replica forwards a request.
    """

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: dict[str, Any] | None = None
    """On the last chunk when requested: OpenAI legacy ``logprobs`` for (prompt +) completion."""

    def followed_by(self, later: Chunk) -> Chunk:
        """One chunk standing for this one then ``later``: text concatenated, the rest from ``later``."""
        return replace(later, text=self.text + later.text)

    @property
    def is_visible(self) -> bool:
        """Whether a client would see anything of it (text or the end of the generation)."""
        return bool(self.text or self.finish_reason)


class Engine(Protocol):
    """What the serving layer needs from an engine (vLLM, transformers, the echo benchmark engine)."""

    max_model_len: int

    async def add_adapter(self, name: str, path: Path) -> None: ...

    async def remove_adapter(self, name: str) -> None: ...

    def generate(
        self, prompt: str, sampling: Sampling, *, adapter: str | None, request_id: str
    ) -> AsyncIterator[Chunk]: ...


@dataclass
class StopBuffer:
    """Streams text while cutting at the first stop string, even one split across chunks.

    Text that could still be the start of a stop string is held back until the next chunk
    decides; what is emitted is never retracted.
    """

    stops: tuple[str, ...]
    _pending: str = ""
    stopped: bool = False
    _hold: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.stops = tuple(s for s in self.stops if s)
        self._hold = max((len(s) for s in self.stops), default=1) - 1

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        self._pending += text
        hits = [i for s in self.stops if (i := self._pending.find(s)) >= 0]
        if hits:
            self.stopped = True
            out, self._pending = self._pending[: min(hits)], ""
            return out
        if self._hold == 0:
            out, self._pending = self._pending, ""
            return out
        # keep the longest suffix that is a prefix of some stop string
        keep = 0
        for n in range(1, min(self._hold, len(self._pending)) + 1):
            tail = self._pending[-n:]
            if any(s.startswith(tail) for s in self.stops):
                keep = n
        out = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep :]
        return out

    def flush(self) -> str:
        out, self._pending = ("" if self.stopped else self._pending), ""
        return out


def check_context(prompt_tokens: int, max_tokens: int, max_model_len: int) -> None:
    """Refuse before generating when prompt plus completion cannot fit the context window."""
    if prompt_tokens + max_tokens > max_model_len:
        raise EngineRequestError(
            f"the prompt has {prompt_tokens} tokens; with max_tokens={max_tokens} that exceeds the "
            f"model's context of {max_model_len} tokens. Shorten the prompt or lower max_tokens.",
            param="max_tokens" if prompt_tokens < max_model_len else "messages",
        )


@dataclass
class TokenScores:
    """Per-token log-probabilities of one sequence, engine-neutral (what OpenAI ``logprobs`` shows).

    ``tokens[i]`` is the text token ``i`` adds to the decoded text, so the running sum of their
    lengths is each token's character offset; ``top[i]`` maps alternative token texts to their
    log-probabilities (``None`` where there is no prediction, e.g. the first prompt token).
    """

    tokens: list[str]
    logprobs: list[float | None]
    top: list[dict[str, float] | None]


def scores_in_text(scores: TokenScores, text_len: int, *, ended_on_eos: bool = False) -> TokenScores:
    """The generated tokens to report for a completion whose returned text is ``text_len`` long.

    Engines score every token they generated, including those of a stop string (cut from the
    text) and the EOS token. Tokens that start after a stop-string cut are dropped; the EOS that
    ended a generation (``ended_on_eos``: the last of ``scores``) is kept, with no text, as vLLM's
    OpenAI server reports it. lm-evaluation-harness relies on that: it scores an echoed prompt by
    asking for one generated token and dropping the last position, so a missing EOS would cost
    it the prompt's last token.

    >>> s = TokenScores(["Hi", "###", "</s>"], [-1.0, -2.0, -0.5], [None, None, None])
    >>> scores_in_text(s, 2).tokens                     # "###" was a stop string: it goes
    ['Hi']
    >>> s = TokenScores(["Hi", "</s>"], [-1.0, -0.5], [None, None])
    >>> scores_in_text(s, 2, ended_on_eos=True).tokens  # the EOS stays, adding no text
    ['Hi', '']
    """
    body = len(scores.tokens) - 1 if ended_on_eos else len(scores.tokens)
    keep, offset = 0, 0
    for tok in scores.tokens[:body]:
        if offset >= text_len:
            break
        keep, offset = keep + 1, offset + len(tok)
    out = TokenScores(scores.tokens[:keep], scores.logprobs[:keep], scores.top[:keep])
    if ended_on_eos and keep == body and scores.tokens:
        out.tokens.append("")
        out.logprobs.append(scores.logprobs[-1])
        out.top.append(
            {**(scores.top[-1] or {}), "": scores.logprobs[-1]} if scores.top[-1] is not None else None
        )
    return out


def incremental_token_texts(decode: Any, ids: list[int], window: int = 8) -> list[str]:
    """The text each token adds, decoding it after a few preceding tokens (as vLLM detokenizes).

    Decoding a token alone loses context (SentencePiece drops a leading space at the start of a
    decode; byte-level pieces of one character split across tokens), so each token's text is
    ``decode(prev + [tok])`` minus ``decode(prev)`` over a short window of predecessors. A token
    that ends inside a multi-byte character (its decode ends in U+FFFD) adds nothing yet; the
    token that completes the character adds all of it, as vLLM's detokenizer holds such bytes
    back. So the texts join to the decoded sequence and their running lengths are true offsets.
    """
    out: list[str] = []
    pending = 0  # the first token whose text is not handed out yet
    for i in range(len(ids)):
        start = max(0, pending - window)
        before = decode(ids[start:pending]) if pending > start else ""
        piece = decode(ids[start : i + 1])[len(before) :]
        if piece.endswith("\ufffd") and i < len(ids) - 1:
            out.append("")
            continue
        out.append(piece)
        pending = i + 1
    return out


def openai_logprobs(
    prompt: TokenScores | None, completion: TokenScores, *, completion_offset: int, top_n: int
) -> dict[str, Any]:
    """OpenAI legacy ``logprobs`` for the echoed prompt (if any) followed by the completion.

    Offsets are character positions in the returned ``text``: the prompt's tokens count from 0,
    the completion's from ``completion_offset`` (``len(prompt)`` when echoed, else 0). ``top_n=0``
    still reports the chosen token in ``top_logprobs``, as vLLM does.
    """
    tokens: list[str] = []
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    for part, offset in ((prompt, 0), (completion, completion_offset)):
        if part is None:
            continue
        for tok, value, top in zip(part.tokens, part.logprobs, part.top, strict=True):
            tokens.append(tok)
            values.append(value)
            offsets.append(offset)
            offset += len(tok)
            if top is None or value is None:
                tops.append(None)
            else:
                best = dict(sorted(top.items(), key=lambda kv: -kv[1])[:top_n])
                best.setdefault(tok, value)
                tops.append(best)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}
