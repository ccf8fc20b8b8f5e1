"""VLLMEngine's own logic (deltas, adapters, aborts, tokenizing once) against a stand-in for vLLM.

vLLM's wheels pin a torch build of their own, so vLLM is not in the project's virtualenv. The
stand-in below is a mock, and only of what cannot run there: it mirrors the vLLM 0.33 API that
``healthnav.serving.engines.vllm`` calls (``AsyncLLM.generate(prompt, params, request_id, *,
lora_request)`` yielding cumulative ``RequestOutput``s, a synchronous ``get_tokenizer()``,
``abort``, ``add_lora``/``remove_lora``, and ``AsyncEngineArgs``/``SamplingParams`` with vLLM's
field names, so a misspelt argument fails here as it would there). The real engine runs in
``test_vllm_real.py`` wherever vLLM imports: a GPU image, or the CPU build (``make test-vllm``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import sys
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from healthnav.serving.config import ServeAppConfig
from healthnav.serving.engine import EngineRequestError, Sampling

pytestmark = pytest.mark.unit


@dataclasses.dataclass
class AsyncEngineArgs:  # the fields of vllm.engine.arg_utils.EngineArgs (0.33) that healthnav sets
    model: str
    tokenizer: str | None = None
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False
    enable_lora: bool = False
    max_loras: int = 1
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    tensor_parallel_size: int = 1
    disable_log_stats: bool = False


@dataclasses.dataclass
class StructuredOutputsParams:  # vllm.sampling_params.StructuredOutputsParams (0.32), its constraints
    json: str | dict | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None

    def __post_init__(self) -> None:  # vLLM's own check: exactly one constraint
        set_ = [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]
        assert len(set_) == 1, set_


@dataclasses.dataclass
class SamplingParams:  # vllm.sampling_params.SamplingParams (0.33), the fields healthnav sets
    n: int = 1
    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    structured_outputs: StructuredOutputsParams | None = None


class UsageContext(enum.Enum):  # vllm.usage.usage_lib.UsageContext: it picks vLLM's batch defaults
    ENGINE_CONTEXT = "ENGINE_CONTEXT"
    OPENAI_API_SERVER = "OPENAI_API_SERVER"


@dataclasses.dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str = ""


class WordTokenizer:
    def encode(self, text: str) -> list[int]:
        return [len(word) for word in text.split()]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join("x" * i for i in ids)


class FakeAsyncLLM:
    """Streams a fixed completion cumulatively, as vLLM's default RequestOutputKind does."""

    completion = ["Risk", "Risk level:", "Risk level: low"]

    def __init__(self, args: AsyncEngineArgs) -> None:
        self.args = args
        self.prompts: list[dict[str, Any]] = []
        self.params: list[SamplingParams] = []
        self.loras: list[LoRARequest | None] = []
        self.aborted: list[str] = []
        self.added: list[LoRARequest] = []
        self.removed: list[int] = []

    @classmethod
    def from_engine_args(
        cls, args: AsyncEngineArgs, usage_context: UsageContext | None = None
    ) -> FakeAsyncLLM:
        engine = cls(args)
        engine.usage_context = usage_context
        return engine

    def get_tokenizer(self) -> WordTokenizer:  # synchronous since vLLM's V1 engine
        return WordTokenizer()

    async def add_lora(self, request: LoRARequest) -> bool:
        if "rank64" in request.lora_path:  # what vLLM raises for an adapter it cannot load
            raise Exception("Call to add_lora method failed: LoRA rank 64 is greater than max_lora_rank 16.")
        self.added.append(request)
        return True

    async def remove_lora(self, lora_id: int) -> bool:
        self.removed.append(lora_id)
        return True

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def generate(
        self, prompt: Any, params: SamplingParams, request_id: str, *, lora_request: LoRARequest | None = None
    ) -> AsyncIterator[Any]:
        assert isinstance(prompt, dict), "healthnav passes a TokensPrompt"
        self.prompts.append(prompt)
        self.params.append(params)
        so = params.structured_outputs
        if so is not None and isinstance(so.json, dict) and so.json.get("type") == "no-such-type":
            raise ValueError("The provided JSON schema contains features not supported by xgrammar.")
        self.loras.append(lora_request)
        for i, text in enumerate(self.completion):
            await asyncio.sleep(0)
            done = i == len(self.completion) - 1
            output = types.SimpleNamespace(
                text=text, token_ids=list(range(i + 1)), finish_reason="stop" if done else None, logprobs=None
            )
            yield types.SimpleNamespace(
                outputs=[output],
                finished=done,
                prompt_token_ids=prompt["prompt_token_ids"],
                prompt_logprobs=None,
            )


