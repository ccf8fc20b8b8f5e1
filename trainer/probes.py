"""Record an adapter's probes at the end of training (the contract: :mod:`healthnav.contracts.probes`).

Serving replicas check a loaded adapter against these numbers before they serve it, so an
engine that ignores the adapter or computes it differently is refused instead of answering
patients with the base model's words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from healthnav.contracts.probes import PROBE_PROMPTS, PROBE_TOKENS, AdapterProbes, Probe


def token_logprobs(model: Any, ids: Any) -> list[float]:
    """log p(token t | tokens < t) for t >= 1 of one sequence (a ``[1, T]`` tensor)."""
    import torch

    logits = model(input_ids=ids).logits[0, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:].unsqueeze(1)).squeeze(1).tolist()


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def record_probes(
    model: Any,
    tokenizer: Any,
    *,
    precision: str,
    prompts: Sequence[str] = PROBE_PROMPTS,
    max_new_tokens: int = PROBE_TOKENS,
) -> AdapterProbes | None:
    """Greedy continuations of ``prompts`` by the peft ``model``, scored with and without the adapter.

    The whole text is tokenized again as a serving engine will tokenize it, and the scored
    tokens are those past the prompt's own tokens. None when no prompt got a continuation (a
    model that ends every answer at once has nothing to compare).
    """
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    probes: list[Probe] = []
    try:
        with torch.inference_mode():
            for prompt in prompts:
                ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    use_cache=True,  # training turned the cache off; generation wants it
                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                )
                text = prompt + tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
                full = tokenizer(text, return_tensors="pt")["input_ids"].to(device)
                start = max(1, _common_prefix(ids[0].tolist(), full[0].tolist()))
                if start >= full.shape[1]:
                    continue
                adapter = token_logprobs(model, full)[start - 1 :]
                with model.disable_adapter():
                    base = token_logprobs(model, full)[start - 1 :]
                probes.append(
                    Probe(text=text, tokens=full.shape[1], adapter_logprobs=adapter, base_logprobs=base)
                )
    finally:
        model.train(was_training)
    return AdapterProbes(probes=probes, precision=precision) if probes else None
