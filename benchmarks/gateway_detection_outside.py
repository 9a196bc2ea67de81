"""Gateway stream detectors against clients and attackers built outside the other benchmarks.

Session 8 changes the stream detectors' decision rules to cut the false alarms of benign
resending clients (``gateway_detection_clients.py``'s bursts, pools, typos and nightly
rescoring). Rules tuned on those clients can misfire on resends built another way, and
can give an attacker who reads them a place to hide. This benchmark is built apart from
``gateway_detection_clients.py`` / ``_long.py`` / ``_heldout.py`` / ``_knowing.py``:
different variation between two sends of one input, different traffic shapes, and
attackers who know the still-ball rule and the resend allowances.

Variation between two sends (``resend`` below), per input kind:

* images (tinted MNIST 3x32x32, the MNIST CNN 1x28x28): a phone app re-sharing a
  photo: rotation by the device's bias (+ U(-0.5, 0.5) degrees a quarter of the time:
  hand-held), a crop of 0-1 px off each border resized back a quarter of the time,
  auto-exposure x the device's gain x U(0.97,
  1.03), then JPEG-style coding (8x8 block DCT,
  the JPEG standard's luminance table scaled by quality U(60, 95) as libjpeg does,
  8-bit pixels; Wallace 1992);
* tables (breast cancer raw and min-max, wine min-max): a sensor logger: each value x
  (1 + N(0, 0.002)) with a daily cycle of +-1% (a per-feature phase), written to CSV at
  the unit's resolution (raw: 3 significant digits; min-max: 1/500 of the range);
* audio (the Asterisk speech clips): the same clip re-recorded: an offset of up to 10
  ms, gain x U(0.6, 1.4), background noise (low-passed white) at 25-40 dB SNR, 16 bit;
* text (tweets): autocorrect and keyboard edits, 1-3 a send: double / trailing spaces,
  final punctuation added or dropped, a contraction or chat form swapped (dont /
  don't, u / you, ...), the first letter capitalised, a smiley appended.

Benign clients, ``--n`` queries of one key each (default 3,000), one row a request:

* ``resend``: a camera / logger / microphone / keyboard app over 30 inputs: sessions
  of one input sent a geometric number of times in a row (mean 6), popularity Zipf(1)
  (tables: 50 loggers read every hour, the hour's 50 rows in random order);
* ``backoff``: a mobile client on a flaky network sending distinct inputs; a request
  fails with probability 0.25 and is retried after 1, 2, 4, 8 further requests
  (exponential back-off, up to 4 retries), each retry re-encoded at a lower quality
  (the app re-compresses under bandwidth pressure) or re-captured;
* ``team``: five people behind one key, each with a device of its own (its own
  rotation / gain bias and quality range), sessions of U(5, 30) queries by one member,
  each query one of 10 inputs the whole team shares (40%) or of the member's own 30.

Settings: what ``gateway calibrate`` picks on the user's plain sample (each kind's
calibration inputs, as ``gateway_detection_clients.py``). Reported: flagged queries per
1,000 (any detector and by detector). Target (issue 19): at most 1.

Adaptive attackers, 5 runs each on held-out inputs (the class attacked: the model's
answer on the clean input), 300 queries, after 2,000 distinct benign queries of the
same key (images, the synthetic table, audio, text: the long benchmark's models, seeds,
warm-up pools and calibration; text's search: a random word substitution, its
variation the autocorrect edits):

* ``transform``: a worst-of-k search over the resend variation itself (Engstrom et al.
  2019, arXiv:1712.02779: rotations and translations; here every query a fresh benign
  re-encoding of the clean input, the best answer kept): a still ball by construction;
* ``camouflage``: Square's block search (steps of 0.05 of the range inside an Linf ball
  of 0.1, a step kept when the true class's probability drops), every query passed
  through the resend variation, so its steps hide in re-encoding noise;
* ``twice``: the same search sending each candidate twice, re-encoded each time, its
  score the mean of the two answers: clouds of 2, too small to judge;
* ``pending4``: the same search sending its current point re-encoded 3 times before
  each new candidate (4 rows per point: under ``stationary.MIN_ROWS`` and under a
  pending window of 5 copies);
* ``pool10``: poses as a small pool: 10 camouflaged searches on 10 inputs, round robin;
* ``keys4``: the camouflaged search's queries spread over 4 keys in turn (each warmed);
* ``nightly`` (breast cancer and wine, min-max): poses as a nightly rescoring batch:
  every night the kind's held rows again, drifting by a per-customer trend and rounded
  (as a rescoring job), with 30 of the night's rows replaced by the camouflaged search's
  candidates on one input; two nights first.

Reported per attack: the attack's own query at which its key (any key, for keys4) is
first flagged, and what it had achieved by then (the lowest true-class probability among
the answers it received, and whether one was a wrong class: an adversarial input in
hand), and the same over all 300 queries.

Run (about 20-30 minutes on the loaded 2-core box)::

    OMP_NUM_THREADS=1 timeout 3000 nice -n 10 .venv/bin/python \\
        benchmarks/gateway_detection_outside.py --out outside.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import fft, ndimage

sys.path.insert(0, str(Path(__file__).parent))
import gateway_detection_clients as clients  # noqa: E402
import gateway_detection_knowing as knowing  # noqa: E402
import gateway_detection_long as long  # noqa: E402
from gateway_detection_modalities import _block  # noqa: E402
from mlwarden.serve.config import Detection  # noqa: E402

CLIENTS = ("resend", "backoff", "team")
ATTACKS = ("transform", "camouflage", "twice", "pending4", "pool10", "keys4", "nightly")
Device = dict[str, float]
Vary = Callable[[Any, np.random.Generator, Device, int], Any]  # input, rng, device, hour
# the JPEG standard's luminance quantisation table (ITU-T T.81, Annex K, Table K.1)
JPEG_Q = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.float64).reshape(8, 8)  # fmt: skip


def jpeg(img: np.ndarray, quality: float) -> np.ndarray:
    """``img`` (H, W) in [0, 1] through baseline JPEG's lossy steps: level shift, 8x8
    block DCT-II, quantisation by the luminance table at libjpeg's quality scaling,
    inverse DCT, 8-bit pixels. Sides not a multiple of 8 are edge-padded."""
    h, w = img.shape
    ph, pw = -h % 8, -w % 8
    x = np.pad(img * 255.0 - 128.0, ((0, ph), (0, pw)), mode="edge")
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    q = np.clip(np.floor((JPEG_Q * scale + 50) / 100), 1, 255)
    b = x.reshape(x.shape[0] // 8, 8, x.shape[1] // 8, 8).transpose(0, 2, 1, 3)
    c = np.round(fft.dctn(b, axes=(2, 3), norm="ortho") / q) * q
    y = fft.idctn(c, axes=(2, 3), norm="ortho").transpose(0, 2, 1, 3).reshape(x.shape)
    return np.clip(np.round(y + 128.0), 0, 255)[:h, :w] / 255.0


def camera(x: np.ndarray, rng: np.random.Generator, dev: Device, hour: int = 0) -> np.ndarray:
    """A phone's send of image ``x`` (C, H, W) in [0, 1]: a hand-held rotation, a crop,
    auto-exposure, JPEG at the device's quality."""
    ang = dev.get("rot", 0.0) + (rng.uniform(-0.5, 0.5) if rng.random() < 0.25 else 0.0)
    gain = dev.get("gain", 1.0) * rng.uniform(0.97, 1.03)
    quality = rng.uniform(dev.get("qlo", 60.0), dev.get("qhi", 95.0))
    h, w = x.shape[-2:]
    t, b, le, r = rng.integers(0, 2, 4) if rng.random() < 0.25 else (0, 0, 0, 0)
    out = np.empty_like(x, dtype=np.float32)
    for c in range(x.shape[0]):
        im = x[c]
        if ang:
            im = ndimage.rotate(im, ang, reshape=False, order=1, mode="nearest")
        if t + b + le + r:
            im = im[t : h - b, le : w - r]
            im = ndimage.zoom(im, (h / im.shape[0], w / im.shape[1]), order=1, mode="nearest")
        out[c] = jpeg(np.clip(im[:h, :w] * gain, 0, 1), quality)
    return out


