"""De-identification of free text under HIPAA Safe Harbor (45 CFR 164.514(b)(2)).

One room per concept: :mod:`.rules` (patterns for structured identifiers, their word lists in
``data/``), :mod:`.prefilter` (one Hyperscan scan picks the rules to run), :mod:`.ner` (the
pinned spaCy model and its provenance), :mod:`.context` and :mod:`.lexicon` (names and places
from cues and name lists), :mod:`.scrubber` (the union of all of them, replaced by typed
placeholders, and the residual check), :mod:`.measure` (recall, precision, retention on a
labelled set). ``DEIDENTIFICATION.md`` beside this package says what is and is not caught.
"""

from healthnav.datapipe.deid.measure import RecallReport, measure_recall
from healthnav.datapipe.deid.ner import NerModel, NerProvenance, NerUnavailable, load_ner
from healthnav.datapipe.deid.rules import AGE_AGGREGATE, PLACEHOLDER_TYPES, kind_for_field
from healthnav.datapipe.deid.scrubber import FIELD_SEP, Deidentifier, DeidResult, default_deidentifier

__all__ = [
    "AGE_AGGREGATE",
    "FIELD_SEP",
    "PLACEHOLDER_TYPES",
    "DeidResult",
    "Deidentifier",
    "NerModel",
    "NerProvenance",
    "NerUnavailable",
    "RecallReport",
    "default_deidentifier",
    "kind_for_field",
    "load_ner",
    "measure_recall",
]
