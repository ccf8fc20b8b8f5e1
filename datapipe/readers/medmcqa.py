"""MedMCQA multiple choice (``opa``..``opd``, ``cop``, ``exp``): converted as MedQA is, explanation kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from healthnav.contracts.prompts import MCQ_INSTRUCTION, format_mcq_input, format_mcq_output
from healthnav.contracts.records import TrainingRecord
from healthnav.datapipe.readers.common import (
    Reader,
    ReadItem,
    RecordError,
    convert_all,
    make_record,
    require_str,
)


def read_medmcqa(
    path: str | Path, *, source: str = "medmcqa", license: str = "MIT", cop_base: int = 1
) -> Iterator[ReadItem]:
    """MedMCQA JSONL: ``question``, ``opa``..``opd``, ``cop``, ``exp``, ``subject_name``.

    ``cop`` is 1-based in the original release files and 0-based in the Hugging Face copy; say
    which with ``cop_base``. Records without a correct option (the public test split) are errors.
    """
    if cop_base not in (0, 1):
        raise ValueError("cop_base must be 0 or 1")

    def convert(obj: dict[str, Any], index: int) -> TrainingRecord:
        question = require_str(obj, "question")
        options = {}
        for letter, key in zip("ABCD", ("opa", "opb", "opc", "opd"), strict=True):
            options[letter] = require_str(obj, key)
        cop = obj.get("cop")
        if not isinstance(cop, int) or isinstance(cop, bool) or not cop_base <= cop < cop_base + 4:
            raise RecordError(f"field 'cop' {cop!r} is not a correct-option index {cop_base}..{cop_base + 3}")
        letter = "ABCD"[cop - cop_base]
        rid = obj.get("id") or f"{Path(path).stem}-{index}"
        return make_record(
            id=f"{source}-{rid}",
            source=source,
            license=license,
            instruction=MCQ_INSTRUCTION,
            input=format_mcq_input(question, options),
            output=format_mcq_output(letter, options[letter], str(obj.get("exp") or "")),
            metadata={
                "task": "mcq",
                "options": options,
                "answer": letter,
                "subject": obj.get("subject_name"),
                "topic": obj.get("topic_name"),
            },
        )

    return convert_all(path, convert)


READER = Reader("medmcqa", read_medmcqa, template_instructions=(MCQ_INSTRUCTION,))
