"""OpenAI-compatible request and response shapes, and the pure functions that build them.

Kept free of Ray and FastAPI so the wire format is unit-tested on its own; ``app.py`` only wires
these to HTTP. Unknown request fields are ignored (as OpenAI-compatible servers commonly do) so
newer client versions keep working; but known fields that change the answer and that we cannot
honour are refused with a 400 whose ``param`` names the field, never silently dropped: a caller
relying on them would otherwise get a subtly different answer without knowing. Refused: ``n`` >
1, ``best_of``, ``suffix``, ``logit_bias``, penalties, chat ``logprobs``/``top_logprobs``, tool
and function calling (``tools``, ``tool_choice``, ``functions``, ``function_call``), audio
output, web search, reasoning controls, and vLLM's sampling and guided-decoding extensions
(``top_k``, ``min_p``, ``guided_json``, ...), which clients moving from vLLM may send.

``response_format`` is honoured: ``json_object`` and ``json_schema`` constrain the generation
(lm-format-enforcer in the transformers engine, vLLM's structured outputs in the vLLM engine);
``text`` is the default. ``parallel_tool_calls`` is accepted: without tools it changes nothing.

``/v1/completions`` implements the legacy ``echo`` + ``logprobs`` semantics (``max_tokens: 0``
returns only the prompt's token log-probabilities), which is how lm-evaluation-harness scores
multiple choice by log-likelihood against an OpenAI-compatible server.

Chat requests are rendered with :func:`healthnav.contracts.prompts.render_chat`, the same
template the model was trained on. ``/v1/completions`` sends the prompt verbatim: that is what a
completion is, and it lets callers reproduce a training prompt exactly.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from healthnav.contracts.prompts import render_chat
from healthnav.serving.config import LimitsSpec
from healthnav.serving.engine import ANY_JSON_OBJECT, EngineRequestError, Sampling


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class StreamOptions(_Request):
    include_usage: bool = False


class JsonSchemaFormat(_Request):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = Field(default="response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema", description="the JSON schema the answer must follow")
    strict: bool | None = Field(default=None, description="the schema is always enforced")


class ResponseFormat(_Request):
    """OpenAI ``response_format``: ``text`` (default), ``json_object`` or ``json_schema``."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs json_schema: {name, schema}")
        return self

    def constraint(self) -> dict[str, Any] | None:
        """The ``Sampling.json_schema`` this format asks for (None: unconstrained text)."""
        if self.type == "json_object":
            return ANY_JSON_OBJECT
        if self.type == "json_schema" and self.json_schema is not None:
            return self.json_schema.schema_
        return None


UNSUPPORTED: dict[str, str] = {
    "tools": "tool calling is not supported by this server",
    "tool_choice": "tool calling is not supported by this server",
    "functions": "function calling is not supported by this server",
    "function_call": "function calling is not supported by this server",
    "audio": "audio output is not supported by this server",
    "web_search_options": "web search is not supported by this server",
    "reasoning_effort": "reasoning controls are not supported by this server's models",
    "verbosity": "verbosity control is not supported by this server",
    "top_k": "top_k is not supported by this server; use top_p",
    "min_p": "min_p is not supported by this server; use top_p",
    "repetition_penalty": "repetition penalties are not supported by this server",
    "min_tokens": "min_tokens is not supported by this server",
    "ignore_eos": "ignore_eos is not supported by this server",
    "use_beam_search": "beam search is not supported by this server",
    "guided_json": "use response_format {type: json_schema} instead of guided_json",
    "guided_regex": "guided decoding is not supported; use response_format",
    "guided_choice": "guided decoding is not supported; use response_format",
    "guided_grammar": "guided decoding is not supported; use response_format",
    "structured_outputs": "use response_format {type: json_schema} instead of structured_outputs",
}
"""Known fields (OpenAI's and vLLM's) that change the answer and that this server cannot honour."""
HARMLESS: dict[str, tuple[Any, ...]] = {
    "tool_choice": ("none",),
    "function_call": ("none",),
    "top_k": (-1, 0),
    "min_p": (0, 0.0),
    "repetition_penalty": (1, 1.0),
    "min_tokens": (0,),
    "ignore_eos": (False,),
    "use_beam_search": (False,),
}
"""Values of :data:`UNSUPPORTED` fields that ask for nothing (what clients send by default)."""


