"""Prepare a packaged model once per GGUF, and stage it wherever base models live.

The converted directory is cached at
``$HEALTHNAV_CACHE/models/prepared/<name>/<sha256(gguf)[:16]>-r<revision>/``: keyed by the
GGUF's content (a new package version with new weights is a new entry; a reinstall of the
same one is not) and by the conversion's revision (a changed conversion never reuses an old
directory). A warm call hashes the GGUF (about 0.3 s for 98 MB) and checks the recorded file
sizes; it never converts again. Conversion writes into a temporary sibling that is renamed
into place, so two processes preparing at once both end with one complete directory.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from healthnav.contracts import storage
from healthnav.contracts.errors import ConfigurationError
from healthnav.contracts.models import cache_root
from healthnav.contracts.uris import StorageURI
from healthnav.models.card import (
    PROVENANCE,
    Provenance,
    build_provenance,
    read_provenance,
    write_descriptions,
)
from healthnav.models.catalog import DEFAULT_MODEL, find_gguf, lookup
from healthnav.models.convert import convert_gguf

log = logging.getLogger(__name__)

CONVERSION_REVISION = "2"


@dataclass(frozen=True)
class PreparedModel:
    """A prepared model: its cached directory, its provenance, and where it was staged."""

    name: str
    path: Path
    provenance: Provenance
    converted: bool
    """False when the cache already held it."""
    staged_to: str | None = None


def prepared_dir(name: str, gguf_sha256: str, cache: Path | None = None) -> Path:
    root = cache or cache_root()
    return root / "models" / "prepared" / name / f"{gguf_sha256[:16]}-r{CONVERSION_REVISION}"


def is_complete(path: Path, gguf_sha256: str) -> Provenance | None:
    """The provenance of a finished conversion of this GGUF at ``path``, else None."""
    provenance = read_provenance(path)
    if provenance is None or provenance.gguf_sha256 != gguf_sha256:
        return None
    for rel, record in provenance.files.items():
        file = path / rel
        if not file.is_file() or file.stat().st_size != record.bytes:
            return None
    return provenance


def find_prepared(name: str = DEFAULT_MODEL, cache: Path | None = None) -> Path | None:
    """The newest finished conversion of packaged model ``name`` in the cache, without its package.

    For environments that only read the cache: vLLM's own virtualenv (``make test-vllm``) has
    neither the model's package nor the converter, which live in the main one.
    """
    root = (cache or cache_root()) / "models" / "prepared" / name
    entries = sorted(root.glob(f"*-r{CONVERSION_REVISION}"), key=lambda p: p.stat().st_mtime)
    for path in reversed(entries):
        provenance = read_provenance(path)
        if provenance is not None and is_complete(path, provenance.gguf_sha256):
            return path
    return None


def _make_readable(root: Path) -> None:
    """World-readable like any cache entry (``mkdtemp`` creates it private): pods and users share it."""
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _convert_into_cache(name: str, dest: Path, gguf_sha256: str) -> Provenance:
    model = lookup(name)
    packaged = find_gguf(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        converted = convert_gguf(packaged.path, work, upstream=model.upstream)
        provenance = build_provenance(work, packaged, gguf_sha256, converted, CONVERSION_REVISION)
        write_descriptions(work, provenance, model.description)
        _make_readable(work)
        if dest.exists():  # a concurrent preparation finished first, or a broken leftover
            if is_complete(dest, gguf_sha256):
                return read_provenance(dest) or provenance
            shutil.rmtree(dest)
        os.replace(work, dest)
        return provenance
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def stage(path: Path, output: str) -> str:
    """Copy a prepared directory to ``output`` (s3://, file:// or a local path), provenance last."""
    try:
        target = StorageURI.parse_location(output).as_prefix()
    except ValueError as exc:
        raise ConfigurationError(f"output: {exc}") from exc
    storage.upload_dir(path, target, last=(PROVENANCE,))
    return str(target)


def prepare(
    name: str = DEFAULT_MODEL, output: str | None = None, *, cache: Path | None = None
) -> PreparedModel:
    """The prepared directory for packaged model ``name`` (converting on a cold cache), staged to ``output``.

    Raises :class:`~healthnav.models.catalog.ModelNotAvailable` naming the package (or the
    ``gguf`` library) to install when it cannot be prepared here.
    """
    model = lookup(name)
    packaged = find_gguf(model)
    gguf_sha256 = storage.sha256_file(packaged.path)
    dest = prepared_dir(name, gguf_sha256, cache)
    provenance = is_complete(dest, gguf_sha256)
    converted = provenance is None
    if provenance is None:
        log.info("converting %s from %s into %s", name, packaged.path.name, dest)
        provenance = _convert_into_cache(name, dest, gguf_sha256)
    staged = stage(dest, output) if output else None
    return PreparedModel(name=name, path=dest, provenance=provenance, converted=converted, staged_to=staged)
