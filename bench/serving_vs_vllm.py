"""Benchmark: healthnav's Ray Serve app beside ``vllm serve`` and Ray Serve LLM (issue 21).

A platform team compares healthnav with the two things it would deploy instead, so this runs all
three on this machine, one after another, over the same vLLM CPU build (``.venv-vllm``), the same
model and the same engine arguments, and drives each with the same load:

* ``vllm-serve``: vLLM's own OpenAI server (``python -m vllm.entrypoints.openai.api_server``, what
  ``vllm serve`` runs);
* ``ray-serve-llm``: Ray Serve LLM's ``build_openai_app`` with one ``LLMConfig``;
* ``healthnav``: ``hnav serve``, the app a ModelServe deploys, with ``engine: vllm``.

The engine arguments are derived once, from healthnav's own
:func:`healthnav.serving.engines.vllm.engine_kwargs`, and handed to the other two as CLI flags
and as ``engine_kwargs``: every server runs the same engine, LoRA enabled in all three. Both Ray
apps run under the same Serve settings (:data:`healthnav.serving.config.SERVE_ENV`).

The load is the official ``openai`` client: greedy chat completions over fixed prompts with a
fixed ``max_tokens``, streamed and not, at 1, 8 and 32 concurrent streams, a fixed request
count per level. Per server it reports TTFT p50/p99 (streamed: first content token), end-to-end
latency p50/p99, output tokens/s (from the servers' own ``usage``), errors, and the ratios
against ``vllm-serve``. Two phases per server start: base model only, then requests alternating
between the base model and one LoRA adapter (rank 8 on q/k/v/o, random non-zero weights made
here with peft). Ray Serve LLM loads LoRA adapters only from object storage, so the adapter is
staged to the local S3 server (moto) for it.

Rounds interleave: each round starts the three servers in a rotated order, so machine drift
does not favour one; figures pool every round's requests, throughput is the mean of the rounds.

Results go to ``bench/results/serving_vs_vllm.json``.

    make bench-serving                                    # installs Ray into .venv-vllm, then runs
    .venv/bin/python -m bench.serving_vs_vllm --rounds 1 --quick   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.serving_latency import pct

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "serving_vs_vllm.json"
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
SERVERS = ("vllm-serve", "ray-serve-llm", "healthnav")
MODEL = "bench"
ADAPTER = "triage"
PROMPTS = (
    "I have had a sore throat and a mild fever for two days. What should I do?",
    "My child has a runny nose and is sneezing but is eating and playing normally.",
    "I twisted my ankle playing football yesterday and it is swollen. Should I see someone?",
    "I have a dry cough that started a week ago after a cold. Is it worth seeing a doctor?",
)
# Goals (issue 21): at 1 and 32 streams, healthnav within 5 ms of vllm-serve on TTFT p50, at
# least 0.95x its throughput, no errors; and at least as good as Ray Serve LLM on every figure.
GOAL_TTFT_MS = 5.0
GOAL_THROUGHPUT = 0.95
GOAL_STREAMS = (1, 32)
# Ray's CPUs are logical: Ray Serve LLM reserves two for its engine replica (the replica actor and
# a placement-group bundle) and one for its ingress, more than this 2-core machine has, so both Ray
# servers get 4 (the same 2 physical cores either way).
RAY_LOGICAL_CPUS = 4


@dataclass(frozen=True)
class Engine:
    """The one engine every server runs: a model, an adapter and healthnav's engine arguments."""

    model: Path
    adapter: Path
    max_model_len: int = 1024
    max_loras: int = 2
    max_lora_rank: int = 8
    dtype: str = "float32"  # vLLM's CPU build computes in float32 on CPUs without AVX-512 BF16
    enforce_eager: bool = True  # no torch.compile warm-up: server starts stay ~30 s

    def healthnav_config(self, max_tokens: int) -> dict[str, Any]:
        """The ServeAppConfig ``hnav serve`` reads (camelCase, as a ModelServe renders it)."""
        return {
            "modelName": MODEL,
            "baseModel": f"file://{self.model}",
            "engine": "vllm",
            "engineArgs": {
                "maxModelLen": self.max_model_len,
                "maxLoras": self.max_loras,
                "maxLoraRank": self.max_lora_rank,
                "dtype": self.dtype,
                "enforceEager": self.enforce_eager,
            },
            "adapters": [{"name": ADAPTER, "uri": f"file://{self.adapter}"}],
            "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
            "limits": {"maxTokens": max_tokens, "maxOngoingRequests": 64, "maxQueuedRequests": 128},
            "numGpusPerReplica": 0,
            "numCpusPerReplica": 1,
            "apiKeysEnv": None,
        }

    def kwargs(self) -> dict[str, Any]:
        """healthnav's ``AsyncEngineArgs`` for this engine, less the model paths."""
        from healthnav.serving.config import ServeAppConfig
        from healthnav.serving.engines.vllm import engine_kwargs

        cfg = ServeAppConfig.model_validate(self.healthnav_config(max_tokens=1024))
        kwargs = engine_kwargs(cfg, str(self.model))
        del kwargs["model"], kwargs["tokenizer"]
        return kwargs


