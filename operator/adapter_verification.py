"""Asking a ModelServe's running application whether each live adapter answers as in training.

The trainer ships probes with every adapter (:mod:`healthnav.contracts.probes`) and a serving
replica refuses one whose engine scores them differently. That refusal happens in the data
plane, on first load; this is how it reaches ``kubectl get modelserve``: once an adapter is live
on the current spec, the operator calls ``GET /adapters/{name}/verification`` on the Serve
Service (which loads it where its requests go) and records the verdict in status. The route
needs no API key, so the operator holds none of the app's secrets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

import httpx
from pydantic import ValidationError

from healthnav.contracts.probes import AdapterVerification
from healthnav.operator import metrics
from healthnav.operator.rayservice import endpoint

log = logging.getLogger("healthnav.operator.modelserve")


class AdapterVerifier:
    """Verification calls for every ModelServe (rare: once per adapter files and revision, so
    each batch opens its own connection pool and nothing outlives it).

    ``base_url`` maps (ModelServe name, namespace) to the application's URL: the Serve Service's
    cluster DNS name in a cluster; tests point it at a loopback server.
    """

    def __init__(self, timeout_seconds: float, base_url: Callable[[str, str], str] = endpoint) -> None:
        self.base_url = base_url
        self.timeout = httpx.Timeout(timeout_seconds, connect=5.0)

    async def verify(
        self, name: str, namespace: str, adapters: Mapping[str, str]
    ) -> dict[str, AdapterVerification]:
        """The verdicts the application gives for ``adapters`` ({name: uri}); an adapter it could
        not answer for yet (connection refused, 503, timeout) is left out and asked again later."""
        base = self.base_url(name, namespace)
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            answers = await asyncio.gather(*(_ask(client, base, adapter) for adapter in adapters))
        for answer in answers:
            metrics.ADAPTER_VERIFICATIONS.labels(answer.state if answer else "Unanswered").inc()
        return {a.adapter: a for a in answers if a is not None}


async def _ask(client: httpx.AsyncClient, base: str, adapter: str) -> AdapterVerification | None:
    try:
        resp = await client.get(f"{base}/adapters/{adapter}/verification")
    except httpx.HTTPError as exc:
        log.info("adapter %s: verification not answered yet (%s)", adapter, type(exc).__name__)
        return None
    if resp.status_code != 200:
        log.info("adapter %s: verification answered %d; asking again later", adapter, resp.status_code)
        return None
    try:
        answer = AdapterVerification.model_validate_json(resp.content)
    except ValidationError:
        log.warning("adapter %s: the application's verification answer is not one healthnav reads", adapter)
        return None
    return answer if answer.adapter == adapter else None
