"""healthnav.evaluation: measure a fine-tune against its base model and the API it replaces.

Modules (heavy libraries load only inside functions that need them):

* :mod:`~healthnav.evaluation.gates` — :class:`EvaluationGates` (the FineTuneJob's
  ``spec.evaluation.gates``) and the pure :func:`evaluate_gates`; pydantic only, the operator
  imports it.
* :mod:`~healthnav.evaluation.pipeline` — :class:`EvalConfig` and :func:`run_evaluation`, what
  ``hnav eval`` runs; writes ``<output>/eval/{metrics.json,report.md,report.html,*.png}``.
* :mod:`~healthnav.evaluation.tasks`, :mod:`~healthnav.evaluation.metrics`,
  :mod:`~healthnav.evaluation.models`, :mod:`~healthnav.evaluation.runner`,
  :mod:`~healthnav.evaluation.reference`, :mod:`~healthnav.evaluation.embeddings`,
  :mod:`~healthnav.evaluation.report` — the parts.
"""
