"""Which language is the patient writing in, and can the catalogue triage it?

The catalogue has wordings in English, Spanish, German and French. Text in another language
would match nothing and so look routine; instead the assessment says it cannot triage that
language and gives the safe advice (never a low risk level). Identification is Google's CLD2
(``pycld2``: its tables ship inside the wheel, nothing is downloaded, ~30 µs per text), which
also says when it is unsure; unsure or too-short text counts as triageable, because the rules
of every language run on every text anyway and a refusal must not replace a real reading.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from healthnav.serving.redflags.catalogue import LANGUAGES

MIN_LETTERS = 12  # below this CLD2's verdicts on Latin script are guesses


@dataclass(frozen=True)
class LanguageVerdict:
    """``code``: ISO 639-1 (or "un" unknown); ``supported``: the catalogue can triage it."""

    code: str
    name: str
    supported: bool
    reliable: bool

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


UNKNOWN = LanguageVerdict("un", "unknown", True, False)


def identify_language(text: str) -> LanguageVerdict:
    """The language of ``text`` and whether the catalogue covers it."""
    letters = sum(ch.isalpha() for ch in text)
    if letters == 0:
        return UNKNOWN
    try:
        import pycld2
    except ImportError:  # without the identifier no text is refused: the rules still run on it
        return UNKNOWN
    try:
        reliable, _, details = pycld2.detect(_printable(text), bestEffort=True)
    except pycld2.error:
        return UNKNOWN
    name, code, percent, _ = details[0]
    code = code.split("-")[0].lower()
    if code in ("un", "xxx", "zzp") or percent == 0:
        return LanguageVerdict("un", "unknown", True, False)
    supported_share = sum(d[2] for d in details if d[1].split("-")[0].lower() in LANGUAGES)
    non_latin = _non_latin_share(text) > 0.5
    if code in LANGUAGES or supported_share >= 30:
        return LanguageVerdict(code, name.lower(), True, bool(reliable))
    if non_latin or (reliable and letters >= MIN_LETTERS):
        return LanguageVerdict(code, name.lower(), False, bool(reliable))
    return LanguageVerdict(code, name.lower(), True, False)


def _printable(text: str) -> str:
    """CLD2 rejects some control characters; keep letters, marks, digits and white space."""
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", " ", text)


def _non_latin_share(text: str) -> float:
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    return sum(ord(ch) > 0x24F for ch in letters) / len(letters)
