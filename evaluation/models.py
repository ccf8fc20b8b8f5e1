"""How the evaluator asks a model its questions: generate an answer (timed), score option continuations.

There is one engine contract in healthnav, the serving layer's
(:class:`~healthnav.serving.engine.Engine`), and the evaluator uses it rather than a second
one: a model evaluated in this process runs in the very engine class that serves it
(:class:`InProcessModel`, over :class:`~healthnav.serving.engines.transformers.TransformersEngine`),
and a deployed one is reached through the same OpenAI-compatible API the server answers
(:class:`EndpointModel`). Both score multiple choice the same way, from the server's
``echo`` + ``logprobs`` prompt log-probabilities, so served and in-process scores agree by
construction. A server without them makes :meth:`EndpointModel.loglikelihood` raise
:class:`LoglikelihoodUnsupported` and the runner falls back to scoring the generated letter.

Log-likelihood follows lm-evaluation-harness: the continuation's tokens are those that start
at or after the end of the context once its trailing spaces move to the continuation, and
their log-probabilities given everything before them are summed.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from healthnav.contracts.errors import RetryableError

CANDIDATE_ADAPTER = "candidate"
"""The name the evaluated adapter is loaded under in an in-process engine."""


class ModelError(RetryableError):
    """A request to the model failed (timeout, connection, server error); the item is skipped."""


class LoglikelihoodUnsupported(ModelError):
    """The model cannot return prompt log-probabilities."""


@dataclass(frozen=True)
class Generation:
    text: str
    ttft_s: float | None
    """Seconds from sending the request to the first generated token."""
    total_s: float
    prompt_tokens: int
    completion_tokens: int
    batched: bool = False
    """Answered in a batch: ``total_s`` is the item's share of the batch, not a user's wait."""


class EvaluatedModel(Protocol):
    """A model under evaluation, as the runner sees it."""

    name: str
    kind: str
    """``local`` or ``endpoint`` (decides how cost per query is estimated)."""

    def generate(self, prompt: str, max_new_tokens: int) -> Generation: ...

    def loglikelihood(self, context: str, continuations: Sequence[str]) -> list[float]: ...


def continuation_logprob(
    text_offset: Sequence[int], token_logprobs: Sequence[float | None], context: str, text_len: int
) -> float | None:
    """Sum of the log-probabilities of the tokens that start inside the continuation (None: none do).

    The continuation starts where the context ends once its trailing spaces are moved to the
    continuation (a context ending in a space would otherwise tokenize differently).
    """
    boundary = len(context.rstrip(" "))
    values = [
        float(v)
        for offset, v in zip(text_offset, token_logprobs, strict=False)
        if boundary <= offset < text_len and v is not None
    ]
    return sum(values) if values else None


@runtime_checkable
class BatchGenerating(Protocol):
    """A model that answers several prompts greedily at once (in-process models only).

    Each :class:`Generation` of a batch carries the batch's seconds divided among its items
    and no time to first token: what the item cost, not what a user would wait.
    """

    def generate_batch(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]: ...


class InProcessModel:
    """A causal LM (and optional LoRA adapter) in this process, in the transformers serving engine."""

    kind = "local"

    def __init__(self, engine: Any, *, name: str, adapter: str | None = None) -> None:
        self.engine = engine
        self.name = name
        self.adapter = adapter
        self._loop = asyncio.new_event_loop()

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        adapter_dir: str | Path | None = None,
        *,
        device: str | None = None,
        name: str | None = None,
    ) -> InProcessModel:
        """Load a materialised model directory (and adapter); ``device`` None picks CUDA when present."""
        import torch

        from healthnav.serving.config import EngineArgs, ServeAppConfig
        from healthnav.serving.engines.transformers import TransformersEngine

        on_gpu = device.startswith("cuda") if device else torch.cuda.is_available()
        config = ServeAppConfig(
            base_model=str(model_dir),
            engine="transformers",
            engine_args=EngineArgs(max_model_len=131072, dtype="bfloat16" if on_gpu else "float32"),
            num_gpus_per_replica=1 if on_gpu else 0,
        )
        model = cls(
            TransformersEngine(config),
            name=name or (Path(adapter_dir).name if adapter_dir else Path(model_dir).name),
            adapter=CANDIDATE_ADAPTER if adapter_dir is not None else None,
        )
        if adapter_dir is not None:
            model._run(model.engine.add_adapter(CANDIDATE_ADAPTER, Path(adapter_dir)))
        return model

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    async def _stream(self, prompt: str, sampling: Any) -> tuple[list[Any], float | None, float]:
        from healthnav.serving.engine import EngineRequestError

        start = time.perf_counter()
        first: float | None = None
        chunks = []
        try:
            async for chunk in self.engine.generate(
                prompt, sampling, adapter=self.adapter, request_id=uuid.uuid4().hex
            ):
                if first is None and chunk.text:
                    first = time.perf_counter()
                chunks.append(chunk)
        except EngineRequestError as exc:
            raise ModelError(f"{self.name}: {exc.message}") from exc
        return chunks, (first - start) if first else None, time.perf_counter() - start

    def generate(self, prompt: str, max_new_tokens: int) -> Generation:
        from healthnav.serving.engine import Sampling

        chunks, ttft, total = self._run(
            self._stream(prompt, Sampling(max_tokens=max_new_tokens, temperature=0.0))
        )
        last = chunks[-1]
        return Generation(
            text="".join(c.text for c in chunks).strip(),
            ttft_s=ttft,
            total_s=total,
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
        )

    def generate_batch(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]:
        from healthnav.serving.engine import EngineRequestError

        start = time.perf_counter()
        try:
            done = self.engine.generate_greedy_batch(prompts, max_new_tokens, adapter=self.adapter)
        except EngineRequestError as exc:
            raise ModelError(f"{self.name}: {exc.message}") from exc
        share = (time.perf_counter() - start) / max(1, len(prompts))
        return [
            Generation(
                text=c.text.strip(),
                ttft_s=None,
                total_s=share,
                prompt_tokens=c.prompt_tokens,
                completion_tokens=c.completion_tokens,
                batched=True,
            )
            for c in done
        ]

    def loglikelihood(self, context: str, continuations: Sequence[str]) -> list[float]:
        from healthnav.serving.engine import Sampling

        score_prompt = Sampling(max_tokens=0, echo=True, logprobs=0)
        scores = []
        for cont in continuations:
            text = context + cont
            chunks, _, _ = self._run(self._stream(text, score_prompt))
            lp = chunks[-1].logprobs or {}
            value = continuation_logprob(
                lp.get("text_offset", []), lp.get("token_logprobs", []), context, len(text)
            )
            if value is None:
                raise ValueError(f"continuation {cont!r} is empty after tokenization")
            scores.append(value)
        return scores


class EndpointModel:
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

    def _wrap(self, exc: Exception) -> ModelError:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return ModelError(f"{self.endpoint}: request timed out")
        if isinstance(exc, openai.APIConnectionError):
            return ModelError(f"{self.endpoint}: cannot connect ({exc.__cause__ or exc})")
        if isinstance(exc, openai.APIStatusError):
            return ModelError(f"{self.endpoint}: HTTP {exc.status_code}: {str(exc.message)[:200]}")
        return ModelError(f"{self.endpoint}: {type(exc).__name__}: {exc}")

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
        the split :func:`continuation_logprob` makes for the in-process model too.
        """
        import openai

        scores = []
        for cont in continuations:
            text = context + cont
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
            total = continuation_logprob(lp.text_offset, lp.token_logprobs, context, len(text))
            if total is None:
                raise LoglikelihoodUnsupported(
                    f"{self.endpoint}: echo did not include the continuation tokens"
                )
            scores.append(total)
        return scores
