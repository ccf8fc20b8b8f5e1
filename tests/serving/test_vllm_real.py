"""VLLMEngine on the real vLLM engine: a LoRA per request, streaming, stop strings, aborts, echo scores.

These run wherever vLLM imports (the ``vllm`` marker skips them elsewhere, saying why): an image
with vLLM's CUDA build, or any x86-64 machine with its CPU build, which ``make test-vllm``
installs in .venv-vllm/ and runs them with. One engine serves the module (starting one takes
about 20 s on a CPU). On a CPU it computes in float32, so its log-probabilities must be the ones
transformers computes itself; vLLM's GPU LoRA kernels take 16-bit weights only, hence bfloat16
and a looser tolerance there.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from healthnav.contracts.probes import AdapterProbes
from healthnav.serving.config import ServeAppConfig
from healthnav.serving.engine import Chunk, EngineRequestError, Sampling

pytestmark = pytest.mark.vllm

PROMPT = "Patient reports fever and cough. Risk level:"
GREEDY = Sampling(max_tokens=12, temperature=0)
MAX_MODEL_LEN = 512


@pytest.fixture(scope="module")
def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the module: vLLM's output handler is a task on the loop that started it."""
    loop = asyncio.new_event_loop()
    yield loop
    pending = asyncio.all_tasks(loop)  # vLLM's output handler, cancelled by its shutdown
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()


@pytest.fixture(scope="module")
def engine(
    vllm_model: Path, vllm_adapter: Path, loop: asyncio.AbstractEventLoop, on_cpu: bool
) -> Iterator[Any]:
    from healthnav.serving.engines.vllm import VLLMEngine

    args = {
        "maxModelLen": MAX_MODEL_LEN,
        "maxLoraRank": 8,
        "maxLoras": 2,
        "enforceEager": True,
        "dtype": "float32" if on_cpu else "bfloat16",
    }
    cfg = ServeAppConfig.model_validate(
        {"baseModel": f"file://{vllm_model}", "engine": "vllm", "engineArgs": args}
    )
    with pytest.MonkeyPatch.context() as env:
        # 1 GiB of KV cache: unset, the CPU backend asks for gpuMemoryUtilization (0.9) of the RAM
        if on_cpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            env.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        eng = VLLMEngine(cfg)
    loop.run_until_complete(eng.add_adapter("triage", vllm_adapter))
    yield eng
    eng.shutdown()


async def _collect(
    engine: Any, sampling: Sampling, adapter: str | None = None, prompt: str = PROMPT
) -> list[Chunk]:
    stream = engine.generate(prompt, sampling, adapter=adapter, request_id=uuid.uuid4().hex)
    return [chunk async for chunk in stream]


def _text(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


def _prompt_ids(model: Path, prompt: str = PROMPT) -> list[int]:
    from transformers import AutoTokenizer

    return list(AutoTokenizer.from_pretrained(model)(prompt)["input_ids"])


def _direct(model: Path, ids: list[int], adapter: Path | None = None) -> list[float]:
    """log p(token t | tokens < t) for t >= 1, from transformers (and peft) in float32."""
    import torch
    from transformers import AutoModelForCausalLM

    lm: Any = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, adapter)
    with torch.inference_mode():
        logits = lm.eval()(input_ids=torch.tensor([ids])).logits[0]
    lp = torch.log_softmax(logits.float(), dim=-1)
    return [float(lp[t - 1, ids[t]]) for t in range(1, len(ids))]


def test_vllm_answers_an_adapter_as_peft_recorded_it_in_training(
    engine: Any,
    loop: asyncio.AbstractEventLoop,
    vllm_adapter_probes: AdapterProbes,
    vllm_retrained_probes: AdapterProbes,
    on_cpu: bool,
) -> None:
    """The check a replica runs before serving an adapter, on the real engine: vLLM's scores of
    the probes match what peft recorded, and another adapter's probes are told apart."""
    from healthnav.serving.verification import verify_adapter

    verdict = loop.run_until_complete(verify_adapter(engine, "triage", vllm_adapter_probes))
    assert verdict.ok, verdict.message
    if on_cpu:  # float32 kernels on both sides
        assert verdict.to_adapter < 0.01, verdict.message
    verdict = loop.run_until_complete(verify_adapter(engine, "triage", vllm_retrained_probes))
    assert not verdict.ok, verdict.message


def test_vllm_engine_generates_with_a_lora_adapter(
    engine: Any, loop: asyncio.AbstractEventLoop, vllm_model: Path
) -> None:
    base = loop.run_until_complete(_collect(engine, GREEDY))
    adapted = loop.run_until_complete(_collect(engine, GREEDY, adapter="triage"))
    assert _text(base) and _text(adapted) and _text(base) != _text(adapted)
    last = base[-1]
    assert last.finish_reason == "length" and last.completion_tokens == 12
    assert last.prompt_tokens == len(_prompt_ids(vllm_model))
    assert all(c.finish_reason is None for c in base[:-1])

    async def together() -> list[list[Chunk]]:  # one batch, each request with its own weights
        return list(await asyncio.gather(*(_collect(engine, GREEDY, a) for a in (None, "triage", None))))

    b1, a1, b2 = loop.run_until_complete(together())
    assert _text(b1) == _text(b2) == _text(base) and _text(a1) == _text(adapted)


