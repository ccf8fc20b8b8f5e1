"""The transformers engine: transformers + peft, on the CPU or a GPU (tests, laptops, small models).

peft keeps several adapters in one model and activates one per call, so a replica serves
the base model and any loaded adapter without reloading weights. Generations are serialised
by a lock (adapter selection is model-global state); vLLM is the engine for throughput.
torch and transformers are imported inside the engine, never at module level. Output
constraints (``response_format``, the assessment format) are applied with lm-format-enforcer
(:mod:`~healthnav.serving.engines.constraints`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthnav.contracts.models import (
    attach_adapter,
    load_causal_lm,
    load_tokenizer,
    materialize,
    torch_dtype,
)
from healthnav.serving.config import ServeAppConfig
from healthnav.serving.engine import (
    Chunk,
    EngineRequestError,
    Sampling,
    StopBuffer,
    TokenScores,
    check_context,
    incremental_token_texts,
    openai_logprobs,
    scores_in_text,
)
from healthnav.serving.engines.constraints import Constrainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchCompletion:
    """One prompt's answer from :meth:`TransformersEngine.generate_greedy_batch`."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    """``stop`` (the model ended it) or ``length`` (``max_new_tokens`` reached)."""


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
    """transformers + peft: one generation at a time per replica, adapters switched per request."""

    def __init__(self, config: ServeAppConfig) -> None:
        import torch

        path = materialize(config.base_model, cache=Path(config.adapter_cache_dir).parent)
        self.device = "cuda" if torch.cuda.is_available() and config.num_gpus_per_replica > 0 else "cpu"
        self.tokenizer = load_tokenizer(path)
        dtype = torch_dtype(config.engine_args.dtype, self.device)
        self.model: Any = load_causal_lm(path, dtype=dtype, device=self.device).eval()
        positions = (
            getattr(self.model.config, "max_position_embeddings", None) or config.engine_args.max_model_len
        )
        self.max_model_len = min(config.engine_args.max_model_len, int(positions))
        self._adapters: set[str] = set()
        self._lock = threading.Lock()
        self.waiting = 0
        self.constrainer = Constrainer(self.tokenizer)

    async def add_adapter(self, name: str, path: Path) -> None:
        await asyncio.to_thread(self._add_adapter_sync, name, path)

    def _add_adapter_sync(self, name: str, path: Path) -> None:
        with self._lock:
            if name in self._adapters:
                return
            self.model = attach_adapter(self.model, path, name).eval()
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
        allowed = None
        if sampling.constrained:  # JSON schema or the assessment format (lm-format-enforcer)
            allowed = await asyncio.to_thread(
                self.constrainer.prefix_allowed_tokens_fn, sampling, prompt_tokens
            )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[int] | None] = asyncio.Queue()
        cancel = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=self._generate_sync,
            args=(ids, sampling, adapter, _QueueStreamer(loop, queue), cancel, failure, allowed),
            name=f"generate-{request_id}",
            daemon=True,
        )
        self.waiting += 1
        thread.start()
        generated: list[int] = []
        ended_on_eos = False  # scored like any generated token, though it adds no text
        emitted = ""
        sent = 0  # characters of completion text handed out, after stop-string cutting
        stopper = StopBuffer(sampling.stop)
        try:
            while (item := await queue.get()) is not None:
                ended_on_eos = ended_on_eos or self.tokenizer.eos_token_id in item
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
                scored = [*generated, self.tokenizer.eos_token_id] if ended_on_eos else generated
                scores = await asyncio.to_thread(
                    self.score, ids[0].tolist(), scored, kept, sampling, adapter, ended_on_eos
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
        allowed: Any = None,
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
                if allowed is not None:
                    kwargs["prefix_allowed_tokens_fn"] = allowed
                if not greedy:
                    kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
                started = time.perf_counter()
                with self._adapter_context(adapter), torch.inference_mode():
                    self.model.generate(input_ids=ids.to(self.device), **kwargs)
                log.debug("generation took %.3fs", time.perf_counter() - started)
        except BaseException as exc:  # surfaced to the caller by generate()
            failure.append(exc)
            streamer.end()

    def generate_greedy_batch(
        self, prompts: Sequence[str], max_new_tokens: int, *, adapter: str | None
    ) -> list[BatchCompletion]:
        """Greedy, unconstrained completions of several prompts in one left-padded ``generate``.

        For offline evaluation, where a 2-core CPU spends most of each decoding step on overhead
        that a batch of eight shares: several times the throughput of one request at a time. A
        serving replica never calls it (requests stream one by one). Callers sort prompts by
        length so the padding is small; greedy tokens can differ from the unbatched ones only
        where two logits tie within float rounding.
        """
        import torch

        if adapter is not None and adapter not in self._adapters:
            raise EngineRequestError(f"adapter {adapter!r} is not loaded on this replica", param="model")
        encoded = [self.tokenizer(p)["input_ids"] for p in prompts]
        for ids in encoded:
            check_context(len(ids), max_new_tokens, self.max_model_len)
        pad = self.tokenizer.pad_token_id or self.tokenizer.eos_token_id
        width = max(len(ids) for ids in encoded)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
        with self._lock, self._adapter_context(adapter), torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=self.tokenizer.eos_token_id,
            )
        completions = []
        for ids, row in zip(encoded, out[:, width:].tolist(), strict=True):
            eos = self.tokenizer.eos_token_id
            ended = eos in row
            kept = row[: row.index(eos)] if ended else row
            completions.append(
                BatchCompletion(
                    text=self.tokenizer.decode(kept, skip_special_tokens=True),
                    prompt_tokens=len(ids),
                    completion_tokens=len(kept),
                    finish_reason="stop" if ended else "length",
                )
            )
        return completions

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
        ended_on_eos: bool = False,
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
        completion = scores_in_text(
            part(completion_ids, len(prompt_ids)), len(completion_text), ended_on_eos=ended_on_eos
        )
        prompt_chars = len(decode(prompt_ids)) if sampling.echo else 0
        return openai_logprobs(prompt, completion, completion_offset=prompt_chars, top_n=top_n)
