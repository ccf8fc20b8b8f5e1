"""The serving app through real Ray Serve on the CPU: OpenAI client, adapters, S3, auth, limits, overload.

One Ray instance and one application serve the whole module (Ray starts slowly on 2 cores).
The model is a tiny real Mistral-architecture model and the adapters real peft LoRA weights;
only the GPU is absent (engine: transformers on CPU).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from healthnav.contracts.probes import AdapterProbes
from healthnav.devenv.processes import free_port
from healthnav.serving.config import ServeAppConfig

KEYS_ENV = "HEALTHNAV_TEST_SERVE_KEYS"
KEY = "sk-test-serving"
MAX_TOKENS = 24
CONFIGURED_LATER = ("checked", "diverged")
"""Adapters the app configures whose files a test uploads (the rollout-verification tests)."""


@dataclass
class Served:
    url: str
    bucket: str
    prefix: str
    adapter_dir: Path

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=60)

    def post(self, path: str, body: object, key: str | None = KEY, **kw: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.post(f"{self.url}{path}", json=body, headers=headers, timeout=60, **kw)


@pytest.fixture(scope="module")
def served(
    s3, tiny_model: Path, tiny_adapter: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    from healthnav.serving.app import build_app
    from healthnav.serving.local import local_serve

    bucket = s3.create_bucket(f"serving-{uuid.uuid4().hex[:8]}")
    prefix = f"s3://{bucket}/finetunes/team-a/"
    os.environ[KEYS_ENV] = f"{KEY},sk-second-key"  # replicas inherit the environment Ray starts with
    cfg = ServeAppConfig.model_validate(
        {
            "modelName": "tiny",
            "baseModel": f"file://{tiny_model}",
            "engine": "transformers",
            "adapters": [
                {"name": "triage", "uri": f"file://{tiny_adapter}"},
                *({"name": n, "uri": f"s3://{bucket}/configured/{n}/"} for n in CONFIGURED_LATER),
            ],
            "adaptersPrefix": prefix,
            "adapterDiscoveryTtlSeconds": 0,
            "adapterCacheDir": str(tmp_path_factory.mktemp("adapter-cache")),
            "numGpusPerReplica": 0,
            "numCpusPerReplica": 0.5,
            "apiKeysEnv": KEYS_ENV,
            "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
            "limits": {
                "maxTokens": MAX_TOKENS,
                "maxPromptChars": 2000,
                "maxOngoingRequests": 2,
                "maxQueuedRequests": 2,
                "requestTimeoutSeconds": 60,
            },
        }
    )
    try:
        with local_serve(build_app(cfg.to_dict())) as url:
            yield Served(url, bucket, prefix, tiny_adapter)
    finally:
        os.environ.pop(KEYS_ENV, None)


def _greedy(
    served: Served, model: str, prompt: str = "Patient reports fever and cough.", **kw: object
) -> str:
    out = served.client().completions.create(model=model, prompt=prompt, max_tokens=16, temperature=0, **kw)
    return out.choices[0].text


# --- OpenAI compatibility ---------------------------------------------------------------------------


def test_models_lists_base_and_configured_adapters(served: Served) -> None:
    models = served.client().models.list().data
    ids = [m.id for m in models]
    assert ids[:2] == ["tiny", "triage"]


def test_chat_completion_with_the_official_client(served: Served) -> None:
    resp = served.client().chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "I have a mild headache."}],
        max_tokens=8,
        temperature=0,
    )
    choice = resp.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert resp.usage.prompt_tokens > 20  # the training template wraps the message
    assert 0 < resp.usage.completion_tokens <= 8
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_streaming_yields_the_same_text_as_non_streaming(served: Served) -> None:
    whole = _greedy(served, "tiny")
    stream = served.client().completions.create(
        model="tiny",
        prompt="Patient reports fever and cough.",
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len([c for c in chunks if c.choices]) > 1, "expected several SSE chunks"
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16


def test_chat_streaming(served: Served) -> None:
    stream = served.client().chat.completions.create(
        model="triage",
        messages=[{"role": "user", "content": "sore throat"}],
        max_tokens=6,
        stream=True,
        seed=3,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_seed_makes_sampling_reproducible(served: Served) -> None:
    def sample(seed: int) -> str:
        return (
            served.client()
            .completions.create(
                model="tiny", prompt="Advice for a cold:", max_tokens=12, temperature=1.0, seed=seed
            )
            .choices[0]
            .text
        )

    assert sample(7) == sample(7)


def test_stop_sequence_cuts_the_output(served: Served) -> None:
    whole = _greedy(served, "tiny")
    stop = whole[len(whole) // 2 : len(whole) // 2 + 2]
    assert stop.strip(), f"tiny model output too short to pick a stop string: {whole!r}"
    cut = _greedy(served, "tiny", stop=[stop])
    assert cut == whole[: whole.index(stop)]


def test_echo_and_logprobs_score_the_prompt_as_lm_eval_expects(served: Served) -> None:
    """``echo`` + ``logprobs`` + ``max_tokens=0``: the prompt's token log-probabilities, nothing generated."""
    prompt = "Patient reports fever and cough."

    def score(model: str) -> openai.types.Completion:
        return served.client().completions.create(
            model=model, prompt=prompt, max_tokens=0, echo=True, logprobs=1, temperature=0
        )

    adapted, base = score("triage"), score("tiny")
    choice = adapted.choices[0]
    lp = choice.logprobs
    assert choice.text == prompt and adapted.usage.completion_tokens == 0
    assert "".join(lp.tokens) == prompt and len(lp.tokens) == adapted.usage.prompt_tokens
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    assert lp.token_logprobs[0] is None and all(v < 0 for v in lp.token_logprobs[1:])
    assert all(tok in top for tok, top in zip(lp.tokens[1:], lp.top_logprobs[1:], strict=True))
    assert base.choices[0].logprobs.token_logprobs != lp.token_logprobs  # the adapter is applied
    generated = served.client().completions.create(
        model="tiny", prompt=prompt, max_tokens=4, echo=True, logprobs=0, temperature=0
    )
    assert (
        generated.choices[0].text
        == prompt + _greedy(served, "tiny")[: len(generated.choices[0].text) - len(prompt)]
    )
    assert len(generated.choices[0].logprobs.tokens) > len(lp.tokens)


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/v1/completions", {"prompt": "x", "echo": True, "logprobs": 1, "stream": True}, "stream=true"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "echo"),
        ("/v1/completions", {"prompt": "x", "logprobs": 9}, "logprobs"),
        ("/v1/completions", {"prompt": "x", "best_of": 3}, "best_of"),
        ("/v1/completions", {"prompt": "x", "frequency_penalty": 1.0}, "penalties"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "logprobs": True},
            "logprobs",
        ),
    ],
)
def test_options_the_server_cannot_honour_are_refused_not_ignored(
    served: Served, path: str, body: dict, words: str
) -> None:
    resp = served.post(path, {"model": "tiny", **body})
    assert resp.status_code == 400, resp.text
    assert words in resp.json()["error"]["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tools", [{"type": "function", "function": {"name": "triage", "parameters": {"type": "object"}}}]),
        ("tool_choice", "required"),
        ("functions", [{"name": "triage", "parameters": {"type": "object"}}]),
        ("function_call", {"name": "triage"}),
        ("top_logprobs", 2),
        ("guided_json", {"type": "object"}),
        ("response_format", {"type": "xml"}),
        ("response_format", {"type": "json_schema"}),
    ],
)
def test_the_official_client_gets_a_400_naming_a_field_the_server_cannot_honour(
    served: Served, field: str, value: object
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        served.client().chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "I have a cough."}],
            max_tokens=4,
            extra_body={field: value},
        )
    assert err.value.status_code == 400 and err.value.param == field, err.value.body
    assert field in err.value.message or "support" in err.value.message