def test_an_adapter_vllm_cannot_load_leaves_the_engine_serving(
    engine: Any, loop: asyncio.AbstractEventLoop, vllm_adapter: Path, tmp_path: Path
) -> None:
    too_big = shutil.copytree(vllm_adapter, tmp_path / "rank16")
    config = json.loads((too_big / "adapter_config.json").read_text())
    (too_big / "adapter_config.json").write_text(json.dumps({**config, "r": 16}))  # engine: maxLoraRank 8
    with pytest.raises(Exception, match="max_lora_rank"):
        loop.run_until_complete(engine.add_adapter("too-big", too_big))
    with pytest.raises(EngineRequestError, match="not loaded"):
        loop.run_until_complete(_collect(engine, GREEDY, adapter="too-big"))
    adapted = _text(loop.run_until_complete(_collect(engine, GREEDY, adapter="triage")))

    loop.run_until_complete(engine.add_adapter("triage-copy", vllm_adapter))
    assert _text(loop.run_until_complete(_collect(engine, GREEDY, adapter="triage-copy"))) == adapted
    loop.run_until_complete(engine.remove_adapter("triage-copy"))
    with pytest.raises(EngineRequestError, match="not loaded"):
        loop.run_until_complete(_collect(engine, GREEDY, adapter="triage-copy"))


def test_an_adapter_loaded_again_from_new_files_serves_the_new_weights(
    engine: Any, loop: asyncio.AbstractEventLoop, vllm_adapter: Path, vllm_adapter_retrained: Path
) -> None:
    before = _text(loop.run_until_complete(_collect(engine, GREEDY, adapter="triage")))
    loop.run_until_complete(engine.add_adapter("swap", vllm_adapter))
    assert _text(loop.run_until_complete(_collect(engine, GREEDY, adapter="swap"))) == before
    loop.run_until_complete(engine.add_adapter("swap", vllm_adapter_retrained))
    assert _text(loop.run_until_complete(_collect(engine, GREEDY, adapter="swap"))) != before
    loop.run_until_complete(engine.remove_adapter("swap"))


def test_a_stop_string_ends_the_text_before_it(engine: Any, loop: asyncio.AbstractEventLoop) -> None:
    base = _text(loop.run_until_complete(_collect(engine, GREEDY)))
    cut = next(i for i in range(3, len(base) - 2) if base.find(base[i : i + 3]) == i)
    stop = base[cut : cut + 3]
    sampling = Sampling(max_tokens=12, temperature=0, stop=(stop,), logprobs=0)
    chunks = loop.run_until_complete(_collect(engine, sampling))
    assert _text(chunks) == base[:cut] and chunks[-1].finish_reason == "stop"
    lp = chunks[-1].logprobs
    assert lp is not None and "".join(lp["tokens"]).startswith(base[:cut])
    assert lp["text_offset"][-1] < cut  # tokens past the cut are not reported


def test_a_stream_closed_early_is_aborted_in_vllm(engine: Any, loop: asyncio.AbstractEventLoop) -> None:
    long = Sampling(max_tokens=MAX_MODEL_LEN - 64, temperature=0)

    async def close_after_one() -> Chunk:
        stream = engine.generate(PROMPT, long, adapter="triage", request_id="goes-away")
        first = await anext(stream)
        await stream.aclose()  # what Ray Serve does when the HTTP client disconnects
        return first

    async def cancel_while_waiting() -> None:
        task = asyncio.ensure_future(_collect(engine, long))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    first = loop.run_until_complete(close_after_one())
    assert first.text and first.finish_reason is None
    assert engine.engine.get_num_unfinished_requests() == 0
    loop.run_until_complete(cancel_while_waiting())
    assert engine.engine.get_num_unfinished_requests() == 0
    assert loop.run_until_complete(_collect(engine, GREEDY))[-1].finish_reason == "length"


