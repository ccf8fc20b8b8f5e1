"""De-identification recall and clinical-content retention on the hand-labelled set.

The set (tests/datapipe/data/deid_labelled.jsonl) was written alongside the rules, so the
figures are optimistic; the test suite holds them above a floor, this reports the exact values.
Writes bench/results/deid_recall.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from healthnav.datapipe.deid import Deidentifier, measure_recall

REPO = Path(__file__).resolve().parents[1]
LABELLED = REPO / "tests" / "datapipe" / "data" / "deid_labelled.jsonl"


def main() -> None:
    examples = [json.loads(line) for line in LABELLED.read_text().splitlines() if line.strip()]
    report = measure_recall(Deidentifier(), examples)
    result = {
        "examples": len(examples),
        "identifiers": report.identifiers,
        "recall": round(report.recall, 4),
        "clinical_retention": round(report.clinical_retention, 4),
        "by_type": {kind: {"caught": c, "total": t} for kind, (c, t) in sorted(report.by_type.items())},
        "missed": len(report.missed),
    }
    out = REPO / "bench" / "results" / "deid_recall.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
