"""Source readers: each turns one public or in-house format into :class:`TrainingRecord` items.

Readers stream (one line or one XML article at a time) and never raise on a bad line: they
yield a :class:`ReadItem` carrying the error and its ``file:line`` so the build can count it
against its error budget and report it. Conversion choices, one place to read them:

* **instruction** (the roadmap's format, JSON array or JSONL): taken as is.
* **MedQA / MedMCQA** (multiple choice): ``instruction`` is :data:`MCQ_INSTRUCTION`, ``input``
  is the question followed by lettered options, ``output`` is ``"Answer: C. <text>"`` plus the
  explanation when the source has one. ``metadata`` holds ``task="mcq"``, ``options`` and
  ``answer`` (the letter) so the evaluator can score by log-likelihood over options.
* **PubMedQA** (``pqa_labeled``): ``input`` is the question and the labelled abstract context,
  ``output`` is ``"Answer: yes|no|maybe"`` then the long answer; ``metadata.task="yesno"``.
* **PubMed efetch XML**: per ``task``: ``conclusion`` (abstract without its conclusions →
  the conclusions) or ``title`` (abstract → title).
* **app assessment exports** (JSONL/CSV): a configurable field mapping onto
  :class:`~healthnav.datapipe.prompts.PatientCase`; the prompt is exactly the one the server
  renders (:func:`format_assessment_input`, :data:`ASSESSMENT_INSTRUCTION`) and the answer is
  :func:`format_assessment_output`. Identifier columns (name, phone, …) are never copied into
  the record; their values are handed to de-identification to be scrubbed from free text.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from healthnav.datapipe.deid import kind_for_field
from healthnav.datapipe.prompts import (
    ASSESSMENT_INSTRUCTION,
    RISK_LEVELS,
    PatientCase,
    format_assessment_input,
    format_assessment_output,
)
from healthnav.datapipe.records import TrainingRecord

MCQ_INSTRUCTION = (
    "Answer the following multiple-choice medical question. Give the letter and text of the "
    "correct option, then explain."
)
YESNO_INSTRUCTION = (
    "Answer the research question using the abstract context. Answer yes, no or maybe, then explain."
)
CONCLUSION_INSTRUCTION = "Given the background, methods and results of this study, state its conclusions."
TITLE_INSTRUCTION = "Write a concise title for this medical research abstract."

#: Instructions that are templates rather than content: dedup and decontamination ignore them,
#: otherwise every record of a source would look alike.
TEMPLATE_INSTRUCTIONS: frozenset[str] = frozenset(
    {MCQ_INSTRUCTION, YESNO_INSTRUCTION, CONCLUSION_INSTRUCTION, TITLE_INSTRUCTION, ASSESSMENT_INSTRUCTION}
)

LETTERS = "ABCDEFGHIJ"


class RecordError(ValueError):
    """One source record cannot be converted; the message says which field and why."""


@dataclass
class ReadItem:
    """A converted record or the reason it could not be converted, with where it came from."""

    location: str
    record: TrainingRecord | None = None
    error: str | None = None
    known_identifiers: tuple[tuple[str, str], ...] = ()  # (placeholder type, value)
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- file helpers


def open_text(path: str | Path) -> IO[str]:
    """Open a text file, transparently gunzipping ``*.gz``."""
    p = Path(path)
    if p.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8")
    return open(p, encoding="utf-8", newline="")


def iter_json_objects(path: str | Path) -> Iterator[tuple[str, Any]]:
    """(location, object-or-exception) for JSONL, a JSON array, or a JSON object keyed by id.

    JSONL streams line by line. A JSON array/object document is parsed whole (the formats that
    ship that way, PubMedQA's ``ori_pqal.json`` and small instruction files, are small).
    """
    p = Path(path)
    name = p.name
    with open_text(p) as fh:
        first = ""
        while True:
            ch = fh.read(1)
            if not ch or not ch.isspace():
                first = ch
                break
        if first in ("[", "{") and not _looks_like_jsonl(p):
            try:
                doc = json.loads(first + fh.read())
            except json.JSONDecodeError as exc:
                yield f"{name}:{exc.lineno}", RecordError(f"invalid JSON document: {exc.msg}")
                return
            if isinstance(doc, list):
                for i, obj in enumerate(doc):
                    yield f"{name}[{i}]", obj
            elif isinstance(doc, dict):
                for key, obj in doc.items():
                    if isinstance(obj, dict):
                        obj = {"_key": key, **obj}
                    yield f"{name}[{key}]", obj
            return
        lineno = 1
        line = first + fh.readline()
        while line:
            if line.strip():
                try:
                    yield f"{name}:{lineno}", json.loads(line)
                except json.JSONDecodeError as exc:
                    yield f"{name}:{lineno}", RecordError(f"invalid JSON: {exc.msg} at column {exc.colno}")
            lineno += 1
            line = fh.readline()


def _looks_like_jsonl(path: Path) -> bool:
    return ".jsonl" in path.suffixes or ".ndjson" in path.suffixes


def _require_str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RecordError(f"field {key!r} is missing or empty")
    return value.strip()


def _make(**kwargs: Any) -> TrainingRecord:
    try:
        return TrainingRecord(**kwargs)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise RecordError(f"field {loc!r}: {first['msg']}") from exc


def _convert_all(
    path: str | Path,
    convert: Callable[[Any, int], TrainingRecord],
    *,
    objects: Iterator[tuple[str, Any]] | None = None,
) -> Iterator[ReadItem]:
    for index, (loc, obj) in enumerate(objects if objects is not None else iter_json_objects(path)):
        if isinstance(obj, Exception):
            yield ReadItem(loc, error=str(obj))
            continue
        if not isinstance(obj, dict):
            yield ReadItem(loc, error=f"expected a JSON object, got {type(obj).__name__}")
            continue
        try:
            yield ReadItem(loc, record=convert(obj, index))
        except RecordError as exc:
            yield ReadItem(loc, error=str(exc))


# --------------------------------------------------------------------------- instruction format


def read_instruction(path: str | Path, *, source: str, license: str) -> Iterator[ReadItem]:
    """The roadmap's ``{"instruction", "input", "output"}`` records (JSON array or JSONL)."""
    stem = Path(path).name

    def convert(obj: dict[str, Any], index: int) -> TrainingRecord:
        rid = obj.get("id")
        return _make(
            id=f"{source}-{rid}" if rid is not None else f"{source}-{stem}-{index}",
            source=source,
            license=str(obj.get("license") or license),
            instruction=_require_str(obj, "instruction"),
            input=str(obj.get("input") or "").strip(),
            output=_require_str(obj, "output"),
            metadata=dict(obj.get("metadata") or {}),
        )

    return _convert_all(path, convert)


# --------------------------------------------------------------------------- multiple choice


def format_mcq_input(question: str, options: Mapping[str, str]) -> str:
    lines = [question.strip(), ""]
    lines += [f"{letter}. {text.strip()}" for letter, text in options.items()]
    return "\n".join(lines)


def format_mcq_output(letter: str, text: str, explanation: str = "") -> str:
    out = f"Answer: {letter}. {text.strip()}"
    if explanation.strip():
        out += f"\nExplanation: {explanation.strip()}"
    return out


def read_medqa(path: str | Path, *, source: str = "medqa", license: str = "MIT") -> Iterator[ReadItem]:
    """MedQA (USMLE) JSONL: ``question``, ``options{A..}``, ``answer``, ``answer_idx``, ``meta_info``."""
    stem = Path(path).stem

    def convert(obj: dict[str, Any], index: int) -> TrainingRecord:
        question = _require_str(obj, "question")
        options = obj.get("options")
        if not isinstance(options, dict) or len(options) < 2:
            raise RecordError("field 'options' must be an object with at least two lettered options")
        options = {str(k).strip().upper(): str(v) for k, v in sorted(options.items())}
        letter = str(obj.get("answer_idx") or "").strip().upper()
        if letter not in options:
            raise RecordError(f"field 'answer_idx' {letter!r} is not one of the options {sorted(options)}")
        answer_text = options[letter]
        if obj.get("answer") and str(obj["answer"]).strip() != answer_text.strip():
            raise RecordError(f"field 'answer' does not match option {letter}")
        return _make(
            id=f"{source}-{stem}-{index}",
            source=source,
            license=license,
            instruction=MCQ_INSTRUCTION,
            input=format_mcq_input(question, options),
            output=format_mcq_output(letter, answer_text),
            metadata={
                "task": "mcq",
                "options": options,
                "answer": letter,
                "meta_info": obj.get("meta_info"),
            },
        )

    return _convert_all(path, convert)


def read_medmcqa(
    path: str | Path, *, source: str = "medmcqa", license: str = "MIT", cop_base: int = 1
) -> Iterator[ReadItem]:
    """MedMCQA JSONL: ``question``, ``opa``..``opd``, ``cop``, ``exp``, ``subject_name``.

    ``cop`` is 1-based in the original release files and 0-based in the Hugging Face copy; say
    which with ``cop_base``. Records without a correct option (the public test split) are errors.
    """
    if cop_base not in (0, 1):
        raise ValueError("cop_base must be 0 or 1")

    def convert(obj: dict[str, Any], index: int) -> TrainingRecord:
        question = _require_str(obj, "question")
        options = {}
        for letter, key in zip("ABCD", ("opa", "opb", "opc", "opd"), strict=True):
            options[letter] = _require_str(obj, key)
        cop = obj.get("cop")
        if not isinstance(cop, int) or isinstance(cop, bool) or not cop_base <= cop < cop_base + 4:
            raise RecordError(f"field 'cop' {cop!r} is not a correct-option index {cop_base}..{cop_base + 3}")
        letter = "ABCD"[cop - cop_base]
        rid = obj.get("id") or f"{Path(path).stem}-{index}"
        return _make(
            id=f"{source}-{rid}",
            source=source,
            license=license,
            instruction=MCQ_INSTRUCTION,
            input=format_mcq_input(question, options),
            output=format_mcq_output(letter, options[letter], str(obj.get("exp") or "")),
            metadata={
                "task": "mcq",
                "options": options,
                "answer": letter,
                "subject": obj.get("subject_name"),
                "topic": obj.get("topic_name"),
            },
        )

    return _convert_all(path, convert)


# --------------------------------------------------------------------------- PubMedQA


def read_pubmedqa(path: str | Path, *, source: str = "pubmedqa", license: str = "MIT") -> Iterator[ReadItem]:
    """PubMedQA ``pqa_labeled``: the Hugging Face JSONL (``question``, ``context{contexts,labels}``,
    ``long_answer``, ``final_decision``) or the original ``ori_pqal.json`` keyed by PMID."""

    def convert(obj: dict[str, Any], index: int) -> TrainingRecord:
        if "QUESTION" in obj:  # original release: upper-case keys, the PMID is the object key
            obj = {
                "pubid": obj.get("_key"),
                "question": obj.get("QUESTION"),
                "context": {"contexts": obj.get("CONTEXTS"), "labels": obj.get("LABELS")},
                "long_answer": obj.get("LONG_ANSWER"),
                "final_decision": obj.get("final_decision"),
            }
        question = _require_str(obj, "question")
        ctx = obj.get("context") or {}
        contexts = ctx.get("contexts") if isinstance(ctx, dict) else None
        if not isinstance(contexts, list) or not contexts:
            raise RecordError("field 'context.contexts' must be a non-empty list")
        labels = ctx.get("labels") or [None] * len(contexts)
        decision = str(obj.get("final_decision") or "").strip().lower()
        if decision not in ("yes", "no", "maybe"):
            raise RecordError(f"field 'final_decision' {decision!r} is not yes/no/maybe")
        long_answer = _require_str(obj, "long_answer")
        parts = [
            f"{label}: {text.strip()}" if label else text.strip()
            for text, label in zip(contexts, list(labels) + [None] * len(contexts), strict=False)
        ]
        pubid = obj.get("pubid") or index
        return _make(
            id=f"{source}-{pubid}",
            source=source,
            license=license,
            instruction=YESNO_INSTRUCTION,
            input=f"Question: {question}\n\nContext:\n" + "\n".join(parts),
            output=f"Answer: {decision}\n{long_answer}",
            metadata={"task": "yesno", "answer": decision, "pmid": str(pubid)},
        )

    return _convert_all(path, convert)


# --------------------------------------------------------------------------- PubMed efetch XML


@dataclass(frozen=True)
class PubmedArticle:
    pmid: str
    title: str
    sections: tuple[tuple[str, str, str], ...]  # (label, nlm_category, text)
    year: str | None = None


def _text(elem: ET.Element | None) -> str:
    """All text inside an element, inline markup (<i>, <sup>, <b>…) flattened, spaces normalised."""
    if elem is None:
        return ""
    return " ".join("".join(elem.itertext()).split())


def parse_pubmed_article(elem: ET.Element) -> PubmedArticle:
    """One ``PubmedArticle`` element → :class:`PubmedArticle`."""
    citation = elem.find("MedlineCitation")
    if citation is None:
        raise RecordError("no MedlineCitation")
    pmid = _text(citation.find("PMID"))
    if not pmid:
        raise RecordError("no MedlineCitation/PMID")
    article = citation.find("Article")
    if article is None:
        raise RecordError(f"PMID {pmid}: no Article")
    sections = tuple(
        (a.get("Label", ""), a.get("NlmCategory", ""), _text(a))
        for a in article.findall("Abstract/AbstractText")
        if _text(a)
    )
    year = _text(article.find("Journal/JournalIssue/PubDate/Year")) or None
    return PubmedArticle(pmid=pmid, title=_text(article.find("ArticleTitle")), sections=sections, year=year)


def iter_pubmed_xml(path: str | Path) -> Iterator[tuple[str, PubmedArticle | Exception]]:
    """Stream articles from an efetch ``PubmedArticleSet`` file (bounded memory via iterparse)."""
    name = Path(path).name
    count = 0
    fh = gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")  # noqa: SIM115
    with fh:
        try:
            for _event, elem in ET.iterparse(fh, events=("end",)):
                if elem.tag != "PubmedArticle":
                    continue
                count += 1
                try:
                    yield f"{name}#article{count}", parse_pubmed_article(elem)
                except RecordError as exc:
                    yield f"{name}#article{count}", exc
                elem.clear()
        except ET.ParseError as exc:
            yield f"{name}:{exc.position[0]}", RecordError(f"malformed XML: {exc}")


_CONCLUSION_CATEGORIES = {"CONCLUSIONS"}


def pubmed_to_record(art: PubmedArticle, *, task: str, source: str, license: str) -> TrainingRecord:
    body = [(lab, cat, txt) for lab, cat, txt in art.sections]
    if not body:
        raise RecordError(f"PMID {art.pmid}: no abstract")
    meta = {"task": task, "pmid": art.pmid, "year": art.year}
    if task == "title":
        if not art.title:
            raise RecordError(f"PMID {art.pmid}: no ArticleTitle")
        text = "\n".join(f"{lab.upper()}: {txt}" if lab else txt for lab, _, txt in body)
        return _make(
            id=f"{source}-{art.pmid}-title",
            source=source,
            license=license,
            instruction=TITLE_INSTRUCTION,
            input=text,
            output=art.title,
            metadata=meta,
        )
    if task == "conclusion":
        is_concl = [
            cat.upper() in _CONCLUSION_CATEGORIES or lab.upper().startswith("CONCLUSION")
            for lab, cat, _ in body
        ]
        if not any(is_concl) or all(is_concl):
            raise RecordError(f"PMID {art.pmid}: abstract is not structured with a CONCLUSIONS section")
        context = [
            f"{lab.upper()}: {txt}" if lab else txt
            for (lab, _, txt), c in zip(body, is_concl, strict=True)
            if not c
        ]
        conclusion = " ".join(txt for (_, _, txt), c in zip(body, is_concl, strict=True) if c)
        return _make(
            id=f"{source}-{art.pmid}-conclusion",
            source=source,
            license=license,
            instruction=CONCLUSION_INSTRUCTION,
            input=(f"Title: {art.title}\n" if art.title else "") + "\n".join(context),
            output=conclusion,
            metadata=meta,
        )
    raise ValueError(f"unknown PubMed task {task!r} (expected 'conclusion' or 'title')")


def read_pubmed(
    path: str | Path, *, source: str = "pubmed", license: str = "NLM-PubMed", task: str = "conclusion"
) -> Iterator[ReadItem]:
    if task not in ("conclusion", "title"):
        raise ValueError(f"unknown PubMed task {task!r} (expected 'conclusion' or 'title')")
    for loc, art in iter_pubmed_xml(path):
        if isinstance(art, Exception):
            yield ReadItem(loc, error=str(art))
            continue
        try:
            yield ReadItem(
                f"{loc}(PMID {art.pmid})",
                record=pubmed_to_record(art, task=task, source=source, license=license),
            )
        except RecordError as exc:
            yield ReadItem(loc, error=str(exc))


# --------------------------------------------------------------------------- app exports

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
    return _make(
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


# --------------------------------------------------------------------------- registry

READERS: dict[str, Callable[..., Iterator[ReadItem]]] = {
    "instruction": read_instruction,
    "medqa": read_medqa,
    "medmcqa": read_medmcqa,
    "pubmedqa": read_pubmedqa,
    "pubmed": read_pubmed,
    "app": read_app_export,
}
