"""Each rule's verdict after a restart is the one it would have had (issue 19, session 12).

The same stream runs through a monitor that never restarts and through one dumped
(:meth:`Monitor.dump`) and loaded into a fresh monitor mid-stream; every query's alerts
must match. Each test also loads a blob with the rule's part taken out (as a version-2
blob was): the verdicts then differ, so the part stored is what keeps them.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.serve.test_serve_monitor import _attack_stream, _jbda_stream
from tests.serve.test_serve_prada_renders import _prada_only, _thumbsizes
from tests.serve.test_serve_spread import _search
from tests.serve.test_serve_state import _post
from tests.serve.test_serve_stream import _call, _windows

from mlwarden.core.data import load_dataset
from mlwarden.serve.config import Detection
from mlwarden.serve.config import Prada as PradaConfig
from mlwarden.serve.log import read_records
from mlwarden.serve.monitor import Monitor, Prada

Alerts = frozenset[tuple[str, tuple[int, ...]]]


def _strip(*prefixes: str) -> Callable[[bytes], bytes]:
    """A blob edit: the keys starting with ``prefixes`` taken out, written as version 2."""

    def edit(blob: bytes) -> bytes:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            kept = {k: npz[k] for k in npz.files if not k.startswith(prefixes)}
        kept["version"] = np.array([2])
        buf = io.BytesIO()
        np.savez(buf, **kept)
        return buf.getvalue()

    return edit


def _alerts(found: dict[str, list[int]]) -> Alerts:
    return frozenset((k, tuple(v)) for k, v in found.items())


def _run(make: Callable[[], Monitor], xs: np.ndarray, labels: np.ndarray, cuts: set[int],
         edit: Callable[[bytes], bytes] | None = None,
         probe: Callable[[Monitor], object] | None = None) -> list[object]:  # fmt: skip
    """Each query's alerts (or ``probe`` of the monitor after it), restarted before each
    query in ``cuts`` from the blob (``edit``-ed)."""
    mon, out = make(), []
    for i in range(len(xs)):
        if i in cuts:
            blob = mon.dump("k")
            assert blob is not None
            mon = make()
            mon.load("k", edit(blob) if edit else blob)
        found = _alerts(mon.inspect("k", xs[i : i + 1], labels[i : i + 1]))
        out.append(found if probe is None else probe(mon))
    return out


def _differential(make: Callable[[], Monitor], xs: np.ndarray, labels: np.ndarray,
                  cuts: set[int], strip: tuple[str, ...],
                  probe: Callable[[Monitor], object] | None = None) -> list[object]:  # fmt: skip
    whole = _run(make, xs, labels, set(), probe=probe)
    assert _run(make, xs, labels, cuts, probe=probe) == whole
    assert _run(make, xs, labels, cuts, _strip(*strip), probe) != whole  # the part matters
    return whole


def _digits() -> np.ndarray:
    return load_dataset("digits").x.astype(np.float32).reshape(-1, 1, 8, 8)


def _det(**over: object) -> Detection:
    return Detection.model_validate({"crosskey": {"enabled": False}, **over})


@pytest.mark.parametrize("cuts", [{30}, {70}, set(range(7, 120, 7))])
def test_the_spread_window_survives_a_restart(cuts: set[int]) -> None:
    xs = _search(_digits()[3], 0.13, 120, seed=0)
    whole = _differential(lambda: Monitor(_det(), shape=[1, 8, 8]), xs,
                          np.zeros(len(xs), np.int64), cuts, ("spread.",))  # fmt: skip
    assert any(k == "spread" for found in whole[60:] for k, _ in found)  # type: ignore[attr-defined]


@pytest.mark.parametrize("cuts", [{2}, {30}])
def test_blacklights_chain_survives_a_restart(cuts: set[int]) -> None:
    xs = _attack_stream(_digits()[5], 60).astype(np.float32)
    det = _det(similarity={"enabled": False}, prada={"enabled": False})
    make, zero = (lambda: Monitor(det, shape=[1, 8, 8])), np.zeros(len(xs), np.int64)
    whole = _differential(make, xs, zero, cuts, ("blacklight.",))
    assert sum(bool(found) for found in whole) >= 20  # type: ignore[arg-type]
    # and every chain depth, not only the alerts
    _differential(make, xs, zero, cuts, ("blacklight.",), lambda m: m._keys["k"].blacklight.depth)


def test_pradas_record_survives_a_restart(digits, digits_model) -> None:
    q = _jbda_stream(digits[2][:10], 160).astype(np.float32)
    labels = digits_model.predict(q.reshape(len(q), -1))

    def run(cut: int | None) -> list[tuple[bool, float | None]]:
        p, out = Prada(PradaConfig()), []
        for i, (x, y) in enumerate(zip(q, labels, strict=True)):
            if i == cut:
                fresh = Prada(PradaConfig())
                assert fresh.load(p.dump())
                p = fresh
            out.append((p.flags(x, int(y)), p.last_w))
        return out

    whole = run(None)
    assert any(flag for flag, _ in whole)
    assert run(40) == whole and run(100) == whole  # every W equal, bit for bit
    det = _det(blacklight={"enabled": False}, similarity={"enabled": False})
    w = _differential(lambda: Monitor(det, shape=[1, 8, 8]), q, labels, {40}, ("prada.",),
                      lambda m: m._keys["k"].prada.last_w)  # fmt: skip
    assert w[-1] is not None


def test_an_uploads_renderings_survive_a_restart() -> None:
    """Restarted between an upload's thumbnail sizes: the next size is still measured
    past its upload (serve/renders.py), every W as without the restart."""
    xs = _thumbsizes(40)
    labels = xs.reshape(len(xs), 3, -1).mean(axis=2).argmax(axis=1)
    _differential(lambda: Monitor(_prada_only(), [3, 16, 16]), xs, labels,
                  {57, 102, 153}, ("prada.rend.",),
                  lambda m: (m._keys["k"].prada.last_w, m._keys["k"].prada._n_dists))  # fmt: skip


def test_an_audio_streams_tail_survives_a_restart() -> None:
    """Restarted mid-call: the next window still continues the last one (serve/stream.py)."""
    rng = np.random.default_rng(4)
    xs = np.stack([w for _ in range(2) for w in _windows(_call(rng, 4.0), 2000)])[:, None]
    det = _det()
    whole = _differential(
        lambda: Monitor(det, shape=[1, 8000], scale=2.0, modality="audio", secret=bytes(32)),
        xs, np.zeros(len(xs), np.int64), {5, 17}, ("tail",),
        lambda m: m._keys["k"].blacklight.depth,
    )  # fmt: skip
    assert max(whole) < det.blacklight.chain  # type: ignore[type-var]


def test_the_queue_of_a_batched_key_survives_a_restart() -> None:
    """``submit`` (8 a batch): restarted with 4 queries queued, every alert comes, for
    the same queries, as without the restart."""
    xs = _attack_stream(_digits()[6], 48).astype(np.float32)
    det = _det(similarity={"enabled": False}, prada={"enabled": False})
    zero = np.zeros(1, np.int64)

    def run(edit: Callable[[bytes], bytes] | None, cut: int | None) -> set[tuple[str, int]]:
        mon, out = Monitor(det, shape=[1, 8, 8]), set()
        for i, x in enumerate(xs):
            if i == cut:
                blob = mon.dump("k")
                assert blob is not None
                mon = Monitor(det, shape=[1, 8, 8])
                mon.load("k", edit(blob) if edit else blob)
            for kind, hits in mon.submit("k", x[None], zero).items():
                out |= {(kind, i + j) for j in hits}
        return out

    whole = run(None, None)
    assert len(whole) >= 10
    assert run(None, 17) == whole  # 4 distinct queries queued (the search repeats some)
    assert run(_strip("pending.", "seq"), 17) != whole


def test_blacklight_goes_on_across_a_served_restart(gw_config, keys, serve, sklearn_target,
                                                    tmp_path: Path) -> None:  # fmt: skip
    """The server's own path: the blob written at shutdown into the audit database
    (SQLite) and read back at start. Blacklight alone, analysed query by query, stopped
    just before the query its chain first flags: the restarted gateway flags that query
    (from a blob without the table, the restarted chain does not)."""
    cfg = gw_config(detection={"similarity": {"enabled": False}, "prada": {"enabled": False},
                               "crosskey": {"enabled": False}, "batch": 1})  # fmt: skip
    xs = _attack_stream(_digits()[8], 12).astype(np.float32)
    zero = np.zeros(len(xs), np.int64)
    want = [bool(f) for f in _run(lambda: Monitor(cfg.detection, shape=[1, 8, 8]), xs, zero, set())]
    first = want.index(True)
    lost = _run(lambda: Monitor(cfg.detection, shape=[1, 8, 8]), xs, zero, {first},
                _strip("blacklight."))  # fmt: skip
    assert not lost[first]
    live = serve(sklearn_target, cfg)
    for x in xs[:first]:
        assert _post(live.url, keys["scores"], x[None]).status_code == 200
    live.stop()
    live = serve(sklearn_target, cfg)
    for x in xs[first:]:
        assert _post(live.url, keys["scores"], x[None]).status_code == 200
    live.stop()
    rows = [r for r in read_records(tmp_path / "audit.db") if r["key"] == "scores"]
    assert ["blacklight" in (r["alerts"] or "") for r in rows] == want


def test_the_restart_benchmark_restarts_and_reports_the_first_flag() -> None:
    """``benchmarks/gateway_restart_state.py``: its search restarted every 30 queries is
    flagged where the unrestarted one is (the spread rule, at its 50th query), and a
    restart with the spread window lost (as before session 12) would not be."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gateway_restart_state.py"
    spec = importlib.util.spec_from_file_location("gateway_restart_state", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # the spread rule's window alone: the blinding rule (serve/blinding.py; its window
    # restored too, test_serve_blinding.py) flags this search at 17, before any restart
    bench.DET = {**bench.DET, "prada": {"blinding": False}}
    xs = bench._search(_digits()[100], 0.13, 80, 0)
    zero = np.zeros(len(xs), np.int64)
    assert bench.first_flag(xs, zero, 0) == bench.first_flag(xs, zero, 30) == "50 spread"
    off = _det(prada={"blinding": False})
    lost = _run(lambda: Monitor(off, shape=[1, 8, 8]), xs, zero, {30, 60}, _strip("spread."))
    assert not any(lost[:80])


def test_a_text_keys_bit_rows_survive_a_restart() -> None:
    """Text counts neighbours on packed MinHash bits (Similarity._bits_of); before
    session 13 a restored history was float16 and counted by distance from then on
    (~4x the CPU a query). Restored, the rows are exact and counted by bits again."""
    from mlwarden.serve.monitor import compile_kernels
    from mlwarden.serve.text import text_features, word_search

    if not compile_kernels():  # as the gateway before it listens: bits need the kernels
        pytest.skip("numba kernels not in use")
    tweets = [str(t) for t in load_dataset("tweets").x]
    long = [t for t in tweets if len(t.split()) >= 12]
    vocab = sorted({w for t in tweets[:500] for w in t.split()})
    texts = long[:40] + word_search(long[60], vocab, 60, seed=3)
    det = _det(similarity={"near": 0.3}, prada={"enabled": False})
    arr = np.empty(len(texts), dtype=object)
    arr[:] = texts
    s = det.similarity
    xs = text_features(arr, s.max_dims, s.radius, s.near)

    def probe(m: Monitor) -> object:
        sim = m._keys["k"].similarity
        return sim._bits is not None, hash(sim._ring.tobytes())

    make = lambda: Monitor(det, scale=1.0, modality="text")  # noqa: E731
    zero = np.zeros(len(xs), np.int64)
    whole = _differential(make, xs, zero, {20, 45, 80}, ("similarity.one",), probe)
    assert all(bits for bits, _ in whole)  # type: ignore[misc]
    flags = _run(make, xs, zero, {20, 45, 80})  # the search flagged, the tweets not
    assert any(flags[40:]) and not any(flags[:40])
