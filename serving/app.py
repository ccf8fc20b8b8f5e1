"""The Ray Serve application: an HTTP router in front of autoscaled, multiplexed engine replicas.

Two deployments, because routing by adapter needs it. The OpenAI ``model`` field lives in the
JSON body, while Ray Serve model multiplexing routes on a per-call model id; so ``Router``
(FastAPI ingress, light, no GPU) authenticates, validates, renders prompts, resolves ``model``
to the base model or an adapter, and calls ``LLMServer`` through a handle with
``multiplexed_model_id=<adapter>``. Ray then prefers replicas that already hold the adapter.
``LLMServer`` owns the engine (GPU), autoscales on ongoing requests (down to zero if
configured) and loads adapters on demand (``@serve.multiplexed``, LRU per replica).

Backpressure: each ``LLMServer`` replica takes at most ``maxOngoingRequests``; beyond that the
router's handle queues at most ``maxQueuedRequests`` and then answers 503 with ``Retry-After``
instead of queueing forever. Request bodies and generations are never logged.

``build_app(args)`` is the import path a RayService's serveConfigV2 names (:data:`IMPORT_PATH`).

No ``from __future__ import annotations`` here: Ray serialises the ingress class with
cloudpickle, which keeps only globals the code references, so FastAPI could not resolve
string annotations of request models.
"""

import asyncio
import hmac
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from healthnav.datapipe.prompts import render_assessment_prompt
from healthnav.serving import openai_api as oa
from healthnav.serving.adapters import AdapterCache, AdapterError, AdapterResolver, ModelRef
from healthnav.serving.assessment import AssessmentRequest, AssessmentResponse, build_assessment
from healthnav.serving.config import SERVE_ENV as SERVE_ENV  # re-exported: it used to live here
from healthnav.serving.config import ServeAppConfig
from healthnav.serving.engine import EngineRequestError, Sampling, make_engine
from healthnav.serving.redflags import detect_red_flags

log = logging.getLogger("healthnav.serving")

RETRY_AFTER_S = 2
ASSESSMENT_MAX_TOKENS = 256
BODY_OVERHEAD_BYTES = 64 * 1024


# --- deployment options: pure functions of the configuration (unit-tested) ----------------------


def autoscaling_config(cfg: ServeAppConfig) -> dict[str, Any]:
    a = cfg.autoscaling
    return {
        "min_replicas": a.min_replicas,
        "initial_replicas": max(a.min_replicas, 1) if a.max_replicas >= 1 else 0,
        "max_replicas": a.max_replicas,
        "target_ongoing_requests": a.target_ongoing_requests,
        "upscale_delay_s": a.upscale_delay_seconds,
        "downscale_delay_s": a.downscale_delay_seconds,
    }


def llm_deployment_options(cfg: ServeAppConfig) -> dict[str, Any]:
    """Options of the engine deployment: GPUs, autoscaling, per-replica concurrency."""
    return {
        "name": "LLMServer",
        "ray_actor_options": {"num_cpus": cfg.num_cpus_per_replica, "num_gpus": cfg.num_gpus_per_replica},
        "autoscaling_config": autoscaling_config(cfg),
        "max_ongoing_requests": cfg.limits.max_ongoing_requests,
        "max_queued_requests": cfg.limits.max_queued_requests,
        "health_check_period_s": 10,
        "health_check_timeout_s": 30,
        "graceful_shutdown_timeout_s": cfg.limits.request_timeout_seconds,
    }


def router_deployment_options(cfg: ServeAppConfig) -> dict[str, Any]:
    """Options of the HTTP router: CPU-light, scales with traffic, never below one replica."""
    lim = cfg.limits
    per_router = 4 * (lim.max_ongoing_requests + max(lim.max_queued_requests, 0)) + 16
    return {
        "name": "Router",
        "ray_actor_options": {"num_cpus": 0},
        "autoscaling_config": {
            "min_replicas": 1,
            "max_replicas": max(1, cfg.autoscaling.max_replicas),
            "target_ongoing_requests": per_router / 2,
            "upscale_delay_s": cfg.autoscaling.upscale_delay_seconds,
            "downscale_delay_s": cfg.autoscaling.downscale_delay_seconds,
        },
        "max_ongoing_requests": per_router,
        "max_queued_requests": max(lim.max_queued_requests, 0) * 4 if lim.max_queued_requests >= 0 else -1,
        "backpressure_config": {"status_code": 503, "retry_after_s": RETRY_AFTER_S},
    }


