"""Benchmark: ``hnav data build`` on a generated corpus of realistic records.

The corpus mixes app assessment exports (free-text symptoms, a third with PHI typed into
them, identifier columns) and instruction Q&A with lengths like real medical Q&A (answers of
a few sentences to a paragraph), about 5% exact and 3% near duplicates. De-identification
runs on every source and dedup (exact + MinHash LSH) and decontamination are on.

Each size is built in a fresh subprocess so peak RSS is that build's own. Results go to
``bench/results/datapipe_build.json``.

    .venv/bin/python bench/datapipe_build.py            # 10k and 100k
    .venv/bin/python bench/datapipe_build.py --sizes 10000
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "datapipe_build.json"

SYMPTOMS = [
    "headache for {d} days, worse in the mornings, with mild nausea",
    "sore throat and fever of {t} C since {dow}, painful swallowing",
    "chest tightness when climbing stairs for {d} weeks, settles with rest",
    "burning when passing urine and needing to go often for {d} days",
    "lower back pain after lifting boxes {d} days ago, no numbness",
    "itchy red rash on both arms after starting a new antibiotic",
    "cough with green sputum for {d} days and feeling short of breath",
    "dizziness when standing up quickly, worse after the new blood pressure tablets",
    "abdominal pain in the right lower side since last night with vomiting",
    "swollen painful left calf after a long flight {d} days ago",
]
PHI = [
    "My name is {name}, call me on {phone}.",
    "This is {first}, I saw Dr. {last} on {date}.",
    "I live at {num} Oak Street, {city}, MA 0{zip}.",
    "email {first}.{last}@example.com if you need more details.",
    "My mother {first} is {oldage} years old.",
    "MRN {mrn} at the clinic.",
]
TOPICS = [
    "hypertension",
    "asthma",
    "type 2 diabetes",
    "migraine",
    "gout",
    "anaemia",
    "eczema",
    "GERD",
    "hypothyroidism",
    "atrial fibrillation",
    "osteoporosis",
    "UTI",
    "otitis media",
    "COPD",
    "depression",
]
SENTENCES = [
    "It is common in adults and often goes unnoticed for years.",
    "First-line treatment combines lifestyle measures with medication when targets are not met.",
    "Typical doses start low, for example {dose} mg once daily, and are titrated every {d} weeks.",
    "Warning signs that need urgent review include chest pain, breathlessness or confusion.",
    "Blood tests such as a full blood count and renal function guide the choice of treatment.",
    "Patients should be reviewed within {d} weeks of any change in therapy.",
    "Side effects are usually mild and settle within the first {d} days.",
    "Referral to a specialist is advised when symptoms persist despite two treatments.",
]


def generate(path: Path, n: int, seed: int = 7) -> None:
    """Write ``n`` records: half app exports (JSONL), half instruction Q&A (JSONL)."""
    from faker.providers.lorem.en_US import Provider as Lorem
    from faker.providers.person.en_US import Provider

    rnd = random.Random(seed)
    vocab = list(Lorem.word_list)

    def free_text(lo: int, hi: int) -> str:  # varied wording, as real patients and authors write
        return " ".join(rnd.choices(vocab, k=rnd.randint(lo, hi))).capitalize() + "."

    firsts, lasts = list(Provider.first_names), list(Provider.last_names)
    cities = ["Springfield", "Riverton", "Lakewood", "Fairview", "Greenville", "Salem"]
    app = open(path / "app.jsonl", "w", encoding="utf-8")  # noqa: SIM115
    inst = open(path / "qa.jsonl", "w", encoding="utf-8")  # noqa: SIM115
    prev_app: list[str] = []
    prev_qa: list[str] = []
    for i in range(n):
        r = rnd.random()
        if i % 2 == 0:
            if prev_app and r < 0.05:
                app.write(rnd.choice(prev_app))
                continue
            d = rnd.randint(1, 14)
            first, last = rnd.choice(firsts), rnd.choice(lasts)
            text = (
                rnd.choice(SYMPTOMS).format(d=d, t=round(rnd.uniform(37.5, 40), 1), dow="Monday").capitalize()
                + "."
            )
            text += " " + free_text(15, 60)
            if rnd.random() < 0.33:
                text += " " + rnd.choice(PHI).format(
                    name=f"{first} {last}",
                    first=first,
                    last=last,
                    phone=f"617-555-{rnd.randint(1000, 9999)}",
                    date=f"{rnd.randint(1, 12)}/{rnd.randint(1, 28)}/2024",
                    num=rnd.randint(1, 999),
                    city=rnd.choice(cities),
                    zip=rnd.randint(1000, 2999),
                    oldage=rnd.randint(90, 99),
                    mrn=rnd.randint(10**6, 10**7),
                )
            row = {
                "assessment_id": f"asm_{i:07d}",
                "patient_name": f"{first} {last}",
                "phone": "617-555-0100",
                "email": f"{first.lower()}@example.com",
                "age": rnd.randint(1, 99),
                "sex": rnd.choice(["female", "male"]),
                "symptoms": text,
                "duration": f"{d} days",
                "medical_history": rnd.choice(["", "Hypertension", "Asthma"]),
                "medications": rnd.choice(["", "Amlodipine 5 mg", "Metformin 500 mg twice daily"]),
                "risk_level": rnd.choice(["self-care", "routine", "urgent", "emergency"]),
                "assessment": free_text(10, 40) + " " + rnd.choice(SENTENCES).format(dose=10, d=d),
                "recommendations": rnd.sample(
                    [
                        "Rest and fluids",
                        "See your GP this week",
                        "Call 911 if worse",
                        "Keep a symptom diary",
                        "Take paracetamol if needed",
                    ],
                    2,
                ),
            }
            line = json.dumps(row) + "\n"
            prev_app = [*prev_app, line][-50:]
            app.write(line)
        else:
            if prev_qa and r < 0.05:
                inst.write(rnd.choice(prev_qa))
                continue
            topic = rnd.choice(TOPICS)
            body = " ".join(rnd.sample(SENTENCES, 2)).format(
                dose=rnd.choice([5, 10, 50]), d=rnd.randint(1, 8)
            )
            body += " " + free_text(30, 120)
            if prev_qa and r < 0.08:  # near duplicate: one word changed
                old = json.loads(rnd.choice(prev_qa))
                old["output"] = old["output"].replace("often", "frequently", 1) + " Ask your pharmacist."
                line = json.dumps(old) + "\n"
            else:
                q = f"{free_text(8, 30)} What should a patient with {topic} know about this?"
                line = (
                    json.dumps({"instruction": q, "input": "", "output": f"{topic.capitalize()}: {body}"})
                    + "\n"
                )
            prev_qa = [*prev_qa, line][-50:]
            inst.write(line)
    app.close()
    inst.close()


def run_one(n: int) -> dict[str, object]:
    """Generate and build ``n`` records in this process; returns figures."""
    import yaml

    from healthnav.datapipe.build import build_dataset, load_config

    with tempfile.TemporaryDirectory(prefix="hnav-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        generate(root, n)
        gen_s = time.perf_counter() - t0
        cfg_path = root / "bench.yaml"
        cfg_path.write_text(
            yaml.safe_dump(
                {
                    "name": "bench",
                    "version": f"n{n}",
                    "output": str(root / "out"),
                    "deployable": True,
                    "sources": [
                        {
                            "name": "app",
                            "format": "app",
                            "paths": ["app.jsonl"],
                            "license": "proprietary-internal",
                            # synthetic: measures the rules path that sources without patient data
                            # take; the NER pass's throughput is bench/deid_recall.py's
                            "patient_data": False,
                            "deidentify": True,  # rules only (no patient data), but on
                        },
                        {
                            "name": "qa",
                            "format": "instruction",
                            "paths": ["qa.jsonl"],
                            "license": "CC-BY-4.0",
                            "deidentify": True,
                        },
                    ],
                    "split": {"test_fraction": 0.05, "seed": 1},
                }
            )
        )
        cfg, base = load_config(cfg_path)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t1 = time.perf_counter()
        cpu0 = time.process_time()
        result = build_dataset(cfg, base)
        wall = time.perf_counter() - t1
        cpu = time.process_time() - cpu0
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        st = result.manifest.stats
        return {
            "records": n,
            "generate_seconds": round(gen_s, 2),
            "build_wall_seconds": round(wall, 2),
            "build_cpu_seconds": round(cpu, 2),
            "records_per_second_wall": round(n / wall, 1),
            "records_per_second_cpu": round(n / cpu, 1),
            "peak_rss_mib": round(peak_kib / 1024, 1),
            "rss_before_build_mib": round(rss_before / 1024, 1),
            "kept": result.manifest.counts["by_split"],
            "dedup": st["dedup"],
            "decontaminated": st["decontamination"]["removed"],
            "deid_replacements": st["deidentification"]["replacements_by_type"],
            "quarantined": st["deidentification"]["quarantined"],
            "deid_prefilter": _prefilter_active(),
        }


def _prefilter_active() -> bool:
    """Whether de-identification ran with its Hyperscan prefilter (else the Python gates)."""
    from healthnav.datapipe.deid import default_deidentifier

    return default_deidentifier()._prefilter is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    runs = []
    for n in args.sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), flush=True)
    out = {
        "benchmark": "datapipe_build",
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "notes": "one process, one core; de-identification on all sources; exact+near dedup and "
        "decontamination on; build time includes the per-process setup (rule compilation, the "
        "Hyperscan database from its on-disk cache); "
        "the machine is shared, so wall time is noisier than CPU time",
        "runs": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
