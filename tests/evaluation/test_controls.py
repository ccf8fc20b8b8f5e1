"""The shuffled-outputs control: the data a gate must fail, built from a real dataset's layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_helpers import make_records, write_dataset

from healthnav.contracts.dataset import load_records, verify
from healthnav.datapipe.controls import write_shuffled_outputs

pytestmark = pytest.mark.unit


def test_outputs_move_across_prompts_and_the_test_split_is_untouched(tmp_path: Path) -> None:
    records = make_records()
    source = write_dataset(tmp_path / "ds", {"train": records, "test": records[:3]})
    manifest = write_shuffled_outputs(source, tmp_path / "control", seed=0)

    assert verify(tmp_path / "control").ok  # sha256 of every shard, as the trainer checks it
    assert manifest.config["control"] == {"kind": "shuffled-outputs", "seed": 0, "source": str(source)}
    assert manifest.deployable is False and manifest.name.endswith("shuffled-outputs")
    assert (tmp_path / "control" / "test-00000.jsonl").read_bytes() == (
        source / "test-00000.jsonl"
    ).read_bytes()

    shuffled = load_records(tmp_path / "control", "train")
    assert [(r.id, r.instruction, r.input) for r in shuffled] == [
        (r.id, r.instruction, r.input) for r in records
    ]
    assert sorted(r.output for r in shuffled) == sorted(r.output for r in records)
    moved = sum(a.output != b.output for a, b in zip(shuffled, records, strict=True))
    assert moved >= len(records) // 2
    # a label that describes the output travels with it
    by_output = {r.output: r.metadata.get("risk_level") for r in records}
    assert all(r.metadata.get("risk_level") == by_output[r.output] for r in shuffled)

    again = write_shuffled_outputs(source, tmp_path / "again", seed=0)
    assert [s.sha256 for s in again.shards] == [s.sha256 for s in manifest.shards]  # reproducible
