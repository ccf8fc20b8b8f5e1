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
read, so the replica that receives a request decides. The base model and adapters resident on
this replica are served here; a request for an adapter this replica does not hold is forwarded
through a handle to its own deployment with ``multiplexed_model_id=<adapter>``, and Ray picks a
replica that holds it (or, if none does, a lightly loaded one, which loads it; possibly this
one). ``@serve.multiplexed`` loads adapters on demand and unloads them LRU per replica.

Backpressure: :class:`Admission` lets at most ``maxOngoingRequests`` generations into a replica's
engine and ``maxQueuedRequests`` wait; beyond that the answer is 503 with ``Retry-After`` in
OpenAI's error shape, and an assessment with red flags still answers ``emergency`` — which is why
admission lives here and Ray's own per-replica cap sits above it (Ray's proxy would otherwise
reject before any of our code runs). Request bodies and generations are never logged.

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
HTTP_HEADROOM = 16
"""Requests a replica takes beyond its engine's admission limit and queue (see llm_deployment_options)."""


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
    """Options of the deployment: GPUs, autoscaling, and Ray's per-replica cap above our admission.

    The engine's concurrency is bounded by :class:`Admission` (``maxOngoingRequests`` generating,
    ``maxQueuedRequests`` waiting). Ray's ``max_ongoing_requests`` is set above that, with
    :data:`HTTP_HEADROOM` for health checks, model listings and adapter requests passing through
    to another replica, so a saturated replica still answers in our words (an OpenAI-shaped 503,
    or an emergency assessment). Past Ray's cap, or while the deployment scales up from zero,
    the proxy queues requests and answers 503 with ``Retry-After`` itself beyond
    ``max_queued_requests``. That queue also holds every request until a replica has accepted
    it, so a burst passes through it even when replicas have room (more so while a CPU-bound
    engine holds the replica's GIL); it is sized to two replicas' worth of requests.
    """
    lim = cfg.limits
    queue = lim.max_queued_requests
    waiting = queue if queue >= 0 else 3 * lim.max_ongoing_requests
    cap = lim.max_ongoing_requests + waiting + HTTP_HEADROOM
    return {
        "name": "LLMServer",
        "ray_actor_options": {"num_cpus": cfg.num_cpus_per_replica, "num_gpus": cfg.num_gpus_per_replica},
        "autoscaling_config": autoscaling_config(cfg),
        "max_ongoing_requests": cap,
        "max_queued_requests": 2 * cap if queue >= 0 else -1,
        "backpressure_config": {"status_code": 503, "retry_after_s": RETRY_AFTER_S},
        "health_check_period_s": 10,
        "health_check_timeout_s": 30,
        "graceful_shutdown_timeout_s": lim.request_timeout_seconds,
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


OVERLOADED = {
    "status": 503,
    "message": f"the model is at capacity; retry after {RETRY_AFTER_S} s",
    "type": "overloaded_error",
    "code": "overloaded",
}
"""What :meth:`LLMServer.complete`/``generate`` answer when :class:`Admission` refuses a request."""


def engine_error(err: dict[str, Any]) -> ApiError:
    """The ApiError for an ``{"error": ...}`` answer of :meth:`LLMServer.complete`/``generate``."""
    status = err.get("status", 400)
    return ApiError(
        status,
        err["message"],
        param=err.get("param"),
        type=err.get("type", "invalid_request_error"),
        code=err.get("code"),
        headers={"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None,
    )


def overloaded() -> ApiError:
    return engine_error(OVERLOADED)


class Admission:
    """At most ``limit`` generations at once in this replica's engine, at most ``queue`` waiting.

    ``queue`` < 0 lets any number wait. A request that would exceed both is refused at once
    (:meth:`enter` returns False) rather than queued forever; the caller answers 503.
    """

    def __init__(self, limit: int, queue: int) -> None:
        self.queue = queue
        self.waiting = 0
        self._slots = asyncio.Semaphore(limit)

    async def enter(self) -> bool:
        if self._slots.locked():
            if 0 <= self.queue <= self.waiting:
                return False
            self.waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self.waiting -= 1
        else:
            await self._slots.acquire()
        return True

    def leave(self) -> None:
        self._slots.release()


# Everything LLMServer uses must be defined above it: @serve.ingress pickles the FastAPI app, and
# with it the globals its routes' code refers to, when the class is decorated.


def merge_chunks(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """One chunk standing for ``a`` then ``b``: text concatenated, the rest from the later one."""
    if b.get("error"):
        return b
    return {**b, "text": a["text"] + b["text"]}


class LocalStream:
    """A generation running in this replica, with the two things the SSE writer uses of a
    ``DeploymentResponseGenerator``: async iteration and ``cancel()``."""

    _closing: set[Any] = set()

    def __init__(self, agen: AsyncIterator[dict[str, Any]]) -> None:
        self._agen = agen

    def __aiter__(self) -> "LocalStream":
        return self

    def __anext__(self) -> Any:
        return self._agen.__anext__()

    def cancel(self) -> None:
        """Stop the generation (and free its admission slot) when the client went away."""
        task = asyncio.ensure_future(self._agen.aclose())  # type: ignore[attr-defined]
        self._closing.add(task)  # keep a reference until it ran
        task.add_done_callback(self._closing.discard)


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


class _ResidentAdapter:
    """An adapter loaded in this replica's engine; Ray's multiplexer unloads it LRU via ``__del__``."""

    def __init__(self, server: "LLMServer", name: str, path: Any) -> None:
        self.server, self.name, self.path = server, name, path
        self.loop = asyncio.get_running_loop()
        self.released = False
        server.resident.add(name)

    def __del__(self) -> None:
        if self.released:
            return
        self.released = True
        self.server.resident.discard(self.name)
        self.server.cache.unpin(self.path)
        asyncio.run_coroutine_threadsafe(self.server.engine.remove_adapter(self.name), self.loop)


@serve.deployment
@serve.ingress(api)
class LLMServer:
    """HTTP ingress and engine in one replica (one per GPU); see the module docstring for why.

    HTTP routes serve the base model and resident adapters by calling :meth:`complete` and
    :meth:`generate` in-process; the same two methods are what a handle call from another
    replica runs when it forwards an adapter request here.
    """

    def __init__(
        self,
        args: dict[str, Any],
        engine_factory: str | None = None,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        from healthnav.serving.metrics import EngineMetrics, RequestMetrics

        self.cfg = ServeAppConfig.model_validate(args)
        self.engine = make_engine(self.cfg, engine_factory, engine_options)
        self.cache = AdapterCache(self.cfg.adapter_cache_dir, self.cfg.adapter_cache_max_bytes)
        self.resolver = AdapterResolver(self.cfg)
        self.metrics = RequestMetrics()
        self.engine_metrics = EngineMetrics()
        self.admission = Admission(self.cfg.limits.max_ongoing_requests, self.cfg.limits.max_queued_requests)
        self.created = int(time.time())
        self.resident: set[str] = set()
        """Adapters loaded in this replica's engine: requests for them are served here."""
        self._uris: dict[str, str] = {}
        self._ongoing = 0
        self._handles: dict[tuple[str, bool], DeploymentHandle] = {}
        self._deployment: DeploymentHandle | None = None

        async def load(model_id: str) -> _ResidentAdapter:
            uri = self._uris[model_id]
            path = await asyncio.to_thread(self.cache.fetch, model_id, uri)
            self.cache.pin(path)
            try:
                await self.engine.add_adapter(model_id, path)
            except Exception as exc:  # weights that do not fit the model or the engine's limits
                self.cache.unpin(path)
                log.warning("adapter %s failed to load: %s", model_id, type(exc).__name__)
                raise AdapterError(f"adapter {model_id!r} could not be loaded: {exc}") from exc
            self.engine_metrics.adapter_loads.inc(1, tags={"adapter": model_id})
            return _ResidentAdapter(self, model_id, path)

        self._get_adapter = serve.multiplexed(max_num_models_per_replica=self.cfg.engine_args.max_loras)(load)
        api.state.api_keys = api_keys(self.cfg)
        api.state.max_body_bytes = self.cfg.limits.max_prompt_chars * 4 + BODY_OVERHEAD_BYTES

    # -- where a request runs --

    def _elsewhere(self, ref: ModelRef) -> bool:
        """Whether to forward: an adapter this replica does not hold, when Ray can pick the replica."""
        return not ref.is_base and ref.name not in self.resident and self._peer_handle() is not None

    def _peer_handle(self) -> DeploymentHandle | None:
        if self._deployment is None:
            try:
                ctx = serve.get_replica_context()
            except Exception:  # not running in a replica (in-process use): serve everything here
                return None
            self._deployment = serve.get_deployment_handle(ctx.deployment, ctx.app_name)
        return self._deployment

    def _handle(self, ref: ModelRef, *, stream: bool) -> DeploymentHandle:
        """The handle routing to a replica holding ``ref``, built once per (adapter, streaming).

        ``options()`` builds a new handle object; doing it per request is measurable overhead.
        The multiplexed model id is what routes adapter requests to replicas holding them.
        """
        key = (ref.name, stream)
        handle = self._handles.get(key)
        if handle is None:
            if len(self._handles) >= 1024:  # adapters come and go; don't grow without bound
                self._handles.clear()
            peer = self._peer_handle()
            assert peer is not None
            handle = peer.options(stream=stream, multiplexed_model_id=ref.name)
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
        adapter = None if ref.is_base else ref.name
        stream: Any
        if self._elsewhere(ref):
            stream = self._handle(ref, stream=True).generate.remote(
                prompt, sampling.__dict__, adapter, ref.uri
            )
        else:
            stream = LocalStream(self.generate(prompt, sampling.__dict__, adapter, ref.uri))
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
            raise engine_error(first["error"])
        return stream, first, time.perf_counter() - started

    async def _complete(self, ref: ModelRef, prompt: str, sampling: Sampling) -> dict[str, Any]:
        """Run a generation to the end: here, or on a replica holding the adapter (one Ray message).

        Returns ``text``, ``finish_reason``, ``prompt_tokens``, ``completion_tokens``, ``ttft``
        and ``logprobs``, or raises ApiError.
        """
        adapter = None if ref.is_base else ref.name
        elsewhere = self._elsewhere(ref)
        response: Any = None
        try:
            async with asyncio.timeout(self.cfg.limits.request_timeout_seconds):
                if elsewhere:
                    response = self._handle(ref, stream=False).complete.remote(
                        prompt, sampling.__dict__, adapter, ref.uri
                    )
                    out = await response
                else:  # in this task: the timeout cancels the generation with it
                    out = await self.complete(prompt, sampling.__dict__, adapter, ref.uri)
        except BackPressureError as exc:
            raise overloaded() from exc
        except TimeoutError as exc:
            if response is not None:
                response.cancel()
            raise ApiError(504, "timed out waiting for the model", type="timeout_error") from exc
        if out.get("error"):
            raise engine_error(out["error"])
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
        return JSONResponse({"status": "ready", **(await self.ready())})

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

    # -- the engine: called in-process by the routes above, or through a handle by another replica --

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
        """Stream chunks, coalescing those the engine produced while one was in flight.

        Each yield is an SSE event through the proxy (and, for a request forwarded from another
        replica, a Ray message first): sending one per token makes the serving layer, not the
        model, the bottleneck under load. The first chunk goes out at once (time to first token
        is untouched); after it, whatever has accumulated while the previous one was sent is
        merged into one.
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
        """Engine chunks as dicts, after admission; ``{"error": ...}`` for what the caller answers 4xx/5xx."""
        if not await self.admission.enter():
            yield {"error": OVERLOADED}
            return
        self._ongoing += 1
        self.engine_metrics.set_depth(
            getattr(self.engine, "waiting", 0) + self.admission.waiting, self._ongoing
        )
        try:
            if adapter is not None:
                assert adapter_uri is not None
                self._uris[adapter] = adapter_uri
                self.engine_metrics.adapter_requests.inc(1, tags={"adapter": adapter})
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
            self.admission.leave()
            self._ongoing -= 1
            self.engine_metrics.set_depth(
                getattr(self.engine, "waiting", 0) + self.admission.waiting, self._ongoing
            )


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
