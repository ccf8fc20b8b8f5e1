"""Base models that ship inside Python packages, made into Hugging Face directories.

A cluster with no model hub (and every CI machine and laptop here) still needs a real
pretrained language model for the behaviour that depends on one: fine-tuning that learns,
generation that reads as English, evaluation figures worth comparing, train/serve parity.
``hnav models prepare NAME`` turns a packaged GGUF (installed from PyPI at install time,
nothing fetched at run time) into an ordinary transformers directory with a model card that
records where every byte came from, caches it, and stages it like any base model.

* :mod:`~healthnav.models.catalog` — which packaged models exist and where their GGUF is;
* :mod:`~healthnav.models.convert` — GGUF to safetensors + tokenizer + generation config;
* :mod:`~healthnav.models.card` — the provenance record and the model card;
* :mod:`~healthnav.models.prepare` — the cache keyed by the GGUF's sha256, and staging;
* :mod:`~healthnav.models.cli` — ``hnav models list|prepare``.
"""
