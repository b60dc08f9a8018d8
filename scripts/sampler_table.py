"""Samplers x NFE table of a trained diffusion run (FID/KID/precision/recall and seconds per
1000 images per row): ``python scripts/sampler_table.py RUN_DIR --rows ddim:10,20,50 heun:5,10``.
Writes RUN_DIR/eval/sampler_table.{json,md}. The logic lives in
dgm_runner.cli.sampler_table."""

import argparse
import sys
from pathlib import Path

from dgm_runner.cli.common import USER_ERRORS
from dgm_runner.cli.sampler_table import format_markdown, sampler_table, write
from dgm_runner.metrics.features import FeatureClassifierMissing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "--rows",
        nargs="+",
        required=True,
        help="entry:steps[,steps...][+key=value], e.g. ddim:10,20 ddim:20+eta=1",
    )
    parser.add_argument("--n", type=int, default=1000, help="samples per row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--out", type=Path, default=None, help="output stem (default RUN_DIR/eval/sampler_table)"
    )
    args = parser.parse_args()
    try:
        rows = sampler_table(args.run_dir, args.rows, args.n, args.seed, args.batch_size)
    except (*USER_ERRORS, FeatureClassifierMissing) as err:
        print(f"sampler_table: error: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)
    write(rows, args.out or args.run_dir / "eval" / "sampler_table")
    print(format_markdown(rows))


if __name__ == "__main__":
    main()
