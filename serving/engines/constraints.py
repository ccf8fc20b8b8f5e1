"""Constrained decoding for the transformers engine, with lm-format-enforcer.

A :class:`~healthnav.serving.engine.Sampling` may carry a ``json_schema`` (OpenAI
``response_format``) or a ``regex`` (the assessment format). lm-format-enforcer turns either
into the set of tokens allowed after each prefix, handed to ``model.generate`` as its
``prefix_allowed_tokens_fn``: the model still chooses, but only among tokens that keep the text
a prefix of a valid answer, and it may end only where the answer is complete. vLLM applies the
same constraints with its own structured outputs (:mod:`healthnav.serving.engines.vllm`).

Two things make it fast enough on a CPU. lm-format-enforcer caches the allowed tokens per parser
state, and the cache is kept per constraint across requests here (a free-text state costs one
walk of the vocabulary, about a second, the first time only). Counted repetitions of free text
(``[^\\n]{m,n}``) would give every character count a state of its own and defeat that cache, so
they are relaxed to ``[^\\n]{m,}`` for the parser and their upper bound applied as a line
length instead: past ``n`` characters on a line only tokens that end the line (or the answer)
stay allowed. The bound is therefore approximate by at most one token; the format is exact.

lm-format-enforcer's own transformers integration does not import under transformers 5, so the
tokenizer data it needs is built here with the same recipe; only its core API is used.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from healthnav.serving.engine import EngineRequestError, Sampling

log = logging.getLogger(__name__)

_COUNTED_LINE = re.compile(r"\[\^\\n\]\{(\d+),(\d+)\}")
MAX_CACHED_CONSTRAINTS = 32
"""Constraints whose allowed-token caches are kept (assessments use one; JSON schemas vary)."""


def relax_counted_lines(pattern: str) -> tuple[str, int | None]:
    """``pattern`` with ``[^\\n]{m,n}`` relaxed to ``[^\\n]{m,}``, and the largest ``n`` (or None)."""
    bounds = [int(n) for _, n in _COUNTED_LINE.findall(pattern)]
    relaxed = _COUNTED_LINE.sub(lambda m: f"[^\\n]{{{m.group(1)},}}", pattern)
    return relaxed, max(bounds) if bounds else None


@dataclass
class _Cached:
    allowed: dict[Any, Any] = field(default_factory=dict)
    """lm-format-enforcer's ``allowed_token_cache`` (parser state -> allowed tokens) for one constraint."""


class Constrainer:
    """Per engine: the tokenizer's data for lm-format-enforcer, built once, and per-constraint caches."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._data: Any = None
        self._newline_tokens: frozenset[int] = frozenset()
        self._caches: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def _tokenizer_data(self) -> Any:
        """lm-format-enforcer's ``TokenEnforcerTokenizerData``, by its integration's recipe."""
        if self._data is not None:
            return self._data
        from lmformatenforcer import TokenEnforcerTokenizerData

        tok = self.tokenizer
        vocab_size = len(tok)
        token_0 = tok.encode("0", add_special_tokens=False)[-1]
        special = set(tok.all_special_ids)
        regular: list[tuple[int, str, bool]] = []
        newline: set[int] = set()
        for idx in range(vocab_size):
            if idx in special:
                continue
            # decoded after "0" keeps the leading space of a word-start token
            after_0 = tok.decode([token_0, idx])[1:]
            alone = tok.decode([idx])
            regular.append((idx, after_0, len(after_0) > len(alone)))
            if "\n" in after_0:
                newline.add(idx)

        def decode(ids: list[int]) -> str:
            return str(tok.decode(ids)).rstrip("\ufffd")

        self._newline_tokens = frozenset(newline)
        self._data = TokenEnforcerTokenizerData(regular, decode, tok.eos_token_id, False, vocab_size)
        return self._data

    def _parser(self, sampling: Sampling) -> tuple[str, Any, int | None]:
        from lmformatenforcer import JsonSchemaParser, RegexParser

        if sampling.regex is not None:
            pattern, max_line = relax_counted_lines(sampling.regex)
            return f"regex:{sampling.regex}", RegexParser(pattern), max_line
        try:
            parser = JsonSchemaParser(sampling.json_schema)
            parser.get_allowed_characters()  # some schemas fail only on first use
        except Exception as exc:  # pydantic errors of lm-format-enforcer's schema model
            raise EngineRequestError(
                f"response_format.json_schema.schema is not a JSON schema this server can enforce: "
                f"{type(exc).__name__}",
                param="response_format",
            ) from exc
        return f"json:{json.dumps(sampling.json_schema, sort_keys=True)}", parser, None

    def prefix_allowed_tokens_fn(
        self, sampling: Sampling, prompt_len: int
    ) -> Callable[[int, Any], list[int]] | None:
        """The ``prefix_allowed_tokens_fn`` enforcing ``sampling``'s constraint (blocking: builds caches).

        Without lm-format-enforcer installed (it is in the ``serve`` extra) a JSON
        ``response_format`` is refused with a 400, and an assessment is generated unconstrained
        (None), with a warning: the assessment's parser and fallback still make it safe.
        """
        if importlib.util.find_spec("lmformatenforcer") is None:
            if sampling.json_schema is not None:
                raise EngineRequestError(
                    "response_format needs lm-format-enforcer on this server (pip install "
                    "'healthnav[serve]'); send response_format text or omit it",
                    param="response_format",
                )
            log.warning("lm-format-enforcer is not installed: generating without the output constraint")
            return None
        from lmformatenforcer import TokenEnforcer

        with self._lock:
            data = self._tokenizer_data()
            key, parser, max_line = self._parser(sampling)
            cached = self._caches.pop(key, None) or _Cached()
            self._caches[key] = cached  # most recently used last
            while len(self._caches) > MAX_CACHED_CONSTRAINTS:
                self._caches.pop(next(iter(self._caches)))
        enforcer = TokenEnforcer(data, parser)
        enforcer.allowed_token_cache = cached.allowed
        newline, eos = self._newline_tokens, self.tokenizer.eos_token_id
        decode = self.tokenizer.decode

        def allowed(batch_id: int, sent: Any) -> list[int]:
            ids = sent.tolist()
            tokens: list[int] = list(enforcer.get_allowed_tokens(ids).allowed_tokens)
            if max_line is None or len(ids) <= prompt_len:
                return tokens
            text = decode(ids[prompt_len:], skip_special_tokens=True)
            if len(text) - (text.rfind("\n") + 1) < max_line:
                return tokens
            ending = [t for t in tokens if t in newline or t == eos]
            return ending or tokens

        return allowed
