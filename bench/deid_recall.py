"""De-identification: recall per type, precision, clinical retention and throughput, NER on and off.

Three labelled sets: the held-out one (``bench/data/deid/heldout.jsonl``, written without access
to the de-identifier or the other sets, and never read while tuning: see ``HELDOUT.md``), the
independent one (``bench/data/deid/independent.jsonl``, also written blind, but its misses were
read to find general gaps, so it is now a development set: see its README) and the co-written
one the rules were tuned alongside (``tests/datapipe/data/deid_labelled.jsonl``: optimistic).
Throughput is measured on app-export records (``examples/data/app_assessments_synthetic.jsonl``,
every free-text field scrubbed as ``hnav data build`` does, in batches of 64) in CPU seconds of
this one process, so records per CPU-second is records per second per core, and it is steadier
than wall time on a shared machine. Writes ``bench/results/deid_recall.json``.

    .venv/bin/python -m bench.deid_recall [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SETS = {
    # held out: written blind to the rules and to the other sets, and not read while tuning
    "heldout": REPO / "bench" / "data" / "deid" / "heldout.jsonl",
    # written blind to the rules, but its misses were read to find general gaps: a development set
    "independent": REPO / "bench" / "data" / "deid" / "independent.jsonl",
    "co_written": REPO / "tests" / "datapipe" / "data" / "deid_labelled.jsonl",
}
APP_EXPORT = REPO / "examples" / "data" / "app_assessments_synthetic.jsonl"
RESULTS = REPO / "bench" / "results" / "deid_recall.json"


def _app_records() -> list[tuple[Any, tuple[tuple[str, str], ...]]]:
    from healthnav.datapipe.build import SourceConfig, iter_source

    src = SourceConfig(name="app", format="app", paths=[str(APP_EXPORT)], license="proprietary-internal")
    return [(i.record, i.known_identifiers) for i in iter_source(src, REPO) if i.record is not None]


def throughput(deid: Any, records: list, repeat: int, *, batch: int = 64) -> dict[str, float]:
    """Median records per CPU-second (and per wall-second) over ``repeat`` passes."""
    from healthnav.datapipe.build import deidentify_records

    cpu_rates, wall_rates = [], []
    for _ in range(repeat):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(0, len(records), batch):
            deidentify_records(deid, records[i : i + batch])
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        cpu_rates.append(len(records) / cpu)
        wall_rates.append(len(records) / wall)
    return {
        "records_per_cpu_second_median": round(statistics.median(cpu_rates), 1),
        "records_per_cpu_second_min": round(min(cpu_rates), 1),
        "records_per_cpu_second_max": round(max(cpu_rates), 1),
        "records_per_wall_second_median": round(statistics.median(wall_rates), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="throughput passes (median reported)")
    args = parser.parse_args()

    from healthnav.datapipe.deid import Deidentifier, measure_recall
    from healthnav.datapipe.deid.measure import load_labelled

    t0 = time.perf_counter()
    with_ner = Deidentifier.with_ner()
    load_seconds = time.perf_counter() - t0
    rules = Deidentifier()
    result: dict[str, Any] = {
        "benchmark": "deid_recall",
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "notes": "recall: an identifier counts as caught when no word of it survives; precision: share of "
        "removed words inside a labelled identifier; retention: clinical spans kept verbatim; throughput: "
        "app-export records (all free-text fields), one process, CPU seconds (= per core), shared machine",
        "ner_model": with_ner.ner.provenance.to_dict() if with_ner.ner else None,
        "ner_load_seconds": round(load_seconds, 2),
        "sets": {},
    }
    result["ner_model"]["files"] = len(result["ner_model"]["files"])  # the hashes are in every manifest
    for name, path in SETS.items():
        if not path.exists():
            result["sets"][name] = {"missing": str(path.relative_to(REPO))}
            continue
        examples = load_labelled(path)
        entry: dict[str, Any] = {"examples": len(examples)}
        for mode, deid in (("ner_on", with_ner), ("ner_off", rules)):
            entry[mode] = measure_recall(deid, examples).to_dict()
        result["sets"][name] = entry
    records = _app_records()
    result["throughput"] = {
        "records": len(records),
        "ner_on": throughput(with_ner, records, args.repeat),
        "ner_off": throughput(rules, records, args.repeat),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    summary = {
        name: {
            m: {k: s[m][k] for k in ("recall", "precision_words", "clinical_retention")}
            for m in ("ner_on", "ner_off")
        }
        for name, s in result["sets"].items()
        if "ner_on" in s
    }
    print(json.dumps({"summary": summary, "throughput": result["throughput"]}, indent=2))


if __name__ == "__main__":
    main()
