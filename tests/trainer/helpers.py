"""Test data for the trainer: small datasets in the datapipe's on-disk format, tiny models."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from healthnav.contracts import storage
from healthnav.contracts.records import SCHEMA_VERSION, TrainingRecord
from healthnav.contracts.uris import StorageURI

_QA = [
    (
        "What is the first-line treatment for mild asthma?",
        "A low-dose inhaled corticosteroid with a reliever inhaler.",
    ),
    ("Which vitamin deficiency causes scurvy?", "Vitamin C deficiency causes scurvy."),
    ("What is a normal resting heart rate for adults?", "Between 60 and 100 beats per minute."),
    ("Which organ produces insulin?", "The pancreas produces insulin in its beta cells."),
    ("What does a high fever with a stiff neck suggest?", "Possible meningitis; seek emergency care now."),
    (
        "How long should a cough last before seeing a doctor?",
        "See a doctor if a cough lasts more than three weeks.",
    ),
    (
        "What is the antidote for paracetamol overdose?",
        "Acetylcysteine is the antidote for paracetamol overdose.",
    ),
    ("What blood pressure counts as hypertension?", "A reading of 130 over 80 mmHg or higher."),
    ("Which test confirms type 2 diabetes?", "An HbA1c of 6.5 percent or higher confirms diabetes."),
    ("What are stroke warning signs?", "Face drooping, arm weakness and speech difficulty: call 911."),
    (
        "How is dehydration in adults treated?",
        "Oral rehydration with water and electrolytes, small sips often.",
    ),
    ("What causes iron deficiency anaemia?", "Blood loss, low dietary iron or poor absorption of iron."),
]


def make_records(n: int = 12, *, long: bool = False) -> list[TrainingRecord]:
    """Medical-style Q&A records; ``long`` pads the input with a case description (200-400 tokens)."""
    records = []
    for i in range(n):
        q, a = _QA[i % len(_QA)]
        context = ""
        if long:
            context = " ".join(
                f"Visit {k}: patient reports fever, cough, headache and fatigue for {k + i % 5} days."
                for k in range(8 + i % 8)
            )
        records.append(
            TrainingRecord(
                id=f"test-{i}",
                source="test",
                license="CC0-1.0",
                instruction=q if i < len(_QA) else f"{q} (case {i})",
                input=context,
                output=a,
            )
        )
    return records


def write_dataset(prefix: str, records: Sequence[TrainingRecord], *, shard_size: int = 50) -> str:
    """Write manifest.json + train-*.jsonl shards (+ a test shard) under a storage prefix."""
    base = StorageURI.parse(prefix).as_prefix()
    shards = []
    chunks = [records[i : i + shard_size] for i in range(0, len(records), shard_size)]
    for split, parts in (("train", chunks), ("test", [records[:2]])):
        for n, part in enumerate(parts):
            data = "".join(r.model_dump_json() + "\n" for r in part).encode()
            name = f"{split}-{n:05d}.jsonl"
            storage.write_bytes(base.join(name), data)
            shards.append(
                {
                    "path": name,
                    "split": split,
                    "records": len(part),
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": "trainer-test",
        "version": "1",
        "deployable": True,
        "licenses": {"CC0-1.0": len(records)},
        "shards": shards,
    }
    storage.write_text(base.join("manifest.json"), json.dumps(manifest))
    return str(base)


def corpus(records: Sequence[TrainingRecord]) -> list[str]:
    return [f"{r.instruction}\n{r.input}\n{r.output}" for r in records]


def file_uri(path: Path) -> str:
    return "file://" + str(path.resolve())
