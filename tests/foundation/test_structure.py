"""The structure stays as docs/architecture.md describes it: no import cycles, one exception root.

Both checks read the source with :mod:`ast` (nothing is imported), so they run without the
heavy extras and see every module, including those that need torch or Ray.
"""

from __future__ import annotations

import ast
import builtins
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]

# Exceptions that do not derive from HealthnavError yet. This list may only shrink: a new
# exception class derives from ConfigurationError, RetryableError or HealthnavError
# (healthnav/contracts/errors.py).
NOT_UNDER_ROOT_YET: frozenset[str] = frozenset()


def _modules() -> Iterator[tuple[str, Path]]:
    """(dotted name, file) of every module of the distribution, from pyproject's package-dir."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = setuptools["package-dir"]
    for package in setuptools["packages"]:
        parent = max((p for p in roots if package == p or package.startswith(p + ".")), key=len)
        folder = REPO / roots[parent] / package[len(parent) :].lstrip(".").replace(".", "/")
        for path in sorted(folder.glob("*.py")):
            yield (package if path.name == "__init__.py" else f"{package}.{path.stem}"), path


MODULES = dict(_modules())


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    """The healthnav modules ``module`` imports, at module level or inside a function (a lazy
    import is a dependency too), but not under ``if TYPE_CHECKING``."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, ast.Import):
                found.update(
                    r for a in node.names if a.name.startswith("healthnav") and (r := _resolve(a.name))
                )
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")[: None if is_package else -1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                if target.startswith("healthnav"):
                    found.update(r for a in node.names if (r := _resolve(f"{target}.{a.name}")))
            else:
                for attr in ("body", "orelse", "finalbody", "handlers"):
                    visit([n for n in getattr(node, attr, []) if isinstance(n, ast.stmt | ast.excepthandler)])

    visit(ast.parse(path.read_text()).body)
    found.discard(module)
    return found


def test_the_modules_import_without_cycles() -> None:
    graph = {m: _imports(m, p) for m, p in MODULES.items()}
    assert len(graph) > 100  # the walk found the distribution
    done: set[str] = set()

    def cycle_from(node: str, stack: list[str]) -> list[str] | None:
        if node in stack:
            return [*stack[stack.index(node) :], node]
        if node in done:
            return None
        for dep in sorted(graph[node]):
            if found := cycle_from(dep, [*stack, node]):
                return found
        done.add(node)
        return None

    for module in sorted(graph):
        assert (cycle := cycle_from(module, [])) is None, " -> ".join(cycle)


def _classes() -> dict[str, list[tuple[str, list[str]]]]:
    """Class name -> [(module, base names)] over the distribution."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b).rpartition(".")[2] for b in node.bases]
                out.setdefault(node.name, []).append((module, bases))
    return out


def test_every_exception_derives_from_the_platform_root() -> None:
    classes = _classes()
    builtin_exceptions = {
        n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)
    }

    def ancestors(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        out: set[str] = set()
        for _, bases in classes.get(name, []):
            for base in bases:
                if base not in seen:
                    out |= {base} | ancestors(base, seen | {name})
        return out

    exceptions = {n for n in classes if ancestors(n) & builtin_exceptions}
    outside = {n for n in exceptions if n != "HealthnavError" and "HealthnavError" not in ancestors(n)}
    assert {"ConfigurationError", "RetryableError"} <= exceptions
    assert outside <= NOT_UNDER_ROOT_YET, sorted(outside - NOT_UNDER_ROOT_YET)


def test_no_class_shadows_a_builtin_name() -> None:
    assert not [n for n in _classes() if hasattr(builtins, n)]
