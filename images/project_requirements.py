"""Print the requirements that pyproject.toml declares, one a line, for an image's dependency layer.

The images install healthnav's dependencies in a layer of their own, before the code, so that a
code change rebuilds only the small last layer. That layer may only see pyproject.toml (any other
file would make every code change rebuild the GBs of dependencies), so the requirements are read
from it here rather than by building the project:

    python project_requirements.py pyproject.toml train        # base dependencies + the extra
    python project_requirements.py pyproject.toml --build      # the build backend (build-system)

An extra that names the project itself (``healthnav[data,train]``) is expanded in place.
Standard library only: it runs in the bare base image, before anything is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

SELF_REFERENCE = re.compile(r"^\s*(?P<name>[A-Za-z0-9._-]+)\s*\[(?P<extras>[^\]]*)\]\s*$")


def normalise(name: str) -> str:
    """PEP 503 name normalisation: `Health_Nav` and `health-nav` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements(pyproject: dict, extras: list[str]) -> list[str]:
    """Base dependencies plus those of ``extras``, self-referencing extras expanded, in order, once each."""
    project = pyproject["project"]
    name = normalise(project["name"])
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    out: list[str] = []
    seen_extras: set[str] = set()

    def add(requirements: list[str]) -> None:
        for requirement in requirements:
            match = SELF_REFERENCE.match(requirement)
            if match and normalise(match["name"]) == name:
                expand([e.strip() for e in match["extras"].split(",") if e.strip()])
            elif requirement not in out:
                out.append(requirement)

    def expand(names: list[str]) -> None:
        for extra in names:
            if extra not in optional:
                raise SystemExit(f"project_requirements: pyproject.toml has no extra {extra!r}")
            if extra not in seen_extras:
                seen_extras.add(extra)
                add(optional[extra])

    add(list(project.get("dependencies", [])))
    expand(extras)
    return out


def build_requirements(pyproject: dict) -> list[str]:
    """What the build backend needs (so the code layer can install without build isolation)."""
    return list(pyproject.get("build-system", {}).get("requires", []))


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    pyproject = tomllib.loads(Path(argv[0]).read_text())
    args = argv[1:]
    if args == ["--build"]:
        lines = build_requirements(pyproject)
    else:
        extras = [e for arg in args for e in arg.split(",") if e]
        lines = project_requirements(pyproject, extras)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
