"""Source readers, one module per format: each turns a public or in-house format into training records.

A reader is a module in this package with a module-level ``READER = Reader("<format>", read, ...)``
(:class:`~healthnav.datapipe.readers.common.Reader`); the registry finds every such module by
itself, so a new source format is one new module and nothing else. A build config's
``sources[].format`` is checked against :func:`reader_formats`. The formats:

* ``instruction`` — the roadmap's instruction/input/output, taken as is;
* ``medqa``, ``medmcqa`` — multiple choice (``Answer: C. <text>``, options in metadata);
* ``pubmedqa`` — yes/no/maybe questions over abstracts;
* ``pubmed`` — PubMed efetch XML: conclusions or titles from abstracts;
* ``app`` — the app's assessment exports, patient data (de-identified by default).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from healthnav.datapipe.readers.common import Reader

_NOT_READERS = frozenset({"common"})


@functools.cache
def registry() -> dict[str, Reader]:
    """Format name → reader, for every reader module in this package."""
    found: dict[str, Reader] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name in _NOT_READERS:
            continue
        entry = getattr(importlib.import_module(f"{__name__}.{info.name}"), "READER", None)
        if isinstance(entry, Reader):
            if entry.format in found:
                raise RuntimeError(f"reader format {entry.format!r} is declared twice ({info.name})")
            found[entry.format] = entry
    return found


def reader_formats() -> list[str]:
    return sorted(registry())


def reader(format: str) -> Reader:
    """The reader of ``format``; ValueError naming the known formats otherwise."""
    try:
        return registry()[format]
    except KeyError:
        raise ValueError(f"unknown format {format!r}; known: {', '.join(reader_formats())}") from None


@functools.cache
def template_instructions() -> frozenset[str]:
    """Every reader's template instructions (dedup, decontamination and de-identification skip them)."""
    return frozenset(i for r in registry().values() for i in r.template_instructions)