MAX_LOGPROBS = 5
"""OpenAI's legacy limit on ``logprobs`` (alternatives per position)."""


class _Sampling(_Request):
    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1, description="only n=1 is supported")
    presence_penalty: float = Field(default=0.0, description="only 0 is supported")
    frequency_penalty: float = Field(default=0.0, description="only 0 is supported")
    logit_bias: dict[str, float] | None = Field(default=None, description="not supported")
    response_format: ResponseFormat | None = Field(
        default=None, description="text, json_object or json_schema: constrains the generation"
    )
    parallel_tool_calls: bool | None = Field(default=None, description="accepted; no tools are called")
    tools: list[Any] | None = Field(default=None, description="not supported (400)")
    tool_choice: Any = Field(default=None, description="not supported (400) unless 'none'")
    functions: list[Any] | None = Field(default=None, description="not supported (400)")
    function_call: Any = Field(default=None, description="not supported (400) unless 'none'")
    audio: Any = Field(default=None, description="not supported (400)")
    modalities: list[str] | None = Field(default=None, description="only ['text']")
    web_search_options: Any = Field(default=None, description="not supported (400)")
    reasoning_effort: Any = Field(default=None, description="not supported (400)")
    verbosity: Any = Field(default=None, description="not supported (400)")
    top_k: Any = Field(default=None, description="vLLM extension; not supported (400)")
    min_p: Any = Field(default=None, description="vLLM extension; not supported (400)")
    repetition_penalty: Any = Field(default=None, description="vLLM extension; not supported (400)")
    min_tokens: Any = Field(default=None, description="vLLM extension; not supported (400)")
    ignore_eos: Any = Field(default=None, description="vLLM extension; not supported (400)")
    use_beam_search: Any = Field(default=None, description="vLLM extension; not supported (400)")
    guided_json: Any = Field(default=None, description="vLLM extension; use response_format (400)")
    guided_regex: Any = Field(default=None, description="vLLM extension; not supported (400)")
    guided_choice: Any = Field(default=None, description="vLLM extension; not supported (400)")
    guided_grammar: Any = Field(default=None, description="vLLM extension; not supported (400)")
    structured_outputs: Any = Field(default=None, description="vLLM extension; use response_format (400)")

    @field_validator(*UNSUPPORTED)
    @classmethod
    def _unsupported(cls, v: Any, info: Any) -> Any:
        if v is None or v == [] or v in HARMLESS.get(info.field_name, ()):
            return v
        raise ValueError(UNSUPPORTED[info.field_name])

    @field_validator("modalities")
    @classmethod
    def _text_only(cls, v: list[str] | None) -> list[str] | None:
        if v and set(v) != {"text"}:
            raise ValueError("only text output is supported by this server")
        return v

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalties(cls, v: float) -> float:
        if v:
            raise ValueError("repetition penalties are not supported by this server; send 0 or omit it")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _no_logit_bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v:
            raise ValueError("logit_bias is not supported by this server")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    def stop_tuple(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = Field(
        default=None, description="not supported on chat; use /v1/completions with logprobs"
    )
    top_logprobs: int | None = Field(default=None, ge=0, le=20, description="only 0 is supported")

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_chat_logprobs(cls, v: bool | int | None) -> bool | int | None:
        if v:
            raise ValueError("logprobs are not supported on chat completions; use /v1/completions")
        return v


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(
        default=16, ge=0, description="0 (with echo) scores the prompt without generating"
    )
    echo: bool = Field(default=False, description="return the prompt before the completion")
    logprobs: int | None = Field(
        default=None,
        ge=0,
        le=MAX_LOGPROBS,
        description="log-probabilities of each token and of the N most likely alternatives",
    )
    best_of: int | None = Field(default=None, ge=1, le=1, description="only best_of=1 is supported")
    suffix: str | None = Field(default=None, description="insertion is not supported")

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("suffix (insertion) is not supported by this server")
        return v

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("exactly one prompt is supported")
        return v

    def text(self) -> str:
        return self.prompt[0] if isinstance(self.prompt, list) else self.prompt


# --- responses (documented in OpenAPI; built as plain dicts on the hot path) ---------------------


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "healthnav"
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ChatChoice(BaseModel):
    index: int
    message: dict[str, Any]
    finish_reason: str | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionLogprobs(BaseModel):
    """OpenAI legacy logprobs: per token, its text, log-probability, alternatives and text offset."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def chat_prompt(req: ChatCompletionRequest, limits: LimitsSpec) -> str:
    """The model prompt for a chat request, after the prompt-size limit."""
    messages = [
        {"role": m.role if m.role != "developer" else "system", "content": m.text()} for m in req.messages
    ]
    check_prompt_size(sum(len(m["content"]) for m in messages), limits, "messages")
    try:
        return render_chat(messages)
    except ValueError as exc:
        raise EngineRequestError(str(exc), param="messages") from exc


def completion_prompt(req: CompletionRequest, limits: LimitsSpec) -> str:
    text = req.text()
    check_prompt_size(len(text), limits, "prompt")
    if not text:
        raise EngineRequestError("prompt must not be empty", param="prompt")
    return text


def check_prompt_size(chars: int, limits: LimitsSpec, param: str) -> None:
    if chars > limits.max_prompt_chars:
        raise EngineRequestError(
            f"{param} has {chars} characters; this server accepts at most {limits.max_prompt_chars}",
            param=param,
        )


def sampling_for(req: _Sampling, limits: LimitsSpec, *, default_max_tokens: int | None = None) -> Sampling:
    """Engine sampling parameters, enforcing the server's max_tokens limit with a clear message."""
    requested = getattr(req, "max_completion_tokens", None) or req.max_tokens
    echo = bool(getattr(req, "echo", False))
    logprobs: int | None = getattr(req, "logprobs", None) if isinstance(req, CompletionRequest) else None
    if requested == 0:
        if not echo:
            raise EngineRequestError("max_tokens=0 is only meaningful with echo=true", param="max_tokens")
        max_tokens = 0
    else:
        max_tokens = requested or default_max_tokens or limits.max_tokens
    if req.stream and (echo or logprobs is not None):
        raise EngineRequestError(
            "echo and logprobs are not supported with stream=true; send a non-streaming request",
            param="echo" if echo else "logprobs",
        )
    if max_tokens > limits.max_tokens:
        raise EngineRequestError(
            f"max_tokens={max_tokens} exceeds this server's limit of {limits.max_tokens}", param="max_tokens"
        )
    return Sampling(
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=req.stop_tuple(),
        seed=req.seed,
        logprobs=logprobs,
        echo=echo,
        json_schema=req.response_format.constraint() if req.response_format else None,
    )


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(rid: str, model: str, text: str, finish: str | None, pt: int, ct: int) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": usage(pt, ct),
    }


def text_completion(
    rid: str,
    model: str,
    text: str,
    finish: str | None,
    pt: int,
    ct: int,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}],
        "usage": usage(pt, ct),
    }


def chat_chunk(
    rid: str,
    model: str,
    created: int,
    *,
    content: str | None = None,
    role: str | None = None,
    finish: str | None = None,
) -> dict[str, Any]:
    delta: dict[str, str] = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def completion_chunk(
    rid: str, model: str, created: int, text: str, finish: str | None = None
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }


def usage_chunk(rid: str, model: str, created: int, obj: str, pt: int, ct: int) -> dict[str, Any]:
    """The final chunk OpenAI sends when ``stream_options.include_usage`` is set."""
    return {
        "id": rid,
        "object": obj,
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage(pt, ct),
    }


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event; ``[DONE]`` ends an OpenAI stream."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n"
