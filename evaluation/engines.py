"""What the evaluator asks a model: generate an answer (timed), and score option continuations.

Two engines with one interface, so the same scoring runs on a model in this process and on a
deployed endpoint (the model as users see it, through the same HTTP path and server):

* :class:`LocalEngine` — transformers + peft on the GPU or CPU, greedy decoding.
* :class:`EndpointEngine` — any OpenAI-compatible ``/v1/completions`` (the healthnav server,
  vLLM, ...) through the ``openai`` client. Log-likelihoods need ``echo`` + ``logprobs``; a
  server without them makes :meth:`EndpointEngine.loglikelihood` raise
  :class:`LoglikelihoodUnsupported` and the runner falls back to scoring the generated letter.

Log-likelihood follows lm-evaluation-harness: encode ``context + continuation`` as a whole,
take the tokens after ``len(encode(context))`` as the continuation, and sum their
log-probabilities given everything before them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class EngineError(RuntimeError):
    """A request to the model failed (timeout, connection, server error); the item is skipped."""


class LoglikelihoodUnsupported(EngineError):
    """The engine cannot return prompt log-probabilities."""


@dataclass(frozen=True)
class Generation:
    text: str
    ttft_s: float | None
    """Seconds from sending the request to the first generated token."""
    total_s: float
    prompt_tokens: int
    completion_tokens: int


class Engine(Protocol):
    name: str
    kind: str
    """``local`` or ``endpoint`` (decides how cost per query is estimated)."""

    def generate(self, prompt: str, max_new_tokens: int) -> Generation: ...

    def loglikelihood(self, context: str, continuations: Sequence[str]) -> list[float]: ...


def split_continuation(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) the lm-evaluation-harness way.

    Trailing whitespace of the context moves to the continuation first, so that a context
    ending in a space does not tokenize differently from the same text inside the whole.
    """
    n_spaces = len(context) - len(context.rstrip(" "))
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer(context + continuation).input_ids
    ctx = tokenizer(context).input_ids
    return whole[: len(ctx)], whole[len(ctx) :]


class LocalEngine:
    """A causal LM (and optional LoRA adapter) loaded in this process."""

    kind = "local"

    def __init__(
        self,
        model_dir: str | Path,
        adapter_dir: str | Path | None = None,
        *,
        device: str | None = None,
        name: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        source = (
            adapter_dir
            if adapter_dir and (Path(adapter_dir) / "tokenizer_config.json").is_file()
            else model_dir
        )
        self.tokenizer = AutoTokenizer.from_pretrained(str(source))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
        if adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter_dir))
        self.model = model.to(self.device).eval()
        self.name = name or (Path(adapter_dir).name if adapter_dir else Path(model_dir).name)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def generate(self, prompt: str, max_new_tokens: int) -> Generation:
        from transformers.generation.streamers import BaseStreamer

        torch = self._torch

        class _FirstToken(BaseStreamer):
            """generate() hands the prompt to put() first, then each new token as it is chosen."""

            def __init__(self) -> None:
                self.calls = 0
                self.first: float | None = None

            def put(self, value: Any) -> None:
                self.calls += 1
                if self.calls == 2:
                    self.first = time.perf_counter()

            def end(self) -> None:
                pass

        enc = self.tokenizer(prompt, return_tensors="pt").to(self.device)
        timer = _FirstToken()
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                streamer=timer,
            )
        total = time.perf_counter() - start
        new = out[0, enc["input_ids"].shape[1] :]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return Generation(
            text=text.strip(),
            ttft_s=(timer.first - start) if timer.first else None,
            total_s=total,
            prompt_tokens=int(enc["input_ids"].shape[1]),
            completion_tokens=int(new.shape[0]),
        )

    def loglikelihood(self, context: str, continuations: Sequence[str]) -> list[float]:
        torch = self._torch
        rows = [split_continuation(self.tokenizer, context, c) for c in continuations]
        inputs = [(ctx + cont)[:-1] for ctx, cont in rows]
        width = max(len(x) for x in inputs)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(inputs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(inputs), width), dtype=torch.long)
        for i, row in enumerate(inputs):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        with torch.inference_mode():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        scores = []
        for i, (ctx, cont) in enumerate(rows):
            if not cont:
                raise ValueError(f"continuation {continuations[i]!r} is empty after tokenization")
            start = len(ctx) - 1  # logits at position p predict token p + 1
            positions = torch.arange(start, start + len(cont))
            scores.append(float(logprobs[i, positions, torch.tensor(cont)].sum()))
        return scores


