"""What must survive de-identification: clinical words that a name or place detector mistakes.

A statistical recogniser tags "Shingrix", "Medtronic Azure", "West Nile virus" or "plaster of
Paris" as people, organisations or places, and removing them destroys the very content the
dataset is for (issue 17 asks for clinical retention of at least 0.98). Two vocabularies answer
"is this span clinical?":

- ``data/clinical_phrases.txt``: eponymous conditions, signs and tests, diseases named after
  places, device makers and models, lab tests and brand-name drugs, each section citing its
  source. A detected span inside one of these phrases is kept.
- the drug dictionary of ``drug-named-entity-recognition`` (MIT, pinned by hash beside the NER
  model in ``datapipe/ner-requirements.txt``): about 100,000 generic and brand spellings from
  MeSH, DrugBank and the NHS. A span made only of drug names is kept, unless a word of it is
  also a first name ("Alli" is a brand and a person): then the name wins, since a leaked name
  costs more than a lost brand.

Only model and context spans are filtered; the rules' structured identifiers never are.
"""

from __future__ import annotations

import bz2
import functools
import hashlib
import importlib.util
import pickle
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from healthnav.datapipe.deid.lexicon import Lexicon, read_list
from healthnav.datapipe.deid.ner import NerUnavailable

#: The distribution that ships the drug dictionary, and the file inside it.
DRUG_PACKAGE = "drug-named-entity-recognition"
_DRUG_MODULE = "drug_named_entity_recognition"
_DRUG_FILE = "drug_ner_dictionary.pkl.bz2"
_WORD = re.compile(r"[^\W_](?:[^\W_]|['\u2019\-:.](?=[^\W_]))*")


@dataclass(frozen=True)
class ClinicalVocabulary:
    """Clinical phrases (one compiled pattern) and drug spellings (lower case)."""

    phrases: re.Pattern[str]
    drugs: frozenset[str]
    drug_dictionary_sha256: str

    def protected(self, text: str) -> list[tuple[int, int]]:
        """Where clinical phrases stand in ``text`` (start, end), in order."""
        return [m.span() for m in self.phrases.finditer(text)]

    def keeps(self, text: str, start: int, end: int, lex: Lexicon, regions: list[tuple[int, int]]) -> bool:
        """Whether the detected span ``text[start:end]`` is clinical content to keep.

        >>> vocab = clinical_vocabulary()
        >>> t = "Travelled home; West Nile virus was on the news"
        >>> vocab.keeps(t, 16, 20, lexicon(), vocab.protected(t))  # "West" inside the phrase
        True
        """
        if any(a <= start and end <= b for a, b in regions):
            return True
        # word by word: each inside a clinical phrase or a drug that is no first name; numbers
        # go with them ("hb 7.9", "Betahistine 16"); a span with no word is not clinical
        words = [m for m in _WORD.finditer(text, start, end) if not m.group().replace(".", "").isdigit()]
        return bool(words) and all(
            any(a <= m.start() and m.end() <= b for a, b in regions)
            or (m.group().lower() in self.drugs and not lex.is_name(m.group().lower()))
            for m in words
        )


def _phrase_pattern(entries: list[str]) -> re.Pattern[str]:
    """One case-insensitive alternation, longest first; "'s" optional after every word."""
    alts = []
    for entry in sorted(set(entries), key=len, reverse=True):
        words = [re.escape(w.replace("'s", "").replace("\u2019s", "").rstrip("'")) for w in entry.split()]
        alts.append(r"(?:['\u2019]s?|s)?[\s\-]+".join(words) + r"(?:['\u2019]s?|s)?")
    return re.compile(r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)", re.I)


def _drug_dictionary() -> tuple[frozenset[str], str]:
    spec = importlib.util.find_spec(_DRUG_MODULE)  # the data file only: the package is not imported
    if spec is None or not spec.submodule_search_locations:
        raise NerUnavailable(  # installed with the model: a build from patient data stops without it
            f"{DRUG_PACKAGE} is not installed; run `make ner-model` "
            "(pip install --no-deps --require-hashes -r datapipe/ner-requirements.txt)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _DRUG_FILE
    raw = path.read_bytes()
    # a pickle from the hash-pinned wheel pip verified at install (RECORD is checked at NER load)
    data = pickle.loads(bz2.decompress(raw))
    variants = data["drug_variant_to_canonical"]
    words = frozenset(k.lower() for k in variants if len(k) > 2)
    return words, hashlib.sha256(raw).hexdigest()


@functools.cache
def clinical_vocabulary() -> ClinicalVocabulary:
    """The vocabulary, loaded once per process (about half a second)."""
    drugs, sha = _drug_dictionary()
    return ClinicalVocabulary(_phrase_pattern(read_list("clinical_phrases")), drugs, sha)


def vocabulary_versions() -> dict[str, str]:
    """Which drug dictionary kept clinical words, for the dataset manifest."""
    return {
        DRUG_PACKAGE: metadata.version(DRUG_PACKAGE),
        "drug_dictionary_sha256": clinical_vocabulary().drug_dictionary_sha256,
    }
