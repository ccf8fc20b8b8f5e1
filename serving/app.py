"""The Ray Serve application: one deployment, ``LLMServer``, that is both the HTTP ingress and the engine.

Each replica owns an engine (GPU) and answers HTTP itself: authentication, validation, prompt
rendering, limits, red flags and SSE run in the process that generates, so a request crosses one
Ray hop (proxy → replica) instead of two. An earlier design put a CPU-only FastAPI ``Router`` in
front of the engine deployment: its handle call to the engine cost several times what the
router's own work did (about 0.3 ms a request), and dropping it took the layer's added p50 from
12.0 to about 8 ms on 2 cores (``bench/serving_latency.py``). It is the shape of vLLM's own OpenAI
server (API and ``AsyncLLM`` in one process), with Ray Serve adding replicas, autoscaling,
multiplexing and the proxy's load balancing.

Adapter affinity (Ray Serve model multiplexing, so requests go to replicas already holding the
adapter) is kept: the OpenAI ``model`` field lives in the JSON body, which the proxy does not
read, so the replica that receives a request decides, and forwards a request for an adapter it
does not hold (:mod:`healthnav.serving.replica`).

Backpressure: :class:`~healthnav.serving.admission.Admission` lets at most ``maxOngoingRequests``
generations into a replica's engine and ``maxQueuedRequests`` wait; beyond that the answer is 503
with ``Retry-After`` in OpenAI's error shape, and an assessment with red flags still answers
``emergency`` — which is why admission lives in the replica and Ray's own per-replica cap sits
above it (Ray's proxy would otherwise reject before any of our code runs). Request bodies and
generations are never logged.

This module is the HTTP surface only: routes, authentication, error handlers and the body
limit, each route a few lines over :class:`~healthnav.serving.replica.Replica` (where a request
runs, admission, adapters, the engine) and :mod:`~healthnav.serving.sse` (streaming). Deployment
options are :mod:`~healthnav.serving.deployment`; errors :mod:`~healthnav.serving.errors`.

``build_app(args)`` is the import path a RayService's serveConfigV2 names (:data:`IMPORT_PATH`).

No ``from __future__ import annotations`` here: Ray serialises the ingress class with
cloudpickle, which keeps only globals the code references, so FastAPI could not resolve
string annotations of request models.
"""

import asyncio
import hmac
import logging
import time
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from healthnav.contracts.probes import AdapterVerification
from healthnav.contracts.prompts import render_assessment_prompt
from healthnav.contracts.validation import describe_validation_error
from healthnav.serving import openai_api as oa
from healthnav.serving.adapters import ModelRef
from healthnav.serving.assessment import (
    ASSESSMENT_PATTERN,
    AssessmentRequest,
    AssessmentResponse,
    build_assessment,
)
from healthnav.serving.config import ServeAppConfig
from healthnav.serving.deployment import api_keys, llm_deployment_options
from healthnav.serving.engine import Chunk, EngineRequestError, Sampling
from healthnav.serving.errors import ERROR_RESPONSES, ApiError
from healthnav.serving.messages import Completion, GenerateRequest, GenerationError
from healthnav.serving.redflags import check_red_flags
from healthnav.serving.replica import Replica
from healthnav.serving.spillover import Reason, Spillover, spill_headers
from healthnav.serving.sse import StreamFormat, sse_events

log = logging.getLogger("healthnav.serving")

ASSESSMENT_MAX_TOKENS = 256
BODY_OVERHEAD_BYTES = 64 * 1024
VALIDATION_ERRORS_SHOWN = 10
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

api = FastAPI(
    title="healthnav serving",
    version="0.1.0",
    description="OpenAI-compatible completions and the Health Navigator assessment API.",
)


@api.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return exc.response()


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    message = describe_validation_error(errors, drop_first="body", limit=VALIDATION_ERRORS_SHOWN)
    return ApiError(400, message, param=_param(errors), code="invalid_request").response()


def _param(errors: Any) -> str | None:
    """The request field the first validation error is about (OpenAI's ``param``), if any."""
    loc = list(errors[0].get("loc", ())) if errors else []
    if loc and loc[0] == "body":
        loc = loc[1:]
    return loc[0] if loc and isinstance(loc[0], str) else None


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return ApiError(exc.status_code, str(exc.detail), type="http_error", headers=exc.headers).response()


