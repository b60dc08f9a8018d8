"""Print a markdown table of final metrics from run directories (the results of docs/families/).

Usage: python scripts/results_table.py LABEL=RUN_DIR [LABEL=RUN_DIR ...] --keys test/elbo,test/kl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR pairs")
    parser.add_argument("--keys", required=True, help="comma-separated metric keys")
    args = parser.parse_args()
    keys = args.keys.split(",")
    print("| run | epochs | s/epoch | " + " | ".join(keys) + " |")
    print("|---|---|---|" + "---|" * len(keys))
    for item in args.runs:
        label, run_dir = item.rsplit("=", 1)
        m = json.loads((Path(run_dir) / "metrics.json").read_text())
        cells = [f"{m[k]:.4g}" if isinstance(m.get(k), float) else str(m.get(k, "")) for k in keys]
        print(
            f"| {label} | {m.get('epoch')} | {m.get('time_per_epoch_s', 0):.1f} | "
            + " | ".join(cells)
            + " |"
        )


if __name__ == "__main__":
    main()