def api_keys(cfg: ServeAppConfig) -> list[str]:
    """API keys from the environment variable the config names (a Kubernetes Secret in production)."""
    if not cfg.api_keys_env:
        return []
    return [k.strip() for k in os.environ.get(cfg.api_keys_env, "").split(",") if k.strip()]


def validation_message(exc: RequestValidationError) -> str:
    """'messages.0.role: Input should be ...' for each error: names the field, never echoes input."""
    parts = []
    for err in exc.errors()[:10]:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


class ApiError(Exception):
    """An error answered with OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = oa.error_body(self.message, type=self.type, param=self.param, code=self.code)
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def overloaded(what: str = "the model") -> ApiError:
    return ApiError(
        503,
        f"{what} is at capacity; retry after {RETRY_AFTER_S} s",
        type="overloaded_error",
        code="overloaded",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


# --- the FastAPI app --------------------------------------------------------------------------------

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": oa.ErrorResponse, "description": "Invalid request; the message names the field."},
    401: {"model": oa.ErrorResponse, "description": "Missing or wrong API key."},
    404: {"model": oa.ErrorResponse, "description": "Unknown model."},
    413: {"model": oa.ErrorResponse, "description": "Request body too large."},
    503: {
        "model": oa.ErrorResponse,
        "description": "Overloaded or not ready; retry after Retry-After seconds.",
    },
}

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
    return ApiError(400, validation_message(exc), param=None, code="invalid_request").response()


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


@serve.deployment
@serve.ingress(api)
class Router:
    """HTTP ingress: auth, validation, prompt rendering, model resolution, streaming."""

    def __init__(self, args: dict[str, Any], llm: DeploymentHandle) -> None:
        from healthnav.serving.metrics import RouterMetrics

        self.cfg = ServeAppConfig.model_validate(args)
        self.llm = llm
        self.resolver = AdapterResolver(self.cfg)
        self.metrics = RouterMetrics()
        self.created = int(time.time())
        self._handles: dict[tuple[str, bool], DeploymentHandle] = {}
        api.state.api_keys = api_keys(self.cfg)
        api.state.max_body_bytes = self.cfg.limits.max_prompt_chars * 4 + BODY_OVERHEAD_BYTES

    # -- model resolution and generation --

    def _handle(self, ref: ModelRef, *, stream: bool) -> DeploymentHandle:
        """The engine handle for a model, built once per (model, streaming) and reused.

        ``options()`` builds a new handle object; doing it per request is measurable overhead.
        The multiplexed model id is what routes adapter requests to replicas holding them.
        """
        key = (ref.name if not ref.is_base else "", stream)
        handle = self._handles.get(key)
        if handle is None:
            if len(self._handles) >= 1024:  # adapters come and go; don't grow without bound
                self._handles.clear()
            handle = self.llm.options(stream=stream, multiplexed_model_id=key[0])
            self._handles[key] = handle
        return handle

    async def _resolve(self, name: str) -> ModelRef:
        try:
            if self.resolver.needs_lookup(name):
                ref = await asyncio.to_thread(self.resolver.resolve, name)
            else:  # base model, configured or recently seen adapter: no I/O, no thread hop
                ref = self.resolver.resolve(name)
        except Exception as exc:  # storage unreachable: not the client's fault
            log.warning("adapter lookup failed: %s", type(exc).__name__)
            raise ApiError(
                503, "adapter registry unavailable", type="server_error", headers={"Retry-After": "5"}
            ) from exc
        if ref is None:
            raise ApiError(
                404,
                f"model {name!r} does not exist; GET /v1/models lists the base model and adapters",
                param="model",
                code="model_not_found",
            )
        return ref

    async def _open(
        self, ref: ModelRef, prompt: str, sampling: Sampling
    ) -> tuple[Any, dict[str, Any], float]:
        """Start a generation; returns (stream, first chunk, seconds to first chunk) or raises ApiError."""
        started = time.perf_counter()
        handle = self._handle(ref, stream=True)
        stream = handle.generate.remote(prompt, sampling.__dict__, None if ref.is_base else ref.name, ref.uri)
        try:
            async with asyncio.timeout(self.cfg.limits.request_timeout_seconds):
                first = await stream.__anext__()
        except BackPressureError as exc:
            raise overloaded() from exc
        except TimeoutError as exc:
            stream.cancel()
            raise ApiError(504, "timed out waiting for the model", type="timeout_error") from exc
        except StopAsyncIteration:
            first = {"text": "", "finish_reason": "stop", "prompt_tokens": 0, "completion_tokens": 0}
        if first.get("error"):
            err = first["error"]
            raise ApiError(
                err.get("status", 400),
                err["message"],
                param=err.get("param"),
                type=err.get("type", "invalid_request_error"),
            )
        return stream, first, time.perf_counter() - started

    async def _complete(self, ref: ModelRef, prompt: str, sampling: Sampling) -> dict[str, Any]:
        """Run a generation to the end in one round trip.

        Returns ``text``, ``finish_reason``, ``prompt_tokens``, ``completion_tokens``, ``ttft``
        and ``logprobs``. Non-streaming requests use the engine's ``complete`` (one Ray message
        instead of one per token), which is most of the serving layer's added latency.
        """
        handle = self._handle(ref, stream=False)
        adapter = None if ref.is_base else ref.name
        response = handle.complete.remote(prompt, sampling.__dict__, adapter, ref.uri)
        try:
            async with asyncio.timeout(self.cfg.limits.request_timeout_seconds):
                out = await response
        except BackPressureError as exc:
            raise overloaded() from exc
        except TimeoutError as exc:
            response.cancel()
            raise ApiError(504, "timed out waiting for the model", type="timeout_error") from exc
        if out.get("error"):
            err = out["error"]
            raise ApiError(
                err.get("status", 400),
                err["message"],
                param=err.get("param"),
                type=err.get("type", "invalid_request_error"),
            )
        return out

    async def _generate_response(
        self,
        route: str,
        ref: ModelRef,
        prompt: str,
        sampling: Sampling,
        stream_req: bool,
        include_usage: bool,
        chat: bool,
    ) -> Any:
        t0 = time.perf_counter()
        rid = oa.new_id("chatcmpl" if chat else "cmpl")
        if not stream_req:
            out = await self._complete(ref, prompt, sampling)
            pt, ct, ttft = out["prompt_tokens"], out["completion_tokens"], out["ttft"]
            took = time.perf_counter() - t0
            self.metrics.generation(route, ref.name, ttft, took - (ttft or 0), pt, ct)
            self.metrics.request(route, ref.name, 200, took)
            if chat:
                return JSONResponse(
                    oa.chat_completion(rid, ref.name, out["text"], out["finish_reason"], pt, ct)
                )
            text = prompt + out["text"] if sampling.echo else out["text"]
            body = oa.text_completion(rid, ref.name, text, out["finish_reason"], pt, ct, out.get("logprobs"))
            return JSONResponse(body)
        stream, first, ttft = await self._open(ref, prompt, sampling)
        return StreamingResponse(
            self._sse(route, rid, ref, stream, first, ttft, t0, include_usage, chat),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _sse(
        self,
        route: str,
        rid: str,
        ref: ModelRef,
        stream: Any,
        first: dict[str, Any],
        ttft: float,
        t0: float,
        include_usage: bool,
        chat: bool,
    ) -> AsyncIterator[str]:
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"
        chunk = first
        done = False
        status = 200
        try:
            if chat:
                yield oa.sse(oa.chat_chunk(rid, ref.name, created, role="assistant", content=""))

            def render(c: dict[str, Any]) -> str:
                if chat:
                    return oa.sse(
                        oa.chat_chunk(
                            rid, ref.name, created, content=c["text"], finish=c.get("finish_reason")
                        )
                    )
                return oa.sse(oa.completion_chunk(rid, ref.name, created, c["text"], c.get("finish_reason")))

            if chunk["text"] or chunk.get("finish_reason"):
                yield render(chunk)
            async for chunk in stream:
                if chunk.get("error"):
                    status = 500
                    yield oa.sse(oa.error_body(chunk["error"]["message"], type="server_error"))
                    break
                if chunk["text"] or chunk.get("finish_reason"):
                    yield render(chunk)
            if include_usage:
                yield oa.sse(
                    oa.usage_chunk(
                        rid, ref.name, created, obj, chunk["prompt_tokens"], chunk["completion_tokens"]
                    )
                )
            yield oa.sse("[DONE]")
            done = True
        finally:
            if not done:
                stream.cancel()
                status = 499 if status == 200 else status
            took = time.perf_counter() - t0
            self.metrics.generation(
                route,
                ref.name,
                ttft,
                took - ttft,
                chunk.get("prompt_tokens", 0),
                chunk.get("completion_tokens", 0),
            )
            self.metrics.request(route, ref.name, status, took)

    # -- routes --

    @api.get("/healthz", include_in_schema=False)
    async def healthz(self) -> dict[str, str]:
        """Liveness of the router itself."""
        return {"status": "ok"}

    @api.get("/readyz", responses={503: ERROR_RESPONSES[503]})
    async def readyz(self) -> JSONResponse:
        """Ready when an engine replica has its model loaded (or the app may scale from zero)."""
        if self.cfg.autoscaling.min_replicas == 0:
            return JSONResponse({"status": "ready", "engine": "scales from zero on first request"})
        try:
            async with asyncio.timeout(5):
                info = await self.llm.ready.remote()
        except Exception:
            return ApiError(
                503, "engine not ready", type="not_ready", headers={"Retry-After": "5"}
            ).response()
        return JSONResponse({"status": "ready", **info})

    @api.get(
        "/v1/models",
        response_model=oa.ModelList,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(_authorize)],
    )
    async def models(self) -> dict[str, Any]:
        try:
            names = await asyncio.to_thread(self.resolver.names)
        except Exception:
            names = [self.resolver.base_name, *self.resolver.configured]
        base = self.resolver.base_name
        data = [
            {
                "id": n,
                "object": "model",
                "created": self.created,
                "owned_by": "healthnav",
                "parent": None if n == base else base,
            }
            for n in names
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
        ref = await self._resolve(req.model)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return await self._generate_response(
            "chat", ref, prompt, sampling, req.stream, include_usage, chat=True
        )

    @api.post(
        "/v1/completions",
        response_model=oa.Completion,
        responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}}}},
        dependencies=[Depends(_authorize)],
    )
    async def completions(self, req: oa.CompletionRequest) -> Any:
        prompt = oa.completion_prompt(req, self.cfg.limits)
        sampling = oa.sampling_for(req, self.cfg.limits)
        ref = await self._resolve(req.model)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return await self._generate_response(
            "completion", ref, prompt, sampling, req.stream, include_usage, chat=False
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
        flags = detect_red_flags(req.red_flag_text(), history=req.history or "")
        for f in flags:
            self.metrics.red_flags.inc(1, tags={"rule": f.id})
        ref = await self._resolve(req.model or self.cfg.model_name)
        prompt = render_assessment_prompt(req.case())
        oa.check_prompt_size(len(prompt), self.cfg.limits, "symptoms")
        max_tokens = req.max_tokens or min(ASSESSMENT_MAX_TOKENS, self.cfg.limits.max_tokens)
        if max_tokens > self.cfg.limits.max_tokens:
            raise ApiError(
                400,
                f"max_tokens={max_tokens} exceeds this server's limit of {self.cfg.limits.max_tokens}",
                param="max_tokens",
            )
        sampling = Sampling(max_tokens=max_tokens, temperature=0.0)
        generated: str | None = None
        try:
            generated = (await self._complete(ref, prompt, sampling))["text"]
        except ApiError as exc:
            # The model is overloaded or slow; an emergency must still be told to call for help.
            if not flags or exc.status < 500:
                raise
        took = time.perf_counter() - t0
        self.metrics.request("assessment", ref.name, 200, took)
        return JSONResponse(build_assessment(generated, flags, model=ref.name, latency_ms=took * 1000))


class _ResidentAdapter:
    """An adapter loaded in this replica's engine; Ray's multiplexer unloads it LRU via ``__del__``."""

    def __init__(self, server: "LLMServer", name: str, path: Any) -> None:
        self.server, self.name, self.path = server, name, path
        self.loop = asyncio.get_running_loop()
        self.released = False

    def __del__(self) -> None:
        if self.released:
            return
        self.released = True
        self.server.cache.unpin(self.path)
        asyncio.run_coroutine_threadsafe(self.server.engine.remove_adapter(self.name), self.loop)


@serve.deployment
class LLMServer:
    """Owns the engine; one per GPU. Streams chunks as dicts to the router."""

    def __init__(
        self,
        args: dict[str, Any],
        engine_factory: str | None = None,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        from healthnav.serving.metrics import EngineMetrics

        self.cfg = ServeAppConfig.model_validate(args)
        self.engine = make_engine(self.cfg, engine_factory, engine_options)
        self.cache = AdapterCache(self.cfg.adapter_cache_dir, self.cfg.adapter_cache_max_bytes)
        self.metrics = EngineMetrics()
        self._uris: dict[str, str] = {}
        self._ongoing = 0

        async def load(model_id: str) -> _ResidentAdapter:
            uri = self._uris[model_id]
            path = await asyncio.to_thread(self.cache.fetch, model_id, uri)
            self.cache.pin(path)
            try:
                await self.engine.add_adapter(model_id, path)
            except Exception:
                self.cache.unpin(path)
                raise
            self.metrics.adapter_loads.inc(1, tags={"adapter": model_id})
            return _ResidentAdapter(self, model_id, path)

        self._get_adapter = serve.multiplexed(max_num_models_per_replica=self.cfg.engine_args.max_loras)(load)

    async def ready(self) -> dict[str, Any]:
        return {
            "engine": self.cfg.engine,
            "model": self.cfg.model_name,
            "max_model_len": self.engine.max_model_len,
        }

    async def check_health(self) -> None:
        """Ray restarts a replica whose engine died (vLLM exposes check_health)."""
        inner = getattr(self.engine, "engine", None)
        if inner is not None and hasattr(inner, "check_health"):
            await inner.check_health()

    async def complete(
        self, prompt: str, sampling: dict[str, Any], adapter: str | None, adapter_uri: str | None
    ) -> dict[str, Any]:
        """The whole generation as one message (non-streaming requests)."""
        started = time.perf_counter()
        ttft: float | None = None
        parts: list[str] = []
        last: dict[str, Any] = {"finish_reason": "stop", "prompt_tokens": 0, "completion_tokens": 0}
        async for chunk in self._chunks(prompt, sampling, adapter, adapter_uri):
            if chunk.get("error"):
                return chunk
            if ttft is None:
                ttft = time.perf_counter() - started
            parts.append(chunk["text"])
            last = chunk
        return {
            "text": "".join(parts),
            "finish_reason": last["finish_reason"],
            "prompt_tokens": last["prompt_tokens"],
            "completion_tokens": last["completion_tokens"],
            "ttft": ttft,
            "logprobs": last.get("logprobs"),
        }

    async def generate(
        self, prompt: str, sampling: dict[str, Any], adapter: str | None, adapter_uri: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream chunks to the router, coalescing those the engine produced while one was in flight.

        Each yield is a Ray message (and, through the router, an SSE event through the proxy):
        sending one per token makes the serving layer, not the model, the bottleneck under
        load. The first chunk goes out at once (time to first token is untouched); after it,
        whatever has accumulated while the previous message was sent is merged into one.
        """
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for chunk in self._chunks(prompt, sampling, adapter, adapter_uri):
                    queue.put_nowait(chunk)
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(pump())
        try:
            while (chunk := await queue.get()) is not None:
                while not queue.empty() and not chunk.get("error"):
                    nxt = queue.get_nowait()
                    if nxt is None:
                        queue.put_nowait(None)
                        break
                    chunk = merge_chunks(chunk, nxt)
                yield chunk
                if chunk.get("error"):
                    break
            await task
        finally:
            if not task.done():  # the client went away: stop the engine's generation
                task.cancel()

    async def _chunks(
        self, prompt: str, sampling: dict[str, Any], adapter: str | None, adapter_uri: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        self._ongoing += 1
        self.metrics.set_depth(getattr(self.engine, "waiting", 0), self._ongoing)
        try:
            if adapter is not None:
                assert adapter_uri is not None
                self._uris[adapter] = adapter_uri
                self.metrics.adapter_requests.inc(1, tags={"adapter": adapter})
                try:
                    await self._get_adapter(adapter)
                except AdapterError as exc:
                    yield {
                        "error": {
                            "status": 502,
                            "message": str(exc),
                            "param": "model",
                            "type": "adapter_error",
                        }
                    }
                    return
            request_id = uuid.uuid4().hex
            try:
                async for chunk in self.engine.generate(
                    prompt,
                    Sampling(**{**sampling, "stop": tuple(sampling["stop"])}),
                    adapter=adapter,
                    request_id=request_id,
                ):
                    yield chunk.to_dict()
            except EngineRequestError as exc:
                yield {"error": {"status": exc.status, "message": exc.message, "param": exc.param}}
        finally:
            self._ongoing -= 1
            self.metrics.set_depth(getattr(self.engine, "waiting", 0), self._ongoing)


def merge_chunks(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """One chunk standing for ``a`` then ``b``: text concatenated, the rest from the later one."""
    if b.get("error"):
        return b
    return {**b, "text": a["text"] + b["text"]}


def build_app(args: dict[str, Any]) -> serve.Application:
    """The application for ``serve.run``/serveConfigV2; ``args`` is ``ServeAppConfig.to_dict()``."""
    return compose_app(ServeAppConfig.model_validate(args))


def compose_app(
    cfg: ServeAppConfig, *, engine_factory: str | None = None, engine_options: dict[str, Any] | None = None
) -> serve.Application:
    """``build_app`` with an engine override, for benchmarks that must isolate the serving layer."""
    data = cfg.to_dict()
    llm = LLMServer.options(**llm_deployment_options(cfg)).bind(data, engine_factory, engine_options)
    return Router.options(**router_deployment_options(cfg)).bind(data, llm)
