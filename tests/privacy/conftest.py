"""Shared fixtures for the privacy tests: tiny models on bundled data, one BLAS thread."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from mlwarden.core.data import Dataset, bundled

torch.set_num_threads(1)
threadpool_limits(1)
warnings.filterwarnings("ignore", category=UserWarning, module="sklearn")


@pytest.fixture(scope="session")
def digits_halves() -> tuple[Dataset, Dataset]:
    """Digits split 50/50 into (train, holdout)."""
    return bundled("digits").split(test_size=0.5, seed=0)


@pytest.fixture(scope="session")
def noisy_cancer() -> tuple[Dataset, Dataset, Dataset]:
    """Breast-cancer with 20% flipped labels: (train 200, holdout 200, unseen rest).

    A model that memorises flipped labels is a textbook membership-leaking model.
    """
    ds = bundled("breast-cancer")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(ds))
    y = ds.y.copy()
    flip = rng.random(len(y)) < 0.2
    y[flip] = 1 - y[flip]
    noisy = Dataset(x=ds.x, y=y, name="noisy-cancer", bounds=ds.bounds)
    return noisy.subset(idx[:200]), noisy.subset(idx[200:400]), noisy.subset(idx[400:])
