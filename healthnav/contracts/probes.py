"""Adapter probes: evidence, shipped with an adapter, of how training saw it answer.

vLLM users report LoRA adapters silently ignored (a target module the engine does not patch)
or answering differently from peft. So at the end of training the trainer greedily continues a
few fixed prompts with the adapter and records, for every token of each continuation, its
log-probability under the adapter and under the bare base model (``probes.json`` beside the
weights). A serving replica that loads the adapter scores the same texts through its own engine
and serves the adapter only if the scores it gets are recognisably this adapter's
(:func:`judge`). The prompts are fixed synthetic cases, never training records, so the file
carries no patient data.

The trainer writes (:mod:`healthnav.trainer.probes`), serving reads
(:mod:`healthnav.serving.verification`) and the operator records what serving found in
ModelServe status (:mod:`healthnav.operator.adapter_verification`); this module is the file,
the verdict and the verification answer all three agree on.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from healthnav.contracts.prompts import PatientCase, render_assessment_prompt
from healthnav.schema import CamelModel

PROBES_FILE = "probes.json"
"""In the adapter directory, so it travels with the weights to every replica's cache."""

PROBE_CASES = (
    PatientCase(symptoms="a runny nose, a mild sore throat and sneezing for two days", age=34),
    PatientCase(symptoms="a headache and a temperature of 38.2 C since this morning", age=8, sex="female"),
    PatientCase(symptoms="pain in the right knee after a fall while running", age=52, sex="male"),
)
PROBE_PROMPTS = tuple(render_assessment_prompt(c) for c in PROBE_CASES)
PROBE_TOKENS = 16
"""Greedy tokens recorded per probe: enough to tell an adapter from its base model."""

ABS_TOLERANCE = 0.1
"""Mean absolute log-probability difference (nats per token) treated as the same numbers.

Float32 kernels agree to about 1e-3 (transformers against vLLM's CPU build); bfloat16 kernels
to a few hundredths. An adapter within this of its base model changes nothing worth refusing.
"""
RELATIVE_MARGIN = 0.5
"""Otherwise the served scores must be at most this fraction as far from the adapter's recorded
scores as from the base model's: a QLoRA adapter trained over a 4-bit base and served over a
16-bit one moves, but it stays much nearer itself than its base."""


class Probe(CamelModel):
    """One probe: the whole text scored, and the scores of its last ``len(adapter_logprobs)`` tokens."""

    text: str = Field(description="prompt followed by the adapter's greedy continuation")
    tokens: int = Field(ge=1, description="tokens of the whole text, special tokens included")
    adapter_logprobs: list[float] = Field(min_length=1)
    base_logprobs: list[float] = Field(min_length=1)


class AdapterProbes(CamelModel):
    """The ``probes.json`` of an adapter."""

    probes: list[Probe] = Field(min_length=1)
    precision: str = Field(
        description="how the trainer computed them, e.g. 'lora over float32' or 'qlora over bfloat16'"
    )

    def write(self, adapter_dir: Path) -> None:
        (adapter_dir / PROBES_FILE).write_text(self.model_dump_json(by_alias=True, indent=1))

    @classmethod
    def read(cls, adapter_dir: Path) -> AdapterProbes | None:
        """The adapter's probes, or None for an adapter trained without them (served unverified)."""
        path = adapter_dir / PROBES_FILE
        return cls.model_validate_json(path.read_text()) if path.is_file() else None


@dataclass(frozen=True)
class ProbeVerdict:
    """Whether served scores are the adapter's; the distances are mean nats per token."""

    ok: bool
    to_adapter: float
    to_base: float
    message: str


def judge(probes: AdapterProbes, served: Sequence[Sequence[float | None] | None]) -> ProbeVerdict:
    """Compare the engine's scores of each probe's text (all its tokens) with the recorded ones.

    ``served[i]`` is the engine's per-token log-probabilities of ``probes.probes[i].text`` (the
    first, unscored token may be None), or None when the engine could not score it.

    >>> p = AdapterProbes(probes=[Probe(text="t", tokens=3, adapter_logprobs=[-1.0, -2.0],
    ...                                 base_logprobs=[-3.0, -3.0])], precision="float32")
    >>> judge(p, [[None, -1.0, -2.0]]).ok                 # the adapter itself
    True
    >>> v = judge(p, [[None, -3.0, -3.0]])                # the base model: adapter ignored
    >>> v.ok, v.to_adapter, v.to_base
    (False, 1.5, 0.0)
    >>> judge(p, [[None, -1.0]]).message                  # another tokenizer
    'probe 1 has 2 tokens here, 3 in training: the tokenizer differs'
    """
    to_adapter: list[float] = []
    to_base: list[float] = []
    for i, (probe, scores) in enumerate(zip(probes.probes, served, strict=True), start=1):
        if scores is None or len(scores) != probe.tokens:
            got = "no scores" if scores is None else f"{len(scores)} tokens"
            return ProbeVerdict(
                False,
                float("inf"),
                float("inf"),
                f"probe {i} has {got} here, {probe.tokens} in training: the tokenizer differs",
            )
        tail = scores[len(scores) - len(probe.adapter_logprobs) :]
        values = [float("-inf") if v is None else v for v in tail]
        to_adapter += [abs(v - a) for v, a in zip(values, probe.adapter_logprobs, strict=True)]
        to_base += [abs(v - b) for v, b in zip(values, probe.base_logprobs, strict=True)]
    d_adapter, d_base = statistics.fmean(to_adapter), statistics.fmean(to_base)
    ok = d_adapter <= ABS_TOLERANCE or d_adapter <= RELATIVE_MARGIN * d_base
    figures = f"{d_adapter:.3f} nats/token from training's scores, {d_base:.3f} from the base model's"
    if ok:
        return ProbeVerdict(True, d_adapter, d_base, f"answers as in training ({figures})")
    return ProbeVerdict(
        False,
        d_adapter,
        d_base,
        f"answers differently from training ({figures}; allowed: within {ABS_TOLERANCE} or under "
        f"{RELATIVE_MARGIN}x the distance to the base model)",
    )


VerificationState = Literal["Verified", "NotRecorded", "Refused", "LoadFailed"]
"""Verified: the engine answers as training did; NotRecorded: the adapter ships no probes, so it
is served unchecked; Refused: it answers differently (served nowhere); LoadFailed: the engine
could not load it (rank, target modules, corrupt files)."""


class AdapterVerification(CamelModel):
    """What a serving replica found when it loaded an adapter: the answer of
    ``GET /adapters/{name}/verification``, and what the operator records in ModelServe status.

    >>> AdapterVerification(adapter="triage", state="Refused", message="answers differently").servable
    False
    """

    adapter: str
    state: VerificationState
    message: str

    @property
    def servable(self) -> bool:
        return self.state in ("Verified", "NotRecorded")
