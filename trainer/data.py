"""From training records to padding-free micro-batches, deterministically.

Three pure steps, each testable alone:

1. :func:`tokenize_record` renders a record with the shared prompt contract
   (:func:`healthnav.contracts.prompts.render_example`), tokenises prompt and completion
   separately (the server tokenises the prompt the same way before generating), appends EOS to
   the completion and marks only completion tokens as training targets.
2. :func:`build_plan` decides, from the example lengths, the seed and the batch settings alone,
   which examples make up every optimizer step of the whole run and how they are split into
   micro-batches. Because nothing else feeds it, a resumed run rebuilds the identical plan and
   continues at ``plan.steps[step]``: that is the whole of "data position" in a checkpoint.
3. :func:`collate` flattens a micro-batch into ONE row without any padding: input ids,
   position ids restarting at 0 per example, shifted targets (-100 outside completions and at
   example ends) and cumulative sequence lengths for variable-length attention.

Packing vs not: with ``packing`` a micro-batch holds as many whole examples as fit in
``batch_size * max_seq_length`` tokens; without it, exactly ``batch_size`` examples. Either way
no pad token is ever computed on.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from healthnav.contracts.prompts import render_example
from healthnav.contracts.records import TrainingRecord

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedExample:
    """Token ids of prompt + completion (+EOS); ``prompt_len`` leading tokens carry no loss."""

    input_ids: tuple[int, ...]
    prompt_len: int
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def target_count(self) -> int:
        """Tokens the loss is taken on: every completion token (a prediction of it)."""
        return len(self.input_ids) - self.prompt_len


def tokenize_record(record: TrainingRecord, tokenizer: Any, max_seq_length: int) -> TokenizedExample | None:
    """Tokenise one record; None when not even one completion token fits in ``max_seq_length``."""
    prompt, completion = render_example(record)
    prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    completion_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer defines no EOS token; the model could never learn to stop")
    completion_ids.append(int(tokenizer.eos_token_id))
    ids = prompt_ids + completion_ids
    truncated = len(ids) > max_seq_length
    if truncated:
        ids = ids[:max_seq_length]
    if len(ids) <= len(prompt_ids):
        return None
    return TokenizedExample(tuple(int(i) for i in ids), len(prompt_ids), truncated)


@dataclass(frozen=True)
class DataStats:
    examples: int
    skipped: int
    truncated: int
    tokens: int
    target_tokens: int


def tokenize_records(
    records: Sequence[TrainingRecord], tokenizer: Any, max_seq_length: int
) -> tuple[list[TokenizedExample], DataStats]:
    examples: list[TokenizedExample] = []
    skipped = 0
    for record in records:
        example = tokenize_record(record, tokenizer, max_seq_length)
        if example is None:
            skipped += 1
        else:
            examples.append(example)
    stats = DataStats(
        examples=len(examples),
        skipped=skipped,
        truncated=sum(e.truncated for e in examples),
        tokens=sum(len(e) for e in examples),
        target_tokens=sum(e.target_count for e in examples),
    )
    return examples, stats


@dataclass(frozen=True)
class Step:
    """One optimizer step: ``micro_batches[rank]`` is the list of micro-batches of that process."""

    epoch: int
    micro_batches: tuple[tuple[tuple[int, ...], ...], ...]
    target_tokens: int
    """Loss-bearing tokens in the whole step, all processes: the loss is normalised by this."""
    tokens: int


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    fingerprint: str
    """Hash of everything the plan depends on; a checkpoint from another plan cannot resume it."""
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.steps)


def _pack_first_fit_decreasing(
    indices: Sequence[int], lengths: Sequence[int], budget: int
) -> list[list[int]]:
    """Bins of whole examples with at most ``budget`` tokens each (fewest micro-batches)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for idx in sorted(indices, key=lambda i: (-lengths[i], i)):
        for b, free in enumerate(room):
            if lengths[idx] <= free:
                bins[b].append(idx)
                room[b] -= lengths[idx]
                break
        else:
            bins.append([idx])
            room.append(budget - lengths[idx])
    return bins


def _split_for_ranks(indices: Sequence[int], lengths: Sequence[int], world_size: int) -> list[list[int]]:
    """Balance a step's examples across processes by tokens (longest first onto the lightest)."""
    parts: list[list[int]] = [[] for _ in range(world_size)]
    load = [0] * world_size
    for idx in sorted(indices, key=lambda i: (-lengths[i], i)):
        r = min(range(world_size), key=lambda k: (load[k], len(parts[k])))
        parts[r].append(idx)
        load[r] += lengths[idx]
    return parts


