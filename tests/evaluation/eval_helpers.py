"""Builders for evaluation tests: records of every task kind, a dataset in datapipe's format, LoRA adapters.

Everything is built on the CPU in seconds and nothing is downloaded. The "trained" adapter is
fitted with a short plain PyTorch loop on the test records themselves, which is exactly what
makes it measurably better than its base (the property the gates must see); the "broken"
adapter has its LoRA weights replaced by large noise, a stand-in for a diverged run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from healthnav.contracts.prompts import (
    ASSESSMENT_INSTRUCTION,
    format_assessment_output,
    format_mcq_input,
    format_mcq_output,
    render_example,
)
from healthnav.contracts.records import SCHEMA_VERSION, TrainingRecord

MCQ_INSTRUCTION = "Answer the multiple-choice medical question."


def make_records() -> list[TrainingRecord]:
    """A test split covering every task kind: open-ended, multiple choice, yes/no, triage."""
    recs: list[TrainingRecord] = []
    qa = [
        ("What is hypertension?", "Hypertension is persistently high blood pressure."),
        ("What causes a common cold?", "A common cold is caused by a viral infection."),
        ("How is asthma treated?", "Asthma is treated with inhaled bronchodilators."),
    ]
    for i, (q, a) in enumerate(qa):
        recs.append(
            TrainingRecord(id=f"qa-{i}", source="instruction", license="CC-BY-4.0", instruction=q, output=a)
        )
    mcqs = [
        ("Which organ pumps blood?", {"A": "liver", "B": "heart", "C": "kidney", "D": "lung"}, "B"),
        (
            "Which vitamin prevents scurvy?",
            {"A": "vitamin C", "B": "vitamin D", "C": "vitamin K", "D": "iron"},
            "A",
        ),
    ]
    for i, (q, opts, ans) in enumerate(mcqs):
        recs.append(
            TrainingRecord(
                id=f"medqa-{i}",
                source="medqa",
                license="MIT",
                instruction=MCQ_INSTRUCTION,
                input=format_mcq_input(q, opts),
                output=format_mcq_output(ans, opts[ans]),
                metadata={"task": "mcq", "options": opts, "answer": ans},
            )
        )
    recs.append(
        TrainingRecord(
            id="pubmedqa-0",
            source="pubmedqa",
            license="MIT",
            instruction="Answer the research question with yes, no or maybe.",
            input="Does smoking increase lung cancer risk?",
            output="Answer: yes\nSmoking increases the risk.",
            metadata={"task": "yesno", "answer": "yes"},
        )
    )
    triage = [
        (
            "Age: 58\nSymptoms: crushing chest pain radiating to the left arm, sweating",
            "emergency",
            "Possible heart attack.",
            ["Call 911 now."],
        ),
        (
            "Age: 25\nSymptoms: mild sore throat for two days",
            "self-care",
            "Likely a viral sore throat.",
            ["Rest and drink fluids."],
        ),
    ]
    for i, (inp, risk, assess, recs_) in enumerate(triage):
        recs.append(
            TrainingRecord(
                id=f"app-{i}",
                source="app",
                license="proprietary-internal",
                instruction=ASSESSMENT_INSTRUCTION,
                input=inp,
                output=format_assessment_output(risk, assess, recs_),
                metadata={"task": "triage", "risk_level": risk},
            )
        )
    return recs


def write_dataset(root: Path, splits: dict[str, Sequence[TrainingRecord]]) -> Path:
    """A dataset directory exactly as datapipe lays it out: shards, then manifest.json last."""
    root.mkdir(parents=True, exist_ok=True)
    shards = []
    for split, records in splits.items():
        data = "".join(r.model_dump_json() + "\n" for r in records).encode()
        name = f"{split}-00000.jsonl"
        (root / name).write_bytes(data)
        shards.append(
            {
                "path": name,
                "split": split,
                "records": len(records),
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    manifest = {"schema_version": SCHEMA_VERSION, "name": "evaltest", "version": "1", "shards": shards}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def train_lora(
    model_dir: Path, records: Sequence[TrainingRecord], out: Path, *, steps: int = 60, broken: bool = False
) -> Path:
    """Fit a LoRA adapter with a plain loop (loss on the completion only, as the trainer does)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = get_peft_model(model, config)
    rows = []
    for r in records:
        prompt, completion = render_example(r)
        p_ids = tok(prompt).input_ids
        ids = [*tok(prompt + completion).input_ids, tok.eos_token_id]
        rows.append((ids, [-100] * len(p_ids) + ids[len(p_ids) :]))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [tok.pad_token_id] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(0 if broken else steps):
        opt.zero_grad()
        model(input_ids=input_ids, attention_mask=mask, labels=labels).loss.backward()
        opt.step()
    if broken:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn_like(p) * 3.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
