"""Negative controls: datasets built to produce a *broken* adapter, so a quality gate is shown to
catch one.

A gate that passes the real fine-tune proves little unless it also fails an adapter that learned
the answer format but not the answers. :func:`write_shuffled_outputs` makes that adapter's
training data: the train split's outputs permuted across records (each prompt paired with another
patient's answer), the test split byte-for-byte the original, so both adapters are scored on the
same held-out records.

Example::

    >>> manifest = write_shuffled_outputs(".demo/datasets/demo/v1", "/tmp/shuffled", seed=0)
    >>> manifest.config["control"]["kind"]
    'shuffled-outputs'
"""

from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime
from pathlib import Path

from healthnav.contracts.dataset import MANIFEST_NAME, DatasetManifest, iter_records, load_manifest
from healthnav.contracts.records import TrainingRecord
from healthnav.datapipe.build import ShardWriter


def shuffled_outputs(records: list[TrainingRecord], seed: int) -> list[TrainingRecord]:
    """The same prompts with their outputs (and the labels that describe them) permuted.

    A derangement is not required: with hundreds of records a fixed point or two is noise, and a
    plain seeded shuffle keeps the control reproducible.
    """
    rng = random.Random(seed)
    donors = list(records)
    rng.shuffle(donors)
    return [
        r.model_copy(update={"output": d.output, "metadata": _relabel(r.metadata, d.metadata)})
        for r, d in zip(records, donors, strict=True)
    ]


# Metadata keys that describe the output rather than the prompt: they move with the output.
_OUTPUT_LABELS = ("risk_level", "answer")


def _relabel(prompt: dict[str, object], donor: dict[str, object]) -> dict[str, object]:
    kept = {k: v for k, v in prompt.items() if k not in _OUTPUT_LABELS}
    return kept | {k: v for k, v in donor.items() if k in _OUTPUT_LABELS}


def write_shuffled_outputs(source: str | Path, directory: str | Path, *, seed: int = 0) -> DatasetManifest:
    """Write the shuffled-outputs control of the local dataset ``source`` into ``directory``.

    The manifest says what it is (``config.control``) so nobody mistakes it for training data.
    """
    src, out = Path(source), Path(directory)
    manifest = load_manifest(src)
    out.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(out, "train", shard_size=max(1, manifest.split_count("train")))
    for record in shuffled_outputs(list(iter_records(src, "train", manifest=manifest)), seed):
        writer.write(record)
    shards = writer.close()
    for shard in manifest.shards:
        if shard.split != "train":
            shutil.copyfile(src / shard.path, out / shard.path)
            shards.append(shard)
    control = manifest.model_copy(
        update={
            "name": f"{manifest.name}-shuffled-outputs",
            "created_at": datetime.now(UTC).isoformat(),
            "deployable": False,
            "shards": shards,
            "config": {
                **manifest.config,
                "control": {"kind": "shuffled-outputs", "seed": seed, "source": str(src)},
            },
        }
    )
    (out / MANIFEST_NAME).write_text(control.model_dump_json(indent=2), encoding="utf-8")
    return control
