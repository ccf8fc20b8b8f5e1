"""Train/serve parity: the same adapter, prompt and greedy decoding give the same answer in
peft + transformers (what training and evaluation run) and in vLLM (what production serves).

On SmolLM2-135M-Instruct, the real base model (``make base-model`` prepares it into the cache),
with a rank-16 LoRA adapter on q/k/v/o, the roadmap's shape. The adapter's weights are random but
small, so it answers differently from the base while staying a working language model: a
trained adapter is the same arithmetic, and the demo's trained one is checked the same way by
hand (docs). Runs in ``make test-vllm`` with vLLM's CPU build, in float32 on both sides.

Tolerance: the same tokens, except that the two may part at a near-tie (the reference's
log-probabilities of the two candidates within :data:`TIE`), where kernels that sum in another
order may pick either; log-probabilities of the shared tokens within :data:`LOGPROB_TOLERANCE`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from healthnav.contracts.prompts import PatientCase, render_assessment_prompt
from healthnav.serving.config import ServeAppConfig
from healthnav.serving.engine import Sampling, incremental_token_texts

pytestmark = pytest.mark.vllm

NEW_TOKENS = 32
TIE = 0.01
LOGPROB_TOLERANCE = 0.02
CASES = [
    PatientCase(symptoms="fever and a sore throat for two days", age=29),
    PatientCase(symptoms="sudden severe headache and a stiff neck", age=44, duration="3 hours"),
    PatientCase(symptoms="itchy red rash on both forearms after gardening", age=52),
]


@pytest.fixture(scope="module")
def smollm2() -> Path:
    from healthnav.models.prepare import find_prepared

    path = find_prepared("smollm2-135m-instruct")
    assert path is not None, "SmolLM2 is not prepared in the cache: run `make base-model`"
    return path


@pytest.fixture(scope="module")
def adapter(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """peft's initial A, small random B: it answers differently while staying a language model."""
    from healthnav.trainer.tinymodel import create_random_adapter

    out = tmp_path_factory.mktemp("parity") / "adapter"
    return create_random_adapter(smollm2, out, seed=3, rank=16, scale=0.02, only_b=True)


@pytest.fixture(scope="module")
def reference(smollm2: Path, adapter: Path) -> dict[str | None, Any]:
    """transformers in float32: the base, and the base with the adapter through peft."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    def load() -> Any:
        return AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()

    return {None: load(), "triage": PeftModel.from_pretrained(load(), adapter).eval()}


def _reference(lm: Any, tokenizer: Any, prompt: str) -> tuple[list[int], list[list[float]]]:
    """Greedy token ids and, per step, the full log-softmax."""
    import torch

    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = lm.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=tokenizer.eos_token_id,
        )
    new = out.sequences[0, ids.shape[1] :].tolist()
    steps = [torch.log_softmax(score[0].float(), dim=-1).tolist() for score in out.scores]
    return new, steps


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(asyncio.gather(*asyncio.all_tasks(loop), return_exceptions=True))
    loop.close()


@pytest.fixture(scope="module")
def engine(smollm2: Path, adapter: Path, loop: asyncio.AbstractEventLoop) -> Iterator[Any]:
    from healthnav.serving.engines.vllm import VLLMEngine

    args = {"maxModelLen": 1024, "maxLoraRank": 16, "maxLoras": 1, "enforceEager": True, "dtype": "float32"}
    spec = {"baseModel": f"file://{smollm2}", "engine": "vllm", "engineArgs": args}
    cfg = ServeAppConfig.model_validate(spec)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        eng = VLLMEngine(cfg)
    loop.run_until_complete(eng.add_adapter("triage", adapter))
    yield eng
    eng.shutdown()


def _served(engine: Any, loop: asyncio.AbstractEventLoop, prompt: str, adapter: str | None) -> dict[str, Any]:
    async def collect() -> list[Any]:
        sampling = Sampling(max_tokens=NEW_TOKENS, temperature=0, logprobs=0)
        stream = engine.generate(prompt, sampling, adapter=adapter, request_id=uuid.uuid4().hex)
        return [chunk async for chunk in stream]

    chunks = loop.run_until_complete(collect())
    logprobs = chunks[-1].logprobs
    assert logprobs is not None
    return {"text": "".join(c.text for c in chunks), **logprobs}


def _compare(lm: Any, tokenizer: Any, served: dict[str, Any], prompt: str) -> str:
    """Assert parity for one prompt; returns the shared text (for the caller's own checks)."""
    ids, steps = _reference(lm, tokenizer, prompt)
    texts = incremental_token_texts(lambda t: tokenizer.decode(t, skip_special_tokens=True), ids)
    served_tokens, served_lps = served["tokens"], served["token_logprobs"]
    shared = 0
    while shared < min(len(texts), len(served_tokens)) and texts[shared] == served_tokens[shared]:
        shared += 1
    for i in range(shared):
        ref_lp = steps[i][ids[i]]
        assert abs(ref_lp - served_lps[i]) <= LOGPROB_TOLERANCE, (i, texts[i], ref_lp, served_lps[i])
    if shared < len(texts) or shared < len(served_tokens):
        # they parted: only allowed where the reference had two near-equal candidates
        assert shared < len(texts) and shared < len(served_tokens), (
            f"one side stopped early at token {shared}: {texts!r} vs {served_tokens!r}"
        )
        step = steps[shared]
        served_id = tokenizer.encode(served_tokens[shared], add_special_tokens=False)
        rival = max(step[t] for t in served_id[:1]) if served_id else float("-inf")
        assert step[ids[shared]] - rival <= TIE, (
            f"transformers and vLLM part at token {shared} without a near-tie: "
            f"{''.join(texts)!r} vs {served['text']!r}"
        )
    return "".join(texts[:shared])


def test_base_and_adapter_answer_the_same_in_transformers_and_vllm(
    smollm2: Path, reference: dict[str | None, Any], engine: Any, loop: asyncio.AbstractEventLoop
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    differs = 0
    for case in CASES:
        prompt = render_assessment_prompt(case)
        base = _compare(reference[None], tokenizer, _served(engine, loop, prompt, None), prompt)
        served = _served(engine, loop, prompt, "triage")
        adapted = _compare(reference["triage"], tokenizer, served, prompt)
        assert len(base) > 20 and len(adapted) > 20, (base, adapted)  # long stretches agree, not one token
        differs += base != adapted
    # vLLM applied the adapter (an adapter silently ignored would match the base everywhere)
    assert differs >= 2, "the adapter changed too few answers to tell whether vLLM applied it"
