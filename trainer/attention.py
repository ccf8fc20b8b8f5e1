"""Variable-length (packed) causal attention on PyTorch SDPA, for the CPU and GPUs without flash-attn.

Packed training puts several examples into one flattened sequence whose position ids restart at 0
for every example. Attention must then be block-diagonal: a token may only see earlier tokens *of
its own example*. transformers' stock ``sdpa`` path gets this right by materialising a
``T x T`` boolean mask, but it then still computes attention over the whole ``T x T`` square
(a 2048-token row of seven 300-token examples does 7x the attention FLOPs it needs).

``healthnav_varlen`` instead cuts the row at the example boundaries and runs SDPA with
``is_causal=True`` on each segment: no mask tensor, ``sum(len_i^2)`` work (the same as
flash-attn's varlen kernel), and no cross-example attention *by construction* — the segments
never meet. Everything else (generation with a KV cache, padded batches) is handed to
transformers' own ``sdpa_attention_forward`` unchanged, so the same model object can also
generate.

Segment boundaries come from ``cu_seq_lens_q`` when the caller passes it (the trainer does, like
flash-attn's varlen API), otherwise from the position ids (every ``0`` starts an example).
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

ATTN_IMPLEMENTATION = "healthnav_varlen"


def _segment_bounds(query_len: int, kwargs: dict[str, Any]) -> list[int] | None:
    """Cumulative example boundaries [0, e1, e2, ..., T] of a packed row, or None if not packed."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is not None:
        bounds = [int(x) for x in cu.reshape(-1).tolist()]
    else:
        position_ids = kwargs.get("position_ids")
        if position_ids is None or position_ids.shape[0] != 1:
            return None
        starts = (position_ids.reshape(-1) == 0).nonzero().reshape(-1).tolist()
        if not starts or starts[0] != 0:
            return None
        bounds = [*starts, query_len]
    if len(bounds) < 2 or bounds[-1] != query_len:
        return None
    return bounds


def varlen_sdpa_attention_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers attention-interface function: per-example causal SDPA over a packed row."""
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q_len, kv_len = query.shape[2], key.shape[2]
    bounds = None
    if attention_mask is None and query.shape[0] == 1 and q_len == kv_len and q_len > 1:
        bounds = _segment_bounds(q_len, kwargs)
    if bounds is None:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    if kwargs.get("softcap") is not None:
        raise ValueError(f"{ATTN_IMPLEMENTATION} does not support attention softcapping; use eager attention")
    window = kwargs.get("sliding_window")
    gqa = query.shape[1] != key.shape[1]
    outputs = []
    for start, end in itertools.pairwise(bounds):
        if end <= start:
            continue
        q, k, v = query[:, :, start:end], key[:, :, start:end], value[:, :, start:end]
        seg_len = end - start
        mask = None
        if window is not None and seg_len > window:
            idx = torch.arange(seg_len, device=query.device)
            diff = idx[:, None] - idx[None, :]
            mask = (diff >= 0) & (diff < window)
        outputs.append(
            F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                is_causal=mask is None,
                dropout_p=dropout if module.training else 0.0,
                scale=scaling,
                enable_gqa=gqa,
            )
        )
    out = torch.cat(outputs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _varlen_mask(**kwargs: Any) -> Any:
    """Mask-interface function: no mask for unpadded input (segments are cut in the attention
    function), transformers' SDPA mask when a padded batch is generated from."""
    from transformers.masking_utils import sdpa_mask

    attention_mask = kwargs.get("attention_mask")
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return sdpa_mask(**kwargs)


@functools.cache
def register() -> str:
    """Register ``healthnav_varlen`` with transformers (idempotent) and return its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, varlen_sdpa_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, _varlen_mask)
    return ATTN_IMPLEMENTATION


def choose_attn_implementation(device_type: str, model_type: str) -> str:
    """flash-attn's varlen kernel on CUDA when installed; otherwise our packed SDPA.

    Families with attention softcapping (Gemma 2/3) need eager attention; transformers' eager
    path honours packed position ids through its block-diagonal mask.
    """
    if model_type in ("gemma2", "gemma3", "gemma3_text"):
        return "eager"
    if device_type == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return register()
