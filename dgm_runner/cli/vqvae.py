"""Run both stages of the VQ-VAE experiment (seed 003 programming question 1) with one
command:

1. ``dgm-train experiment=vqvae_fashion hydra.run.dir=<root>/stage1 <overrides> <--s1 ...>``
2. ``dgm-train experiment=vqvae_fashion_prior model.vqvae.run_dir=<root>/stage1
   hydra.run.dir=<root>/stage2 <overrides> <--s2 ...>``

Positional overrides go to both stages (e.g. ``dataset.subset=10000 trainer.epochs=5``);
``--s1 X`` / ``--s2 X`` (repeatable) to one stage only (``model.*`` differs between them).
Stage 2 starts only if stage 1 exits with status 0. Exit status: that of the first
failing stage, else 0.

Example::

    dgm-vqvae --root outputs/vqvae_two_stage trainer.epochs=5 --s1 model.ema=true
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def stage_commands(root: Path, common: list[str], s1: list[str], s2: list[str]) -> list[list[str]]:
    """The two ``python -m dgm_runner`` (= ``dgm-train``) command lines, stage 1 first."""
    root = root.resolve()  # the prior must find stage 1 whatever the working directory
    train = [sys.executable, "-m", "dgm_runner"]
    stage1 = [*train, "experiment=vqvae_fashion", f"hydra.run.dir={root / 'stage1'}", *common, *s1]
    stage2 = [
        *train,
        "experiment=vqvae_fashion_prior",
        f"model.vqvae.run_dir={root / 'stage1'}",
        f"hydra.run.dir={root / 'stage2'}",
        *common,
        *s2,
    ]
    return [stage1, stage2]


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the stages in order, return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", type=Path, required=True, help="parent of the stage1/ and stage2/ run dirs"
    )
    parser.add_argument(
        "--s1", action="append", default=[], metavar="OVERRIDE", help="stage-1-only override"
    )
    parser.add_argument(
        "--s2", action="append", default=[], metavar="OVERRIDE", help="stage-2-only override"
    )
    parser.add_argument("--skip-stage1", action="store_true", help="reuse a finished <root>/stage1")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both stages")
    args = parser.parse_args(argv)
    commands = stage_commands(args.root, args.overrides, args.s1, args.s2)
    if args.skip_stage1:
        commands = commands[1:]
    for cmd in commands:
        print("+ " + " ".join(cmd[1:]), flush=True)
        rc = subprocess.call(cmd)
        if rc != 0:
            return rc
    print(f"stage 1: {args.root / 'stage1'}\nstage 2: {args.root / 'stage2'}")
    return 0


def console() -> None:
    """Console entry point of ``dgm-vqvae``."""
    sys.exit(main())
