"""One serving replica's work below HTTP: where a request runs, admission, adapters, the engine.

A replica owns an engine (one GPU). It serves the base model and the adapters resident in its
engine itself; a request for an adapter it does not hold is forwarded through a handle to its
own deployment with ``multiplexed_model_id=<adapter>``, and Ray picks a replica that holds it
(or, if none does, a lightly loaded one, which loads it; possibly this one).
``@serve.multiplexed`` loads adapters on demand and unloads them LRU per replica.

What crosses the handle is typed (:mod:`healthnav.serving.messages`): a :class:`GenerateRequest`
in, :class:`~healthnav.serving.engine.Chunk` values (or one :class:`Completion`) out, and a
:class:`GenerationError` value for a refusal. The same two methods, :meth:`Replica.complete_here`
and :meth:`Replica.generate_here`, run a local request in this task and a forwarded one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from healthnav.contracts.probes import AdapterProbes, AdapterVerification
from healthnav.serving.adapters import AdapterCache, AdapterError, AdapterResolver, ModelRef
from healthnav.serving.admission import Admission
from healthnav.serving.config import ServeAppConfig
from healthnav.serving.engine import Chunk, EngineRequestError, EngineUnavailable
from healthnav.serving.engines import make_engine
from healthnav.serving.errors import ApiError, overloaded, timed_out
from healthnav.serving.messages import EMPTY_CHUNK, OVERLOADED, Completion, GenerateRequest, GenerationError
from healthnav.serving.metrics import EngineMetrics, RequestMetrics
from healthnav.serving.verification import verify_adapter

log = logging.getLogger("healthnav.serving")

MAX_HANDLES = 1024
"""Handles kept per replica (one per adapter and mode); adapters come and go, so it is bounded."""


class GenerationStream(Protocol):
    """What the SSE writer uses of a running generation, local or on another replica."""

    def __aiter__(self) -> AsyncIterator[Chunk | GenerationError]: ...

    def cancel(self) -> None: ...


class LocalStream:
    """A generation running in this replica, shaped like Ray's ``DeploymentResponseGenerator``."""

    _closing: set[Any] = set()

    def __init__(self, agen: AsyncIterator[Chunk | GenerationError]) -> None:
        self._agen = agen

    def __aiter__(self) -> LocalStream:
        return self

    def __anext__(self) -> Any:
        return self._agen.__anext__()

    def cancel(self) -> None:
        """Stop the generation (and free its admission slot) when the client went away."""
        task = asyncio.ensure_future(self._agen.aclose())  # type: ignore[attr-defined]
        self._closing.add(task)  # keep a reference until it ran
        task.add_done_callback(self._closing.discard)


class _ResidentAdapter:
    """An adapter loaded in this replica's engine; Ray's multiplexer unloads it LRU via ``__del__``."""

    def __init__(self, replica: Replica, name: str, path: Path) -> None:
        self.replica, self.name, self.path = replica, name, path
        self.loop = asyncio.get_running_loop()
        self.released = False
        replica.resident.add(name)

    def __del__(self) -> None:
        if self.released:
            return
        self.released = True
        self.replica.resident.discard(self.name)
        self.replica.cache.unpin(self.path)
        asyncio.run_coroutine_threadsafe(self.replica.engine.remove_adapter(self.name), self.loop)


