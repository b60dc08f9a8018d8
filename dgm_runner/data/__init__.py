"""Data sources: in-memory tensor datasets (see ``configs/dataset``)."""

from dgm_runner.data.base import DataError, DataSplits
from dgm_runner.data.reflow import load_reflow_pairs
from dgm_runner.data.toy2d import load_toy2d, sample_toy2d
from dgm_runner.data.vision import load_vision_dataset

__all__ = [
    "DataError",
    "DataSplits",
    "load_reflow_pairs",
    "load_toy2d",
    "load_vision_dataset",
    "sample_toy2d",
]
