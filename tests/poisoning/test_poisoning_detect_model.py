"""Model detectors: Neural Cleanse names the true target; trigger occlusion; STRIP."""

from __future__ import annotations

import numpy as np
import pytest

from mlwarden.poisoning import detect_data as dd
from mlwarden.poisoning import detect_model as dm


@pytest.fixture(scope="module")
def nc_result(backdoored):
    return dm.neural_cleanse(backdoored.model, backdoored.test.x, num_classes=10, epochs=30, seed=0)


def test_neural_cleanse_names_the_true_target(backdoored, nc_result):
    assert nc_result.suspected_target == backdoored.poisoned.target
    assert nc_result.anomaly_index[backdoored.poisoned.target] > 2
    # the reversed trigger of the target is the smallest and it works
    assert int(np.argmin(nc_result.l1)) == backdoored.poisoned.target
    assert nc_result.success[backdoored.poisoned.target] >= 0.99


def test_reversed_trigger_sits_where_the_patch_is(backdoored, nc_result):
    mask = nc_result.masks[backdoored.poisoned.target][0]
    row, col = np.unravel_index(int(np.argmax(mask)), mask.shape)
    assert row >= 5 and col >= 5  # the strongest mask pixel lies in the 3x3 patch
    assert mask[5:, 5:].sum() > 0.4 * mask.sum()


def test_trigger_occlusion_finds_badnets_poison(backdoored, nc_result):
    p = backdoored.poisoned
    det = dm.trigger_occlusion(backdoored.model, p.dataset.x, p.dataset.y, nc_result)
    m = dd.flag_metrics(det.flagged, p.is_poison)
    assert m["tpr"] >= 0.8
    assert m["precision"] >= 0.75


def test_anomaly_index_flags_only_a_small_outlier():
    l1 = np.array([10.0, 11.0, 9.5, 10.5, 2.0, 10.2, 9.8, 30.0])
    ai = dm.anomaly_index(l1)
    assert ai[4] > 2  # far smaller than the rest
    assert ai[7] < -2  # far larger: not a backdoor sign
    assert np.all(np.abs(ai[[0, 1, 2, 3, 5, 6]]) < 2)


def test_strip_flags_triggered_inputs_more_than_clean_ones(backdoored):
    p, test = backdoored.poisoned, backdoored.test
    clean = test.x[test.y != p.target]
    triggered = p.trigger.apply(clean[:60])
    h_trig, flag_trig, thr = dm.strip(backdoored.model, triggered, test.x, n=20, frr=0.05, seed=0)
    h_clean, flag_clean, _ = dm.strip(
        backdoored.model, clean[60:160], test.x, n=20, frr=0.05, seed=0
    )
    assert h_trig.mean() < h_clean.mean()
    assert flag_trig.mean() > flag_clean.mean() + 0.2


def test_trigger_image_is_a_png_data_uri(nc_result):
    uri = dm.trigger_image(nc_result)
    assert uri.startswith("data:image/png;base64,")
    import base64

    assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
