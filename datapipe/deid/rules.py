"""The rules: patterns for Safe Harbor's structured identifiers (45 CFR 164.514(b)(2)).

Rules are right where an identifier has a shape (phones, e-mails, dates, SSNs, record numbers,
URLs, IPs) or a cue word before it ("MRN", "member id", "plate"). Names and places have neither,
so they are the NER pass's job (:mod:`.ner`, :mod:`.context`); the few name and place rules
here (titles, "City, ST", street addresses, the census first-name gazetteer) stay as a second
net under the model.

Every rule has a cheap *gate* (a necessary condition) so its regex only runs on texts that could
match; :mod:`.prefilter` replaces the gates by one Hyperscan scan. The word lists the rules use
are data, in ``data/*.txt``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from healthnav.datapipe.deid.lexicon import read_list, word_set

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
    "BIOMETRIC",
    "PHOTO",
    "ID",
)
#: What replaces an age over 89: Safe Harbor's own aggregate, the words the server renders for
#: such an age (``prompts.format_assessment_input``), so train and serve see the same text.
AGE_AGGREGATE = "90 or older"
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
PLACEHOLDER_RE = re.compile(r"\[(?:" + "|".join(PLACEHOLDER_TYPES) + r")\]")

# after an eponym: "Bell's palsy", "Down syndrome", "Graves disease", "Epley manoeuvre". Used with
# ``pattern.match(text, pos)``, which anchors at ``pos`` (a "^" would only match at 0)
EPONYM_AFTER = re.compile(
    r"(?:'s|\u2019s|s'|')?\s+(?:disease|syndrome|palsy|sign|test|maneuver|manoeuvre|law|ulcer|"
    r"disorder|phenomenon|reflex|score|scale|criteria|triad|cyst|tumou?r|lymphoma|sarcoma|"
    r"thyroiditis|encephalopathy|contracture|fracture|procedure|manoeuvres|maneuvers)\b",
    re.I,
)

_MONTH = (
    r"(?:(?i:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|jun(?:e)?|jul(?:y)?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)|May)"
)
_STATE_NAMES = [s for s in read_list("us_states") if not s.isupper()]
_STATES = "|".join(_STATE_NAMES)
_STATE_ABBR = "|".join(s for s in read_list("us_states") if s.isupper())
STATE_SET = frozenset(s.lower() for s in _STATE_NAMES) | word_set("non_identifying_places")
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
    r"Ter|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Row|Close|Crescent)"
)
_CAP = r"[A-Z][a-zA-Z'\u2019\-]+"
# an identifier after its cue; it may be written in space-separated groups ("5521 0830 1192",
# "QXE 2231 77 09", plate "7KLM 204"): every further group starts with a digit
ID_VALUE = (
    r"(?:(?=[A-Za-z0-9\-]*\d)[A-Za-z0-9][A-Za-z0-9\-]{3,}|[A-Z]{1,4}(?= \d)|\d{2,3}(?= \d{3}))"
    r"(?: \d[A-Za-z0-9\-]+)*"
)
# What Hyperscan's prefilter scans for in place of ID_VALUE: matches wherever ID_VALUE does
# (its look-ahead asks for a digit within the value), which prefilter mode would otherwise drop
ID_VALUE_HS = r"(?:\d|[A-Za-z0-9][A-Za-z0-9\-]*\d|[A-Z]{1,4} \d)"


def _cue(words: str) -> str:
    # a cue phrase, optional "number/no/#/id", optional "is" / ":" then the value
    return rf"(?i:\b(?:{words})(?:\s+(?:number|no\.?|num|#|id))?\s*(?:is|:|#|=)?\s*)"


class Probe:
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
Gate = Callable[[Probe], bool] | None


@dataclass(frozen=True)
class Rule:
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

    def gate(p: Probe) -> bool:
        return not words.isdisjoint(p.words) or any(c in p.lower for c in phrases)

    return gate


_MONTH_GATE = _cues(*_MONTH_WORDS)


def _age_over_89(p: Probe) -> bool:
    return any(len(r) in (2, 3) and 90 <= int(r) <= 129 for r in p.runs)


_DIGIT_RUN_RE = re.compile(r"\d+")
_DIGITS_ONLY = bytes(c if 48 <= c <= 57 else 32 for c in range(256))
_LETTERS_ONLY = bytes(c if 97 <= c <= 122 else 32 for c in range(256))


def probe(text: str) -> Probe:
    return Probe(text)


@functools.lru_cache(maxsize=8192)
def token_pattern(token: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(token)}(?!\w)", re.IGNORECASE)


_TLD_WORDS = _cues("com", "org", "net", "edu", "gov", "io", "info", "biz", "me", "us")
_STREET_WORDS = _cues(*(w.lower() for w in re.findall(r"[A-Za-z]+", _STREET_SUFFIX)))
_DIGIT_CAP = _regex(r"\d\s+[A-Z]")
_IPV6_RE = re.compile(r"[0-9a-fA-F]:[0-9a-fA-F]*:")


def _tld_gate(p: Probe) -> bool:
    return "." in p.text and _TLD_WORDS(p)  # type: ignore[misc]


def _street_gate(p: Probe) -> bool:
    return _STREET_WORDS(p) and _DIGIT_CAP(p)  # type: ignore[misc]


def _ipv6_gate(p: Probe) -> bool:
    # an IPv6 address has two colons each followed by a hex digit or a colon, never by a space
    t = p.text
    return t.count(":") - t.count(": ") - t.count(":\n") >= 2 and p.search(_IPV6_RE)


# the age unit after the number, swallowed with it: "97 years old", "96-year-old", "91yo", "93 y/o"
_AGE_UNIT = r"(?:\s*(?:-|\s)?\s*(?:years?|yrs?|y/?o\b|y\.o\.|yo\b|y\b)(?:[\s-]*old\b)?(?:\s+of\s+age\b)?)"
_AGE_YEARS = rf"\b(?P<v>(?:9\d|1[0-2]\d){_AGE_UNIT}(?:\s+or\s+older\b|\+)?)"
# after a cue the unit is optional, and "or older" / "+" goes with the number
_AGE_TAIL = rf"(?:{_AGE_UNIT})?(?:\s+or\s+older\b|\s+plus\b|\+)?"
# a number after "is" that is a measurement, not an age: "O2 is 92%", "sugar was 95 mg/dl"
_NOT_A_MEASURE = (
    r"(?!\s*(?:%|percent|mg|mcg|ml|bpm|beats|degrees|deg|/|\.\d|over|mm|lbs?|kg|pounds|f\b|c\b|"
    r"minutes|mins|times|units))"
)
_PERSON_WORDS = (
    r"he|she|i|i'?m|im|i\u2019m|they|who|mom|mum|mother|dad|father|grandma|grandpa|grandmother|grandfather|"
    r"gran|granny|nan|nana|husband|wife|aunt|auntie|uncle|patient|pt|neighbou?r|sister|brother|friend|"
    r"partner|grandad|granddad|great[- ]grandma|great[- ]grandmother|great[- ]grandfather"
)


# no unit right after a number: "500-1000 mg" is a dose range, "floor 2 times" is not a floor
_NO_UNIT_AFTER = (
    r"(?!\s*(?:mg|mcg|ml|g\b|kg|lbs?|units?|iu|%|percent|steps|cal|kcal|calories|mmol|cells|copies|"
    r"times|x\b|mins?|minutes|hours?|hrs?|days?|weeks?|wks?|months?|years?|yrs?|doses?|tabs?|tablets?|pills?|"
    r"miles?|mi\b|km|blocks?|feet|ft\b|people|patients))"
)
# in lower-case text only the suffixes that are not also everyday or clinical words ("drive",
# "court", "ct" for a CT scan are left to the capitalised rule)
_STREET_SUFFIX_ANYCASE = (
    r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|terrace|parkway|pkwy|highway|hwy|trail|trl|"
    r"crescent|pike)"
)
# holidays name a day of the year: "boxing day", "thanksgiving", "new year's day", "4th of july"
_HOLIDAY_WORDS = (
    "christmas",
    "xmas",
    "thanksgiving",
    "easter",
    "halloween",
    "valentine",
    "valentine's",
    "independence",
    "memorial",
    "labor",
    "labour",
    "boxing",
    "new year",
    "new year's",
    "good friday",
    "mother's day",
    "father's day",
    "diwali",
    "hanukkah",
    "chanukah",
    "passover",
    "rosh hashanah",
    "yom kippur",
    "eid",
    "lunar new year",
    "mlk",
    "veterans",
    "juneteenth",
    "of july",
    "st patrick",
    "st. patrick",
)
_HOLIDAYS = (
    r"(?i)\b(?:(?:christmas|xmas|new\s+year'?s?|easter|halloween|thanksgiving|st\.?\s+patrick'?s|"
    r"good\s+friday|juneteenth|diwali|hanukkah|chanukah|passover|rosh\s+hashanah|yom\s+kippur|"
    r"eid(?:\s+al[\s-](?:fitr|adha))?|lunar\s+new\s+year|(?:4th|fourth)\s+of\s+july)"
    r"(?:\s+(?:eve|day|sunday|monday|morning|night|weekend))?"
    # these are words on their own ("memorial hospital", "in labour"): only with "day"
    r"|(?:boxing|valentine'?s|independence|memorial|labou?r|veterans'?|mother'?s|father'?s|mlk|"
    r"presidents'?)\s+day)\b"
)


def rules() -> list[Rule]:
    r = re.compile
    return [
        Rule("EMAIL", r(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+"), gate=_cased_any("@")),
        Rule("URL", r(r"(?i)\b(?:https?://|www\.)[^\s<>\"')\]]+"), gate=_lower_any("http", "www.")),
        Rule(
            "URL",
            r(r"(?i)\b[\w\-]+(?:\.[\w\-]+)*\.(?:com|org|net|edu|gov|io|info|biz|me|us)(?:/[^\s]*)?\b"),
            gate=_tld_gate,
        ),
        Rule(
            "IP",
            r(r"\b(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}\b"),
            gate=_regex(r"\d\.\d+\.\d", min_runs=4, chars="."),
        ),
        Rule(
            "IP",
            r(r"(?i)\b(?:[0-9a-f]{1,4}:){2,7}(?::|[0-9a-f]{1,4})(?::[0-9a-f]{1,4})*\b"),
            gate=_ipv6_gate,
        ),
        Rule("SSN", r(r"\b\d{3}-\d{2}-\d{4}\b"), gate=_digit_run(4)),
        Rule(
            "SSN",
            r(_cue(r"ssn|social security(?: number)?") + r"(?P<v>\d{3}[\s\-]?\d{2}[\s\-]?\d{4})"),
            "v",
            gate=_cues("ssn", "social"),
        ),
        Rule(
            "VEHICLE",
            r(_cue(r"licen[cs]e plate|plate|vin|vehicle(?: id)?") + rf"(?P<v>{ID_VALUE})"),
            "v",
            gate=_cues("plate", "plates", "vin", "vehicle"),
        ),
        Rule("FAX", r(_cue(r"fax") + r"(?P<v>\+?[\d(][\d\s().\-]{8,}\d)"), "v", gate=_cues("fax")),
        Rule(
            "MRN",
            r(_cue(r"mrn|medical record|chart|patient id|record") + rf"(?P<v>{ID_VALUE})"),
            "v",
            gate=_cues("mrn", "record", "records", "chart", "patient id"),
        ),
        Rule(
            "HEALTH_PLAN",
            r(
                _cue(
                    r"member|policy|insurance(?: id)?|subscriber|group|medicaid|medicare|health plan|"
                    r"beneficiary"
                )
                + rf"(?P<v>{ID_VALUE})"
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
        Rule(
            "ACCOUNT",
            r(_cue(r"account|acct|card|iban|routing") + rf"(?P<v>{ID_VALUE})"),
            "v",
            gate=_cues("account", "acct", "card", "iban", "routing"),
        ),
        Rule(
            "LICENSE",
            r(
                _cue(r"driver'?s licen[cs]e|licen[cs]e|lic|dl|cdl|dea|npi|certificate|cert|passport|permit")
                + rf"(?P<v>{ID_VALUE})"
            ),
            "v",
            gate=_cues(
                "license",
                "licence",
                "lic",
                "dl",
                "cdl",
                "dea",
                "npi",
                "certificate",
                "cert",
                "passport",
                "permit",
            ),
        ),
        Rule(
            "DEVICE",
            r(_cue(r"serial|device(?: id)?|imei|udi|model|sn|s/n|lot") + rf"(?P<v>{ID_VALUE})"),
            "v",
            gate=_cues("serial", "device", "imei", "udi", "model", "sn", "s/n", "lot"),
        ),
        Rule("ACCOUNT", r(r"\b(?:\d[ \-]?){12,18}\d\b"), check="luhn", gate=_digit_run(4)),
        Rule(
            "PHONE",
            r(
                r"(?<![\w+])(?:\+?1[\s.\-]?)?(?:\(\d{3}\)|\d{3})[\s.\-]?\d{3}[\s.\-]?\d{4}"
                r"(?:\s*(?:x|ext\.?)\s*\d{1,5})?\b"
            ),
            gate=_digit_run(3),
        ),
        Rule("PHONE", r(r"(?<!\w)\+\d{1,3}(?:[\s.\-]?\(?\d{1,4}\)?){2,5}\d\b"), gate=_cased_any("+")),
        # dates: numeric with a year, ISO, written months, and cued day/month without a year
        Rule("DATE", r(r"\b\d{4}[\-/.]\d{1,2}[\-/.]\d{1,2}\b"), check="ymd", gate=_digit_run(4)),
        Rule(
            "DATE",
            r(r"\b\d{1,2}[/\-.]\d{1,2}[/\-.](?:\d{4}|\d{2})\b"),
            check="mdy",
            gate=_regex(r"\d[/\-.]\d+[/\-.]\d", min_runs=3),
        ),
        Rule(
            "DATE",
            r(
                rf"\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?\b(?!\s*(?:mg|ml|mcg|units?|hours?|days?))"
            ),
            gate=_MONTH_GATE,
        ),
        Rule(
            "DATE",
            r(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\b\.?(?:,?\s+\d{{4}})?"),
            gate=_MONTH_GATE,
        ),
        Rule("DATE", r(rf"\b{_MONTH}\.?,?\s+(?:of\s+)?(?:19|20)\d{{2}}\b"), gate=_MONTH_GATE),
        Rule(
            "DATE",
            r(
                r"(?i:\b(?:on|since|from|until|till|by|dated?|dob|d\.o\.b\.?|born|seen|admitted|discharged)\s*:?\s+)"
                r"(?P<v>\d{1,2}/\d{1,2})\b(?!/)"
            ),
            "v",
            check="md",
            gate=_cased_any("/"),
        ),
        Rule(
            "DATE",  # a day of the month on its own: "on the 14th", "by the 3rd", "the 21st of"
            r(
                r"(?i:\b(?:on|by|since|until|till|before|after|from|due)\s+the\s+)"
                r"(?P<v>(?:[12]?\d|3[01])(?:st|nd|rd|th))\b(?!\s+(?:time|day|week|dose|floor|grade|percentile))"
            ),
            "v",
            gate=_cues("st", "nd", "rd", "th"),
        ),
        Rule(
            "DATE",  # a weekday with a day of the month: "Tuesday the 14th", "Wednesday 8th"
            r(
                r"(?i)\b(?:(?:last|next|this|past|coming)\s+)?(?:mon|tues?|wed(?:nes)?|thu(?:rs?)?|fri|sat(?:ur)?|sun)"
                r"(?:day)?\.?,?\s+(?:the\s+)?"
                r"(?:[12]?\d|3[01])(?:st|nd|rd|th)\b"
            ),
            gate=_cues("st", "nd", "rd", "th"),
        ),
        Rule(
            "DATE",  # a month named on its own after a time cue: "since August", "in early June"
            r(
                r"(?i:\b(?:since|in|until|till|by|from|last|next|early|mid|late|during|around|before|after|"
                r"this|of)\s+(?:early\s+|mid\s+|late\s+)?)"
                r"(?P<v>(?:January|February|April|June|July|August|September|October|November|December|"
                r"March|May|january|february|april|june|july|august|september|october|november|december))\b"
            ),
            "v",
            gate=_MONTH_GATE,
        ),
        Rule(
            "DATE",  # month/day without a year after a sequence cue: "took it off 6/21", "through 2/19"
            r(
                r"(?i:\b(?:off|through|thru|to|till|until|after|before|starting|started|ended|and|or|"
                r"shot|dose|last|next|admitted|discharged)\s+)"
                r"(?P<v>\d{1,2}/\d{1,2})\b(?![/\d])(?!\s*(?:pain|scale|tabs?|tablets?|strength|of\b|mg|ml))"
            ),
            "v",
            check="md",
            gate=_cased_any("/"),
        ),
        Rule(
            "AGE",  # a decade over 89: "in her late 90s", "in his nineties"
            r(
                r"(?i:\bin\s+(?:his|her|their|my|your)\s+)(?P<v>(?:(?:early|mid|late)[\s-]+)?(?:90s|90's|nineties))\b"
            ),
            "v",
            gate=_cues("90s", "nineties"),
        ),
        # ages over 89 (Safe Harbor), in every phrasing; each becomes AGE_AGGREGATE ("90 or older"),
        # so a unit the rule swallows ("years old") must not be left behind. Ages up to 89 stay.
        Rule("AGE", r(_AGE_YEARS, re.I), "v", gate=_age_over_89),
        Rule(
            "AGE",
            # "Age: 90 or older" is Safe Harbor's own aggregate (what prompts.format_assessment_input
            # renders for every age over 89), so it stays: train and serve see the same text
            r(
                r"(?i:\b(?:age[d]?|aged?:|age:|age\s+of|turned|turning|turns|just\s+turned|will\s+be)\s*)"
                rf"(?P<v>(?!90\s+or\s+older\b)(?:9\d|1[0-2]\d)\b{_AGE_TAIL})" + _NOT_A_MEASURE
            ),
            "v",
            gate=_age_over_89,
        ),
        Rule(
            "AGE",
            # "my dad is 97", "she's 93", "im 91": a person, then the number; "her sugar is 95" is not
            r(
                rf"(?i:\b(?:{_PERSON_WORDS})(?:'s|\u2019s|\s+is|\s+was|\s+am|\s+are|\s+turned|\s+turns)"
                r"\s+(?:now\s+|almost\s+|nearly\s+|about\s+|over\s+|only\s+)?)"
                rf"(?P<v>(?:9\d|1[0-2]\d)\b{_AGE_TAIL})" + _NOT_A_MEASURE
            ),
            "v",
            gate=_age_over_89,
        ),
        Rule(
            "AGE",
            # "Mrs Lan from Tupelo is 97 and…": "is N" ending a clause, unless a measurement precedes
            r(
                r"(?i:\b(?:is|was|turned|turns)[ \t]+(?:now[ \t]+|almost[ \t]+|"
                r"nearly[ \t]+|about[ \t]+|over[ \t]+|only[ \t]+)?)"
                rf"(?P<v>(?:9\d|1[0-2]\d)\b{_AGE_TAIL})"
                r"(?=\s*(?:$|[,.;!?)]|and\b|but\b|now\b|this\b|next\b|last\b|in\b|on\b|so\b|yrs?\b|years?\b))"
                + _NOT_A_MEASURE
            ),
            "v",
            check="ctx:not_a_measure",
            gate=_age_over_89,
        ),
        Rule(
            "AGE",
            # written out: "ninety-three", "one hundred and two"; not "ninety minutes"
            r(
                r"(?i)\b(?P<v>(?:ninety|(?:a|one)\s+hundred(?:\s+and)?)(?:[\s-]+(?:one|two|three|four|five|six|"
                r"seven|eight|nine|ten|eleven|twelve))?(?:\s*(?:-|\s)\s*(?:years?|yrs?)(?:[\s-]*old)?)?)\b"
                r"(?!\s*(?:percent|%|minutes?|mins?|seconds?|secs?|hours?|days?|times|mg|pounds|lbs?|dollars|"
                r"over|degrees|bucks|feet|miles))"
            ),
            "v",
            gate=_cues("ninety", "hundred"),
        ),
        # geography below the state
        Rule(
            "LOCATION",
            r(
                rf"\b\d{{1,6}}\s+(?:[NSEW]\.?\s+)?(?:{_CAP}\s+){{0,3}}{_CAP}\s+{_STREET_SUFFIX}\b\.?"
                r"(?:,?\s*(?:Apt|Apartment|Unit|Suite|Ste|#)\.?\s*\w+)?"
            ),
            gate=_street_gate,
        ),
        Rule("LOCATION", r(r"(?i)\bP\.?\s?O\.?\s+Box\s+\d+"), gate=_cues("box")),
        Rule(
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
        Rule(
            "ZIP",
            r(rf"(?:\b(?:{_STATE_ABBR}|{_STATES})\.?,?\s+)(?P<v>\d{{5}}(?:-\d{{4}})?)\b"),
            "v",
            gate=_digit_run(5),
            hs=r"[A-Za-z]\.?,?\s+\d{5}",  # every state name ends in a letter; scans 3x faster
        ),
        Rule(
            "ZIP",
            r(r"(?i:\b(?:zip|postal|post)\s*(?:code)?\s*:?\s*)(?P<v>\d{5}(?:-\d{4})?)\b"),
            "v",
            gate=_cues("zip", "postal", "post"),
        ),
        Rule("ZIP", r(r"\b\d{5}-\d{4}\b"), gate=_digit_run(5)),
        Rule(
            "LOCATION",
            r(rf"(?P<v>{_CAP}(?:\s+{_CAP}){{0,2}}),\s+(?:{_STATE_ABBR}|{_STATES})\b"),
            "v",
            check="not_state",
            gate=_regex(r",\s+[A-Z][A-Za-z]", min_runs=0, chars=","),
        ),
        Rule(
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
        Rule(
            "NAME",
            r(
                rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Doctor|Nurse|Sister|Father)\.?\s+(?P<v>{_CAP}(?:\s+{_CAP})?)"
            ),
            "v",
            gate=_cased_any("Mr", "Ms", "Miss", "Mx", "Dr", "Prof", "Doctor", "Nurse", "Sister", "Father"),
        ),
        Rule(
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
        Rule(
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
        Rule(
            "ID",  # other unique numbers: employee, student, case, claim, prescription, badge numbers
            r(
                _cue(
                    r"employee|staff|badge|student|case|claim|ticket|reference|ref|confirmation|order|"
                    r"prescription|rx|booking|customer|client|file|enrol?ment|registration|tracking|worker|"
                    r"payroll|inmate|military|service|visa|benefits?|national id|id card|id|user ?name|"
                    r"user ?id|login|log-in|handle|screen name"
                )
                + rf"(?P<v>{ID_VALUE})"
            ),
            "v",
            gate=_cues(
                "employee",
                "staff",
                "badge",
                "student",
                "case",
                "claim",
                "ticket",
                "reference",
                "ref",
                "confirmation",
                "order",
                "prescription",
                "rx",
                "booking",
                "customer",
                "client",
                "file",
                "enrolment",
                "enrollment",
                "registration",
                "tracking",
                "worker",
                "payroll",
                "inmate",
                "military",
                "service",
                "visa",
                "benefit",
                "benefits",
                "national id",
                "id card",
                "id",
                "username",
                "user",
                "userid",
                "login",
                "log-in",
                "handle",
                "screen name",
            ),
        ),
        Rule(
            "BIOMETRIC",
            r(
                _cue(
                    r"(?:finger ?print|thumb ?print|voice ?print|palm ?print|retina(?:l)?|iris|face ?id|"
                    r"facial|biometric|dna|gait)(?:\s+(?:scan|template|hash|profile|sample|record|code|key|"
                    r"signature|enrol?ment|match))?(?:\s+(?:id|ref))?"
                )
                + rf"(?P<v>{ID_VALUE})"
            ),
            "v",
            gate=_cues(
                "fingerprint",
                "finger",
                "thumbprint",
                "thumb",
                "voiceprint",
                "voice",
                "palmprint",
                "palm",
                "retina",
                "retinal",
                "iris",
                "face",
                "faceid",
                "facial",
                "biometric",
                "dna",
                "gait",
            ),
        ),
        Rule(
            "PHOTO",  # an image file named in the text (a selfie, a photo of a rash with a face in it)
            r(r"(?i)\b[\w\-.]*\w\.(?:jpe?g|png|heic|heif|gif|bmp|tiff?|webp|raw|dng)\b"),
            gate=_cues(
                "jpg", "jpeg", "png", "heic", "heif", "gif", "bmp", "tif", "tiff", "webp", "raw", "dng"
            ),
        ),
        Rule(
            "LOCATION",  # the unit of an address: "apt 4b", "unit 12", "suite 300", "#4B"
            r(
                r"(?i)\b(?:apt|apartment|unit|suite|ste|bldg|building|lot|space)\.?\s*#?\s*(?!of\b)"
                r"(?=[a-z]?\d)[a-z]?\d+[a-z]?\b"
            ),
            gate=_cues("apt", "apartment", "unit", "suite", "ste", "bldg", "building", "lot", "space"),
        ),
        Rule(
            "ID",
            r(r"\b(?=[A-Z0-9\-]*[A-Z])(?=(?:[A-Z\-]*\d){4})[A-Z0-9][A-Z0-9\-]{6,}[A-Z0-9]\b"),
            gate=_regex(r"\d[A-Z\-]*\d[A-Z\-]*\d[A-Z\-]*\d"),
        ),
        Rule("ID", r(r"(?<![\d.,])\d{7,}(?![\d.,]*\s*(?:mg|mcg|ml|units?|iu|cells))"), gate=_digit_run(7)),
        # a number written in three or more hyphenated groups ("12-4409-871", "4410-22-0913") is a
        # record or account number whatever its cue; a date or a phone number is judged as such
        Rule(
            "ID",
            r(r"(?<![\w\-/.])\d{2,5}(?:-\d{2,5}){2,4}(?![\w\-/])"),
            check="grouped_id",
            gate=_regex(r"\d-\d+-\d", min_runs=3, chars="-"),
        ),
        # phone numbers in the shapes people type that the North American pattern above misses:
        # UK numbers with the trunk 0 ("07700 900123", "020 7946 0018", "0161 496 0719") and a
        # seven-digit local number ("555-0142"), unless a unit follows (a dose range "500-1000 mg")
        Rule(
            "PHONE",
            r(
                r"(?<![\w+.\-/])0(?:\d{4}[ \-]?\d{6}|\d{3}[ \-]?\d{3}[ \-]?\d{4}|"
                r"\d{2}[ \-]?\d{4}[ \-]?\d{4})\b"
            ),
            gate=_digit_run(3),
        ),
        Rule(
            "PHONE",
            r(r"(?<![\w\-/.])[2-9]\d{2}-\d{4}\b(?![\-/])" + _NO_UNIT_AFTER),
            gate=_regex(r"\d{3}-\d{4}", min_runs=2, chars="-"),
        ),
        # rooms, beds, floors and buildings locate a person as precisely as a street address:
        # "room 30", "rm 5", "bed 12", "building D", "ward 7B"
        Rule(
            "LOCATION",
            r(
                r"(?i)\b(?:room|rm|bed|bay|ward|wing|floor|fl|cabin|dorm|flat|cubicle|berth|trailer|"
                r"tower|pod)\.?\s*#?\s*(?=[a-z]?\d)[a-z]?\d+[a-z]?\b(?![:/.]\d)" + _NO_UNIT_AFTER
            ),
            gate=_cues(
                "room",
                "rm",
                "bed",
                "bay",
                "ward",
                "wing",
                "floor",
                "fl",
                "cabin",
                "dorm",
                "flat",
                "cubicle",
                "berth",
                "trailer",
                "tower",
                "pod",
            ),
        ),
        Rule(
            "LOCATION",
            r(
                r"\b(?i:apt|apartment|unit|suite|ste|bldg|building|block|blk|wing|tower|ward|bay|hall|dorm|"
                r"cabin|house|cottage|pod)\s+#?(?!I\b)[A-Z](?![\w'\u2019])"
            ),
            gate=_regex(r"\s#?[A-Z](?![\w'])", min_runs=0),
        ),
        # roads by number and the places on them: "Hwy 12", "county road 9", "I-95", "exit 212",
        # "mile marker 12" (with a house number before, "5512 county road 9", taken too)
        Rule(
            "LOCATION",
            r(
                r"(?i)\b(?:\d{1,6}\s+)?(?:(?:county|state|farm|forest|us|u\.s\.)\s+(?:road|rd|route|rte|hwy|"
                r"highway)|highway|hwy|route|rte|interstate|exit|junction|jct|mile\s+marker)\.?\s*#?\s*"
                r"\d{1,4}[a-z]?\b" + _NO_UNIT_AFTER
            ),
            gate=_cues(
                "road",
                "rd",
                "route",
                "rte",
                "hwy",
                "highway",
                "interstate",
                "exit",
                "junction",
                "jct",
                "marker",
            ),
        ),
        Rule("LOCATION", r(r"\bI-\d{1,3}\b"), gate=_cased_any("I-")),
        # street addresses with numbered streets or typed in lower case: "2210-4 31st Ave",
        # "17 w birch st", "1203 e 4th ave"
        Rule(
            "LOCATION",
            r(
                r"(?i)\b\d{1,6}(?:-\d{1,4})?[a-z]?" + _NO_UNIT_AFTER + r"\s+(?:[nsew]\.?\s+)?"
                r"(?:(?!(?:the|a|an|to|of|and|from|in|on|at|my|his|her|our|for|by|up|down|per|a\s+day)\s)"
                r"[a-z][a-z'\u2019\-]+\s+|\d{1,3}(?:st|nd|rd|th)\s+){1,3}" + _STREET_SUFFIX_ANYCASE + r"\b\.?"
            ),
            gate=_STREET_WORDS,
        ),
        # a street named without a number: "on Rogers Ave", "off Bellaire Blvd", "near Elm Street"
        Rule(
            "LOCATION",
            r(
                rf"(?i:\b(?:on|off|at|near|along|down|up|by|across|past|corner\s+of)\s+(?:the\s+)?)"
                rf"(?P<v>(?:{_CAP}\s+){{1,3}}{_STREET_SUFFIX}\b\.?)"
            ),
            "v",
            gate=_STREET_WORDS,
        ),
        # a zip code after a place cue or before "zip": "i live in 30310", "the 02124 zip"
        Rule(
            "ZIP",
            r(
                r"(?i:\b(?:in|near|outside|area|live\s+in|lives\s+in)\s+(?:the\s+)?)"
                r"(?P<v>\d{5}(?:-\d{4})?)\b(?![.,]\d)(?!\s*(?:to|-|\u2013)\s*\d)(?!s\b)" + _NO_UNIT_AFTER
            ),
            "v",
            gate=_digit_run(5),
        ),
        Rule(
            "ZIP",
            r(r"\b(?P<v>\d{5}(?:-\d{4})?)(?i:\s+(?:zip|zipcode|zip\s+code|area|postcode))\b"),
            "v",
            gate=_cues("zip", "zipcode", "area", "postcode"),
        ),
        # dates: a list after a date ("on 3/2, 3/5 and 3/9"), a day of the month after an event
        # word ("discharged the 6th"), and holidays (a date without its year)
        Rule(
            "DATE",
            r(
                r"\b\d{1,2}/\d{1,2},\s+(?P<v>\d{1,2}/\d{1,2})\b(?![/\d])"
                r"(?!\s*(?:pain|scale|tabs?|tablets?|strength|of\b|mg|ml))"
            ),
            "v",
            check="md",
            gate=_cased_any("/"),
        ),
        Rule(
            "DATE",
            r(
                r"(?i:\b(?:admitted|discharged|seen|born|started|stopped|ended|booked|scheduled|rescheduled|"
                r"operated|delivered|induced|vaccinated|tested|released|moved|came\s+in|went\s+in|due)\s+"
                r"(?:on\s+)?the\s+)"
                r"(?P<v>(?:[12]?\d|3[01])(?:st|nd|rd|th))\b(?!\s+(?:time|day|week|dose|floor|grade|percentile))"
            ),
            "v",
            gate=_cues("st", "nd", "rd", "th"),
        ),
        Rule("DATE", r(_HOLIDAYS), gate=_cues(*_HOLIDAY_WORDS)),
        # a name in Chinese, Japanese or Korean script inside a Latin-script message ("赵建国"):
        # two to four characters standing alone (a sentence in those scripts is not taken)
        Rule(
            "NAME",
            r(
                r"(?<![\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af])"
                r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]{2,4}"
                r"(?![\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af])"
            ),
            gate=lambda p: not p.text.isascii(),
        ),
    ]


# every word the gazetteer could take as a first name: if none is a known first name, skip it
CAP_WORD_RE = re.compile(r"\b[A-Z][a-z'\u2019]+")
CAP_TOKEN_RE = re.compile(r"\b([A-Z][a-z'\u2019]+)(?:\s+([A-Z][a-z'\u2019\-]+))?")
COMMON_CAPS = word_set("common_capitalised")


@functools.cache
def name_lists() -> tuple[frozenset[str], frozenset[str]]:
    """First and last names (US census-derived lists shipped by Faker); empty if Faker is absent."""
    try:
        from faker.providers.person.en_US import Provider
    except ImportError:  # pragma: no cover - faker is in the "data" extra
        return frozenset(), frozenset()
    first = frozenset(n.lower() for n in Provider.first_names) - word_set("name_stopwords")
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


def check(kind: str | None, text: str) -> bool:
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
        return text.lower() not in STATE_SET and text.split()[0].lower() not in COMMON_CAPS
    if kind == "not_word":
        return text.split()[0].lower() not in COMMON_CAPS
    if kind == "grouped_id":
        digits = sum(c.isdigit() for c in text)
        return digits >= 7 and not _ISO_DATE.fullmatch(text) and not _PHONE_GROUPS.fullmatch(text)
    if kind == "ctx:not_a_measure":
        return not _MEASURE_BEFORE.search(text)
    raise ValueError(kind)


_ISO_DATE = re.compile(r"(?:19|20)\d\d-\d{1,2}-\d{1,2}")
_PHONE_GROUPS = re.compile(r"\d{3}-\d{3}-\d{4}")

# words before "is 95" that make the number a measurement, not an age ("her sugar is 95")
_MEASURE_BEFORE = re.compile(
    r"(?i)\b(?:temp|temperature|sugar|glucose|bg|bp|pressure|o2|oxygen|sats?|saturation|spo2|pulse|rate|"
    r"hr|heart|weight|score|level|count|reading|number|fever|a1c|hba1c|it|that|this|which|what|reading|"
    r"result|value|ldl|hdl|cholesterol|potassium|sodium|iq|bmi|range|dose|units?|mg|percent|average|"
    r"resting|systolic|diastolic|ratio|limit|speed|bill|cost|price|room|bed|highway|route|flight)\b"
)


# (reason, cheap precondition on the lower-cased text, pattern); the precondition is necessary
# for the pattern to match, so skipping the pattern when it fails loses nothing.
RESIDUAL_RULES: tuple[tuple[str, Callable[[str], bool], re.Pattern[str]], ...] = (
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


FIELD_KINDS: dict[str, str] = {
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
    return FIELD_KINDS.get(leaf, "ID")
