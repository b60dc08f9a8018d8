"""Experiment-specific figures, run by the loop after training (``figures:`` in a config).

Each maker has the signature ``fn(model, data, run_dir, seed, **params) -> Path`` and
writes ``<run_dir>/figures/<name>.png`` (:func:`dgm_runner.io.plots.figure_path`). A maker
that reads a run file finds it through :class:`dgm_runner.io.layout.RunPaths`
(``RunPaths(run_dir).history``), never by its name.
"""
