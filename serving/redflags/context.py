"""Is a finding current? Negation, resolution, history, hypothetical and family history.

The cue matching and the scope (clauses cut at sentence ends and at termination cues) are
negspacy's implementation of NegEx (Chapman et al.), run once per ConText category with that
category's termset: negspacy's own clinical English and Spanish negation termsets, plus the
lay-language, German and French cues and the other categories listed in ``data/context.yaml``.

Two safety rules are added on top of negspacy's scope, because for a triage layer a missed
emergency is worse than a false alarm:

* a preceding negation reaches at most ``window`` tokens ("no fever ... crushing chest pain"),
  and ``and``/commas end a negation's clause ("no fever, crushing chest pain");
* a category whose ``cancel`` cue occurs in the same clause does not apply ("had a seizure
  ten minutes ago" is not history; "bleeding stopped but now it started again" is not resolved).

spaCy runs as a blank tokenizer plus sentencizer: no statistical model, nothing downloaded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from healthnav.serving.redflags.catalogue import DATA, LANGUAGES, CatalogueError

Assertion = Literal["present", "negated", "resolved", "historical", "hypothetical", "family", "educational"]
CATEGORY_ORDER: tuple[str, ...] = (
    "educational",
    "hypothetical",
    "family",
    "historical",
    "negated",
    "resolved",
)


class CategorySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: int = Field(ge=0, description="Tokens a preceding cue reaches; 0 = the whole clause.")
    following_window: int = Field(ge=0)
    sentence_scope: bool = False
    message_scope: bool = False
    termination: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list, description="Library cues not used (lay sense differs).")
    preceding: dict[str, list[str]] = Field(default_factory=dict)
    following: dict[str, list[str]] = Field(default_factory=dict)
    pseudo: dict[str, list[str]] = Field(default_factory=dict)
    cancel: dict[str, list[str]] = Field(default_factory=dict)


class ContextSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    termination: dict[str, list[str]]
    categories: dict[str, CategorySpec]


def load_context_spec(path: Path = DATA / "context.yaml") -> ContextSpec:
    try:
        spec = ContextSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except Exception as exc:
        raise CatalogueError(f"{path}: {exc}") from exc
    missing = set(CATEGORY_ORDER) - spec.categories.keys()
    if missing:
        raise CatalogueError(f"{path}: categories missing: {sorted(missing)}")
    return spec


def _all(by_language: dict[str, list[str]]) -> list[str]:
    return sorted({cue for lang in LANGUAGES for cue in by_language.get(lang, [])})


@dataclass(frozen=True)
class _Category:
    name: str
    spec: CategorySpec
    negex: Any  # negspacy.negation.Negex
    cancel: Any  # spacy PhraseMatcher


class ContextEngine:
    """Assertion of each finding span, from one spaCy pass and one NegEx matcher per category."""

    def __init__(self, spec: ContextSpec) -> None:
        import spacy
        from negspacy.negation import Negex
        from negspacy.termsets import termset
        from spacy.matcher import PhraseMatcher

        self.nlp = spacy.blank("en")
        self.nlp.add_pipe("sentencizer")
        base_termination = _all(spec.termination)
        library_negation = [termset("en_clinical").get_patterns(), termset("es_clinical").get_patterns()]
        self.categories: list[_Category] = []
        for name in CATEGORY_ORDER:
            cat = spec.categories[name]
            terms = {
                "pseudo_negations": _all(cat.pseudo),
                "preceding_negations": _all(cat.preceding),
                "following_negations": _all(cat.following),
                "termination": sorted({*base_termination, *cat.termination}),
            }
            if name == "negated":  # the library's own termsets, extended with lay and de/fr cues
                for lib in library_negation:
                    for key in terms:
                        terms[key] = sorted({*terms[key], *lib[key]})
            terms = {k: [t for t in v if t.strip() and t not in cat.exclude] for k, v in terms.items()}
            negex = Negex(self.nlp, f"context_{name}", terms, extension_name=f"hn_{name}")
            cancel = PhraseMatcher(self.nlp.vocab, attr="LOWER")
            cues = _all(cat.cancel)
            if cues:
                cancel.add("cancel", list(self.nlp.tokenizer.pipe(cues)))
            self.categories.append(_Category(name, cat, negex, cancel))

    def assertions(
        self, text: str, spans: list[tuple[int, int]], negatable_inside: list[bool] | None = None
    ) -> list[Assertion]:
        """The assertion of each character span of normalised ``text`` (same order as ``spans``).

        ``negatable_inside[i]``: a negation cue inside span ``i`` negates it (for findings whose
        wordings carry no negation of their own: "face isnt drooping", "ribs not sucking in").
        """
        if not spans:
            return []
        inside = negatable_inside or [False] * len(spans)
        doc = self.nlp(text)
        token_spans = []
        for start, end in spans:
            span = doc.char_span(start, end, alignment_mode="expand")
            token_spans.append((span.start, span.end) if span is not None else None)
        result: list[Assertion] = ["present"] * len(spans)
        for cat in self.categories:
            preceding, following, terminating = cat.negex.process_negations(doc)
            boundaries = cat.negex.termination_boundaries(doc, terminating)
            cancels = [(s, e) for _, s, e in cat.cancel(doc)] if len(cat.cancel) else []
            if cat.spec.message_scope:
                if (preceding or following) and not cancels:
                    result = [cat.name if r == "present" else r for r in result]  # type: ignore[misc]
                continue
            for i, ts in enumerate(token_spans):
                if ts is None or result[i] != "present":
                    continue
                if _applies(ts, boundaries, preceding, following, cancels, cat.spec) or (
                    cat.name == "negated" and inside[i] and _cue_inside(ts, preceding, following)
                ):
                    result[i] = cat.name  # type: ignore[assignment]
        return result


def _cue_inside(
    span: tuple[int, int], preceding: list[tuple[int, int, int]], following: list[tuple[int, int, int]]
) -> bool:
    return any(span[0] < cs < span[1] for _, cs, _ in (*preceding, *following))


def _applies(
    span: tuple[int, int],
    boundaries: list[tuple[int, int]],
    preceding: list[tuple[int, int, int]],
    following: list[tuple[int, int, int]],
    cancels: list[tuple[int, int]],
    spec: CategorySpec,
) -> bool:
    start, end = span
    lo, hi = next(((b0, b1) for b0, b1 in boundaries if b0 <= start < b1), (0, end))
    lo_end, hi_end = next(((b0, b1) for b0, b1 in boundaries if b0 <= end - 1 < b1), (lo, hi))
    if any(lo <= cs < hi or lo_end <= cs < hi_end for cs, _ in cancels):
        return False
    for _, cs, ce in preceding:
        if lo <= cs and ce <= start and (spec.window == 0 or start - ce < spec.window):
            return True
    if spec.following_window:
        for _, cs, _ in following:
            if end <= cs < hi_end and cs - end < spec.following_window:
                return True
    return False


@functools.cache
def shared_context() -> ContextEngine:
    """The bundled context engine, built once per process (spaCy and negspacy load lazily)."""
    return ContextEngine(load_context_spec())