@api.exception_handler(EngineRequestError)
async def _engine_error(request: Request, exc: EngineRequestError) -> JSONResponse:
    return ApiError(exc.status, exc.message, param=exc.param).response()


@api.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("internal error on %s: %s", request.url.path, type(exc).__name__)
    return ApiError(500, "internal server error", type="server_error").response()


class BodyLimitMiddleware:
    """Refuse oversized bodies before parsing them (the prompt limit is applied after parsing).

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` runs
    every request and every streamed chunk through an extra task and memory stream, which is
    measurable on the serving layer's hot path.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            limit = getattr(scope["app"].state, "max_body_bytes", None) if "app" in scope else None
            length = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
            if limit and length.isdigit() and int(length) > limit:
                error = ApiError(413, f"request body exceeds {limit} bytes", code="body_too_large")
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


api.add_middleware(BodyLimitMiddleware)


async def _authorize(request: Request) -> None:
    # request.app, not the module's ``api``: Ray ships the ingress app by value (cloudpickle).
    keys: list[str] | None = getattr(request.app.state, "api_keys", None)
    if keys is None:
        raise ApiError(503, "server is starting", type="not_ready", headers={"Retry-After": "1"})
    if not keys:
        return
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    if not token or not any(hmac.compare_digest(token.encode(), k.encode()) for k in keys):
        raise ApiError(
            401,
            "missing or invalid API key: send 'Authorization: Bearer <key>'",
            type="authentication_error",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _request(ref: ModelRef, prompt: str, sampling: Sampling) -> GenerateRequest:
    return GenerateRequest(prompt, sampling, None if ref.is_base else ref.name, ref.uri)


# Everything LLMServer uses must be defined above it: @serve.ingress pickles the FastAPI app, and
# with it the globals its routes' code refers to, when the class is decorated.


@serve.deployment
@serve.ingress(api)
class LLMServer:
    """HTTP ingress and engine in one replica (one per GPU); see the module docstring for why.

    Routes answer HTTP over :class:`Replica`; :meth:`complete` and :meth:`generate` are what a
    handle call from another replica runs when it forwards an adapter request here.
    """

    def __init__(
        self,
        args: dict[str, Any],
        engine_factory: str | None = None,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = ServeAppConfig.model_validate(args)
        self.replica = Replica(self.cfg, engine_factory, engine_options)
        self.metrics = self.replica.metrics
        self.created = int(time.time())
        api.state.api_keys = api_keys(self.cfg)
        api.state.max_body_bytes = self.cfg.limits.max_prompt_chars * 4 + BODY_OVERHEAD_BYTES
        spill = self.cfg.spillover
        self.spillover = Spillover(spill, self.metrics.spillover) if spill else None

    # -- called by another replica through a handle (and by the routes below, in-process) --

    async def complete(self, request: GenerateRequest) -> Completion | GenerationError:
        """The whole generation as one value (non-streaming requests)."""
        return await self.replica.complete_here(request)

    async def generate(self, request: GenerateRequest) -> Any:
        """Stream chunks of the generation (streaming requests)."""
        async for item in self.replica.generate_here(request):
            yield item

    async def verify_adapter(self, name: str, uri: str | None) -> AdapterVerification | GenerationError:
        """Load adapter ``name`` here and return its verification (the operator's rollout check)."""
        return await self.replica.verify_here(name, uri)

    async def check_health(self) -> None:
        await self.replica.check_health()

    # -- routes --

    @api.get("/healthz", include_in_schema=False)
    async def healthz(self) -> dict[str, str]:
        """Liveness of the replica that answered."""
        return {"status": "ok"}

    @api.get("/readyz", responses={503: ERROR_RESPONSES[503]})
    async def readyz(self) -> JSONResponse:
        """Ready when the answering replica's engine is healthy (Ray routes only to replicas whose
        model has loaded). Like any request, it wakes a deployment scaled to zero."""
        try:
            async with asyncio.timeout(5):
                await self.check_health()
        except Exception:
            return ApiError(
                503, "engine not ready", type="not_ready", headers={"Retry-After": "5"}
            ).response()
        ready = {
            "engine": self.cfg.engine,
            "model": self.cfg.model_name,
            "max_model_len": self.replica.engine.max_model_len,
        }
        return JSONResponse({"status": "ready", **ready})

    @api.get(
        "/adapters/{name}/verification",
        response_model=AdapterVerification,
        responses={404: ERROR_RESPONSES[404], 503: ERROR_RESPONSES[503]},
    )
    async def adapter_verification(self, name: str) -> AdapterVerification:
        """Load a configured adapter where its requests go and say whether it answers as in training.

        Unauthenticated like ``/readyz``, so the operator can check a rollout without holding the
        app's API keys: it reveals a verdict, never a generation, and loads only adapters the
        ModelServe configures (a discovered or unknown name is a 404).
        """
        if name not in self.replica.resolver.configured:
            raise ApiError(
                404,
                f"{name!r} is not an adapter this ModelServe configures",
                param="name",
                code="model_not_found",
            )
        return await self.replica.verify(await self.replica.resolve(name))

    @api.get(
        "/v1/models",
        response_model=oa.ModelList,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(_authorize)],
    )
    async def models(self) -> dict[str, Any]:
        base = self.replica.resolver.base_name
        data = [
            {
                "id": n,
                "object": "model",
                "created": self.created,
                "owned_by": "healthnav",
                "parent": None if n == base else base,
            }
            for n in await self.replica.model_names()
        ]
        return {"object": "list", "data": data}

    @api.post(
        "/v1/chat/completions",
        response_model=oa.ChatCompletion,
        responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}}}},
        dependencies=[Depends(_authorize)],
    )
    async def chat_completions(self, req: oa.ChatCompletionRequest) -> Any:
        prompt = oa.chat_prompt(req, self.cfg.limits)
        sampling = oa.sampling_for(req, self.cfg.limits)
        ref = await self.replica.resolve(req.model)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return await self._answer_or_spill("chat", ref, _request(ref, prompt, sampling), req, include_usage)

    @api.post(
        "/v1/completions",
        response_model=oa.Completion,
        responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}}}},
        dependencies=[Depends(_authorize)],
    )
    async def completions(self, req: oa.CompletionRequest) -> Any:
        prompt = oa.completion_prompt(req, self.cfg.limits)
        sampling = oa.sampling_for(req, self.cfg.limits)
        ref = await self.replica.resolve(req.model)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return await self._answer_or_spill(
            "completion", ref, _request(ref, prompt, sampling), req, include_usage
        )

    @api.post(
        "/v1/assessments",
        response_model=AssessmentResponse,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(_authorize)],
    )
    async def assessments(self, req: AssessmentRequest) -> JSONResponse:
        """Assess a case. Red flags escalate to ``emergency`` even when the model is unavailable."""
        t0 = time.perf_counter()
        red_flags = check_red_flags(req.red_flag_text(), history=req.history or "", age_years=req.age)
        flags = red_flags.flags
        for f in flags:
            self.metrics.red_flags.inc(1, tags={"rule": f.id})
        ref = await self.replica.resolve(req.model or self.cfg.model_name)
        prompt = render_assessment_prompt(req.case())
        oa.check_prompt_size(len(prompt), self.cfg.limits, "symptoms")
        max_tokens = req.max_tokens or min(ASSESSMENT_MAX_TOKENS, self.cfg.limits.max_tokens)
        if max_tokens > self.cfg.limits.max_tokens:
            raise ApiError(
                400,
                f"max_tokens={max_tokens} exceeds this server's limit of {self.cfg.limits.max_tokens}",
                param="max_tokens",
            )
        # constrained to the trained format, so the answer parses (see serving/assessment.py)
        sampling = Sampling(max_tokens=max_tokens, temperature=0.0, regex=ASSESSMENT_PATTERN)
        generated: str | None = None
        truncated = False
        spilled: Reason | None = None
        try:
            generated, truncated, spilled = await self._assessment_text(ref, _request(ref, prompt, sampling))
        except ApiError as exc:
            # The model is overloaded or slow; an emergency must still be told to call for help.
            if not flags or exc.status < 500:
                raise
        took = time.perf_counter() - t0
        self.metrics.request("assessment", ref.name, 200, took)
        return JSONResponse(
            build_assessment(
                generated,
                flags,
                model=self.spillover.cfg.model if spilled and self.spillover else ref.name,
                latency_ms=took * 1000,
                language=red_flags.language,
                truncated=truncated,
            ),
            headers=spill_headers(spilled) if spilled else None,
        )

    # -- where a generation comes from: the local engine, or the spillover upstream --

    async def _answer_or_spill(
        self, route: str, ref: ModelRef, request: GenerateRequest, req: Any, include_usage: bool
    ) -> Any:
        """Answer locally unless spillover takes the request: by weight before trying, or instead
        of a refusal its configuration lists (:mod:`healthnav.serving.spillover`)."""
        spill = self.spillover
        reason = spill.choose() if spill else None
        if spill is None or reason is None:
            try:
                return await self._answer(route, ref, request, req.stream, include_usage)
            except ApiError as exc:
                if spill is None or (reason := spill.reason_for(exc)) is None:
                    raise
        return await spill.forward(route, req, req.stream, reason)

    async def _assessment_text(
        self, ref: ModelRef, request: GenerateRequest
    ) -> tuple[str, bool, Reason | None]:
        """(generated text, cut off by max_tokens, spillover reason or None) for an assessment, from
        wherever it comes: the red-flag layer, parsing and disclaimer of the route apply alike to a
        local and an upstream answer."""
        spill = self.spillover
        reason = spill.choose() if spill else None
        if spill is None or reason is None:
            try:
                out = await self.replica.complete(ref, request)
                return out.text, out.finish_reason == "length", None
            except ApiError as exc:
                if spill is None or (reason := spill.reason_for(exc)) is None:
                    raise
        text, truncated = await spill.complete_text(request.prompt, request.sampling.max_tokens, reason)
        return text, truncated, reason

    # -- answering a generation: one JSON body, or a stream of server-sent events --

    async def _answer(
        self, route: str, ref: ModelRef, request: GenerateRequest, stream: bool, include_usage: bool
    ) -> Any:
        t0 = time.perf_counter()
        chat = route == "chat"
        rid = oa.new_id("chatcmpl" if chat else "cmpl")
        if not stream:
            out = await self.replica.complete(ref, request)
            took = time.perf_counter() - t0
            self.metrics.generation(
                route, ref.name, out.ttft, took - (out.ttft or 0), out.prompt_tokens, out.completion_tokens
            )
            self.metrics.request(route, ref.name, 200, took)
            pt, ct = out.prompt_tokens, out.completion_tokens
            if chat:
                return JSONResponse(oa.chat_completion(rid, ref.name, out.text, out.finish_reason, pt, ct))
            text = request.prompt + out.text if request.sampling.echo else out.text
            return JSONResponse(
                oa.text_completion(rid, ref.name, text, out.finish_reason, pt, ct, out.logprobs)
            )
        generation, first, ttft = await self.replica.open_stream(ref, request)

        def on_end(status: int, last: Chunk) -> None:
            took = time.perf_counter() - t0
            self.metrics.generation(
                route, ref.name, ttft, took - ttft, last.prompt_tokens, last.completion_tokens
            )
            self.metrics.request(route, ref.name, status, took)

        events = sse_events(
            StreamFormat(rid, ref.name, chat), generation, first, include_usage=include_usage, on_end=on_end
        )
        return StreamingResponse(events, media_type="text/event-stream", headers=STREAM_HEADERS)


def build_app(args: dict[str, Any]) -> serve.Application:
    """The application for ``serve.run``/serveConfigV2; ``args`` is ``ServeAppConfig.to_dict()``."""
    return compose_app(ServeAppConfig.model_validate(args))


def compose_app(
    cfg: ServeAppConfig, *, engine_factory: str | None = None, engine_options: dict[str, Any] | None = None
) -> serve.Application:
    """``build_app`` with an engine override, for benchmarks that must isolate the serving layer."""
    return LLMServer.options(**llm_deployment_options(cfg)).bind(
        cfg.to_dict(), engine_factory, engine_options
    )