def logger(bounds: tuple[float, float], raw: bool) -> Vary:
    """A sensor logger's row: x (1 + N(0, 0.002)), a daily cycle of +-1%, CSV rounding."""
    lo, hi = bounds

    def vary(x: np.ndarray, rng: np.random.Generator, dev: Device, hour: int = 0) -> np.ndarray:
        phase = np.arange(x.size).reshape(x.shape) * 0.7 + dev.get("phase", 0.0)
        day = 1 + 0.01 * np.sin(2 * np.pi * hour / 24 + phase)
        y = x * dev.get("gain", 1.0) * day * (1 + rng.normal(0, 0.002, x.shape))
        if raw:  # 3 significant digits
            mag = 10 ** (np.floor(np.log10(np.maximum(np.abs(y), 1e-12))) - 2)
            return np.clip(np.round(y / mag) * mag, lo, hi).astype(np.float32)
        step = (hi - lo) / 500
        return np.clip(np.round(y / step) * step, lo, hi).astype(np.float32)

    return vary


def microphone(x: np.ndarray, rng: np.random.Generator, dev: Device, hour: int = 0) -> np.ndarray:
    """The clip ``x`` (1, samples) re-recorded: offset <= 10 ms, gain, noise at 25-40 dB SNR."""
    y = np.roll(x, int(rng.integers(-80, 81)), axis=-1) * dev.get("gain", 1.0)
    y = y * rng.uniform(0.6, 1.4)
    white = rng.normal(0, 1, y.shape)
    hum = ndimage.uniform_filter1d(white, 8, axis=-1)  # low-passed: room noise
    rms = float(np.sqrt(np.mean(y * y))) + 1e-6
    hum *= rms / (float(np.sqrt(np.mean(hum * hum))) * 10 ** (rng.uniform(25, 40) / 20))
    return (np.round(np.clip(y + hum, -1, 1) * 32767) / 32767).astype(np.float32)


