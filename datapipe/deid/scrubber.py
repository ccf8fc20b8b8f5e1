"""The scrubber: find identifiers (rules, model, context), replace them with typed placeholders.

Each identifier becomes a typed placeholder (``[NAME]``, ``[DATE]``, ``[PHONE]``…) so the model
still learns that a name or a date was there; an age over 89 becomes Safe Harbor's own
aggregate, "90 or older". Three detectors feed one list of spans and the union is removed
(over-inclusive by design, as Philter and Presidio are used on clinical text):

1. the rules (:mod:`.rules`, prefiltered by :mod:`.prefilter`): structured identifiers, titles,
   street addresses, the census first-name gazetteer, and the export's own identifier columns
   wherever the patient repeated them (*known* identifiers);
2. the statistical NER model (:mod:`.ner`), when the scrubber is given one;
3. the context detector (:mod:`.context`): names and places after cues, and lexicon names.

After scrubbing, :meth:`Deidentifier.residual_risks` looks for anything still shaped like an
identifier; a record with a residual risk is quarantined, never trained on (fail closed).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from healthnav.datapipe.deid.clinical import ClinicalVocabulary, clinical_vocabulary
from healthnav.datapipe.deid.prefilter import residual_prefilter, shared_prefilter
from healthnav.datapipe.deid.rules import (
    AGE_AGGREGATE,
    CAP_TOKEN_RE,
    CAP_WORD_RE,
    COMMON_CAPS,
    EPONYM_AFTER,
    PLACEHOLDER_RE,
    RESIDUAL_RULES,
    STATE_SET,
    Probe,
    Rule,
    check,
    name_lists,
    probe,
    rules,
    token_pattern,
)

if TYPE_CHECKING:
    from healthnav.datapipe.deid.context import ContextDetector
    from healthnav.datapipe.deid.ner import NerModel

Span = tuple[int, int, str]

#: Separates fields scrubbed together by :meth:`Deidentifier.scrub_many`.
FIELD_SEP = "\n\x00\n"


@dataclass
class DeidResult:
    """Scrubbed text, how many identifiers of each type were replaced, and where they were."""

    text: str
    counts: Counter[str] = field(default_factory=Counter)
    spans: list[Span] = field(default_factory=list)  # (start, end, type) in the original text


def placeholder(kind: str) -> str:
    """What replaces an identifier of ``kind``."""
    return AGE_AGGREGATE if kind == "AGE" else f"[{kind}]"


class Deidentifier:
    """Replace Safe Harbor identifiers in text with typed placeholders.

    ``names``: extra names to scrub wherever they appear (a clinic's staff list, for example).
    ``prefilter``: use Hyperscan to pick the rules to run (same result, faster); off to compare.
    ``ner``: the statistical model (:func:`healthnav.datapipe.deid.ner.load_ner`); with it the
    context detector runs too. Without it only the rules run: right for sources that carry no
    patient data, never for those that do (the build refuses, see ``datapipe/build.py``).
    """

    def __init__(
        self, names: Iterable[str] = (), *, prefilter: bool = True, ner: NerModel | None = None
    ) -> None:
        self._rules = rules()
        self._first, self._last = name_lists()
        self._extra = frozenset(n.lower() for n in names if len(n) > 1)
        self._prefilter = shared_prefilter() if prefilter else None
        self.ner = ner
        self._context: ContextDetector | None = None
        self._vocabulary: ClinicalVocabulary | None = None
        if ner is not None:
            from healthnav.datapipe.deid.context import ContextDetector

            self._context = ContextDetector()
            self._vocabulary = clinical_vocabulary()

    @classmethod
    def with_ner(cls, names: Iterable[str] = (), *, prefilter: bool = True) -> Deidentifier:
        """Rules, the pinned NER model and the context detector; raises ``NerUnavailable``."""
        from healthnav.datapipe.deid.ner import load_ner

        return cls(names, prefilter=prefilter, ner=load_ner())

    @property
    def statistical(self) -> bool:
        """Whether the NER pass runs (names and places no rule knows are caught)."""
        return self.ner is not None

    # -- detection

    def _rule_spans(self, text: str, known: Sequence[tuple[str, str]]) -> list[Span]:
        spans: list[tuple[int, int, str]] = []
        hits = self._prefilter.hits(text) if self._prefilter is not None else None
        covered = self._prefilter.covered if hits is not None else frozenset()  # type: ignore[union-attr]
        pr: Probe | None = None  # made only when a Python gate or a known identifier needs it
        if known:
            spans.extend(_known_spans(text, known))
        for i, rule in enumerate(self._rules):
            if i in covered:
                if i not in hits:  # type: ignore[operator]
                    continue
            elif rule.gate is not None:
                if pr is None:
                    pr = probe(text)
                if not rule.gate(pr):
                    continue
            for m in rule.pattern.finditer(text):
                start, end = m.span(rule.group)
                if start < 0 or start == end:
                    continue
                if rule.check and not check(rule.check, _checked_text(rule, m)):
                    continue
                spans.append((start, end, rule.kind))
        if hits is not None and self._prefilter.names_id is not None:  # type: ignore[union-attr]
            maybe_names = self._prefilter.names_id in hits  # type: ignore[union-attr]
        else:
            maybe_names = not self._first.isdisjoint(map(str.lower, CAP_WORD_RE.findall(text)))
        if self._extra or maybe_names:
            spans.extend(s for s in self._gazetteer_names(text) if not _allowed_place(text, s[0], s[1]))
        return spans

    def _gazetteer_names(self, text: str) -> Iterable[tuple[int, int, str]]:
        first, last, extra = self._first, self._last, self._extra
        for m in CAP_TOKEN_RE.finditer(text):
            a, b = m.group(1), m.group(2)
            al = a.lower()
            if al in COMMON_CAPS:
                if b and b.lower() in extra:
                    yield m.start(2), m.end(2), "NAME"
                continue
            if EPONYM_AFTER.match(text, m.end(1)):
                continue
            if al in first or al in extra:
                if (
                    b
                    and (b.lower() in last or b.lower() in extra or b.lower() not in COMMON_CAPS)
                    and not (EPONYM_AFTER.match(text, m.end(2)))
                ):
                    yield m.start(1), m.end(2), "NAME"
                else:
                    yield m.start(1), m.end(1), "NAME"
            elif b and al in last and b.lower() in last and b.lower() not in COMMON_CAPS:
                continue  # two surnames in a row is rarely a person; avoid e.g. "Hill Street"
            elif b and (b.lower() in extra):
                yield m.start(2), m.end(2), "NAME"

    def _statistical_spans(self, texts: Sequence[str]) -> list[list[Span]]:
        if self.ner is None or self._context is None:
            return [[] for _ in texts]
        found = self.ner.find(texts)
        for text, spans in zip(texts, found, strict=True):
            spans[:] = self._keep_clinical(text, self._context.widen(text, spans + self._context.spans(text)))
        return found

    def _keep_clinical(self, text: str, spans: list[Span]) -> list[Span]:
        """Model and context spans less clinical content ("Shingrix", "West Nile virus") and the
        states and countries Safe Harbor allows where a place is meant ("travelled to Jordan")."""
        vocab = self._vocabulary
        assert vocab is not None and self._context is not None
        regions = vocab.protected(text)
        lex = self._context.lex
        return [
            s
            for s in spans
            if not vocab.keeps(text, s[0], s[1], lex, regions) and not _allowed_place(text, s[0], s[1])
        ]

    # -- public API

    def scrub(self, text: str, known: Sequence[tuple[str, str]] = ()) -> DeidResult:
        """Replace identifiers; ``known`` is (type, value) pairs this record is known to contain."""
        return self.scrub_texts([text], [known])[0]

    def scrub_texts(
        self, texts: Sequence[str], known: Sequence[Sequence[tuple[str, str]]] | None = None
    ) -> list[DeidResult]:
        """Scrub many texts; the NER model sees them as one batch (several times faster)."""
        known_list = known if known is not None else [()] * len(texts)
        extra = self._statistical_spans([t for t in texts if t])
        extra_iter = iter(extra)
        out: list[DeidResult] = []
        for text, kn in zip(texts, known_list, strict=True):
            if not text:
                out.append(DeidResult(text))
                continue
            spans = self._rule_spans(text, kn)
            spans.extend(_within_fields(text, next(extra_iter)))
            out.append(_replace(text, spans))
        return out

    def scrub_many(self, texts: Sequence[str], known: Sequence[tuple[str, str]] = ()) -> DeidResult:
        """Scrub several fields of one record in one pass; ``result.text`` joins them with
        :data:`FIELD_SEP` (split it with :meth:`split_fields`).

        Why one pass: every rule's gate and pattern then runs once per record instead of once
        per field, which is most of the rules' cost. No rule can match across the separator (a
        NUL between newlines: not a word, digit or space character), and model or context spans
        are cut at it, so the result is the same as scrubbing each field alone.
        """
        return self.scrub_records([(texts, known)])[0]

    def scrub_records(
        self, records: Sequence[tuple[Sequence[str], Sequence[tuple[str, str]]]]
    ) -> list[DeidResult]:
        """:meth:`scrub_many` for a batch of records (the NER model sees them together)."""
        joined = [_join_fields(texts) for texts, _ in records]
        return self.scrub_texts(joined, [kn for _, kn in records])

    @staticmethod
    def split_fields(text: str, expected: int) -> list[str]:
        parts = text.split(FIELD_SEP)
        if len(parts) != expected:  # a placeholder swallowed a separator: never expected, fail closed
            raise ValueError(f"de-identification merged fields ({len(parts)} != {expected})")
        return parts

    @staticmethod
    def residual_risks(text: str) -> list[str]:
        """Reasons scrubbed text still looks identifying (empty when it looks clean)."""
        probe = PLACEHOLDER_RE.sub(" ", text) if "[" in text else text  # placeholders blanked
        prefilter = residual_prefilter()
        hits = prefilter.hits(probe) if prefilter is not None else None
        lower = text.lower() if hits is None else ""
        reasons: list[str] = []
        for i, (name, precondition, pattern) in enumerate(RESIDUAL_RULES):
            if hits is not None:
                if i not in hits:  # Hyperscan found no match for this pattern in the probe
                    continue
            elif not precondition(lower):
                continue
            # a name / date-of-birth cue is judged on the real text: the placeholder after it is
            # what makes it safe
            if pattern.search(probe) and (name not in ("name cue", "date of birth") or pattern.search(text)):
                reasons.append(name)
        return reasons


# "in", "to", "from", "visited" before a state or a country: the place is meant, not a person
_PLACE_BEFORE = re.compile(
    r"(?i)\b(?:in|to|from|across|around|visit(?:ed|ing)?|travell?ed\s+to|trip\s+to|back\s+from)\s+(?:the\s+)?\Z"
)


def _allowed_place(text: str, start: int, end: int) -> bool:
    value = text[start:end].lower().removeprefix("the ")
    return value in STATE_SET and _PLACE_BEFORE.search(text, max(0, start - 30), start) is not None


def _checked_text(rule: Rule, m: re.Match[str]) -> str:
    """What a rule's validator judges: its value, or (``ctx:`` checks) the words before the match too."""
    if rule.check is not None and rule.check.startswith("ctx:"):
        return m.string[max(0, m.start() - 40) : m.end()].rsplit("\x00", 1)[-1]
    return m.group(rule.group)


