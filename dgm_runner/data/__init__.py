"""Data sources: in-memory tensor datasets (see ``configs/dataset``)."""

from dgm_runner.data.base import DataError, ImageData
from dgm_runner.data.vision import load_vision_dataset

__all__ = ["DataError", "ImageData", "load_vision_dataset"]
