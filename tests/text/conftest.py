"""Shared text fixtures: a TF-IDF pipeline and a tiny BERT folder, both trained on a
balanced sample of the bundled tweets (seconds, once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlwarden.core.data import Dataset, load_dataset


@pytest.fixture(scope="session")
def tweets() -> tuple[Dataset, Dataset]:
    """(train, test): 1,500 / 300 tweets drawn at random (the corpus is sorted by label)."""
    ds = load_dataset("tweets")
    order = np.random.default_rng(0).permutation(len(ds))
    return ds.subset(order[:1500]), ds.subset(order[1500:1800])


@pytest.fixture(scope="session")
def pipeline(tweets: tuple[Dataset, Dataset]) -> object:
    from mlwarden.core.textmodels import tfidf_pipeline

    return tfidf_pipeline(tweets[0].x, tweets[0].y)


@pytest.fixture(scope="session")
def pipeline_file(pipeline: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import joblib

    path = tmp_path_factory.mktemp("text") / "pipe.joblib"
    joblib.dump(pipeline, path)
    return path


@pytest.fixture(scope="session")
def bert_folder(tweets: tuple[Dataset, Dataset], tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from mlwarden.core.textmodels import tiny_transformer

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("text") / "tiny-bert"
    train = tweets[0]
    return tiny_transformer(
        train.x[:800], train.y[:800], out, epochs=2, vocab_size=2000, max_length=32
    )
