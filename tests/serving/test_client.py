"""What the drop-in client puts on the wire (the served behaviour is in test_serving_app.py)."""

from __future__ import annotations

import json

import httpx
import pytest

from healthnav.serving.client import MULTIPLEXED_MODEL_HEADER, CustomMedicalLLM

pytestmark = pytest.mark.unit


def recording_client(**kwargs: object) -> tuple[CustomMedicalLLM, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/assessments":
            return httpx.Response(200, json={"risk_level": "low"})
        return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}}]})

    client = CustomMedicalLLM("http://server", api_key="k", transport=httpx.MockTransport(answer), **kwargs)
    return client, seen


def test_adapter_requests_name_the_adapter_for_ray_routing_and_base_requests_do_not() -> None:
    client, seen = recording_client(model="triage-v1")
    assert client.invoke("Fever for two days.") == "ok"
    client.assess("rash", age=30)
    client.invoke("Headache.", model="base")
    assert [r.headers.get(MULTIPLEXED_MODEL_HEADER) for r in seen] == ["triage-v1", "triage-v1", None]
    assert all(r.headers["authorization"] == "Bearer k" for r in seen)
    assert json.loads(seen[0].content)["model"] == "triage-v1"


def test_a_renamed_base_model_is_not_mistaken_for_an_adapter() -> None:
    client, seen = recording_client(base_model_name="biomistral-7b")
    client.invoke("Cough.")
    client.invoke("Cough.", model="triage-v1")
    assert json.loads(seen[0].content)["model"] == "biomistral-7b"
    assert [r.headers.get(MULTIPLEXED_MODEL_HEADER) for r in seen] == [None, "triage-v1"]
