"""MedQA (USMLE) multiple choice: ``instruction`` is the shared MCQ instruction, ``input`` the
question with lettered options, ``output`` ``"Answer: C. <text>"``. ``metadata`` holds
``task="mcq"``, ``options`` and ``answer`` (the letter) so the evaluator can score by
log-likelihood over options (:func:`~healthnav.contracts.prompts.format_mcq_output`)."""

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


def read_medqa(path: str | Path, *, source: str = "medqa", license: str = "MIT") -> Iterator[ReadItem]:
    """MedQA (USMLE) JSONL: ``question``, ``options{A..}``, ``answer``, ``answer_idx``, ``meta_info``."""
    stem = Path(path).stem

    def convert(obj: dict[str, Any], index: int) -> TrainingRecord:
        question = require_str(obj, "question")
        options = obj.get("options")
        if not isinstance(options, dict) or len(options) < 2:
            raise RecordError("field 'options' must be an object with at least two lettered options")
        options = {str(k).strip().upper(): str(v) for k, v in sorted(options.items())}
        letter = str(obj.get("answer_idx") or "").strip().upper()
        if letter not in options:
            raise RecordError(f"field 'answer_idx' {letter!r} is not one of the options {sorted(options)}")
        answer_text = options[letter]
        if obj.get("answer") and str(obj["answer"]).strip() != answer_text.strip():
            raise RecordError(f"field 'answer' does not match option {letter}")
        return make_record(
            id=f"{source}-{stem}-{index}",
            source=source,
            license=license,
            instruction=MCQ_INSTRUCTION,
            input=format_mcq_input(question, options),
            output=format_mcq_output(letter, answer_text),
            metadata={
                "task": "mcq",
                "options": options,
                "answer": letter,
                "meta_info": obj.get("meta_info"),
            },
        )

    return convert_all(path, convert)


READER = Reader("medqa", read_medqa, template_instructions=(MCQ_INSTRUCTION,))
