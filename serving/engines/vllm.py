"""The production engine: vLLM's asynchronous engine with multi-LoRA (on GPUs).

vLLM batches concurrent requests continuously and applies a different LoRA adapter to each
request in the same batch (``LoRARequest``), which is what makes one GPU serve the base model
and several fine-tunes at once. ``max_loras`` bounds adapters resident on the GPU; vLLM keeps
more in CPU memory and swaps them itself; unloading an adapter here also removes it from vLLM.

vLLM is imported lazily: it is not in the CPU images or the project's virtualenv (its wheels pin
their own torch). The CPU build of vLLM runs this engine in tests: ``make test-vllm``.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from healthnav.contracts.models import materialize
from healthnav.serving.config import ServeAppConfig
from healthnav.serving.engine import (
    ANY_JSON_OBJECT,
    Chunk,
    EngineRequestError,
    EngineUnavailable,
    Sampling,
    TokenScores,
    check_context,
    incremental_token_texts,
    openai_logprobs,
    scores_in_text,
)


def engine_kwargs(config: ServeAppConfig, model_path: str) -> dict[str, Any]:
    """``AsyncEngineArgs`` keyword arguments for a configuration (pure, so it is unit-tested)."""
    ea = config.engine_args
    return {
        "model": model_path,
        "tokenizer": model_path,
        "dtype": ea.dtype,
        "max_model_len": ea.max_model_len,
        "gpu_memory_utilization": ea.gpu_memory_utilization,
        "enforce_eager": ea.enforce_eager,
        "enable_lora": True,
        "max_loras": ea.max_loras,
        "max_lora_rank": ea.max_lora_rank,
        "max_cpu_loras": max(ea.max_loras * 4, ea.max_loras),
        "tensor_parallel_size": max(1, int(config.num_gpus_per_replica)),
        "disable_log_stats": False,
    }


def sampling_kwargs(sampling: Sampling) -> dict[str, Any]:
    """``SamplingParams`` keyword arguments (OpenAI semantics map one to one).

    ``logprobs`` maps to vLLM's ``logprobs`` and, with ``echo``, to ``prompt_logprobs``. vLLM
    must generate at least one token, so echo with ``max_tokens=0`` generates one and
    :meth:`VLLMEngine.generate` discards it (what vLLM's own OpenAI server does).
    """
    kwargs: dict[str, Any] = {
        "n": 1,
        "max_tokens": max(1, sampling.max_tokens),
        "temperature": max(0.0, sampling.temperature),
        "top_p": sampling.top_p,
        "stop": list(sampling.stop) or None,
        "seed": sampling.seed,
    }
    if sampling.logprobs is not None:
        kwargs["logprobs"] = sampling.logprobs
        if sampling.echo:
            kwargs["prompt_logprobs"] = sampling.logprobs
    if (constraint := structured_outputs_kwargs(sampling)) is not None:
        kwargs["structured_outputs"] = constraint
    return kwargs


def structured_outputs_kwargs(sampling: Sampling) -> dict[str, Any] | None:
    """``StructuredOutputsParams`` keyword arguments for the sampling's output constraint, if any.

    ``response_format: json_object`` maps to vLLM's ``json_object``, a JSON schema to ``json``,
    the assessment format to ``regex``; vLLM's default backend (xgrammar) enforces them.
    """
    if sampling.regex is not None:
        return {"regex": sampling.regex}
    if sampling.json_schema is None:
        return None
    if sampling.json_schema == ANY_JSON_OBJECT:
        return {"json_object": True}
    return {"json": sampling.json_schema}


def vllm_token_scores(decode: Any, token_ids: list[int], entries: list[Any] | None) -> TokenScores:
    """vLLM's per-position ``{token_id: Logprob}`` dicts as engine-neutral :class:`TokenScores`.

    The chosen token's text comes from our incremental decode (so offsets match the text we
    return); alternatives use vLLM's ``decoded_token``. A ``None`` entry (the first prompt
    token) has no log-probability.
    """
    texts = incremental_token_texts(decode, token_ids)
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    for i, tid in enumerate(token_ids):
        entry = entries[i] if entries is not None and i < len(entries) else None
        if not entry or tid not in entry:
            values.append(None)
            tops.append(None)
            continue
        values.append(float(entry[tid].logprob))
        alts = {
            (lp.decoded_token if lp.decoded_token is not None else decode([alt])): float(lp.logprob)
            for alt, lp in entry.items()
            if alt != tid
        }
        tops.append({**alts, texts[i]: values[-1]})
    return TokenScores(texts, values, tops)


def _client_errors() -> tuple[type[BaseException], ...]:
    """What vLLM raises for a request it refuses (its validation errors; ValueError before 0.11)."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:
        return (ValueError,)
    return (ValueError, VLLMClientError)


