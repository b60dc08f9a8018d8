"""``python scripts/flow_precision.py RUN_DIR [--checkpoint last|best] [--n N]``: a trained
flow's test bits/dim in float32 and float64 on the same dequantized test images
(:func:`dgm_runner.metrics.flow_precision.float64_gap`), printed and written to
``RUN_DIR/eval/float64_check.json``."""

from __future__ import annotations

import argparse
import json

from dgm_runner.build import restore_run
from dgm_runner.io.atomic import write_json
from dgm_runner.io.layout import RunPaths
from dgm_runner.metrics.flow_precision import float64_gap
from dgm_runner.models.flows.multiscale import MultiScaleFlow


def main() -> None:
    """Parse the arguments, evaluate, print and write the record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", default="last")
    parser.add_argument("--n", type=int, default=None, help="first N test images (all)")
    args = parser.parse_args()
    _, comps, ckpt = restore_run(args.run_dir, args.checkpoint, device="cpu")
    if not isinstance(comps.model, MultiScaleFlow):
        parser.error(f"{args.run_dir} is not a flow run ({type(comps.model).__name__})")
    x = comps.data.test_x if args.n is None else comps.data.test_x[: args.n]
    record = {"checkpoint": args.checkpoint, "epoch": ckpt.get("epoch")}
    record.update(float64_gap(comps.model, x))
    out = RunPaths(args.run_dir).eval_dir / "float64_check.json"
    out.parent.mkdir(exist_ok=True)
    write_json(out, record)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