def test_tool_choice_none_and_text_response_format_are_accepted(served: Served) -> None:
    resp = served.client().chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "I have a cough."}],
        max_tokens=4,
        tool_choice="none",
        response_format={"type": "text"},
    )
    assert resp.choices[0].message.content is not None


def test_json_response_formats_are_honoured_not_ignored(served: Served) -> None:
    """A random tiny model, constrained: what it writes is the start of a JSON object (24 tokens)."""
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    for fmt in (
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    ):
        resp = served.client().chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "Answer in JSON."}],
            max_tokens=MAX_TOKENS,
            temperature=0,
            response_format=fmt,  # type: ignore[arg-type]
        )
        text = resp.choices[0].message.content or ""
        assert text.lstrip().startswith("{"), text
        if resp.choices[0].finish_reason == "stop":
            json.loads(text)
        if fmt["type"] == "json_schema":  # only the schema's key, however far it got
            assert set(re.findall(r'"([^"]*)"\s*:', text)) <= {"ok"}, text


# --- multi-LoRA ------------------------------------------------------------------------------------


def test_model_field_switches_between_base_and_adapter(served: Served) -> None:
    base, adapted = _greedy(served, "tiny"), _greedy(served, "triage")
    assert base != adapted
    assert _greedy(served, "tiny") == base, "the base model must be unaffected after serving an adapter"


