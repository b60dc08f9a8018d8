"""Make the shipped feature classifiers (``dgm_runner/assets/feature_cnn_<dataset>.pt``) from
classifiers trained with the project's recipe, and print their pins for
``dgm_runner.metrics.features.SHIPPED``.

    dgm-train experiment=classifier_mnist     # seed 2025, 6 epochs -> <cache>/classifiers/mnist.pt
    dgm-train experiment=classifier_fashion   # seed 2025, 8 epochs -> .../fashion_mnist.pt
    python scripts/ship_classifiers.py        # -> dgm_runner/assets/, then paste the pins

The shipped file keeps the weights, the architecture, the dataset, the test accuracy and the
recipe, and drops what names this machine (the run directory), so every copy is the same file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dgm_runner.io.checkpoint import load_checkpoint
from dgm_runner.metrics.features import (
    ASSETS,
    EXPERIMENTS,
    SHIPPED,
    classifier_path,
    file_sha256,
)


def main() -> None:
    """Copy each dataset's trained classifier into the package and print its pin."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(SHIPPED), choices=list(SHIPPED))
    args = parser.parse_args()
    ASSETS.mkdir(exist_ok=True)
    for dataset in args.datasets:
        record = load_checkpoint(classifier_path(dataset))
        out = ASSETS / SHIPPED[dataset].file
        shipped = {
            key: record[key]
            for key in ("model", "arch", "image_shape", "n_classes", "dataset", "n_test")
        }
        shipped["test_accuracy"] = float(record["test_accuracy"])
        shipped["recipe"] = f"dgm-train experiment={EXPERIMENTS[dataset]} (seed 2025)"
        torch.save(shipped, out)
        print(
            f'    "{dataset}": ShippedClassifier("{out.name}", "{file_sha256(out)}", '
            f"{shipped['test_accuracy']:.4f}),  # {Path(out).stat().st_size} bytes"
        )


if __name__ == "__main__":
    main()
