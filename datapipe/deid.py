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
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

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


def _cue(words: str) -> str:
    # a cue phrase, optional "number/no/#/id", optional "is" / ":" then the value
    return rf"(?i:\b(?:{words})(?:\s+(?:number|no\.?|num|#|id))?\s*(?:is|:|#|=)?\s*)"


@dataclass(frozen=True)
class _Rule:
    """One detector. ``gate`` is a cheap precondition (substrings of the lower-cased text, a
    small regex, or a minimum digit-run length) that skips the full pattern on most texts:
    Python's regex engine is the throughput bottleneck of the whole build."""

    kind: str
    pattern: re.Pattern[str]
    group: int | str = 0
    check: str | None = None  # name of an extra validator
    gate: Gate = None


Gate = frozenset[str] | tuple[str, ...] | str | re.Pattern[str] | int | None


@dataclass(frozen=True)
class _Probe:
    """What the gates look at, computed once per text: lower-cased text, its words, digit runs."""

    text: str
    lower: str
    words: frozenset[str]
    max_digit_run: int

    def passes(self, gate: Gate) -> bool:
        if gate is None:
            return True
        if isinstance(gate, frozenset):
            return not gate.isdisjoint(self.words)
        if isinstance(gate, int):
            return self.max_digit_run >= gate
        if isinstance(gate, str):
            return gate in self.lower
        if isinstance(gate, tuple):
            return any(g in self.lower for g in gate)
        return gate.search(self.text) is not None


_DIGIT_RUN_RE = re.compile(r"\d+")
_ALPHA_RE = re.compile(r"[a-z]+")


def _probe(text: str) -> _Probe:
    runs = _DIGIT_RUN_RE.findall(text)
    lower = text.lower()
    return _Probe(text, lower, frozenset(_ALPHA_RE.findall(lower)), max(map(len, runs), default=0))


@functools.lru_cache(maxsize=8192)
def _token_pattern(token: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(token)}(?!\w)", re.IGNORECASE)