@pytest.fixture
def vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("vllm")
    module.AsyncEngineArgs = AsyncEngineArgs  # type: ignore[attr-defined]
    module.AsyncLLMEngine = FakeAsyncLLM  # type: ignore[attr-defined]
    module.SamplingParams = SamplingParams  # type: ignore[attr-defined]
    sampling_params = types.ModuleType("vllm.sampling_params")
    sampling_params.StructuredOutputsParams = StructuredOutputsParams  # type: ignore[attr-defined]
    sampling_params.SamplingParams = SamplingParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling_params)
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest  # type: ignore[attr-defined]
    usage = types.ModuleType("vllm.usage")
    usage_lib = types.ModuleType("vllm.usage.usage_lib")
    usage_lib.UsageContext = UsageContext  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm.usage", usage)
    monkeypatch.setitem(sys.modules, "vllm.usage.usage_lib", usage_lib)
    for name, mod in (("vllm", module), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, mod)
    return module


def make_engine(tmp_path: Path, max_model_len: int = 4096) -> Any:
    from healthnav.serving.engines.vllm import VLLMEngine

    (tmp_path / "model").mkdir(exist_ok=True)  # the fake engine loads nothing, but the path must exist
    (tmp_path / "model" / "config.json").write_text("{}")
    cfg = ServeAppConfig.model_validate(
        {
            "baseModel": f"file://{tmp_path}/model",
            "engine": "vllm",
            "engineArgs": {"maxModelLen": max_model_len, "maxLoras": 2},
            "adapterCacheDir": str(tmp_path / "adapters"),
        }
    )
    return VLLMEngine(cfg)


async def collect(engine: Any, prompt: str, adapter: str | None = None, max_tokens: int = 32) -> list[Any]:
    sampling = Sampling(max_tokens=max_tokens, temperature=0)
    return [c async for c in engine.generate(prompt, sampling, adapter=adapter, request_id="r1")]


