"""PubMed efetch XML (``format: pubmed``), per ``task``: ``conclusion`` (abstract without its
conclusions → the conclusions) or ``title`` (abstract → title). Articles stream via iterparse."""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from healthnav.contracts.records import TrainingRecord
from healthnav.datapipe.readers.common import Reader, ReadItem, RecordError, make_record

CONCLUSION_INSTRUCTION = "Given the background, methods and results of this study, state its conclusions."
TITLE_INSTRUCTION = "Write a concise title for this medical research abstract."


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
        return make_record(
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
        return make_record(
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


READER = Reader("pubmed", read_pubmed, template_instructions=(CONCLUSION_INSTRUCTION, TITLE_INSTRUCTION))