def test_echo_scores_every_prompt_token_as_transformers_does(
    engine: Any, loop: asyncio.AbstractEventLoop, vllm_model: Path, vllm_adapter: Path, on_cpu: bool
) -> None:
    tolerance = 1e-4 if on_cpu else 5e-2
    ids = _prompt_ids(vllm_model)
    loop.run_until_complete(_collect(engine, GREEDY))  # the prompt is now in vLLM's prefix cache
    (chunk,) = loop.run_until_complete(_collect(engine, Sampling(max_tokens=0, logprobs=2, echo=True)))
    assert chunk.text == "" and chunk.completion_tokens == 0 and chunk.finish_reason == "length"
    assert chunk.prompt_tokens == len(ids)
    lp = chunk.logprobs
    assert lp is not None and len(lp["tokens"]) == len(ids)
    assert "".join(lp["tokens"]) == PROMPT
    assert lp["text_offset"] == [len("".join(lp["tokens"][:i])) for i in range(len(ids))]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["token_logprobs"][1:] == pytest.approx(_direct(vllm_model, ids), abs=tolerance)
    for tok, value, top in zip(
        lp["tokens"][1:], lp["token_logprobs"][1:], lp["top_logprobs"][1:], strict=True
    ):
        assert top[tok] == value and 2 <= len(top) <= 3  # the 2 best plus the chosen token
        assert max(top.values()) >= value

    echo = Sampling(max_tokens=0, logprobs=0, echo=True)
    (adapted,) = loop.run_until_complete(_collect(engine, echo, adapter="triage"))
    assert adapted.logprobs is not None
    expected = _direct(vllm_model, ids, vllm_adapter)
    assert adapted.logprobs["token_logprobs"][1:] == pytest.approx(expected, abs=tolerance)

    split = "Fever 38.5°C, 10 µg/kg"  # characters whose bytes the tiny tokenizer splits across tokens
    (chunk,) = loop.run_until_complete(_collect(engine, echo, prompt=split))
    assert chunk.logprobs is not None and "".join(chunk.logprobs["tokens"]) == split
    assert chunk.logprobs["text_offset"][chunk.logprobs["tokens"].index("µ")] == split.index("µ")


def test_completion_logprobs_follow_the_generated_tokens(
    engine: Any, loop: asyncio.AbstractEventLoop, vllm_model: Path
) -> None:
    n = len(_prompt_ids(vllm_model))
    chunks = loop.run_until_complete(
        _collect(engine, Sampling(max_tokens=8, temperature=0, logprobs=1, echo=True))
    )
    lp = chunks[-1].logprobs
    assert lp is not None and n < len(lp["tokens"]) <= n + chunks[-1].completion_tokens
    assert "".join(lp["tokens"][n:]) == _text(chunks)
    assert lp["text_offset"][n] == len(PROMPT)  # completion offsets follow the echoed prompt
    for value, top in zip(lp["token_logprobs"][n:], lp["top_logprobs"][n:], strict=True):
        assert value == pytest.approx(max(top.values()), abs=1e-5)  # greedy: the most likely token

    plain = loop.run_until_complete(_collect(engine, Sampling(max_tokens=8, temperature=0, logprobs=1)))
    assert plain[-1].logprobs is not None and plain[-1].logprobs["text_offset"][0] == 0
    assert plain[-1].logprobs["tokens"] == lp["tokens"][n:]


def test_scoring_a_prompt_that_fills_the_context_is_refused_cleanly(
    engine: Any, loop: asyncio.AbstractEventLoop, vllm_model: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(vllm_model)

    def tokens(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    words = next(n for n in range(MAX_MODEL_LEN) if tokens("fever " * n) >= MAX_MODEL_LEN)
    full = "fever " * words
    assert tokens(full) == MAX_MODEL_LEN
    score = Sampling(max_tokens=0, logprobs=0, echo=True)
    with pytest.raises(EngineRequestError, match="needs room for one more"):
        loop.run_until_complete(_collect(engine, score, prompt=full))
    (chunk,) = loop.run_until_complete(_collect(engine, score, prompt="fever " * (words - 1)))
    assert chunk.prompt_tokens == MAX_MODEL_LEN - 1
    assert chunk.logprobs is not None and len(chunk.logprobs["tokens"]) == MAX_MODEL_LEN - 1


def test_a_seed_repeats_a_sampled_completion(engine: Any, loop: asyncio.AbstractEventLoop) -> None:
    sampled = Sampling(max_tokens=12, temperature=1.0, seed=7)
    first, again = (_text(loop.run_until_complete(_collect(engine, sampled))) for _ in range(2))
    assert first and first == again


def test_output_constraints_are_enforced_by_vllms_structured_outputs(
    engine: Any, loop: asyncio.AbstractEventLoop
) -> None:
    """A random model, constrained: the assessment format's start, and JSON with only the schema's key."""
    import re

    from healthnav.serving.assessment import ASSESSMENT_PATTERN

    fmt = Sampling(max_tokens=64, temperature=0, regex=ASSESSMENT_PATTERN)
    text = _text(loop.run_until_complete(_collect(engine, fmt, prompt="Fever.")))
    assert re.match(r"Risk level: (self-care|routine|urgent|emergency)\n", text), text
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    as_json = Sampling(max_tokens=48, temperature=0, json_schema=schema)
    text = _text(loop.run_until_complete(_collect(engine, as_json, prompt="Fever.")))
    assert text.lstrip().startswith("{") and set(re.findall(r'"([^"]*)"\s*:', text)) <= {"ok"}, text
