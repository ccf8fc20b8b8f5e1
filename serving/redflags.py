"""Deterministic red-flag rules: emergencies escalate whatever the model generated.

A fine-tuned 7B model can under-triage; a patient with crushing chest pain radiating to the
arm must be told to call an ambulance even if the model says "routine". These rules run on
every assessment, before and independently of generation, and are plain data so clinicians
can review them (``hnav serve redflags TEXT`` prints what they find).

Matching is negation-aware in the style of NegEx: a finding preceded in the same clause by a
negation cue ("no", "denies", "without", "negative for", ...) or a history cue ("history of",
"previous") is not current. Safety decides the edge cases: scope ends at sentence punctuation,
at contrastive words ("but", "however") and at affirmation verbs ("has", "now", "reports"),
so "no fever, has crushing chest pain" still flags. Findings whose wording contains a
negative ("can't breathe", "not breathing", "won't stop bleeding") are matched as a whole, so
the negative inside them never cancels them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

EMERGENCY_ADVICE = (
    "Call your local emergency number (911 in the US, 112 in the EU, 999 in the UK) now or go to "
    "the nearest emergency department. Do not drive yourself and do not wait to see if it gets better."
)

# --- findings: named concepts, each a list of regexes over normalised lower-case text -------------

_W = r"(?:\w+\s+){0,3}"  # up to three filler words inside a phrase ("pain in my left arm")

FINDINGS: dict[str, tuple[str, ...]] = {
    "chest_pain": (
        r"chest\s+(?:pain|pains|pressure|tightness|discomfort|heaviness|ache|aching)",
        r"(?:pain|pressure|tightness|discomfort|heaviness|ache)\s+(?:in|on|across|over)\s+(?:my|his|her|the)?\s*chest",
        r"(?:crushing|squeezing|heavy|tight)\s+chest",
        r"elephant\s+(?:\w+\s+)?on\s+(?:my|his|her|the)\s+chest",
        r"angina",
    ),
    "cardiac_feature": (
        r"radiat\w*\s+(?:\w+\s+){0,3}(?:arm|jaw|neck|shoulder|back)",
        r"(?:spread\w*|going|goes|moving|moves|travel\w*)\s+(?:\w+\s+){0,3}(?:arm|jaw|neck|shoulder)",
        r"(?:left|right)\s+arm\s+(?:pain|ache|numb\w*|tingl\w*)",
        r"jaw\s+pain",
        r"(?:sweat\w*|diaphore\w*|clammy|cold\s+sweat)",
        r"short(?:ness)?\s+of\s+breath|breathless\w*|\bsob\b|dyspn\w*",
        r"nause\w*|vomit\w*",
        r"crushing|squeezing|elephant\s+on\s+(?:my|his|her|the)\s+chest",
        r"(?:light[-\s]?headed\w*|dizz\w*|faint\w*)",
        r"(?:on|with|during|after)\s+exertion|exertional",
    ),
    "cardiac_history": (
        r"heart\s+attack|myocardial\s+infarction|\bmi\b|coronary|angina|stent|cabg|bypass",
        r"heart\s+disease|cardiac\s+disease",
    ),
    "stroke_sign": (
        r"(?:face|facial)\s+(?:\w+\s+)?(?:droop\w*|drooping|numb\w*|weak\w*)",
        r"droop\w*\s+(?:\w+\s+){0,2}(?:face|mouth|eyelid|side)",
        r"(?:one|1)[-\s]sided\s+(?:weak\w*|numb\w*|paralys\w*)",
        r"(?:weak\w*|numb\w*|paralys\w*|can(?:no|')t\s+move)\s+(?:\w+\s+){0,4}(?:one|left|right)\s+side",
        r"(?:sudden\w*\s+)?(?:weak\w*|numb\w*)\s+(?:in|of)\s+(?:my|his|her|the)?\s*(?:left|right)\s+(?:arm|leg|hand|face)",
        r"slurr\w*\s+(?:speech|words|talking)|speech\s+(?:is\s+)?slurr\w*|slurring",
        r"(?:can(?:no|')t|cannot|unable\s+to|not\s+able\s+to|trouble|difficulty)\s+(?:speak\w*|talk\w*|find(?:ing)?\s+words)",
        r"sudden\w*\s+(?:\w+\s+){0,2}(?:confus\w*|loss\s+of\s+vision|vision\s+loss|blind\w*)",
        r"worst\s+headache|thunderclap",
        r"\bstroke\b|\btia\b|mini[-\s]stroke",
    ),
    "anaphylaxis_sign": (
        r"anaphyla\w*",
        r"(?:throat|tongue|lips?|mouth)\s+(?:\w+\s+)?(?:swell\w*|swollen|closing|tight\w*)",
        r"swell\w*\s+(?:\w+\s+){0,2}(?:throat|tongue|lips?|mouth)",
        r"(?:epipen|epi-pen|adrenaline\s+(?:auto-?)?injector|used\s+(?:my\s+)?epinephrine)",
    ),
    "allergic_reaction": (
        r"allerg\w+\s+reaction|hives|urticaria|(?:ate|eaten|after\s+eating)\s+(?:\w+\s+){0,3}(?:peanut|nut|shellfish)",
        r"(?:bee|wasp)\s+sting|stung\s+by",
    ),
    "breathing_difficulty": (
        r"(?:can(?:no|')t|cannot|unable\s+to|not\s+able\s+to|struggl\w*\s+to|hard\s+to)\s+breathe?",
        r"(?:not|isn't|wasn't|isnt)\s+breathing|stopped\s+breathing|gasping|chok\w*",
        r"(?:severe|extreme|very)\s+(?:short(?:ness)?\s+of\s+breath|breathless\w*|difficulty\s+breathing)",
        r"(?:struggling|fighting)\s+for\s+(?:breath|air)",
        r"(?:blue|grey|gray)\s+(?:lips|face|skin)|lips\s+(?:\w+\s+){0,2}(?:blue|grey|gray)|cyano\w*",
        r"(?:can(?:no|')t|cannot|unable\s+to)\s+(?:speak|talk|finish)\s+(?:in\s+)?(?:full\s+)?sentences",
    ),
    "mild_breathing": (
        r"short(?:ness)?\s+of\s+breath|breathless\w*|difficulty\s+breathing|trouble\s+breathing|wheez\w*",
    ),
    "fever": (
        r"fever\w*|febrile|high\s+temperature|temperature\s+of\s+(?:3[89]|4[0-2])|pyrexi\w*|rigou?rs|chills",
    ),
    "sepsis_sign": (
        r"\bsepsis\b|septic",
        r"confus\w*|disorient\w*|drows\w*|hard\s+to\s+wake|unresponsive",
        r"mottled|blotchy\s+skin|(?:very\s+)?cold\s+(?:hands|feet)\s+and",
        r"(?:not|hasn't|haven't|no)\s+(?:pass\w*|peed|urinat\w*)\s+(?:\w+\s+){0,2}(?:urine|pee|all\s+day|in\s+\d+)",
        r"(?:rapid|fast)\s+breathing|breathing\s+(?:very\s+)?fast",
    ),
    "meningitis_sign": (
        r"(?:stiff|sore)\s+neck|neck\s+stiff\w*",
        r"rash\s+(?:\w+\s+){0,4}(?:does\s+not|doesn't|won't|not)\s+fade|non[-\s]?blanching|glass\s+test|purpur\w*|petechi\w*",
        r"photophobi\w*|(?:light|bright\s+lights?)\s+hurts?\s+(?:my\s+)?eyes|sensitiv\w*\s+to\s+light",
        r"meningitis",
    ),
    "headache": (r"headache|head\s+ache|migraine",),
    "suicidal": (
        r"suicid\w*",
        r"(?:kill|hurt|harm)\s+(?:my|him|her)sel(?:f|ves)|self[-\s]harm\w*",
        r"(?:end|take)\s+(?:my|his|her)\s+(?:own\s+)?life",
        r"(?:want|wanting|wish)\w*\s+(?:to\s+)?(?:be\s+)?dead|better\s+off\s+dead",
        r"(?:don't|do\s+not|no\s+longer)\s+want\s+to\s+(?:live|be\s+alive|be\s+here)",
        r"no\s+reason\s+to\s+live|planning\s+to\s+(?:overdose|jump|hang)",
    ),
    "severe_bleeding": (
        r"(?:severe|heavy|heavily|uncontroll\w*|profuse\w*|massive)\s+(?:\w+\s+)?bleed\w*",
        r"bleed\w*\s+(?:\w+\s+){0,2}(?:heavily|profusely|a\s+lot)",
        r"bleed\w*\s+(?:\w+\s+){0,3}(?:won't|will\s+not|doesn't|does\s+not|can't|cannot)\s+stop",
        r"(?:vomit\w*|throw\w*\s+up|cough\w*\s+up|spit\w*\s+up)\s+(?:\w+\s+)?blood|haematemesis|hematemesis|haemoptysis|hemoptysis",
        r"blood\s+in\s+(?:my\s+)?vomit|black\s+(?:tarry\s+)?stools?|tarry\s+stools?|melaena|melena",
        r"soak\w*\s+(?:through\s+)?(?:\w+\s+){0,2}(?:pads?|bandages?|towels?)",
    ),
    "unconscious": (
        r"(?:not|isn't|won't|can't)\s+(?:be\s+)?(?:wak\w+|respond\w*)|"
        r"unconscious|unresponsive|passed\s+out|blacked\s+out|collaps\w*|fainted|loss\s+of\s+consciousness",
        r"seizure\w*|convuls\w*|having\s+a\s+fit",
    ),
    "poisoning": (
        r"overdos\w*|(?:took|taken|swallowed)\s+(?:\w+\s+){0,3}(?:too\s+many|whole\s+(?:bottle|pack))",
        r"swallowed\s+(?:\w+\s+){0,2}(?:bleach|poison|battery|batteries|detergent)|(?<!food\s)poison\w*",
    ),
}

# --- rules: what combination of current findings is an emergency ---------------------------------


@dataclass(frozen=True)
class Rule:
    id: str
    label: str
    advice: str
    test: Callable[[set[str]], bool]
    evidence_from: tuple[str, ...]


RULES: tuple[Rule, ...] = (
    Rule(
        "acute_coronary_syndrome",
        "Chest pain with cardiac features (possible heart attack)",
        "Possible heart attack: call an ambulance now; stop all activity and sit down.",
        lambda f: "chest_pain" in f and ({"cardiac_feature", "cardiac_history"} & f != set()),
        ("chest_pain", "cardiac_feature", "cardiac_history"),
    ),
    Rule(
        "stroke",
        "Stroke warning signs (FAST: face, arms, speech, time)",
        "Possible stroke: call an ambulance now and note the time symptoms started.",
        lambda f: "stroke_sign" in f,
        ("stroke_sign",),
    ),
    Rule(
        "anaphylaxis",
        "Signs of anaphylaxis (severe allergic reaction)",
        "Possible anaphylaxis: use an adrenaline (epinephrine) auto-injector if available and call an "
        "ambulance now.",
        lambda f: (
            "anaphylaxis_sign" in f
            or ("allergic_reaction" in f and ({"breathing_difficulty", "mild_breathing"} & f != set()))
        ),
        ("anaphylaxis_sign", "allergic_reaction", "breathing_difficulty", "mild_breathing"),
    ),
    Rule(
        "sepsis",
        "Fever with signs of sepsis",
        "Possible sepsis: seek emergency care now.",
        lambda f: ("fever" in f and "sepsis_sign" in f) or "sepsis_sign_explicit" in f,
        ("fever", "sepsis_sign"),
    ),
    Rule(
        "meningitis",
        "Signs of meningitis",
        "Possible meningitis: seek emergency care now.",
        lambda f: (
            ("meningitis_sign" in f and ({"fever", "headache"} & f != set())) or "meningitis_explicit" in f
        ),
        ("meningitis_sign", "fever", "headache"),
    ),
    Rule(
        "suicidal_intent",
        "Suicidal thoughts or intent",
        "If you might act on these thoughts, call your emergency number now. In the US call or text 988 "
        "(Suicide & Crisis Lifeline); elsewhere contact your local crisis line. You are not alone.",
        lambda f: "suicidal" in f,
        ("suicidal",),
    ),
    Rule(
        "severe_bleeding",
        "Severe or uncontrolled bleeding",
        "Apply firm pressure to the wound and call an ambulance now.",
        lambda f: "severe_bleeding" in f,
        ("severe_bleeding",),
    ),
    Rule(
        "breathing_difficulty",
        "Severe difficulty breathing",
        "Severe breathing difficulty: call an ambulance now; sit upright.",
        lambda f: "breathing_difficulty" in f,
        ("breathing_difficulty",),
    ),
    Rule(
        "loss_of_consciousness",
        "Loss of consciousness or seizure",
        "Call an ambulance now; place the person on their side if they are not fully awake.",
        lambda f: "unconscious" in f,
        ("unconscious",),
    ),
    Rule(
        "poisoning_or_overdose",
        "Possible poisoning or overdose",
        "Call an ambulance or your poison control centre (US: 1-800-222-1222) now.",
        lambda f: "poisoning" in f,
        ("poisoning",),
    ),
)

# --- negation ----------------------------------------------------------------------------------

_PRE_NEGATION = re.compile(
    r"\b(?:no|not|none|never|without|denies|denied|deny|denying|negative\s+for|free\s+of|absence\s+of|"
    r"(?:do|does|did|have|has|had)\s*n[o']?t(?:\s+have|\s+had|\s+feel|\s+get|\s+got|\s+experience)?|"
    r"don't|doesn't|didn't|haven't|hasn't|isn't|wasn't|aren't|ruled\s+out|history\s+of|"
    r"previous|previously|prior|in\s+the\s+past|years\s+ago|family\s+history|"
    r"(?:mother|father|brother|sister|grandmother|grandfather|dad|mom|mum)\s+(?:had|has|died))\b"
)
# "no relief from chest pain" is not a negation of chest pain.
_PSEUDO_NEGATION = re.compile(
    r"\b(?:no|not)\s+(?:relief|better|improvement|change|increase|only|sure|certain|stopping|helping|"
    r"going\s+away|gone|improving|settling)\b|\bno\s+longer\s+(?:able|can)\b|\bnot\s+able\b"
)
_POST_NEGATION = re.compile(
    r"^\s*[:\-]?\s*(?:(?:is|was|were)\s+)?(?:denied|absent|none|negative|ruled\s+out)\b"
)
_POST_HISTORY = re.compile(
    r"\b(?:\d+|a|an|few|several|two|three|many)\s+(?:years?|months?)\s+ago\b|\bin\s+(?:19|20)\d\d\b"
)
# Words that end a negation's scope (contrast, or a new affirmed statement).
_SCOPE_END = re.compile(
    r"\b(?:but|however|although|though|except|apart\s+from|aside\s+from|yet|now|has|have|having|is|"
    r"reports?|reported|complains?|complaining|presents?|presenting|with|feels?|feeling|experiencing|"
    r"started|developed|noticed|got|suddenly|then|also|and\s+(?:now|then|has|is|i|he|she))\b(?!n't|')"
)
_SENTENCE_SPLIT = re.compile(r"[.;!?\n]+")


def normalise(text: str) -> str:
    """Lower-case, unify apostrophes and dashes, collapse white space."""
    text = (
        text.lower()
        .replace("\u2019", "'")
        .replace("\u2018", "'")
        .replace("\u2013", "-")
        .replace("\u2014", "-")
    )
    return re.sub(r"[ \t\r\f\v]+", " ", text)


def _is_negated(sentence: str, start: int, end: int) -> bool:
    """True when the span [start, end) is negated or historical within its clause."""
    before = sentence[:start]
    pseudo = [m.span() for m in _PSEUDO_NEGATION.finditer(before)]
    cues = [
        m.span() for m in _PRE_NEGATION.finditer(before) if not any(ps <= m.start() < pe for ps, pe in pseudo)
    ]
    ends = [
        m.end()
        for m in _SCOPE_END.finditer(before)
        if not any(cs <= m.start() < ce for cs, ce in (*cues, *pseudo))
    ]
    last_end = max(ends, default=0)
    if any(cs >= last_end for cs, _ in cues):
        return True
    after = sentence[end:]
    cut = re.search(r"[,(]|\b(?:but|and|or|now)\b", after)
    clause = after[: cut.start()] if cut else after
    return bool(_POST_NEGATION.match(clause) or _POST_HISTORY.search(clause))


@dataclass(frozen=True)
class Match:
    finding: str
    text: str


def find_findings(text: str) -> list[Match]:
    """Current (non-negated, non-historical) findings in ``text``, in order of appearance."""
    out: list[Match] = []
    for sentence in _SENTENCE_SPLIT.split(normalise(text)):
        for name, patterns in FINDINGS.items():
            for pattern in patterns:
                for m in re.finditer(rf"\b(?:{pattern})", sentence):
                    if not _is_negated(sentence, m.start(), m.end()):
                        out.append(Match(name, m.group(0).strip()))
    return out


@dataclass(frozen=True)
class RedFlag:
    id: str
    label: str
    advice: str
    evidence: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def detect_red_flags(text: str, *, history: str = "") -> list[RedFlag]:
    """Every rule that fires on ``text`` (current symptoms); ``history`` adds cardiac history only.

    Medical history mentions past events ("had a heart attack in 2019"); it must not by itself
    raise a flag, but it turns current chest pain into a cardiac red flag.
    """
    matches = find_findings(text)
    found = {m.finding for m in matches}
    if history.strip() and any(m.finding == "cardiac_history" for m in _history_findings(history)):
        found.add("cardiac_history")
        matches.append(Match("cardiac_history", "cardiac history"))
    for m in matches:  # the words "sepsis"/"meningitis" themselves are enough
        if m.finding == "sepsis_sign" and m.text.startswith(("sepsis", "septic")):
            found.add("sepsis_sign_explicit")
        if m.finding == "meningitis_sign" and m.text == "meningitis":
            found.add("meningitis_explicit")
    flags = []
    for rule in RULES:
        if rule.test(found):
            evidence = list(dict.fromkeys(m.text for m in matches if m.finding in rule.evidence_from))
            flags.append(RedFlag(rule.id, rule.label, rule.advice, evidence))
    return flags


def _history_findings(history: str) -> list[Match]:
    """Findings in a history field, where "history of" is expected and so is not a negation."""
    out: list[Match] = []
    for sentence in _SENTENCE_SPLIT.split(normalise(history)):
        for pattern in FINDINGS["cardiac_history"]:
            for m in re.finditer(rf"\b(?:{pattern})", sentence):
                before = sentence[: m.start()]
                if not re.search(r"\b(?:no|denies|never|without|family\s+history)\b", before):
                    out.append(Match("cardiac_history", m.group(0)))
    return out


def emergency_advice(flags: Iterable[RedFlag]) -> list[str]:
    """Recommendations for an escalated case: the universal advice first, then each flag's."""
    return [EMERGENCY_ADVICE, *dict.fromkeys(f.advice for f in flags)]


def red_flag_report(text: str, *, history: str = "") -> dict[str, object]:
    """What ``hnav serve redflags`` prints: ``{"red_flags": [...], "escalate": bool}``."""
    flags = detect_red_flags(text, history=history)
    return {"red_flags": [f.to_dict() for f in flags], "escalate": bool(flags)}
