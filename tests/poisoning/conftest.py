"""Shared fixtures: a SmallCNN trained on BadNets-poisoned digits (about 5 s, once)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

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


@pytest.fixture(scope="session", autouse=True)
def _single_threaded():
    """Small matrices: threaded BLAS only thrashes on a shared machine."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