def load_cpu_kernels() -> str:
    """Load the native kernels vLLM's CPU build runs on this CPU; the module's name.

    The build ships three (``_C`` for AVX-512 with bf16, ``_C_AVX512``, ``_C_AVX2``) and picks one
    by the CPU's instruction sets, as here: importing ``vllm._C`` on an AVX2-only CPU dies with
    SIGILL. The variants' libraries load under the module name ``_C``, so Python reports "does not
    define module export function" after loading them, which vLLM ignores too. Anything else (a
    missing libnuma, say) raises: the server image checks this at build time, not when a Ray
    worker first starts an engine.
    """
    import importlib

    import torch

    if torch.cpu._is_avx512_supported():
        name = "vllm._C" if torch.cpu._is_avx512_bf16_supported() else "vllm._C_AVX512"
    else:
        name = "vllm._C_AVX2"
    try:
        importlib.import_module(name)
    except ImportError as exc:
        if name == "vllm._C" or "does not define module export function" not in str(exc):
            raise
    return name


def _engine_dead(engine: Any, exc: BaseException) -> bool:
    """Whether ``exc`` means vLLM's engine core is gone (every later request would fail too)."""
    try:
        from vllm.v1.engine.exceptions import EngineDeadError
    except ImportError:
        EngineDeadError = ()  # type: ignore[assignment]  # older vLLM: no such class
    return isinstance(exc, EngineDeadError) or bool(getattr(engine, "errored", False))


DEAD_ENGINE_MESSAGE = "the model engine on this replica stopped; it is being restarted, retry shortly"


