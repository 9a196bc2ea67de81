"""Shared fixtures: a SmallCNN trained on BadNets-poisoned digits (about 5 s, once)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from mlwarden.core.data import Dataset, load_dataset
from mlwarden.core.models import SmallCNN, fit
from mlwarden.poisoning.simulate import Poisoned, badnets

TARGET = 3


@dataclass
class Backdoored:
    poisoned: Poisoned
    test: Dataset
    model: SmallCNN


@pytest.fixture(scope="session")
def digits_split() -> tuple[Dataset, Dataset]:
    return load_dataset("digits").split(test_size=0.25, seed=0)


@pytest.fixture(scope="session")
def backdoored(digits_split: tuple[Dataset, Dataset]) -> Backdoored:
    torch.set_num_threads(1)
    train, test = digits_split
    poisoned = badnets(train, 0.05, target=TARGET, seed=1)
    torch.manual_seed(0)
    model = SmallCNN(1, 10, 8)
    fit(model, poisoned.dataset.x, poisoned.dataset.y, epochs=10, seed=0)
    return Backdoored(poisoned, test, model)


@pytest.fixture(scope="session")
def imbalanced_table() -> Callable[[int], tuple[np.ndarray, np.ndarray, int]]:
    """``make(seed) -> (x, y, k)``: k = 3 + seed % 6 classes of 2-3 clusters each and
    very unequal sizes (Dirichlet weights), 2,000 rows of 20 features: the natural
    look-alike of a label flip (a big class's sub-cluster next to a small class)."""

    def make(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
        k = 3 + seed % 6
        w = np.random.default_rng(seed).dirichlet(np.ones(k) * 1.5)
        x, y = make_classification(
            n_samples=2000,
            n_features=20,
            n_informative=10,
            n_classes=k,
            n_clusters_per_class=2 + seed % 2,
            weights=w,
            class_sep=1.5,
            random_state=seed,
        )
        return x, y, k

    return make


@pytest.fixture(scope="session", autouse=True)
def _single_threaded():
    """Small matrices: threaded BLAS only thrashes on a shared machine."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
