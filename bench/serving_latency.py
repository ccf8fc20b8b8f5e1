"""Benchmark: what the Ray Serve + HTTP layer adds, how it holds up under concurrency, how it scales.

The engine is :class:`healthnav.serving.engines.echo.EchoEngine`, a zero-cost engine that streams
``max_tokens`` one-word chunks: latency measured through HTTP is then the serving layer itself
(Ray's HTTP proxy, its hop to the replica, FastAPI, auth, validation, prompt rendering,
admission, JSON or SSE), not a model. The requests name the base model, which a replica serves
itself; adapter requests the replica does not hold pay one more Ray hop (see serving/replica.py).
The same request is timed against the engine called directly in-process; the difference is the
added latency.

1. added latency: sequential non-streaming chat completions, p50/p99, HTTP minus direct;
2. concurrency: 1, 8, 32 and 64 concurrent streaming clients, each running streamed requests
   back to back for a fixed time: throughput, error rate, latency and TTFT percentiles;
3. autoscaling: engine tokens take 20 ms each, 24 streams push ongoing requests above the
   target, the replica count is sampled until it rises, then load stops and it falls back.

The app runs with :data:`healthnav.serving.config.SERVE_ENV` (Ray Serve's throughput-optimised
mode without direct ingress), as ``hnav serve`` and production should; ``--ray-defaults``
measures Ray's defaults for comparison. The settings used are recorded in the results.

Results go to ``bench/results/serving_latency.json``.

    .venv/bin/python -m bench.serving_latency            # about 3 minutes on 2 cores
    .venv/bin/python -m bench.serving_latency --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "serving_latency.json"
FACTORY = "healthnav.serving.engines.echo:EchoEngine"
KEY = "bench-key"
MAX_TOKENS = 16


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary_ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"p50": round(pct(ms, 50), 2), "p90": round(pct(ms, 90), 2), "p99": round(pct(ms, 99), 2)}


def config(**overrides: Any):  # -> ServeAppConfig
    from healthnav.serving.config import ServeAppConfig

    base: dict[str, Any] = {
        "modelName": "bench",
        "baseModel": "file:///unused",
        "engine": "transformers",
        "numGpusPerReplica": 0,
        "numCpusPerReplica": 0.5,
        "apiKeysEnv": "HEALTHNAV_BENCH_KEYS",
        "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
        "limits": {"maxTokens": 64, "maxOngoingRequests": 128, "maxQueuedRequests": 256},
    }
    base.update(overrides)
    return ServeAppConfig.model_validate(base)


def chat_body(stream: bool) -> dict[str, Any]:
    return {
        "model": "bench",
        "messages": [{"role": "user", "content": "I have had a sore throat and a mild fever for two days."}],
        "max_tokens": MAX_TOKENS,
        "stream": stream,
    }


async def direct_latency(n: int) -> list[float]:
    """The engine called in-process with the same prompt rendering: the baseline."""
    from healthnav.serving.engines.echo import EchoEngine
    from healthnav.serving.openai_api import ChatCompletionRequest, chat_prompt, sampling_for

    cfg = config()
    engine = EchoEngine(cfg)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        req = ChatCompletionRequest.model_validate(chat_body(False))
        prompt, sampling = chat_prompt(req, cfg.limits), sampling_for(req, cfg.limits)
        text = [c.text async for c in engine.generate(prompt, sampling, adapter=None, request_id="x")]
        assert len(text) == MAX_TOKENS
        out.append(time.perf_counter() - t0)
    return out


async def http_latency(url: str, n: int) -> list[float]:
    import httpx

    out = []
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
        for _ in range(20):  # warm up connections and code paths
            (await client.post(f"{url}/v1/chat/completions", json=chat_body(False))).raise_for_status()
        for _ in range(n):
            t0 = time.perf_counter()
            resp = await client.post(f"{url}/v1/chat/completions", json=chat_body(False))
            resp.raise_for_status()
            out.append(time.perf_counter() - t0)
    return out


async def stream_once(client: Any, url: str) -> tuple[bool, float, float]:
    """One streamed chat completion: (ok, total seconds, seconds to first content token)."""
    t0 = time.perf_counter()
    ttft = float("nan")
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=chat_body(True)) as resp:
            if resp.status_code != 200:
                await resp.aread()
                return False, time.perf_counter() - t0, ttft
            done = False
            async for line in resp.aiter_lines():
                if line.startswith("data: ") and '"content":"ok' in line and ttft != ttft:
                    ttft = time.perf_counter() - t0
                if line == "data: [DONE]":
                    done = True
            return done, time.perf_counter() - t0, ttft
    except Exception:
        return False, time.perf_counter() - t0, ttft


async def concurrency_level(url: str, streams: int, seconds: float) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=streams + 4)
    results: list[tuple[bool, float, float]] = []
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(headers=headers, timeout=120, limits=limits) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                results.append(await stream_once(client, url))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(streams)))
        elapsed = time.perf_counter() - started
    ok = [r for r in results if r[0]]
    return {
        "streams": streams,
        "requests": len(results),
        "errors": len(results) - len(ok),
        "error_rate": round((len(results) - len(ok)) / max(1, len(results)), 4),
        "requests_per_s": round(len(ok) / elapsed, 1),
        "tokens_per_s": round(len(ok) * MAX_TOKENS / elapsed, 1),
        "latency_ms": summary_ms([r[1] for r in ok]),
        "ttft_ms": summary_ms([r[2] for r in ok if r[2] == r[2]]),
    }


def replica_count(app: str, deployment: str) -> int:
    from ray import serve

    status = serve.status().applications[app].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))


async def autoscaling_run(url: str, app: str, load_s: float, settle_s: float) -> dict[str, Any]:
    import httpx

    timeline: list[dict[str, float]] = []
    t0 = time.perf_counter()
    stop = asyncio.Event()

    async def sampler() -> None:
        while not stop.is_set():
            now = round(time.perf_counter() - t0, 1)
            timeline.append({"t": now, "replicas": replica_count(app, "LLMServer")})
            await asyncio.sleep(1)

    sampling = asyncio.create_task(sampler())
    results: list[tuple[bool, float, float]] = []
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as client:
        deadline = time.perf_counter() + load_s

        async def worker() -> None:
            while time.perf_counter() < deadline:
                results.append(await stream_once(client, url))

        await asyncio.gather(*(worker() for _ in range(24)))
    load_end = round(time.perf_counter() - t0, 1)
    await asyncio.sleep(settle_s)
    stop.set()
    await sampling
    peak = max(s["replicas"] for s in timeline)
    peak_at = next(s["t"] for s in timeline if s["replicas"] == peak)
    down = next((s["t"] for s in timeline if s["t"] > peak_at and s["replicas"] < peak), None)
    return {
        "load_streams": 24,
        "load_seconds": load_s,
        "load_ended_at_s": load_end,
        "requests": len(results),
        "errors": sum(1 for r in results if not r[0]),
        "start_replicas": timeline[0]["replicas"],
        "peak_replicas": peak,
        "end_replicas": timeline[-1]["replicas"],
        "scaled_up_at_s": next((s["t"] for s in timeline if s["replicas"] > timeline[0]["replicas"]), None),
        "scaled_down_at_s": down,
        "timeline": timeline,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and shorter phases")
    parser.add_argument(
        "--ray-defaults", action="store_true", help="Ray Serve's default settings instead of SERVE_ENV"
    )
    args = parser.parse_args()
    n = 100 if args.quick else 400
    level_s = 4.0 if args.quick else 8.0

    os.environ["HEALTHNAV_BENCH_KEYS"] = KEY
    from ray import serve

    from healthnav.serving.app import compose_app
    from healthnav.serving.config import SERVE_ENV
    from healthnav.serving.local import local_serve

    serve_env = {} if args.ray_defaults else SERVE_ENV
    result: dict[str, Any] = {
        "benchmark": "serving_latency",
        "engine": "EchoEngine (zero-cost; isolates the serving layer)",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "max_tokens": MAX_TOKENS,
    }
    app = compose_app(config(), engine_factory=FACTORY)
    with local_serve(app, name="bench", serve_env=serve_env) as url:
        result["ray_serve_env"] = {k: v for k, v in os.environ.items() if k.startswith("RAY_SERVE_")}
        direct = asyncio.run(direct_latency(n))
        http = asyncio.run(http_latency(url, n))
        d, h = summary_ms(direct), summary_ms(http)
        result["added_latency"] = {
            "requests": n,
            "direct_engine_ms": d,
            "http_ray_serve_ms": h,
            "added_ms": {k: round(h[k] - d[k], 2) for k in ("p50", "p90", "p99")},
            "goal_p50_ms": 10,
            "mean_added_ms": round((statistics.mean(http) - statistics.mean(direct)) * 1000, 2),
        }
        print(json.dumps(result["added_latency"]), flush=True)

        levels = []
        for streams in (1, 8, 32, 64):
            level = asyncio.run(concurrency_level(url, streams, level_s))
            print(json.dumps(level), flush=True)
            levels.append(level)
        result["concurrency"] = levels
        serve.delete("bench")

        scale_cfg = config(
            autoscaling={
                "minReplicas": 1,
                "maxReplicas": 3,
                "targetOngoingRequests": 4,
                "upscaleDelaySeconds": 2,
                "downscaleDelaySeconds": 8,
            }
        )
        serve.run(
            compose_app(scale_cfg, engine_factory=FACTORY, engine_options={"token_delay_s": 0.02}),
            name="scale",
            route_prefix="/",
            blocking=False,
        )
        load_s, settle_s = (20.0, 25.0) if args.quick else (40.0, 40.0)
        result["autoscaling"] = asyncio.run(autoscaling_run(url, "scale", load_s, settle_s))
        print(json.dumps({k: v for k, v in result["autoscaling"].items() if k != "timeline"}), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
