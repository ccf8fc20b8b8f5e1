"""Quality steps' fast paths give the same answers as the straightforward computation."""

from __future__ import annotations

import random

import pytest

from healthnav.datapipe.quality import (
    NearDeduper,
    _normalize_ascii,
    _normalize_unicode,
    lsh_bands,
    normalize_text,
    word_keys,
    words,
)

pytestmark = pytest.mark.unit


def test_ascii_normalisation_matches_the_general_path() -> None:
    # every kind of ASCII layout noise, in random combinations
    pieces = [" ", "\t", "\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\x00", "\x7f", "a", "B.", "  "]
    rnd = random.Random(3)
    for _ in range(20000):
        text = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 16)))
        assert _normalize_ascii(text) == _normalize_unicode(text), repr(text)
    assert normalize_text("  Take\t 500  mg \r\n\n\n\n twice daily \x00") == "Take 500 mg\n\ntwice daily"
    assert normalize_text("ﬁve\u00a0 tablets\u200b") == "five tablets"  # NFKC, nbsp, zero-width


@pytest.mark.parametrize("num_perm", [16, 64, 128])
def test_lsh_bands_are_datasketchs_choice(num_perm: int) -> None:
    from datasketch import MinHashLSH

    compared = 0
    for threshold in (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9):
        try:
            lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        except ValueError:  # datasketch refuses a single band; NearDeduper can use one
            continue
        assert lsh_bands(threshold, num_perm) == (lsh.b, lsh.r), threshold
        compared += 1
    assert compared >= 5


def _record_tokens(rnd: random.Random, n: int) -> list[bytes]:
    vocab = [f"w{i}".encode() for i in range(2000)]
    return [rnd.choice(vocab) for _ in range(n)]


def test_near_deduper_drops_one_word_edits_and_keeps_distinct_texts() -> None:
    from healthnav.contracts.records import TrainingRecord

    rnd = random.Random(5)
    dedup = NearDeduper(threshold=0.85, num_perm=64, shingle=3)
    originals = [_record_tokens(rnd, 120) for _ in range(200)]
    record = TrainingRecord(id="x", source="s", license="MIT", instruction="q", input="", output="a")
    assert not any(dedup.is_duplicate(record, toks) for toks in originals)
    edited = 0
    for toks in originals[:100]:
        changed = list(toks)
        changed[rnd.randrange(len(changed))] = b"changed"
        edited += dedup.is_duplicate(record, changed)
    # one word in 120 changes 3 of ~118 shingles: Jaccard ~0.95, found nearly always
    assert edited >= 95
    fresh = [_record_tokens(rnd, 120) for _ in range(100)]
    assert not any(dedup.is_duplicate(record, toks) for toks in fresh)
    # the tokens default to the record's own words


def test_word_keys_are_the_regex_words_encoded() -> None:
    rnd = random.Random(9)
    alphabet = "abcXYZ019_ -.,'\n\t[]@/"
    for _ in range(5000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 30)))
        assert word_keys(text) == [w.encode() for w in words(text)], repr(text)
    assert word_keys("Hello, World_42 l'été") == [b"hello", b"world_42", b"l", "été".encode()]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_ngram_hashes_are_the_polynomial_of_word_hashes(n: int) -> None:
    import xxhash

    from healthnav.datapipe.quality import _SHINGLE_MULT, ngram_hashes

    tokens = word_keys("the patient reports chest pain radiating to the left arm since this morning ok")
    hashes = [xxhash.xxh64_intdigest(t) for t in tokens]
    mult = int(_SHINGLE_MULT)
    expected = [
        sum(hashes[i + j] * pow(mult, n - 1 - j, 1 << 64) for j in range(n)) % (1 << 64)
        for i in range(len(tokens) - n + 1)
    ]
    assert ngram_hashes(tokens, n).tolist() == expected
    # fewer words than n: one hash of them all, so a short prompt still has an n-gram
    assert ngram_hashes(tokens[:1], 20).tolist() == [xxhash.xxh64_intdigest(tokens[0])]
