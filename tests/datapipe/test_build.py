"""End-to-end builds on the committed examples: manifest, shards, verify, loader, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dp_helpers import EXAMPLES, ROOT, write_config

from healthnav.contracts.dataset import DatasetError, iter_records, load_manifest, load_records, verify
from healthnav.datapipe.build import BuildError, build_dataset, load_config
from healthnav.datapipe.stage import stage_dataset

pytestmark = pytest.mark.unit


def _build(tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    cfg, base = load_config(write_config(tmp_path / "cfg.yaml", **overrides))
    return build_dataset(cfg, base)


def test_example_config_builds_a_verified_dataset(tmp_path: Path) -> None:
    cfg, base = load_config(ROOT / "examples" / "datasets" / "triage-v1.yaml")
    out = tmp_path / "triage"
    result = build_dataset(cfg, base, output=str(out))
    names = sorted(p.name for p in out.iterdir())
    assert names == ["datacard.md", "manifest.json", "test-00000.jsonl", "train-00000.jsonl"]
    m = load_manifest(out)
    assert m.schema_version == "1" and m.deployable
    assert m.counts["by_source"]["medqa"] == {"test": 4}
    assert m.counts["total"] == sum(s.records for s in m.shards)
    assert m.stats["bad_records"]["total"] == 3
    locations = {s["location"] for s in m.stats["bad_records"]["samples"]}
    assert "app_assessments.jsonl:7" in locations
    deid = m.stats["deidentification"]
    assert deid["quarantined"] == 1 and deid["quarantine_locations"] == [
        "app_assessments.jsonl:5: long digit run"
    ]
    assert deid["replacements_by_type"]["NAME"] >= 2
    assert verify(out).ok and result.manifest.counts == m.counts
    # no identifier from the app export reaches any shard
    blob = "".join(p.read_text() for p in out.glob("*.jsonl"))
    for phi in (
        "Margaret",
        "Okafor",
        "Alvarez",
        "Market Street",
        "94105",
        "00482913",
        "Maria",
        "0 7 7 0 0 9",
    ):
        assert phi not in blob, phi
    mcq = load_records(out, "test")
    assert all(r.metadata["task"] == "mcq" for r in mcq if r.source == "medqa")
    assert "| app | app | proprietary-internal |" in (out / "datacard.md").read_text()


def test_corrupted_shard_fails_verify_and_loader_naming_the_shard(tmp_path: Path) -> None:
    out = Path(_build(tmp_path).uri.removeprefix("file://"))
    shard = out / "train-00000.jsonl"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0x20
    shard.write_bytes(bytes(data))
    report = verify(out)
    assert (
        not report.ok
        and "train-00000.jsonl" in report.problems[0]
        and "sha256 mismatch" in report.problems[0]
    )
    with pytest.raises(DatasetError, match=r"shard train-00000\.jsonl .*sha256 mismatch"):
        list(iter_records(out, "train"))
    shard.unlink()
    with pytest.raises(DatasetError, match=r"train-00000\.jsonl.*missing"):
        list(iter_records(out, "train"))


def test_prefix_without_manifest_is_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "train-00000.jsonl").write_text("{}\n")
    with pytest.raises(DatasetError, match="no manifest"):
        load_manifest(tmp_path)
    assert not verify(tmp_path).ok


def test_error_budget_stops_the_build_with_locations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        "\n".join(["{oops"] * 5 + ['{"instruction": "What is a fever?", "output": "A raised temperature."}'])
    )
    src = [{"name": "x", "format": "instruction", "paths": [str(bad)], "license": "MIT"}]
    with pytest.raises(BuildError, match="max_bad_records 3"):
        _build(tmp_path, sources=src, error_budget={"max_bad_records": 3})
    with pytest.raises(BuildError, match=r"5/6 malformed"):
        _build(tmp_path, sources=src, error_budget={"max_bad_records": None, "max_bad_fraction": 0.5})
    ok = _build(tmp_path, sources=src, error_budget={"max_bad_records": 10, "max_bad_fraction": 0.9})
    assert ok.manifest.stats["bad_records"]["samples"][0]["location"] == "bad.jsonl:1"


def test_non_deployable_licence_is_refused_in_a_deployable_dataset(tmp_path: Path) -> None:
    mimic = [
        {
            "name": "mimic",
            "format": "instruction",
            "paths": [str(EXAMPLES / "instruction.jsonl")],
            "license": "PhysioNet-Credentialed-Health-Data-1.5.0",
        }
    ]
    with pytest.raises(BuildError, match="forbids deployment"):
        _build(tmp_path, sources=mimic)
    research = _build(tmp_path, sources=mimic, deployable=False)
    assert research.manifest.licenses == {"PhysioNet-Credentialed-Health-Data-1.5.0": 3}
    unknown = [{**mimic[0], "license": "some-custom-terms"}]
    with pytest.raises(BuildError, match="not in the deployable allow-list"):
        _build(tmp_path, sources=unknown)


def test_per_record_licence_filter(tmp_path: Path) -> None:
    f = tmp_path / "mixed.jsonl"
    f.write_text(
        '{"instruction": "What is asthma?", "output": "A chronic airway disease.", '
        '"license": "CC-BY-NC-4.0"}\n'
        '{"instruction": "What is gout?", "output": "Arthritis from urate crystals."}\n'
    )
    r = _build(
        tmp_path, sources=[{"name": "m", "format": "instruction", "paths": [str(f)], "license": "MIT"}]
    )
    assert r.manifest.stats["filtered"] == {"license": 1} and r.manifest.counts["total"] == 1


def test_exact_and_near_duplicates_and_decontamination(tmp_path: Path) -> None:
    q = "A 67-year-old man has crushing substernal chest pain radiating to the left arm for 40 minutes"
    rows = [
        {"instruction": "What is hypertension?", "output": "Persistently raised blood pressure."},
        {
            "instruction": "what is  HYPERTENSION?",
            "output": "Persistently raised blood pressure!",
        },  # exact after folding
        {
            "instruction": "Explain the causes of iron deficiency anaemia in adults and how it is usually "
            "investigated in primary care with blood tests",
            "output": "Blood loss, poor intake and malabsorption; check a full blood count and ferritin.",
        },
        {
            "instruction": "Explain the causes of iron deficiency anaemia in adults and how it is usually "
            "investigated in primary care with simple blood tests",
            "output": "Blood loss, poor intake and malabsorption; check a full blood count and ferritin.",
        },  # near
        {
            "instruction": "Which artery is blocked?",
            "input": q + ". ECG shows ST elevation in II, III and aVF.",
            "output": "Probably the right coronary artery.",
        },  # leaks a MedQA test question
    ]
    f = tmp_path / "dups.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    sources = [
        {"name": "d", "format": "instruction", "paths": [str(f)], "license": "MIT"},
        {
            "name": "medqa",
            "format": "medqa",
            "paths": [str(EXAMPLES / "medqa_us_4options.jsonl")],
            "license": "MIT",
            "split": "test",
        },
    ]
    r = _build(tmp_path, sources=sources)
    st = r.manifest.stats
    assert st["dedup"] == {"exact": 1, "near": 1}
    assert st["decontamination"]["removed"] == 1
    assert r.manifest.counts["by_source"] == {"d": {"train": 2}, "medqa": {"test": 4}}


def test_split_is_deterministic_and_respects_fraction(tmp_path: Path) -> None:
    rows = [
        {"instruction": f"Question number {i} about symptom {i * 7}?", "output": f"Answer {i}."}
        for i in range(400)
    ]
    f = tmp_path / "many.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    src = [{"name": "m", "format": "instruction", "paths": [str(f)], "license": "MIT"}]
    kw = {
        "sources": src,
        "split": {"test_fraction": 0.2, "seed": 7},
        "dedup": {"near": False},
        "shard_size": 150,
    }
    a = _build(tmp_path / "a", **kw) if (tmp_path / "a").mkdir() is None else None
    b = _build(tmp_path / "b", **kw) if (tmp_path / "b").mkdir() is None else None
    assert a is not None and b is not None
    test_ids = [r.id for r in iter_records(a.uri, "test")]
    assert test_ids == [r.id for r in iter_records(b.uri, "test")]
    assert 50 <= len(test_ids) <= 110
    assert [s.path for s in a.manifest.shards if s.split == "train"] == [
        "train-00000.jsonl",
        "train-00001.jsonl",
        "train-00002.jsonl",
    ][: len(a.manifest.shards_for("train"))]
    assert a.manifest.split_count("train") + len(test_ids) == 400


def test_existing_dataset_is_not_overwritten_without_flag(tmp_path: Path) -> None:
    _build(tmp_path)
    with pytest.raises(BuildError, match="already exists"):
        _build(tmp_path)


def test_build_and_stage_to_s3_then_load(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    try:
        bucket = request.getfixturevalue("s3_bucket")
    except pytest.FixtureLookupError:
        pytest.skip("s3_bucket fixture (tests/conftest.py) not available")
    out = Path(_build(tmp_path).uri.removeprefix("file://"))
    uri = f"s3://{bucket}/datasets/t/v1/"
    assert stage_dataset(out, uri) == 4
    assert stage_dataset(out, uri) == 0  # idempotent: nothing re-uploaded
    assert verify(uri).ok
    assert [r.id for r in iter_records(uri, "train")] == [r.id for r in iter_records(out, "train")]
    s3_out = f"s3://{bucket}/datasets/t/v2/"
    cfg, base = load_config(write_config(tmp_path / "cfg2.yaml", output=s3_out))
    built = build_dataset(cfg, base)
    assert load_manifest(s3_out).counts == built.manifest.counts
