"""The healthnav operator (kopf): reconciles FineTuneJob and ModelServe.

Importable only as ``healthnav.operator``. When a tool runs with the repository root on
``sys.path`` (``python -m pip`` from the checkout, say), ``import operator`` would find this
folder instead of Python's standard library; in that case we load the standard library's
module and put it in our place, so nothing else breaks.

The guard may run while ``collections`` is half-imported (``collections`` itself does
``from operator import eq``), so it uses only modules that exist before any import:
``sys``, ``os`` and the frozen import machinery. ``importlib.util`` would import
``contextlib`` → ``collections`` and fail with a circular import.
"""

if __name__ == "operator":  # pragma: no cover - only when the repo root shadows the stdlib
    import os as _os
    import sys as _sys

    _bootstrap = _sys.modules["_frozen_importlib"]
    _external = _sys.modules["_frozen_importlib_external"]
    _path = _os.path.join(_os.path.dirname(_os.__file__), "operator.py")
    _loader = _external.SourceFileLoader("operator", _path)
    _spec = _bootstrap.spec_from_loader("operator", _loader)
    _stdlib_operator = _bootstrap.module_from_spec(_spec)
    _sys.modules["operator"] = _stdlib_operator
    _loader.exec_module(_stdlib_operator)
