"""Experiment-specific figures, run by the loop after training (``figures:`` in a config).

Each maker has the signature ``fn(model, data, run_dir, seed, **params) -> Path`` and
writes ``<run_dir>/figures/<name>.png``.
"""