def _join_fields(texts: Sequence[str]) -> str:
    if not texts:
        return ""
    joined = FIELD_SEP.join(texts)
    if joined.count("\x00") != len(texts) - 1:  # a NUL in the input (normalisation drops it anyway)
        joined = FIELD_SEP.join(t.replace("\x00", "") for t in texts)
    return joined


def _within_fields(text: str, spans: Iterable[Span]) -> Iterable[Span]:
    """Model and context spans cut at field separators (a field boundary is never inside a name)."""
    for start, end, kind in spans:
        piece = text[start:end]
        if "\x00" not in piece and "\n" not in piece:
            yield start, end, kind
            continue
        offset = start
        for part in re.split(r"(\n)", piece):
            stripped = part.strip()
            if stripped and part != "\n" and "\x00" not in part:
                lead = len(part) - len(part.lstrip())
                yield offset + lead, offset + lead + len(stripped), kind
            offset += len(part)


def _replace(text: str, spans: list[Span]) -> DeidResult:
    """Longest match first at each position; anything overlapping a kept span is dropped."""
    if not spans:
        return DeidResult(text)
    spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
    out: list[str] = []
    counts: Counter[str] = Counter()
    kept: list[Span] = []
    pos = 0
    for start, end, kind in spans:
        if start < pos:
            if end > pos and kept and kept[-1][2] == kind:  # overlapping hits of one type: extend
                out[-1] = placeholder(kind)
                kept[-1] = (kept[-1][0], end, kind)
                pos = end
            elif end > pos:  # overlapping hits of two types: remove the rest as well
                kept[-1] = (kept[-1][0], end, kept[-1][2])
                pos = end
            continue
        out.append(text[pos:start])
        out.append(placeholder(kind))
        counts[kind] += 1
        kept.append((start, end, kind))
        pos = end
    out.append(text[pos:])
    return DeidResult("".join(out), counts, kept)


