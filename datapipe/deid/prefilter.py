"""The Hyperscan prefilter: which rules could match a text, from one scan over its bytes.

Running each rule's Python gate costs more than the regexes it spares; Hyperscan matches every
rule's pattern at once. The Python patterns still find the spans, so the replacements are the
same with the prefilter on or off (``tests/datapipe/test_deid.py`` checks it).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from healthnav.datapipe.deid.rules import ID_VALUE, ID_VALUE_HS, RESIDUAL_RULES, Rule, name_lists, rules

# ASCII control characters Python's ``\s`` matches in str patterns and Hyperscan's does not
# (\x1c-\x1f): the prefilter scans them as spaces so both engines agree on ``\s``, ``\w``, ``\b``.
_HS_SPACES = bytes(32 if 0x1C <= c <= 0x1F else c for c in range(256))


class Prefilter:
    r"""Which rules could match a text, from one Hyperscan scan over it.

    Why: running each rule's Python gate (and the probe the gates share) costs more than the
    regexes they spare; Hyperscan matches every rule's pattern at once in one pass over the
    bytes. It is compiled in *prefilter* mode, which approximates what it cannot run exactly
    (look-arounds) by something looser, so it may report a rule that then finds nothing, never
    miss one that would match. The Python pattern still finds the spans, so replacements are
    exactly those of the gated rules. Only ASCII text is prefiltered (Python's Unicode ``\w``,
    ``\s`` and case folding differ from Hyperscan's); other text, a rule Hyperscan cannot
    compile, or any Hyperscan error falls back to the Python gates.
    """

    def __init__(self, rules: Sequence[Rule], first_names: Iterable[str] = ()) -> None:
        import hyperscan

        self._error = hyperscan.error
        ids: list[int] = []
        exprs: list[bytes] = []
        flags: list[int] = []
        base = hyperscan.HS_FLAG_PREFILTER | hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_ALLOWEMPTY
        for i, rule in enumerate(rules):
            # only ASCII text is scanned, so non-ASCII members of a class can go (\u2019 in _CAP)
            expr = (rule.hs or rule.pattern.pattern.replace(ID_VALUE, ID_VALUE_HS)).replace("\\u2019", "")
            if not expr.isascii() or "\\u" in expr:
                continue
            flag = base | (hyperscan.HS_FLAG_CASELESS if rule.pattern.flags & re.IGNORECASE else 0)
            ids.append(i)
            exprs.append(expr.encode())
            flags.append(flag)
        # the gazetteer's gate: a capitalised word (``CAP_WORD_RE``) that is a known first name
        # (without the look-ahead that ends the word: looser, never missing one)
        names = sorted(n.capitalize() for n in first_names if n.isascii() and n.isalpha())
        self.names_id: int | None = None
        # as plain literals (no \\b): looser, and a literal set compiles five times faster
        for name in names:
            self.names_id = len(rules)
            ids.append(self.names_id)
            exprs.append(name.encode())
            flags.append(hyperscan.HS_FLAG_SINGLEMATCH)
        self.covered = frozenset(ids)
        self._db = _load_cached(hyperscan, ids, exprs, flags)
        if self._db is not None:
            return
        self._db = hyperscan.Database()
        try:
            self._db.compile(expressions=exprs, ids=ids, flags=flags)
            _save_cached(hyperscan, self._db, ids, exprs, flags)
        except hyperscan.error:  # some expression is rejected: keep those that compile alone
            keep = []
            for j, (expr, flag) in enumerate(zip(exprs, flags, strict=True)):
                try:
                    hyperscan.Database().compile(expressions=[expr], ids=[ids[j]], flags=[flag])
                    keep.append(j)
                except hyperscan.error:
                    continue
            ids, exprs, flags = [ids[j] for j in keep], [exprs[j] for j in keep], [flags[j] for j in keep]
            if self.names_id not in ids:
                self.names_id = None
            self._db = hyperscan.Database()
            self._db.compile(expressions=exprs, ids=ids, flags=flags)
        self.covered = frozenset(ids)

    def hits(self, text: str) -> set[int] | None:
        """Ids of the covered rules that may match ``text``; None when it cannot tell."""
        if not text.isascii():
            return None
        found: set[int] = set()

        def on_match(rule_id: int, start: int, end: int, flags: int, context: object) -> None:
            found.add(rule_id)

        try:
            self._db.scan(text.encode("ascii").translate(_HS_SPACES), match_event_handler=on_match)
        except self._error:  # e.g. scratch in use by another thread: fall back, never skip rules
            return None
        return found


def _cache_path(hyperscan: Any, ids: list[int], exprs: list[bytes], flags: list[int]) -> Path:
    key = hashlib.sha256(repr((hyperscan.__version__, platform.machine(), ids, exprs, flags)).encode())
    root = Path(os.environ.get("HEALTHNAV_CACHE") or Path.home() / ".cache" / "healthnav")
    return root / f"deid-prefilter-{key.hexdigest()[:24]}.hsdb"


def _load_cached(hyperscan: Any, ids: list[int], exprs: list[bytes], flags: list[int]) -> Any:
    """The compiled database from a previous process (compiling takes about half a second).

    The file holds compiled patterns only, no text. It is keyed by the patterns, their flags,
    the Hyperscan version and the CPU architecture; anything unreadable means "compile again".
    """
    try:
        db = hyperscan.loadb(_cache_path(hyperscan, ids, exprs, flags).read_bytes(), hyperscan.HS_MODE_BLOCK)
        db.scratch = hyperscan.Scratch(db)  # a loaded database comes without scratch space
        db.scan(b"", match_event_handler=lambda *_: None)  # usable, or compile again
        return db
    except Exception:  # a missing, stale or foreign cache file is only slower
        return None


def _save_cached(hyperscan: Any, db: Any, ids: list[int], exprs: list[bytes], flags: list[int]) -> None:
    path = _cache_path(hyperscan, ids, exprs, flags)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(hyperscan.dumpb(db))
        tmp.replace(path)  # atomic: a concurrent reader sees the old file or the whole new one
    except OSError:  # a read-only home: compile each time
        pass


@functools.cache
def shared_prefilter() -> Prefilter | None:
    """One prefilter per process: compiling the database takes about a second, and every
    :class:`Deidentifier` has the same rules and first names (extra names are not in it)."""
    try:
        return Prefilter(rules(), name_lists()[0])
    except ImportError:  # hyperscan is in the "data" extra; without it the Python gates decide
        return None


@functools.cache
def residual_prefilter() -> Prefilter | None:
    """The residual checks' patterns in one Hyperscan database (see :class:`_Prefilter`)."""
    try:
        return Prefilter([Rule(name, pattern) for name, _, pattern in RESIDUAL_RULES])
    except ImportError:
        return None
