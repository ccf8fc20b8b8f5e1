"""Names and places from context: the cues and the lexicon that catch what a small model misses.

A small NER model misses lower-case names ("my son jacob"), a first name alone after a
relation ("my husband Bill"), a clinician's first name ("nurse Adaeze") and places it rarely
saw ("moved to ogallala"). This pass reads the words after a cue (``data/name_cues.txt``,
``data/place_cues.txt``) and asks the :mod:`.lexicon` whether each looks like a name or a
place rather than an everyday English word, and it also takes any word that is a name in the
lists and not an everyday word, wherever it stands. Its hits join the model's and the rules'
(the union is removed: over-inclusive by design); clinical words are never taken.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from healthnav.datapipe.deid.lexicon import Lexicon, lexicon, read_list, read_sections, word_set
from healthnav.datapipe.deid.rules import COMMON_CAPS, EPONYM_AFTER, STATE_SET

Span = tuple[int, int, str]

# a word: letters, with inner apostrophes or hyphens ("O'Connor", "Al-Hassan", "Raghunathan-Iyer")
_WORD = re.compile(r"[^\W\d_](?:[^\W\d_]|['\u2019\-](?=[^\W\d_]))*")
# what may stand between a cue and the name: spaces, a comma, a colon, a title's full stop
_GAP = re.compile(r"[ \t]*[.,:]?[ \t]*\Z|[ \t]*\Z")
_MONTHS_DAYS = frozenset(
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "mon",
        "tue",
        "tues",
        "wed",
        "thu",
        "thur",
        "thurs",
        "fri",
        "sat",
        "sun",
    ]
)
_POSSESSIVES = frozenset({"my", "our", "his", "her", "their", "your", "the", "a"})
_MAX_NAME_WORDS = 4


@dataclass(frozen=True)
class _Cues:
    """Cue phrases as tuples of lower-case words, by the kind of what follows them."""

    relation: frozenset[tuple[str, ...]]
    title: frozenset[tuple[str, ...]]
    introduction: frozenset[tuple[str, ...]]
    place: frozenset[tuple[str, ...]]
    longest: int
    last_words: frozenset[str]  # the last word of every cue: a cheap first test


@functools.cache
def _cues() -> _Cues:
    def phrases(entries: list[str]) -> frozenset[tuple[str, ...]]:
        return frozenset(tuple(_WORD.findall(e.lower())) for e in entries if _WORD.findall(e))

    names = read_sections("name_cues")
    sets = {k: phrases(v) for k, v in names.items()}
    place = phrases(read_list("place_cues"))
    # "my physio is Olumide", "her nurse was Ines", "my son named Kofi": a relation, then the verb
    verbs = (("is",), ("was",), ("named",), ("called",), ("is", "called"), ("is", "named"))
    sets["relation"] = sets["relation"] | {p + v for p in sets["relation"] for v in verbs}
    longest = max(len(p) for s in [*sets.values(), place] for p in s)
    last = frozenset(p[-1] for s in [*sets.values(), place] for p in s)
    return _Cues(sets["relation"], sets["title"], sets["introduction"], place, longest, last)


class ContextDetector:
    """Names and places found from cues and the lexicon (see the module docstring)."""

    def __init__(self, lex: Lexicon | None = None) -> None:
        self.lex = lex or lexicon()
        self.cues = _cues()
        self.clinical = word_set("clinical_terms")
        self.particles = word_set("name_particles")
        self.stop_names = word_set("name_stopwords")
        self.relation_words = frozenset(p[0] for p in self.cues.relation | self.cues.title if len(p) == 1)

    # -- word tests

    def _never(self, w: str) -> bool:
        """Words no detector takes: function words, months and days, clinical terms, states."""
        return w in COMMON_CAPS or w in _MONTHS_DAYS or w in self.clinical or w in STATE_SET

    def _strong_first(self, word: str, cased: bool) -> bool:
        """After a relation or a title: any name, or anything that is not an everyday word."""
        w = word.lower()
        if self._never(w) or len(w) < 2:
            return False
        if self.lex.is_name(w) or w in self.stop_names:
            return True
        if cased and word[0].isupper():
            return not self.lex.is_everyday(w) or self.lex.is_proper(w)
        return not self.lex.is_everyday(w)

    def _weak_first(self, word: str, cased: bool) -> bool:
        """After an introduction ("I'm", "ask for", "with"): only what looks like a name."""
        w = word.lower()
        if self._never(w) or len(w) < 2:
            return False
        if self.lex.name_like(w):
            return True
        if cased and word[0].isupper():
            return self.lex.is_name(w) or self.lex.is_proper(w) or not self.lex.is_everyday(w)
        return False

    def _more(self, word: str, cased: bool) -> bool:
        """A further word of a name already begun (a surname, a second given name): the same test."""
        return self._weak_first(word, cased)

    def _place(self, word: str, cased: bool) -> bool:
        """After a place cue: a capitalised non-everyday word, or one usually written capitalised."""
        w = word.lower()
        if self._never(w) or len(w) < 3:
            return False
        if cased and word[0].isupper():
            return self.lex.is_proper(w) or not self.lex.is_everyday(w)
        return self.lex.is_proper(w) and not self.lex.is_everyday(w)

    # -- detection

    def spans(self, text: str) -> list[Span]:
        words = [_strip_possessive(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]
        if not words:
            return []
        cased = _is_cased(text)
        lowered = [w.lower() for _, _, w in words]
        found: list[Span] = []
        i = 0
        while i < len(words):
            kind, first_ok = self._cue_before(text, words, lowered, i, cased)
            start, _, word = words[i]
            if kind is None:
                if self._lexicon_name(word, lowered[i], cased, text, start, words, i):
                    kind, first_ok = "NAME", True
                else:
                    i += 1
                    continue
            if not first_ok:
                i += 1
                continue
            j = self._extend(text, words, i, cased, place=kind == "LOCATION")
            end = words[j][1]
            if not EPONYM_AFTER.match(text, end):
                found.append((start, end, kind))
            i = j + 1
        found.extend(self._named_before_relation(text, words, cased))
        found.extend(self._sign_off(text, cased))
        return found

    def _name_word(self, word: str, cased: bool) -> bool:
        """A word that can be a name when the context says a person is meant."""
        w = word.lower()
        if self._never(w) or len(w) < 2 or w in self.relation_words:
            return False
        if cased and not word[0].isupper():
            return False
        return self.lex.is_name(w) or self.lex.is_proper(w) or not self.lex.is_everyday(w)

    def _named_before_relation(self, text: str, words: list[tuple[int, int, str]], cased: bool) -> list[Span]:
        """A name that a relation follows: "Destiny (my niece)", "Ember's mum here", "Wren, my son"."""
        out: list[Span] = []
        for start, end, word in words:
            m = _RELATION_AFTER.match(text, end)
            if m is None:
                continue
            rel = (m.group("rel") or "").lower()
            if (rel in self.relation_words or m.group("age")) and self._name_word(word, cased):
                out.append((start, end, "NAME"))
        return out

    def _sign_off(self, text: str, cased: bool) -> list[Span]:
        """The name that signs a message or a field: "…thanks so much, Marisol", "— Ama"."""
        out: list[Span] = []
        for m in _SIGN_OFF.finditer(text):
            parts = [
                (p.start(), p.end(), p.group()) for p in _WORD.finditer(text, m.start("who"), m.end("who"))
            ]
            if parts and all(
                self._name_word(w, cased)
                and (self.lex.is_name(w.lower()) or not self.lex.is_everyday(w.lower()))
                for _, _, w in parts
            ):
                out.append((parts[0][0], parts[-1][1], "NAME"))
        return out

    def _cue_before(
        self, text: str, words: list[tuple[int, int, str]], lowered: list[str], i: int, cased: bool
    ) -> tuple[str | None, bool]:
        """The kind of cue that ends right before word ``i`` and whether word ``i`` fits it."""
        if i == 0 or lowered[i - 1] not in self.cues.last_words:  # most words follow no cue
            return None, False
        word = words[i][2]
        for n in range(min(self.cues.longest, i), 0, -1):
            phrase = tuple(lowered[i - n : i])
            if not all(_GAP.match(text[words[k][1] : words[k + 1][0]]) for k in range(i - n, i)):
                continue
            if phrase in self.cues.title or phrase in self.cues.relation:
                if phrase in self.cues.relation and phrase not in self.cues.title:
                    # "my husband X", "nurse X": a relation needs a possessive or a capitalised X
                    before = lowered[i - n - 1] if i - n - 1 >= 0 else ""
                    if before not in _POSSESSIVES and not (cased and word[0].isupper()):
                        continue
                return "NAME", self._strong_first(word, cased)
            # "from", "to", "with" introduce a name or a place: what follows decides
            if phrase in self.cues.introduction and self._weak_first(word, cased):
                return "NAME", True
            if phrase in self.cues.place:
                return "LOCATION", self._place(word, cased) or self._two_capitals(text, words, i, cased)
        return None, False

    def _lexicon_name(
        self, word: str, lower: str, cased: bool, text: str, start: int, words: list, i: int
    ) -> bool:
        """A word that is a name in the lists and not an everyday word, wherever it stands."""
        if self._never(lower) or lower in self.stop_names or len(lower) < 3:
            return False
        if self.lex.name_like(lower):
            return True
        # a capitalised word inside a sentence that English nearly always capitalises
        if cased and word[0].isupper() and not word.isupper() and not _sentence_start(text, start):
            return self.lex.is_proper(lower) and not self.lex.is_everyday(lower)
        return False

    def widen(self, text: str, spans: list[Span]) -> list[Span]:
        """Names found by any detector, widened over a given name right before them that is also an
        everyday word ("Hope" in "Hope Abernathy-Quist"): alone it is not taken, before a name it is."""
        out = []
        facility = word_set("facility_words")
        cased = _is_cased(text)
        for start, end, kind in spans:
            while (m := _WORD_AFTER.match(text, end)) and m.group(1).lower() in facility:
                end = m.end(1)  # "[Yuba City] DMV", "[Maplewood] Middle"
            if (m := _SAINT_BEFORE.search(text, 0, start)) is not None:
                start, kind = m.start(), "LOCATION"  # "St. [Columba]'s", "San [Marcos]": a place
            extra = 0
            while cased and extra < 2 and (m := _CAPITALISED_AFTER.match(text, end)) is not None:
                w = m.group(1)
                if self._never(w.lower()) or w.lower() in facility or w.isupper():
                    break
                end, extra = m.end(1), extra + 1  # "[Tiva] Running Bear": the rest of a name
            if kind == "NAME" and (m := _WORD_BEFORE.search(text, 0, start)):
                w = m.group(1).lower()
                if w in self.lex.first_names and not self._never(w) and _is_cased(text):
                    start = m.start(1)
            out.append((start, end, kind))
        return out

    def _two_capitals(self, text: str, words: list[tuple[int, int, str]], i: int, cased: bool) -> bool:
        """Two capitalised words after a place cue are a name even if both are words ("Kettle Creek")."""
        if not cased or i + 1 >= len(words) or text[words[i][1] : words[i + 1][0]] != " ":
            return False
        a, b = words[i][2], words[i + 1][2]
        if f"{a} {b}".lower() in STATE_SET:
            return False
        return a[0].isupper() and b[0].isupper() and not self._never(a.lower()) and not self._never(b.lower())

    def _extend(
        self, text: str, words: list[tuple[int, int, str]], i: int, cased: bool, *, place: bool
    ) -> int:
        """Index of the last word of the name or place that starts at word ``i``."""
        j = i
        while j + 1 < len(words) and j - i + 1 < _MAX_NAME_WORDS:
            gap = text[words[j][1] : words[j + 1][0]]
            if gap not in (" ", "  ", "\t"):
                break
            nxt = words[j + 1][2]
            if nxt.lower() in self.particles and j + 2 < len(words) and self._more(words[j + 2][2], cased):
                j += 2
                continue
            ok = self._place(nxt, cased) if place else self._more(nxt, cased)
            if place and not ok and cased and nxt[0].isupper() and not self._never(nxt.lower()):
                ok = True  # "Walnut Creek", "Grand Island": the words after a place's first one
            if not ok:
                break
            j += 1
        return j


_WORD_AFTER = re.compile(r"(?:'s|\u2019s)? ([^\W\d_]+)\b")
_CAPITALISED_AFTER = re.compile(
    r" ([^\W\d_a-z][^\W\d_A-Z][^\W\d_]*)\b(?!['\u2019]s\s+(?:disease|syndrome|palsy))"
)
_SAINT_BEFORE = re.compile(r"\b(?:St|Ste|Saint|Sainte|San|Santa)\.? \Z")
# after a name: a relation that says it is a person ("'s dad", "(my daughter)", ", my son", "(my 2yo)")
_RELATION_AFTER = re.compile(
    r"(?:['\u2019]s\s+|\s*\(\s*(?:my|our|his|her|their)\s+|,\s+(?:my|our|his|her|their)\s+)"
    r"(?:(?P<age>\d{1,2}\s*(?:yo|y/?o|yrs?|years?|months?|mos?|wks?|weeks?)\b)|(?P<rel>[^\W\d_]+)\b)",
    re.I,
)
# the last words of a message or field after a comma, a dash or a line break: a signature
_SIGN_OFF = re.compile(
    r"(?:,|\s[-\u2013\u2014]|^|\n)[ \t]*(?P<who>[^\W\d_][\w'\u2019\-]+(?:[ \t]+[^\W\d_][\w'\u2019\-]+)?)"
    r"[ \t.!]*(?:[xX]{1,3})?[ \t.!]*(?=\x00|\Z)",
    re.M,
)
_WORD_BEFORE = re.compile(r"\b([^\W\d_a-z][^\W\d_]+) \Z")


# "it's", "that's": contractions, not possessives (the cue "it's Oksana" needs the whole word)
_CONTRACTIONS = frozenset(
    w.replace("'", q)
    for w in (
        "it's",
        "that's",
        "there's",
        "here's",
        "what's",
        "who's",
        "he's",
        "she's",
        "name's",
        "let's",
        "where's",
        "how's",
    )
    for q in "'\u2019"
)


def _strip_possessive(start: int, end: int, word: str) -> tuple[int, int, str]:
    """ "Maria's" is Maria; the "'s" is not part of the name (nor of "Bell's palsy")."""
    if len(word) > 3 and word[-2] in "'\u2019" and word[-1] in "sS" and word.lower() not in _CONTRACTIONS:
        return start, end - 2, word[:-2]
    return start, end, word


def _is_cased(text: str) -> bool:
    """Whether capitals carry information: not all lower case, not all upper, not Title Case."""
    letters = [w for w in _WORD.findall(text) if len(w) > 1]
    if not letters:
        return False
    caps = sum(1 for w in letters if w[0].isupper())
    uppers = sum(1 for w in letters if w.isupper())
    return caps > 0 and uppers < 0.6 * len(letters) and caps < 0.6 * len(letters)


def _sentence_start(text: str, start: int) -> bool:
    before = text[:start].rstrip(" \t\"'(")
    return not before or before[-1] in ".!?\n:;-\u2014\x00"