def healthnav_chat_template() -> str:
    """A Jinja chat template that renders a single-turn chat exactly as healthnav does.

    healthnav renders chat in its training prompt format
    (:func:`healthnav.contracts.prompts.render_chat`), not the model's own chat template; given
    this template, ``vllm serve`` and Ray Serve LLM send the engine the same prompt tokens, so
    the three servers do the same work per request (the results record the prompt tokens each
    reported, which must agree).
    """
    from healthnav.contracts.prompts import render_chat

    marker = "\x00CONTENT\x00"
    prefix, suffix = render_chat([{"role": "user", "content": marker}]).split(marker)
    assert "{" not in prefix + suffix, "the prompt format would need Jinja escaping"
    # The suffix goes in as a string literal: Jinja drops a template's trailing newline.
    return prefix + "{{ messages[-1]['content'] }}{{ " + json.dumps(suffix) + " }}"


def vllm_cli_flags(kwargs: dict[str, Any]) -> list[str]:
    """``AsyncEngineArgs`` keywords as ``vllm serve`` flags (``True`` → bare flag, ``False`` → none).

    >>> vllm_cli_flags({"max_model_len": 512, "enforce_eager": True, "disable_log_stats": False})
    ['--max-model-len', '512', '--enforce-eager']
    """
    flags: list[str] = []
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not False:
            flags += [flag, str(value)]
    return flags


# --- the servers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """A server under test: how to start it and which model names reach the base and the adapter."""

    name: str
    args: list[str]
    adapter_model: str
    env: dict[str, str] = field(default_factory=dict)


def server_for(name: str, engine: Engine, port: int, spec_file: Path, s3_env: dict[str, str]) -> Server:
    py = str(VLLM_PYTHON)
    if name == "vllm-serve":
        args = [py, "-m", "vllm.entrypoints.openai.api_server", "--model", str(engine.model)]
        args += ["--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(port)]
        args += ["--lora-modules", f"{ADAPTER}={engine.adapter}", *vllm_cli_flags(engine.kwargs())]
        args += ["--chat-template", str(spec_file)]
        return Server(name, args, ADAPTER)
    if name == "ray-serve-llm":
        args = [py, "-m", "bench.serving_vs_vllm", "--serve-ray-llm", str(spec_file), "--port", str(port)]
        return Server(name, args, f"{MODEL}:{ADAPTER}", env=s3_env)
    if name == "healthnav":
        args = [py, "-m", "healthnav.cli", "serve", "--config", str(spec_file), "--port", str(port)]
        args += ["--num-cpus", str(RAY_LOGICAL_CPUS)]
        return Server(name, args, ADAPTER)
    raise ValueError(f"unknown server {name!r}; one of {', '.join(SERVERS)}")


def ray_llm_config(engine: Engine, lora_prefix: str) -> dict[str, Any]:
    """Ray Serve LLM's ``LLMConfig`` for the same engine: one CPU replica, LoRA from S3."""
    return {
        "model_loading_config": {"model_id": MODEL, "model_source": str(engine.model)},
        "engine_kwargs": {**engine.kwargs(), "chat_template": healthnav_chat_template()},
        "placement_group_config": {"bundles": [{"CPU": 1}]},  # a CPU deployment: no GPU bundle
        "deployment_config": {"num_replicas": 1, "max_ongoing_requests": 64},
        "lora_config": {"dynamic_lora_loading_path": lora_prefix, "max_num_adapters_per_replica": 2},
        "runtime_env": {"env_vars": {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "VLLM_"))}},
    }


