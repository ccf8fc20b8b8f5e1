"""Red-flag layer on the independent vignette suite: recall, false alarms, semantic contribution, latency.

The suite (``bench/data/redflags/vignettes.jsonl``, written without access to the rules: see its
README) labels each message ``emergency`` or ``not_emergency``. For each message the whole check
runs as the assessment API runs it (``age_years`` passed where the suite gives one), once with
the rules alone and once with rules + semantic net, so the net's contribution is measured on
its own: emergencies it alone caught, and false alarms it alone added. Latency is the whole
check per message (median over ``--repeat`` passes of each message, then p50/p99 over
messages), on one process after warm-up; the machine is shared, so treat figures as rough.

    .venv/bin/python -m bench.redflag_recall [--repeat 5]

Writes ``bench/results/redflag_recall.json``; misses and false alarms are listed by id.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "bench" / "data" / "redflags" / "vignettes.jsonl"
RESULTS = REPO / "bench" / "results" / "redflag_recall.json"


@dataclass(frozen=True)
class Vignette:
    id: str
    text: str
    emergency: bool
    presentation: str
    context: str
    language: str
    age_years: float | None


def load_suite(path: Path = SUITE) -> list[Vignette]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append(
                Vignette(
                    row["id"],
                    row["text"],
                    row["label"] == "emergency",
                    row["presentation"],
                    row.get("context", "present"),
                    row.get("language", "en"),
                    row.get("age_years"),
                )
            )
        except (KeyError, json.JSONDecodeError) as exc:
            raise SystemExit(f"{path}:{n}: bad vignette: {exc}") from exc
    return out


def score(suite: list[Vignette]) -> dict[str, Any]:
    """Recall per presentation and overall, false-alarm rate, rules vs rules+semantic."""
    from healthnav.serving.redflags import check_red_flags

    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_context: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    misses, false_alarms, semantic_only_hits, semantic_false_alarms = [], [], [], []
    refused, refused_emergency_missed = [], []
    tp_rules = tp_all = fp_rules = fp_all = 0
    for v in suite:
        rules = check_red_flags(v.text, age_years=v.age_years, semantic=False, wait_for_models=True)
        full = check_red_flags(v.text, age_years=v.age_years, semantic=True, wait_for_models=True)
        if not full.language.supported:
            refused.append(v.id)
        if v.emergency:
            per[v.presentation][1] += 1
            tp_rules += rules.escalate
            tp_all += full.escalate
            if full.escalate:
                per[v.presentation][0] += 1
            else:
                entry = {"id": v.id, "presentation": v.presentation, "language": v.language}
                if not full.language.supported:
                    entry["refused_language"] = full.language.code
                    refused_emergency_missed.append(v.id)
                misses.append(entry)
            if full.escalate and not rules.escalate:
                semantic_only_hits.append(v.id)
        else:
            by_context[v.context][1] += 1
            fp_rules += rules.escalate
            fp_all += full.escalate
            if full.escalate:
                by_context[v.context][0] += 1
                false_alarms.append({"id": v.id, "context": v.context, "flags": [f.id for f in full.flags]})
            if full.escalate and not rules.escalate:
                semantic_false_alarms.append(v.id)
    n_pos = sum(v.emergency for v in suite)
    n_neg = len(suite) - n_pos
    n_pos_readable = (
        n_pos
        - len(refused_emergency_missed)
        - sum(1 for v in suite if v.emergency and v.id in refused and v.id not in refused_emergency_missed)
    )
    safe = tp_all + len(refused_emergency_missed)
    return {
        "n": len(suite),
        "n_emergency": n_pos,
        "n_not_emergency": n_neg,
        "recall": round(tp_all / n_pos, 4) if n_pos else None,
        "false_alarm_rate": round(fp_all / n_neg, 4) if n_neg else None,
        "recall_in_catalogue_languages": round(
            (
                tp_all
                - sum(
                    1
                    for v in suite
                    if v.emergency and v.id in refused and v.id not in refused_emergency_missed
                )
            )
            / n_pos_readable,
            4,
        )
        if n_pos_readable
        else None,
        "emergencies_escalated_or_refused_with_safe_advice": round(safe / n_pos, 4) if n_pos else None,
        "rules_only": {
            "recall": round(tp_rules / n_pos, 4) if n_pos else None,
            "false_alarm_rate": round(fp_rules / n_neg, 4) if n_neg else None,
        },
        "semantic_contribution": {
            "emergencies_caught_only_by_semantic": semantic_only_hits,
            "false_alarms_added_by_semantic": semantic_false_alarms,
        },
        "recall_per_presentation": {
            p: {"recall": round(hit / total, 3), "n": total} for p, (hit, total) in sorted(per.items())
        },
        "false_alarms_per_context": {
            c: {"false_alarms": fa, "n": total} for c, (fa, total) in sorted(by_context.items())
        },
        "language_refusals": {
            "ids": refused,
            "emergencies_refused_and_not_escalated": refused_emergency_missed,
            "note": "a refused language is answered 'cannot triage this language' at risk level "
            "urgent or above with the emergency-number advice; it is not an escalation",
        },
        "misses": misses,
        "false_alarms": false_alarms,
    }


def latency(suite: list[Vignette], repeat: int) -> dict[str, float]:
    """Whole-check latency per message (rules + context + language + semantic when reached)."""
    from healthnav.serving.redflags import check_red_flags

    per_message = []
    for v in suite:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            check_red_flags(v.text, age_years=v.age_years, wait_for_models=True)
            times.append(time.perf_counter() - t0)
        per_message.append(statistics.median(times) * 1000)
    per_message.sort()
    return {
        "p50_ms": round(statistics.median(per_message), 3),
        "p99_ms": round(per_message[min(len(per_message) - 1, int(len(per_message) * 0.99))], 3),
        "max_ms": round(per_message[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="passes over each message for latency")
    parser.add_argument("--suite", type=Path, default=SUITE)
    args = parser.parse_args()
    if not args.suite.is_file():
        raise SystemExit(f"no suite at {args.suite}")
    from healthnav.serving.redflags import check_red_flags

    t0 = time.perf_counter()
    check_red_flags("warm up: chest pain", wait_for_models=True)
    warm_s = time.perf_counter() - t0
    suite = load_suite(args.suite)
    result = score(suite)
    emergencies = [v for v in suite if v.emergency]
    routine = [v for v in suite if not v.emergency]
    result["latency"] = {
        "all": latency(suite, args.repeat),
        "not_emergency_only": latency(routine, args.repeat),
        "emergency_only": latency(emergencies, args.repeat),
        "first_check_s_including_model_load": round(warm_s, 2),
        "note": "one process, after warm-up; shared 2-core machine, medians of --repeat passes per message",
    }
    result["machine"] = {
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    keys = (
        "n",
        "recall",
        "recall_in_catalogue_languages",
        "emergencies_escalated_or_refused_with_safe_advice",
    )
    short = {k: result[k] for k in (*keys, "false_alarm_rate", "rules_only")}
    print(json.dumps(short))
    print(json.dumps(result["latency"]))
    print(f"misses ({len(result['misses'])}):", ", ".join(m["id"] for m in result["misses"]))
    print(
        f"false alarms ({len(result['false_alarms'])}):", ", ".join(f["id"] for f in result["false_alarms"])
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
