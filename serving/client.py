"""Drop-in client for the Health Navigator backend (roadmap Phase 7).

The backend used to call a paid LLM API through an object with ``invoke(prompt) -> str``;
:class:`CustomMedicalLLM` keeps that shape, so swapping providers is a one-line change, and adds
:meth:`CustomMedicalLLM.assess` for the structured assessment API. Only httpx is needed.

Requests for an adapter carry Ray Serve's ``serve_multiplexed_model_id`` header, so the proxy
sends them straight to a replica that already holds the adapter (the ``model`` field is in the
body, which the proxy does not read; without the header the receiving replica forwards the
request, one extra hop). Base-model requests carry none: they go to the least loaded replica.

Retries cover what is safe to retry: connection failures, 429/502/503/504 (honouring
``Retry-After``, capped), with exponential backoff. 4xx answers are the caller's bug and are
raised at once with the server's message.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import httpx

from healthnav.contracts.errors import HealthnavError

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MULTIPLEXED_MODEL_HEADER = "serve_multiplexed_model_id"
"""Ray Serve's HTTP header naming the multiplexed model (here: the adapter) a request is for."""


class MedicalLLMError(HealthnavError, RuntimeError):
    """The server refused the request or stayed unavailable; ``status`` is None for network errors."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CustomMedicalLLM:
    """A client of a healthnav server: ``invoke`` for text, ``assess`` for structured triage."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        *,
        max_tokens: int | None = None,
        temperature: float = 0.2,
        backoff: float = 0.5,
        max_retry_after: float = 10.0,
        base_model_name: str = "base",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("HEALTHNAV_BASE_URL", "http://127.0.0.1:8000")).rstrip(
            "/"
        )
        self.model = model or os.environ.get("HEALTHNAV_MODEL", base_model_name)
        self.base_model_name = base_model_name
        """The server's name for its base model (ModelServe ``spec.modelName``); other names are adapters."""
        self.retries = retries
        self.max_tokens, self.temperature = max_tokens, temperature
        self.backoff, self.max_retry_after = backoff, max_retry_after
        key = api_key if api_key is not None else os.environ.get("HEALTHNAV_API_KEY", "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
        )

    def __enter__(self) -> CustomMedicalLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def invoke(self, prompt: str, **kwargs: Any) -> str:
        """The model's answer to ``prompt`` (rendered server-side with the training template)."""
        body: dict[str, Any] = {
            "model": kwargs.pop("model", self.model),
            "messages": [{"role": "user", "content": prompt}],
            "temperature": kwargs.pop("temperature", self.temperature),
        }
        max_tokens = kwargs.pop("max_tokens", self.max_tokens)
        if max_tokens is not None:  # otherwise the server's own limit applies
            body["max_tokens"] = max_tokens
        body.update(kwargs)
        data = self._post("/v1/chat/completions", body)
        return str(data["choices"][0]["message"]["content"] or "")

    def assess(self, symptoms: str, **case: Any) -> dict[str, Any]:
        """A structured assessment: risk_level, assessment, recommendations, red_flags, disclaimer, ..."""
        body = {"symptoms": symptoms, "model": case.pop("model", self.model), **case}
        return self._post("/v1/assessments", body)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        last: str = ""
        for attempt in range(self.retries + 1):
            try:
                resp = self._http.post(path, json=body, headers=self._routing_headers(body))
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                last = f"{type(exc).__name__}: {exc}"
                status = None
                delay = self._delay(attempt, None)
            else:
                if resp.status_code < 400:
                    return resp.json()
                status = resp.status_code
                last = _error_message(resp)
                if status not in RETRY_STATUSES:
                    raise MedicalLLMError(f"{path}: HTTP {status}: {last}", status)
                delay = self._delay(attempt, resp.headers.get("retry-after"))
            if attempt < self.retries:
                time.sleep(delay)
        raise MedicalLLMError(f"{path}: failed after {self.retries + 1} attempts: {last}", status)

    def _routing_headers(self, body: dict[str, Any]) -> dict[str, str]:
        model = str(body.get("model") or "")
        if not model or model == self.base_model_name:
            return {}
        return {MULTIPLEXED_MODEL_HEADER: model}

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), self.max_retry_after)
        return min(self.backoff * (2**attempt), self.max_retry_after) * (0.5 + random.random() / 2)


def _error_message(resp: httpx.Response) -> str:
    try:
        err = resp.json().get("error", {})
        return str(err.get("message") or resp.text[:200])
    except ValueError:
        return resp.text[:200]
