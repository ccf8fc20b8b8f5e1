"""The engines a ModelServe can choose, declared once: adding an engine is one entry in :data:`ENGINES`.

Each entry names the engine (the value of ``ServeAppConfig.engine`` and of a ModelServe's
``spec.engine``, whose CRD enum is generated from :data:`ENGINE_NAMES`), the class that
implements :class:`~healthnav.serving.engine.Engine` as an import path, and whether it needs a
GPU per replica (the ModelServe CRD refuses ``gpusPerReplica: 0`` for those). Classes are
imported only when chosen, so this module is light enough for the operator.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from healthnav.serving.config import ServeAppConfig
    from healthnav.serving.engine import Engine


@dataclass(frozen=True)
class EngineEntry:
    """One engine a ModelServe may name."""

    name: str
    factory: str
    """``module:Class``; the class is built as ``Class(config)``."""
    needs_gpu: bool
    summary: str
    """What it is for, in a few words (the CRD field's description lists every engine with it)."""


ENGINES: dict[str, EngineEntry] = {
    entry.name: entry
    for entry in (
        EngineEntry(
            "vllm",
            "healthnav.serving.engines.vllm:VLLMEngine",
            # The server image's CPU variant runs vLLM's CPU build (gpusPerReplica: 0).
            needs_gpu=False,
            summary="continuous batching, multi-LoRA; a GPU, or the CPU image's vLLM CPU build",
        ),
        EngineEntry(
            "transformers",
            "healthnav.serving.engines.transformers:TransformersEngine",
            needs_gpu=False,
            summary="CPU-capable, for small models",
        ),
    )
}
ENGINE_NAMES: tuple[str, ...] = tuple(ENGINES)
EngineName = Literal[ENGINE_NAMES]  # type: ignore[valid-type]
"""The engine names, as the type of the config fields that choose one."""
GPU_ENGINES: tuple[str, ...] = tuple(name for name, entry in ENGINES.items() if entry.needs_gpu)
ENGINES_DESCRIPTION = " or ".join(f"{name} ({entry.summary})" for name, entry in ENGINES.items()) + "."
"""``vllm (GPU, ...) or transformers (...).``: what a ModelServe's ``spec.engine`` can be."""

ECHO_FACTORY = "healthnav.serving.engines.echo:EchoEngine"
"""The zero-cost benchmark engine: only reachable through ``factory``, never from a config."""


def load_factory(factory: str) -> Any:
    """The class a ``module:Class`` import path names."""
    module, _, name = factory.partition(":")
    return getattr(importlib.import_module(module), name)


def make_engine(
    config: ServeAppConfig, factory: str | None = None, options: dict[str, Any] | None = None
) -> Engine:
    """The engine the configuration names, imported only now.

    ``factory`` ("module:Class") overrides the choice for benchmarks and load tests only; it is
    not part of ServeAppConfig, so a ModelServe can never select it.
    """
    cls = load_factory(factory or ENGINES[config.engine].factory)
    return cls(config, **(options or {}))  # type: ignore[no-any-return]
