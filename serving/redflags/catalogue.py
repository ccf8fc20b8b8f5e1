"""The red-flag catalogue: cited emergency presentations built from concepts, loaded from data.

Clinicians review ``data/*.yaml``, not code: ``sources.yaml`` (the triage guidance),
``concepts.yaml`` (findings with their lay, clinical, UK/US and misspelled wordings per
language) and ``presentations.yaml`` (which combinations of current findings are an
emergency). This module turns them into typed, validated objects and compiles each wording
into a regular expression; a bad entry fails loading with the file and the entry named, so
a broken catalogue can never reach a serving replica silently.

Wording syntax (documented for reviewers in ``data/README.md``): words separated by spaces,
``word*`` any ending, ``(a|b c)`` alternatives (an empty alternative makes the group
optional), ``~`` up to three other words and ``~N`` up to N, ``re:`` a raw regular expression.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from healthnav.contracts.errors import ConfigurationError

DATA = Path(__file__).resolve().parent / "data"
LANGUAGES: tuple[str, ...] = ("en", "es", "de", "fr")
Language = Literal["en", "es", "de", "fr"]
CATEGORIES = (
    "cardiovascular",
    "neurological",
    "respiratory",
    "allergic",
    "trauma",
    "surgical",
    "psychiatric",
    "toxicological",
    "infection",
    "paediatric",
    "obstetric",
    "metabolic",
    "eye",
)


class CatalogueError(ConfigurationError):
    """The catalogue data is invalid; the message names the file and the entry."""


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    publisher: str = Field(min_length=2)
    title: str = Field(min_length=3)
    url: str = Field(pattern=r"^https?://")


class Concept(BaseModel):
    """A finding, with its wordings per language."""

    model_config = ConfigDict(extra="forbid")

    means: str = Field(min_length=3)
    en: list[str] = Field(min_length=1)
    es: list[str] = Field(default_factory=list)
    de: list[str] = Field(default_factory=list)
    fr: list[str] = Field(default_factory=list)
    unless: list[str] = Field(default_factory=list)
    persists: bool = False
    counts_when_historical: bool = False
    negatable_inside: bool = False  # a negation inside the matched words negates it ("face isnt drooping")

    def wordings(self, language: str) -> list[str]:
        return list(getattr(self, language))


class Presentation(BaseModel):
    """An emergency presentation: fires when every concept of any one ``when`` group is current."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]+$")
    label: str = Field(min_length=5)
    category: str
    advice: str = Field(min_length=10)
    sources: list[str] = Field(min_length=1)
    when: list[list[str]] = Field(min_length=1)
    top: bool = False
    max_age_years: float | None = Field(default=None, gt=0)

    @field_validator("category")
    @classmethod
    def _known_category(cls, value: str) -> str:
        if value not in CATEGORIES:
            raise ValueError(f"unknown category {value!r}; expected one of {', '.join(CATEGORIES)}")
        return value

    @field_validator("when")
    @classmethod
    def _non_empty_groups(cls, value: list[list[str]]) -> list[list[str]]:
        if any(not group for group in value):
            raise ValueError("every `when` group needs at least one concept")
        return value

    @property
    def concepts(self) -> set[str]:
        return {c for group in self.when for c in group}


@dataclass(frozen=True)
class CompiledConcept:
    """A concept's wordings as one regular expression (all languages), plus its voiding wordings."""

    id: str
    concept: Concept
    pattern: re.Pattern[str]
    unless: re.Pattern[str] | None


@dataclass(frozen=True)
class Catalogue:
    sources: dict[str, Source]
    concepts: dict[str, CompiledConcept]
    presentations: tuple[Presentation, ...]

    def presentation(self, presentation_id: str) -> Presentation:
        for p in self.presentations:
            if p.id == presentation_id:
                return p
        raise KeyError(presentation_id)

    def languages_of(self, presentation: Presentation) -> set[str]:
        """Languages in which at least one whole ``when`` group of ``presentation`` has wordings."""
        out = set()
        for lang in LANGUAGES:
            for group in presentation.when:
                if all(self.concepts[c].concept.wordings(lang) for c in group):
                    out.add(lang)
                    break
        return out


# --- wording compiler ------------------------------------------------------------------------

_GAP = re.compile(r"~(\d*)")
_GROUP = re.compile(r"\(([^()]*)\)")


def _compile_words(text: str) -> str:
    """Translate the reviewers' wording syntax (no ``re:``) into a regular expression."""
    # optional groups (an empty alternative) swallow the space that follows or precedes them
    text = re.sub(r"\(([^()]*)\|\)\s+", lambda m: "\x00(" + m.group(1) + ")\x01", text)
    text = re.sub(r"\s+\(([^()]*)\|\)\??$", lambda m: "\x02(" + m.group(1) + ")\x03", text)
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "~":
            m = _GAP.match(text, i)
            assert m is not None
            n = int(m.group(1) or 3)
            out.append(f"(?:[^\\s,;:]+\\s+){{0,{n}}}?")  # a gap never crosses a comma
            i = m.end()
            while i < len(text) and text[i] == " ":  # the gap already ends in white space
                i += 1
            continue
        if ch == " ":
            j = i
            while j < len(text) and text[j] == " ":
                j += 1
            if j < len(text) and text[j] == "?":  # "heart ?beat": the space is optional
                out.append(r"\s*")
                j += 1
            else:
                out.append(r"\s+")
            i = j
            continue
        if ch in ("(", "\x00"):
            out.append("(?:")
        elif ch == "\x01":
            out.append(r"\s+)?")
        elif ch == "\x02":
            out.append(r"(?:\s+")
        elif ch == "\x03":
            out.append(")?")
        elif ch == "*":
            out.append(r"\w*")
        elif ch in ")|?":
            out.append(ch)
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


