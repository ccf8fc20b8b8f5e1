"""What every reader shares: the item it yields, its error, file helpers, and :class:`Reader`.

Readers stream (one line or one XML article at a time) and never raise on a bad line: they
yield a :class:`ReadItem` carrying the error and its ``file:line`` so the build can count it
against its error budget and report it.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from healthnav.contracts.errors import ConfigurationError
from healthnav.contracts.records import TrainingRecord
from healthnav.contracts.validation import validation_problems


class RecordError(ConfigurationError):
    """One source record cannot be converted; the message says which field and why."""


@dataclass
class ReadItem:
    """A converted record or the reason it could not be converted, with where it came from."""

    location: str
    record: TrainingRecord | None = None
    error: str | None = None
    known_identifiers: tuple[tuple[str, str], ...] = ()  # (placeholder type, value)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reader:
    """One source format, as a build config names it (``sources[].format``)."""

    format: str
    read: Callable[..., Iterator[ReadItem]]
    """``read(path, *, source, license, **options)``: the items of one file."""
    template_instructions: tuple[str, ...] = ()
    """Instructions that are templates rather than content: dedup and decontamination ignore them,
    otherwise every record of a source would look alike."""
    patient_data: bool = False
    """Its records carry patient data by default: de-identified unless the source says otherwise."""


def open_text(path: str | Path) -> IO[str]:
    """Open a text file, transparently gunzipping ``*.gz``."""
    p = Path(path)
    if p.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8")
    return open(p, encoding="utf-8", newline="")


def iter_json_objects(path: str | Path) -> Iterator[tuple[str, Any]]:
    """(location, object-or-exception) for JSONL, a JSON array, or a JSON object keyed by id.

    JSONL streams line by line. A JSON array/object document is parsed whole (the formats that
    ship that way, PubMedQA's ``ori_pqal.json`` and small instruction files, are small).
    """
    p = Path(path)
    name = p.name
    with open_text(p) as fh:
        first = ""
        while True:
            ch = fh.read(1)
            if not ch or not ch.isspace():
                first = ch
                break
        if first in ("[", "{") and not _looks_like_jsonl(p):
            try:
                doc = json.loads(first + fh.read())
            except json.JSONDecodeError as exc:
                yield f"{name}:{exc.lineno}", RecordError(f"invalid JSON document: {exc.msg}")
                return
            if isinstance(doc, list):
                for i, obj in enumerate(doc):
                    yield f"{name}[{i}]", obj
            elif isinstance(doc, dict):
                for key, obj in doc.items():
                    if isinstance(obj, dict):
                        obj = {"_key": key, **obj}
                    yield f"{name}[{key}]", obj
            return
        lineno = 1
        line = first + fh.readline()
        while line:
            if line.strip():
                try:
                    yield f"{name}:{lineno}", json.loads(line)
                except json.JSONDecodeError as exc:
                    yield f"{name}:{lineno}", RecordError(f"invalid JSON: {exc.msg} at column {exc.colno}")
            lineno += 1
            line = fh.readline()


def _looks_like_jsonl(path: Path) -> bool:
    return ".jsonl" in path.suffixes or ".ndjson" in path.suffixes


def require_str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RecordError(f"field {key!r} is missing or empty")
    return value.strip()


def make_record(**kwargs: Any) -> TrainingRecord:
    try:
        return TrainingRecord(**kwargs)
    except ValidationError as exc:
        loc, _, msg = validation_problems(exc, limit=1)[0].partition(": ")
        raise RecordError(f"field {loc!r}: {msg}") from exc


def convert_all(
    path: str | Path,
    convert: Callable[[Any, int], TrainingRecord],
    *,
    objects: Iterator[tuple[str, Any]] | None = None,
) -> Iterator[ReadItem]:
    for index, (loc, obj) in enumerate(objects if objects is not None else iter_json_objects(path)):
        if isinstance(obj, Exception):
            yield ReadItem(loc, error=str(obj))
            continue
        if not isinstance(obj, dict):
            yield ReadItem(loc, error=f"expected a JSON object, got {type(obj).__name__}")
            continue
        try:
            yield ReadItem(loc, record=convert(obj, index))
        except RecordError as exc:
            yield ReadItem(loc, error=str(exc))
