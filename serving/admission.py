"""Backpressure inside a replica: how many generations may run, and how many may wait.

Admission lives in the replica, below Ray's own per-replica cap (see
:func:`healthnav.serving.deployment.llm_deployment_options`), so an overloaded replica still
answers in the API's own words: an OpenAI-shaped 503 with ``Retry-After``, or an emergency
assessment when red flags were found.
"""

from __future__ import annotations

import asyncio


class Admission:
    """At most ``limit`` generations at once in this replica's engine, at most ``queue`` waiting.

    ``queue`` < 0 lets any number wait. A request that would exceed both is refused at once
    (:meth:`enter` returns False) rather than queued forever; the caller answers 503.
    """

    def __init__(self, limit: int, queue: int) -> None:
        self.queue = queue
        self.waiting = 0
        self._slots = asyncio.Semaphore(limit)

    async def enter(self) -> bool:
        if self._slots.locked():
            if 0 <= self.queue <= self.waiting:
                return False
            self.waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self.waiting -= 1
        else:
            await self._slots.acquire()
        return True

    def leave(self) -> None:
        self._slots.release()
