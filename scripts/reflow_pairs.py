"""The (noise, sample) pairs of a trained flow for reflow: the ``dgm-reflow-pairs`` console
script (``dgm_runner/cli/reflow_pairs.py``), also runnable from a checkout without the
entry point installed: ``python scripts/reflow_pairs.py RUN_DIR n=20000 out=pairs.pt``."""

from dgm_runner.cli.reflow_pairs import main

if __name__ == "__main__":
    main()