def serve_ray_llm(spec_file: Path, port: int) -> None:
    """Run Ray Serve LLM's OpenAI app until SIGTERM (runs inside .venv-vllm, as a server process)."""
    from ray.serve.llm import LLMConfig, build_openai_app

    from healthnav.serving.local import local_serve

    config = LLMConfig(**json.loads(spec_file.read_text()))

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    def app() -> Any:  # built once local_serve's Ray runs: the builder would start its own
        return build_openai_app({"llm_configs": [config]})

    with local_serve(app, name="ray-serve-llm", port=port, num_cpus=RAY_LOGICAL_CPUS, log_to_driver=True):
        signal.signal(signal.SIGTERM, stop)
        print(f"ray-serve-llm on http://127.0.0.1:{port}/v1", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


@contextmanager
def running(server: Server, port: int, log: Path, timeout: float = 600) -> Iterator[str]:
    """Start ``server``, wait until it answers both models, yield its base URL; stop it on exit."""
    from openai import OpenAI

    from healthnav.devenv import processes

    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    pid = processes.start(server.args, log, tie_to_parent=True, env={**env, **server.env})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        client = OpenAI(base_url=url, api_key="unused", timeout=120, max_retries=0)
        deadline = time.monotonic() + timeout
        for model in (MODEL, server.adapter_model):
            while True:
                if not processes.alive(pid):
                    raise RuntimeError(f"{server.name} exited; log {log}:\n{log.read_text()[-3000:]}")
                try:
                    client.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
                    )
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"{server.name} not answering {model} in {timeout:.0f} s; {log}"
                        ) from None
                    time.sleep(1)
        yield url
    finally:
        processes.stop([pid], timeout=30)


# --- the load ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    ok: bool
    latency_s: float
    ttft_s: float | None = None
    output_tokens: int = 0
    prompt_tokens: int = 0
    error: str = ""
    adapter: bool = False
    """Sent to the LoRA adapter (the mixed phase alternates base and adapter requests)."""


async def one_request(client: Any, model: str, prompt: str, stream: bool, max_tokens: int) -> Sample:
    """One greedy chat completion; TTFT is the first chunk that carries content."""
    sample = await _one_request(client, model, prompt, stream, max_tokens)
    return replace(sample, adapter=model != MODEL)


async def _one_request(client: Any, model: str, prompt: str, stream: bool, max_tokens: int) -> Sample:
    messages = [{"role": "user", "content": prompt}]
    t0 = time.perf_counter()
    try:
        if not stream:
            resp = await client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, temperature=0
            )
            u = resp.usage
            return Sample(True, time.perf_counter() - t0, None, u.completion_tokens, u.prompt_tokens)
        ttft, out, prompt_tokens = None, 0, 0
        chunks = await client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in chunks:
            if ttft is None and chunk.choices and chunk.choices[0].delta.content:
                ttft = time.perf_counter() - t0
            if chunk.usage:
                out, prompt_tokens = chunk.usage.completion_tokens, chunk.usage.prompt_tokens
        return Sample(ttft is not None, time.perf_counter() - t0, ttft, out, prompt_tokens)
    except Exception as exc:  # counted and reported, never raised: an error is a figure here
        return Sample(False, time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}"[:300])


async def run_level(
    url: str, models: Sequence[str], streams: int, requests: int, stream: bool, max_tokens: int
) -> tuple[list[Sample], float]:
    """``requests`` requests from ``streams`` concurrent clients; returns the samples and wall time."""
    import httpx
    from openai import AsyncOpenAI

    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=streams + 4)
    http = httpx.AsyncClient(limits=limits, timeout=300)
    client = AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, http_client=http)
    todo = iter(range(requests))
    samples: list[Sample] = []

    async def worker() -> None:
        for i in todo:
            model, prompt = models[i % len(models)], PROMPTS[i % len(PROMPTS)]
            samples.append(await one_request(client, model, prompt, stream, max_tokens))

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(streams)))
    finally:
        await client.close()
    return samples, time.perf_counter() - started


