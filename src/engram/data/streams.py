"""Continual-learning streams: a sequence of tasks in one of three scenarios.

Split benchmarks cut a 10-class dataset into 5 tasks of 2 consecutive digits; permuted MNIST
applies a fixed pixel permutation per task. The scenario fixes what the network must output
(van de Ven & Tolias 2019): ``task`` — the digit, among its task's two (a head per task, the
task identity given); ``domain`` — which of the two (first/second of the pair), task unknown;
``class`` — the digit among all ten, task unknown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from engram.data.images import load_mnist

BENCHMARKS = ("split-digits", "split-mnist", "permuted-mnist")
SCENARIOS = ("task", "domain", "class")


@dataclass(frozen=True)
class Task:
    """One task of a stream: train/test tensors (flattened inputs in [0, 1]) and its outputs.

    ``perm`` (permuted MNIST) is applied when inputs are read, so ten tasks share one copy of
    the images instead of holding ten permuted ones.
    """

    index: int
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[int, ...]
    perm: torch.Tensor | None = None

    @property
    def n_train(self) -> int:
        return self.y_train.shape[0]

    def train_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x_train[idx]
        return (x if self.perm is None else x[:, self.perm]), self.y_train[idx]

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x_test
        return (x if self.perm is None else x[:, self.perm]), self.y_test


@dataclass(frozen=True)
class Stream:
    """An ordered list of tasks in one scenario, with the network's input and output sizes."""

    benchmark: str
    scenario: str
    tasks: tuple[Task, ...]
    n_inputs: int
    n_outputs: int

    def __len__(self) -> int:
        return len(self.tasks)


def _split(
    benchmark: str, scenario: str, x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray,
    y_te: np.ndarray,
) -> Stream:
    tasks = []
    for t in range(5):
        pair = (2 * t, 2 * t + 1)
        tr, te = np.isin(y_tr, pair), np.isin(y_te, pair)
        ytr, yte = y_tr[tr], y_te[te]
        if scenario == "domain":
            ytr, yte, classes = ytr % 2, yte % 2, (0, 1)
        else:
            classes = pair
        tasks.append(Task(
            t, f"{pair[0]}/{pair[1]}",
            torch.from_numpy(x_tr[tr]), torch.from_numpy(ytr.astype(np.int64)),
            torch.from_numpy(x_te[te]), torch.from_numpy(yte.astype(np.int64)),
            classes,
        ))
    n_out = 2 if scenario == "domain" else 10
    return Stream(benchmark, scenario, tuple(tasks), x_tr.shape[1], n_out)


def _check(scenario: str) -> None:
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario: expected one of {list(SCENARIOS)}, got {scenario!r}")


def split_digits(scenario: str = "class", seed: int = 0, validation: bool = False) -> Stream:
    """Split-digits from scikit-learn's bundled 8×8 digits (no download); 30% held out.

    ``validation``: test on a split held out of the training part instead.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _check(scenario)
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, digits.target, test_size=0.3, random_state=seed, stratify=digits.target
    )
    if validation:
        x_tr, y_tr, x_te, y_te = holdout(x_tr, y_tr)
    return _split("split-digits", scenario, x_tr, y_tr, x_te, y_te)


VALIDATION_FRACTION = 1 / 6


def holdout(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Carve a validation split (1/6, stratified, fixed draw) from training data.

    Hyper-parameters are chosen on it, so the test set is only read by the reported runs;
    for MNIST it leaves 50,000 training and 10,000 validation images.
    """
    from sklearn.model_selection import train_test_split

    x_tr, x_val, y_tr, y_val = train_test_split(
        x, y, test_size=VALIDATION_FRACTION, random_state=20261124, stratify=y
    )
    return x_tr, y_tr, x_val, y_val


def _mnist_arrays(
    path: str | os.PathLike[str], validation: bool = False
) -> tuple[np.ndarray, ...]:
    data = load_mnist(path)
    x_tr = (data["x_train"].reshape(len(data["x_train"]), -1) / 255.0).astype(np.float32)
    x_te = (data["x_test"].reshape(len(data["x_test"]), -1) / 255.0).astype(np.float32)
    y_tr, y_te = data["y_train"].astype(np.int64), data["y_test"].astype(np.int64)
    if validation:
        return holdout(x_tr, y_tr)
    return x_tr, y_tr, x_te, y_te


def split_mnist(
    path: str | os.PathLike[str], scenario: str = "class", validation: bool = False
) -> Stream:
    """Split-MNIST: 5 tasks of 2 digits from the ``.npz`` at ``path``.

    ``validation``: test on a split held out of the training images instead of the test set.
    """
    _check(scenario)
    return _split("split-mnist", scenario, *_mnist_arrays(path, validation))


def permuted_mnist(
    path: str | os.PathLike[str], n_tasks: int = 10, seed: int = 0, validation: bool = False
) -> Stream:
    """Permuted MNIST (domain-incremental): task 0 plain, each later one a fixed permutation."""
    if n_tasks < 1:
        raise ValueError(f"n_tasks: expected ≥ 1, got {n_tasks}")
    x_tr, y_tr, x_te, y_te = (torch.from_numpy(a) for a in _mnist_arrays(path, validation))
    gen = torch.Generator().manual_seed(seed)
    tasks = []
    for t in range(n_tasks):
        perm = None if t == 0 else torch.randperm(x_tr.shape[1], generator=gen)
        tasks.append(Task(t, f"perm{t}", x_tr, y_tr, x_te, y_te, tuple(range(10)), perm))
    return Stream("permuted-mnist", "domain", tuple(tasks), x_tr.shape[1], 10)


def make_stream(
    benchmark: str, scenario: str = "class", path: str | os.PathLike[str] | None = None,
    seed: int = 0, validation: bool = False,
) -> Stream:
    """The named stream; MNIST benchmarks read the ``.npz`` at ``path``.

    ``validation``: every task's test set is replaced by a split held out of its training data
    (for choosing settings without reading the test set).
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark: expected one of {list(BENCHMARKS)}, got {benchmark!r}")
    _check(scenario)
    if benchmark == "split-digits":
        return split_digits(scenario, seed, validation)
    if path is None:
        raise ValueError(f"path: {benchmark} needs the MNIST .npz path, got None")
    if benchmark == "split-mnist":
        return split_mnist(path, scenario, validation)
    if scenario != "domain":
        raise ValueError(f"scenario: permuted-mnist is domain-incremental, got {scenario!r}")
    return permuted_mnist(path, seed=seed, validation=validation)
