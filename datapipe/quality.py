"""Quality steps: normalisation, length filters, dedup, decontamination, licences, splits.

Each is a small object with a pure decision function so the build loop stays a thin sequence
of "keep or drop, and count why". Memory is bounded by the indexes (one 8-byte hash per kept
record for exact dedup, the MinHash LSH tables for near dedup, hashed n-grams of the test
split for decontamination), never by the input size.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import xxhash

from healthnav.datapipe.readers import TEMPLATE_INSTRUCTIONS
from healthnav.datapipe.records import TrainingRecord

# --------------------------------------------------------------------------- normalisation

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACES_RE = re.compile(r"[ \t\u00a0]+")
_BLANKS_RE = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """NFKC, no control or zero-width characters, single spaces, at most one blank line in a row.

    Medical text keeps its case and punctuation (``mg`` vs ``Mg`` matters); only layout noise goes.
    """
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL_RE.sub("", text)
    text = "\n".join(_SPACES_RE.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANKS_RE.sub("\n\n", text).strip()


def normalize_record(record: TrainingRecord) -> TrainingRecord:
    return record.model_copy(
        update={
            "instruction": normalize_text(record.instruction),
            "input": normalize_text(record.input),
            "output": normalize_text(record.output),
        }
    )


# --------------------------------------------------------------------------- keys

_WORD_RE = re.compile(r"\w+")


def prompt_text(record: TrainingRecord) -> str:
    """The content of the prompt; template instructions shared by a whole source are left out."""
    if record.instruction in TEMPLATE_INSTRUCTIONS:
        return record.input
    return f"{record.instruction}\n{record.input}"


def content_text(record: TrainingRecord) -> str:
    return f"{prompt_text(record)}\n{record.output}"


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class LengthFilter:
    """Drop records whose instruction+input or output is outside the bounds (in characters)."""

    min_chars: int = 8
    max_chars: int = 16000
    min_output_chars: int = 1

    def reason(self, record: TrainingRecord) -> str | None:
        prompt_len = len(record.instruction) + len(record.input)
        if prompt_len < self.min_chars:
            return "too_short"
        if len(record.output) < self.min_output_chars:
            return "output_too_short"
        if prompt_len + len(record.output) > self.max_chars:
            return "too_long"
        return None


class ExactDeduper:
    """Exact duplicates after normalisation (case and punctuation folded), by 64-bit hash."""

    def __init__(self) -> None:
        self._seen: set[int] = set()

    def is_duplicate(self, record: TrainingRecord, tokens: list[str] | None = None) -> bool:
        """``tokens``: ``words(content_text(record))`` when the caller has them already."""
        key = xxhash.xxh64_intdigest(
            " ".join(tokens if tokens is not None else words(content_text(record))).encode()
        )
        if key in self._seen:
            return True
        self._seen.add(key)
        return False

    def __len__(self) -> int:
        return len(self._seen)


_SHINGLE_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio); wraps mod 2**64


class NearDeduper:
    """Near duplicates by MinHash over word shingles and an LSH index (datasketch).

    A record is dropped when an earlier record's estimated Jaccard similarity is at least
    ``threshold``. Why the LSH runs at a lower threshold and candidates are verified: with 64
    permutations, LSH banding tuned to 0.85 (4 bands of 15 rows) finds a pair at Jaccard 0.9
    only 60% of the time, so most near duplicates slipped through. Banding at ``threshold -
    0.15`` finds nearly all of them, and checking each candidate's signature keeps false
    positives out. The signatures (``num_perm`` 32-bit values per kept record) are part of the
    index, so memory still grows with kept records, not with input size.
    """

    def __init__(self, threshold: float = 0.85, num_perm: int = 64, shingle: int = 3) -> None:
        from datasketch import MinHash, MinHashLSH

        self._template = MinHash(num_perm=num_perm, seed=1, hashfunc=int)  # values are hashes already
        self._lsh = MinHashLSH(threshold=max(0.5, threshold - 0.15), num_perm=num_perm)
        self._threshold = threshold
        self._signatures: list[bytes] = []
        self._shingle = shingle

    def _minhash(self, tokens: list[str]) -> object:
        """MinHash of the record's word ``shingle``-grams.

        Why not hash each joined shingle: that is one string join, encode and hash call per
        shingle in Python. Each word is hashed once (xxh64, in C via ``map``) and a shingle's
        hash is a polynomial of its words' hashes, computed for all shingles at once in numpy;
        the set of shingles is the same, so the Jaccard estimate is too.
        """
        n = self._shingle
        hashes = np.fromiter(
            map(xxhash.xxh64_intdigest, map(str.encode, tokens)), dtype=np.uint64, count=len(tokens)
        )
        if len(hashes) >= n:
            combined = hashes[: len(hashes) - n + 1].copy()
            for i in range(1, n):
                combined *= _SHINGLE_MULT
                combined += hashes[i : len(hashes) - n + 1 + i]
        else:
            combined = np.array([xxhash.xxh64_intdigest(" ".join(tokens).encode())], dtype=np.uint64)
        shingles = np.unique(combined >> np.uint64(32))  # 32-bit values, as datasketch's affine32 expects
        # a copy of an empty template shares its permutations (what MinHash.generator does):
        # building a MinHash from parameters re-validates them every time
        mh = self._template.copy()
        mh.update_batch(shingles.tolist())
        return mh

    def is_duplicate(self, record: TrainingRecord, tokens: list[str] | None = None) -> bool:
        """``tokens``: ``words(content_text(record))`` when the caller has them already."""
        mh = self._minhash(tokens if tokens is not None else words(content_text(record)))
        signature = mh.hashvalues.astype(np.uint32)  # type: ignore[attr-defined]
        for key in self._lsh.query(mh):
            earlier = np.frombuffer(self._signatures[key], dtype=np.uint32)
            if np.count_nonzero(earlier == signature) >= self._threshold * len(signature):
                return True
        self._lsh.insert(len(self._signatures), mh, check_duplication=False)
        self._signatures.append(signature.tobytes())
        return False


class Decontaminator:
    """N-gram overlap between a training prompt and any test/eval prompt.

    A training record is contaminated when at least ``threshold`` of its prompt's word n-grams
    occur in the evaluation prompts (prompts shorter than ``n`` words are one n-gram). Template
    instructions are excluded on both sides, otherwise every record of a source would match.
    """

    def __init__(self, n: int = 8, threshold: float = 0.5) -> None:
        self.n = n
        self.threshold = threshold
        self._grams: set[int] = set()
        self.sources = 0

    def _hashes(self, text: str) -> set[int]:
        toks = words(text)
        n = self.n
        if len(toks) < n:
            return {xxhash.xxh64_intdigest(" ".join(toks).encode())} if toks else set()
        return {xxhash.xxh64_intdigest(" ".join(toks[i : i + n]).encode()) for i in range(len(toks) - n + 1)}

    def add(self, record: TrainingRecord) -> None:
        self._grams |= self._hashes(prompt_text(record))
        self.sources += 1

    def add_all(self, records: Iterable[TrainingRecord]) -> None:
        for record in records:
            self.add(record)

    def overlap(self, record: TrainingRecord) -> float:
        grams = self._hashes(prompt_text(record))
        if not grams or not self._grams:
            return 0.0
        return len(grams & self._grams) / len(grams)

    def is_contaminated(self, record: TrainingRecord) -> bool:
        return bool(self._grams) and self.overlap(record) >= self.threshold

    def __len__(self) -> int:
        return len(self._grams)


# --------------------------------------------------------------------------- licences

#: Licences whose terms allow training a model that is then deployed.
DEFAULT_DEPLOYABLE_LICENSES: frozenset[str] = frozenset(
    {
        "MIT",
        "Apache-2.0",
        "BSD-3-Clause",
        "CC0-1.0",
        "CC-BY-4.0",
        "CC-BY-SA-4.0",
        "public-domain",
        "proprietary-internal",
        "NLM-PubMed",
    }
)
#: Licences known to forbid deployment; named so the error can say why.
NON_DEPLOYABLE_LICENSES: dict[str, str] = {
    "PhysioNet-Credentialed-Health-Data-1.5.0": "MIMIC/PhysioNet credentialed data use agreement",
    "PhysioNet-DUA": "PhysioNet data use agreement",
    "MIMIC": "MIMIC data use agreement",
    "CC-BY-NC-4.0": "non-commercial",
    "CC-BY-NC-SA-4.0": "non-commercial",
    "research-only": "research use only",
}


@dataclass(frozen=True)
class LicensePolicy:
    """Which licences may enter a dataset; fail closed: unknown licences are not deployable."""

    deployable: bool
    allow: frozenset[str] = DEFAULT_DEPLOYABLE_LICENSES

    def problem(self, license: str) -> str | None:
        """Why a licence may not enter this dataset, or None when it may."""
        if not self.deployable:
            return None
        if license in NON_DEPLOYABLE_LICENSES:
            return f"licence {license!r} forbids deployment ({NON_DEPLOYABLE_LICENSES[license]})"
        if license not in self.allow:
            return (
                f"licence {license!r} is not in the deployable allow-list; add it to licenses.allow "
                "only if its terms permit deploying a model trained on it"
            )
        return None


# --------------------------------------------------------------------------- splits


def assign_split(record_id: str, test_fraction: float, seed: int = 0) -> str:
    """Deterministic split by hash of the id: the same record lands in the same split every build."""
    if test_fraction <= 0:
        return "train"
    bucket = xxhash.xxh64_intdigest(f"{seed}:{record_id}".encode()) / 2**64
    return "test" if bucket < test_fraction else "train"
