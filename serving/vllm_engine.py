"""The production engine: vLLM's asynchronous engine with multi-LoRA (GPU only).

vLLM batches concurrent requests continuously and applies a different LoRA adapter to each
request in the same batch (``LoRARequest``), which is what makes one GPU serve the base model
and several fine-tunes at once. ``max_loras`` bounds adapters resident on the GPU; vLLM keeps
more in CPU memory and swaps them itself, so "unloading" here only forgets our id mapping.

vLLM is imported lazily: it needs CUDA and is not installed in CPU images or test runs.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from healthnav.serving.config import ServeAppConfig
from healthnav.serving.engine import Chunk, EngineRequestError, Sampling, check_context, local_model_path


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
    """``SamplingParams`` keyword arguments (OpenAI semantics map one to one)."""
    kwargs: dict[str, Any] = {
        "n": 1,
        "max_tokens": sampling.max_tokens,
        "temperature": max(0.0, sampling.temperature),
        "top_p": sampling.top_p,
        "stop": list(sampling.stop) or None,
        "seed": sampling.seed,
    }
    return kwargs


class VLLMEngine:
    """Wraps ``vllm.AsyncLLMEngine``; streams deltas of vLLM's cumulative outputs."""

    def __init__(self, config: ServeAppConfig) -> None:
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        path = local_model_path(config.base_model, Path(config.adapter_cache_dir).parent)
        self.engine: Any = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**engine_kwargs(config, path)))
        self.max_model_len = config.engine_args.max_model_len
        self._lora_ids: dict[str, int] = {}
        self._paths: dict[str, str] = {}
        self._next_id = itertools.count(1)
        self._tokenizer: Any = None

    async def add_adapter(self, name: str, path: Path) -> None:
        from vllm.lora.request import LoRARequest

        if name not in self._lora_ids:
            self._lora_ids[name] = next(self._next_id)
            self._paths[name] = str(path)
        await self.engine.add_lora(LoRARequest(name, self._lora_ids[name], str(path)))

    async def remove_adapter(self, name: str) -> None:
        lora_id = self._lora_ids.pop(name, None)
        self._paths.pop(name, None)
        if lora_id is not None and hasattr(self.engine, "remove_lora"):
            await self.engine.remove_lora(lora_id)

    async def _count_tokens(self, prompt: str) -> int:
        if self._tokenizer is None:
            self._tokenizer = await self.engine.get_tokenizer()
        return len(self._tokenizer.encode(prompt))

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
        prompt_tokens = await self._count_tokens(prompt)
        check_context(prompt_tokens, sampling.max_tokens, self.max_model_len)
        params = SamplingParams(**sampling_kwargs(sampling))
        emitted = ""
        finished = False
        try:
            async for out in self.engine.generate(prompt, params, request_id, lora_request=lora):
                completion = out.outputs[0]
                delta, emitted = completion.text[len(emitted) :], completion.text
                finished = bool(out.finished)
                reason = completion.finish_reason if finished else None
                if delta or finished:
                    yield Chunk(delta, reason, prompt_tokens, len(completion.token_ids))
        finally:
            if not finished:  # the client disconnected: stop spending GPU time on it
                await self.engine.abort(request_id)
