"""The results tables of the docs, from run directories (dgm_runner/cli/results_table.py).

Usage:
    python scripts/results_table.py [TABLE ...]            # print docs/results/tables.yaml's tables
    python scripts/results_table.py --update [TABLE ...]   # rewrite the marked blocks of docs/
    python scripts/results_table.py --check [TABLE ...]    # exit 1 if a block is stale
    python scripts/results_table.py LABEL=RUN_DIR [LABEL=RUN_DIR ...] --keys test/elbo,test/kl
"""

from __future__ import annotations

import sys
from pathlib import Path

from dgm_runner.cli.results_table import main

if __name__ == "__main__":
    sys.exit(main(default_root=Path(__file__).resolve().parents[1]))