def requests_for(streams: int, quick: bool) -> int:
    """A fixed request count per level: enough that every stream sends several."""
    return max(4, streams) if quick else max(12, 2 * streams)


# --- figures ----------------------------------------------------------------------------------


def summarize(samples: list[Sample], walls: list[float], tokens: list[int]) -> dict[str, Any]:
    ok = [s for s in samples if s.ok]
    ms = lambda xs: {"p50": round(pct(xs, 50) * 1000, 1), "p99": round(pct(xs, 99) * 1000, 1)}  # noqa: E731
    ttfts = [s.ttft_s for s in ok if s.ttft_s is not None]
    per_round = [t / w for t, w in zip(tokens, walls, strict=True) if w > 0]
    split = by_model(samples)
    return {
        "requests": len(samples),
        "errors": len(samples) - len(ok),
        "errorExamples": sorted({s.error for s in samples if s.error})[:3],
        "ttftMs": ms(ttfts) if ttfts else None,
        "latencyMs": ms([s.latency_s for s in ok]),
        "outputTokensPerS": round(statistics.mean(per_round), 1) if per_round else 0.0,
        "outputTokensPerSRounds": [round(x, 1) for x in per_round],
        "meanOutputTokens": round(statistics.mean(s.output_tokens for s in ok), 1) if ok else 0,
        "meanPromptTokens": round(statistics.mean(s.prompt_tokens for s in ok), 1) if ok else 0,
        **({"byModel": split} if split else {}),
    }


def by_model(samples: list[Sample]) -> dict[str, Any] | None:
    """TTFT and latency of base and adapter requests apart, for a phase that mixes them.

    LoRA requests run slower on vLLM's CPU build (about 350 against 210 ms to first token at one
    stream), so a mixed phase's p50 falls between two modes and moves with which side of the gap
    the middle sample lands on; each model's own p50 is the figure to compare.
    """
    ok = [s for s in samples if s.ok]
    if not any(s.adapter for s in ok):
        return None
    ms = lambda xs: {"p50": round(pct(xs, 50) * 1000, 1), "p99": round(pct(xs, 99) * 1000, 1)}  # noqa: E731
    out: dict[str, Any] = {}
    groups = {"base": [s for s in ok if not s.adapter], "adapter": [s for s in ok if s.adapter]}
    for label, group in groups.items():
        ttfts = [s.ttft_s for s in group if s.ttft_s is not None]
        out[label] = {"ttftMs": ms(ttfts) if ttfts else None, "latencyMs": ms([s.latency_s for s in group])}
    return out


def ttft_delta(ours: dict[str, Any], ref: dict[str, Any]) -> float | None:
    return (ours["ttftMs"]["p50"] - ref["ttftMs"]["p50"]) if ours["ttftMs"] and ref["ttftMs"] else None


