"""Checking a loaded adapter against the probes its training recorded, before it is served.

The engine scores each probe's text with the adapter (echoed prompt log-probabilities, the same
path ``/v1/completions`` with ``echo`` takes) and :func:`healthnav.contracts.probes.judge`
decides. A refused adapter is unloaded again and every request for it gets a 502 that says
why; the base model and other adapters keep serving.
"""

from __future__ import annotations

import uuid

from healthnav.contracts.probes import AdapterProbes, ProbeVerdict, judge
from healthnav.serving.engine import Engine, Sampling

SCORE_ONLY = Sampling(max_tokens=0, temperature=0.0, logprobs=0, echo=True)


async def score_text(engine: Engine, text: str, adapter: str) -> list[float | None] | None:
    """The engine's log-probability of every token of ``text`` under ``adapter`` (first: None)."""
    scores = None
    async for chunk in engine.generate(text, SCORE_ONLY, adapter=adapter, request_id=uuid.uuid4().hex):
        if chunk.logprobs is not None:
            scores = list(chunk.logprobs["token_logprobs"])
    return scores


async def verify_adapter(engine: Engine, adapter: str, probes: AdapterProbes) -> ProbeVerdict:
    """Whether ``engine`` computes ``adapter`` as training did (one scoring pass per probe)."""
    served = [await score_text(engine, p.text, adapter) for p in probes.probes]
    return judge(probes, served)
