"""How a pydantic validation error is told to a user: the field's path, then what is wrong.

Every configuration a user writes (a FineTuneJob spec, a trainer or serve config, a build
config, an HTTP request body, a reference file line) is a pydantic model, so every "invalid
input" message comes from here and reads the same: ``training.epochs: Input should be greater
than 0``. The input value is never echoed (it may be a secret or a patient's words).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError


def _errors(exc: ValidationError | Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """pydantic's error list; FastAPI's ``RequestValidationError.errors()`` has the same shape."""
    return list(exc.errors() if isinstance(exc, ValidationError) else exc)


def validation_problems(
    exc: ValidationError | Iterable[Mapping[str, Any]],
    *,
    root: str = "",
    drop_first: str | None = None,
    limit: int | None = None,
) -> list[str]:
    """``["<path>: <message>", ...]``, one per error, at most ``limit``.

    ``root`` prefixes every path (``spec`` for a custom resource's spec); ``drop_first`` removes
    a leading location element that names no field the user wrote (FastAPI's ``body``). An
    error at the top level is labelled ``root`` or ``drop_first``, else ``<root>``.
    """
    out = []
    for err in _errors(exc)[:limit]:
        loc = [str(part) for part in err.get("loc", ())]
        if drop_first is not None and loc[:1] == [drop_first]:
            loc = loc[1:]
        path = ".".join(loc)
        label = f"{root}.{path}" if root and path else path or root or drop_first or "<root>"
        out.append(f"{label}: {err.get('msg', 'invalid')}")
    return out


def describe_validation_error(
    exc: ValidationError | Iterable[Mapping[str, Any]],
    *,
    root: str = "",
    drop_first: str | None = None,
    limit: int | None = None,
    separator: str = "; ",
) -> str:
    """:func:`validation_problems` joined into one line (or one per line with ``separator="\\n"``)."""
    return separator.join(validation_problems(exc, root=root, drop_first=drop_first, limit=limit))
