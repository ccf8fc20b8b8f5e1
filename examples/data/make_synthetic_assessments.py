"""Generate ``app_assessments_synthetic.jsonl``: synthetic Health Navigator assessment exports.

The demo needs more triage records than a hand-written fixture holds, in the app's real export
format (including identifiers a patient might type, which de-identification must remove). The
clinical content is illustrative only. Deterministic: ``python make_synthetic_assessments.py``
rewrites the same file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# risk level -> (symptoms, assessment, recommendations)
CASES: dict[str, list[tuple[str, str, list[str]]]] = {
    "self-care": [
        (
            "runny nose, sneezing and a scratchy throat",
            "Likely a common cold (viral upper respiratory infection).",
            [
                "Rest and drink plenty of fluids",
                "Paracetamol for discomfort if needed",
                "See a doctor if a fever lasts over 3 days",
            ],
        ),
        (
            "mild itchy rash on the forearm after gardening",
            "Probably contact dermatitis from a plant or soil irritant.",
            [
                "Wash the area with mild soap",
                "Use an emollient or 1% hydrocortisone cream",
                "Seek care if it spreads or blisters",
            ],
        ),
        (
            "tension across the forehead after long hours at the computer",
            "Consistent with a tension-type headache.",
            ["Take regular screen breaks", "Stay hydrated", "Ibuprofen or paracetamol if needed"],
        ),
        (
            "heartburn after large evening meals",
            "Likely gastro-oesophageal reflux.",
            [
                "Eat smaller meals earlier in the evening",
                "Try an over-the-counter antacid",
                "See a GP if it persists beyond two weeks",
            ],
        ),
        (
            "mild lower back ache after moving furniture",
            "Probably a simple muscular back strain.",
            [
                "Keep gently active",
                "Use heat and simple pain relief",
                "See a doctor if numbness or weakness develops",
            ],
        ),
    ],
    "routine": [
        (
            "persistent dry cough without fever",
            "Possibly post-viral cough or reflux; not urgent.",
            [
                "Book a GP appointment within 1-2 weeks",
                "Avoid smoke and irritants",
                "Seek care sooner if breathless",
            ],
        ),
        (
            "gradual weight gain, tiredness and feeling cold",
            "Symptoms could suggest an underactive thyroid.",
            ["Arrange a GP visit for thyroid blood tests", "Note any changes in energy and weight"],
        ),
        (
            "burning when passing urine and needing to go often",
            "Likely an uncomplicated urinary tract infection.",
            [
                "See a GP or pharmacist within 1-2 days",
                "Drink plenty of water",
                "Seek urgent care if fever or back pain develops",
            ],
        ),
        (
            "knee pain when climbing stairs",
            "Possibly patellofemoral pain or early osteoarthritis.",
            ["Book a routine GP or physiotherapy appointment", "Keep active with low-impact exercise"],
        ),
        (
            "recurring headaches in the mornings with mild nausea",
            "Likely tension-type headache; no red-flag features reported.",
            [
                "Keep a headache diary",
                "Check your blood pressure",
                "See your GP within a week if it persists",
            ],
        ),
    ],
    "urgent": [
        (
            "fever of 39 C, productive cough and pain when breathing in",
            "Possible chest infection or pneumonia.",
            ["See a doctor today", "Go to the emergency department if breathing becomes difficult"],
        ),
        (
            "severe abdominal pain in the lower right side for 12 hours",
            "Possible appendicitis; needs same-day assessment.",
            ["Seek same-day medical assessment", "Do not eat until you have been assessed"],
        ),
        (
            "painful swollen calf after a long flight",
            "Possible deep vein thrombosis.",
            ["Get seen by a doctor today", "Go to the emergency department if you become short of breath"],
        ),
        (
            "high fever and back pain with burning urine",
            "Possible kidney infection.",
            ["See a doctor today for antibiotics", "Go to hospital if you vomit or feel very unwell"],
        ),
        (
            "deep cut on the hand that keeps reopening",
            "The wound may need closure and assessment of tendons.",
            ["Go to urgent care today", "Apply firm pressure with a clean cloth meanwhile"],
        ),
    ],
    "emergency": [
        (
            "crushing chest pain spreading to the left arm with sweating",
            "Symptoms suggest an acute coronary syndrome.",
            ["Call 911 now", "Chew aspirin 300 mg if not allergic", "Do not drive yourself to hospital"],
        ),
        (
            "sudden weakness of one side of the face and slurred speech",
            "Signs of a possible stroke.",
            ["Call 911 immediately", "Note the time symptoms started"],
        ),
        (
            "swollen lips and tongue with wheezing after eating peanuts",
            "Possible anaphylaxis.",
            ["Use an adrenaline auto-injector if available", "Call 911 now"],
        ),
        (
            "stiff neck, high fever and a rash that does not fade under a glass",
            "Possible meningitis or sepsis.",
            ["Call 911 or go to the emergency department now"],
        ),
        (
            "vomiting blood and feeling faint",
            "Possible upper gastrointestinal bleeding.",
            ["Call 911 now", "Lie down and do not eat or drink"],
        ),
    ],
}
DURATIONS = ["2 hours", "6 hours", "1 day", "2 days", "3 days", "5 days", "1 week", "2 weeks"]
HISTORIES = [
    "None",
    "Hypertension",
    "Type 2 diabetes",
    "Asthma",
    "High cholesterol",
    "Migraine",
    "Hypothyroidism",
]
MEDICATIONS = [
    "None",
    "Metformin 500 mg twice daily",
    "Amlodipine 5 mg daily",
    "Salbutamol inhaler as needed",
    "Atorvastatin 20 mg",
    "Levothyroxine 50 mcg",
]
OPENERS = ["", "I have ", "My main problem is ", "Since yesterday I have ", "I've been having "]
NAMES = [
    "Aisha Patel",
    "John Miller",
    "Maria Garcia",
    "Wei Zhang",
    "Olga Ivanova",
    "Samuel Okoye",
    "Emma Brown",
]


def make(n: int = 240, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    levels = list(CASES)
    for i in range(n):
        level = levels[i % len(levels)]
        symptoms, assessment, recs = rng.choice(CASES[level])
        name = rng.choice(NAMES)
        text = f"{rng.choice(OPENERS)}{symptoms}".strip()
        text = text[0].upper() + text[1:] + "."
        if rng.random() < 0.3:  # patients sometimes type identifiers: de-identification must catch them
            text += f" This is {name.split()[0]}, call me on 617-555-{rng.randint(1000, 9999)}."
        rows.append(
            {
                "assessment_id": f"syn_{i:05d}",
                "user_id": f"u_{rng.randint(10000, 99999)}",
                "patient_name": name,
                "email": f"{name.split()[0].lower()}{rng.randint(1, 99)}@example.com",
                "age": rng.randint(18, 88),
                "sex": rng.choice(["female", "male"]),
                "symptoms": text,
                "duration": rng.choice(DURATIONS),
                "medical_history": rng.choice(HISTORIES),
                "medications": rng.choice(MEDICATIONS),
                "allergies": rng.choice(["None", "Penicillin", "None known"]),
                "risk_level": level,
                "assessment": assessment,
                "recommendations": recs,
                "red_flags": [],
            }
        )
    return rows


if __name__ == "__main__":
    out = Path(__file__).with_name("app_assessments_synthetic.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in make()))
    print(f"wrote {out}")
