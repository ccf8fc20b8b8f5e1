"""Pure parts of the server: stop handling, limits, assessment safety, adapter cache, deployment options."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from healthnav.serving.adapters import AdapterCache, AdapterError, AdapterResolver
from healthnav.serving.assessment import DISCLAIMER, FALLBACK_RISK, build_assessment
from healthnav.serving.config import ServeAppConfig
from healthnav.serving.engine import EngineRequestError, StopBuffer, check_context
from healthnav.serving.openai_api import ChatCompletionRequest, chat_prompt, sampling_for
from healthnav.serving.redflags import detect_red_flags

pytestmark = pytest.mark.unit


def _cfg(**kw: object) -> ServeAppConfig:
    return ServeAppConfig.model_validate({"baseModel": "file:///models/tiny", **kw})


@pytest.mark.parametrize(
    ("pieces", "stops", "expected"),
    [
        (["Hello wor", "ld. Bye"], ("world",), "Hello "),
        (["Risk lev", "el: x\n###", " Input"], ("### Input",), "Risk level: x\n"),
        (["abc", "def"], (), "abcdef"),
        (["ab", "c#", "#d"], ("##",), "abc"),
        (["no stop here"], ("zzz",), "no stop here"),
    ],
)
def test_stop_buffer_cuts_at_stop_strings_split_across_chunks(
    pieces: list[str], stops: tuple[str, ...], expected: str
) -> None:
    buf = StopBuffer(stops)
    out = "".join(buf.feed(p) for p in pieces) + buf.flush()
    assert out == expected


def test_context_window_is_checked_before_generating() -> None:
    check_context(100, 28, 128)
    with pytest.raises(EngineRequestError, match="exceeds the model's context of 128") as err:
        check_context(100, 29, 128)
    assert err.value.param == "max_tokens"


def test_sampling_limits_and_chat_rendering_use_the_training_template() -> None:
    from healthnav.contracts.prompts import render_prompt

    cfg = _cfg(limits={"maxTokens": 64, "maxPromptChars": 50})
    req = ChatCompletionRequest(model="base", messages=[{"role": "user", "content": "Is a fever of 38 bad?"}])
    assert chat_prompt(req, cfg.limits) == render_prompt("Is a fever of 38 bad?")
    assert sampling_for(req, cfg.limits).max_tokens == 64
    too_many = ChatCompletionRequest(model="base", messages=[{"role": "user", "content": "x"}], max_tokens=65)
    with pytest.raises(EngineRequestError, match="max_tokens=65 exceeds"):
        sampling_for(too_many, cfg.limits)
    long = ChatCompletionRequest(model="base", messages=[{"role": "user", "content": "y" * 51}])
    with pytest.raises(EngineRequestError, match="at most 50"):
        chat_prompt(long, cfg.limits)


def test_assessment_parses_the_trained_format() -> None:
    from healthnav.contracts.prompts import format_assessment_output

    recs = ["Rest at home", "Drink plenty of fluids"]
    text = format_assessment_output("routine", "Likely a viral cold.", recs)
    out = build_assessment(text, [], model="m", latency_ms=12.34)
    assert out["risk_level"] == "routine" and out["assessment"] == "Likely a viral cold."
    assert out["recommendations"] == recs and out["model_output_parsed"] is True
    assert out["disclaimer"] == DISCLAIMER and out["escalated"] is False and out["latency_ms"] == 12.3


GARBAGE = [None, "", "lorem ipsum", "Risk level: purple\nAssessment: ?", "\x00\ufffd"]


@pytest.mark.parametrize("garbage", GARBAGE)
def test_unparseable_output_yields_a_safe_complete_response(garbage: str | None) -> None:
    out = build_assessment(garbage, [], model="m", latency_ms=1)
    assert out["risk_level"] == FALLBACK_RISK and out["assessment"] and out["recommendations"]
    assert out["model_output_parsed"] is False and out["disclaimer"]


def test_red_flags_override_a_model_that_under_triages() -> None:
    from healthnav.contracts.prompts import format_assessment_output

    flags = detect_red_flags("sudden facial droop and slurred speech")
    text = format_assessment_output("self-care", "Probably tiredness.", ["Sleep more"])
    out = build_assessment(text, flags, model="m", latency_ms=1)
    assert out["risk_level"] == "emergency" and out["escalated"] is True
    assert "emergency" in out["recommendations"][0].lower()
    assert out["red_flags"][0]["id"] == "stroke"
    # no model output at all (model overloaded): still an emergency answer
    assert build_assessment(None, flags, model="m", latency_ms=1)["risk_level"] == "emergency"


def _adapter(root: Path, name: str, size: int) -> str:
    d = root / name
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text("{}")
    (d / "adapter_model.safetensors").write_bytes(os.urandom(size))
    return f"file://{d}"


def test_adapter_cache_evicts_least_recently_used_and_spares_pinned(tmp_path: Path) -> None:
    src = tmp_path / "src"
    cache = AdapterCache(tmp_path / "cache", max_bytes=2500)
    a = cache.fetch("a", _adapter(src, "a", 1000))
    time.sleep(0.01)
    b = cache.fetch("b", _adapter(src, "b", 1000))
    cache.pin(a)
    time.sleep(0.01)
    c = cache.fetch("c", _adapter(src, "c", 1000))  # over budget: b is LRU among unpinned
    assert a.exists() and c.exists() and not b.exists()
    cache.unpin(a)
    time.sleep(0.01)
    cache.fetch("b", f"file://{src / 'b'}")  # a is now the least recently used
    assert not a.exists() and c.exists()
    assert sum(size for _, size, _ in cache.entries()) <= 2500


def test_adapter_cache_refuses_what_does_not_fit_or_is_not_an_adapter(tmp_path: Path) -> None:
    cache = AdapterCache(tmp_path / "cache", max_bytes=100)
    with pytest.raises(AdapterError, match="more than adapterCacheMaxBytes"):
        cache.fetch("big", _adapter(tmp_path / "src", "big", 1000))
    empty = tmp_path / "src" / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(AdapterError, match=r"no adapter_config\.json"):
        cache.fetch("empty", f"file://{empty}")
    with pytest.raises(AdapterError, match="no objects"):
        cache.fetch("missing", f"file://{tmp_path / 'nowhere'}")


def test_resolver_discovers_adapters_under_the_prefix_with_a_ttl(tmp_path: Path) -> None:
    now = [0.0]
    cfg = _cfg(
        modelName="base",
        adapters=[{"name": "pinned", "uri": "file:///a/"}],
        adaptersPrefix=f"file://{tmp_path}/finetunes/",
        adapterDiscoveryTtlSeconds=5,
    )
    resolver = AdapterResolver(cfg, clock=lambda: now[0])
    assert resolver.resolve("base").is_base
    assert resolver.resolve("pinned").uri == "file:///a/"
    assert resolver.resolve("late") is None
    _adapter(tmp_path / "finetunes" / "late", "adapter", 10)
    assert resolver.resolve("late") is None  # negative answer cached for the TTL
    now[0] = 6
    assert resolver.resolve("late").uri.endswith("/finetunes/late/adapter/")
    assert resolver.names() == ["base", "pinned", "late"]
    for bad in ("../late", "Late", "a/b", ""):
        assert resolver.resolve(bad) is None


def test_deployment_options_follow_the_config() -> None:
    from healthnav.serving.deployment import HTTP_HEADROOM, llm_deployment_options

    cfg = _cfg(
        numGpusPerReplica=1,
        autoscaling={
            "minReplicas": 0,
            "maxReplicas": 3,
            "targetOngoingRequests": 4,
            "downscaleDelaySeconds": 60,
        },
        limits={"maxOngoingRequests": 8, "maxQueuedRequests": 16},
    )
    llm = llm_deployment_options(cfg)
    assert llm["ray_actor_options"]["num_gpus"] == 1
    assert llm["autoscaling_config"]["min_replicas"] == 0 and llm["autoscaling_config"]["max_replicas"] == 3
    assert llm["autoscaling_config"]["target_ongoing_requests"] == 4
    assert llm["autoscaling_config"]["downscale_delay_s"] == 60
    # Ray's cap sits above the engine's admission (8 generating + 16 waiting), so a full replica
    # still answers in our words; past it, the proxy queues, then answers 503 + Retry-After itself.
    assert llm["max_ongoing_requests"] == 8 + 16 + HTTP_HEADROOM
    assert llm["max_queued_requests"] > 0 and llm["backpressure_config"]["retry_after_s"] > 0
    unbounded = llm_deployment_options(_cfg(limits={"maxOngoingRequests": 8, "maxQueuedRequests": -1}))
    assert unbounded["max_queued_requests"] == -1 and unbounded["max_ongoing_requests"] > 8


def test_admission_bounds_generations_and_waiters_and_survives_cancellation() -> None:
    import asyncio

    from healthnav.serving.admission import Admission

    async def main() -> None:
        gate = Admission(limit=2, queue=1)
        assert await gate.enter() and await gate.enter()
        waiter = asyncio.create_task(gate.enter())
        await asyncio.sleep(0)
        assert gate.waiting == 1
        assert not await gate.enter()  # two generating, one waiting: refused at once, not queued
        gate.leave()
        assert await waiter and gate.waiting == 0
        cancelled = asyncio.create_task(gate.enter())  # a client that goes away while waiting
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        assert gate.waiting == 0
        gate.leave()
        gate.leave()
        assert await gate.enter() and await gate.enter()  # the cancelled waiter took no slot

    asyncio.run(main())


def test_vllm_arguments_map_the_config() -> None:
    from healthnav.serving.engine import Sampling
    from healthnav.serving.engines.vllm import engine_kwargs, sampling_kwargs

    cfg = _cfg(engineArgs={"maxLoras": 6, "maxLoraRank": 32, "maxModelLen": 8192, "dtype": "bfloat16"})
    kw = engine_kwargs(cfg, "/models/x")
    assert kw["enable_lora"] and kw["max_loras"] == 6 and kw["max_lora_rank"] == 32
    assert kw["max_model_len"] == 8192 and kw["dtype"] == "bfloat16" and kw["model"] == "/models/x"
    sk = sampling_kwargs(Sampling(max_tokens=10, temperature=0, top_p=0.9, stop=("###",), seed=1))
    assert sk == {"n": 1, "max_tokens": 10, "temperature": 0.0, "top_p": 0.9, "stop": ["###"], "seed": 1}


def test_serve_cli_reports_config_errors_naming_the_field(tmp_path: Path) -> None:
    from healthnav.serving.cli import app as serve_cli

    bad = tmp_path / "serve.yaml"
    bad.write_text("baseModel: file:///m\nautoscaling: {minReplicas: 5, maxReplicas: 2}\nengin: vllm\n")
    result = CliRunner().invoke(serve_cli, ["--config", str(bad)])
    assert result.exit_code != 0
    assert "engin" in result.output and "minReplicas must be <= maxReplicas" in result.output


def test_example_config_is_valid() -> None:
    from healthnav.serving.cli import load_config

    cfg = load_config(Path(__file__).parents[2] / "examples" / "serve-local.yaml")
    assert cfg.engine == "transformers"