SWAPS = [("dont", "don't"), ("cant", "can't"), ("im", "I'm"), ("u", "you"), ("ur", "your"),
         ("thx", "thanks"), ("gonna", "going to"), ("its", "it's"), ("wont", "won't"),
         ("pls", "please"), ("lol", "LOL"), ("ok", "okay")]  # fmt: skip


def keyboard(t: str, rng: np.random.Generator, dev: Device, hour: int = 0) -> str:
    """1-3 autocorrect / keyboard edits of ``t`` (whitespace, punctuation, swaps, case)."""
    for _ in range(int(rng.integers(1, 4))):
        e = int(rng.integers(6))
        words = t.split(" ")
        if e == 0 and len(words) > 1:  # a double space
            i = int(rng.integers(1, len(words)))
            t = " ".join(words[:i]) + "  " + " ".join(words[i:])
        elif e == 1:  # final punctuation
            t = t.rstrip(".!?") if t[-1:] in ".!?" else t + str(rng.choice([".", "!", "?"]))
        elif e == 2:  # autocorrect swap, either way
            lower = [w.lower() for w in words]
            hits = [(i, b if w == a.lower() else a) for i, w in enumerate(lower)
                    for a, b in SWAPS if w in (a.lower(), b.lower())]  # fmt: skip
            if hits:
                i, new = hits[int(rng.integers(len(hits)))]
                words[i] = new
                t = " ".join(words)
        elif e == 3:
            t = t[:1].upper() + t[1:]
        elif e == 4:
            t = t + (" :)" if rng.random() < 0.5 else " ")
        else:
            t = t.strip()
    return t or "."


def _devices(rng: np.random.Generator, k: int) -> list[Device]:
    """``k`` members' own devices: rotation / gain bias, quality range, daily phase."""
    out = []
    for _ in range(k):
        qlo = float(rng.uniform(50, 80))
        out.append({"rot": float(rng.uniform(-2, 2)), "gain": float(rng.uniform(0.9, 1.1)),
                    "qlo": qlo, "qhi": qlo + 15, "phase": float(rng.uniform(0, 6))})  # fmt: skip
    return out