def _rules() -> list[_Rule]:
    r = re.compile
    return [
        _Rule("EMAIL", r(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+"), gate="@"),
        _Rule("URL", r(r"(?i)\b(?:https?://|www\.)[^\s<>\"')\]]+"), gate=("http", "www.")),
        _Rule(
            "URL",
            r(r"(?i)\b[\w\-]+(?:\.[\w\-]+)*\.(?:com|org|net|edu|gov|io|info|biz|me|us)(?:/[^\s]*)?\b"),
            gate=r(r"(?i)\.(?:com|org|net|edu|gov|io|info|biz|me|us)\b"),
        ),
        _Rule(
            "IP",
            r(r"\b(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}\b"),
            gate=r(r"\d\.\d+\.\d"),
        ),
        _Rule(
            "IP",
            r(r"(?i)\b(?:[0-9a-f]{1,4}:){2,7}(?::|[0-9a-f]{1,4})(?::[0-9a-f]{1,4})*\b"),
            gate=r(r"(?i)[0-9a-f]:[0-9a-f]*:"),
        ),
        _Rule("SSN", r(r"\b\d{3}-\d{2}-\d{4}\b"), gate=4),
        _Rule(
            "SSN",
            r(_cue(r"ssn|social security(?: number)?") + r"(?P<v>\d{3}[\s\-]?\d{2}[\s\-]?\d{4})"),
            "v",
            gate=frozenset({"ssn", "social"}),
        ),
        _Rule(
            "VEHICLE",
            r(_cue(r"licen[cs]e plate|plate|vin|vehicle(?: id)?") + rf"(?P<v>{_ID_VALUE})"),
            "v",
            gate=frozenset({"plate", "plates", "vin", "vehicle"}),
        ),
        _Rule("FAX", r(_cue(r"fax") + r"(?P<v>\+?[\d(][\d\s().\-]{8,}\d)"), "v", gate=frozenset({"fax"})),
        _Rule(
            "MRN",
            r(_cue(r"mrn|medical record|chart|patient id|record") + rf"(?P<v>{_ID_VALUE})"),
            "v",
            gate=frozenset({"mrn", "record", "records", "chart", "patient"}),
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
            gate=frozenset(
                {
                    "member",
                    "policy",
                    "insurance",
                    "subscriber",
                    "group",
                    "medicaid",
                    "medicare",
                    "plan",
                    "beneficiary",
                }
            ),
        ),
        _Rule(
            "ACCOUNT",
            r(_cue(r"account|acct|card|iban|routing") + rf"(?P<v>{_ID_VALUE})"),
            "v",
            gate=frozenset({"account", "acct", "card", "iban", "routing"}),
        ),
        _Rule(
            "LICENSE",
            r(_cue(r"driver'?s licen[cs]e|licen[cs]e|dea|npi|certificate|passport") + rf"(?P<v>{_ID_VALUE})"),
            "v",
            gate=frozenset({"license", "licence", "dea", "npi", "certificate", "passport"}),
        ),
        _Rule(
            "DEVICE",
            r(_cue(r"serial|device(?: id)?|imei|udi|model") + rf"(?P<v>{_ID_VALUE})"),
            "v",
            gate=frozenset({"serial", "device", "imei", "udi", "model"}),
        ),
        _Rule("ACCOUNT", r(r"\b(?:\d[ \-]?){12,18}\d\b"), check="luhn", gate=4),
        _Rule(
            "PHONE",
            r(
                r"(?<![\w+])(?:\+?1[\s.\-]?)?(?:\(\d{3}\)|\d{3})[\s.\-]?\d{3}[\s.\-]?\d{4}"
                r"(?:\s*(?:x|ext\.?)\s*\d{1,5})?\b"
            ),
            gate=3,
        ),
        _Rule("PHONE", r(r"(?<!\w)\+\d{1,3}(?:[\s.\-]?\(?\d{1,4}\)?){2,5}\d\b"), gate="+"),
        # dates: numeric with a year, ISO, written months, and cued day/month without a year
        _Rule("DATE", r(r"\b\d{4}[\-/.]\d{1,2}[\-/.]\d{1,2}\b"), check="ymd", gate=4),
        _Rule(
            "DATE",
            r(r"\b\d{1,2}[/\-.]\d{1,2}[/\-.](?:\d{4}|\d{2})\b"),
            check="mdy",
            gate=r(r"\d[/\-.]\d+[/\-.]\d"),
        ),
        _Rule(
            "DATE",
            r(
                rf"\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?\b(?!\s*(?:mg|ml|mcg|units?|hours?|days?))"
            ),
            gate=_MONTH_WORDS,
        ),
        _Rule(
            "DATE",
            r(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\b\.?(?:,?\s+\d{{4}})?"),
            gate=_MONTH_WORDS,
        ),
        _Rule("DATE", r(rf"\b{_MONTH}\.?,?\s+(?:of\s+)?(?:19|20)\d{{2}}\b"), gate=_MONTH_WORDS),
        _Rule(
            "DATE",
            r(
                r"(?i:\b(?:on|since|from|until|till|by|dated?|dob|d\.o\.b\.?|born|seen|admitted|discharged)\s*:?\s+)"
                r"(?P<v>\d{1,2}/\d{1,2})\b(?!/)"
            ),
            "v",
            check="md",
            gate="/",
        ),
        # ages over 89 (Safe Harbor): the number only; ages up to 89 are clinical content and stay
        _Rule(
            "AGE",
            r(
                r"\b(?P<v>9\d|1[0-2]\d)"
                r"(?=\s*(?:-|\s)?\s*(?:years?|yrs?|y/?o\b|y\.o\.|-?year-old|year old|yo\b))",
                re.I,
            ),
            "v",
            gate=r(r"\b(?:9\d|1[0-2]\d)\b"),
        ),
        _Rule(
            "AGE",
            r(r"(?i:\b(?:age[d]?|aged?:|age:)\s*)(?P<v>9\d|1[0-2]\d)\b"),
            "v",
            gate=r(r"\b(?:9\d|1[0-2]\d)\b"),
        ),
        # geography below the state
        _Rule(
            "LOCATION",
            r(
                rf"\b\d{{1,6}}\s+(?:[NSEW]\.?\s+)?(?:{_CAP}\s+){{0,3}}{_CAP}\s+{_STREET_SUFFIX}\b\.?"
                r"(?:,?\s*(?:Apt|Apartment|Unit|Suite|Ste|#)\.?\s*\w+)?"
            ),
            gate=r(r"\d\s+[A-Z]"),
        ),
        _Rule("LOCATION", r(r"(?i)\bP\.?\s?O\.?\s+Box\s+\d+"), gate=frozenset({"box"})),
        _Rule(
            "LOCATION",
            r(
                rf"(?:{_CAP}\s+){{0,3}}{_CAP}\s+(?:Hospital|Medical Center|Medical Centre|Clinic|"
                r"Health Center|Health Centre|Infirmary|Urgent Care|Nursing Home|Care Home)\b"
            ),
            gate=frozenset({"hospital", "clinic", "center", "centre", "infirmary", "care", "home"}),
        ),
        _Rule(
            "ZIP", r(rf"(?:\b(?:{_STATE_ABBR}|{_STATES})\.?,?\s+)(?P<v>\d{{5}}(?:-\d{{4}})?)\b"), "v", gate=5
        ),
        _Rule(
            "ZIP",
            r(r"(?i:\b(?:zip|postal|post)\s*(?:code)?\s*:?\s*)(?P<v>\d{5}(?:-\d{4})?)\b"),
            "v",
            gate=frozenset({"zip", "postal", "post"}),
        ),
        _Rule("ZIP", r(r"\b\d{5}-\d{4}\b"), gate=5),
        _Rule(
            "LOCATION",
            r(rf"(?P<v>{_CAP}(?:\s+{_CAP}){{0,2}}),\s+(?:{_STATE_ABBR}|{_STATES})\b"),
            "v",
            check="not_state",
            gate=r(r",\s+[A-Z][A-Za-z]"),
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
            gate=frozenset(
                {
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
                }
            ),
        ),
        # names: after a title or a cue, and first names from the census-derived list
        _Rule(
            "NAME",
            r(
                rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Doctor|Nurse|Sister|Father)\.?\s+(?P<v>{_CAP}(?:\s+{_CAP})?)"
            ),
            "v",
            gate=frozenset(
                {"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "doctor", "nurse", "sister", "father"}
            ),
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
            gate=frozenset(
                {
                    "name",
                    "named",
                    "called",
                    "signed",
                    "sincerely",
                    "regards",
                    "thanks",
                    "thank",
                    "patient",
                    "pt",
                    "contact",
                    "ask",
                    "from",
                    "to",
                }
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
            gate=frozenset({"my"}),
        ),
        _Rule(
            "ID",
            r(r"\b(?=[A-Z0-9\-]*[A-Z])(?=(?:[A-Z\-]*\d){4})[A-Z0-9][A-Z0-9\-]{6,}[A-Z0-9]\b"),
            gate=r(r"\d[A-Z\-]*\d[A-Z\-]*\d[A-Z\-]*\d"),
        ),
        _Rule("ID", r(r"(?<![\d.,])\d{7,}(?![\d.,]*\s*(?:mg|mcg|ml|units?|iu|cells))"), gate=7),
    ]


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


@dataclass
class DeidResult:
    """Scrubbed text and how many identifiers of each type were replaced."""

    text: str
    counts: Counter[str] = field(default_factory=Counter)


_RESIDUAL_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("at-sign", re.compile(r"\S@\S")),
    ("long digit run", re.compile(r"\d(?:[\s().\-]?\d){6,}")),
    ("url", re.compile(r"(?i)https?:|www\.")),
    ("name cue", re.compile(r"(?i)\b(?:my name is|name:)\s+(?!\[NAME\])\S")),
    ("date of birth", re.compile(r"(?i)\b(?:dob|date of birth|born on)\b\s*:?\s*(?!\[DATE\])\d")),
    ("ssn cue", re.compile(r"(?i)\b(?:ssn|social security)\b[^.\n]{0,12}\d")),
)


class Deidentifier:
    """Replace Safe Harbor identifiers in text with typed placeholders.

    ``names``: extra names to scrub wherever they appear (a clinic's staff list, for example).
    """

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._rules = _rules()
        self._first, self._last = _name_lists()
        self._extra = frozenset(n.lower() for n in names if len(n) > 1)

    # -- detection

    def _spans(self, text: str, known: Sequence[tuple[str, str]]) -> list[tuple[int, int, str]]:
        spans: list[tuple[int, int, str]] = []
        probe = _probe(text)
        for kind, value in known:
            for token in _known_tokens(kind, value):
                if token.lower() not in probe.lower:
                    continue
                for m in _token_pattern(token).finditer(text):
                    spans.append((m.start(), m.end(), kind))
        for rule in self._rules:
            if not probe.passes(rule.gate):
                continue
            for m in rule.pattern.finditer(text):
                start, end = m.span(rule.group)
                if start < 0 or start == end:
                    continue
                if rule.check and not _check(rule.check, m.group(rule.group)):
                    continue
                spans.append((start, end, rule.kind))
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

    @staticmethod
    def residual_risks(text: str) -> list[str]:
        """Reasons scrubbed text still looks identifying (empty when it looks clean)."""
        probe = _PLACEHOLDER_RE.sub(" ", text)
        reasons = [name for name, pattern in _RESIDUAL_RULES if pattern.search(probe)]
        # a name cue is checked on the un-probed text (the placeholder is what makes it safe)
        if "name cue" in reasons and not _RESIDUAL_RULES[3][1].search(text):
            reasons.remove("name cue")
        if "date of birth" in reasons and not _RESIDUAL_RULES[4][1].search(text):
            reasons.remove("date of birth")
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
