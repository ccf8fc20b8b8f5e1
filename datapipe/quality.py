"""Quality steps: normalisation, length filters, dedup, decontamination, licences, splits.

Each is a small object with a pure decision function so the build loop stays a thin sequence
of "keep or drop, and count why". Memory is bounded by the indexes (one 8-byte hash per kept
record for exact dedup, the MinHash LSH tables for near dedup, hashed n-grams of the test
split for decontamination), never by the input size.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import xxhash

from healthnav.contracts.records import TrainingRecord
from healthnav.datapipe.readers import template_instructions

TEMPLATE_INSTRUCTIONS = template_instructions()
"""Instructions that are templates, not content: dedup and decontamination ignore them."""

# --------------------------------------------------------------------------- normalisation

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACES_RE = re.compile(r"[ \t\u00a0]+")
_BLANKS_RE = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """NFKC, no control or zero-width characters, single spaces, at most one blank line in a row.

    Medical text keeps its case and punctuation (``mg`` vs ``Mg`` matters); only layout noise goes.
    """
    if text.isascii():
        return _normalize_ascii(text)
    return _normalize_unicode(text)


def _normalize_unicode(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL_RE.sub("", text)
    text = "\n".join(_SPACES_RE.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANKS_RE.sub("\n\n", text).strip()


_ASCII_SPACES_RE = re.compile(r"[ \t]{2,}|\t")
_LINE_EDGE_RE = re.compile(r" ?\n ?")
_ASCII_CONTROL = bytes(c for c in range(128) if _CONTROL_RE.match(chr(c)))


def _normalize_ascii(text: str) -> str:
    """:func:`normalize_text` for ASCII text, without a pass per line.

    ASCII is already NFKC. Once control characters are gone, the only whitespace ``str.strip``
    would remove at a line's edges is a space or tab, which collapse to one space, so a single
    space next to each newline is all there is to strip. Each step runs only when a substring
    check says it has something to change: most text is already clean.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    raw = text.encode("ascii")
    clean = raw.translate(None, _ASCII_CONTROL)
    if len(clean) != len(raw):
        text = clean.decode("ascii")
    if "\t" in text or "  " in text:
        text = _ASCII_SPACES_RE.sub(" ", text)
    if " \n" in text or "\n " in text:
        text = _LINE_EDGE_RE.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANKS_RE.sub("\n\n", text)
    return text.strip()


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
    return _prompt(record.instruction, record.input)


def _prompt(instruction: str, input: str) -> str:
    return input if instruction in TEMPLATE_INSTRUCTIONS else f"{instruction}\n{input}"


def content_text(record: TrainingRecord) -> str:
    return f"{prompt_text(record)}\n{record.output}"


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


# bytes -> the byte lower-cased when it is an ASCII word character (\w), else a space
_WORD_BYTES = bytes(
    c + 32 if 65 <= c <= 90 else c if (97 <= c <= 122 or 48 <= c <= 57 or c == 95) else 32 for c in range(256)
)


def word_keys(text: str) -> list[bytes]:
    """:func:`words` as UTF-8 bytes, the form the dedup and decontamination indexes hash.

    Why: for ASCII text (nearly all of it) one C-level ``translate`` and ``split`` on bytes
    gives the same words as the regex at a third of the cost, already encoded for hashing.
    """
    if text.isascii():
        return text.encode("ascii").translate(_WORD_BYTES).split()
    return [w.encode() for w in words(text)]


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

    def is_duplicate(self, record: TrainingRecord, tokens: list[bytes] | None = None) -> bool:
        """``tokens``: ``word_keys(content_text(record))`` when the caller has them already."""
        key = xxhash.xxh64_intdigest(
            b" ".join(tokens if tokens is not None else word_keys(content_text(record)))
        )
        if key in self._seen:
            return True
        self._seen.add(key)
        return False

    def __len__(self) -> int:
        return len(self._seen)


_SHINGLE_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio); wraps mod 2**64