def test_adapter_uploaded_to_s3_later_becomes_servable_without_restart(served: Served) -> None:
    from healthnav.contracts.storage import upload_dir

    name = f"ft-{uuid.uuid4().hex[:6]}"
    client = served.client()
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model=name, prompt="hello", max_tokens=4)
    assert name not in [m.id for m in client.models.list().data]

    # the trainer's output layout: <output>/<namespace>/<job>/adapter/
    upload_dir(served.adapter_dir, f"{served.prefix}{name}/adapter/", last=("adapter_config.json",))

    assert name in [m.id for m in client.models.list().data]
    # same weights as the configured "triage" adapter, fetched from S3 this time
    assert _greedy(served, name) == _greedy(served, "triage")


def test_an_adapter_the_engine_cannot_load_is_a_502_naming_it_and_the_replica_lives_on(
    served: Served, tmp_path: Path
) -> None:
    import shutil

    from healthnav.contracts.storage import upload_dir

    broken = tmp_path / "broken"
    shutil.copytree(served.adapter_dir, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    name = f"broken-{uuid.uuid4().hex[:6]}"
    upload_dir(broken, f"{served.prefix}{name}/adapter/", last=("adapter_config.json",))

    resp = served.post("/v1/completions", {"model": name, "prompt": "hello", "max_tokens": 4})
    assert resp.status_code == 502, resp.text
    err = resp.json()["error"]
    assert name in err["message"] and err["param"] == "model"
    assert _greedy(served, "triage") and _greedy(served, "tiny")  # the replica still serves


def _upload_adapter(served: Served, src: Path, probes: AdapterProbes, tmp_path: Path, to: str) -> None:
    import shutil

    from healthnav.contracts.storage import upload_dir

    shutil.copytree(src, tmp_path / "upload")
    probes.write(tmp_path / "upload")
    upload_dir(tmp_path / "upload", to, last=("adapter_config.json",))


def _verification(served: Served, name: str) -> httpx.Response:
    return httpx.get(
        f"{served.url}/adapters/{name}/verification", timeout=60
    )  # no API key: the operator has none


def test_an_adapter_that_answers_as_its_training_recorded_is_served_and_verified(
    served: Served, tiny_adapter_probes: AdapterProbes, tmp_path: Path
) -> None:
    _upload_adapter(
        served, served.adapter_dir, tiny_adapter_probes, tmp_path, f"s3://{served.bucket}/configured/checked/"
    )
    resp = _verification(served, "checked")
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "Verified" and "answers as in training" in resp.json()["message"]
    assert _greedy(served, "checked") == _greedy(served, "triage")


def test_an_adapter_that_answers_differently_from_its_training_is_refused_with_a_502(
    served: Served, other_adapter_probes: AdapterProbes, tmp_path: Path
) -> None:
    """Weights that are not the ones training scored (what an engine that mis-applies LoRA would
    compute): the replica refuses them instead of serving unknown answers, says so to the
    rollout's check, and serves on."""
    _upload_adapter(
        served,
        served.adapter_dir,
        other_adapter_probes,
        tmp_path,
        f"s3://{served.bucket}/configured/diverged/",
    )
    check = _verification(served, "diverged")
    assert check.status_code == 200, check.text
    assert (
        check.json()["state"] == "Refused" and "answers differently from training" in check.json()["message"]
    )

    resp = served.post("/v1/completions", {"model": "diverged", "prompt": "hello", "max_tokens": 4})
    assert resp.status_code == 502, resp.text
    err = resp.json()["error"]
    assert "diverged" in err["message"] and "answers differently from training" in err["message"]
    assert err["param"] == "model"
    assert _greedy(served, "triage") and _greedy(served, "tiny")  # the replica still serves


def test_a_discovered_adapter_verifies_the_same_way(
    served: Served, other_adapter_probes: AdapterProbes, tmp_path: Path
) -> None:
    name = f"diverged-{uuid.uuid4().hex[:6]}"
    _upload_adapter(
        served, served.adapter_dir, other_adapter_probes, tmp_path, f"{served.prefix}{name}/adapter/"
    )
    resp = served.post("/v1/completions", {"model": name, "prompt": "hello", "max_tokens": 4})
    assert resp.status_code == 502 and "answers differently from training" in resp.text


def test_verification_says_an_adapter_without_probes_is_served_unverified_and_refuses_other_names(
    served: Served,
) -> None:
    resp = _verification(served, "triage")  # built by peft directly: no trainer recorded probes
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "adapter": "triage",
        "state": "NotRecorded",
        "message": "ships no probes.json: served unverified",
    }
    for name in ("tiny", "nonexistent"):  # the base model has nothing to verify
        resp = _verification(served, name)
        assert resp.status_code == 404 and resp.json()["error"]["param"] == "name", resp.text


