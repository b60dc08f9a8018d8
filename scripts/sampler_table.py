"""Samplers x NFE table of a trained diffusion run: the ``dgm-sampler-table`` console script
(``dgm_runner/cli/sampler_table.py``), kept here for existing command lines:
``python scripts/sampler_table.py RUN_DIR --rows ddim:10,20,50 heun:5,10``."""

from dgm_runner.cli.sampler_table import main

if __name__ == "__main__":
    main()