class Replica:
    """The engine, its admission and adapters, and the routing of requests to where they run."""

    def __init__(
        self,
        cfg: ServeAppConfig,
        engine_factory: str | None = None,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.engine = make_engine(cfg, engine_factory, engine_options)
        self.cache = AdapterCache(cfg.adapter_cache_dir, cfg.adapter_cache_max_bytes)
        self.resolver = AdapterResolver(cfg)
        self.metrics = RequestMetrics()
        self.engine_metrics = EngineMetrics()
        self.admission = Admission(cfg.limits.max_ongoing_requests, cfg.limits.max_queued_requests)
        self.timeout = cfg.limits.request_timeout_seconds
        self.resident: set[str] = set()
        """Adapters loaded in this replica's engine: requests for them are served here."""
        self.verifications: dict[str, AdapterVerification] = {}
        """What loading each adapter found, the last time this replica loaded it."""
        self._uris: dict[str, str] = {}
        self._ongoing = 0
        self._handles: dict[tuple[str, bool], DeploymentHandle] = {}
        self._deployment: DeploymentHandle | None = None

        async def load(model_id: str) -> _ResidentAdapter:  # Ray's multiplexer wants a plain function
            return await self._load_adapter(model_id)

        self._get_adapter = serve.multiplexed(max_num_models_per_replica=cfg.engine_args.max_loras)(load)

    async def _load_adapter(self, model_id: str) -> _ResidentAdapter:
        uri = self._uris[model_id]
        path = await asyncio.to_thread(self.cache.fetch, model_id, uri)
        self.cache.pin(path)
        try:
            await self.engine.add_adapter(model_id, path)
        except Exception as exc:  # weights that do not fit the model or the engine's limits
            self.cache.unpin(path)
            log.warning("adapter %s failed to load: %s", model_id, type(exc).__name__)
            message = f"could not be loaded: {exc}"
            self.verifications[model_id] = AdapterVerification(
                adapter=model_id, state="LoadFailed", message=message
            )
            raise AdapterError(f"adapter {model_id!r} {message}") from exc
        if (probes := AdapterProbes.read(path)) is None:
            verification = AdapterVerification(
                adapter=model_id, state="NotRecorded", message="ships no probes.json: served unverified"
            )
        else:
            verdict = await verify_adapter(self.engine, model_id, probes)
            log.info("adapter %s: %s", model_id, verdict.message)  # figures only, no request text
            if not verdict.ok:
                await self.engine.remove_adapter(model_id)
                self.cache.unpin(path)
                self.engine_metrics.adapter_refusals.inc(1, tags={"adapter": model_id})
                message = f"refused: it {verdict.message}"
                self.verifications[model_id] = AdapterVerification(
                    adapter=model_id, state="Refused", message=message
                )
                raise AdapterError(f"adapter {model_id!r} {message}")
            verification = AdapterVerification(adapter=model_id, state="Verified", message=verdict.message)
        self.verifications[model_id] = verification
        self.engine_metrics.adapter_loads.inc(1, tags={"adapter": model_id})
        return _ResidentAdapter(self, model_id, path)

    async def verify(self, ref: ModelRef) -> AdapterVerification:
        """Load ``ref`` where Ray routes its requests and say what its verification found.

        The operator asks this after a rollout, so a ModelServe's status shows a refused adapter
        instead of reporting it live until the first patient's request gets a 502.
        """
        try:
            async with asyncio.timeout(self.timeout):
                if self.runs_elsewhere(ref):
                    out = await self._handle(ref, stream=False).verify_adapter.remote(ref.name, ref.uri)
                else:
                    out = await self.verify_here(ref.name, ref.uri)
        except BackPressureError as exc:
            raise overloaded() from exc
        except TimeoutError as exc:
            raise timed_out() from exc
        if isinstance(out, GenerationError):
            raise ApiError.from_generation(out)
        return out

    async def verify_here(self, name: str, uri: str | None) -> AdapterVerification | GenerationError:
        """Load adapter ``name`` (from ``uri``) into this replica unless resident; its verdict,
        or a 503 value when its files cannot be fetched now (a value: it crosses a Ray handle)."""
        assert uri is not None
        self._uris[name] = uri
        try:
            await self._get_adapter(name)
        except AdapterError:
            pass  # a load failure or refusal is the verdict recorded below
        except Exception as exc:  # storage unreachable: no verdict yet, the operator asks again
            log.warning("adapter %s could not be fetched for verification: %s", name, type(exc).__name__)
            return GenerationError(503, "adapter storage unavailable", type="server_error")
        return self.verifications[name]

    # -- which model a request names -----------------------------------------------------------

    async def resolve(self, name: str) -> ModelRef:
        """The base model or adapter ``name`` refers to; 404 when none, 503 when storage is down."""
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

    async def model_names(self) -> list[str]:
        try:
            return await asyncio.to_thread(self.resolver.names)
        except Exception:
            return [self.resolver.base_name, *self.resolver.configured]

    # -- where a request runs ----------------------------------------------------------------

    def runs_elsewhere(self, ref: ModelRef) -> bool:
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
            if len(self._handles) >= MAX_HANDLES:
                self._handles.clear()
            peer = self._peer_handle()
            assert peer is not None
            handle = peer.options(stream=stream, multiplexed_model_id=ref.name)
            self._handles[key] = handle
        return handle

    async def open_stream(
        self, ref: ModelRef, request: GenerateRequest
    ) -> tuple[GenerationStream, Chunk, float]:
        """Start a generation; returns (stream, first chunk, seconds to it) or raises ApiError."""
        started = time.perf_counter()
        stream: Any
        if self.runs_elsewhere(ref):
            stream = self._handle(ref, stream=True).generate.remote(request)
        else:
            stream = LocalStream(self.generate_here(request))
        try:
            async with asyncio.timeout(self.timeout):
                first = await stream.__anext__()
        except BackPressureError as exc:
            raise overloaded() from exc
        except TimeoutError as exc:
            stream.cancel()
            raise timed_out() from exc
        except StopAsyncIteration:
            first = EMPTY_CHUNK
        if isinstance(first, GenerationError):
            raise ApiError.from_generation(first)
        return stream, first, time.perf_counter() - started

    async def complete(self, ref: ModelRef, request: GenerateRequest) -> Completion:
        """Run a generation to the end: here, or on a replica holding the adapter (one Ray message)."""
        response: Any = None
        try:
            async with asyncio.timeout(self.timeout):
                if self.runs_elsewhere(ref):
                    response = self._handle(ref, stream=False).complete.remote(request)
                    out = await response
                else:  # in this task: the timeout cancels the generation with it
                    out = await self.complete_here(request)
        except BackPressureError as exc:
            raise overloaded() from exc
        except TimeoutError as exc:
            if response is not None:
                response.cancel()
            raise timed_out() from exc
        if isinstance(out, GenerationError):
            raise ApiError.from_generation(out)
        return out

    # -- the engine: runs a local request, or one another replica forwarded here ----------------

    async def complete_here(self, request: GenerateRequest) -> Completion | GenerationError:
        """The whole generation as one value (non-streaming requests)."""
        started = time.perf_counter()
        ttft: float | None = None
        parts: list[str] = []
        last = Chunk("", "stop")
        async for chunk in self._chunks(request):
            if isinstance(chunk, GenerationError):
                return chunk
            if ttft is None:
                ttft = time.perf_counter() - started
            parts.append(chunk.text)
            last = chunk
        return Completion.from_chunks("".join(parts), last, ttft)

    async def generate_here(self, request: GenerateRequest) -> AsyncIterator[Chunk | GenerationError]:
        """Stream chunks, coalescing those the engine produced while one was in flight.

        Each yield is an SSE event through the proxy (and, for a request forwarded from another
        replica, a Ray message first): sending one per token makes the serving layer, not the
        model, the bottleneck under load. The first chunk goes out at once (time to first token
        is untouched); after it, whatever has accumulated while the previous one was sent is
        merged into one.
        """
        queue: asyncio.Queue[Chunk | GenerationError | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for chunk in self._chunks(request):
                    queue.put_nowait(chunk)
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(pump())
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, GenerationError):
                    yield item
                    break
                while not queue.empty():
                    nxt = queue.get_nowait()
                    if nxt is None:
                        queue.put_nowait(None)
                        break
                    if isinstance(nxt, GenerationError):
                        item = nxt
                        break
                    item = item.followed_by(nxt)
                yield item
                if isinstance(item, GenerationError):
                    break
            await task
        finally:
            if not task.done():  # the client went away: stop the engine's generation
                task.cancel()

    async def _chunks(self, request: GenerateRequest) -> AsyncIterator[Chunk | GenerationError]:
        """Engine chunks after admission; a :class:`GenerationError` for what the caller answers 4xx/5xx."""
        if not await self.admission.enter():
            yield OVERLOADED
            return
        self._ongoing += 1
        self._report_depth()
        try:
            adapter = request.adapter
            if adapter is not None:
                assert request.adapter_uri is not None
                self._uris[adapter] = request.adapter_uri
                self.engine_metrics.adapter_requests.inc(1, tags={"adapter": adapter})
                try:
                    await self._get_adapter(adapter)
                except AdapterError as exc:
                    yield GenerationError(502, str(exc), type="adapter_error", param="model")
                    return
            try:
                async for chunk in self.engine.generate(
                    request.prompt, request.sampling, adapter=adapter, request_id=uuid.uuid4().hex
                ):
                    yield chunk
            except (EngineRequestError, EngineUnavailable) as exc:
                yield GenerationError.from_engine(exc)
        finally:
            self.admission.leave()
            self._ongoing -= 1
            self._report_depth()

    def _report_depth(self) -> None:
        self.engine_metrics.set_depth(
            getattr(self.engine, "waiting", 0) + self.admission.waiting, self._ongoing
        )

    async def check_health(self) -> None:
        """Ray restarts a replica whose engine died (vLLM exposes check_health)."""
        inner = getattr(self.engine, "engine", None)
        if inner is not None and hasattr(inner, "check_health"):
            await inner.check_health()
