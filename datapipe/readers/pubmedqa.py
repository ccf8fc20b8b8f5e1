"""PubMedQA ``pqa_labeled``: ``input`` is the question and the labelled abstract context, ``output``
``"Answer: yes|no|maybe"`` then the long answer; ``metadata.task="yesno"``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from healthnav.contracts.records import TrainingRecord
from healthnav.datapipe.readers.common import (
    Reader,
    ReadItem,
    RecordError,
    convert_all,
    make_record,
    require_str,
)

YESNO_INSTRUCTION = (
    "Answer the research question using the abstract context. Answer yes, no or maybe, then explain."
)


def read_pubmedqa(path: str | Path, *, source: str = "pubmedqa", license: str = "MIT") -> Iterator[ReadItem]:
    """PubMedQA ``pqa_labeled``: the Hugging Face JSONL (``question``, ``context{contexts,labels}``,
    ``long_answer``, ``final_decision``) or the original ``ori_pqal.json`` keyed by PMID."""

    def convert(obj: dict[str, Any], index: int) -> TrainingRecord:
        if "QUESTION" in obj:  # original release: upper-case keys, the PMID is the object key
            obj = {
                "pubid": obj.get("_key"),
                "question": obj.get("QUESTION"),
                "context": {"contexts": obj.get("CONTEXTS"), "labels": obj.get("LABELS")},
                "long_answer": obj.get("LONG_ANSWER"),
                "final_decision": obj.get("final_decision"),
            }
        question = require_str(obj, "question")
        ctx = obj.get("context") or {}
        contexts = ctx.get("contexts") if isinstance(ctx, dict) else None
        if not isinstance(contexts, list) or not contexts:
            raise RecordError("field 'context.contexts' must be a non-empty list")
        labels = ctx.get("labels") or [None] * len(contexts)
        decision = str(obj.get("final_decision") or "").strip().lower()
        if decision not in ("yes", "no", "maybe"):
            raise RecordError(f"field 'final_decision' {decision!r} is not yes/no/maybe")
        long_answer = require_str(obj, "long_answer")
        parts = [
            f"{label}: {text.strip()}" if label else text.strip()
            for text, label in zip(contexts, list(labels) + [None] * len(contexts), strict=False)
        ]
        pubid = obj.get("pubid") or index
        return make_record(
            id=f"{source}-{pubid}",
            source=source,
            license=license,
            instruction=YESNO_INSTRUCTION,
            input=f"Question: {question}\n\nContext:\n" + "\n".join(parts),
            output=f"Answer: {decision}\n{long_answer}",
            metadata={"task": "yesno", "answer": decision, "pmid": str(pubid)},
        )

    return convert_all(path, convert)


READER = Reader("pubmedqa", read_pubmedqa, template_instructions=(YESNO_INSTRUCTION,))
