"""Roughly how long a final evaluation will take: each step's seconds from earlier runs on
this machine (issue 26, item 1: the plan line says what will run and roughly how long).

A step is known by its plan text with the numbers taken out (``FID (# samples, gibbs #
sweeps)``) and by what runs it: the model's class and parameter count, the device and the
CPU thread count; its size is the product of the numbers in the text (samples x sweeps,
runs x temperatures, images x IWAE k). A step of a size timed before is estimated by that
time; of a size within a factor 2 of one timed before, by that time scaled linearly; else it
is not estimated: a smoke run's FID (200 samples x 10 sweeps, mostly fixed costs) would
put the full 10 000 x 1000 at half an hour, where it takes a minute. It is a hint in a log
line, never a result. The store is ``<cache>/eval_times.json``
(:func:`dgm_runner.data.cache.cache_dir`), rewritten atomically after each step; an
unreadable store is an empty one.
"""

from __future__ import annotations

import json
import math
import re
from typing import Optional

import torch

from dgm_runner.data.cache import cache_dir
from dgm_runner.io.atomic import write_json

_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[+-]?\d+)?")
FILE = "eval_times.json"


def context(model: torch.nn.Module, device: torch.device) -> str:
    """What a step's speed depends on besides its sizes, e.g. ``RBM 100480 cpu 2``."""
    params = sum(p.numel() for p in model.parameters())
    return f"{type(model).__name__} {params} {device.type} {torch.get_num_threads()}"


def _key_and_size(text: str, where: str) -> tuple[str, float]:
    numbers = [float(n) for n in _NUMBER.findall(text)]
    size = math.prod(numbers) if numbers else 1.0
    return f"{where} | {_NUMBER.sub('#', text)}", max(size, 1.0)


#: Sizes remembered per kind of step (the oldest is forgotten first).
KEEP = 16


def load() -> dict[str, dict[str, float]]:
    """The stored timings, ``{kind of step: {size: seconds}}`` (empty when unreadable)."""
    try:
        data = json.loads((cache_dir() / FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def estimate(
    text: str, where: str, store: Optional[dict[str, dict[str, float]]] = None
) -> Optional[float]:
    """Seconds the step ``text`` (a plan entry) should take in context ``where``, or
    ``None`` when no earlier run here timed a step of its kind at a size within a factor 2.
    ``store``: the timings already read (:func:`load`; default: read the file)."""
    key, size = _key_and_size(text, where)
    near = []
    for recorded, seconds in (load() if store is None else store).get(key, {}).items():
        try:
            ratio = size / float(recorded)
        except (ValueError, ZeroDivisionError):
            continue
        if 0.5 <= ratio <= 2.0 and isinstance(seconds, (int, float)):
            near.append((abs(math.log(ratio)), seconds * ratio))
    return min(near)[1] if near else None


def record(text: str, where: str, seconds: float) -> None:
    """Remember that the step ``text`` took ``seconds`` in context ``where`` (a failed write
    is ignored: an estimate is a courtesy)."""
    key, size = _key_and_size(text, where)
    times = load()
    sizes = times.setdefault(key, {})
    sizes.pop(f"{size:g}", None)
    sizes[f"{size:g}"] = seconds  # the newest last
    while len(sizes) > KEEP:
        sizes.pop(next(iter(sizes)))
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        write_json(cache_dir() / FILE, times)
    except Exception:
        pass


def duration(seconds: float) -> str:
    """``~3 s``, ``~1.6 min``, ``~2.1 h``."""
    if seconds < 90:
        return f"~{max(seconds, 1):.0f} s"
    return f"~{seconds / 60:.1f} min" if seconds < 5400 else f"~{seconds / 3600:.1f} h"
