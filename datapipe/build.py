"""``hnav data build``: sources → de-identified, filtered, deduplicated, split, sharded dataset.

The build streams: one record at a time goes read → de-identify → normalise → filter →
dedup → split → shard. Test records are written at once and feed the decontamination index;
training records wait in a local spool file and are checked against that index once every
test record is known (a second pass over the spool, not over the sources). Memory is the
indexes, not the input.

Atomicity: shards are written (and hashed) first, ``datacard.md`` next, ``manifest.json``
last, through :mod:`healthnav.contracts.storage` whose writes are atomic. For an ``s3://``
output the dataset is built in a local work directory and staged with the manifest uploaded
last; readers treat a prefix without a manifest as no dataset at all.
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from healthnav.contracts import storage
from healthnav.contracts.dataset import DATACARD_NAME, MANIFEST_NAME, DatasetManifest, ShardInfo
from healthnav.contracts.errors import ConfigurationError
from healthnav.contracts.records import SCHEMA_VERSION, TrainingRecord
from healthnav.contracts.uris import StorageURI
from healthnav.contracts.validation import validation_problems
from healthnav.datapipe.deid import Deidentifier, DeidResult, NerUnavailable
from healthnav.datapipe.deid.clinical import vocabulary_versions
from healthnav.datapipe.deid.lexicon import lexicon_versions
from healthnav.datapipe.deid.ner import install_hint as ner_install_hint
from healthnav.datapipe.quality import (
    DEFAULT_DEPLOYABLE_LICENSES,
    TEMPLATE_INSTRUCTIONS,
    Decontaminator,
    ExactDeduper,
    LengthFilter,
    LicensePolicy,
    NearDeduper,
    assign_split,
    content_text,
    normalize_record,
    normalize_text,
    word_keys,
)
from healthnav.datapipe.readers import reader, reader_formats
from healthnav.datapipe.readers.common import ReadItem


class BuildError(ConfigurationError):
    """The build cannot go on (bad config, error budget exceeded, licence conflict)."""


# --------------------------------------------------------------------------- config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Strict):
    """One input: a reader format, files (globs, relative to the config file) and its licence."""

    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    format: str = Field(
        description="A reader format (healthnav.datapipe.readers): instruction, medqa, app, ..."
    )

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in reader_formats():
            raise ValueError(f"unknown format {value!r}; known: {', '.join(reader_formats())}")
        return value

    paths: list[str] = Field(min_length=1)
    license: str = Field(min_length=1)
    split: Literal["auto", "train", "test"] = "auto"
    deidentify: bool | None = Field(default=None, description="Default: true for format 'app', else false.")
    patient_data: bool | None = Field(
        default=None,
        description="Carries patient data (default: true for format 'app'): de-identified with the NER "
        "pass, and the build refuses to run if the NER model cannot load. False: rules only if deidentify.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Reader options (task, fields, cop_base...)."
    )
    limit: int | None = Field(default=None, ge=1)

    @property
    def carries_patient_data(self) -> bool:
        return reader(self.format).patient_data if self.patient_data is None else self.patient_data

    @property
    def deid_enabled(self) -> bool:
        if self.deidentify is None:
            return self.carries_patient_data
        return self.deidentify

    @model_validator(mode="after")
    def _patient_data_is_deidentified(self) -> SourceConfig:
        if self.carries_patient_data and self.deidentify is False:
            raise ValueError(
                f"source {self.name}: patient data cannot skip de-identification (deidentify: false)"
            )
        return self


class LengthConfig(_Strict):
    min_chars: int = Field(default=8, ge=0)
    max_chars: int = Field(default=16000, ge=1)
    min_output_chars: int = Field(default=1, ge=1)


class DedupConfig(_Strict):
    exact: bool = True
    near: bool = True
    threshold: float = Field(default=0.85, gt=0, lt=1)
    num_perm: int = Field(default=64, ge=16, le=512)
    shingle: int = Field(default=3, ge=1, le=10)


class DecontaminationConfig(_Strict):
    enabled: bool = True
    ngram: int = Field(default=8, ge=3, le=50)
    threshold: float = Field(default=0.5, gt=0, le=1)
    against: list[SourceConfig] = Field(default_factory=list, description="Extra eval sets (not written).")


class SplitConfig(_Strict):
    test_fraction: float = Field(default=0.1, ge=0, lt=1)
    seed: int = 42


class ErrorBudget(_Strict):
    max_bad_records: int | None = Field(default=1000, ge=0)
    max_bad_fraction: float = Field(default=0.05, ge=0, le=1)


class LicenseConfig(_Strict):
    allow: list[str] = Field(default_factory=lambda: sorted(DEFAULT_DEPLOYABLE_LICENSES))


class BuildConfig(_Strict):
    """A YAML build config (``examples/datasets/*.yaml``)."""

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    output: str = Field(min_length=1, description="s3://…, file://… or a local directory.")
    deployable: bool = False
    description: str = ""
    sources: list[SourceConfig] = Field(min_length=1)
    normalize: bool = True
    length: LengthConfig = Field(default_factory=LengthConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    decontamination: DecontaminationConfig = Field(default_factory=DecontaminationConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    error_budget: ErrorBudget = Field(default_factory=ErrorBudget)
    licenses: LicenseConfig = Field(default_factory=LicenseConfig)
    shard_size: int = Field(default=50000, ge=1)
    quarantine_dir: str | None = Field(
        default=None, description="Local directory for quarantined records (contain PHI; never staged)."
    )

    @model_validator(mode="after")
    def _check(self) -> BuildConfig:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(
                f"sources: duplicate source names {sorted({n for n in names if names.count(n) > 1})}"
            )
        policy = LicensePolicy(self.deployable, frozenset(self.licenses.allow))
        for i, src in enumerate(self.sources):
            if problem := policy.problem(src.license):
                raise ValueError(f"sources[{i}] ({src.name}): {problem}; this dataset is marked deployable")
        return self


def load_config(path: str | Path) -> tuple[BuildConfig, Path]:
    """Parse a build YAML; relative ``paths`` resolve against the config file's folder."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BuildError(f"{p}: no such config file") from exc
    except yaml.YAMLError as exc:
        raise BuildError(f"{p}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise BuildError(f"{p}: expected a mapping at the top level")
    try:
        return BuildConfig.model_validate(raw), p.parent.resolve()
    except ValidationError as exc:
        lines = [f"{p}: invalid build config:", *(f"  {x}" for x in validation_problems(exc))]
        raise BuildError("\n".join(lines)) from exc


# --------------------------------------------------------------------------- shard writer


class ShardWriter:
    """Writes ``<split>-00000.jsonl``… of at most ``shard_size`` records, hashing as it goes."""

    def __init__(self, directory: Path, split: str, shard_size: int) -> None:
        self.directory, self.split, self.shard_size = directory, split, shard_size
        self.shards: list[ShardInfo] = []
        self._fh: Any = None
        self._hash: Any = None
        self._count = 0
        self._bytes = 0
        self._tmp: Path | None = None

    def _open(self) -> None:
        name = f"{self.split}-{len(self.shards):05d}.jsonl"
        self._tmp = self.directory / f".{name}.partial"
        self._fh = open(self._tmp, "wb")  # noqa: SIM115
        self._hash = hashlib.sha256()
        self._count = self._bytes = 0

    def write(self, record: TrainingRecord) -> None:
        self.write_line(record.model_dump_json().encode("utf-8") + b"\n")

    def write_line(self, line: bytes) -> None:
        """Write one record already serialised by ``TrainingRecord.model_dump_json`` (+ newline)."""
        if self._fh is None:
            self._open()
        self._fh.write(line)
        self._hash.update(line)
        self._count += 1
        self._bytes += len(line)
        if self._count >= self.shard_size:
            self._close_shard()

    def _close_shard(self) -> None:
        assert self._fh is not None and self._tmp is not None
        self._fh.close()
        name = f"{self.split}-{len(self.shards):05d}.jsonl"
        self._tmp.replace(self.directory / name)
        self.shards.append(
            ShardInfo(
                path=name,
                split=self.split,
                records=self._count,
                bytes=self._bytes,
                sha256=self._hash.hexdigest(),
            )
        )
        self._fh = None

    def close(self) -> list[ShardInfo]:
        if self._fh is not None:
            self._close_shard()
        return self.shards


# --------------------------------------------------------------------------- stats


@dataclass
class BuildStats:
    """Everything the manifest and the data card report about a build."""

    read: Counter[str] = field(default_factory=Counter)
    bad: Counter[str] = field(default_factory=Counter)
    bad_samples: list[dict[str, str]] = field(default_factory=list)
    filtered: Counter[str] = field(default_factory=Counter)
    dedup: Counter[str] = field(default_factory=Counter)
    decontaminated: int = 0
    deid_records: int = 0
    deid_records_changed: int = 0
    deid_replacements: Counter[str] = field(default_factory=Counter)
    quarantined: int = 0
    quarantine_reasons: Counter[str] = field(default_factory=Counter)
    quarantine_locations: list[str] = field(default_factory=list)
    deid_provenance: dict[str, Any] = field(default_factory=dict)  # method, NER model and file hashes
    kept: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    licenses: Counter[str] = field(default_factory=Counter)
    shards: list[ShardInfo] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        total_read = sum(self.read.values())
        return {
            "records_read": dict(self.read),
            "bad_records": {
                "total": sum(self.bad.values()),
                "by_source": dict(self.bad),
                "samples": self.bad_samples,
            },
            "filtered": dict(self.filtered),
            "dedup": {"exact": self.dedup["exact"], "near": self.dedup["near"]},
            "decontamination": {"removed": self.decontaminated},
            "deidentification": {
                "records_checked": self.deid_records,
                "records_changed": self.deid_records_changed,
                "replacements_by_type": dict(sorted(self.deid_replacements.items())),
                "quarantined": self.quarantined,
                "quarantine_reasons": dict(self.quarantine_reasons),
                "quarantine_locations": self.quarantine_locations[:50],
                "provenance": self.deid_provenance,
            },
            "seconds": round(self.seconds, 3),
            "records_per_second": round(total_read / self.seconds, 1) if self.seconds else None,
        }


# --------------------------------------------------------------------------- the build


def _expand(paths: list[str], base: Path) -> list[Path]:
    found: list[Path] = []
    for pattern in paths:
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        matches = sorted(glob.glob(full))
        if not matches:
            raise BuildError(f"source path {pattern!r} matches no file (relative to {base})")
        found += [Path(m) for m in matches]
    return found


def iter_source(src: SourceConfig, base: Path) -> Iterator[ReadItem]:
    """Every item of a source, across its files, honouring ``limit``."""
    read = reader(src.format).read
    n = 0
    for path in _expand(src.paths, base):
        try:
            items = read(path, source=src.name, license=src.license, **src.options)
        except TypeError as exc:
            raise BuildError(f"source {src.name}: bad reader options {sorted(src.options)}: {exc}") from exc
        except ValueError as exc:
            raise BuildError(f"source {src.name}: {exc}") from exc
        for item in items:
            yield item
            n += 1
            if src.limit and n >= src.limit:
                return


def deidentify_record(
    deid: Deidentifier,
    record: TrainingRecord,
    known: tuple[tuple[str, str], ...],
    *,
    normalize: bool = False,
) -> tuple[TrainingRecord, Counter[str], list[str]]:
    """Scrub every free-text field; returns the record (with a content-derived id), counts, risks.

    The id is re-derived from the scrubbed content: an app's own record id is linkable back to
    the patient, a hash of de-identified text is not. ``normalize``: also apply
    :func:`normalize_record` (after the id is derived, as when called separately), in the same
    copy of the record.
    """
    return deidentify_records(deid, [(record, known)], normalize=normalize)[0]


def deidentify_records(
    deid: Deidentifier,
    batch: list[tuple[TrainingRecord, tuple[tuple[str, str], ...]]],
    *,
    normalize: bool = False,
) -> list[tuple[TrainingRecord, Counter[str], list[str]]]:
    """:func:`deidentify_record` for several records: the NER model sees their texts as one batch."""
    fields = [_free_text_fields(record) for record, _ in batch]
    results = deid.scrub_records(
        [(texts, known) for (_, _, texts), (_, known) in zip(fields, batch, strict=True)]
    )
    return [
        _scrubbed_record(deid, record, f, result, normalize)
        for (record, _), f, result in zip(batch, fields, results, strict=True)
    ]


_Fields = tuple[list[str], list[tuple[str, int | None]], list[str]]


def _free_text_fields(record: TrainingRecord) -> _Fields:
    """Field names, metadata slots (key, list index) and texts of every free-text field."""
    names = [
        n
        for n in ("instruction", "input", "output")
        if not (n == "instruction" and record.instruction in TEMPLATE_INSTRUCTIONS)
    ]
    texts: list[str] = [getattr(record, n) for n in names]
    slots: list[tuple[str, int | None]] = []  # metadata (key, list index) for texts[len(names):]
    for key, value in record.metadata.items():
        if isinstance(value, str):
            slots.append((key, None))
            texts.append(value)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            for i, v in enumerate(value):
                slots.append((key, i))
                texts.append(v)
    return names, slots, texts


def _scrubbed_record(
    deid: Deidentifier, record: TrainingRecord, fields: _Fields, result: DeidResult, normalize: bool
) -> tuple[TrainingRecord, Counter[str], list[str]]:
    names, slots, texts = fields
    scrubbed = deid.split_fields(result.text, len(texts)) if result.counts else texts
    updates: dict[str, Any] = dict(zip(names, scrubbed, strict=False))
    meta = dict(record.metadata)
    for (key, index), text in zip(slots, scrubbed[len(names) :], strict=True):
        if index is None:
            meta[key] = text
        else:
            if meta[key] is record.metadata[key]:
                meta[key] = list(meta[key])
            meta[key][index] = text
    updates["metadata"] = meta
    risks = deid.residual_risks(result.text)
    digest = hashlib.sha256(
        "\x1f".join(updates.get(n, getattr(record, n)) for n in ("instruction", "input", "output")).encode()
    ).hexdigest()[:20]
    updates["id"] = f"{record.source}-{digest}"
    if normalize:
        for name in ("instruction", "input", "output"):
            updates[name] = normalize_text(updates.get(name, getattr(record, name)))
    return record.model_copy(update=updates), result.counts, risks


_Scrubbed = tuple[TrainingRecord, Counter[str], list[str]] | Exception | None


def _scrub_stream(
    items: Iterator[ReadItem], deid: Deidentifier | None, *, normalize: bool, batch: int = 64
) -> Iterator[tuple[ReadItem, _Scrubbed]]:
    """Each item with its de-identified record (None: not de-identified; an exception: it failed).

    Records are scrubbed ``batch`` at a time so the NER model runs over batches (about twice
    as fast per record as one at a time); items come out in input order.
    """
    if deid is None:
        yield from ((item, None) for item in items)
        return
    pending: list[ReadItem] = []

    def flush() -> Iterator[tuple[ReadItem, _Scrubbed]]:
        work = [i for i in pending if i.record is not None]
        outcomes: list[_Scrubbed]
        try:
            outcomes = list(
                deidentify_records(deid, [(i.record, i.known_identifiers) for i in work], normalize=normalize)  # type: ignore[misc]
            )
        except Exception:  # one bad record must not fail the batch: scrub them one by one
            outcomes = []
            for i in work:
                try:
                    outcomes.append(
                        deidentify_record(deid, i.record, i.known_identifiers, normalize=normalize)
                    )  # type: ignore[arg-type]
                except Exception as exc:
                    outcomes.append(exc)
        by_item = dict(zip(map(id, work), outcomes, strict=True))
        for i in pending:
            yield i, by_item.get(id(i))
        pending.clear()

    for item in items:
        pending.append(item)
        if len(pending) >= batch:
            yield from flush()
    yield from flush()


def _deidentifier(config: BuildConfig) -> tuple[Deidentifier, dict[str, Any]]:
    """The scrubber for this build and its provenance for the manifest.

    Fail closed: a source that carries patient data (``deidentify``, on by default for app
    exports) needs the NER pass; if the model cannot load, the build stops rather than fall
    back to rules only, which miss names and places they have never seen.
    """
    patient = [s.name for s in config.sources if s.carries_patient_data]
    if not patient:
        return Deidentifier(), {"method": "rules"}
    try:
        deid = Deidentifier.with_ner()
    except NerUnavailable as exc:
        raise BuildError(
            f"sources {patient} carry patient data, and the NER model for de-identification cannot load: "
            f"{exc}. A dataset is never built from patient data with rules only; {ner_install_hint()}"
        ) from exc
    assert deid.ner is not None
    return deid, {
        "method": "rules+ner+context",
        "ner": deid.ner.provenance.to_dict(),
        "lexicons": lexicon_versions(),
        "clinical_vocabulary": vocabulary_versions(),
    }


@dataclass
class BuildResult:
    uri: str
    manifest: DatasetManifest
    stats: BuildStats


class _Budget:
    def __init__(self, budget: ErrorBudget) -> None:
        self.budget = budget

    def check_running(self, bad: int) -> None:
        if self.budget.max_bad_records is not None and bad > self.budget.max_bad_records:
            raise BuildError(
                f"error budget exceeded: {bad} malformed records > max_bad_records "
                f"{self.budget.max_bad_records}; see the first ones above"
            )

    def check_final(self, bad: int, read: int) -> None:
        if read and bad / read > self.budget.max_bad_fraction:
            raise BuildError(
                f"error budget exceeded: {bad}/{read} malformed records "
                f"({bad / read:.1%}) > max_bad_fraction {self.budget.max_bad_fraction:.1%}"
            )


def _progress(desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(desc=desc, unit="rec", disable=not enabled, leave=False, mininterval=0.5)


def build_dataset(
    config: BuildConfig,
    base_dir: Path,
    *,
    output: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    work_dir: Path | None = None,
) -> BuildResult:
    """Run a build; returns the manifest written. Raises :class:`BuildError` with a clear message."""
    started = time.perf_counter()
    out_text = output or config.output
    if "://" not in out_text and not Path(out_text).is_absolute():
        out_text = str((base_dir / out_text).resolve())
    out_uri = StorageURI.parse(out_text if "://" in out_text else f"file://{out_text}").as_prefix()
    manifest_uri = out_uri.join(MANIFEST_NAME)
    if storage.exists(manifest_uri) and not overwrite:
        raise BuildError(f"{out_uri}: a dataset already exists here (bump the version or pass --overwrite)")
    tmp_ctx = tempfile.TemporaryDirectory(prefix="hnav-build-", dir=work_dir)
    with tmp_ctx as tmp:
        tmp_path = Path(tmp)
        if out_uri.scheme == "file":
            local_out = out_uri.local_path
            local_out.mkdir(parents=True, exist_ok=True)
            if overwrite:
                # the old manifest goes first: from here on, no half-old half-new dataset is visible
                (local_out / MANIFEST_NAME).unlink(missing_ok=True)
                for old in local_out.glob("*-[0-9][0-9][0-9][0-9][0-9].jsonl"):
                    old.unlink()
        else:
            local_out = tmp_path / "out"
            local_out.mkdir()
        stats = _run(config, base_dir, local_out, tmp_path, stats=BuildStats(), progress=progress)
        stats.seconds = time.perf_counter() - started
        manifest = _manifest(config, stats, local_out)
        (local_out / DATACARD_NAME).write_text(render_datacard(manifest), encoding="utf-8")
        body = manifest.model_dump_json(indent=2)
        if out_uri.scheme == "file":
            storage.write_text(manifest_uri, body, "application/json")
        else:
            if overwrite:
                _delete_s3_manifest(manifest_uri)
            (local_out / MANIFEST_NAME).write_text(body, encoding="utf-8")
            storage.upload_dir(local_out, out_uri, last=(MANIFEST_NAME,))
    return BuildResult(uri=str(out_uri), manifest=manifest, stats=stats)


def _delete_s3_manifest(uri: StorageURI) -> None:
    storage.s3_client().delete_object(Bucket=uri.bucket, Key=uri.key)


def _run(
    config: BuildConfig, base_dir: Path, out_dir: Path, tmp: Path, *, stats: BuildStats, progress: bool
) -> BuildStats:
    budget = _Budget(config.error_budget)
    policy = LicensePolicy(config.deployable, frozenset(config.licenses.allow))
    deid, stats.deid_provenance = _deidentifier(config)
    rules_only = deid if deid.ner is None else Deidentifier()  # for sources without patient data
    length = LengthFilter(config.length.min_chars, config.length.max_chars, config.length.min_output_chars)
    exact = ExactDeduper() if config.dedup.exact else None
    near = (
        NearDeduper(config.dedup.threshold, config.dedup.num_perm, config.dedup.shingle)
        if config.dedup.near
        else None
    )
    decon = Decontaminator(config.decontamination.ngram, config.decontamination.threshold)
    if config.decontamination.enabled:
        for ext in config.decontamination.against:
            for item in iter_source(ext, base_dir):
                if item.record is not None:
                    decon.add(normalize_record(item.record) if config.normalize else item.record)
    test_writer = ShardWriter(out_dir, "test", config.shard_size)
    spool_path = tmp / "train.spool.jsonl"
    quarantine_fh = None
    if config.quarantine_dir:
        qdir = Path(config.quarantine_dir)
        qdir = qdir if qdir.is_absolute() else base_dir / qdir
        qdir.mkdir(parents=True, exist_ok=True)
        quarantine_fh = open(qdir / f"{config.name}-{config.version}.quarantine.jsonl", "w", encoding="utf-8")  # noqa: SIM115
    total_bad = 0
    spooled: Counter[str] = Counter()
    try:
        with open(spool_path, "wb") as spool:
            for src in config.sources:
                bar = _progress(f"read {src.name}", progress)
                scrub_with = (deid if src.carries_patient_data else rules_only) if src.deid_enabled else None
                for item, scrubbed in _scrub_stream(
                    iter_source(src, base_dir), scrub_with, normalize=config.normalize
                ):
                    bar.update()
                    stats.read[src.name] += 1
                    if item.record is None:
                        stats.bad[src.name] += 1
                        total_bad += 1
                        if len(stats.bad_samples) < 50:
                            stats.bad_samples.append(
                                {"source": src.name, "location": item.location, "error": item.error or ""}
                            )
                        budget.check_running(total_bad)
                        continue
                    record = item.record
                    if policy.problem(record.license):
                        stats.filtered["license"] += 1
                        continue
                    normalized = False
                    if src.deid_enabled:
                        stats.deid_records += 1
                        if isinstance(scrubbed, tuple):
                            record, counts, risks = scrubbed
                            normalized = config.normalize
                        else:  # fail closed: a record we cannot scrub is not kept
                            counts, risks = Counter(), [f"error: {type(scrubbed).__name__}"]
                        if counts:
                            stats.deid_records_changed += 1
                            stats.deid_replacements.update(counts)
                        if risks:
                            stats.quarantined += 1
                            stats.quarantine_reasons.update(risks)
                            stats.quarantine_locations.append(f"{item.location}: {', '.join(risks)}")
                            if quarantine_fh is not None:
                                quarantine_fh.write(
                                    json.dumps(
                                        {
                                            "location": item.location,
                                            "risks": risks,
                                            "record": item.record.model_dump(),
                                        }
                                    )
                                    + "\n"
                                )
                            continue
                    if config.normalize and not normalized:
                        record = normalize_record(record)
                    if reason := length.reason(record):
                        stats.filtered[reason] += 1
                        continue
                    tokens = word_keys(content_text(record)) if exact is not None or near is not None else []
                    if exact is not None and exact.is_duplicate(record, tokens):
                        stats.dedup["exact"] += 1
                        continue
                    if near is not None and near.is_duplicate(record, tokens):
                        stats.dedup["near"] += 1
                        continue
                    split = (
                        src.split
                        if src.split != "auto"
                        else assign_split(record.id, config.split.test_fraction, config.split.seed)
                    )
                    if split == "test":
                        test_writer.write(record)
                        stats.kept[record.source]["test"] += 1
                        stats.licenses[record.license] += 1
                        if config.decontamination.enabled:
                            decon.add(record)
                    else:
                        spool.write(record.model_dump_json().encode() + b"\n")
                        spooled[src.name] += 1
                bar.close()
    finally:
        if quarantine_fh is not None:
            quarantine_fh.close()
    budget.check_final(total_bad, sum(stats.read.values()))
    test_shards = test_writer.close()
    train_writer = ShardWriter(out_dir, "train", config.shard_size)
    bar = _progress("decontaminate train", progress)
    check = config.decontamination.enabled and len(decon) > 0
    with open(spool_path, "rb") as spool:
        for line in spool:
            bar.update()
            # the spool holds lines this build serialised from validated records: they are read
            # as plain dicts and copied to the shard byte for byte, never validated again
            row = json.loads(line)
            if check and decon.is_contaminated_prompt(row["instruction"], row["input"]):
                stats.decontaminated += 1
                continue
            train_writer.write_line(line)
            stats.kept[row["source"]]["train"] += 1
            stats.licenses[row["license"]] += 1
    bar.close()
    train_shards = train_writer.close()
    stats.shards = train_shards + test_shards
    return stats


def _manifest(config: BuildConfig, stats: BuildStats, out_dir: Path) -> DatasetManifest:
    shards = stats.shards
    by_split: Counter[str] = Counter()
    for shard in shards:
        by_split[shard.split] += shard.records
    return DatasetManifest(
        schema_version=SCHEMA_VERSION,
        name=config.name,
        version=config.version,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        deployable=config.deployable,
        counts={
            "total": sum(by_split.values()),
            "by_split": dict(by_split),
            "by_source": {src: dict(c) for src, c in sorted(stats.kept.items())},
        },
        licenses=dict(sorted(stats.licenses.items())),
        shards=shards,
        config=config.model_dump(mode="json"),
        stats=stats.to_dict(),
    )


def render_datacard(manifest: DatasetManifest) -> str:
    """A human-readable summary of the dataset for reviewers (no record content, no PHI)."""
    st = manifest.stats
    deid = st.get("deidentification", {})
    lines = [
        f"# Dataset card: {manifest.name} {manifest.version}",
        "",
        manifest.config.get("description") or "Instruction-tuning data for the AI Health Navigator.",
        "",
        f"- Schema version: {manifest.schema_version}",
        f"- Created: {manifest.created_at}",
        f"- Deployable: {'yes' if manifest.deployable else 'no (research use only)'}",
        f"- Records: {manifest.counts.get('total', 0)} "
        + ", ".join(f"{k} {v}" for k, v in sorted(manifest.counts.get("by_split", {}).items())),
        "",
        "## Sources",
        "",
        "| source | format | licence | train | test | de-identified |",
        "|---|---|---|---|---|---|",
    ]
    by_source = manifest.counts.get("by_source", {})
    for src in manifest.config.get("sources", []):
        c = by_source.get(src["name"], {})
        source = SourceConfig.model_validate(src)
        deid_on = "yes (rules + NER)" if source.carries_patient_data else "yes (rules)"
        lines.append(
            f"| {src['name']} | {src['format']} | {src['license']} "
            f"| {c.get('train', 0)} | {c.get('test', 0)} "
            f"| {deid_on if source.deid_enabled else 'no'} |"
        )
    lines += [
        "",
        "## Processing",
        "",
        f"- Malformed records skipped: {st.get('bad_records', {}).get('total', 0)}",
        f"- Filtered: {json.dumps(st.get('filtered', {}))}",
        f"- Duplicates removed: exact {st.get('dedup', {}).get('exact', 0)}, "
        f"near (MinHash LSH) {st.get('dedup', {}).get('near', 0)}",
        f"- Training records removed by n-gram decontamination against test/eval: "
        f"{st.get('decontamination', {}).get('removed', 0)}",
        "",
        "## De-identification (HIPAA Safe Harbor)",
        "",
        f"- Records checked: {deid.get('records_checked', 0)}, changed: {deid.get('records_changed', 0)}",
        f"- Replacements by type: {json.dumps(deid.get('replacements_by_type', {}))}",
        f"- Quarantined (still looked identifying; not in the dataset): {deid.get('quarantined', 0)}",
        "",
        f"- Method: {deid.get('provenance', {}).get('method', 'rules')}"
        + (
            f" (NER model {ner['package']} {ner['version']}, spaCy {ner['spacy_version']}; "
            "file hashes in manifest.json)"
            if (ner := deid.get("provenance", {}).get("ner"))
            else ""
        ),
        "",
        "De-identification does not catch everything (see datapipe/DEIDENTIFICATION.md, with measured",
        "recall); records from the app may still contain rare identifiers in unusual formats.",
        "",
        "## Intended use and limits",
        "",
        "Fine-tuning a triage/navigation assistant. Not a source of medical truth: multiple-choice",
        "and literature answers reflect their sources; app assessments reflect the app's past outputs.",
        "",
    ]
    return "\n".join(lines)
