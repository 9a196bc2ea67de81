"""Output hardening (defenses/output.py): modes, invariants, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mlwarden.defenses.output import MODES, harden_output

_rows = st.integers(1, 6)
_cols = st.integers(1, 12)


def _prob_batch() -> st.SearchStrategy[np.ndarray]:
    def make(shape: tuple[int, int]) -> st.SearchStrategy[np.ndarray]:
        return arrays(np.float64, shape, elements=st.floats(0.0, 1.0, allow_nan=False)).map(
            lambda a: (a + 1e-9) / (a + 1e-9).sum(axis=1, keepdims=True)
        )

    return st.tuples(_rows, _cols).flatmap(make)


@given(_prob_batch(), st.integers(1, 15))
@settings(max_examples=60, deadline=None)
def test_top_k_keeps_at_most_k_classes_and_sums_to_one(p: np.ndarray, k: int) -> None:
    out = harden_output(p, "top-k", k=k)
    assert out.shape == p.shape and out.dtype == np.float32
    assert ((out > 0).sum(axis=1) <= k).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    # the top class is kept (under a tie, any of the tied classes; float32 may break it)
    rows = np.arange(len(p))
    assert np.allclose(p[rows, out.argmax(axis=1)], p.max(axis=1), rtol=0, atol=1e-6)


@given(_prob_batch(), st.integers(0, 6))
@settings(max_examples=60, deadline=None)
def test_round_changes_each_score_by_at_most_half_a_unit(p: np.ndarray, d: int) -> None:
    out = harden_output(p, "round", decimals=d)
    assert np.abs(out.astype(np.float64) - p).max() <= 0.5 * 10.0**-d + 1e-6


@given(_prob_batch())
@settings(max_examples=40, deadline=None)
def test_label_only_returns_the_argmax(p: np.ndarray) -> None:
    out = harden_output(p, "label-only")
    assert out.dtype == np.int64 and out.shape == (len(p),)
    assert (out == p.argmax(axis=1)).all()


def test_none_returns_an_equal_float32_copy_and_leaves_the_input_alone() -> None:
    p = np.array([[0.2, 0.8]])
    out = harden_output(p, "none")
    out[0, 0] = 5.0
    assert p[0, 0] == 0.2
    assert harden_output(p, "none").dtype == np.float32


def test_top_k_on_logits_renormalises_a_softmax() -> None:
    logits = np.array([[-1.0, 2.0, 0.5]])
    out = harden_output(logits, "top-k", k=2)
    e = np.exp(logits - logits.max())
    expect = np.where([[False, True, True]], e, 0.0)
    np.testing.assert_allclose(out, expect / expect.sum(), rtol=1e-5)


def test_a_single_row_gives_a_single_row() -> None:
    assert harden_output(np.array([0.1, 0.9]), "top-k").tolist() == [0.0, 1.0]
    assert int(harden_output(np.array([0.1, 0.9]), "label-only")) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "fuzz"}, "unknown output mode"),
        ({"mode": "top-k", "k": 0}, "k >= 1"),
        ({"mode": "round", "decimals": -1}, "decimals >= 0"),
    ],
)
def test_bad_arguments_raise_a_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        harden_output(np.array([[0.5, 0.5]]), **kwargs)


@pytest.mark.parametrize("mode", MODES)
def test_non_finite_scores_are_rejected(mode: str) -> None:
    with pytest.raises(ValueError, match="NaN or infinity"):
        harden_output(np.array([[np.nan, 0.5]]), mode)