_TRAILING_OPTIONAL = re.compile(r"(?:\s+~\d*)?\s+\([^()]*\)\?$|\s+~\d*$")


def compile_wording(wording: str) -> str:
    """One wording as a regular expression bounded by non-word characters.

    A trailing optional group or gap only widens the evidence span, never what is detected, and
    it cannot end at a word boundary, so it is dropped. ``words re:REGEX`` mixes both syntaxes.
    """
    wording = wording.strip()
    if wording.startswith("re:"):
        return rf"(?<!\w)(?:{wording[3:]})(?!\w)"
    raw = ""
    if " re:" in wording:
        wording, raw = wording.split(" re:", 1)
    while not raw:
        trimmed = _TRAILING_OPTIONAL.sub("", wording)
        if trimmed == wording:
            break
        wording = trimmed
    body = _compile_words(wording.strip())
    if raw:  # a gap already ends in white space
        body += raw if re.search(r"~\d*$", wording.strip()) else r"\s+" + raw
    return rf"(?<!\w)(?:{body})(?!\w)"


def _compile_all(wordings: list[str], where: str) -> re.Pattern[str] | None:
    if not wordings:
        return None
    parts = []
    for w in wordings:
        try:
            rx = compile_wording(w)
            re.compile(rx)
        except (re.error, AssertionError) as exc:
            raise CatalogueError(f"{where}: wording {w!r} does not compile: {exc}") from exc
        parts.append(rx)
    return re.compile("|".join(parts))


# --- loading ---------------------------------------------------------------------------------


def _read(name: str, data_dir: Path) -> object:
    path = data_dir / name
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogueError(f"{path}: cannot be read: {exc}") from exc


def _validated(model: type[BaseModel], raw: object, where: str) -> BaseModel:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise CatalogueError(f"{where}: field {loc or '(entry)'}: {first['msg']}") from exc


def load_catalogue(data_dir: Path = DATA) -> Catalogue:
    """Load and validate the catalogue; raises :class:`CatalogueError` naming the bad entry."""
    raw_sources = _read("sources.yaml", data_dir)
    raw_concepts = _read("concepts.yaml", data_dir)
    raw_presentations = _read("presentations.yaml", data_dir)
    if not isinstance(raw_sources, dict) or not isinstance(raw_concepts, dict):
        raise CatalogueError("sources.yaml and concepts.yaml must be mappings of id to entry")
    if not isinstance(raw_presentations, list):
        raise CatalogueError("presentations.yaml must be a list of presentations")
    sources = {k: _validated(Source, v, f"sources.yaml: {k}") for k, v in raw_sources.items()}
    concepts: dict[str, CompiledConcept] = {}
    for cid, raw in raw_concepts.items():
        where = f"concepts.yaml: {cid}"
        concept = _validated(Concept, raw, where)
        assert isinstance(concept, Concept)
        wordings = [w for lang in LANGUAGES for w in concept.wordings(lang)]
        pattern = _compile_all(wordings, where)
        assert pattern is not None
        concepts[cid] = CompiledConcept(cid, concept, pattern, _compile_all(concept.unless, where))
    presentations: list[Presentation] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_presentations):
        name = raw.get("id", f"#{i}") if isinstance(raw, dict) else f"#{i}"
        where = f"presentations.yaml: {name}"
        p = _validated(Presentation, raw, where)
        assert isinstance(p, Presentation)
        if p.id in seen:
            raise CatalogueError(f"{where}: duplicate id")
        seen.add(p.id)
        unknown_sources = [s for s in p.sources if s not in sources]
        if unknown_sources:
            raise CatalogueError(f"{where}: field sources: unknown source ids {unknown_sources}")
        unknown_concepts = sorted(p.concepts - concepts.keys())
        if unknown_concepts:
            raise CatalogueError(f"{where}: field when: unknown concepts {unknown_concepts}")
        presentations.append(p)
    catalogue = Catalogue(
        {k: v for k, v in sources.items() if isinstance(v, Source)}, concepts, tuple(presentations)
    )
    for p in catalogue.presentations:
        if p.top and catalogue.languages_of(p) != set(LANGUAGES):
            missing = set(LANGUAGES) - catalogue.languages_of(p)
            raise CatalogueError(f"presentations.yaml: {p.id}: top presentation lacks wordings in {missing}")
    return catalogue


@functools.cache
def catalogue() -> Catalogue:
    """The bundled catalogue, loaded once per process."""
    return load_catalogue()
