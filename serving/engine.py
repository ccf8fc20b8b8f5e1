"""Engine abstraction: the rest of the server does not care whether vLLM or transformers generates.

An engine turns a rendered prompt into a stream of :class:`Chunk` objects, optionally through a
named LoRA adapter it was given a local path for. The transformers engine (CPU or GPU, with peft
adapters) is what tests and laptops run; :mod:`healthnav.serving.vllm_engine` is the production
GPU engine with continuous batching. Heavy libraries are imported inside the engines.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from healthnav.serving.config import ServeAppConfig

log = logging.getLogger(__name__)


class EngineRequestError(ValueError):
    """A request the engine cannot serve as asked (too long a prompt, ...): the client's fault, a 4xx."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


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


@dataclass
class Chunk:
    """One streamed piece of a generation; the last one carries ``finish_reason``."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: dict[str, Any] | None = None
    logprobs: dict[str, Any] | None = None
    """On the last chunk when requested: OpenAI legacy ``logprobs`` for (prompt +) completion."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "error": self.error,
            "logprobs": self.logprobs,
        }


class Engine(Protocol):
    """What the LLM deployment needs from an engine."""

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


def local_model_path(uri: str, cache_root: str | Path) -> str:
    """A path or hub id transformers/vLLM can open; s3:// models are mirrored to local disk first."""
    from healthnav.datapipe.storage import StorageURI, download_dir, is_hub_id

    if is_hub_id(uri):
        return uri
    u = StorageURI.parse(uri)
    if u.scheme == "file":
        return str(u.local_path)
    dest = Path(cache_root) / "models" / u.bucket / u.key.strip("/")
    download_dir(u, dest)
    return str(dest)