async def _chain(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield first
    async for item in rest:
        yield item


class VLLMEngine:
    """Wraps ``vllm.AsyncLLMEngine``; streams deltas of vLLM's cumulative outputs."""

    def __init__(self, config: ServeAppConfig) -> None:
        from vllm import AsyncEngineArgs, AsyncLLMEngine
        from vllm.usage.usage_lib import UsageContext

        path = materialize(config.base_model, cache=Path(config.adapter_cache_dir).parent)
        # vLLM sizes its batch (max_num_seqs, max_num_batched_tokens) by who runs it: its OpenAI
        # server's defaults, not the library fallback (128 sequences, 2048 tokens). On an H100/H200
        # that is 1024 sequences and 8192 tokens a step; without it healthnav would serve an
        # eighth of the concurrent streams `vllm serve` does (ray-project/ray#59681).
        self.engine: Any = AsyncLLMEngine.from_engine_args(
            AsyncEngineArgs(**engine_kwargs(config, path)), usage_context=UsageContext.OPENAI_API_SERVER
        )
        self.max_model_len = config.engine_args.max_model_len
        self._lora_ids: dict[str, int] = {}
        self._paths: dict[str, str] = {}
        self._next_id = itertools.count(1)
        self._tokenizer: Any = None

    async def add_adapter(self, name: str, path: Path) -> None:
        """Load an adapter into vLLM; only one that loaded is servable.

        vLLM validates an adapter (rank, target modules, weights) when it loads it: a failure
        here raises and leaves the engine healthy, whereas a request naming an adapter that
        cannot load fails inside the engine's step and kills the engine (and every request on
        the replica). So the name is recorded only after ``add_lora`` succeeded. vLLM keys
        adapters by id and skips one it holds, so a name loaded again from another path gets a new
        id (else the old weights would keep serving).
        """
        from vllm.lora.request import LoRARequest

        known = self._lora_ids.get(name)
        lora_id = known if known is not None and self._paths.get(name) == str(path) else next(self._next_id)
        await self.engine.add_lora(LoRARequest(name, lora_id, str(path)))
        self._lora_ids[name], self._paths[name] = lora_id, str(path)
        if known is not None and known != lora_id:
            await self.engine.remove_lora(known)

    async def remove_adapter(self, name: str) -> None:
        lora_id = self._lora_ids.pop(name, None)
        self._paths.pop(name, None)
        if lora_id is not None and hasattr(self.engine, "remove_lora"):
            await self.engine.remove_lora(lora_id)

    async def _encode(self, prompt: str) -> list[int]:
        """The prompt's token ids, from the engine's own tokenizer (so they are what vLLM would make).

        vLLM's ``get_tokenizer`` was a coroutine before the V1 engine and is a plain method since;
        both are accepted.
        """
        if self._tokenizer is None:
            tokenizer = self.engine.get_tokenizer()
            self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        return list(self._tokenizer.encode(prompt))

    async def generate(
        self, prompt: str, sampling: Sampling, *, adapter: str | None, request_id: str
    ) -> AsyncIterator[Chunk]:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        lora = None
        if adapter is not None:
            if adapter not in self._lora_ids:
                raise EngineRequestError(f"adapter {adapter!r} is not loaded on this replica", param="model")
            lora = LoRARequest(adapter, self._lora_ids[adapter], self._paths[adapter])
        ids = await self._encode(prompt)
        prompt_tokens = len(ids)
        check_context(prompt_tokens, sampling.max_tokens, self.max_model_len)
        score_only = sampling.max_tokens == 0
        if score_only and prompt_tokens >= self.max_model_len:  # vLLM scores while generating one token
            raise EngineRequestError(
                f"the prompt has {prompt_tokens} tokens; scoring it (echo with max_tokens=0) needs room "
                f"for one more in the model's context of {self.max_model_len} tokens. Shorten the prompt.",
                param="prompt",
            )
        # a TokensPrompt: the prompt is tokenized once (here, to check the context) and not again
        kwargs = sampling_kwargs(sampling)
        if "structured_outputs" in kwargs:
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(**kwargs["structured_outputs"])
        params = SamplingParams(**kwargs)
        emitted = ""
        finished = False
        engine_prompt = {"prompt_token_ids": ids, "prompt": prompt}
        outputs = self.engine.generate(engine_prompt, params, request_id, lora_request=lora)
        try:
            try:
                first = await anext(outputs)
            except StopAsyncIteration:
                return
            except Exception as exc:  # vLLM refuses a schema its grammar backend cannot compile
                if _engine_dead(self.engine, exc):
                    raise EngineUnavailable(DEAD_ENGINE_MESSAGE) from exc
                if not sampling.constrained or not isinstance(exc, _client_errors()):
                    raise
                raise EngineRequestError(
                    f"the requested output format cannot be enforced: {exc}", param="response_format"
                ) from exc
            async for out in _chain(first, outputs):
                completion = out.outputs[0]
                finished = bool(out.finished)
                if score_only:
                    if finished:
                        yield Chunk("", "length", prompt_tokens, 0, logprobs=self._logprobs(out, sampling))
                    continue
                delta, emitted = completion.text[len(emitted) :], completion.text
                reason = completion.finish_reason if finished else None
                if delta or finished:
                    scores = self._logprobs(out, sampling) if finished else None
                    yield Chunk(delta, reason, prompt_tokens, len(completion.token_ids), logprobs=scores)
        except Exception as exc:
            if isinstance(exc, EngineUnavailable | EngineRequestError) or not _engine_dead(self.engine, exc):
                raise
            raise EngineUnavailable(DEAD_ENGINE_MESSAGE) from exc
        finally:
            # closing vLLM's stream aborts its request at once (not when the stream is collected)
            await outputs.aclose()
            # the client disconnected: stop spending GPU time on it (a dead engine has nothing to stop)
            if not finished and not getattr(self.engine, "errored", False):
                await self.engine.abort(request_id)

    def shutdown(self) -> None:
        """Stop vLLM's engine-core and worker processes now, not when the engine is collected."""
        self.engine.shutdown()

    def _logprobs(self, out: Any, sampling: Sampling) -> dict[str, Any] | None:
        """OpenAI ``logprobs`` from a finished vLLM ``RequestOutput`` (None when not requested)."""
        if sampling.logprobs is None:
            return None

        def decode(ids: list[int]) -> str:
            return str(self._tokenizer.decode(ids, skip_special_tokens=True))

        prompt_ids = list(out.prompt_token_ids or [])
        prompt = vllm_token_scores(decode, prompt_ids, out.prompt_logprobs) if sampling.echo else None
        completion = out.outputs[0]
        if sampling.max_tokens == 0:
            ids, entries = [], []
        else:
            ids, entries = list(completion.token_ids), completion.logprobs
        eos = getattr(self._tokenizer, "eos_token_id", None)
        ended_on_eos = bool(ids) and ids[-1] == eos and completion.finish_reason == "stop"
        scores = scores_in_text(
            vllm_token_scores(decode, ids, entries), len(completion.text), ended_on_eos=ended_on_eos
        )
        offset = len(decode(prompt_ids)) if sampling.echo else 0
        return openai_logprobs(prompt, scores, completion_offset=offset, top_n=sampling.logprobs)
