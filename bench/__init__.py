"""Benchmarks: each ``bench/<name>.py`` runs with ``python -m bench.<name>`` and writes
``bench/results/<name>.json``. ``make bench`` runs them all (``BENCH_ARGS=name`` for one)."""
