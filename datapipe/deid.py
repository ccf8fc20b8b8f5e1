"""De-identification of free text under HIPAA Safe Harbor (45 CFR 164.514(b)(2)).

Why rules and gazetteers, not an NER model: the pipeline must run offline, at thousands of
records per second on one core, and behave the same on every machine; the NER models that
would help (spaCy, Presidio's recognisers) need weights downloaded at run time. The rules
here are tuned for what patients type into a symptom checker, and they are backed by two
safety nets:

1. **Known identifiers**: the app export's own identifier columns (name, phone, e-mail, date
   of birth, address, MRN) are removed verbatim wherever the patient repeated them.
2. **Fail closed**: after scrubbing, :meth:`Deidentifier.residual_risks` looks for anything
   still shaped like an identifier (an ``@``, a run of seven digits, a name cue followed by a
   word, a URL). A record with any residual risk is quarantined, never trained on.

Each identifier becomes a typed placeholder (``[NAME]``, ``[DATE]``, ``[PHONE]``…) so the
model still learns that a name or a date was there, and counts per type go into the manifest.
Clinical content survives: ages up to 89, doses, durations, vital signs, years on their own.
``DEIDENTIFICATION.md`` next to this file lists what is and is not caught.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PLACEHOLDER_TYPES: tuple[str, ...] = (
    "NAME",
    "LOCATION",
    "ZIP",
    "DATE",
    "AGE",
    "PHONE",
    "FAX",
    "EMAIL",
    "SSN",
    "MRN",
    "HEALTH_PLAN",
    "ACCOUNT",
    "LICENSE",
    "VEHICLE",
    "DEVICE",
    "URL",
    "IP",
    "ID",
)
_MONTH_WORDS = frozenset(
    [
        "jan",
        "january",
        "feb",
        "february",
        "mar",
        "march",
        "apr",
        "april",
        "may",
        "jun",
        "june",
        "jul",
        "july",
        "aug",
        "august",
        "sep",
        "sept",
        "september",
        "oct",
        "october",
        "nov",
        "november",
        "dec",
        "december",
    ]
)
_PLACEHOLDER_RE = re.compile(r"\[(?:" + "|".join(PLACEHOLDER_TYPES) + r")\]")

# Common English words that are also first names; alone they are not taken as names.
_NAME_STOPWORDS = frozenset(
    [
        "amber",
        "angel",
        "april",
        "autumn",
        "bill",
        "carol",
        "chase",
        "christian",
        "crystal",
        "daisy",
        "dawn",
        "dean",
        "destiny",
        "don",
        "earl",
        "faith",
        "frank",
        "gene",
        "grant",
        "guy",
        "holly",
        "hunter",
        "jack",
        "joy",
        "mark",
        "max",
        "penny",
        "ray",
        "rose",
        "sue",
        "summer",
        "will",
        "may",
        "june",
        "august",
        "hope",
        "art",
        "iris",
        "lily",
        "ruby",
        "pearl",
        "ivy",
        "sage",
        "page",
        "lane",
        "major",
        "king",
        "miles",
        "price",
        "long",
        "christmas",
        "easter",
    ]
)
_EPONYM_AFTER = re.compile(
    r"^(?:'s|\u2019s)?\s+(?:disease|syndrome|palsy|sign|test|maneuver|manoeuvre|law|ulcer)\b", re.I
)

_MONTH = (
    r"(?:(?i:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|jun(?:e)?|jul(?:y)?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)|May)"
)
_STATES = (
    "Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|Georgia|Hawaii|"
    "Idaho|Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|Massachusetts|Michigan|"
    "Minnesota|Mississippi|Missouri|Montana|Nebraska|Nevada|New Hampshire|New Jersey|New Mexico|New York|"
    "North Carolina|North Dakota|Ohio|Oklahoma|Oregon|Pennsylvania|Rhode Island|South Carolina|"
    "South Dakota|Tennessee|Texas|Utah|Vermont|Virginia|Washington|West Virginia|Wisconsin|Wyoming"
)
_STATE_ABBR = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|"
    "NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|DC"
)
_STATE_SET = frozenset(s.lower() for s in _STATES.split("|")) | frozenset(
    {"usa", "us", "america", "united states", "canada", "mexico", "england", "uk", "india", "europe"}
)
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
    r"Ter|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Row|Close|Crescent)"
)
_CAP = r"[A-Z][a-zA-Z'\u2019\-]+"
_ID_VALUE = r"(?=[A-Za-z0-9\-]*\d)[A-Za-z0-9][A-Za-z0-9\-]{3,}"
# What Hyperscan's prefilter scans for in place of _ID_VALUE: matches wherever _ID_VALUE does
# (its look-ahead asks for a digit within the value), which prefilter mode would otherwise drop
_ID_VALUE_HS = r"(?:\d|[A-Za-z0-9][A-Za-z0-9\-]*\d)"


def _cue(words: str) -> str:
    # a cue phrase, optional "number/no/#/id", optional "is" / ":" then the value
    return rf"(?i:\b(?:{words})(?:\s+(?:number|no\.?|num|#|id))?\s*(?:is|:|#|=)?\s*)"


class _Probe:
    """What the gates look at, computed once per text: the text, its lower-case form, its digit
    runs. Regex gates are cached here so rules sharing a gate run it once."""

    __slots__ = ("_cache", "lower", "max_digit_run", "runs", "text", "words")

    def __init__(self, text: str) -> None:
        self.text = text
        self.lower = text.lower()
        # the lower-case words (runs of ASCII letters) as bytes: one C-level translate and split
        self.words = frozenset(self.lower.encode("utf-8", "replace").translate(_LETTERS_ONLY).split())
        # digit runs: a C-level translate for ASCII text (the regex costs ten times more); \\d
        # also matches non-ASCII digits, so other text takes the regex
        self.runs: list[str] | list[bytes] = (
            text.encode().translate(_DIGITS_ONLY).split() if text.isascii() else _DIGIT_RUN_RE.findall(text)
        )
        self.max_digit_run = max(map(len, self.runs), default=0)
        self._cache: dict[int, bool] = {}

    def search(self, pattern: re.Pattern[str], *, lower: bool = False) -> bool:
        key = id(pattern)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = pattern.search(self.lower if lower else self.text) is not None
        return hit


#: A gate: a cheap necessary condition for a rule's pattern to match, so the pattern (the
#: expensive part) only runs on texts that could contain a match. A gate may say yes when
#: there is no match, never the reverse: gates cost speed when loose, never recall.
Gate = Callable[[_Probe], bool] | None


@dataclass(frozen=True)
class _Rule:
    """One detector: a pattern, the group that is the identifier, an optional validator, a gate."""

    kind: str
    pattern: re.Pattern[str]
    group: int | str = 0
    check: str | None = None  # name of an extra validator
    gate: Gate = None
    hs: str | None = None  # for the Hyperscan prefilter: matches wherever ``pattern`` does, tighter


def _lower_any(*subs: str) -> Gate:
    """Any of these substrings in the lower-cased text (for case-insensitive cue words)."""
    return lambda p: any(s in p.lower for s in subs)


def _cased_any(*subs: str) -> Gate:
    """Any of these substrings in the text as written (for case-sensitive patterns)."""
    return lambda p: any(s in p.text for s in subs)


def _digit_run(n: int) -> Gate:
    """A run of at least ``n`` digits."""
    return lambda p: p.max_digit_run >= n


def _regex(pattern: str, *, min_runs: int = 1, chars: str = "") -> Gate:
    """A small regex, tried only when the text has ``min_runs`` digit runs (0: any text) and
    each of ``chars``."""
    compiled = re.compile(pattern)
    return lambda p: len(p.runs) >= min_runs and all(c in p.text for c in chars) and p.search(compiled)


def _cues(*cues: str) -> Gate:
    """Any cue in the text, case-insensitively. A single-word cue must be a whole word (letters
    only: "vin" does not fire on "having", "dea" not on "dear"), checked in the probe's word set;
    a cue with a space or punctuation ("patient id", "to:") is a substring check. Both are
    necessary conditions of a word-anchored cue pattern."""
    words = frozenset(c.encode() for c in cues if c.isalpha())
    phrases = tuple(c for c in cues if not c.isalpha())

    def gate(p: _Probe) -> bool:
        return not words.isdisjoint(p.words) or any(c in p.lower for c in phrases)

    return gate


_MONTH_GATE = _cues(*_MONTH_WORDS)


def _age_over_89(p: _Probe) -> bool:
    return any(len(r) in (2, 3) and 90 <= int(r) <= 129 for r in p.runs)


_DIGIT_RUN_RE = re.compile(r"\d+")
_DIGITS_ONLY = bytes(c if 48 <= c <= 57 else 32 for c in range(256))
_LETTERS_ONLY = bytes(c if 97 <= c <= 122 else 32 for c in range(256))


def _probe(text: str) -> _Probe:
    return _Probe(text)


@functools.lru_cache(maxsize=8192)
def _token_pattern(token: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(token)}(?!\w)", re.IGNORECASE)


_TLD_WORDS = _cues("com", "org", "net", "edu", "gov", "io", "info", "biz", "me", "us")
_STREET_WORDS = _cues(*(w.lower() for w in re.findall(r"[A-Za-z]+", _STREET_SUFFIX)))
_DIGIT_CAP = _regex(r"\d\s+[A-Z]")
_IPV6_RE = re.compile(r"[0-9a-fA-F]:[0-9a-fA-F]*:")


def _tld_gate(p: _Probe) -> bool:
    return "." in p.text and _TLD_WORDS(p)  # type: ignore[misc]


def _street_gate(p: _Probe) -> bool:
    return _STREET_WORDS(p) and _DIGIT_CAP(p)  # type: ignore[misc]


def _ipv6_gate(p: _Probe) -> bool:
    # an IPv6 address has two colons each followed by a hex digit or a colon, never by a space
    t = p.text
    return t.count(":") - t.count(": ") - t.count(":\n") >= 2 and p.search(_IPV6_RE)


_AGE_YEARS = r"\b(?P<v>9\d|1[0-2]\d)(?:\s*(?:-|\s)?\s*(?:years?|yrs?|y/?o\b|y\.o\.|-?year-old|year old|yo\b))"


def _rules() -> list[_Rule]:
    r = re.compile
    return [
        _Rule("EMAIL", r(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+"), gate=_cased_any("@")),
        _Rule("URL", r(r"(?i)\b(?:https?://|www\.)[^\s<>\"')\]]+"), gate=_lower_any("http", "www.")),
        _Rule(
            "URL",
            r(r"(?i)\b[\w\-]+(?:\.[\w\-]+)*\.(?:com|org|net|edu|gov|io|info|biz|me|us)(?:/[^\s]*)?\b"),
            gate=_tld_gate,
        ),
        _Rule(
            "IP",
            r(r"\b(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}\b"),
            gate=_regex(r"\d\.\d+\.\d", min_runs=4, chars="."),
        ),
        _Rule(
            "IP",
            r(r"(?i)\b(?:[0-9a-f]{1,4}:){2,7}(?::|[0-9a-f]{1,4})(?::[0-9a-f]{1,4})*\b"),
            gate=_ipv6_gate,
        ),
        _Rule("SSN", r(r"\b\d{3}-\d{2}-\d{4}\b"), gate=_digit_run(4)),
        _Rule(
            "SSN",
            r(_cue(r"ssn|social security(?: number)?") + r"(?P<v>\d{3}[\s\-]?\d{2}[\s\-]?\d{4})"),
            "v",
            gate=_cues("ssn", "social"),
        ),
        _Rule(
            "VEHICLE",
            r(_cue(r"licen[cs]e plate|plate|vin|vehicle(?: id)?") + rf"(?P<v>{_ID_VALUE})"),
            "v",
            gate=_cues("plate", "plates", "vin", "vehicle"),
        ),
        _Rule("FAX", r(_cue(r"fax") + r"(?P<v>\+?[\d(][\d\s().\-]{8,}\d)"), "v", gate=_cues("fax")),
        _Rule(
            "MRN",
            r(_cue(r"mrn|medical record|chart|patient id|record") + rf"(?P<v>{_ID_VALUE})"),
            "v",
            gate=_cues("mrn", "record", "records", "chart", "patient id"),
        ),
        _Rule(
            "HEALTH_PLAN",
            r(
                _cue(
                    r"member|policy|insurance(?: id)?|subscriber|group|medicaid|medicare|health plan|"
                    r"beneficiary"
                )
                + rf"(?P<v>{_ID_VALUE})"
            ),
            "v",
            gate=_cues(
                "member",
                "policy",
                "insurance",
                "subscriber",
                "group",
                "medicaid",
                "medicare",
                "health plan",
                "beneficiary",
            ),
        ),
        _Rule(
            "ACCOUNT",
            r(_cue(r"account|acct|card|iban|routing") + rf"(?P<v>{_ID_VALUE})"),
            "v",
            gate=_cues("account", "acct", "card", "iban", "routing"),
        ),
        _Rule(
            "LICENSE",
            r(_cue(r"driver'?s licen[cs]e|licen[cs]e|dea|npi|certificate|passport") + rf"(?P<v>{_ID_VALUE})"),
            "v",
            gate=_cues("license", "licence", "dea", "npi", "certificate", "passport"),
        ),
        _Rule(
            "DEVICE",
            r(_cue(r"serial|device(?: id)?|imei|udi|model") + rf"(?P<v>{_ID_VALUE})"),
            "v",
            gate=_cues("serial", "device", "imei", "udi", "model"),
        ),
        _Rule("ACCOUNT", r(r"\b(?:\d[ \-]?){12,18}\d\b"), check="luhn", gate=_digit_run(4)),
        _Rule(
            "PHONE",
            r(
                r"(?<![\w+])(?:\+?1[\s.\-]?)?(?:\(\d{3}\)|\d{3})[\s.\-]?\d{3}[\s.\-]?\d{4}"
                r"(?:\s*(?:x|ext\.?)\s*\d{1,5})?\b"
            ),
            gate=_digit_run(3),
        ),
        _Rule("PHONE", r(r"(?<!\w)\+\d{1,3}(?:[\s.\-]?\(?\d{1,4}\)?){2,5}\d\b"), gate=_cased_any("+")),
        # dates: numeric with a year, ISO, written months, and cued day/month without a year
        _Rule("DATE", r(r"\b\d{4}[\-/.]\d{1,2}[\-/.]\d{1,2}\b"), check="ymd", gate=_digit_run(4)),
        _Rule(
            "DATE",
            r(r"\b\d{1,2}[/\-.]\d{1,2}[/\-.](?:\d{4}|\d{2})\b"),
            check="mdy",
            gate=_regex(r"\d[/\-.]\d+[/\-.]\d", min_runs=3),
        ),
        _Rule(
            "DATE",
            r(
                rf"\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?\b(?!\s*(?:mg|ml|mcg|units?|hours?|days?))"
            ),
            gate=_MONTH_GATE,
        ),
        _Rule(
            "DATE",
            r(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\b\.?(?:,?\s+\d{{4}})?"),
            gate=_MONTH_GATE,
        ),
        _Rule("DATE", r(rf"\b{_MONTH}\.?,?\s+(?:of\s+)?(?:19|20)\d{{2}}\b"), gate=_MONTH_GATE),
        _Rule(
            "DATE",
            r(
                r"(?i:\b(?:on|since|from|until|till|by|dated?|dob|d\.o\.b\.?|born|seen|admitted|discharged)\s*:?\s+)"
                r"(?P<v>\d{1,2}/\d{1,2})\b(?!/)"
            ),
            "v",
            check="md",
            gate=_cased_any("/"),
        ),
        # ages over 89 (Safe Harbor): the number only; ages up to 89 are clinical content and stay
        _Rule(
            "AGE",
            r(_AGE_YEARS.replace("(?:", "(?=", 1), re.I),
            "v",
            gate=_age_over_89,
            hs=_AGE_YEARS,  # the trailing look-ahead as a plain group: same texts match
        ),
        _Rule(
            "AGE",
            # "Age: 90 or older" is Safe Harbor's own aggregate (what prompts.format_assessment_input
            # renders for every age over 89), so it stays: train and serve see the same text
            r(r"(?i:\b(?:age[d]?|aged?:|age:)\s*)(?P<v>(?!90\s+or\s+older\b)(?:9\d|1[0-2]\d))\b"),
            "v",
            gate=_age_over_89,
        ),
        # geography below the state
        _Rule(
            "LOCATION",
            r(
                rf"\b\d{{1,6}}\s+(?:[NSEW]\.?\s+)?(?:{_CAP}\s+){{0,3}}{_CAP}\s+{_STREET_SUFFIX}\b\.?"
                r"(?:,?\s*(?:Apt|Apartment|Unit|Suite|Ste|#)\.?\s*\w+)?"
            ),
            gate=_street_gate,
        ),
        _Rule("LOCATION", r(r"(?i)\bP\.?\s?O\.?\s+Box\s+\d+"), gate=_cues("box")),
        _Rule(
            "LOCATION",
            r(
                rf"(?:{_CAP}\s+){{0,3}}{_CAP}\s+(?:Hospital|Medical Center|Medical Centre|Clinic|"
                r"Health Center|Health Centre|Infirmary|Urgent Care|Nursing Home|Care Home)\b"
            ),
            gate=_cased_any(
                "Hospital",
                "Medical Cent",
                "Clinic",
                "Health Cent",
                "Infirmary",
                "Urgent Care",
                "Nursing Home",
                "Care Home",
            ),
        ),
        _Rule(
            "ZIP",
            r(rf"(?:\b(?:{_STATE_ABBR}|{_STATES})\.?,?\s+)(?P<v>\d{{5}}(?:-\d{{4}})?)\b"),
            "v",
            gate=_digit_run(5),
            hs=r"[A-Za-z]\.?,?\s+\d{5}",  # every state name ends in a letter; scans 3x faster
        ),
        _Rule(
            "ZIP",
            r(r"(?i:\b(?:zip|postal|post)\s*(?:code)?\s*:?\s*)(?P<v>\d{5}(?:-\d{4})?)\b"),
            "v",
            gate=_cues("zip", "postal", "post"),
        ),
        _Rule("ZIP", r(r"\b\d{5}-\d{4}\b"), gate=_digit_run(5)),
        _Rule(
            "LOCATION",
            r(rf"(?P<v>{_CAP}(?:\s+{_CAP}){{0,2}}),\s+(?:{_STATE_ABBR}|{_STATES})\b"),
            "v",
            check="not_state",
            gate=_regex(r",\s+[A-Z][A-Za-z]", min_runs=0, chars=","),
        ),
        _Rule(
            "LOCATION",
            r(
                r"(?i:\b(?:live[sd]?|living|reside[sd]?|residing|moved|relocated|grew up|staying)"
                r"\s+(?:in|to|at|near)\s+"
                r"|\bresident of\s+|\bhometown(?: is)?:?\s+)"
                rf"(?P<v>{_CAP}(?:\s+{_CAP}){{0,2}})"
            ),
            "v",
            check="not_state",
            gate=_cues(
                "live",
                "lives",
                "lived",
                "living",
                "reside",
                "resides",
                "resided",
                "residing",
                "resident",
                "moved",
                "relocated",
                "grew",
                "staying",
                "hometown",
            ),
        ),
        # names: after a title or a cue, and first names from the census-derived list
        _Rule(
            "NAME",
            r(
                rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Doctor|Nurse|Sister|Father)\.?\s+(?P<v>{_CAP}(?:\s+{_CAP})?)"
            ),
            "v",
            gate=_cased_any("Mr", "Ms", "Miss", "Mx", "Dr", "Prof", "Doctor", "Nurse", "Sister", "Father"),
        ),
        _Rule(
            "NAME",
            r(
                r"(?i:\b(?:my name is|name is|name:|named|called|signed|sincerely|regards|thanks|thank you|"
                r"patient:|pt:|contact|ask for|from:|to:)\s*,?\s*)"
                rf"(?P<v>{_CAP}(?:\s+{_CAP}){{0,2}})"
            ),
            "v",
            check="not_word",
            gate=_cues(
                "name is",
                "name:",
                "named",
                "called",
                "signed",
                "sincerely",
                "regards",
                "thanks",
                "thank you",
                "patient:",
                "pt:",
                "contact",
                "ask for",
                "from:",
                "to:",
            ),
        ),
        _Rule(
            "NAME",
            r(
                r"(?i:\bmy\s+(?:husband|wife|son|daughter|mother|father|mom|mum|dad|partner|brother|sister|friend|"
                r"boyfriend|girlfriend|grandson|granddaughter|grandma|grandpa|neighbou?r|caregiver|carer|"
                r"gp|doctor|nurse|baby|child|kid)\s*,?\s*)"
                rf"(?P<v>{_CAP}(?:\s+{_CAP})?)"
            ),
            "v",
            check="not_word",
            gate=_cues("my"),
        ),
        _Rule(
            "ID",
            r(r"\b(?=[A-Z0-9\-]*[A-Z])(?=(?:[A-Z\-]*\d){4})[A-Z0-9][A-Z0-9\-]{6,}[A-Z0-9]\b"),
            gate=_regex(r"\d[A-Z\-]*\d[A-Z\-]*\d[A-Z\-]*\d"),
        ),
        _Rule("ID", r(r"(?<![\d.,])\d{7,}(?![\d.,]*\s*(?:mg|mcg|ml|units?|iu|cells))"), gate=_digit_run(7)),
    ]


# every word the gazetteer could take as a first name: if none is a known first name, skip it
_CAP_WORD_RE = re.compile(r"\b[A-Z][a-z'\u2019]+")
_CAP_TOKEN_RE = re.compile(r"\b([A-Z][a-z'\u2019]+)(?:\s+([A-Z][a-z'\u2019\-]+))?")
_COMMON_CAPS = frozenset(
    [
        "i",
        "the",
        "a",
        "an",
        "my",
        "he",
        "she",
        "it",
        "we",
        "they",
        "this",
        "that",
        "his",
        "her",
        "our",
        "your",
        "their",
        "what",
        "when",
        "where",
        "why",
        "how",
        "yes",
        "no",
        "not",
        "and",
        "or",
        "but",
        "if",
        "so",
        "also",
        "then",
        "there",
        "here",
        "after",
        "before",
        "since",
        "during",
        "today",
        "yesterday",
        "tomorrow",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "hi",
        "hello",
        "dear",
        "please",
    ]
)


@functools.cache
def _name_lists() -> tuple[frozenset[str], frozenset[str]]:
    """First and last names (US census-derived lists shipped by Faker); empty if Faker is absent."""
    try:
        from faker.providers.person.en_US import Provider
    except ImportError:  # pragma: no cover - faker is in the "data" extra
        return frozenset(), frozenset()
    first = frozenset(n.lower() for n in Provider.first_names) - _NAME_STOPWORDS
    last = frozenset(n.lower() for n in Provider.last_names)
    return first, last


def _luhn(digits: str) -> bool:
    nums = [int(c) for c in digits if c.isdigit()]
    if not 13 <= len(nums) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(nums)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _valid_date(a: int, b: int) -> bool:
    return (1 <= a <= 12 and 1 <= b <= 31) or (1 <= b <= 12 and 1 <= a <= 31)


def _check(kind: str | None, text: str) -> bool:
    if kind is None:
        return True
    if kind == "luhn":
        return _luhn(text)
    if kind == "ymd":
        parts = re.split(r"[\-/.]", text)
        return 1900 <= int(parts[0]) <= 2100 and 1 <= int(parts[1]) <= 12 and 1 <= int(parts[2]) <= 31
    if kind in ("mdy", "md"):
        parts = re.split(r"[\-/.]", text)
        return _valid_date(int(parts[0]), int(parts[1]))
    if kind == "not_state":
        return text.lower() not in _STATE_SET and text.split()[0].lower() not in _COMMON_CAPS
    if kind == "not_word":
        return text.split()[0].lower() not in _COMMON_CAPS
    raise ValueError(kind)


#: Separates fields scrubbed together by :meth:`Deidentifier.scrub_many`.
FIELD_SEP = "\n\x00\n"


@dataclass
class DeidResult:
    """Scrubbed text and how many identifiers of each type were replaced."""

    text: str
    counts: Counter[str] = field(default_factory=Counter)


# (reason, cheap precondition on the lower-cased text, pattern); the precondition is necessary
# for the pattern to match, so skipping the pattern when it fails loses nothing.
_RESIDUAL_RULES: tuple[tuple[str, Callable[[str], bool], re.Pattern[str]], ...] = (
    ("at-sign", lambda t: "@" in t, re.compile(r"\S@\S")),
    ("long digit run", lambda t: True, re.compile(r"\d(?:[\s().\-]?\d){6,}")),
    ("url", lambda t: "http" in t or "www." in t, re.compile(r"(?i)https?:|www\.")),
    ("name cue", lambda t: "name" in t, re.compile(r"(?i)\b(?:my name is|name:)\s+(?!\[NAME\])\S")),
    (
        "date of birth",
        lambda t: "dob" in t or "date of birth" in t or "born on" in t,
        re.compile(r"(?i)\b(?:dob|date of birth|born on)\b\s*:?\s*(?!\[DATE\])\d"),
    ),
    (
        "ssn cue",
        lambda t: "ssn" in t or "social security" in t,
        re.compile(r"(?i)\b(?:ssn|social security)\b[^.\n]{0,12}\d"),
    ),
)


# ASCII control characters Python's ``\s`` matches in str patterns and Hyperscan's does not
# (\x1c-\x1f): the prefilter scans them as spaces so both engines agree on ``\s``, ``\w``, ``\b``.
_HS_SPACES = bytes(32 if 0x1C <= c <= 0x1F else c for c in range(256))


class _Prefilter:
    r"""Which rules could match a text, from one Hyperscan scan over it.

    Why: running each rule's Python gate (and the probe the gates share) costs more than the
    regexes they spare; Hyperscan matches every rule's pattern at once in one pass over the
    bytes. It is compiled in *prefilter* mode, which approximates what it cannot run exactly
    (look-arounds) by something looser, so it may report a rule that then finds nothing, never
    miss one that would match. The Python pattern still finds the spans, so replacements are
    exactly those of the gated rules. Only ASCII text is prefiltered (Python's Unicode ``\w``,
    ``\s`` and case folding differ from Hyperscan's); other text, a rule Hyperscan cannot
    compile, or any Hyperscan error falls back to the Python gates.
    """

    def __init__(self, rules: Sequence[_Rule], first_names: Iterable[str] = ()) -> None:
        import hyperscan

        self._error = hyperscan.error
        ids: list[int] = []
        exprs: list[bytes] = []
        flags: list[int] = []
        base = hyperscan.HS_FLAG_PREFILTER | hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_ALLOWEMPTY
        for i, rule in enumerate(rules):
            # only ASCII text is scanned, so non-ASCII members of a class can go (\u2019 in _CAP)
            expr = (rule.hs or rule.pattern.pattern.replace(_ID_VALUE, _ID_VALUE_HS)).replace("\\u2019", "")
            if not expr.isascii() or "\\u" in expr:
                continue
            flag = base | (hyperscan.HS_FLAG_CASELESS if rule.pattern.flags & re.IGNORECASE else 0)
            ids.append(i)
            exprs.append(expr.encode())
            flags.append(flag)
        # the gazetteer's gate: a capitalised word (``_CAP_WORD_RE``) that is a known first name
        # (without the look-ahead that ends the word: looser, never missing one)
        names = sorted(n.capitalize() for n in first_names if n.isascii() and n.isalpha())
        self.names_id: int | None = None
        # as plain literals (no \\b): looser, and a literal set compiles five times faster
        for name in names:
            self.names_id = len(rules)
            ids.append(self.names_id)
            exprs.append(name.encode())
            flags.append(hyperscan.HS_FLAG_SINGLEMATCH)
        self.covered = frozenset(ids)
        self._db = _load_cached(hyperscan, ids, exprs, flags)
        if self._db is not None:
            return
        self._db = hyperscan.Database()
        try:
            self._db.compile(expressions=exprs, ids=ids, flags=flags)
            _save_cached(hyperscan, self._db, ids, exprs, flags)
        except hyperscan.error:  # some expression is rejected: keep those that compile alone
            keep = []
            for j, (expr, flag) in enumerate(zip(exprs, flags, strict=True)):
                try:
                    hyperscan.Database().compile(expressions=[expr], ids=[ids[j]], flags=[flag])
                    keep.append(j)
                except hyperscan.error:
                    continue
            ids, exprs, flags = [ids[j] for j in keep], [exprs[j] for j in keep], [flags[j] for j in keep]
            if self.names_id not in ids:
                self.names_id = None
            self._db = hyperscan.Database()
            self._db.compile(expressions=exprs, ids=ids, flags=flags)
        self.covered = frozenset(ids)

    def hits(self, text: str) -> set[int] | None:
        """Ids of the covered rules that may match ``text``; None when it cannot tell."""
        if not text.isascii():
            return None
        found: set[int] = set()

        def on_match(rule_id: int, start: int, end: int, flags: int, context: object) -> None:
            found.add(rule_id)

        try:
            self._db.scan(text.encode("ascii").translate(_HS_SPACES), match_event_handler=on_match)
        except self._error:  # e.g. scratch in use by another thread: fall back, never skip rules
            return None
        return found


def _cache_path(hyperscan: Any, ids: list[int], exprs: list[bytes], flags: list[int]) -> Path:
    key = hashlib.sha256(repr((hyperscan.__version__, platform.machine(), ids, exprs, flags)).encode())
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "healthnav" / f"deid-prefilter-{key.hexdigest()[:24]}.hsdb"


def _load_cached(hyperscan: Any, ids: list[int], exprs: list[bytes], flags: list[int]) -> Any:
    """The compiled database from a previous process (compiling takes about half a second).

    The file holds compiled patterns only, no text. It is keyed by the patterns, their flags,
    the Hyperscan version and the CPU architecture; anything unreadable means "compile again".
    """
    try:
        db = hyperscan.loadb(_cache_path(hyperscan, ids, exprs, flags).read_bytes(), hyperscan.HS_MODE_BLOCK)
        db.scratch = hyperscan.Scratch(db)  # a loaded database comes without scratch space
        db.scan(b"", match_event_handler=lambda *_: None)  # usable, or compile again
        return db
    except Exception:  # a missing, stale or foreign cache file is only slower
        return None


def _save_cached(hyperscan: Any, db: Any, ids: list[int], exprs: list[bytes], flags: list[int]) -> None:
    path = _cache_path(hyperscan, ids, exprs, flags)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(hyperscan.dumpb(db))
        tmp.replace(path)  # atomic: a concurrent reader sees the old file or the whole new one
    except OSError:  # a read-only home: compile each time
        pass


@functools.cache
def _shared_prefilter() -> _Prefilter | None:
    """One prefilter per process: compiling the database takes about a second, and every
    :class:`Deidentifier` has the same rules and first names (extra names are not in it)."""
    try:
        return _Prefilter(_rules(), _name_lists()[0])
    except ImportError:  # hyperscan is in the "data" extra; without it the Python gates decide
        return None


@functools.cache
def _residual_prefilter() -> _Prefilter | None:
    """The residual checks' patterns in one Hyperscan database (see :class:`_Prefilter`)."""
    try:
        return _Prefilter([_Rule(name, pattern) for name, _, pattern in _RESIDUAL_RULES])
    except ImportError:
        return None


class Deidentifier:
    """Replace Safe Harbor identifiers in text with typed placeholders.

    ``names``: extra names to scrub wherever they appear (a clinic's staff list, for example).
    ``prefilter``: use Hyperscan to pick the rules to run (same result, faster); off to compare.
    """

    def __init__(self, names: Iterable[str] = (), *, prefilter: bool = True) -> None:
        self._rules = _rules()
        self._first, self._last = _name_lists()
        self._extra = frozenset(n.lower() for n in names if len(n) > 1)
        self._prefilter = _shared_prefilter() if prefilter else None

    # -- detection

    def _spans(self, text: str, known: Sequence[tuple[str, str]]) -> list[tuple[int, int, str]]:
        spans: list[tuple[int, int, str]] = []
        hits = self._prefilter.hits(text) if self._prefilter is not None else None
        covered = self._prefilter.covered if hits is not None else frozenset()  # type: ignore[union-attr]
        probe: _Probe | None = None  # made only when a Python gate or a known identifier needs it
        if known:
            spans.extend(_known_spans(text, known))
        for i, rule in enumerate(self._rules):
            if i in covered:
                if i not in hits:  # type: ignore[operator]
                    continue
            elif rule.gate is not None:
                if probe is None:
                    probe = _probe(text)
                if not rule.gate(probe):
                    continue
            for m in rule.pattern.finditer(text):
                start, end = m.span(rule.group)
                if start < 0 or start == end:
                    continue
                if rule.check and not _check(rule.check, m.group(rule.group)):
                    continue
                spans.append((start, end, rule.kind))
        if hits is not None and self._prefilter.names_id is not None:  # type: ignore[union-attr]
            maybe_names = self._prefilter.names_id in hits  # type: ignore[union-attr]
        else:
            maybe_names = not self._first.isdisjoint(map(str.lower, _CAP_WORD_RE.findall(text)))
        if self._extra or maybe_names:
            spans.extend(self._gazetteer_names(text))
        return spans

    def _gazetteer_names(self, text: str) -> Iterable[tuple[int, int, str]]:
        first, last, extra = self._first, self._last, self._extra
        for m in _CAP_TOKEN_RE.finditer(text):
            a, b = m.group(1), m.group(2)
            al = a.lower()
            if al in _COMMON_CAPS:
                if b and b.lower() in extra:
                    yield m.start(2), m.end(2), "NAME"
                continue
            if _EPONYM_AFTER.match(text, m.end(1)):
                continue
            if al in first or al in extra:
                if (
                    b
                    and (b.lower() in last or b.lower() in extra or b.lower() not in _COMMON_CAPS)
                    and not (_EPONYM_AFTER.match(text, m.end(2)))
                ):
                    yield m.start(1), m.end(2), "NAME"
                else:
                    yield m.start(1), m.end(1), "NAME"
            elif b and al in last and b.lower() in last and b.lower() not in _COMMON_CAPS:
                continue  # two surnames in a row is rarely a person; avoid e.g. "Hill Street"
            elif b and (b.lower() in extra):
                yield m.start(2), m.end(2), "NAME"

    # -- public API

    def scrub(self, text: str, known: Sequence[tuple[str, str]] = ()) -> DeidResult:
        """Replace identifiers; ``known`` is (type, value) pairs this record is known to contain."""
        if not text:
            return DeidResult(text)
        spans = self._spans(text, known)
        if not spans:
            return DeidResult(text)
        # longest match first at each position, then drop anything overlapping a kept span
        spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
        out: list[str] = []
        counts: Counter[str] = Counter()
        pos = 0
        for start, end, kind in spans:
            if start < pos:
                continue
            out.append(text[pos:start])
            out.append(f"[{kind}]")
            counts[kind] += 1
            pos = end
        out.append(text[pos:])
        return DeidResult("".join(out), counts)

    def scrub_many(self, texts: Sequence[str], known: Sequence[tuple[str, str]] = ()) -> DeidResult:
        """Scrub several fields of one record in one pass; ``result.text`` joins them with
        :data:`FIELD_SEP` (split it with :meth:`split_fields`).

        Why one pass: every rule's gate and pattern then runs once per record instead of once
        per field, which is most of the de-identification cost. No rule can match across the
        separator (a NUL between newlines: not a word, digit or space character), so the result
        is the same as scrubbing each field alone.
        """
        if not texts:
            return DeidResult("")
        joined = FIELD_SEP.join(texts)
        if joined.count("\x00") != len(texts) - 1:  # a NUL in the input (normalisation drops it anyway)
            joined = FIELD_SEP.join(t.replace("\x00", "") for t in texts)
        return self.scrub(joined, known)

    @staticmethod
    def split_fields(text: str, expected: int) -> list[str]:
        parts = text.split(FIELD_SEP)
        if len(parts) != expected:  # a placeholder swallowed a separator: never expected, fail closed
            raise ValueError(f"de-identification merged fields ({len(parts)} != {expected})")
        return parts

    @staticmethod
    def residual_risks(text: str) -> list[str]:
        """Reasons scrubbed text still looks identifying (empty when it looks clean)."""
        probe = _PLACEHOLDER_RE.sub(" ", text) if "[" in text else text  # placeholders blanked
        prefilter = _residual_prefilter()
        hits = prefilter.hits(probe) if prefilter is not None else None
        lower = text.lower() if hits is None else ""
        reasons: list[str] = []
        for i, (name, precondition, pattern) in enumerate(_RESIDUAL_RULES):
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


_FIELD_KINDS: dict[str, str] = {
    "patient_name": "NAME",
    "name": "NAME",
    "first_name": "NAME",
    "last_name": "NAME",
    "email": "EMAIL",
    "phone": "PHONE",
    "mobile": "PHONE",
    "date_of_birth": "DATE",
    "dob": "DATE",
    "address": "LOCATION",
    "city": "LOCATION",
    "zip": "ZIP",
    "mrn": "MRN",
    "user_id": "ID",
}


def kind_for_field(field_name: str) -> str:
    """Placeholder type for an export's identifier column (``ID`` when unknown)."""
    leaf = field_name.rsplit(".", 1)[-1].lower()
    return _FIELD_KINDS.get(leaf, "ID")


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
                for m in _token_pattern(token).finditer(text):
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
    return Deidentifier()


@dataclass
class RecallReport:
    """Recall on a labelled set: an identifier counts as caught when no part of it survives."""

    identifiers: int = 0
    caught: int = 0
    by_type: dict[str, list[int]] = field(default_factory=dict)  # type -> [caught, total]
    clinical_total: int = 0
    clinical_kept: int = 0
    missed: list[str] = field(default_factory=list)  # "TYPE: line N" (no identifier text)

    @property
    def recall(self) -> float:
        return self.caught / self.identifiers if self.identifiers else 1.0

    @property
    def clinical_retention(self) -> float:
        return self.clinical_kept / self.clinical_total if self.clinical_total else 1.0

    def to_dict(self) -> dict[str, object]:
        return {
            "identifiers": self.identifiers,
            "recall": round(self.recall, 4),
            "by_type": {k: {"caught": v[0], "total": v[1]} for k, v in sorted(self.by_type.items())},
            "clinical_spans": self.clinical_total,
            "clinical_retention": round(self.clinical_retention, 4),
            "missed": self.missed,
        }


def measure_recall(deid: Deidentifier, examples: Iterable[dict[str, object]]) -> RecallReport:
    """Score ``deid`` on examples ``{"text", "phi": [[value, TYPE]...], "keep": [clinical spans]}``.

    A multi-word identifier counts as caught only if none of its words (longer than two
    characters) survives: "Sarah [NAME]" still identifies Sarah.
    """
    report = RecallReport()
    for lineno, ex in enumerate(examples, start=1):
        out = deid.scrub(str(ex["text"])).text
        for value, kind in ex.get("phi", []):  # type: ignore[union-attr]
            parts = [p for p in re.split(r"[\s,]+", value) if len(p) > 2] or [value]
            ok = value not in out and not any(re.search(rf"(?<!\w){re.escape(p)}(?!\w)", out) for p in parts)
            report.identifiers += 1
            report.caught += ok
            counts = report.by_type.setdefault(kind, [0, 0])
            counts[0] += ok
            counts[1] += 1
            if not ok:
                report.missed.append(f"{kind}: line {lineno}")
        for span in ex.get("keep", []):  # type: ignore[union-attr]
            report.clinical_total += 1
            report.clinical_kept += span in out
    return report
