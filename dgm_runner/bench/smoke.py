"""Section ``smoke`` (not in the default sections: about 10 minutes): every experiment's
``+debug=smoke`` run as a user launches it (issue 26, item 2: each under a minute on a
quiet 2-core machine).

Each run is a fresh ``dgm-train experiment=<name> +debug=smoke logger=none`` process, so
the seconds include what a user waits for: interpreter and torch start, composition, data
loading, the epoch, the final evaluation at smoke size, grids and figures. A stage-2
experiment (``vqvae_fashion_prior``) gets the smoke run of its stage 1 as
``model.vqvae.run_dir``. An experiment whose data is missing here is listed, not timed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dgm_runner import CONFIG_DIR
from dgm_runner.bench.harness import Bench

#: Smoke runs longer than this miss issue 26's budget.
BUDGET_S = 60.0
#: Experiments trained on another's finished run: stage 2 -> stage 1.
STAGE_ONE = {"vqvae_fashion_prior": "vqvae_fashion"}


def _smoke(name: str, run_dir: Path, *extra: str) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dgm_runner",
            f"experiment={name}",
            "+debug=smoke",
            "logger=none",
            f"hydra.run.dir={run_dir}",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.perf_counter() - start
    lines = proc.stderr.strip().splitlines()
    error = next((line for line in reversed(lines) if "error" in line.lower()), None)
    return {
        "seconds": seconds,
        "ok": proc.returncode == 0,
        "error": None if proc.returncode == 0 else error,
    }


def smoke_study(bench: Bench) -> None:
    """Time every experiment's smoke run (``--quick``: the first four). Writes
    ``results["smoke"]``: per experiment ``seconds``, ``ok`` and the error line of a failed
    run, plus ``over_budget``, the names over :data:`BUDGET_S`."""
    names = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
    names.sort(key=lambda n: n in STAGE_ONE)  # stage 2 after its stage 1
    if bench.quick:
        names = names[:4]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dgm_smoke_") as tmp:
        for name in names:
            extra = []
            if name in STAGE_ONE:
                extra = [f"model.vqvae.run_dir={Path(tmp) / STAGE_ONE[name]}"]
            out[name] = _smoke(name, Path(tmp) / name, *extra)
            row = out[name]
            shown = f"{row['seconds']:.1f} s" if row["ok"] else f"failed: {row['error']}"
            print(f"  {name}: {shown}", flush=True)
    over = [n for n, r in out.items() if r["ok"] and r["seconds"] > BUDGET_S]
    bench.results["smoke"] = {"runs": out, "budget_s": BUDGET_S, "over_budget": over}


def smoke_table(results: dict[str, Any]) -> list[str]:
    """The ``smoke`` section as Markdown lines (none without it)."""
    section = results.get("smoke")
    if not section:
        return []
    lines = ["", "| +debug=smoke run | wall s (fresh process) |", "|---|---|"]
    for name, row in section["runs"].items():
        shown = f"{row['seconds']:.1f}" if row["ok"] else f"failed: {row['error']}"
        lines.append(f"| {name} | {shown} |")
    return lines
