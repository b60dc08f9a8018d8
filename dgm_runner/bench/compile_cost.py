"""Section ``compile``: does ``trainer.compile`` pay for itself? The first-epoch cost of a
cold compilation (seconds) against the per-epoch gain (seconds per 60 000 images)."""

from __future__ import annotations

import math
from typing import Any

from dgm_runner.bench.harness import Bench


def compile_study(bench: Bench) -> None:
    """``trainer.compile``: two epochs eager, then two compiled (Inductor's caches disabled,
    so the first compiled epoch carries a cold compilation, as a user's first run does),
    for VAE1; the gain of the steady (second) epoch is scaled to 60 000 images. (CD-k's
    update is a closed-form gradient with no loss graph: nothing to compile.) Writes
    ``results["compile"]``."""
    import torch._inductor.config as inductor_config

    subset = 10000 if bench.quick else 20000
    scale = 60000 / subset
    out: dict[str, Any] = {
        "rbm_cdk": {
            "verdict": "not applicable: CD-k writes its closed-form gradient, there is no loss "
            "graph to compile"
        }
    }
    for exp in ("vae_mlp",):
        base = bench.runner_overrides(exp, "trainer.epochs=2", subset=subset)
        eager = bench.runner_epoch(base)["epochs"]
        saved = inductor_config.force_disable_caches
        inductor_config.force_disable_caches = True
        try:
            comp = bench.runner_epoch(base + ["trainer.compile=true"])["epochs"]
        except Exception as err:  # no C++ compiler, unsupported op, ...
            out[exp] = {
                "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            }
            print(f"  compile {exp}: {out[exp]['error']}", flush=True)
            continue
        finally:
            inductor_config.force_disable_caches = saved
        (e1, e2), (c1, c2) = eager[:2], comp[:2]
        gain = (e2 - c2) * scale  # per steady epoch of 60 000 images
        extra_first = c1 - e1  # compilation (+ the first compiled epoch's difference)
        if gain > 0:
            even = 1 + max(0.0, extra_first) / gain
            verdict = (
                f"saves {gain:.2f} s per 60k-image epoch ({e2 * scale:.2f} -> {c2 * scale:.2f} s) "
                "but the "
                f"first epoch costs {extra_first:+.1f} s (cold compile): it pays off after about "
                f"{math.ceil(even)} epochs" + (", so not for a short run" if even > 2 else "")
            )
        else:
            even = math.inf
            verdict = (
                f"no gain in the steady epoch ({e2 * scale:.2f} -> {c2 * scale:.2f} s per 60k "
                "images) and "
                f"{extra_first:+.1f} s of compilation: leave it off"
            )
        out[exp] = {
            "images": subset,
            "eager_epochs_s": eager,
            "compiled_epochs_s": comp,
            "first_epoch_extra_s": extra_first,
            "gain_per_60k_epoch_s": gain,
            "break_even_epochs": even,
            "verdict": verdict,
        }
        print(f"  compile {exp}: {verdict}", flush=True)
    bench.results["compile"] = out