def _resend(size: int, n: int, rng: np.random.Generator, table: bool) -> list[tuple[int, int, int]]:
    """(input, member, hour) of the ``resend`` client: sessions over 30 inputs (Zipf 1), or
    50 loggers read every hour in random order."""
    if table:
        rows = rng.choice(size, min(50, size), replace=False)
        out = [(int(r), 0, h) for h in range(n // len(rows) + 1) for r in rng.permutation(rows)]
        return out[:n]
    pool = rng.choice(size, min(30, size), replace=False)
    p = 1.0 / np.arange(1, len(pool) + 1)
    out = []
    while len(out) < n:
        i = int(pool[rng.choice(len(pool), p=p / p.sum())])
        out += [(i, 0, len(out) // 50)] * int(rng.geometric(1 / 6))
    return out[:n]


def _backoff(size: int, n: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """(input, retry number, hour): distinct inputs, failed requests retried after 1, 2,
    4, 8 further requests (member = the retry number: each retry at a lower quality)."""
    out: list[tuple[int, int, int]] = []
    due: list[tuple[int, int, int]] = []  # (when, input, retry)
    for i in rng.permutation(size).tolist() * (n // size + 1):
        if len(out) >= n:
            break
        out.append((i, 0, len(out) // 50))
        tries = 0
        while tries < 4 and rng.random() < 0.25:
            tries += 1
            due.append((len(out) + 2 ** (tries - 1) * tries, i, tries))
        out += [(j, r, len(out) // 50) for t, j, r in sorted(due) if t <= len(out)]
        due = [d for d in due if d[0] > len(out)]
    return out[:n]


def _team(size: int, n: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """(input, member, hour): five members, 10 shared inputs (40%) and 30 own each."""
    idx = rng.choice(size, min(size, 160), replace=False)
    shared, own = idx[:10], [idx[10 + 30 * m : 40 + 30 * m] for m in range(5)]
    out: list[tuple[int, int, int]] = []
    while len(out) < n:
        m = int(rng.integers(5))
        for _ in range(int(rng.integers(5, 31))):
            src = shared if rng.random() < 0.4 or not len(own[m]) else own[m]
            out.append((int(src[rng.integers(len(src))]), m, len(out) // 50))
    return out[:n]


def stream(client: str, data: Any, vary: Vary, n: int, seed: int, table: bool) -> Any:
    """``n`` queries of one benign client over ``data`` (an array; texts: a list)."""
    rng = np.random.default_rng(seed)
    devs = _devices(rng, 5)
    if client == "resend":
        plan = _resend(len(data), n, rng, table)
    elif client == "backoff":
        plan = _backoff(len(data), n, rng)
        # retry r: the app's quality (or gain) stepped down r times from the first send
        devs = [{"qlo": 80 - 15 * r, "qhi": 95 - 15 * r, "gain": 1 - 0.03 * r} for r in range(5)]
    else:
        plan = _team(len(data), n, rng)
    out = [vary(data[i], rng, devs[m], h) for i, m, h in plan]
    return out if isinstance(data, list) else np.stack(out)


def _flagged(kind: long.Kind, det: Detection, xs: Any) -> dict[str, Any]:
    """Flagged queries per 1,000, any detector and by detector."""
    res = clients.flagged(kind, det, xs)
    return {k: v["per_1000"] for k, v in res.items()}


def kinds(only: set[str] | None) -> dict[str, tuple[long.Kind, Vary, bool]]:
    """Each benign kind, its resend variation, and whether it is a table."""
    want = lambda n: only is None or n in only  # noqa: E731
    out: dict[str, tuple[long.Kind, Vary, bool]] = {}
    base = {"images", "audio", "text"}
    for name, kind in long.kinds(base if only is None else base & only).items():
        if name == "audio":
            kind.data = long._speech(2000, long.SEED + 11)  # other calls than the clients'
        out[name] = (kind, microphone if name == "audio" else keyboard if name == "text"
                     else camera, False)  # fmt: skip
    if want("mnist28"):
        out["mnist28"] = (clients._mnist_kind(), camera, False)
    for name in ("breast cancer raw", "breast cancer", "wine"):
        if want(name):
            kind, raw = clients._table_kind(name)
            out[name] = (kind, logger(kind.bounds, raw), True)
    return out


def run_benign(name: str, kind: long.Kind, vary: Vary, table: bool, n: int,
               seeds: list[int]) -> dict[str, Any]:  # fmt: skip
    t0 = time.time()
    det, summary = clients._calibrated(kind)
    print(f"{name}: calibrated {json.dumps(summary)}", flush=True)
    row: dict[str, Any] = {"calibration": summary}
    for client in CLIENTS:
        row[client] = [_flagged(kind, det, stream(client, kind.data, vary, n, s, table))
                       for s in seeds]  # fmt: skip
        print(f"{name} {client}: {json.dumps(row[client])}", flush=True)
    row["seconds"] = round(time.time() - t0)
    return row


def _proba(kind: long.Kind, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The true (or first answered) class's probability for each row of ``xs``."""
    inp = list(xs) if kind.modality == "text" else np.asarray(xs).reshape(len(xs), -1)
    p = kind.model.predict_proba(inp)
    cols = np.searchsorted(kind.model.classes_, ys)
    return p[np.arange(len(xs)), cols]


def search(kind: long.Kind, vary: Vary, x0: np.ndarray, y0: int, budget: int, seed: int,
           hide: int = 0, moves: bool = True, copies: int = 1) -> np.ndarray:  # fmt: skip
    """A camouflaged block search's queries: steps of 0.05 of the range inside an Linf
    ball of 0.1, each query through ``vary`` (a resend); ``hide`` re-encoded copies of
    the current point before each candidate; each candidate sent ``copies`` times (its
    score: their mean); ``moves`` False: a worst-of-k sampling of ``vary`` alone."""
    if kind.modality == "text":
        return text_search(kind, x0, y0, budget, seed, hide, moves, copies)  # type: ignore[return-value]
    lo, hi = kind.bounds
    span = hi - lo
    rng = np.random.default_rng(seed)
    dev: Device = {}
    delta, score = np.zeros_like(x0), np.inf
    sent: list[np.ndarray] = []
    while len(sent) < budget:
        for _ in range(min(hide, budget - len(sent) - 1)):
            sent.append(vary(np.clip(x0 + delta, lo, hi), rng, dev, int(rng.integers(24))))
        cand = delta.copy()
        if moves:
            b = _block(rng, x0.shape)
            cand[b] = np.clip(cand[b] + rng.choice([-0.05, 0.05]) * span, -0.1 * span, 0.1 * span)
        qs = np.stack([vary(np.clip(x0 + cand, lo, hi), rng, dev, int(rng.integers(24)))
                       for _ in range(copies)]).astype(np.float32)  # fmt: skip
        sent += list(qs)
        p = float(_proba(kind, qs, np.full(copies, y0)).mean())
        if p < score:
            score, delta = p, cand
    return np.stack(sent[:budget])


def text_search(kind: long.Kind, x0: str, y0: int, budget: int, seed: int, hide: int = 0,
                moves: bool = True, copies: int = 1) -> list[str]:  # fmt: skip
    """:func:`search` on text: a random word substitution (at most a quarter of the words,
    ``serve.text.word_step``) kept when the class's probability drops, every query through
    :func:`keyboard` (autocorrect edits in place of the long benchmark's typo)."""
    from mlwarden.serve.text import word_step

    rng = np.random.default_rng(seed)
    vocab = sorted({w for t in kind.data[:5000] for w in t.split() if w.isalpha()})
    original = x0.split(" ")
    current, score, sent = list(original), np.inf, []
    while len(sent) < budget:
        for _ in range(min(hide, budget - len(sent) - 1)):
            sent.append(keyboard(" ".join(current), rng, {}))
        limit = max(1, len(original) // 4)
        cand = word_step(current, original, limit, vocab, rng) if moves else current
        qs = [keyboard(" ".join(cand), rng, {}) for _ in range(copies)]
        sent += qs
        p = float(_proba(kind, qs, np.full(copies, y0)).mean())
        if p < score:
            score, current = p, cand
    return sent[:budget]


def _achieved(kind: long.Kind, xs: np.ndarray, ys: np.ndarray, p0: np.ndarray,
              upto: int) -> dict[str, Any]:  # fmt: skip
    """What the first ``upto`` attack answers gave: the largest drop of the attacked
    class's probability (from the clean input's) and whether any answer was another class."""
    if upto == 0:
        return {"drop": 0.0, "wrong": False}
    p = _proba(kind, xs[:upto], ys[:upto])
    wrong = kind.labels(xs[:upto]) != ys[:upto]
    return {"drop": round(float(np.max(p0[:upto] - p)), 3), "wrong": bool(wrong.any())}


def feed(kind: long.Kind, det: Detection, mons: list[Any], rows: Any, keys: list[int],
         attack: np.ndarray) -> tuple[int | None, list[str], int]:  # fmt: skip
    """Send ``rows`` one a request, row i on monitor ``keys[i]``; ``attack[i]``: whether
    it is the attack's. Returns how many attack rows had been sent when one was first
    flagged (None: never), by which detectors, and how many benign rows were flagged."""
    feats, labels, probs = kind.feats(det, rows), kind.labels(rows), kind.answers(det, rows)
    benign_flags = sent = 0
    for i in range(len(feats)):
        found = mons[keys[i]].inspect("k", feats[i : i + 1], labels[i : i + 1], long.row(probs, i))
        sent += bool(attack[i])
        if found and attack[i]:
            return sent, sorted(found), benign_flags
        benign_flags += bool(found)
    return None, [], benign_flags


def _targets(kind: long.Kind, run: int, k: int) -> list[tuple[Any, int]]:
    """``k`` inputs to attack in run ``run``, each with the model's answer: the kind's
    held-out seed (the held-out tables have none: a calibration row, not among the
    rescored rows), then calibration inputs (never in the key's warm-up)."""
    cal = kind.calib[0]
    first = kind.seeds[run % len(kind.seeds)][0] if kind.seeds else cal[run]
    xs = [first, *cal[100 + 10 * run : 99 + 10 * run + k]]
    if kind.modality != "text":
        xs = np.stack([np.asarray(x, dtype=np.float32) for x in xs])  # type: ignore[assignment]
    return [(x, int(c)) for x, c in zip(xs, kind.labels(xs), strict=True)]


def plan_queries(kind: long.Kind, vary: Vary, plan: str, run: int,
                 budget: int) -> tuple[np.ndarray, np.ndarray, list[int]]:  # fmt: skip
    """The attack's queries, the class each attacks, and the key (0-3) each goes to."""
    targets = _targets(kind, run, 10 if plan == "pool10" else 1)
    if plan == "pool10":
        parts = [search(kind, vary, x, y, budget // 10, run * 10 + j)
                 for j, (x, y) in enumerate(targets)]  # fmt: skip
        qs = [parts[j][i] for i in range(budget // 10) for j in range(10)]  # round robin
        qs = qs if kind.modality == "text" else np.stack(qs)
        ys = np.tile([y for _, y in targets], budget // 10)
        return qs, ys, [0] * len(qs)
    x0, y0 = targets[0]
    hide, copies = 3 if plan == "pending4" else 0, 2 if plan == "twice" else 1
    qs = search(kind, vary, x0, y0, budget, run, hide, plan != "transform", copies)
    keys = [i % 4 for i in range(len(qs))] if plan == "keys4" else [0] * len(qs)
    return qs, np.full(len(qs), y0), keys


def run_attack(kind: long.Kind, vary: Vary, det: Detection, warm: Any, plan: str, run: int,
               budget: int) -> dict[str, Any]:  # fmt: skip
    qs, ys, keys = plan_queries(kind, vary, plan, run, budget)
    clean = _targets(kind, run, 10 if plan == "pool10" else 1)
    p0 = np.concatenate([_proba(kind, np.asarray(x)[None], np.array([y])) for x, y in clean])
    p0 = np.resize(p0, len(qs))  # the clean input's probability for each query (round robin)
    mons = [knowing._copy(warm) for _ in range(4 if plan == "keys4" else 1)]
    first, by, _ = feed(kind, det, mons, qs, keys, np.ones(len(qs), dtype=bool))
    upto = first - 1 if first else len(qs)
    return {
        "first": first,
        "by": by,
        "at_flag": _achieved(kind, qs, ys, p0, upto),
        "all": _achieved(kind, qs, ys, p0, len(qs)),
    }


def nightly(kind: long.Kind, vary: Vary, det: Detection, run: int, budget: int) -> dict[str, Any]:
    """The search posing as a nightly rescoring job: every night the kind's rows drifting
    (a per-customer trend of N(0, 0.005) of the range a night) plus 30 candidates of the
    search around its best point, shuffled in; two nights first. One key, a fresh history."""
    rng = np.random.default_rng(100 + run)
    rows = np.asarray(kind.data)
    lo, hi = kind.bounds
    trend = rng.normal(0, 0.005 * (hi - lo), rows.shape)
    x0, y0 = _targets(kind, run, 1)[0]
    delta, score = np.zeros_like(x0), np.inf
    sent: list[np.ndarray] = []  # the attack's rows in the order they were sent
    mon, first, by, flags = kind.monitor(det), None, [], []
    for night in range(2 + budget // 30):
        batch = [
            vary(np.clip(r + night * trend[i], lo, hi), rng, {}, 0) for i, r in enumerate(rows)
        ]
        att = np.zeros(len(batch) + (30 if night >= 2 else 0), dtype=bool)
        if night >= 2:
            cands = [delta.copy() for _ in range(30)]
            for c in cands:
                b = _block(rng, x0.shape)
                c[b] = np.clip(c[b] + rng.choice([-0.05, 0.05]) * (hi - lo), -0.1 * (hi - lo),
                               0.1 * (hi - lo))  # fmt: skip
            qs = [vary(np.clip(x0 + c, lo, hi), rng, {}, 0) for c in cands]
            p = _proba(kind, np.stack(qs), np.full(30, y0))
            if p.min() < score:
                score, delta = float(p.min()), cands[int(p.argmin())]
            batch += qs
            att[len(rows) :] = True
        order = rng.permutation(len(batch))
        got, by, benign = feed(
            kind, det, [mon], np.stack(batch)[order], [0] * len(order), att[order]
        )
        sent += [batch[i] for i in order if att[i]]
        flags.append(benign)
        if got is not None and first is None:  # the job runs on (a log-only gateway)
            first = len(sent) - int(att.sum()) + got
    xs = np.stack(sent) if sent else np.zeros((0, *x0.shape), dtype=np.float32)
    p0 = np.full(len(xs), float(_proba(kind, x0[None], np.array([y0]))[0]))
    upto = first - 1 if first else len(xs)
    return {
        "first": first,
        "by": by,
        "benign_flagged_per_night": flags,
        "at_flag": _achieved(kind, xs, np.full(len(xs), y0), p0, upto),
        "all": _achieved(kind, xs, np.full(len(xs), y0), p0, len(xs)),
    }


def attack_kinds(only: set[str] | None) -> dict[str, tuple[long.Kind, Vary]]:
    """The attacked kinds: the long benchmark's images, table and audio (its seeds and
    warm-up pools), and the held-out tables for ``nightly``."""
    base = {"images", "tabular", "audio"}
    out: dict[str, tuple[long.Kind, Vary]] = {}
    base = base | {"text"}
    for name, kind in long.kinds(base if only is None else base & only).items():
        vary = {"images": camera, "audio": microphone, "text": keyboard}.get(name) or logger(
            kind.bounds, False)  # fmt: skip
        out[name] = (kind, vary)
    for name in ("breast cancer", "wine"):
        if only is None or name in only:
            kind, _ = clients._table_kind(name)
            out[name] = (kind, logger(kind.bounds, False))
    return out


def run_attacks(name: str, kind: long.Kind, vary: Vary, runs: int, budget: int,
                plans: set[str] | None) -> dict[str, Any]:  # fmt: skip
    t0 = time.time()
    det, summary = long._calibrated(kind)
    row: dict[str, Any] = {"calibration": summary}
    table = name in ("breast cancer", "wine")
    warm = None if table else knowing._warm(kind, det)
    for plan in ATTACKS:
        if (plans and plan not in plans) or (plan == "nightly") != table:
            continue
        for run in range(runs):
            res = (nightly(kind, vary, det, run, budget) if plan == "nightly"
                   else run_attack(kind, vary, det, warm, plan, run, budget))  # fmt: skip
            row.setdefault(plan, []).append(res)
            print(f"{name} {plan} run {run}: {json.dumps(res)}", flush=True)
    row["seconds"] = round(time.time() - t0)
    return row


def _bcell(res: list[dict[str, float]]) -> str:
    vals = [r["any"] for r in res]
    text = " / ".join(f"{v:g}" for v in vals)
    if max(vals) <= 1:
        return text
    dets = [f"{k} {v:g}" for k, v in res[0].items() if k != "any" and v > 1]
    return f"**{text}** ({', '.join(dets)})"


def _acell(res: list[dict[str, Any]]) -> str:
    hit = sorted(r["first"] for r in res if r["first"])
    dets = sorted({d for r in res for d in r["by"]})
    text = f"{len(hit)}/{len(res)}" + (f" at {hit[0]}-{hit[-1]} ({', '.join(dets)})" if hit else "")
    at = [r["at_flag"] for r in res]
    text += f"; before the flag: drop <= {max(a['drop'] for a in at):.2f}, "
    text += f"{sum(a['wrong'] for a in at)}/{len(at)} wrong"
    if "all" in res[0]:
        al = [r["all"] for r in res]
        text += f"; in the budget: drop <= {max(a['drop'] for a in al):.2f}, "
        text += f"{sum(a['wrong'] for a in al)}/{len(al)} wrong"
    return text


def table(results: dict[str, Any]) -> None:
    """The markdown tables of ``docs/benchmarks/gateway.md``."""
    ben = {k: v for k, v in results.get("benign", {}).items()}
    if ben:
        print(f"\n| input | {' | '.join(CLIENTS)} |\n|---|" + "---|" * len(CLIENTS))
        for name, row in ben.items():
            print(f"| {name} | {' | '.join(_bcell(row[c]) for c in CLIENTS)} |")
    att = results.get("attacks", {})
    if att:
        print("\n| input | attack | first flag (of runs) and what the attack had achieved |")
        print("|---|---|---|")
        for name, row in att.items():
            for plan in ATTACKS:
                if plan in row:
                    print(f"| {name} | {plan} | {_acell(row[plan])} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated kinds (images, mnist28, audio, text, tabular, "
                    "breast cancer raw, breast cancer, wine)")  # fmt: skip
    ap.add_argument("--part", choices=("benign", "attacks", "both"), default="both")
    ap.add_argument("--n", type=int, default=3000, help="queries a benign client")
    ap.add_argument("--seeds", default="0", help="comma-separated benign client seeds")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--budget", type=int, default=long.BUDGET)
    ap.add_argument("--plans", help=f"comma-separated of {ATTACKS}")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    plans = set(args.plans.split(",")) if args.plans else None
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, Any] = {"benign": {}, "attacks": {}}
    if args.part in ("benign", "both"):
        for name, (kind, vary, tab) in kinds(only).items():
            results["benign"][name] = run_benign(name, kind, vary, tab, args.n, seeds)
            if args.out:
                args.out.write_text(json.dumps(results, indent=1))
    if args.part in ("attacks", "both"):
        for name, (kind, vary) in attack_kinds(only).items():
            results["attacks"][name] = run_attacks(name, kind, vary, args.runs, args.budget, plans)
            if args.out:
                args.out.write_text(json.dumps(results, indent=1))
    table(results)


if __name__ == "__main__":
    main()