class _QueueStreamer:
    """A transformers streamer that hands token ids to an asyncio queue from the generate thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[list[int] | None]) -> None:
        self.loop, self.queue, self._first = loop, queue, True

    def put(self, value: Any) -> None:
        if self._first:  # generate() first puts the prompt ids
            self._first = False
            return
        self.loop.call_soon_threadsafe(self.queue.put_nowait, [int(t) for t in value.reshape(-1).tolist()])

    def end(self) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)


class TransformersEngine:
    """transformers + peft: one generation at a time per replica, adapters switched per request.

    peft keeps several adapters in one model and activates one per call, so a replica serves
    the base model and any loaded adapter without reloading weights. Generations are serialised
    by a lock (adapter selection is model-global state); vLLM is the engine for throughput.
    """

    def __init__(self, config: ServeAppConfig) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = local_model_path(config.base_model, Path(config.adapter_cache_dir).parent)
        self.device = "cuda" if torch.cuda.is_available() and config.num_gpus_per_replica > 0 else "cpu"
        dtype = {
            "auto": "auto",
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
            "float32": torch.float32,
        }[config.engine_args.dtype]
        if self.device == "cpu" and dtype == "auto":
            dtype = torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        positions = (
            getattr(self.model.config, "max_position_embeddings", None) or config.engine_args.max_model_len
        )
        self.max_model_len = min(config.engine_args.max_model_len, int(positions))
        self._adapters: set[str] = set()
        self._lock = threading.Lock()
        self.waiting = 0

    async def add_adapter(self, name: str, path: Path) -> None:
        await asyncio.to_thread(self._add_adapter_sync, name, path)

    def _add_adapter_sync(self, name: str, path: Path) -> None:
        from peft import PeftModel

        with self._lock:
            if name in self._adapters:
                return
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(path), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name).eval()
            self._adapters.add(name)

    async def remove_adapter(self, name: str) -> None:
        def _remove() -> None:
            with self._lock:
                if name in self._adapters:
                    self.model.delete_adapter(name)
                    self._adapters.discard(name)

        await asyncio.to_thread(_remove)

    async def generate(
        self, prompt: str, sampling: Sampling, *, adapter: str | None, request_id: str
    ) -> AsyncIterator[Chunk]:
        if adapter is not None and adapter not in self._adapters:
            raise EngineRequestError(f"adapter {adapter!r} is not loaded on this replica", param="model")
        ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        prompt_tokens = int(ids.shape[-1])
        check_context(prompt_tokens, sampling.max_tokens, self.max_model_len)
        if sampling.max_tokens == 0:  # echo only: score the prompt, generate nothing
            scores = None
            if sampling.logprobs is not None:
                scores = await asyncio.to_thread(self.score, ids[0].tolist(), [], "", sampling, adapter)
            yield Chunk("", "length", prompt_tokens, 0, logprobs=scores)
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[int] | None] = asyncio.Queue()
        cancel = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=self._generate_sync,
            args=(ids, sampling, adapter, _QueueStreamer(loop, queue), cancel, failure),
            name=f"generate-{request_id}",
            daemon=True,
        )
        self.waiting += 1
        thread.start()
        generated: list[int] = []
        emitted = ""
        sent = 0  # characters of completion text handed out, after stop-string cutting
        stopper = StopBuffer(sampling.stop)
        try:
            while (item := await queue.get()) is not None:
                generated.extend(t for t in item if t != self.tokenizer.eos_token_id)
                text = self.tokenizer.decode(generated, skip_special_tokens=True)
                if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for more
                    continue
                delta, emitted = text[len(emitted) :], text
                out = stopper.feed(delta)
                if out:
                    sent += len(out)
                    yield Chunk(out, prompt_tokens=prompt_tokens, completion_tokens=len(generated))
                if stopper.stopped:
                    cancel.set()
                    break
            if failure:
                raise failure[0]
            tail = stopper.flush()
            finish = "stop" if stopper.stopped or len(generated) < sampling.max_tokens else "length"
            scores = None
            if sampling.logprobs is not None:
                thread.join()  # the model is shared: score once generation has let go of it
                kept = emitted[: sent + len(tail)]
                scores = await asyncio.to_thread(
                    self.score, ids[0].tolist(), generated, kept, sampling, adapter
                )
            yield Chunk(tail, finish, prompt_tokens, len(generated), logprobs=scores)
        finally:
            cancel.set()  # client went away or we stopped: free the replica quickly

    def _generate_sync(
        self,
        ids: Any,
        sampling: Sampling,
        adapter: str | None,
        streamer: _QueueStreamer,
        cancel: threading.Event,
        failure: list[BaseException],
    ) -> None:

        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return cancel.is_set()

        try:
            with self._lock:
                self.waiting -= 1
                if cancel.is_set():
                    return
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed)
                greedy = sampling.temperature <= 0
                kwargs: dict[str, Any] = {
                    "max_new_tokens": sampling.max_tokens,
                    "do_sample": not greedy,
                    "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                    "eos_token_id": self.tokenizer.eos_token_id,
                    "streamer": streamer,
                    "stopping_criteria": StoppingCriteriaList([_Cancel()]),
                }
                if not greedy:
                    kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
                started = time.perf_counter()
                with self._adapter_context(adapter), torch.inference_mode():
                    self.model.generate(input_ids=ids.to(self.device), **kwargs)
                log.debug("generation took %.3fs", time.perf_counter() - started)
        except BaseException as exc:  # surfaced to the caller by generate()
            failure.append(exc)
            streamer.end()

    def _adapter_context(self, adapter: str | None) -> Any:
        """Activate ``adapter`` (or bypass all adapters for the base model); call under the lock."""
        import contextlib

        if not self._adapters:
            return contextlib.nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    def score(
        self,
        prompt_ids: list[int],
        completion_ids: list[int],
        completion_text: str,
        sampling: Sampling,
        adapter: str | None,
    ) -> dict[str, Any]:
        """OpenAI ``logprobs`` from one forward pass over prompt + completion (blocking).

        Log-probabilities are the model's raw distribution (before temperature or top-p), as
        OpenAI and vLLM report them: position ``t`` scores token ``t`` given tokens ``< t``, so
        the first prompt token has none. Completion tokens after a stop-string cut are dropped.
        """
        import torch

        top_n = sampling.logprobs or 0
        full = prompt_ids + completion_ids
        with self._lock, self._adapter_context(adapter), torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([full], device=self.device)).logits[0]
        logprobs = torch.log_softmax(logits.float(), dim=-1)[:-1].cpu()
        targets = torch.tensor(full[1:], dtype=torch.long)
        chosen: list[float | None] = [None, *logprobs.gather(1, targets.unsqueeze(1)).squeeze(1).tolist()]
        alternatives: list[list[tuple[int, float]]] = [[]]
        if top_n:
            values, indices = logprobs.topk(top_n, dim=-1)
            alternatives += [
                list(zip(i, v, strict=True)) for i, v in zip(indices.tolist(), values.tolist(), strict=True)
            ]
        else:
            alternatives += [[] for _ in full[1:]]

        def decode(x: list[int]) -> str:
            return self.tokenizer.decode(x, skip_special_tokens=True)

        def part(ids: list[int], base: int) -> TokenScores:
            texts = incremental_token_texts(decode, ids)
            tops: list[dict[str, float] | None] = []
            for i, tok in enumerate(texts):
                value = chosen[base + i]
                if value is None:
                    tops.append(None)
                    continue
                window = ids[max(0, i - 8) : i]
                prefix = decode(window)
                alts = {decode([*window, a])[len(prefix) :]: v for a, v in alternatives[base + i]}
                tops.append({**alts, tok: value})
            return TokenScores(texts, chosen[base : base + len(ids)], tops)

        prompt = part(prompt_ids, 0) if sampling.echo else None
        completion = part(completion_ids, len(prompt_ids))
        keep, offset = 0, 0
        for tok in completion.tokens:  # drop tokens that start after a stop-string cut
            if offset >= len(completion_text):
                break
            keep, offset = keep + 1, offset + len(tok)
        completion = TokenScores(completion.tokens[:keep], completion.logprobs[:keep], completion.top[:keep])
        prompt_chars = len(decode(prompt_ids)) if sampling.echo else 0
        return openai_logprobs(prompt, completion, completion_offset=prompt_chars, top_n=top_n)


class EchoEngine:
    """A zero-cost engine for load tests and benchmarks: isolates the serving layer's own overhead.

    It emits ``max_tokens`` one-word chunks, optionally ``token_delay_s`` apart, so latency and
    throughput measured through HTTP are the serving layer, Ray Serve and SSE, not a model. With
    ``identify`` the first chunk is ``"<pid>:<adapter> "`` instead, so a test can see which
    replica process generated a request (adapter affinity).
    """

    def __init__(self, config: ServeAppConfig, token_delay_s: float = 0.0, identify: bool = False) -> None:
        self.max_model_len = config.engine_args.max_model_len
        self.token_delay_s = token_delay_s
        self.identify = identify

    async def add_adapter(self, name: str, path: Path) -> None:
        return None

    async def remove_adapter(self, name: str) -> None:
        return None

    async def generate(
        self, prompt: str, sampling: Sampling, *, adapter: str | None, request_id: str
    ) -> AsyncIterator[Chunk]:
        prompt_tokens = len(prompt.split())
        if sampling.logprobs is not None:
            raise EngineRequestError("the echo benchmark engine has no log-probabilities", param="logprobs")
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


def make_engine(
    config: ServeAppConfig, factory: str | None = None, options: dict[str, Any] | None = None
) -> Engine:
    """The engine the configuration names; vLLM is imported only when chosen.

    ``factory`` ("module:Class") overrides the choice for benchmarks and load tests only; it is
    not part of ServeAppConfig, so a ModelServe can never select it.
    """
    if factory:
        import importlib

        module, _, name = factory.partition(":")
        return getattr(importlib.import_module(module), name)(config, **(options or {}))
    if config.engine == "transformers":
        return TransformersEngine(config)
    from healthnav.serving.vllm_engine import VLLMEngine

    return VLLMEngine(config)
