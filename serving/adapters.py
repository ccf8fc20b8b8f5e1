"""LoRA adapters: which names exist (configured or discovered in S3) and a bounded local disk cache.

A request's ``model`` is the base model's name, a configured adapter, or — when
``adaptersPrefix`` is set — the name of any fine-tune under that prefix. Discovery is a cheap
HEAD on ``<prefix>/<name>/adapter/adapter_config.json`` cached for a few seconds, so a fine-tune
that finishes after the server started is servable by name on the next request, on every
replica, with no restart, no admin call and no shared state between replicas.

Adapters are mirrored from storage into ``adapterCacheDir`` and evicted least-recently-used
when the directory would exceed ``adapterCacheMaxBytes``; adapters resident in the engine are
pinned (vLLM may reload a swapped-out adapter from its path).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from healthnav.contracts import storage
from healthnav.contracts.errors import RetryableError
from healthnav.contracts.models import ADAPTER_CONFIG
from healthnav.contracts.run_output import RunOutput
from healthnav.contracts.uris import StorageURI
from healthnav.serving.config import ServeAppConfig

ADAPTER_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")


class AdapterError(RetryableError):
    """An adapter could not be fetched or does not fit the cache; the message names it."""


@dataclass(frozen=True)
class ModelRef:
    """What a request's ``model`` resolved to: the base model (``uri`` None) or an adapter."""

    name: str
    uri: str | None

    @property
    def is_base(self) -> bool:
        return self.uri is None


class AdapterResolver:
    """Maps model names to the base model or adapter URIs; thread-safe, cached with a TTL."""

    def __init__(self, config: ServeAppConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.base_name = config.model_name
        self.configured = {a.name: a.uri for a in config.adapters}
        self.prefix = StorageURI.parse(config.adapters_prefix).as_prefix() if config.adapters_prefix else None
        self.ttl = config.adapter_discovery_ttl_seconds
        self._clock = clock
        self._lookups: dict[str, tuple[float, str | None]] = {}
        self._listing: tuple[float, list[str]] | None = None
        self._lock = threading.Lock()

    def resolve(self, name: str) -> ModelRef | None:
        """The model named ``name``, or None when no such base model or adapter exists."""
        if name == self.base_name:
            return ModelRef(name, None)
        if name in self.configured:
            return ModelRef(name, self.configured[name])
        if self.prefix is None or not ADAPTER_NAME_RE.match(name) or len(name) > 63:
            return None
        now = self._clock()
        with self._lock:
            cached = self._lookups.get(name)
        if cached and now - cached[0] < self.ttl:
            uri = cached[1]
        else:
            uri = self._discover(name)
            with self._lock:
                self._lookups[name] = (now, uri)
        return ModelRef(name, uri) if uri else None

    def needs_lookup(self, name: str) -> bool:
        """Whether :meth:`resolve` would touch storage; if not, the router resolves inline.

        Handing every request to a thread costs a context switch on the hot path; only a
        discovery in the adapter prefix (an S3 round trip) deserves one.
        """
        if name == self.base_name or name in self.configured:
            return False
        if self.prefix is None or not ADAPTER_NAME_RE.match(name) or len(name) > 63:
            return False
        with self._lock:
            cached = self._lookups.get(name)
        return not (cached and self._clock() - cached[0] < self.ttl)

    def _discover(self, name: str) -> str | None:
        assert self.prefix is not None
        run = RunOutput(self.prefix.join(name + "/"))
        for candidate in (run.adapter, run.prefix):
            if storage.exists(candidate.join(ADAPTER_CONFIG)):
                return str(candidate)
        return None

    def names(self) -> list[str]:
        """Base model, configured adapters, then adapters discovered under the prefix."""
        found: list[str] = []
        if self.prefix is not None:
            now = self._clock()
            if self._listing and now - self._listing[0] < self.ttl:
                found = self._listing[1]
            else:
                found = sorted(self._list_prefix())
                self._listing = (now, found)
        extra = [n for n in found if n not in self.configured and n != self.base_name]
        return [self.base_name, *self.configured, *extra]

    def _list_prefix(self) -> set[str]:
        assert self.prefix is not None
        names: set[str] = set()
        for obj, _ in storage.list_objects(self.prefix):
            rel = obj.key[len(self.prefix.key) :].split("/")
            layout_ok = len(rel) == 2 or (len(rel) == 3 and rel[1] == RunOutput.ADAPTER)
            if rel[-1] == ADAPTER_CONFIG and layout_ok and ADAPTER_NAME_RE.match(rel[0]):
                names.add(rel[0])
        return names


class AdapterCache:
    """Local copies of adapters, bounded in bytes, evicted least-recently-used.

    Several replica processes on one node may share the directory, so each entry is guarded by
    a file lock as well as a thread lock.
    """

    def __init__(self, root: str | Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._pinned: dict[str, int] = {}
        self._lock = threading.Lock()

    def entry_dir(self, name: str, uri: str) -> Path:
        digest = hashlib.sha256(uri.encode()).hexdigest()[:12]
        return self.root / f"{name}-{digest}"

    @contextlib.contextmanager
    def _file_lock(self, path: Path) -> Iterator[None]:
        with open(path.parent / f"{path.name}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def fetch(self, name: str, uri: str) -> Path:
        """A local directory holding the adapter, downloaded (or refreshed) from ``uri``."""
        dest = self.entry_dir(name, uri)
        with self._file_lock(dest):
            try:
                storage.download_dir(uri, dest)
            except storage.StorageError as exc:
                raise AdapterError(f"adapter {name!r}: {exc}") from exc
            if not (dest / ADAPTER_CONFIG).is_file():
                shutil.rmtree(dest, ignore_errors=True)
                raise AdapterError(f"adapter {name!r}: {uri} has no {ADAPTER_CONFIG}")
            size = _dir_size(dest)
            if size > self.max_bytes:
                shutil.rmtree(dest, ignore_errors=True)
                raise AdapterError(
                    f"adapter {name!r} is {size} bytes, more than adapterCacheMaxBytes={self.max_bytes}"
                )
            dest.touch()  # mtime is the LRU clock, shared across processes
        self.evict(keep=dest)
        return dest

    def pin(self, path: Path) -> None:
        with self._lock:
            self._pinned[path.name] = self._pinned.get(path.name, 0) + 1

    def unpin(self, path: Path) -> None:
        with self._lock:
            n = self._pinned.get(path.name, 0) - 1
            if n > 0:
                self._pinned[path.name] = n
            else:
                self._pinned.pop(path.name, None)

    def entries(self) -> list[tuple[Path, int, float]]:
        """(directory, bytes, last use) of every cached adapter, least recently used first."""
        out = [(p, _dir_size(p), p.stat().st_mtime) for p in self.root.iterdir() if p.is_dir()]
        return sorted(out, key=lambda e: e[2])

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Delete least recently used, unpinned adapters until the cache fits its budget."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        removed: list[Path] = []
        with self._lock:
            pinned = set(self._pinned)
        for path, size, _ in entries:
            if total <= self.max_bytes:
                break
            if path == keep or path.name in pinned:
                continue
            with self._file_lock(path):
                shutil.rmtree(path, ignore_errors=True)
            total -= size
            removed.append(path)
        return removed


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
