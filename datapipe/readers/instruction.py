"""The roadmap's own format: ``{"instruction", "input", "output"}`` records, taken as they are."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from healthnav.contracts.records import TrainingRecord
from healthnav.datapipe.readers.common import Reader, ReadItem, convert_all, make_record, require_str


def read_instruction(path: str | Path, *, source: str, license: str) -> Iterator[ReadItem]:
    """The roadmap's ``{"instruction", "input", "output"}`` records (JSON array or JSONL)."""
    stem = Path(path).name

    def convert(obj: dict[str, Any], index: int) -> TrainingRecord:
        rid = obj.get("id")
        return make_record(
            id=f"{source}-{rid}" if rid is not None else f"{source}-{stem}-{index}",
            source=source,
            license=str(obj.get("license") or license),
            instruction=require_str(obj, "instruction"),
            input=str(obj.get("input") or "").strip(),
            output=require_str(obj, "output"),
            metadata=dict(obj.get("metadata") or {}),
        )

    return convert_all(path, convert)


READER = Reader("instruction", read_instruction)