def compare(ours: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """healthnav (or Ray Serve LLM) against vllm-serve: TTFT p50 difference and throughput ratio."""
    ttft = ttft_delta(ours, ref)
    if "byModel" in ours and "byModel" in ref:  # the worse of base and adapter, each against its own
        deltas = [ttft_delta(ours["byModel"][m], ref["byModel"][m]) for m in ("base", "adapter")]
        ttft = None if None in deltas else max(d for d in deltas if d is not None)
    thr = ours["outputTokensPerS"] / ref["outputTokensPerS"] if ref["outputTokensPerS"] else None
    lat = ours["latencyMs"]["p50"] / ref["latencyMs"]["p50"] if ref["latencyMs"]["p50"] else None
    return {
        "ttftP50DeltaMs": None if ttft is None else round(ttft, 1),
        "throughputRatio": None if thr is None else round(thr, 3),
        "latencyP50Ratio": None if lat is None else round(lat, 3),
        "samePromptAndOutputTokens": (ours["meanPromptTokens"], ours["meanOutputTokens"])
        == (ref["meanPromptTokens"], ref["meanOutputTokens"]),
    }


def no_worse(ours: dict[str, Any], theirs: dict[str, Any], slack_ms: float) -> bool:
    """At least as good as ``theirs`` on every figure, within ``slack_ms`` of timer noise."""
    if (
        ours["errors"] > theirs["errors"]
        or ours["outputTokensPerS"] < GOAL_THROUGHPUT * theirs["outputTokensPerS"]
    ):
        return False
    figures = [(ours, theirs)]
    if "byModel" in ours and "byModel" in theirs:
        figures = [(ours["byModel"][m], theirs["byModel"][m]) for m in ("base", "adapter")]
    pairs = [(a["latencyMs"][q], b["latencyMs"][q]) for a, b in figures for q in ("p50", "p99")]
    timed = [(a["ttftMs"], b["ttftMs"]) for a, b in figures if a["ttftMs"] and b["ttftMs"]]
    pairs += [(a[q], b[q]) for a, b in timed for q in ("p50", "p99")]
    return all(mine <= other + slack_ms for mine, other in pairs)


def goals(levels: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Issue 21's goals, checked at 1 and 32 streams of every phase, streamed and not.

    TTFT is compared where it exists (streamed levels); in the mixed phase, base and adapter
    requests each against their own (:func:`by_model`).
    """
    verdicts: dict[str, Any] = {}
    for key, servers in levels.items():
        if int(key.split("/")[1].split("x")[0]) not in GOAL_STREAMS:
            continue
        hn, ref = servers.get("healthnav"), servers.get("vllm-serve")
        if not hn or not ref:
            continue
        vs = compare(hn, ref)
        check = {
            "throughputAtLeast0.95": vs["throughputRatio"] is not None
            and vs["throughputRatio"] >= GOAL_THROUGHPUT,
            "zeroErrors": hn["errors"] == 0,
        }
        if hn["ttftMs"] is not None:
            check["ttftWithin5ms"] = vs["ttftP50DeltaMs"] is not None and vs["ttftP50DeltaMs"] <= GOAL_TTFT_MS
        if (
            "ray-serve-llm" in servers
            and servers["ray-serve-llm"]["errors"] < servers["ray-serve-llm"]["requests"]
        ):
            check["noWorseThanRayServeLLM"] = no_worse(hn, servers["ray-serve-llm"], slack_ms=GOAL_TTFT_MS)
        verdicts[key] = check
    return verdicts


# --- the run ----------------------------------------------------------------------------------


def bench_model(work: Path) -> tuple[Path, str]:
    """The packaged SmolLM2 when prepared (``make base-model``), else the tiny model."""
    from healthnav.models.prepare import find_prepared

    if found := find_prepared():
        return found, "smollm2-135m-instruct"
    from healthnav.trainer.tinymodel import create_tiny_model

    return create_tiny_model(work / "tiny", family="mistral", hidden_size=128), "tiny-mistral"


PHASES = {"base": lambda s: (MODEL,), "base+adapter": lambda s: (MODEL, s.adapter_model)}


def measure(server: Server, url: str, args: argparse.Namespace) -> dict[str, tuple[list[Sample], float, int]]:
    out: dict[str, tuple[list[Sample], float, int]] = {}
    for phase, models in PHASES.items():
        for streams in args.streams:
            for stream in (True, False):
                n = requests_for(streams, args.quick)
                samples, wall = asyncio.run(
                    run_level(url, models(server), streams, n, stream, args.max_tokens)
                )
                key = f"{phase}/{streams}x/{'stream' if stream else 'nostream'}"
                out[key] = (samples, wall, sum(s.output_tokens for s in samples if s.ok))
                s = summarize(samples, [wall], [out[key][2]])
                print(
                    f"  {server.name:14s} {key:30s} ttft p50 {s['ttftMs'] and s['ttftMs']['p50']} ms, "
                    f"latency p50 {s['latencyMs']['p50']} ms, {s['outputTokensPerS']} tok/s, "
                    f"{s['errors']} errors",
                    flush=True,
                )
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from healthnav.devenv.processes import free_port
    from healthnav.devenv.s3 import LocalS3

    work = Path(tempfile.mkdtemp(prefix="serving-vs-vllm-"))
    model, model_name = bench_model(work)
    from healthnav.trainer.tinymodel import create_random_adapter

    adapter = create_random_adapter(model, work / "adapter", seed=0, rank=8, scale=0.02, only_b=True)
    engine = Engine(model=model, adapter=adapter)
    s3 = LocalS3("serving-vs-vllm", work / "s3", tie_to_parent=True).up()
    try:
        from healthnav.contracts import storage

        bucket = s3.create_bucket("bench")
        os.environ.update(s3.env)
        storage.reset_clients()
        storage.upload_dir(engine.adapter, f"s3://{bucket}/loras/{ADAPTER}/")
        specs = {
            "healthnav": work / "healthnav.json",
            "ray-serve-llm": work / "ray-serve-llm.json",
            "vllm-serve": work / "chat-template.jinja",
        }
        specs["vllm-serve"].write_text(healthnav_chat_template())
        specs["healthnav"].write_text(json.dumps(engine.healthnav_config(args.max_tokens)))
        specs["ray-serve-llm"].write_text(json.dumps(ray_llm_config(engine, f"s3://{bucket}/loras")))

        pooled: dict[str, dict[str, list[tuple[list[Sample], float, int]]]] = {}
        failures: dict[str, str] = {}
        for r in range(args.rounds):
            order = list(args.servers[r % len(args.servers) :]) + list(args.servers[: r % len(args.servers)])
            for name in order:
                if name in failures:
                    continue
                port = free_port()
                server = server_for(name, engine, port, specs[name], s3.env)
                print(f"round {r + 1}/{args.rounds}: {name}", flush=True)
                t0 = time.monotonic()
                try:
                    with running(server, port, work / f"{name}-{r}.log") as url:
                        started = round(time.monotonic() - t0, 1)
                        for key, value in measure(server, url, args).items():
                            pooled.setdefault(key, {}).setdefault(name, []).append(value)
                        pooled.setdefault("_startS", {}).setdefault(name, []).append(([], started, 0))
                except (RuntimeError, TimeoutError) as exc:
                    failures[name] = str(exc)[-2000:]
                    print(f"  {name} failed: {str(exc)[:500]}", flush=True)
    finally:
        s3.down()

    starts = pooled.pop("_startS", {})
    levels = {
        key: {
            name: summarize(
                [s for run in runs for s in run[0]], [run[1] for run in runs], [run[2] for run in runs]
            )
            for name, runs in by_server.items()
        }
        for key, by_server in pooled.items()
    }
    for by_server in levels.values():
        if "vllm-serve" in by_server:
            for name, figures in by_server.items():
                if name != "vllm-serve":
                    figures["vsVllmServe"] = compare(figures, by_server["vllm-serve"])
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "model": model_name,
        "engine": {**asdict(engine), "model": str(engine.model), "adapter": "rank-8 LoRA q/k/v/o (random)"},
        "engineKwargs": engine.kwargs(),
        "load": {
            "maxTokens": args.max_tokens,
            "streams": list(args.streams),
            "rounds": args.rounds,
            "requestsPerLevel": {s: requests_for(s, args.quick) for s in args.streams},
            "prompts": len(PROMPTS),
            "temperature": 0,
        },
        "serverStartS": {name: [round(r[1], 1) for r in runs] for name, runs in starts.items()},
        "failedToRun": failures,
        "levels": levels,
        "goals": goals(levels),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=SERVERS)
    parser.add_argument("--quick", action="store_true", help="few requests per level (a smoke run)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--serve-ray-llm", type=Path, help=argparse.SUPPRESS)  # the server process
    parser.add_argument("--port", type=int, default=8000, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_ray_llm:
        serve_ray_llm(args.serve_ray_llm, args.port)
        return
    ready = (
        VLLM_PYTHON.exists()
        and subprocess.run(
            [str(VLLM_PYTHON), "-c", "import vllm, ray.serve.llm"], capture_output=True
        ).returncode
        == 0
    )
    if not ready:
        sys.exit("needs vLLM's CPU build and Ray in .venv-vllm: run `make bench-serving` (it installs both)")
    results = run(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({"goals": results["goals"], "failedToRun": results["failedToRun"]}, indent=2))


if __name__ == "__main__":
    main()
