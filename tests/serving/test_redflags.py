"""The red-flag layer: a valid cited catalogue, context that discounts only what is not current,
refusal of languages it cannot read, a semantic net that only ever adds, and the CLI's JSON.

The phrases here are this file's own smoke cases, written from the guidance; the layer is judged
on the independent suite in ``test_redflag_suite.py`` (and ``bench/redflag_recall.py``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from healthnav.serving.assessment import build_assessment
from healthnav.serving.cli import app as serve_cli
from healthnav.serving.redflags import check_red_flags, detect_red_flags, emergency_advice, red_flag_report
from healthnav.serving.redflags.catalogue import DATA, LANGUAGES, CatalogueError, catalogue, load_catalogue
from healthnav.serving.redflags.language import identify_language

pytestmark = pytest.mark.unit


def ids(text: str, **kw: object) -> set[str]:
    return {f.id for f in check_red_flags(text, semantic=False, **kw).flags}  # type: ignore[arg-type]


# --- the catalogue ---------------------------------------------------------------------------


def test_catalogue_is_large_cited_and_spans_the_emergency_categories() -> None:
    cat = catalogue()
    assert len(cat.presentations) >= 40
    assert len({p.id for p in cat.presentations}) == len(cat.presentations)
    for p in cat.presentations:
        assert p.sources and all(s in cat.sources for s in p.sources), p.id
        assert all(cat.sources[s].url.startswith("https://") for s in p.sources), p.id
        assert "en" in cat.languages_of(p), p.id
    wanted = {"cardiovascular", "neurological", "respiratory", "allergic", "trauma", "surgical"}
    wanted |= {"psychiatric", "toxicological", "paediatric", "obstetric", "metabolic", "eye", "infection"}
    assert wanted <= {p.category for p in cat.presentations}


def test_top_presentations_are_recognised_in_every_catalogue_language() -> None:
    cat = catalogue()
    top = {p.id for p in cat.presentations if p.top}
    assert top >= {
        "acute_coronary_syndrome",
        "stroke",
        "breathing_difficulty",
        "anaphylaxis",
        "severe_bleeding",
        "suicidal_intent",
        "seizure",
        "loss_of_consciousness",
    }
    for pid in top:
        assert cat.languages_of(cat.presentation(pid)) == set(LANGUAGES), pid


def test_a_broken_catalogue_entry_is_refused_with_its_file_and_id(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    text = (data / "presentations.yaml").read_text()
    broken = text.replace("sources: [nhs_sah,", "sources: [no_such_source,", 1)
    (data / "presentations.yaml").write_text(broken)
    with pytest.raises(CatalogueError, match=r"presentations.yaml: subarachnoid_haemorrhage: field sources"):
        load_catalogue(data)
    (data / "presentations.yaml").write_text(text.replace("- [thunderclap]", "- [thunderclapp]", 1))
    with pytest.raises(CatalogueError, match=r"subarachnoid_haemorrhage: field when: unknown concepts"):
        load_catalogue(data)


# --- rules and context ------------------------------------------------------------------------

EMERGENCIES = [
    ("heavy squeezing in my chest that goes up into my jaw, drenched in sweat", "acute_coronary_syndrome"),
    ("no fever but crushing chest pain", "acute_coronary_syndrome"),
    ("the chest pain has gone away but now my left arm is numb", "acute_coronary_syndrome"),
    ("she suddenly can't raise her right arm and her mouth is lopsided", "stroke"),
    ("he is gasping and his lips have gone blue", "breathing_difficulty"),
    ("stung by a wasp and now my tongue is swelling up", "anaphylaxis"),
    ("blood is spurting out of the cut on his leg", "severe_bleeding"),
    ("I've been sick and there was blood in it, looks like coffee grounds", "gastrointestinal_bleeding"),
    ("I don't want to be alive any more and I have a plan", "suicidal_intent"),
    ("my grandad collapsed in the garden and won't come round", "loss_of_consciousness"),
    ("my toddler got into the cupboard and swallowed some of my tablets", "poisoning"),
    ("banged her head on the pavement, now vomiting and very drowsy", "head_injury"),
    ("positive test last week, now stabbing pain low on the right of my tummy", "ectopic_pregnancy"),
    ("34 weeks pregnant with a pounding headache and flashing lights in my eyes", "pre_eclampsia"),
    ("sciatica for a week and now numb between my legs and I can't pee properly", "cauda_equina"),
    ("type 1 diabetic, vomiting all night and my breath smells like pear drops", "diabetic_ketoacidosis"),
    ("Tengo un dolor opresivo en el pecho que se va al brazo izquierdo", "acute_coronary_syndrome"),
    ("Mein Vater ist zusammengebrochen und reagiert nicht", "loss_of_consciousness"),
    ("Ma fille ne peut plus respirer, ses lèvres sont bleues", "breathing_difficulty"),
]


@pytest.mark.parametrize(("text", "presentation"), EMERGENCIES)
def test_emergencies_escalate(text: str, presentation: str) -> None:
    assert presentation in ids(text), text


NOT_CURRENT = [
    "no chest pain, no sweating, just a runny nose",
    "I had a heart attack in 2015 and today I have a sore knee",
    "my mother died of a stroke, should I get my blood pressure checked?",
    "what are the warning signs of a stroke? it's for my school project",
    "for a school project, what are the signs that someone is having a stroke?",
    "the cut bled a lot but the bleeding has stopped now and it's closed",
    "I am not suicidal, just stressed about exams",
    "chest pain",  # alone, without cardiac features, is not a deterministic emergency
]


@pytest.mark.parametrize("text", NOT_CURRENT)
def test_negated_historical_family_hypothetical_and_resolved_do_not_escalate(text: str) -> None:
    assert ids(text) == set(), text


def test_a_present_finding_escalates_even_beside_a_hypothetical_question() -> None:
    assert ids("what are the signs of a stroke? it's for a school project") == set()
    assert "stroke" in ids("doing a school project on strokes but right now my dad's face is drooping")


def test_medical_history_is_a_risk_factor_never_an_emergency_by_itself() -> None:
    assert ids("chest pain") == set()
    assert ids("chest pain", history="two stents after a heart attack in 2019") == {"acute_coronary_syndrome"}
    assert ids("sore knee", history="myocardial infarction 2015") == set()
    assert ids("chest pain", history="family history of heart attack") == set()


def test_age_turns_a_fever_into_an_infant_emergency() -> None:
    assert ids("she has a temperature of 38.4", age_years=30) == set()
    assert "febrile_infant" in ids("she has a temperature of 38.4", age_years=0.1)
    assert "febrile_infant" in ids("my 6 week old has a temperature of 38.4")


def test_evidence_names_the_words_and_advice_leads_with_the_emergency_number() -> None:
    flags = detect_red_flags("crushing chest pain radiating to the jaw")
    assert any("chest" in e for e in flags[0].evidence) and any("jaw" in e for e in flags[0].evidence)
    advice = emergency_advice(flags)
    assert "emergency" in advice[0].lower() and flags[0].advice in advice


# --- language ---------------------------------------------------------------------------------


def test_languages_outside_the_catalogue_are_refused_never_given_a_low_risk() -> None:
    pt = "estou com uma dor muito forte no peito e não consigo respirar direito"
    verdict = identify_language(pt)
    assert (verdict.code, verdict.supported) == ("pt", False)
    assert identify_language("me duele el pecho desde esta mañana").supported
    assert identify_language("ok").supported  # too short to judge: never refused on a guess
    from healthnav.contracts.prompts import format_assessment_output

    routine = format_assessment_output("self-care", "Rest and fluids.", ["Drink water"])
    out = build_assessment(routine, [], model="m", latency_ms=1, language=verdict)
    assert out["risk_level"] == "urgent" and out["language_supported"] is False
    assert "cannot safely check" in out["assessment"] and "emergency number" in out["recommendations"][0]
    assert out["disclaimer"]


# --- semantic net -----------------------------------------------------------------------------

SEMANTIC_CASES = [
    "my husband is clutching his chest, grey and sweaty",
    "he has been shaking all over and is not responding to us",
    "mild cough for a week",
    "no chest pain at all",
    "what are the warning signs of a stroke",
]


@pytest.mark.parametrize("text", SEMANTIC_CASES)
def test_the_semantic_net_only_ever_adds_flags(text: str) -> None:
    rules = {f.id for f in check_red_flags(text, semantic=False, wait_for_models=True).flags}
    full = check_red_flags(text, semantic=True, wait_for_models=True)
    assert rules <= {f.id for f in full.flags}
    assert full.semantic_available


def test_the_semantic_net_scores_emergencies_above_routine_phrases() -> None:
    from healthnav.serving.redflags.semantic import shared_semantic_net

    net = shared_semantic_net(block=True)
    assert net is not None
    emergency = net.score("my husband is clutching his chest, grey and sweaty and feels sick")
    routine = net.score("I need a repeat prescription for my inhaler")
    assert emergency.presentation == "acute_coronary_syndrome"
    assert emergency.score >= net.spec.threshold > routine.score
    assert net.hits([s for s in net.spec.dev_routine]) == []  # the thresholds' own guarantee


# --- CLI and report ---------------------------------------------------------------------------


def test_report_and_cli_print_one_json_object() -> None:
    report = red_flag_report("no chest pain")
    assert report["red_flags"] == [] and report["escalate"] is False and report["language"]["code"] == "en"
    result = CliRunner().invoke(serve_cli, ["redflags", "sudden slurred speech, no chest pain"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["escalate"] is True and [f["id"] for f in data["red_flags"]] == ["stroke"]
