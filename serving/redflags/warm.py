"""Build slow parts in the background so the first check on a fresh replica never waits.

The Hyperscan database (seconds to compile) and the semantic net's token table (~45 s to build
once per machine, then cached) make checks faster or add a second net, but the rules alone are
complete without them. Until a part is ready, a non-blocking caller gets None and carries on
(the rules run with plain ``re``; the semantic net is reported unavailable).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Background(Generic[T]):
    """A value built once, in a daemon thread on first request (or in the caller when blocking)."""

    def __init__(self, build: Callable[[], T | None]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._started = False
        self._value: T | None = None

    def _run(self) -> None:
        try:
            self._value = self._build()
        except Exception:  # a part that cannot be built stays unavailable; the rules still run
            self._value = None
        finally:
            self._done.set()

    def get(self, *, block: bool) -> T | None:
        if self._done.is_set():
            return self._value
        with self._lock:
            if not self._started:
                self._started = True
                if block:
                    self._run()
                    return self._value
                threading.Thread(target=self._run, name="redflags-warm", daemon=True).start()
        if block:
            self._done.wait()
            return self._value
        return None
