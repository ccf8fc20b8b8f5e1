"""The app's assessment exports (JSONL/CSV): a configurable field mapping onto
:class:`~healthnav.contracts.prompts.PatientCase`; the prompt is exactly the one the server
renders (:func:`~healthnav.contracts.prompts.format_assessment_input`,
:data:`~healthnav.contracts.prompts.ASSESSMENT_INSTRUCTION`) and the answer is
:func:`~healthnav.contracts.prompts.format_assessment_output`. Identifier columns (name, phone,
…) are never copied into the record; their values are handed to de-identification to be
scrubbed from free text. Patient data: de-identified by default."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from healthnav.contracts.prompts import (
    ASSESSMENT_INSTRUCTION,
    RISK_LEVELS,
    PatientCase,
    format_assessment_input,
    format_assessment_output,
)
from healthnav.contracts.records import TrainingRecord
from healthnav.datapipe.deid import kind_for_field
from healthnav.datapipe.readers.common import (
    Reader,
    ReadItem,
    RecordError,
    iter_json_objects,
    make_record,
    open_text,
)

DEFAULT_APP_FIELDS: dict[str, str] = {
    "id": "assessment_id",
    "symptoms": "symptoms",
    "age": "age",
    "sex": "sex",
    "duration": "duration",
    "history": "medical_history",
    "medications": "medications",
    "allergies": "allergies",
    "risk_level": "risk_level",
    "assessment": "assessment",
    "recommendations": "recommendations",
    "red_flags": "red_flags",
}
DEFAULT_APP_IDENTIFIER_FIELDS: tuple[str, ...] = (
    "patient_name",
    "first_name",
    "last_name",
    "email",
    "phone",
    "date_of_birth",
    "dob",
    "address",
    "city",
    "zip",
    "mrn",
    "user_id",
)


def _get_path(obj: Mapping[str, Any], dotted: str) -> Any:
    if "." not in dotted:  # the common case, a top-level column
        return obj.get(dotted) if isinstance(obj, Mapping) else None
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
            if isinstance(parsed, list):
                return [str(v).strip() for v in parsed if str(v).strip()]
        except json.JSONDecodeError:
            pass
    sep = "\n" if "\n" in text else ";" if ";" in text else "|" if "|" in text else None
    return [p.strip(" -•\t") for p in (text.split(sep) if sep else [text]) if p.strip(" -•\t")]


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def app_row_to_record(
    row: Mapping[str, Any],
    *,
    fields: Mapping[str, str],
    source: str,
    license: str,
    index: int,
) -> TrainingRecord:
    """One exported assessment → the record the server would have prompted and answered."""
    get = lambda name: _get_path(row, fields[name]) if name in fields else None  # noqa: E731
    symptoms = _opt_str(get("symptoms"))
    if not symptoms:
        raise RecordError(f"field {fields.get('symptoms', 'symptoms')!r} is missing or empty")
    age_raw = get("age")
    age: int | None = None
    age_capped = False
    if age_raw not in (None, ""):
        try:
            age = int(float(str(age_raw)))
        except ValueError as exc:
            raise RecordError(f"field {fields['age']!r}: {age_raw!r} is not a number") from exc
        if not 0 <= age <= 130:
            raise RecordError(f"field {fields['age']!r}: {age} is out of range")
        if age > 89:  # HIPAA Safe Harbor: ages over 89 are aggregated into "90 or older"
            age, age_capped = 90, True
    risk = str(get("risk_level") or "").strip().lower().replace("_", "-").replace(" ", "-")
    if risk not in RISK_LEVELS:
        raise RecordError(
            f"field {fields.get('risk_level', 'risk_level')!r}: {risk!r} is not one of {RISK_LEVELS}"
        )
    assessment = _opt_str(get("assessment"))
    if not assessment:
        raise RecordError(f"field {fields.get('assessment', 'assessment')!r} is missing or empty")
    case = PatientCase(
        symptoms=symptoms,
        age=age,
        sex=_opt_str(get("sex")),
        duration=_opt_str(get("duration")),
        history=_opt_str(get("history")),
        medications=_opt_str(get("medications")),
        allergies=_opt_str(get("allergies")),
    )
    meta: dict[str, Any] = {"task": "triage", "risk_level": risk}
    flags = _as_list(get("red_flags"))
    if flags:
        meta["red_flags"] = flags
    if age_capped:
        meta["age_90_or_older"] = True
    raw_id = get("id")
    return make_record(
        id=f"{source}-{raw_id if raw_id not in (None, '') else index}",
        source=source,
        license=license,
        instruction=ASSESSMENT_INSTRUCTION,
        input=format_assessment_input(case),
        output=format_assessment_output(risk, assessment, _as_list(get("recommendations"))),
        metadata=meta,
    )


def read_app_export(
    path: str | Path,
    *,
    source: str = "app",
    license: str = "proprietary-internal",
    fields: Mapping[str, str] | None = None,
    identifier_fields: tuple[str, ...] | list[str] = DEFAULT_APP_IDENTIFIER_FIELDS,
) -> Iterator[ReadItem]:
    """The app's assessment export, JSONL or CSV (chosen by extension), with a field mapping.

    ``fields`` maps PatientCase/answer names onto export columns (dotted paths for nested JSON).
    Values of ``identifier_fields`` are never put in the record; they are passed on as
    ``known_identifiers`` so de-identification removes them wherever the patient typed them.
    """
    mapping = {**DEFAULT_APP_FIELDS, **(fields or {})}
    p = Path(path)
    is_csv = ".csv" in p.suffixes
    rows: Iterator[tuple[str, Any]] = _iter_csv(p) if is_csv else iter_json_objects(p)
    for index, (loc, row) in enumerate(rows):
        if isinstance(row, Exception):
            yield ReadItem(loc, error=str(row))
            continue
        if not isinstance(row, dict):
            yield ReadItem(loc, error=f"expected a JSON object, got {type(row).__name__}")
            continue
        known = tuple(
            (kind_for_field(f), str(v).strip())
            for f in identifier_fields
            if (v := _get_path(row, f)) not in (None, "") and str(v).strip()
        )
        try:
            record = app_row_to_record(row, fields=mapping, source=source, license=license, index=index)
            yield ReadItem(loc, record=record, known_identifiers=known)
        except RecordError as exc:
            yield ReadItem(loc, error=str(exc))


def _iter_csv(path: Path) -> Iterator[tuple[str, Any]]:
    with open_text(path) as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            yield f"{path.name}:1", RecordError("CSV has no header row")
            return
        for row in reader:
            loc = f"{path.name}:{reader.line_num}"
            if None in row:
                yield loc, RecordError(f"{len(row[None])} more values than header columns")
                continue
            yield loc, {k: v for k, v in row.items() if k is not None}


READER = Reader("app", read_app_export, template_instructions=(ASSESSMENT_INSTRUCTION,), patient_data=True)