# --- assessments -----------------------------------------------------------------------------------


def test_assessment_with_red_flags_is_an_emergency_whatever_the_model_says(served: Served) -> None:
    resp = served.post(
        "/v1/assessments",
        {"symptoms": "Crushing chest pain spreading to my left arm, sweating", "age": 58, "sex": "male"},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["risk_level"] == "emergency"
    assert [f["id"] for f in body["red_flags"]] == ["acute_coronary_syndrome"]
    assert "emergency" in body["recommendations"][0].lower()
    assert body["disclaimer"] and body["model"] == "tiny" and body["latency_ms"] > 0


def test_assessment_without_red_flags_is_still_safe_when_the_output_is_garbage(served: Served) -> None:
    resp = served.post(
        "/v1/assessments",
        {"symptoms": "runny nose and no chest pain", "age": 30, "duration": "2 days", "model": "triage"},
    )
    body = resp.json()
    assert resp.status_code == 200, resp.text
    assert body["red_flags"] == [] and body["model"] == "triage"
    # a random tiny model, constrained to the trained format within 24 tokens: it is cut off in the
    # assessment line, so the conservative fallback applies; nothing it wrote is a recommendation
    assert body["model_output_parsed"] is False
    assert body["risk_level"] == "urgent" and body["recommendations"] and body["assessment"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"age": 30}, "symptoms"),
        ({"symptoms": "cough", "age": -1}, "age"),
        ({"symptoms": "cough", "sex": "robot"}, "sex"),
        ({"symptoms": "cough", "colour": "blue"}, "colour"),
        ({"symptoms": "cough", "max_tokens": MAX_TOKENS + 1}, "max_tokens"),
    ],
)
def test_invalid_assessment_is_a_400_naming_the_field(served: Served, body: dict, field: str) -> None:
    resp = served.post("/v1/assessments", body)
    assert resp.status_code == 400, resp.text
    assert field in resp.json()["error"]["message"]


# --- production behaviour --------------------------------------------------------------------------


def test_auth_is_enforced(served: Served) -> None:
    with pytest.raises(openai.AuthenticationError):
        served.client(key="wrong").models.list()
    resp = served.post("/v1/assessments", {"symptoms": "cough"}, key=None)
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
    assert served.client(key="sk-second-key").models.list().data  # every configured key works
    assert httpx.get(f"{served.url}/healthz").status_code == 200  # probes need no key


def test_readiness_reflects_a_loaded_engine(served: Served) -> None:
    resp = httpx.get(f"{served.url}/readyz", timeout=30)
    assert resp.status_code == 200
    assert resp.json()["engine"] == "transformers" and resp.json()["max_model_len"] > 0


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        (
            "/v1/completions",
            {"model": "tiny", "prompt": "x", "max_tokens": MAX_TOKENS + 1},
            400,
            "max_tokens",
        ),
        ("/v1/completions", {"model": "tiny", "prompt": "x" * 2001}, 400, "at most 2000"),
        ("/v1/chat/completions", {"model": "tiny", "messages": []}, 400, "messages"),
        (
            "/v1/chat/completions",
            {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 2},
            400,
            "n",
        ),
        (
            "/v1/chat/completions",
            {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
            404,
            "nope",
        ),
        (
            "/v1/chat/completions",
            {"model": "../etc", "messages": [{"role": "user", "content": "x"}]},
            404,
            "exist",
        ),
        (
            "/v1/chat/completions",
            {"model": "tiny", "messages": [{"role": "system", "content": "x"}]},
            400,
            "user",
        ),
    ],
)
def test_bad_requests_get_clear_4xx(served: Served, path: str, body: dict, status: int, words: str) -> None:
    resp = served.post(path, body)
    assert resp.status_code == status, resp.text
    assert words in resp.json()["error"]["message"]


