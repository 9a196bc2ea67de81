"""What the detectors keep across a restart (Monitor.dump / load, issue 19, session 10):
the model's answers to the similarity history's rows (serve/answers.py) and the typing
chains of text typed on (serve/text.py). A restart mid-stream raises no alert that the
unrestarted monitor would not; a blob written before they were stored (version 1)
still loads, without them (and its alerts stand, as they did)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from tests.serve.test_serve_answers import DET, _loggers
from tests.serve.test_serve_text_typing import LABEL, _det, _typing

from mlwarden.serve.answers import SPREAD
from mlwarden.serve.config import Detection
from mlwarden.serve.monitor import Monitor
from mlwarden.serve.text import text_features


def _old_blob(blob: bytes) -> bytes:
    """``blob`` as a monitor before session 10 wrote it: no answers, chains nor version."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        kept = {k: npz[k] for k in npz.files
                if not k.startswith(("answers.", "typing.")) and k not in ("chains", "version")}  # fmt: skip
    buf = io.BytesIO()
    np.savez(buf, **kept)
    return buf.getvalue()


def _restarted(make, run, n: int, cut: int) -> tuple[list[int], list[int], list[int]]:
    """Alerts on queries ``cut..n``: unrestarted, restarted from the blob, from the old blob."""
    whole = [i for i in run(make(), 0, n) if i >= cut]
    first = make()
    run(first, 0, cut)
    blob = first.dump("k")
    assert blob is not None
    out = [whole]
    for stored in (blob, _old_blob(blob)):
        again = make()
        again.load("k", stored)
        out.append(run(again, cut, n))
    return out[0], out[1], out[2]


def test_a_typing_chain_goes_on_after_a_restart() -> None:
    from mlwarden.core.data import load_dataset

    tweets = [str(t) for t in load_dataset("tweets").x]
    texts = _typing(tweets, 270, 3)[212:]  # one long tweet typed, then the next begun
    det = _det()
    arr = np.empty(len(texts), dtype=object)
    arr[:] = texts
    f = text_features(arr, det.similarity.max_dims, det.similarity.radius, det.similarity.near)

    def run(mon: Monitor, lo: int, hi: int) -> list[int]:
        return [i for i in range(lo, hi)
                if mon.inspect("k", f[i : i + 1], LABEL, texts=texts[i : i + 1])]  # fmt: skip

    # restarted 40 texts into the tweet: its prefixes so far are each other's neighbours
    whole, now, before = _restarted(lambda: Monitor(det, scale=1.0, modality="text"), run,
                                    len(f), 40)  # fmt: skip
    assert whole == [] and now == []
    assert len(before) >= 5  # the chain lost (an old blob): its own prefixes counted


@pytest.mark.parametrize("cut", [400, 600])
def test_answers_to_the_history_survive_a_restart(cut: int) -> None:
    d = load_breast_cancer()
    x = ((d.data - d.data.min(0)) / (d.data.max(0) - d.data.min(0))).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    model = LogisticRegression(max_iter=1000).fit(x[order[:280]], d.target[order[:280]])
    xs = _loggers(x[order[280:]][:40], 20, seed=1)  # 800 readings, 20 a logger
    probs = model.predict_proba(xs)
    det = Detection.model_validate({**DET, "answers": {"spread": SPREAD}})

    def run(mon: Monitor, lo: int, hi: int) -> list[int]:
        return [i for i in range(lo, hi)
                if mon.inspect("k", xs[i : i + 1], probs[i : i + 1].argmax(1), probs[i : i + 1])]  # fmt: skip

    def make() -> Monitor:
        mon = Monitor(det, shape=[30])
        # the loggers' re-reads counted as queries, not as 40 inputs (serve/copies.py): the
        # alerts only the answers rule excuses, so a lost answer shows
        mon.table = False
        return mon

    whole, now, before = _restarted(make, run, len(xs), cut)
    assert whole == [] and now == []
    assert len(before) >= 20  # the rows from before the restart without answers: alerts stand


def test_answers_are_not_restored_into_a_history_of_another_length() -> None:
    det = Detection.model_validate({**DET, "answers": {"spread": SPREAD}})
    rng = np.random.default_rng(0)
    xs = rng.random((50, 30), dtype=np.float32)
    first = Monitor(det, shape=[30])
    first.inspect("k", xs, np.zeros(50, np.int64), np.full((50, 2), 0.5))
    blob = first.dump("k")
    assert blob is not None
    short = Detection.model_validate({**DET, "answers": {"spread": SPREAD},
                                      "similarity": {"radius": 0.05, "history": 40}})  # fmt: skip
    again = Monitor(short, shape=[30])
    again.load("k", blob)  # the history is cut to 40 rows: their answers are unknown
    ans = again._keys["k"].answers
    assert ans is not None and (ans.labels == -1).all()
