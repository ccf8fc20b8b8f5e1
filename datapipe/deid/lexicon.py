"""Word lists the name and place detectors consult: which words are names, which are plain English.

Why a lexicon beside the model: a small statistical NER model misses lower-case names ("my son
jacob") and names it rarely saw ("Adaeze", "Tomasz"). Two well-kept data packages answer the two
questions a detector needs:

- *Is this a name somewhere?* Faker's first and last names across all its Latin-script locales
  (~21,000 each: English, Irish, Spanish, Portuguese, French, German, Dutch, Nordic, Slavic,
  Turkish, Akan, Yoruba, Igbo, Hausa, Swahili, Zulu, Hindi and Urdu in Latin script, romanised
  Chinese and Japanese…).
- *Is it also an everyday English word?* spaCy's lexeme probabilities (``spacy-lookups-data``,
  estimated from a large web corpus) for the lower-case and the capitalised spelling: a word
  people write in lower case about as often as capitalised ("mark", "hope", "bill") is an
  everyday word; one that is nearly always capitalised ("john", "sarah", "tupelo") is a proper
  noun even when a patient types it in lower case.

Hand-curated lists (clinical terms, cues, states, countries) live in ``data/*.txt`` next to
this file, one entry a line, so a reviewer can read them.
"""

from __future__ import annotations

import functools
import gzip
import importlib
import json
import pkgutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

DATA = Path(__file__).with_name("data")

#: A word whose lower-case spelling is at most this much less likely (natural log) than its
#: capitalised one is an everyday word ("mark" +0.8, "rose" -0.2); below it, a proper noun
#: ("john" -2.9, "lee" -1.5, "frank" -1.3).
EVERYDAY_MARGIN = -1.0
#: Lower-case words rarer than this (log probability) count as unseen: no evidence either way.
UNSEEN_BELOW = -18.5


def read_list(name: str) -> list[str]:
    """The entries of ``data/<name>.txt`` (comments and blank lines dropped)."""
    lines = (DATA / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]


def read_sections(name: str) -> dict[str, list[str]]:
    """``data/<name>.txt`` split by ``[section]`` headers."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for entry in read_list(name):
        if entry.startswith("[") and entry.endswith("]"):
            current = sections.setdefault(entry[1:-1], [])
        else:
            current.append(entry)
    return sections


@functools.cache
def word_set(name: str) -> frozenset[str]:
    return frozenset(w.lower() for w in read_list(name))


@dataclass(frozen=True)
class Lexicon:
    """Names of many cultures and what English usage says about each word."""

    first_names: frozenset[str]  # including those that are also words ("hope"): cues decide those
    last_names: frozenset[str]
    everyday: frozenset[str]  # lower-case words people use as ordinary words
    proper: frozenset[str]  # lower-cased words nearly always written capitalised

    def is_name(self, word: str) -> bool:
        w = word.lower()
        return w in self.first_names or w in self.last_names

    def is_everyday(self, word: str) -> bool:
        return word.lower() in self.everyday

    def is_proper(self, word: str) -> bool:
        """Usually capitalised in English text: a name, a place, a brand."""
        return word.lower() in self.proper

    def name_like(self, word: str) -> bool:
        """A name even in lower case: in the name lists and not an everyday word."""
        w = word.lower()
        return (w in self.first_names or w in self.last_names) and w not in self.everyday


def _faker_names() -> tuple[set[str], set[str]]:
    import faker.providers.person as person

    first: set[str] = set()
    last: set[str] = set()
    for module in pkgutil.iter_modules(person.__path__):
        provider = getattr(importlib.import_module(f"{person.__name__}.{module.name}"), "Provider", None)
        if provider is None:
            continue
        for attr, target in (
            ("first_names", first),
            ("first_names_male", first),
            ("first_names_female", first),
            ("first_romanized_names", first),
            ("last_names", last),
            ("last_romanized_names", last),
        ):
            values = getattr(provider, attr, None)
            if isinstance(values, dict | list | tuple | set | frozenset):
                target.update(v.lower() for v in values if isinstance(v, str) and _latin_word(v))
    return first, last


def _latin_word(value: str) -> bool:
    """Latin-script names only: the scrubbed text is English; other scripts go to the model."""
    return (
        len(value) > 1 and value.replace("-", "").replace("'", "").isalpha() and max(map(ord, value)) < 0x250
    )


def _lexeme_probabilities() -> dict[str, float]:
    with resources.files("spacy_lookups_data").joinpath("data/en_lexeme_prob.json.gz").open("rb") as fh:
        return json.load(gzip.open(fh))


@functools.cache
def lexicon() -> Lexicon:
    """Built once per process (about two seconds: the probability table has a million words)."""
    first, last = _faker_names()
    prob = _lexeme_probabilities()
    everyday: set[str] = set()
    proper: set[str] = set()
    for word, lower_p in prob.items():
        if not word.islower() or not word.isalpha():
            continue
        cap_p = prob.get(word.capitalize(), -30.0)
        if lower_p < UNSEEN_BELOW:
            if cap_p > UNSEEN_BELOW:
                proper.add(word)
            continue
        if lower_p - cap_p > EVERYDAY_MARGIN:
            everyday.add(word)
        else:
            proper.add(word)
    for word, cap_p in prob.items():  # capitalised words never seen in lower case
        if word[:1].isupper() and word[1:].islower() and word.isalpha() and cap_p > UNSEEN_BELOW:
            low = word.lower()
            if low not in prob:
                proper.add(low)
    del prob
    return Lexicon(frozenset(first), frozenset(last), frozenset(everyday), frozenset(proper))


def lexicon_versions() -> dict[str, str]:
    """Package versions behind :func:`lexicon`, for the dataset manifest."""
    from importlib.metadata import version

    return {pkg: version(pkg) for pkg in ("faker", "spacy-lookups-data")}
