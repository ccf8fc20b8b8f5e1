"""Find the catalogue's concepts in a patient's text.

Text is normalised first (lower case, accents removed, contractions without apostrophes, one
sentence break per sentence) so that one wording covers "can't"/"cant" (any apostrophe) and
"opresión"/"opresion"; the wordings of every language are matched on every text, so a message
that mixes languages, or that the language identifier gets wrong, is still read in full.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthnav.serving.redflags.catalogue import Catalogue, catalogue
from healthnav.serving.redflags.warm import Background

_CONTRACTION = re.compile(r"(\w)'(t|s|m|re|ve|ll|d)\b")
_SENTENCE_END = re.compile(r"[.!?;]+(?=\s|$)")
_SPACES = re.compile(r"[ \t\r\f\v]+")


def normalise(text: str) -> str:
    """Lower-case, strip accents, unify apostrophes and dashes, one ". " per sentence break."""
    text = text.lower().replace("ß", "ss").replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = _CONTRACTION.sub(r"\1\2", text)
    text = re.sub(r"['\u2013\u2014\-_]+", " ", text)
    text = re.sub(r"[\"“”«»()\[\]]", " ", text)
    text = re.sub(r"\s*\n+\s*", ". ", text)
    return _SPACES.sub(" ", text).strip()


@dataclass(frozen=True)
class ConceptMatch:
    """One wording of a concept found at ``[start, end)`` of the normalised text."""

    concept: str
    start: int
    end: int
    text: str


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence of normalised ``text``."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return [(s, e) for s, e in spans if e > s]


class Prefilter:
    """Which concepts may occur in a text, in one Hyperscan pass over all of them.

    Running ~100 concept expressions with Python's ``re`` costs milliseconds per text; Hyperscan
    (in prefilter mode: never a false negative) narrows that to the few concepts present, and
    only those run in ``re``, whose result is the one used. Compiling takes seconds, so the
    compiled database is cached under ``$HEALTHNAV_CACHE`` keyed by the patterns.
    """

    def __init__(self, cat: Catalogue) -> None:
        import hyperscan

        self._hs = hyperscan
        self._ids = list(cat.concepts)
        exprs = [
            c.pattern.pattern.replace("(?<!\\w)", "\\b").replace("(?!\\w)", "\\b").encode()
            for c in cat.concepts.values()
        ]
        base = hyperscan.HS_FLAG_PREFILTER | hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_ALLOWEMPTY
        flags = [base | hyperscan.HS_FLAG_UTF8] * len(exprs)
        ids = list(range(len(exprs)))
        key = hashlib.sha256(repr((hyperscan.__version__, platform.machine(), exprs, flags)).encode())
        path = _cache_root() / "redflags" / f"concepts-{key.hexdigest()[:24]}.hsdb"
        self._db = self._load(path)
        if self._db is None:
            self._db = hyperscan.Database()
            self._db.compile(expressions=exprs, ids=ids, flags=flags)
            self._save(path)
        self._lock = threading.Lock()

    def _load(self, path: Path) -> Any:
        try:
            db = self._hs.loadb(path.read_bytes(), self._hs.HS_MODE_BLOCK)
            db.scratch = self._hs.Scratch(db)
            db.scan(b"", match_event_handler=lambda *_: None)
            return db
        except Exception:  # missing, stale or foreign: compile again
            return None

    def _save(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_bytes(self._hs.dumpb(self._db))
            tmp.replace(path)
        except OSError:  # read-only cache: compile in each process
            pass

    def candidates(self, text: str) -> set[str] | None:
        """Concept ids that may match ``text``; None when the scan could not run (check all)."""
        found: set[int] = set()

        def on_match(i: int, start: int, end: int, flags: int, context: object) -> None:
            found.add(i)

        if not self._lock.acquire(blocking=False):  # scratch space is per database: never wait
            return None
        try:
            self._db.scan(text.encode("utf-8"), match_event_handler=on_match)
        except self._hs.error:
            return None
        finally:
            self._lock.release()
        return {self._ids[i] for i in found}


def _cache_root() -> Path:
    return Path(os.environ.get("HEALTHNAV_CACHE") or Path.home() / ".cache" / "healthnav")


def _build_prefilter() -> Prefilter | None:
    try:
        return Prefilter(catalogue())
    except ImportError:
        return None


_PREFILTER: Background[Prefilter] = Background(_build_prefilter)


def shared_prefilter(*, block: bool = False) -> Prefilter | None:
    """The bundled catalogue's prefilter, built once per process in the background; None until it
    is ready or without Hyperscan (every concept is then checked with ``re``: slower, same result)."""
    return _PREFILTER.get(block=block)


def find_concepts(text: str, cat: Catalogue, prefilter: Prefilter | None = None) -> list[ConceptMatch]:
    """Every concept wording in normalised ``text``, minus those voided by an ``unless`` wording."""
    sentences = sentence_spans(text)
    wanted = prefilter.candidates(text) if prefilter is not None else None
    out: list[ConceptMatch] = []
    for cid, compiled in cat.concepts.items():
        if wanted is not None and cid not in wanted:
            continue
        for m in compiled.pattern.finditer(text):
            if not m.group(0).strip():
                continue
            if compiled.unless is not None:
                s, e = next(((s, e) for s, e in sentences if s <= m.start() < e), (0, len(text)))
                if compiled.unless.search(text, s, e):
                    continue
            out.append(ConceptMatch(cid, m.start(), m.end(), m.group(0)))
    out.sort(key=lambda c: (c.start, -c.end))
    return out