def test_malformed_and_oversized_bodies(served: Served) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    resp = httpx.post(f"{served.url}/v1/completions", content=b"{not json", headers=headers)
    assert resp.status_code == 400
    huge = b'{"model": "tiny", "prompt": "' + b"a" * 200_000 + b'"}'
    resp = httpx.post(f"{served.url}/v1/completions", content=huge, headers=headers)
    assert resp.status_code == 413


def test_overload_answers_503_with_retry_after(served: Served) -> None:
    emergency = {"symptoms": "crushing chest pain spreading to my left arm, sweating", "age": 58}

    async def burst() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with httpx.AsyncClient(timeout=120, headers={"Authorization": f"Bearer {KEY}"}) as client:
            body = {"model": "tiny", "prompt": "Describe triage.", "max_tokens": MAX_TOKENS, "temperature": 0}
            completions = [client.post(f"{served.url}/v1/completions", json=body) for _ in range(24)]
            assessments = [client.post(f"{served.url}/v1/assessments", json=emergency) for _ in range(4)]
            responses = await asyncio.gather(*completions, *assessments)
            return responses[:24], responses[24:]

    responses, assessed = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {200, 503}, codes
    assert 200 in codes and 503 in codes, codes
    rejected = next(r for r in responses if r.status_code == 503)
    assert int(rejected.headers["retry-after"]) > 0
    assert rejected.json()["error"]["code"] == "overloaded"  # OpenAI's error shape, not the proxy's text
    # An emergency is still told to get help while the model is saturated.
    assert all(r.status_code == 200 and r.json()["risk_level"] == "emergency" for r in assessed), [
        (r.status_code, r.text[:200]) for r in assessed
    ]


def test_client_invoke_and_assess(served: Served) -> None:
    from healthnav.serving.client import CustomMedicalLLM, MedicalLLMError

    with CustomMedicalLLM(base_url=served.url, api_key=KEY, model="triage", timeout=60, retries=1) as llm:
        text = llm.invoke("What should I do about a sprained ankle?", max_tokens=8)
        assert isinstance(text, str) and text
        result = llm.assess("my face is drooping and my speech is slurred", age=71)
        assert result["risk_level"] == "emergency" and result["red_flags"][0]["id"] == "stroke"
        with pytest.raises(MedicalLLMError, match="HTTP 404") as err:
            llm.invoke("hi", model="missing-model")
        assert err.value.status == 404
    with (
        CustomMedicalLLM(base_url=served.url, api_key="bad", retries=3) as llm,
        pytest.raises(MedicalLLMError) as err,
    ):
        llm.invoke("hi")
    assert err.value.status == 401  # auth failures are not retried


def test_client_retries_then_fails_clearly_when_the_server_is_down() -> None:
    from healthnav.serving.client import CustomMedicalLLM, MedicalLLMError

    with (
        CustomMedicalLLM(
            base_url=f"http://127.0.0.1:{free_port()}", timeout=2, retries=2, backoff=0.01
        ) as llm,
        pytest.raises(MedicalLLMError, match="after 3 attempts") as err,
    ):
        llm.invoke("hello")
    assert err.value.status is None


def test_openapi_fuzzing_finds_no_server_errors(served: Served) -> None:
    """schemathesis generates valid and invalid requests from the app's OpenAPI: no 5xx allowed."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    operations = [op.ok() for op in schema.get_all_operations()]
    assert {o.path for o in operations} >= {"/v1/chat/completions", "/v1/completions", "/v1/assessments"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=served.url, headers={"Authorization": f"Bearer {KEY}"}, checks=[not_a_server_error]
            )

        check()
