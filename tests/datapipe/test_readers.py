"""Readers on hand-made fixtures in the real source formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthnav.contracts.prompts import (
    ASSESSMENT_INSTRUCTION,
    MCQ_INSTRUCTION,
    PatientCase,
    format_assessment_input,
)
from healthnav.datapipe.readers.app import read_app_export
from healthnav.datapipe.readers.instruction import read_instruction
from healthnav.datapipe.readers.medmcqa import read_medmcqa
from healthnav.datapipe.readers.medqa import read_medqa
from healthnav.datapipe.readers.pubmed_xml import read_pubmed
from healthnav.datapipe.readers.pubmedqa import read_pubmedqa

pytestmark = pytest.mark.unit


def _ok(items):  # type: ignore[no-untyped-def]
    return [i.record for i in items if i.record is not None]


def test_instruction_json_array_and_jsonl(examples_dir: Path) -> None:
    arr = _ok(read_instruction(examples_dir / "instruction.json", source="inst", license="CC-BY-4.0"))
    lines = list(read_instruction(examples_dir / "instruction.jsonl", source="inst", license="CC-BY-4.0"))
    assert len(arr) == 3 and arr[1].input.startswith("Adult, 500 mg")
    assert all(i.error is None for i in lines) and len(lines) == 3
    assert lines[2].record is not None and lines[2].record.id == "inst-iron-01"
    assert lines[2].record.metadata == {"topic": "nutrition"}


def test_malformed_lines_are_reported_with_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"instruction": "q", "output": "a"}\n{not json\n\n{"instruction": "q2"}\n[1, 2]\n')
    items = list(read_instruction(f, source="s", license="MIT"))
    assert [i.location for i in items] == ["bad.jsonl:1", "bad.jsonl:2", "bad.jsonl:4", "bad.jsonl:5"]
    assert items[0].record is not None
    assert "invalid JSON" in (items[1].error or "")
    assert "'output'" in (items[2].error or "")
    assert "expected a JSON object" in (items[3].error or "")


def test_medqa_options_answer_and_metadata(examples_dir: Path) -> None:
    recs = _ok(read_medqa(examples_dir / "medqa_us_4options.jsonl"))
    assert len(recs) == 4
    r = recs[1]
    assert r.instruction == MCQ_INSTRUCTION
    assert "\nA. Left anterior descending artery\n" in r.input and r.input.endswith(
        "D. Left main coronary artery"
    )
    assert r.output == "Answer: C. Right coronary artery"
    assert r.metadata["task"] == "mcq" and r.metadata["answer"] == "C"
    assert r.metadata["options"]["C"] == "Right coronary artery"


def test_medqa_answer_idx_must_name_an_option(tmp_path: Path) -> None:
    f = tmp_path / "m.jsonl"
    f.write_text('{"question": "q?", "answer": "x", "options": {"A": "x", "B": "y"}, "answer_idx": "E"}\n')
    (item,) = read_medqa(f)
    assert item.record is None and "answer_idx" in (item.error or "")


def test_medmcqa_cop_is_one_based_by_default_and_explanation_kept(examples_dir: Path) -> None:
    recs = _ok(read_medmcqa(examples_dir / "medmcqa.jsonl"))
    assert [r.metadata["answer"] for r in recs] == ["A", "C", "B"]
    assert recs[0].output.startswith("Answer: A. Ethosuximide\nExplanation: Ethosuximide is the drug")
    assert recs[2].metadata["subject"] == "Biochemistry"
    zero_based = _ok(read_medmcqa(examples_dir / "medmcqa.jsonl", cop_base=0))
    assert [r.metadata["answer"] for r in zero_based] == ["B", "D", "C"]


def test_pubmedqa_hf_jsonl_and_original_json(examples_dir: Path) -> None:
    recs = _ok(read_pubmedqa(examples_dir / "pubmedqa_pqa_labeled.jsonl"))
    assert len(recs) == 3
    assert recs[0].id == "pubmedqa-21645374"
    assert "BACKGROUND: Programmed cell death" in recs[0].input
    assert recs[2].output.startswith("Answer: no\nRegular vitamin C")
    assert recs[2].metadata == {"task": "yesno", "answer": "no", "pmid": "19130332"}
    (orig,) = _ok(read_pubmedqa(examples_dir / "pubmedqa_ori_pqal.json"))
    assert orig.id == "pubmedqa-25433161" and orig.metadata["answer"] == "maybe"


def test_pubmed_xml_structured_abstract_and_inline_markup(examples_dir: Path) -> None:
    items = list(read_pubmed(examples_dir / "pubmed_efetch.xml", task="conclusion"))
    recs = [i.record for i in items if i.record]
    assert [r.metadata["pmid"] for r in recs] == ["38000001", "38000002"]
    first = recs[0]
    assert "acute myocardial infarction." in first.input  # <i> flattened into the sentence
    assert "52 ng L-1" in first.input  # <sup> kept as text, &gt; decoded
    assert "CONCLUSIONS" not in first.input and first.output.startswith("A 0/1-h high-sensitivity")
    assert "DESIGN AND SETTING: Randomised trial" in recs[1].input
    assert "not structured" in (items[2].error or "")  # unstructured abstract has no conclusion task
    titles = [i.record for i in read_pubmed(examples_dir / "pubmed_efetch.xml", task="title") if i.record]
    assert (
        len(titles) == 3
        and titles[1].output == "Oral versus intravenous rehydration for gastroenteritis in children."
    )


def test_pubmed_truncated_xml_is_an_error_not_a_crash(tmp_path: Path, examples_dir: Path) -> None:
    f = tmp_path / "cut.xml"
    f.write_bytes((examples_dir / "pubmed_efetch.xml").read_bytes()[:3000])
    items = list(read_pubmed(f))
    assert items[-1].record is None and "malformed XML" in (items[-1].error or "")


def test_app_export_renders_the_server_prompt(examples_dir: Path) -> None:
    items = list(read_app_export(examples_dir / "app_assessments.jsonl"))
    first = items[0].record
    assert first is not None
    assert first.instruction == ASSESSMENT_INSTRUCTION
    expected = format_assessment_input(
        PatientCase(
            symptoms=(
                "Headache for three days, worse in the mornings, with mild nausea. This is Margaret, "
                "I took paracetamol 1 g twice a day with little relief."
            ),
            age=66,
            sex="female",
            duration="3 days",
            history="Hypertension",
            medications="Amlodipine 5 mg daily",
            allergies="None",
        )
    )
    assert first.input == expected
    assert first.output.startswith("Risk level: routine\nAssessment: Likely tension-type")
    assert first.metadata == {"task": "triage", "risk_level": "routine"}
    # identifier columns never enter the record but travel to de-identification
    assert "Okafor" not in first.model_dump_json()
    assert ("NAME", "Margaret Okafor") in items[0].known_identifiers
    assert items[1].record is not None and items[1].record.metadata["red_flags"] == [
        "chest pain with cardiac features"
    ]
    assert items[2].record is not None and "Age: 90 or older\n" in items[2].record.input  # 93
    errors = {i.location: i.error for i in items if i.error}
    assert errors == {
        "app_assessments.jsonl:6": "field 'symptoms' is missing or empty",
        "app_assessments.jsonl:7": "field 'age': 'forty' is not a number",
    }


def test_app_export_csv_with_custom_mapping(tmp_path: Path, examples_dir: Path) -> None:
    recs = _ok(read_app_export(examples_dir / "app_assessments.csv"))
    assert len(recs) == 3
    assert recs[1].output.endswith("- Call 911 immediately\n- Note the time symptoms started")
    f = tmp_path / "export.jsonl"
    f.write_text(
        '{"id": 7, "case": {"complaint": "itchy eyes"}, '
        '"triage": {"level": "Self care", "text": "Allergy."}}\n'
    )
    (rec,) = _ok(
        read_app_export(
            f,
            fields={
                "id": "id",
                "symptoms": "case.complaint",
                "risk_level": "triage.level",
                "assessment": "triage.text",
            },
        )
    )
    assert rec.input == "Symptoms: itchy eyes" and rec.metadata["risk_level"] == "self-care"


def test_registry_lists_each_reader_module_and_configs_are_checked_against_it() -> None:
    from pydantic import ValidationError

    from healthnav.datapipe.build import SourceConfig
    from healthnav.datapipe.readers import reader, reader_formats

    assert reader_formats() == ["app", "instruction", "medmcqa", "medqa", "pubmed", "pubmedqa"]
    assert reader("app").patient_data and not reader("medqa").patient_data
    assert MCQ_INSTRUCTION in reader("medmcqa").template_instructions
    with pytest.raises(ValidationError, match="unknown format 'csv'; known: app, instruction"):
        SourceConfig.model_validate({"name": "x", "format": "csv", "paths": ["a"], "license": "MIT"})
    assert SourceConfig.model_validate(
        {"name": "x", "format": "app", "paths": ["a"], "license": "MIT"}
    ).deid_enabled