class _WordHashCache(dict[bytes, int]):
    """xxh64 of a word, memoised: a dict lookup in C costs half an encode plus a hash call, and
    a corpus repeats its vocabulary. Bounded: past ``limit`` words new ones are hashed, not kept,
    so memory stays a few tens of MiB whatever the input."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __missing__(self, word: bytes) -> int:
        value = xxhash.xxh64_intdigest(word)
        if len(self) < self.limit:
            self[word] = value
        return value


_WORD_HASHES = _WordHashCache(limit=200_000)


@functools.cache
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """``(bands, rows)`` for MinHash LSH at ``threshold``: the split of ``num_perm`` that
    minimises the false positive plus false negative probability mass, as datasketch's
    ``MinHashLSH`` chooses it (equal weights), integrated on a grid with numpy instead of SciPy.

    A pair of Jaccard similarity ``s`` becomes a candidate with probability
    ``1 - (1 - s**rows)**bands``; false positives are that mass below the threshold, false
    negatives the rest of it above.
    """
    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], float)
    bands, rows = pairs[:, :1], pairs[:, 1:]
    grid = 1001
    low = np.linspace(0.0, threshold, grid)
    high = np.linspace(threshold, 1.0, grid)
    false_pos = np.trapezoid(1 - (1 - low**rows) ** bands, low, axis=1)
    false_neg = np.trapezoid((1 - high**rows) ** bands, high, axis=1)
    b, r = pairs[int(np.argmin(0.5 * false_pos + 0.5 * false_neg))]
    return int(b), int(r)


def ngram_hashes(tokens: list[bytes], n: int) -> np.ndarray:
    """64-bit hashes of the word ``n``-grams of ``tokens`` (one hash of all of them when fewer).

    Why not hash each joined n-gram: that is one string join, encode and hash call per n-gram
    in Python. Each word is hashed once (xxh64, in C via ``map``) and an n-gram's hash is a
    polynomial of its words' hashes, computed for all n-grams at once in numpy.
    """
    hashes = np.fromiter(map(_WORD_HASHES.__getitem__, tokens), dtype=np.uint64, count=len(tokens))
    if len(hashes) < n:
        return np.array([xxhash.xxh64_intdigest(b" ".join(tokens))], dtype=np.uint64)
    return _windows(hashes, n)


def _windows(hashes: np.ndarray, n: int) -> np.ndarray:
    """``W[i] = sum(hashes[i + j] * M**(n - 1 - j) for j < n)`` mod 2**64, for every window.

    By halving (``W_2k[i] = W_k[i] * M**k + W_k[i + k]``), so an 8-gram costs 6 numpy
    operations rather than 14 (numpy's per-call overhead is most of the time on short texts).
    """
    if n == 1:
        return hashes
    if n % 2:
        shorter = _windows(hashes, n - 1)
        return shorter[:-1] * _SHINGLE_MULT + hashes[n - 1 :]
    k = n // 2
    half = _windows(hashes, k)
    return half[: len(half) - k] * _mult_power(k) + half[k:]


@functools.cache
def _mult_power(k: int) -> np.uint64:
    return np.uint64(pow(int(_SHINGLE_MULT), k, 1 << 64))


class NearDeduper:
    """Near duplicates by MinHash over word shingles and an LSH index.

    A record is dropped when an earlier record's estimated Jaccard similarity is at least
    ``threshold``. Why the LSH runs at a lower threshold and candidates are verified: with 64
    permutations, LSH banding tuned to 0.85 (4 bands of 15 rows) finds a pair at Jaccard 0.9
    only 60% of the time, so most near duplicates slipped through. Banding at ``threshold -
    0.15`` finds nearly all of them, and checking each candidate's signature keeps false
    positives out. The signatures (``num_perm`` 32-bit values per kept record) are part of the
    index, so memory still grows with kept records, not with input size.

    Why not datasketch's ``MinHash``/``MinHashLSH`` objects per record: they cost more in
    Python bookkeeping (copying a template, validating, byte-swapping each band) than the
    hashing itself, and importing datasketch imports SciPy (half a second per build). The
    method is the same: datasketch's affine32 permutations applied in one numpy expression,
    bands chosen as datasketch chooses them (:func:`lsh_bands`), a band is a dict key.
    """

    def __init__(self, threshold: float = 0.85, num_perm: int = 64, shingle: int = 3) -> None:
        # affine permutations x -> a*x + b mod 2**32 (odd a: a bijection), seeded: same every build
        gen = np.random.RandomState(1)
        self._a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        self._b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
        bands, rows = lsh_bands(max(0.5, threshold - 0.15), num_perm)
        self._bands = [(i * rows, (i + 1) * rows) for i in range(bands)]
        # one dict per band: band bytes -> index of the first kept record, or a list when several
        self._tables: list[dict[bytes, int | list[int]]] = [{} for _ in self._bands]
        self._min_equal = threshold * num_perm
        self._signatures: list[bytes] = []
        self._shingle = shingle

    def signature(self, tokens: list[bytes]) -> np.ndarray:
        """MinHash (``num_perm`` uint32 values) of the record's word ``shingle``-grams.

        Shingles are hashed by :func:`ngram_hashes`.
        """
        combined = ngram_hashes(tokens, self._shingle)
        # the top 32 bits of a 64-bit hash: already avalanched, so datasketch's murmur pre-mix
        # (for weak hash functions) would add nothing; uint32 arithmetic wraps mod 2**32
        # (a repeated shingle cannot change a minimum, so there is no need to deduplicate them)
        shingles = (combined >> np.uint64(32)).astype(np.uint32)
        return (shingles[:, None] * self._a + self._b).min(axis=0)

    def is_duplicate(self, record: TrainingRecord, tokens: list[bytes] | None = None) -> bool:
        """``tokens``: ``word_keys(content_text(record))`` when the caller has them already."""
        signature = self.signature(tokens if tokens is not None else word_keys(content_text(record)))
        raw = signature.tobytes()
        keys = [raw[4 * start : 4 * end] for start, end in self._bands]
        seen: set[int] = set()
        for table, key in zip(self._tables, keys, strict=True):
            hit = table.get(key)
            if hit is None:
                continue
            for idx in (hit,) if isinstance(hit, int) else hit:
                if idx in seen:
                    continue
                seen.add(idx)
                earlier = np.frombuffer(self._signatures[idx], dtype=np.uint32)
                if np.count_nonzero(earlier == signature) >= self._min_equal:
                    return True
        idx = len(self._signatures)
        self._signatures.append(raw)
        for table, key in zip(self._tables, keys, strict=True):
            hit = table.get(key)
            if hit is None:
                table[key] = idx
            elif isinstance(hit, int):
                table[key] = [hit, idx]
            else:
                hit.append(idx)
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
        toks = word_keys(text)
        return set(ngram_hashes(toks, self.n).tolist()) if toks else set()

    def add(self, record: TrainingRecord) -> None:
        self._grams |= self._hashes(prompt_text(record))
        self.sources += 1

    def add_all(self, records: Iterable[TrainingRecord]) -> None:
        for record in records:
            self.add(record)

    def overlap(self, record: TrainingRecord) -> float:
        return self._overlap(prompt_text(record))

    def _overlap(self, prompt: str) -> float:
        grams = self._hashes(prompt)
        if not grams or not self._grams:
            return 0.0
        return len(grams & self._grams) / len(grams)

    def is_contaminated(self, record: TrainingRecord) -> bool:
        return bool(self._grams) and self.overlap(record) >= self.threshold

    def is_contaminated_prompt(self, instruction: str, input: str) -> bool:
        """:meth:`is_contaminated` for a record's fields, without building the record."""
        return bool(self._grams) and self._overlap(_prompt(instruction, input)) >= self.threshold

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
