"""Reading a built dataset: the API the trainer and the evaluator call.

A dataset is a prefix (``s3://…`` or ``file://…`` or a local directory) holding
``manifest.json``, ``train-00000.jsonl``…, ``test-00000.jsonl``… and ``datacard.md``. The
manifest is written last, so a prefix without one is not a dataset (a build was interrupted
or is still running) and every reader here refuses it.

Each shard is checked against the sha256 the manifest recorded before a single record of it
is handed out: a truncated upload or a hand-edited shard must stop a training run with a
message naming the shard, not silently train on half a file.

Stable names (imported by ``healthnav.trainer``, ``healthnav.evaluation`` and ``healthnav.datapipe``):
:class:`DatasetError`, :class:`DatasetManifest`, :class:`ShardInfo`, :func:`load_manifest`,
:func:`iter_records`, :func:`load_records`, :func:`verify`, :data:`MANIFEST_NAME`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from healthnav.contracts import storage
from healthnav.contracts.errors import ConfigurationError
from healthnav.contracts.records import SCHEMA_VERSION, TrainingRecord
from healthnav.contracts.uris import StorageURI

MANIFEST_NAME = "manifest.json"
DATACARD_NAME = "datacard.md"
SPLITS: tuple[str, ...] = ("train", "test")


class DatasetError(ConfigurationError):
    """A dataset is missing, incomplete or corrupted; the message names the manifest or shard."""


class ShardInfo(BaseModel):
    """One shard as the manifest records it."""

    model_config = ConfigDict(extra="ignore")

    path: str = Field(description="File name relative to the dataset prefix, e.g. train-00000.jsonl.")
    split: str
    records: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(min_length=64, max_length=64)


class DatasetManifest(BaseModel):
    """``manifest.json``. Extra keys are kept (``extra=allow``) so newer builds stay readable."""

    model_config = ConfigDict(extra="allow")

    schema_version: str
    name: str = ""
    version: str = ""
    created_at: str = ""
    deployable: bool = False
    counts: dict[str, Any] = Field(default_factory=dict)
    licenses: dict[str, int] = Field(default_factory=dict)
    shards: list[ShardInfo] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
    stats: dict[str, Any] = Field(default_factory=dict)

    def shards_for(self, split: str) -> list[ShardInfo]:
        return [s for s in self.shards if s.split == split]

    def split_count(self, split: str) -> int:
        return sum(s.records for s in self.shards_for(split))

    @property
    def splits(self) -> list[str]:
        return sorted({s.split for s in self.shards})


def dataset_uri(uri: str | StorageURI | Path) -> StorageURI:
    """Parse a dataset location; a relative or absolute local path is accepted as well as URIs."""
    try:
        return StorageURI.parse_location(uri).as_prefix()
    except ValueError as exc:
        raise DatasetError(str(exc)) from exc


def load_manifest(uri: str | StorageURI | Path) -> DatasetManifest:
    """Read and validate ``<uri>/manifest.json``; raises :class:`DatasetError` if absent or invalid."""
    base = dataset_uri(uri)
    manifest_uri = base.join(MANIFEST_NAME)
    try:
        raw = storage.read_bytes(manifest_uri)
    except storage.StorageError as exc:
        raise DatasetError(
            f"{manifest_uri}: no manifest; this is not a complete dataset (the build may have been "
            "interrupted: a dataset exists only once its manifest is written)"
        ) from exc
    try:
        manifest = DatasetManifest.model_validate(json.loads(raw))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise DatasetError(f"{manifest_uri}: invalid manifest: {exc}") from exc
    if manifest.schema_version != SCHEMA_VERSION:
        raise DatasetError(
            f"{manifest_uri}: schema_version {manifest.schema_version!r} is not supported "
            f"(this healthnav reads {SCHEMA_VERSION!r})"
        )
    return manifest


def _read_shard(base: StorageURI, shard: ShardInfo) -> bytes:
    shard_uri = base.join(shard.path)
    try:
        data = storage.read_bytes(shard_uri)
    except storage.StorageError as exc:
        raise DatasetError(f"shard {shard.path} ({shard_uri}): missing") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != shard.sha256:
        raise DatasetError(
            f"shard {shard.path} ({shard_uri}): sha256 mismatch (manifest {shard.sha256[:12]}…, "
            f"found {digest[:12]}…, {len(data)} bytes vs {shard.bytes}); the shard is corrupted or was "
            "modified after the build; rebuild or re-stage the dataset"
        )
    return data


def _parse_shard(shard: ShardInfo, data: bytes) -> Iterator[TrainingRecord]:
    for lineno, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield TrainingRecord.model_validate_json(line)
        except ValidationError as exc:
            raise DatasetError(f"shard {shard.path} line {lineno}: not a training record: {exc}") from exc


def iter_records(
    uri: str | StorageURI | Path,
    split: str = "train",
    *,
    manifest: DatasetManifest | None = None,
) -> Iterator[TrainingRecord]:
    """Yield the records of one split, shard by shard, after checking each shard's sha256.

    Memory is bounded by one shard. Raises :class:`DatasetError` naming the shard on a missing or
    corrupted shard, and when the split does not exist in the dataset.
    """
    base = dataset_uri(uri)
    manifest = manifest or load_manifest(base)
    shards = manifest.shards_for(split)
    if not shards:
        raise DatasetError(f"{base}: no {split!r} split (splits: {', '.join(manifest.splits) or 'none'})")
    for shard in shards:
        yield from _parse_shard(shard, _read_shard(base, shard))


def load_records(uri: str | StorageURI | Path, split: str = "train") -> list[TrainingRecord]:
    """All records of a split in a list (for small test splits and evaluation)."""
    return list(iter_records(uri, split))


class VerifyReport(BaseModel):
    """What :func:`verify` checked; ``problems`` is empty when the dataset is intact."""

    uri: str
    shards_checked: int = 0
    records: int = 0
    problems: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(uri: str | StorageURI | Path) -> VerifyReport:
    """Check the manifest, every shard's presence, sha256, record count and record schema.

    Unlike :func:`iter_records` this does not stop at the first problem: a reviewer wants the
    full list. A missing or invalid manifest is itself reported as a problem.
    """
    base = dataset_uri(uri)
    report = VerifyReport(uri=str(base))
    try:
        manifest = load_manifest(base)
    except DatasetError as exc:
        report.problems.append(str(exc))
        return report
    for shard in manifest.shards:
        report.shards_checked += 1
        try:
            data = _read_shard(base, shard)
            count = sum(1 for _ in _parse_shard(shard, data))
        except DatasetError as exc:
            report.problems.append(str(exc))
            continue
        if count != shard.records:
            report.problems.append(f"shard {shard.path}: {count} records, manifest says {shard.records}")
        report.records += count
    return report