class EndpointEngine:
    """A served model behind an OpenAI-compatible ``/v1/completions``."""

    kind = "endpoint"

    def __init__(
        self, endpoint: str, model: str, *, timeout_s: float = 60.0, api_key: str | None = None
    ) -> None:
        from openai import OpenAI

        base = endpoint.rstrip("/")
        if not base.endswith("/v1"):
            base += "/v1"
        self.name = model
        self.model = model
        self.endpoint = base
        self._stream_usage = True
        self.client = OpenAI(
            base_url=base,
            api_key=api_key or os.environ.get("HNAV_API_KEY") or os.environ.get("OPENAI_API_KEY") or "none",
            timeout=timeout_s,
            max_retries=1,
        )

    def _wrap(self, exc: Exception) -> EngineError:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return EngineError(f"{self.endpoint}: request timed out")
        if isinstance(exc, openai.APIConnectionError):
            return EngineError(f"{self.endpoint}: cannot connect ({exc.__cause__ or exc})")
        if isinstance(exc, openai.APIStatusError):
            return EngineError(f"{self.endpoint}: HTTP {exc.status_code}: {str(exc.message)[:200]}")
        return EngineError(f"{self.endpoint}: {type(exc).__name__}: {exc}")

    def generate(self, prompt: str, max_new_tokens: int) -> Generation:
        import openai

        extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if self._stream_usage else {}
        start = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        usage = None
        try:
            try:
                stream = self.client.completions.create(
                    model=self.model,
                    prompt=prompt,
                    max_tokens=max_new_tokens,
                    temperature=0.0,
                    stream=True,
                    **extra,
                )
            except openai.BadRequestError:
                if not extra:
                    raise
                self._stream_usage = False  # a server without stream_options; count tokens ourselves
                return self.generate(prompt, max_new_tokens)
            for chunk in stream:
                if chunk.choices and chunk.choices[0].text:
                    if first is None:
                        first = time.perf_counter()
                    parts.append(chunk.choices[0].text)
                if getattr(chunk, "usage", None):
                    usage = chunk.usage
        except openai.OpenAIError as exc:
            raise self._wrap(exc) from exc
        total = time.perf_counter() - start
        text = "".join(parts)
        from healthnav.evaluation.metrics import estimate_tokens

        return Generation(
            text=text.strip(),
            ttft_s=(first - start) if first else None,
            total_s=total,
            prompt_tokens=int(usage.prompt_tokens) if usage else estimate_tokens(prompt),
            completion_tokens=int(usage.completion_tokens) if usage else estimate_tokens(text),
        )

    def loglikelihood(self, context: str, continuations: Sequence[str]) -> list[float]:
        """Sum of the continuation's prompt log-probs via ``echo=True, logprobs=0, max_tokens=0``.

        ``max_tokens=0`` scores the prompt without generating (OpenAI legacy semantics, the
        healthnav server and vLLM). The continuation's tokens are those whose text starts at or
        after the end of the context once its trailing spaces are moved to the continuation,
        exactly the split :func:`split_continuation` makes in-process, so served and local
        scores agree.
        """
        import openai

        scores = []
        for cont in continuations:
            text = context + cont
            boundary = len(context.rstrip(" "))
            try:
                resp = self.client.completions.create(
                    model=self.model, prompt=text, max_tokens=0, temperature=0.0, echo=True, logprobs=0
                )
            except (openai.BadRequestError, openai.NotFoundError, openai.UnprocessableEntityError) as exc:
                raise LoglikelihoodUnsupported(
                    f"{self.endpoint} does not return prompt log-probabilities (echo+logprobs): "
                    f"HTTP {exc.status_code}"
                ) from exc
            except openai.OpenAIError as exc:
                raise self._wrap(exc) from exc
            lp = resp.choices[0].logprobs if resp.choices else None
            if lp is None or not lp.token_logprobs or not lp.text_offset:
                raise LoglikelihoodUnsupported(
                    f"{self.endpoint} returned no prompt log-probabilities for echo"
                )
            total = 0.0
            counted = 0
            for offset, value in zip(lp.text_offset, lp.token_logprobs, strict=False):
                if boundary <= offset < len(text) and value is not None:
                    total += float(value)
                    counted += 1
            if counted == 0:
                raise LoglikelihoodUnsupported(
                    f"{self.endpoint}: echo did not include the continuation tokens"
                )
            scores.append(total)
        return scores
