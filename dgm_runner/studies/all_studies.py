"""``dgm-study all``: run every study into a subfolder and write one summary table.

Each study runs with the parameters of its own ``configs/study/<name>.yaml`` (optionally
updated by ``overrides[name]``) into ``<out_dir>/<name>/``. The summary
(``summary.md``, ``summary.csv``: study, quantity, measured, closed form, agreement, ok)
and ``summary.png`` (the Monte-Carlo z-scores) go into ``out_dir``.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from omegaconf import OmegaConf

from dgm_runner import CONFIG_DIR
from dgm_runner.io.atomic import write_text
from dgm_runner.studies import STUDIES, call_study
from dgm_runner.studies.common import markdown_table, new_figure, require, save_figure, write_result

COLUMNS = ("study", "quantity", "measured", "closed_form", "agreement", "ok")

#: The name of one study (:data:`dgm_runner.studies.STUDIES`).
StudyName = Literal[STUDIES]


def study_config(name: str) -> dict[str, Any]:
    """The plain config ``{_target_, name, **params}`` of ``configs/study/<name>.yaml``."""
    path = Path(CONFIG_DIR) / "study" / f"{name}.yaml"
    require(
        name in STUDIES and path.is_file(), f"study {name!r} is invalid: must be one of {STUDIES}"
    )
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def run(
    out_dir: str | Path,
    studies: tuple[StudyName, ...] = STUDIES,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run ``studies`` in order; a study that raises (an invalid parameter included: each
    study's config is validated by :func:`~dgm_runner.studies.call_study`, its keys named
    ``study.overrides.<name>.<param>``) is reported as a failed row, the rest still run.

    Args:
        out_dir: the run directory; study ``name`` writes into ``out_dir/name``.
        studies: names from :data:`dgm_runner.studies.STUDIES`.
        overrides: ``{name: {param: value}}`` replacing parameters of single studies.

    Returns:
        ``{"study": "all", "rows": [...], "studies": {name: {ok, seconds, error}},
        "checks": [...]}``.
    """
    out_dir = Path(out_dir)
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(studies)
    require(not unknown, f"overrides for {sorted(unknown)} are invalid: those studies are not run")
    rows, status, checks = [], {}, []
    for name in studies:
        cfg = {**study_config(name), **dict(overrides.get(name, {}))}
        start = time.perf_counter()
        try:
            result = call_study(cfg, out_dir / name, path=f"study.overrides.{name}")
        except Exception as err:  # noqa: BLE001 - report and go on with the other studies
            status[name] = {
                "ok": False,
                "seconds": time.perf_counter() - start,
                "error": f"{type(err).__name__}: {err}",
            }
            rows.append(
                {
                    "study": name,
                    "quantity": "(study failed)",
                    "measured": "",
                    "closed_form": "",
                    "agreement": status[name]["error"],
                    "ok": False,
                }
            )
            checks.append(
                {
                    "quantity": f"{name}: (study failed)",
                    "measured": None,
                    "closed_form": None,
                    "diff": None,
                    "se": None,
                    "z": None,
                    "relation": "==",
                    "agreement": status[name]["error"],
                    "ok": False,
                }
            )
            continue
        status[name] = {
            "ok": all(c["ok"] for c in result["checks"]),
            "seconds": time.perf_counter() - start,
            "error": None,
        }
        for c in result["checks"]:
            rows.append({"study": name, **{k: c[k] for k in COLUMNS[1:]}})
            checks.append({**c, "quantity": f"{name}: {c['quantity']}"})

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out_dir / "summary.csv", buf.getvalue())
    table = markdown_table(
        ("study", "quantity", "measured", "closed form", "agreement", "ok"),
        [[r[k] if k != "ok" else ("yes" if r["ok"] else "**NO**") for k in COLUMNS] for r in rows],
    )
    n_ok = sum(r["ok"] for r in rows)
    write_text(
        out_dir / "summary.md", f"# dgm-study all\n\n{n_ok} of {len(rows)} checks agree.\n\n{table}"
    )
    result = {"study": "all", "studies": status, "rows": rows, "checks": checks}
    _plot(out_dir / "summary.png", checks)
    write_result(out_dir, result)
    return result


def _plot(path: Path, checks: list[dict[str, Any]]) -> None:
    mc = [c for c in checks if c["z"] is not None and c["relation"] == "=="]
    fig, (ax,) = new_figure(size=(7.0, max(2.5, 0.28 * len(mc) + 1.0)))
    y = np.arange(len(mc))
    ax.barh(y, [c["z"] for c in mc], color=["C0" if c["ok"] else "C3" for c in mc])
    ax.set_yticks(y, [c["quantity"] for c in mc], fontsize=6)
    for edge in (-4, -2, 2, 4):
        ax.axvline(edge, color="gray", ls=":" if abs(edge) == 2 else "--", lw=1)
    ax.invert_yaxis()
    ax.set(
        xlabel="(measured - closed form) / standard error",
        title="Monte-Carlo checks of all studies",
    )
    save_figure(fig, path)