def _known_spans(text: str, known: Sequence[tuple[str, str]]) -> Iterable[tuple[int, int, str]]:
    """Every whole-word, case-insensitive occurrence of a known identifier's tokens.

    ASCII text and tokens take ``str.find`` on the lower-cased text (same offsets, and ``\\w``
    is ``[A-Za-z0-9_]``): one regex compiled per unseen token cost more than the rest of the
    record. Other text takes the regex, whose Unicode case folding ``str.lower`` lacks.
    """
    lower = text.lower()
    ascii_text = text.isascii()
    for kind, value in known:
        for token in _known_tokens(kind, value):
            tl = token.lower()
            if tl not in lower:
                continue
            if not (ascii_text and token.isascii()):
                for m in token_pattern(token).finditer(text):
                    yield m.start(), m.end(), kind
                continue
            start = lower.find(tl)
            while start >= 0:
                end = start + len(tl)
                if not (start and _is_word(lower[start - 1])) and not (
                    end < len(lower) and _is_word(lower[end])
                ):
                    yield start, end, kind
                    start = lower.find(tl, end)  # finditer does not overlap matches
                else:
                    start = lower.find(tl, start + 1)


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


@functools.lru_cache(maxsize=4096)
def _known_tokens(kind: str, value: str) -> list[str]:
    value = value.strip()
    if not value:
        return []
    tokens = [value]
    if kind == "NAME":
        tokens += [t for t in re.split(r"[\s,]+", value) if len(t) > 1]
    elif kind == "LOCATION":
        tokens += [p.strip() for p in value.split(",") if len(p.strip()) > 3]
    return sorted(set(tokens), key=len, reverse=True)


@functools.cache
def default_deidentifier() -> Deidentifier:
    """Rules only (for texts without patient data, and benchmarks of the rules alone)."""
    return Deidentifier()
