"""The deterministic red-flag layer: every emergency escalates, negated and historical mentions do not."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from healthnav.serving.cli import app as serve_cli
from healthnav.serving.redflags import RULES, detect_red_flags, emergency_advice, red_flag_report

pytestmark = pytest.mark.unit

POSITIVE: list[tuple[str, str]] = [
    # acute coronary syndrome: chest pain with cardiac features
    ("crushing chest pain radiating to my left arm", "acute_coronary_syndrome"),
    ("Chest pain and I'm sweating a lot", "acute_coronary_syndrome"),
    ("chest tightness with shortness of breath when climbing stairs", "acute_coronary_syndrome"),
    ("pressure in my chest, feel nauseous", "acute_coronary_syndrome"),
    ("chest pain going down my arm and into my jaw", "acute_coronary_syndrome"),
    ("feels like an elephant on my chest", "acute_coronary_syndrome"),
    ("No fever, has crushing chest pain", "acute_coronary_syndrome"),
    ("no relief from chest pain, now clammy", "acute_coronary_syndrome"),
    ("I don't have a cough but I have chest pain and sweating", "acute_coronary_syndrome"),
    # stroke (FAST)
    ("my face is drooping on one side", "stroke"),
    ("sudden weakness in my right arm", "stroke"),
    ("slurred speech since this morning", "stroke"),
    ("she can't speak properly and seems confused", "stroke"),
    ("numbness down the left side of my body", "stroke"),
    ("worst headache of my life, came on suddenly", "stroke"),
    ("I think I'm having a stroke", "stroke"),
    # anaphylaxis
    ("my throat is swelling after eating peanuts", "anaphylaxis"),
    ("lips swollen and tongue swelling", "anaphylaxis"),
    ("hives all over and difficulty breathing after a bee sting", "anaphylaxis"),
    ("I used my EpiPen 10 minutes ago", "anaphylaxis"),
    ("allergic reaction and wheezing", "anaphylaxis"),
    # sepsis and meningitis
    ("high fever and she is confused and drowsy", "sepsis"),
    ("fever with mottled skin", "sepsis"),
    ("doctor said it might be sepsis", "sepsis"),
    ("fever, stiff neck and a headache", "meningitis"),
    ("headache with a rash that does not fade under a glass", "meningitis"),
    ("fever and bright lights hurt my eyes, neck stiffness", "meningitis"),
    # suicidal intent
    ("I want to kill myself", "suicidal_intent"),
    ("been having suicidal thoughts", "suicidal_intent"),
    ("I don't want to live anymore", "suicidal_intent"),
    ("thinking about ending it, I want to end my life", "suicidal_intent"),
    ("everyone would be better off dead without me", "suicidal_intent"),
    # severe bleeding
    ("cut my hand and the bleeding won't stop", "severe_bleeding"),
    ("heavy bleeding from a wound", "severe_bleeding"),
    ("I vomited blood this morning", "severe_bleeding"),
    ("coughing up blood", "severe_bleeding"),
    ("black tarry stools since yesterday", "severe_bleeding"),
    # breathing
    ("I can't breathe", "breathing_difficulty"),
    ("he is struggling to breathe", "breathing_difficulty"),
    ("my lips are turning blue", "breathing_difficulty"),
    ("baby isn't breathing properly", "breathing_difficulty"),
    ("severe shortness of breath at rest", "breathing_difficulty"),
    # consciousness, poisoning
    ("my dad collapsed and is unresponsive", "loss_of_consciousness"),
    ("had a seizure ten minutes ago", "loss_of_consciousness"),
    ("he won't wake up", "loss_of_consciousness"),
    ("my toddler swallowed a battery", "poisoning_or_overdose"),
    ("I took too many pills", "poisoning_or_overdose"),
]

NEGATIVE: list[str] = [
    "no chest pain",
    "denies chest pain, sweating or nausea",
    "I don't have chest pain but I have a sore throat",
    "chest pain",  # alone, without cardiac features, is urgent, not a deterministic emergency
    "mild cough and runny nose for three days",
    "patient denies suicidal ideation",
    "I am not suicidal, just tired",
    "no thoughts of self-harm",
    "had a stroke 2 years ago, now a mild cold",
    "history of anaphylaxis to penicillin; today a sprained ankle",
    "no fever, no stiff neck, just a headache",
    "negative for slurred speech and facial droop",
    "no bleeding",
    "without difficulty breathing",
    "food poisoning last week, feeling better now",
    "family history of heart attack; I have a rash on my arm",
    "headache",
    "fever and a sore throat",
    "chest pain: denied",
]


@pytest.mark.parametrize(("text", "rule"), POSITIVE)
def test_red_flag_escalates(text: str, rule: str) -> None:
    ids = [f.id for f in detect_red_flags(text)]
    assert rule in ids, f"{text!r} should raise {rule}, got {ids}"


@pytest.mark.parametrize("text", NEGATIVE)
def test_negated_historical_or_benign_is_not_flagged(text: str) -> None:
    assert detect_red_flags(text) == [], text


def test_every_rule_has_a_positive_case() -> None:
    covered = {rule for _, rule in POSITIVE}
    assert covered == {r.id for r in RULES}


def test_cardiac_history_turns_chest_pain_into_a_red_flag() -> None:
    assert detect_red_flags("chest pain") == []
    flags = detect_red_flags("chest pain", history="heart attack in 2019, two stents")
    assert [f.id for f in flags] == ["acute_coronary_syndrome"]
    # a family member's history is not the patient's
    assert detect_red_flags("chest pain", history="family history of heart attack") == []


def test_history_alone_never_flags() -> None:
    assert detect_red_flags("sore knee", history="myocardial infarction 2015") == []


def test_evidence_names_the_matched_words_and_advice_leads_with_emergency() -> None:
    flags = detect_red_flags("crushing chest pain radiating to the jaw")
    assert "chest pain" in flags[0].evidence
    advice = emergency_advice(flags)
    assert "emergency" in advice[0].lower() and flags[0].advice in advice


def test_multiple_rules_fire_together() -> None:
    ids = {f.id for f in detect_red_flags("I want to kill myself and I took too many pills")}
    assert {"suicidal_intent", "poisoning_or_overdose"} <= ids


def test_report_shape() -> None:
    assert red_flag_report("no chest pain") == {"red_flags": [], "escalate": False}
    report = red_flag_report("face drooping and slurred speech")
    assert report["escalate"] is True and report["red_flags"][0]["id"] == "stroke"


def test_cli_prints_one_json_object() -> None:
    runner = CliRunner()
    result = runner.invoke(serve_cli, ["redflags", "sudden slurred speech, no chest pain"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["escalate"] is True
    assert [f["id"] for f in data["red_flags"]] == ["stroke"]
    negated = json.loads(runner.invoke(serve_cli, ["redflags", "denies chest pain"]).output)
    assert negated == {"red_flags": [], "escalate": False}
