"""Prompt and completion log-probabilities (OpenAI ``echo`` + ``logprobs``) against a direct forward pass.

The evaluator scores multiple choice through the server by summing these numbers, so they must
be exactly the model's: the transformers engine is called in-process (no Ray) on a tiny real
model and compared with ``log_softmax`` of the logits transformers computes itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from healthnav.serving.config import ServeAppConfig
from healthnav.serving.engine import EngineRequestError, Sampling, TokenScores, openai_logprobs
from healthnav.serving.engines.echo import EchoEngine
from healthnav.serving.engines.transformers import TransformersEngine
from healthnav.serving.openai_api import ChatCompletionRequest, CompletionRequest, sampling_for

PROMPT = "Patient reports fever and cough. Risk level:"


def _cfg(model: Path | str = "/unused") -> ServeAppConfig:
    return ServeAppConfig.model_validate(
        {"baseModel": f"file://{model}", "engine": "transformers", "numGpusPerReplica": 0}
    )


@pytest.fixture(scope="module")
def engine(tiny_model: Path, tiny_adapter: Path) -> TransformersEngine:
    eng = TransformersEngine(_cfg(tiny_model))
    asyncio.run(eng.add_adapter("triage", tiny_adapter))
    return eng


def _run(engine: Any, sampling: Sampling, adapter: str | None = None) -> list[Any]:
    async def go() -> list[Any]:
        return [c async for c in engine.generate(PROMPT, sampling, adapter=adapter, request_id="t")]

    return asyncio.run(go())


def _direct(model_dir: Path, ids: list[int], adapter_dir: Path | None = None) -> list[float]:
    """log p(token t | tokens < t) for t >= 1, straight from transformers (and peft)."""
    import torch
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    with torch.inference_mode():
        logits = model.eval()(input_ids=torch.tensor([ids])).logits[0]
    lp = torch.log_softmax(logits.float(), dim=-1)
    return [float(lp[t - 1, ids[t]]) for t in range(1, len(ids))]


def test_echo_without_generation_scores_every_prompt_token(
    engine: TransformersEngine, tiny_model: Path
) -> None:
    (chunk,) = _run(engine, Sampling(max_tokens=0, logprobs=2, echo=True))
    lp = chunk.logprobs
    ids = engine.tokenizer(PROMPT)["input_ids"]
    assert chunk.text == "" and chunk.completion_tokens == 0 and chunk.finish_reason == "length"
    assert len(lp["tokens"]) == len(ids) == chunk.prompt_tokens
    assert "".join(lp["tokens"]) == PROMPT  # offsets index the echoed prompt
    assert lp["text_offset"] == [len("".join(lp["tokens"][:i])) for i in range(len(ids))]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["token_logprobs"][1:] == pytest.approx(_direct(tiny_model, ids), abs=1e-4)
    for tok, value, top in zip(
        lp["tokens"][1:], lp["token_logprobs"][1:], lp["top_logprobs"][1:], strict=True
    ):
        assert top[tok] == value and 2 <= len(top) <= 3  # the 2 best plus the chosen token
        assert max(top.values()) >= value


def test_adapter_scores_are_the_adapted_model_and_base_stays_base(
    engine: TransformersEngine, tiny_model: Path, tiny_adapter: Path
) -> None:
    ids = engine.tokenizer(PROMPT)["input_ids"]
    (adapted,) = _run(engine, Sampling(max_tokens=0, logprobs=0, echo=True), adapter="triage")
    (base,) = _run(engine, Sampling(max_tokens=0, logprobs=0, echo=True))
    assert adapted.logprobs["token_logprobs"][1:] == pytest.approx(
        _direct(tiny_model, ids, tiny_adapter), abs=1e-4
    )
    assert base.logprobs["token_logprobs"][1:] == pytest.approx(_direct(tiny_model, ids), abs=1e-4)
    assert adapted.logprobs["token_logprobs"] != base.logprobs["token_logprobs"]


def test_greedy_completion_logprobs_follow_the_generated_tokens(
    engine: TransformersEngine, tiny_model: Path
) -> None:
    chunks = _run(engine, Sampling(max_tokens=6, temperature=0.0, logprobs=1, echo=True))
    text = "".join(c.text for c in chunks)
    lp = chunks[-1].logprobs
    prompt_ids = engine.tokenizer(PROMPT)["input_ids"]
    n_prompt = len(prompt_ids)
    completion_tokens = lp["tokens"][n_prompt:]
    assert "".join(completion_tokens) == text
    assert lp["text_offset"][n_prompt] == len(PROMPT)  # completion offsets follow the echoed prompt
    # greedy: every generated token is the most likely one
    for tok, value, top in zip(
        completion_tokens, lp["token_logprobs"][n_prompt:], lp["top_logprobs"][n_prompt:], strict=True
    ):
        assert value == pytest.approx(max(top.values()), abs=1e-5), tok


def test_logprob_response_shape_is_openai_legacy() -> None:
    prompt = TokenScores(["Hi", " there"], [None, -1.5], [None, {" there": -1.5, " you": -0.5}])
    completion = TokenScores(["!"], [-0.1], [{"!": -0.1, ".": -2.0}])
    lp = openai_logprobs(prompt, completion, completion_offset=8, top_n=1)
    assert lp == {
        "tokens": ["Hi", " there", "!"],
        "token_logprobs": [None, -1.5, -0.1],
        "top_logprobs": [None, {" you": -0.5, " there": -1.5}, {"!": -0.1}],
        "text_offset": [0, 2, 8],
    }


def test_a_character_split_across_tokens_belongs_to_the_token_that_completes_it(tiny_model: Path) -> None:
    """Byte-level tokens can end inside a UTF-8 character: offsets must still index the real text."""
    from transformers import AutoTokenizer

    from healthnav.serving.engine import incremental_token_texts

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text = "Fever 38.5°C, 10 µg/kg — naïve 日本"
    ids = tokenizer(text)["input_ids"]
    pieces = incremental_token_texts(lambda x: tokenizer.decode(x, skip_special_tokens=True), ids)
    assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)
    assert "" in pieces[1:]  # some tokens held a partial character (the tokenizer never saw these)
    degree = pieces.index("°")
    assert len("".join(pieces[:degree])) == text.index("°")


def test_vllm_prompt_logprobs_map_onto_the_same_shape() -> None:
    from healthnav.serving.engines.vllm import sampling_kwargs, vllm_token_scores

    words = {1: "A", 2: " cat", 3: " dog"}

    def decode(ids: list[int]) -> str:
        return "".join(words[i] for i in ids)

    def lp(v: float, text: str) -> SimpleNamespace:
        return SimpleNamespace(logprob=v, decoded_token=text)

    scores = vllm_token_scores(decode, [1, 2], [None, {2: lp(-0.7, " cat"), 3: lp(-0.9, " dog")}])
    assert scores == TokenScores(["A", " cat"], [None, -0.7], [None, {" dog": -0.9, " cat": -0.7}])
    kw = sampling_kwargs(Sampling(max_tokens=0, logprobs=1, echo=True))
    assert kw["prompt_logprobs"] == 1 and kw["logprobs"] == 1 and kw["max_tokens"] == 1
    assert "prompt_logprobs" not in sampling_kwargs(Sampling(max_tokens=4, logprobs=1))


def test_requests_that_cannot_be_honoured_are_refused_not_ignored() -> None:
    limits = _cfg().limits
    ok = sampling_for(CompletionRequest(model="m", prompt="x", echo=True, logprobs=3, max_tokens=0), limits)
    assert (ok.max_tokens, ok.logprobs, ok.echo) == (0, 3, True)
    with pytest.raises(EngineRequestError, match="max_tokens=0 is only meaningful with echo"):
        sampling_for(CompletionRequest(model="m", prompt="x", max_tokens=0), limits)
    with pytest.raises(EngineRequestError, match="not supported with stream=true"):
        sampling_for(CompletionRequest(model="m", prompt="x", logprobs=1, stream=True), limits)
    for bad, field in [
        ({"logprobs": 6}, "logprobs"),
        ({"best_of": 2}, "best_of"),
        ({"suffix": "end"}, "suffix"),
        ({"presence_penalty": 0.5}, "penalties"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ]:
        with pytest.raises(ValidationError, match=field):
            CompletionRequest.model_validate({"model": "m", "prompt": "x", **bad})
    with pytest.raises(ValidationError, match="logprobs are not supported on chat"):
        ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": True}
        )
    with pytest.raises(EngineRequestError, match="no log-probabilities"):
        _run(EchoEngine(_cfg()), Sampling(max_tokens=0, logprobs=0, echo=True))


def test_a_generation_that_ends_on_eos_reports_the_eos_position(engine: TransformersEngine) -> None:
    """lm-evaluation-harness scores an echoed prompt by asking for one generated token and dropping
    the last position (vLLM's OpenAI server always reports it, the EOS included). Were the EOS
    left out, the harness would silently drop the prompt's last token instead."""
    first = _run(engine, Sampling(max_tokens=1, temperature=0.0, logprobs=0))
    greedy_first = engine.tokenizer(PROMPT + "".join(c.text for c in first))["input_ids"][-1]
    saved = engine.tokenizer.eos_token_id
    engine.tokenizer.eos_token_id = greedy_first  # the model's greedy first token now ends it
    try:
        chunks = _run(engine, Sampling(max_tokens=1, temperature=0.0, logprobs=1, echo=True))
    finally:
        engine.tokenizer.eos_token_id = saved
    lp = chunks[-1].logprobs
    n_prompt = len(engine.tokenizer(PROMPT)["input_ids"])
    assert chunks[-1].finish_reason == "stop"
    assert len(lp["tokens"]) == n_prompt + 1 and lp["tokens"][-1] == ""
    assert lp["token_logprobs"][-1] is not None and lp["token_logprobs"][-1] < 0
