"""Image datasets as pattern matrices: scikit-learn's bundled digits and MNIST from a path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def binarize(images: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Bipolar ±1 codes of images: pixels above ``threshold`` (default: half the maximum) → +1."""
    images = np.asarray(images, dtype=np.float32)
    if threshold is None:
        threshold = float(images.max()) / 2.0
    return np.where(images > threshold, 1, -1).astype(np.int8)


def load_digits_patterns(side: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Binarised scikit-learn digits as ±1 patterns of ``side``² units, and their labels.

    ``side`` > 8 upsamples each 8×8 digit bilinearly before thresholding, which gives
    larger networks with smoother strokes (no download: the digits ship with scikit-learn).
    """
    from sklearn.datasets import load_digits

    if not isinstance(side, int) or side < 8:
        raise ValueError(f"side: expected an integer ≥ 8, got {side!r}")
    digits = load_digits()
    images = digits.images.astype(np.float32)
    if side != 8:
        import torch
        import torch.nn.functional as F

        images = F.interpolate(
            torch.from_numpy(images)[:, None],
            size=(side, side),
            mode="bilinear",
            align_corners=True,
        )[:, 0].numpy()
    patterns = binarize(images.reshape(len(images), -1), threshold=8.0)
    return patterns, digits.target.astype(np.int64)


def load_mnist(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """MNIST from an ``.npz`` with x_train, y_train, x_test, y_test (uint8 images, int labels)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"path: MNIST file {path} does not exist (expected an .npz with x_train, y_train, "
            "x_test, y_test, e.g. ../shared/data/mnist/mnist.npz)"
        )
    with np.load(path) as archive:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
        if missing:
            raise ValueError(f"path: {path} lacks arrays {sorted(missing)}")
        return {key: archive[key] for key in ("x_train", "y_train", "x_test", "y_test")}
