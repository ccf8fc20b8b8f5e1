"""The platform's contracts: what several components share, defined once.

Each module is one contract, owned here and imported by every component that speaks it
(``docs/architecture.md`` says who reads and who writes each):

* :mod:`~healthnav.contracts.errors` — the exception hierarchy and exit codes;
* :mod:`~healthnav.contracts.validation` — how a pydantic validation error is told to a user;
* :mod:`~healthnav.contracts.uris` — the URI grammar (s3://, file://, hub ids) and its rules;
* :mod:`~healthnav.contracts.storage` — reading and writing artifacts under such URIs;
* :mod:`~healthnav.contracts.models` — a model URI made a local directory (one cache), and the
  base + LoRA adapter loader;
* :mod:`~healthnav.contracts.run_output` — the files under a fine-tune's output prefix;
* :mod:`~healthnav.contracts.progress` — the training progress payload (trainer → operator);
* :mod:`~healthnav.contracts.records`, :mod:`~healthnav.contracts.prompts`,
  :mod:`~healthnav.contracts.dataset` — the training record, the prompt format, and reading a
  built dataset.

Only pydantic (and the standard library) is imported at module level: the operator image
loads these modules without torch, Ray or boto3; heavy libraries load inside the functions
that use them.
"""
