"""Tokenisation, step planning and flattening: the parts that decide what the model sees."""

from __future__ import annotations

import pytest

from healthnav.contracts.prompts import render_example
from healthnav.trainer.data import IGNORE_INDEX, TokenizedExample, build_plan, collate, tokenize_record
from healthnav.trainer.tinymodel import build_tokenizer

from .helpers import corpus, make_records

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(corpus(make_records(12)), vocab_size=512)


def test_tokenize_uses_shared_prompt_and_appends_eos(tokenizer) -> None:
    record = make_records(1)[0]
    ex = tokenize_record(record, tokenizer, max_seq_length=512)
    assert ex is not None
    prompt, completion = render_example(record)
    assert tokenizer.decode(ex.input_ids[: ex.prompt_len], skip_special_tokens=True) == prompt
    assert ex.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ex.input_ids[ex.prompt_len :], skip_special_tokens=True) == completion


def test_truncation_and_prompt_only_examples_are_dropped(tokenizer) -> None:
    record = make_records(1, long=True)[0]
    full = tokenize_record(record, tokenizer, 4096)
    assert full is not None and not full.truncated
    cut = tokenize_record(record, tokenizer, full.prompt_len + 2)
    assert cut is not None and cut.truncated and len(cut) == full.prompt_len + 2 and cut.target_count == 2
    assert tokenize_record(record, tokenizer, full.prompt_len) is None


def test_collate_flattens_without_padding_or_cross_example_targets() -> None:
    a = TokenizedExample((1, 10, 11, 12, 2), prompt_len=3)
    b = TokenizedExample((1, 20, 21, 2), prompt_len=2)
    batch = collate([a, b])
    assert batch.input_ids == [1, 10, 11, 12, 2, 1, 20, 21, 2]
    assert batch.position_ids == [0, 1, 2, 3, 4, 0, 1, 2, 3]
    assert batch.cu_seq_lens == [0, 5, 9]
    # only completion tokens are predicted; the last token of `a` does not predict b's BOS
    assert batch.targets == [
        IGNORE_INDEX,
        IGNORE_INDEX,
        12,
        2,
        IGNORE_INDEX,
        IGNORE_INDEX,
        21,
        2,
        IGNORE_INDEX,
    ]
    assert len(batch.target_positions) == a.target_count + b.target_count


def _plan(lengths, **overrides):
    settings = dict(
        epochs=2, batch_size=2, gradient_accumulation_steps=2, max_seq_length=100, packing=True, seed=7
    )
    settings.update(overrides)
    return build_plan(lengths, [max(1, n // 3) for n in lengths], **settings)


def test_plan_covers_every_example_once_per_epoch_within_budgets() -> None:
    lengths = [30 + (i * 37) % 70 for i in range(40)]
    plan = _plan(lengths)
    for epoch in (0, 1):
        seen = [i for s in plan.steps if s.epoch == epoch for mb in s.micro_batches[0] for i in mb]
        assert sorted(seen) == list(range(40))
    for step in plan.steps:
        for mb in step.micro_batches[0]:
            assert sum(lengths[i] for i in mb) <= 2 * 100  # batch_size rows of maxSeqLength tokens
    # packing fills steps: far fewer steps than one example per micro-batch would need
    assert len(plan) < 40 * 2 / 4


def test_plan_is_deterministic_and_fingerprinted() -> None:
    lengths = [30 + (i * 37) % 70 for i in range(40)]
    assert _plan(lengths).steps == _plan(lengths).steps
    assert _plan(lengths).fingerprint == _plan(lengths).fingerprint
    assert _plan(lengths, seed=8).fingerprint != _plan(lengths).fingerprint
    assert _plan(lengths, seed=8).steps != _plan(lengths).steps


def test_plan_max_steps_and_fractional_epochs() -> None:
    lengths = [50] * 16
    assert len(_plan(lengths, max_steps=13)) == 13
    one = len(_plan(lengths, epochs=1))
    assert len(_plan(lengths, epochs=1.5)) == -(-one * 3 // 2)


def test_plan_without_packing_uses_batch_size_examples() -> None:
    plan = _plan([50] * 16, packing=False, epochs=1)
    assert all(len(mb) == 2 for s in plan.steps for mb in s.micro_batches[0])
    assert len(plan) == 4


def test_plan_splits_steps_across_processes() -> None:
    lengths = [30 + (i * 37) % 70 for i in range(40)]
    plan = _plan(lengths, world_size=2, epochs=1)
    for step in plan.steps:
        assert len(step.micro_batches) == 2 and all(step.micro_batches[r] for r in range(2))
    seen = [i for s in plan.steps for r in range(2) for mb in s.micro_batches[r] for i in mb]
    assert sorted(seen) == list(range(40))
