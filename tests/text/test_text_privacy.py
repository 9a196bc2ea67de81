"""Membership inference and extraction on a Hugging Face text folder (the tiny BERT of
the text fixtures), loaded through the scanner like any user model."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlwarden.core.data import Dataset
from mlwarden.core.errors import UserError
from mlwarden.privacy import extract_report, privacy_report


def test_privacy_and_extract_on_a_hugging_face_folder(
    bert_folder: Path, tweets: tuple[Dataset, Dataset]
) -> None:
    train, test = tweets
    members, others = train.subset(range(60)), test.subset(range(60))
    with pytest.raises(UserError, match="tfidf_pipeline"):  # no recipe: says how to give one
        privacy_report(str(bert_folder), members, others, attack="lira")
    loss = privacy_report(str(bert_folder), members, others, attack="loss")
    assert loss.metrics["access"] == "score" and 0.0 <= loss.metrics["auc"] <= 1.0
    labels = privacy_report(str(bert_folder), members, others, access="label", seed=0)
    assert labels.metrics["attack"] == "label-only" and labels.metrics["queries"] == 120 * 25
    stolen = extract_report(str(bert_folder), test.subset(range(120)), budgets=(40,), seed=0)
    assert stolen.metrics["queries"] == {"40": 40} and stolen.config["modality"] == "text"
