#!/usr/bin/env python
"""``make bench``: how fast is the runner's training epoch against the obvious baselines?

The flags only: sections, baselines and report are :mod:`dgm_runner.bench` (its docstring)."""

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, str(REPO))
_SHARED = REPO.parent / "shared" / "data"
if not os.environ.get("DGM_DATA_DIR") and (_SHARED / "MNIST").is_dir():
    os.environ["DGM_DATA_DIR"] = str(_SHARED)

from dgm_runner.bench import harness, rss, suite  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    """``scripts/bench.py [--quick] [--only SECTIONS] [--out bench.json] ...``: see ``--help``."""
    argv = sys.argv[1:] if argv is None else argv
    harness.quiet()
    if argv and argv[0] == "--_rss-child":  # as rss_study ran it before ``-m dgm_runner.bench.rss``
        return rss.rss_child(argv[1:])
    raw = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=raw)
    add, sections = ap.add_argument, ", ".join(suite.SECTIONS)
    add("--quick", action="store_true", help="subsets and 3 repeats (a few minutes)")
    add("--repeats", type=int, help="interleaved repeats per group (default 5, quick 3)")
    add(
        "--only",
        default=",".join(suite.SECTIONS),
        help=f"comma-separated sections: {sections} (default: all of them), "
        f"{', '.join(suite.EXTRA_SECTIONS)} (only when named)",
    )
    add("--groups", default="vae1,vae2,vae_bce,rbm_cd1,rbm_cd25", help="which groups to time")
    add("--rss", choices=("all", "core"), help="experiments for peak RSS (quick: core)")
    add("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    add("--gibbs", help="CHAINS,SWEEPS of the Gibbs timing (default 10000,1000; quick 1000,200)")
    add("--pc-steps", type=int, help="predictor-corrector steps (default 500; quick 50)")
    add(
        "--full-sampling",
        action="store_true",
        help="time the samplers at full length (adds ~3 min)",
    )
    add("--out", default="bench.json")
    add(
        "--merge",
        action="store_true",
        help="update the sections run now inside an existing --out"
        " file (e.g. --only rss after a full run)",
    )
    suite.run(ap.parse_args(argv))


if __name__ == "__main__":
    main()