def build_plan(
    lengths: Sequence[int],
    target_counts: Sequence[int],
    *,
    epochs: float,
    batch_size: int,
    gradient_accumulation_steps: int,
    max_seq_length: int,
    packing: bool,
    seed: int,
    max_steps: int | None = None,
    world_size: int = 1,
) -> Plan:
    """Every optimizer step of the run, decided up front from lengths and settings only."""
    import numpy as np

    n = len(lengths)
    if n < world_size:
        raise ValueError(f"{n} training examples cannot feed {world_size} processes")
    mb_budget = batch_size * max_seq_length
    step_capacity = mb_budget * gradient_accumulation_steps * world_size
    step_examples = batch_size * gradient_accumulation_steps * world_size

    def epoch_steps(epoch: int) -> list[list[int]]:
        order = np.random.default_rng([seed, epoch]).permutation(n).tolist()
        groups: list[list[int]] = []
        current: list[int] = []
        used = 0
        for idx in order:
            full = (used + lengths[idx] > step_capacity) if packing else (len(current) >= step_examples)
            if current and full:
                groups.append(current)
                current, used = [], 0
            current.append(idx)
            used += lengths[idx]
        if current:
            groups.append(current)
        # every process needs at least one example per step; fold a too-small tail into the previous step
        if len(groups) > 1 and len(groups[-1]) < world_size:
            groups[-2].extend(groups.pop())
        return groups

    steps_per_epoch = len(epoch_steps(0))
    total = max_steps if max_steps is not None else max(1, math.ceil(steps_per_epoch * epochs))

    steps: list[Step] = []
    epoch = 0
    while len(steps) < total:
        for group in epoch_steps(epoch):
            if len(steps) >= total:
                break
            per_rank = []
            for part in _split_for_ranks(group, lengths, world_size):
                if packing:
                    mbs = _pack_first_fit_decreasing(part, lengths, mb_budget)
                else:
                    ordered = sorted(part, key=lambda i: (-lengths[i], i))
                    mbs = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
                per_rank.append(tuple(tuple(mb) for mb in mbs))
            steps.append(
                Step(
                    epoch=epoch,
                    micro_batches=tuple(per_rank),
                    target_tokens=sum(target_counts[i] for i in group),
                    tokens=sum(lengths[i] for i in group),
                )
            )
        epoch += 1

    meta = {
        "lengths_sha256": hashlib.sha256(
            json.dumps([list(lengths), list(target_counts)]).encode()
        ).hexdigest(),
        "epochs": float(epochs),
        "batchSize": batch_size,
        "gradientAccumulationSteps": gradient_accumulation_steps,
        "maxSeqLength": max_seq_length,
        "packing": packing,
        "seed": seed,
        "maxSteps": max_steps,
        "worldSize": world_size,
    }
    fingerprint = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
    return Plan(steps=tuple(steps), fingerprint=fingerprint, meta={**meta, "stepsPerEpoch": steps_per_epoch})


def epoch_progress(plan: Plan, step: int) -> float:
    """Fractional epoch after ``step`` completed steps (for progress reports)."""
    if step <= 0:
        return 0.0
    per_epoch = max(1, plan.meta.get("stepsPerEpoch", 1))
    return round(step / per_epoch, 4)


@dataclass
class Batch:
    """One flattened, padding-free micro-batch (plain lists; the trainer makes tensors)."""

    input_ids: list[int]
    position_ids: list[int]
    targets: list[int]
    cu_seq_lens: list[int]
    max_length: int

    @property
    def target_positions(self) -> list[int]:
        """Positions whose output is scored: only these need logits (saves the LM head on prompts)."""
        return [i for i, t in enumerate(self.targets) if t != IGNORE_INDEX]


def collate(examples: Sequence[TokenizedExample]) -> Batch:
    """Concatenate examples into one row; targets are next tokens within the same example only."""
    input_ids: list[int] = []
    position_ids: list[int] = []
    targets: list[int] = []
    cu = [0]
    for ex in examples:
        ids = list(ex.input_ids)
        input_ids.extend(ids)
        position_ids.extend(range(len(ids)))
        # position t predicts token t+1; it is scored only when t+1 is a completion token
        targets.extend(ids[t + 1] if t + 1 >= ex.prompt_len else IGNORE_INDEX for t in range(len(ids) - 1))
        targets.append(IGNORE_INDEX)
        cu.append(cu[-1] + len(ids))
    return Batch(input_ids, position_ids, targets, cu, max((len(e) for e in examples), default=0))