def test_streams_deltas_of_cumulative_outputs_and_tokenizes_once(vllm: Any, tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    assert engine.engine.args.enable_lora and engine.engine.args.max_loras == 2
    chunks = asyncio.run(collect(engine, "Fever and cough."))
    assert "".join(c.text for c in chunks) == "Risk level: low"
    assert [c.finish_reason for c in chunks][-1] == "stop"
    assert chunks[-1].prompt_tokens == 3 and chunks[-1].completion_tokens == 3
    sent = engine.engine.prompts[0]
    assert sent == {"prompt_token_ids": [5, 3, 6], "prompt": "Fever and cough."}
    assert engine.engine.aborted == []  # finished normally: nothing to abort


def test_vllm_sizes_its_batch_as_for_its_own_openai_server(vllm: Any, tmp_path: Path) -> None:
    """vLLM's batch defaults depend on who runs it: as a library it takes 128 sequences, as
    ``vllm serve`` on an H100/H200 1024. healthnav is an OpenAI server and must get the latter."""
    engine = make_engine(tmp_path)
    assert engine.engine.usage_context is UsageContext.OPENAI_API_SERVER


def test_adapter_requests_carry_their_lora_and_unknown_adapters_are_rejected(
    vllm: Any, tmp_path: Path
) -> None:
    engine = make_engine(tmp_path)

    async def run() -> None:
        await engine.add_adapter("triage", tmp_path / "triage")
        await engine.add_adapter("derm", tmp_path / "derm")
        await collect(engine, "Rash.", adapter="derm")
        with pytest.raises(EngineRequestError, match="not loaded"):
            await collect(engine, "Rash.", adapter="cardio")

    asyncio.run(run())
    lora = engine.engine.loras[0]
    assert (lora.lora_name, lora.lora_int_id, lora.lora_path) == ("derm", 2, str(tmp_path / "derm"))
    assert len(engine.engine.prompts) == 1  # the unknown adapter never reached the engine


def test_an_adapter_vllm_cannot_load_is_not_servable(vllm: Any, tmp_path: Path) -> None:
    """A request naming an adapter that failed to load would kill vLLM's engine core."""
    engine = make_engine(tmp_path)

    async def run() -> None:
        with pytest.raises(Exception, match="greater than max_lora_rank"):
            await engine.add_adapter("big", tmp_path / "rank64")
        with pytest.raises(EngineRequestError, match="not loaded"):
            await collect(engine, "Rash.", adapter="big")
        await engine.add_adapter("triage", tmp_path / "triage")

    asyncio.run(run())
    assert engine.engine.prompts == []
    assert [lora.lora_name for lora in engine.engine.added] == ["triage"]


def test_an_adapter_loaded_again_from_another_path_gets_a_new_id(vllm: Any, tmp_path: Path) -> None:
    """vLLM skips an add_lora for an id it holds: new weights under an old id would never load."""
    engine = make_engine(tmp_path)

    async def run() -> None:
        await engine.add_adapter("triage", tmp_path / "v1")
        await engine.add_adapter("triage", tmp_path / "v1")
        await engine.add_adapter("triage", tmp_path / "v2")
        await collect(engine, "Rash.", adapter="triage")

    asyncio.run(run())
    assert [(r.lora_int_id, Path(r.lora_path).name) for r in engine.engine.added] == [
        (1, "v1"),
        (1, "v1"),
        (2, "v2"),
    ]
    assert engine.engine.removed == [1]
    assert engine.engine.loras[0].lora_int_id == 2


def test_a_client_that_goes_away_aborts_the_request(vllm: Any, tmp_path: Path) -> None:
    engine = make_engine(tmp_path)

    async def run() -> None:
        stream = engine.generate("Headache.", Sampling(max_tokens=8), adapter=None, request_id="gone")
        await anext(stream)
        await stream.aclose()  # what Ray Serve does when the HTTP client disconnects

    asyncio.run(run())
    assert engine.engine.aborted == ["gone"]


def test_a_prompt_longer_than_the_context_is_a_400_before_the_gpu_sees_it(vllm: Any, tmp_path: Path) -> None:
    engine = make_engine(tmp_path, max_model_len=128)
    with pytest.raises(EngineRequestError) as err:
        asyncio.run(collect(engine, "word " * 120, max_tokens=64))
    assert err.value.status == 400
    assert engine.engine.prompts == []


def test_scoring_a_prompt_that_fills_the_context_is_a_400(vllm: Any, tmp_path: Path) -> None:
    """vLLM scores a prompt while generating one token, and refuses a prompt with no room for it."""
    engine = make_engine(tmp_path, max_model_len=128)
    score = Sampling(max_tokens=0, logprobs=0, echo=True)

    async def run(words: int) -> list[Any]:
        return [c async for c in engine.generate("word " * words, score, adapter=None, request_id="s")]

    with pytest.raises(EngineRequestError, match="needs room for one more") as err:
        asyncio.run(run(128))
    assert err.value.status == 400 and err.value.param == "prompt"
    assert engine.engine.prompts == []
    assert asyncio.run(run(127))[-1].finish_reason == "length"


def test_output_constraints_reach_vllm_as_structured_outputs(vllm: Any, tmp_path: Path) -> None:
    from healthnav.serving.assessment import ASSESSMENT_PATTERN

    engine = make_engine(tmp_path)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}

    async def run(sampling: Sampling) -> list[Any]:
        return [c async for c in engine.generate("Cough.", sampling, adapter=None, request_id="r")]

    asyncio.run(run(Sampling(max_tokens=8, json_schema=schema)))
    asyncio.run(run(Sampling(max_tokens=8, regex=ASSESSMENT_PATTERN)))
    chunks = asyncio.run(run(Sampling(max_tokens=8)))
    sent = [p.structured_outputs for p in engine.engine.params]
    assert sent[0] == StructuredOutputsParams(json=schema)
    assert sent[1] == StructuredOutputsParams(regex=ASSESSMENT_PATTERN) and sent[2] is None
    assert "".join(c.text for c in chunks) == "Risk level: low"  # unconstrained streaming unchanged
    with pytest.raises(EngineRequestError) as err:  # a schema vLLM's grammar backend refuses
        asyncio.run(run(Sampling(max_tokens=8, json_schema={"type": "no-such-type"})))
    assert err.value.status == 400 and err.value.param == "response_format"


def test_a_dead_engine_is_engine_unavailable_and_nothing_is_aborted_on_it(
    vllm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM marks its client ``errored`` once the engine core died and raises on every request."""
    from healthnav.serving.engine import EngineUnavailable

    engine = make_engine(tmp_path)

    async def dead(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise RuntimeError("EngineCore encountered an issue")
        yield  # an async generator, as vLLM's generate is

    monkeypatch.setattr(engine.engine, "generate", dead)
    engine.engine.errored = True
    with pytest.raises(EngineUnavailable, match="retry"):
        asyncio.run(collect(engine, "Fever."))
    assert engine.engine.aborted == []  # a dead engine has nothing to abort (and abort would raise)
    # an ordinary failure on a live engine is not dressed up as a restartable one
    engine.engine.errored = False
    with pytest.raises(RuntimeError, match="EngineCore"):
        asyncio.run(collect(engine, "Fever."))
