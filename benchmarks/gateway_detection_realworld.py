"""Gateway stream detectors against session 9's red team: real workloads, attackers who read the code.

Built apart from ``gateway_detection_clients.py`` / ``_long.py`` / ``_heldout.py`` /
``_outside.py``: their benign clients resend copies of a few inputs; these are workloads
whose consecutive queries are *near each other and moving* (what a search looks like),
or many keys sharing inputs. Fed in-process to ``Monitor`` (as ``mlwarden serve`` runs it
after parsing a request; on text with each query's text, as ``Gateway.infer`` hands it
since session 9: typing chains), one row a request, at the settings ``gateway calibrate`` picks
on the kind's plain calibration inputs (the long / clients benchmarks' kinds and models).

Benign clients (``--n`` queries, default 2,000):

* ``camera`` (images, MNIST CNN): a fixed camera sending a frame a second of one scene
  (a background input): lighting that drifts (a 30-minute cycle of +-8% and a random walk),
  a person (another input at half size) walking across every 1-4 minutes at 1 px a frame,
  sensor noise N(0, 0.004), 8-bit pixels (images: also its parts alone, ``camera-still``
  without lighting or people, ``camera-light`` without people, ``camera-walkers`` without
  the lighting's drift);
* ``thumbs`` (images, MNIST CNN): a gallery app sending each photo, then its thumbnail
  (down-scaled 2x and back), centre crops of 75% and 50% resized back, each JPEG-coded
  (``gateway_detection_outside.jpeg``, quality U(70, 95)); a fifth of the photos an
  earlier one again;
* ``slide`` (audio): one call of 3-6 Asterisk prompts with 0.2-0.5 s pauses, classified
  in 1 s windows every 0.25 s (overlapping 75%), then the next call; ``slide16`` (audio,
  built apart): calls of 2-5 prompts at gains of their own with pauses of 0.1-0.8 s,
  resampled to 16 kHz, a microphone's hiss and 50 Hz hum on the whole call, 0.5 s
  windows (the model's 8,000 values) every 0.1 s (a 20% hop);
* ``typing`` (text): a moderation check as someone types: the growing prefix every 1-4
  keystrokes (a debounce), a mistyped key corrected by a backspace 5% of keys;
* ``form`` (tables): a scorer re-run after every field edit of an application form: the
  form starts at the column medians, the applicant's values entered field by field in
  form order (rounded to 1/100 of the range, raw: 3 significant digits), 10% of fields
  first mistyped and corrected;
* ``crowd`` (every kind): 50 keys on one gateway, each sending its own inputs (distinct
  draws) and, one request in 10, one of 5 trending inputs (Zipf) re-encoded by its own
  device (``gateway_detection_outside``'s camera / logger / microphone / keyboard);
* ``crowdcam`` (images, MNIST CNN): 20 apps (keys) polling one public camera (``camera``'s
  frames), each a frame in 10 at random, JPEG-coded at the app's own quality U(60, 95).

Attackers, 5 runs of 300 queries on the long benchmark's held-out seeds, after 2,000
distinct benign queries of the same key (``knowing._warm``'s):

* ``nullspace`` (images, MNIST CNN, audio): Square's block search inside an Linf ball of
  0.1 (steps of 0.05), every candidate projected onto what the detectors' reduction
  cannot see: zero mean over each of :func:`~mlwarden.serve.monitor.reduce`'s blocks
  (images; at the default ``max_dims``), each 8 ms frame's energy kept
  (:func:`~mlwarden.serve.monitor.reduce_audio`; audio; then the Linf ball, 10 rounds).
  Its reduced queries are all one point: a "resend" to the similarity ball, PRADA and
  the still-ball rule. ``nullnoise``: the same with fresh N(0, 0.005) noise a query,
  projected too (Feng et al.'s answer to Blacklight's hashes, invisible to the rest);
* ``mirror`` (images, MNIST CNN, audio): against a rule that excuses a cloud whose
  variation spans few dimensions around a centre that stays put (one input re-encoded):
  Square's search on 6 fixed blocks (one value each: 6 dimensions), each candidate ``d``
  sent as the pair ``x0 + d``, ``x0 - d`` and the better side kept (the centre stays at
  ``x0``);
* ``hsja`` (images, MNIST CNN, tabular, audio): HopSkipJump (Chen, Jordan & Wainwright,
  2020, arXiv:1904.02144), label-only, L2: a start of another class, binary searches to
  the boundary, sign-query gradient estimates of 20 sqrt(t) probes (the paper: 100),
  geometric step sizes. Its queries hover at the boundary;
* ``flatjump`` (tables): against an output-aware rule (alerts dropped on a ball whose
  answers keep their class and log-odds): Square's search in steps of 0.01 of the range
  that keeps a step only when the true class's log-odds fall by at most 0.1 (flat
  answers), and every 100th query one jump, the accumulated step x4 (in the ball);
* ``sybilK`` (K = 4, 8, 20; images, tabular, text): the noisy random search of issue 19
  (sigma 0.01; text: the word search with a typo a query) spread round robin over K
  keys of one gateway, each a fresh account with 200 benign queries;
* ``sybil100`` / ``sybil150``: the same over 100 / 150 keys of 50 benign queries each (3 /
  2 steps a key); ``busy4`` (images, tabular; 2 runs): over 4 keys on a busy gateway,
  100 distinct benign queries of 100 other users before each step;
* ``grief`` (images, tabular): a victim key sends 1,000 distinct benign queries; after
  each, 10 attacker keys send near-copies of it (noise 0.01 of the range); ``griefcam``
  (images): the victim a public webcam (``camera``, 500 frames), the 10 griefers, who
  watch the same scene, send each frame with noise 0.01 of their own *before* the victim
  does. Reported: the victim's own flagged queries per 1,000 with and without them.

* against the stream rule (``serve/stream.py``: a window continuing the key's previous
  one chains in Blacklight only on its new samples), audio: ``slidesearch`` the issue's
  noisy search (sigma 0.05) sent as a stream, windows every 2,000 samples over a tape of
  copies of ``x0``, each copy the next candidate, judged on the window aligned with it
  (one candidate per 4 queries); ``slidefine`` the same at the smallest hop the rule
  takes (800 samples: one per 10); ``slidesquare`` noiseless Square steps (0.05, Linf
  0.1) on the tape; ``shiftcopy`` the noisy search with each query rolled by a random
  shift of up to 2,000 samples (is a shifted ``x0`` still ``x0`` to the model?).

Reported per attack: the attack's own query at which a key of it is first flagged, and
what it had in hand by then: the largest drop of the true class's probability, whether
an answer was another class within Linf 0.1 of the range (``wrong``), and for ``hsja``
the smallest RMS distance (per value, units of the range) of a wrong answer. On audio
also the smallest distortion of a wrong answer by audio's own measure (``dbx``: Carlini
& Wagner's dB_x, "Audio Adversarial Examples", 2018: the perturbation's peak relative
to the clip's peak, in dB; their attacks reach about -31 dB; Linf 0.1 of the range is
-14 dB on a clip at full scale, so ``wrong`` there includes mixing in another clip at an
audible level).

Every gateway the benchmark builds draws its sketch secret (:mod:`mlwarden.serve.sketch`)
from ``--secret-seed`` (default 0: :func:`fix_secret`), not fresh from the OS as
``mlwarden serve`` does, so a rerun reproduces each cell; another seed is another secret.

Run (about 30-60 minutes on the loaded 2-core box; ``--only`` / ``--part`` / ``--plans`` /
``--clients`` for parts)::

    OMP_NUM_THREADS=1 timeout 3600 nice -n 10 .venv/bin/python \\
        benchmarks/gateway_detection_realworld.py --out realworld.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
import gateway_detection_clients as clients  # noqa: E402
import gateway_detection_long as long  # noqa: E402
import gateway_detection_outside as outside  # noqa: E402
from gateway_detection_modalities import _block  # noqa: E402
from mlwarden.serve.config import Detection, Similarity  # noqa: E402
from mlwarden.serve.monitor import Monitor  # noqa: E402

CLIENTS = ("camera", "camera-still", "camera-light", "camera-walkers", "thumbs", "slide", "slide16",
           "typing", "form", "crowd", "crowdcam")  # fmt: skip
ATTACKS = ("nullspace", "nullnoise", "mirror", "hsja", "flatjump", "sybil4", "sybil8", "sybil20", "sybil100",
           "sybil150", "busy4", "grief", "griefcam", "litsearch", "gainsearch", "slidesearch",
           "slidefine", "slidesquare", "shiftcopy")  # fmt: skip
# the stream attacks (audio): hop (samples), noise a query, noiseless Square steps
SLIDES = {"slidesearch": (2000, 0.05), "slidefine": (800, 0.05), "slidesquare": (2000, 0.0)}
APPLIES = {  # which kinds each client / attack is built for
    "camera": {"images", "mnist28"}, "camera-still": {"images"}, "camera-light": {"images"},
    "camera-walkers": {"images"}, "thumbs": {"images", "mnist28"}, "slide": {"audio"},
    "slide16": {"audio"}, "slidesearch": {"audio"}, "slidefine": {"audio"},
    "slidesquare": {"audio"}, "shiftcopy": {"audio"},
    "typing": {"text"}, "form": {"tabular", "breast cancer raw", "breast cancer", "wine"},
    "crowd": {"images", "mnist28", "audio", "text", "tabular", "breast cancer raw",
              "breast cancer", "wine"},
    "crowdcam": {"images", "mnist28"},
    "nullspace": {"images", "mnist28", "audio"}, "nullnoise": {"images", "mnist28", "audio"},
    "hsja": {"images", "mnist28", "tabular", "audio"}, "mirror": {"images", "mnist28", "audio"},
    "flatjump": {"tabular", "breast cancer", "wine"},
    "sybil4": {"images", "tabular", "text"}, "sybil8": {"images", "tabular", "text"},
    "sybil20": {"images", "tabular", "text"}, "sybil100": {"images", "tabular", "text"},
    "sybil150": {"images", "tabular", "text"}, "busy4": {"images", "tabular"},
    "grief": {"images", "tabular"}, "griefcam": {"images"},
    "litsearch": {"images", "mnist28"}, "gainsearch": {"images", "mnist28"},
}  # fmt: skip


# -- benign clients ------------------------------------------------------------------
def camera(x_bg: np.ndarray, people: np.ndarray, n: int, rng: np.random.Generator,
           light: bool = True, walkers: bool = True) -> np.ndarray:  # fmt: skip
    """``n`` frames (C, H, W) in [0, 1] of a fixed camera over background ``x_bg``
    (``light``: its lighting drifts; ``walkers``: people walk through)."""
    c, h, w = x_bg.shape
    walk, frames = 0.0, np.empty((n, c, h, w), dtype=np.float32)
    nxt, person, pos = int(rng.integers(60, 240)), None, 0
    for t in range(n):
        walk = float(np.clip(walk + rng.normal(0, 0.002), -0.15, 0.15))
        f = x_bg * (1 + (0.08 * np.sin(2 * np.pi * t / 1800) + walk if light else 0.0))
        if walkers and person is None and t >= nxt:
            small = ndimage.zoom(people[int(rng.integers(len(people)))], (1, 0.5, 0.5), order=1)
            person, pos, top = small, -small.shape[2], int(rng.integers(0, h - small.shape[1]))
        if person is not None:
            ph, pw = person.shape[1:]
            lo_, hi_ = max(pos, 0), min(pos + pw, w)
            if lo_ < hi_:
                region = f[:, top : top + ph, lo_:hi_]
                f[:, top : top + ph, lo_:hi_] = np.maximum(
                    region, person[:, :, lo_ - pos : hi_ - pos]
                )
            pos += 1
            if pos >= w:
                person, nxt = None, t + int(rng.integers(60, 240))
        f = f + rng.normal(0, 0.004, f.shape)
        frames[t] = np.round(np.clip(f, 0, 1) * 255) / 255
    return frames


def thumbs(data: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A gallery app: each photo, its thumbnail and two centre crops, JPEG-coded."""
    out: list[np.ndarray] = []
    seen: list[int] = []
    h, w = data.shape[-2:]
    while len(out) < n:
        i = int(
            seen[rng.integers(len(seen))]
            if seen and rng.random() < 0.2
            else rng.integers(len(data))
        )
        seen.append(i)
        x = data[i]
        views = [x, ndimage.zoom(ndimage.zoom(x, (1, 0.5, 0.5), order=1), (1, 2, 2), order=1)]
        for frac in (0.75, 0.5):
            ch, cw = int(h * frac), int(w * frac)
            t, le = (h - ch) // 2, (w - cw) // 2
            crop = x[:, t : t + ch, le : le + cw]
            views.append(ndimage.zoom(crop, (1, h / ch, w / cw), order=1)[:, :h, :w])
        for v in views:
            q = rng.uniform(70, 95)
            out.append(np.stack([outside.jpeg(np.clip(ch_, 0, 1), q) for ch_ in v]))
    return np.stack(out[:n]).astype(np.float32)


def _recordings() -> list[np.ndarray]:
    from gateway_detection_modalities import _wav
    from mlwarden.core.audio_samples import cache_dir

    files = sorted(cache_dir().glob("asterisk-core-sounds-en-wav/**/*.wav"))
    return [c for c in (_wav(f) for f in files) if len(c) >= 4000]


def slide(n: int, rng: np.random.Generator) -> np.ndarray:
    """1 s windows every 0.25 s over calls of 3-6 prompts with pauses (room noise)."""
    clips, out = _recordings(), []  # type: list[np.ndarray], list[np.ndarray]
    while len(out) < n:
        parts = []
        for _ in range(int(rng.integers(3, 7))):
            parts.append(clips[int(rng.integers(len(clips)))])
            parts.append(rng.normal(0, 0.002, int(rng.uniform(0.2, 0.5) * 8000)))
        call = np.concatenate(parts) * rng.uniform(0.3, 1.0)
        out += [call[s : s + 8000] for s in range(0, len(call) - 7999, 2000)]
    q = np.round(np.clip(np.stack(out[:n]), -1, 1) * 32767) / 32767
    return q[:, None, :].astype(np.float32)


def slide16(n: int, rng: np.random.Generator) -> np.ndarray:
    """Built apart from :func:`slide`: calls resampled to 16 kHz (``resample_poly``), a
    microphone's hiss N(0, 0.003) and 50 Hz hum (0.004) added to the whole call, 16-bit
    PCM, then 0.5 s windows (the model's 8,000 values) every 0.1 s (a 20% hop)."""
    from scipy.signal import resample_poly

    clips, out = _recordings(), []  # type: list[np.ndarray], list[np.ndarray]
    while len(out) < n:
        parts = []
        for _ in range(int(rng.integers(2, 6))):
            parts.append(clips[int(rng.integers(len(clips)))] * rng.uniform(0.2, 1.0))
            parts.append(np.zeros(int(rng.uniform(0.1, 0.8) * 8000)))
        call = resample_poly(np.concatenate(parts), 2, 1)
        t = np.arange(len(call)) / 16000.0
        call = call + rng.normal(0, 0.003, len(call)) + 0.004 * np.sin(2 * np.pi * 50 * t)
        call = np.round(np.clip(call, -1, 1) * 32767) / 32767
        out += [call[s : s + 8000] for s in range(0, len(call) - 7999, 1600)]
    return np.stack(out[:n])[:, None, :].astype(np.float32)


NEAR = "qwertyuiopasdfghjklzxcvbnm"


def typing(texts: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """Growing prefixes of tweets as they are typed (every 1-4 keys), with corrected slips."""
    out: list[str] = []
    while len(out) < n:
        t = texts[int(rng.integers(len(texts)))].strip()
        k, due = 0, int(rng.integers(1, 5))
        typed = ""
        while k < len(t) and len(out) < n:
            if rng.random() < 0.05 and t[k].isalpha():
                j = NEAR.find(t[k].lower())
                slip = NEAR[min(max(j + int(rng.choice([-1, 1])), 0), len(NEAR) - 1)]
                if len(typed) >= 3:
                    out.append(typed + slip)
            typed += t[k]
            k += 1
            due -= 1
            if due <= 0 and len(typed) >= 3:
                out.append(typed)
                due = int(rng.integers(1, 5))
        if len(out) < n and (not out or out[-1] != t):
            out.append(t)
    return out[:n]


def form(data: np.ndarray, bounds: tuple[float, float], raw: bool, n: int,
         rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Rescoring after every field edit: from the column medians, field by field."""
    lo, hi = bounds
    med = np.median(data, axis=0)
    out: list[np.ndarray] = []

    def put(row: np.ndarray) -> None:
        if raw:
            mag = 10 ** (np.floor(np.log10(np.maximum(np.abs(row), 1e-12))) - 2)
            out.append(np.clip(np.round(row / mag) * mag, lo, hi).astype(np.float32))
        else:
            out.append(np.clip(np.round(row * 100) / 100, lo, hi).astype(np.float32))

    while len(out) < n:
        target, row = data[int(rng.integers(len(data)))], med.copy()
        span = np.ptp(data, axis=0) + 1e-9
        for f in range(len(row)):
            if rng.random() < 0.1:
                row[f] = target[f] + rng.normal(0, 0.3) * span[f]
                put(row)
            row[f] = target[f]
            put(row)
    return np.stack(out[:n])


def crowd(kind: long.Kind, vary: outside.Vary, n: int, keys: int,
          rng: np.random.Generator) -> tuple[Any, list[int]]:  # fmt: skip
    """``n`` queries of ``keys`` users: their own inputs, and 1 in 10 a trending one."""
    data = kind.data
    trend = rng.choice(len(data), 5, replace=False)
    p = 1.0 / np.arange(1, 6)
    devs = outside._devices(rng, keys)
    owner = rng.integers(0, keys, n)
    out = []
    for i in range(n):
        if rng.random() < 0.1:
            x = data[int(trend[rng.choice(5, p=p / p.sum())])]
            out.append(vary(x, rng, devs[owner[i]], int(rng.integers(24))))
        else:
            out.append(data[int(rng.integers(len(data)))])
    xs = out if kind.modality == "text" else np.stack(out).astype(np.float32)
    return xs, owner.tolist()


def crowdcam(kind: long.Kind, n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """20 apps polling one public camera (:func:`camera`), each a frame in 10 at random,
    JPEG-coded at the app's own quality."""
    pick = rng.choice(len(kind.data), 5, replace=False)
    frames = camera(kind.data[pick[0]], kind.data[pick[1:]], n // 2 + 1, rng)
    quality = rng.uniform(60, 95, 20)
    out, keys = [], []
    for f in frames:
        for k in np.flatnonzero(rng.random(20) < 0.1).tolist():
            out.append(np.stack([outside.jpeg(c, quality[k]) for c in f]))
            keys.append(k)
    return np.stack(out[:n]).astype(np.float32), keys[:n]


def _answers(kind: long.Kind, det: Detection, xs: Any) -> np.ndarray | None:
    """The model's scores for ``xs`` (N, classes) when ``det`` reads answers (an
    output-aware rule: ``answers.spread``, ``approach``), else None: what the gateway
    passes along."""
    ans, near = getattr(det, "answers", None), getattr(det, "approach", None)
    if not getattr(ans, "spread", None) and not getattr(near, "enabled", False):
        return None
    m = kind.model
    if kind.modality == "text":
        return np.asarray(m.predict_proba(list(xs)))
    if hasattr(m, "predict_proba"):
        return np.asarray(m.predict_proba(np.asarray(xs).reshape(len(xs), -1)))
    return np.asarray(m.proba(np.asarray(xs, dtype=np.float32)))


def _ask(mon: Monitor, key: str, feats: Any, labels: np.ndarray, probs: np.ndarray | None,
         i: int, texts: list[str] | None = None) -> dict[str, list[int]]:  # fmt: skip
    """Row ``i`` as one request of ``key`` (with its answer when the detectors read it;
    on text with its text, as ``Gateway.infer`` hands it: typing chains)."""
    text = None if texts is None else texts[i : i + 1]
    p = None if probs is None else probs[i : i + 1]
    return mon.inspect(key, feats[i : i + 1], labels[i : i + 1], p, text)


def _benign(kind: long.Kind, det: Detection) -> tuple[Any, np.ndarray, np.ndarray | None]:
    """``long.attack_benign``'s distinct benign queries (features, labels) and answers."""
    feats, labels = long.attack_benign(kind, det)
    pool, w = kind.pool, long.WARM
    raw = pool[:w] + pool[w + 1000 :] if kind.modality == "text" else (
        np.concatenate([pool[:w], pool[w + 1000 :]]))  # fmt: skip
    return feats, labels, _answers(kind, det, raw)


def feed(kind: long.Kind, det: Detection, mon: Monitor, xs: Any, keys: list[int],
         mark: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """Send ``xs`` (row i on key ``keys[i]``); flagged per 1,000 (any, by detector), keys
    flagged; ``mark``: count only the marked rows."""
    feats, labels, probs = kind.feats(det, xs), kind.labels(xs), _answers(kind, det, xs)
    texts = [str(t) for t in xs] if kind.modality == "text" else None
    mark = np.ones(len(feats), dtype=bool) if mark is None else mark
    hits: dict[str, int] = {"any": 0}
    flagged_keys: set[int] = set()
    for i in range(len(feats)):
        found = _ask(mon, f"k{keys[i]}", feats, labels, probs, i, texts)
        if found and mark[i]:
            hits["any"] += 1
            flagged_keys.add(keys[i])
            for k in found:
                hits[k] = hits.get(k, 0) + 1
    per = 1000 / max(int(mark.sum()), 1)
    out: dict[str, Any] = {k: round(v * per, 1) for k, v in hits.items()}
    return out | {"keys_flagged": len(flagged_keys)}


def benign(name: str, kind: long.Kind, det: Detection, client: str, n: int, seed: int,
           raw: bool) -> dict[str, Any]:  # fmt: skip
    rng = np.random.default_rng(seed)
    keys = [0] * n
    if client.startswith("camera"):  # camera-still / -light / -walkers: its parts alone
        pick = rng.choice(len(kind.data), 5, replace=False)
        part = client.partition("-")[2]
        light, walkers = part in ("", "light"), part in ("", "walkers")
        xs: Any = camera(kind.data[pick[0]], kind.data[pick[1:]], n, rng, light, walkers)
    elif client == "thumbs":
        xs = thumbs(kind.data, n, rng)
    elif client == "slide":
        xs = slide(n, rng)
    elif client == "slide16":
        xs = slide16(n, rng)
    elif client == "typing":
        xs = typing(kind.data, n, rng)
    elif client == "form":
        xs = form(np.asarray(kind.data), kind.bounds, raw, n, rng)
    elif client == "crowdcam":
        xs, keys = crowdcam(kind, n, rng)
    else:
        vary = _vary(name, kind, raw)
        xs, keys = crowd(kind, vary, n, 50, rng)
    return feed(kind, det, kind.monitor(det), xs, keys)


def _vary(name: str, kind: long.Kind, raw: bool) -> outside.Vary:
    if kind.modality == "text":
        return outside.keyboard
    if kind.modality == "audio":
        return outside.microphone
    if name in ("images", "mnist28"):
        return outside.camera
    return outside.logger(kind.bounds, raw)


# -- attackers -----------------------------------------------------------------------
def proba(kind: long.Kind, xs: Any, ys: np.ndarray) -> np.ndarray:
    """The probability of class ``ys[i]`` the model answers for each row of ``xs``."""
    m = kind.model
    if kind.modality == "text":
        p = m.predict_proba(list(xs))
    elif hasattr(m, "predict_proba"):
        p = m.predict_proba(np.asarray(xs).reshape(len(xs), -1))
    else:  # the MNIST CNN: classes are column indices
        return m.proba(np.asarray(xs, dtype=np.float32))[np.arange(len(xs)), ys]
    return p[np.arange(len(xs)), np.searchsorted(m.classes_, ys)]


def null_project(kind: long.Kind, x0: np.ndarray, delta: np.ndarray, dims: int) -> np.ndarray:
    """``delta`` made invisible to the detectors' reduction of ``x0 + delta`` (and kept in
    the input range and the Linf ball of 0.1): images, zero mean over each block of
    :func:`reduce` (alternating projections onto the box and the subspace); audio, every
    frame of :func:`reduce_audio` rescaled to the clean clip's energy."""
    lo, hi = kind.bounds
    span = hi - lo
    flat0 = x0.reshape(-1).astype(np.float64)
    n = flat0.size
    starts = (np.arange(min(dims, n), dtype=np.int64) * n) // min(dims, n)
    sizes = np.diff(np.append(starts, n))
    low = np.maximum(lo, flat0 - 0.1 * span) - flat0
    high = np.minimum(hi, flat0 + 0.1 * span) - flat0
    d = delta.reshape(-1).astype(np.float64)
    if kind.modality == "audio":
        e0 = np.add.reduceat(flat0 * flat0, starts)
        for _ in range(10):
            y = flat0 + np.clip(d, low, high)
            y = y * np.repeat(
                np.sqrt(e0 / np.maximum(np.add.reduceat(y * y, starts), 1e-30)), sizes
            )
            d = y - flat0
        return d.reshape(x0.shape)
    for _ in range(20):
        d = d - np.repeat(np.add.reduceat(d, starts) / sizes, sizes)
        d = np.clip(d, low, high)
    d = d - np.repeat(np.add.reduceat(d, starts) / sizes, sizes)
    return np.clip(d, low, high).reshape(x0.shape)


def nullspace(kind: long.Kind, x0: np.ndarray, y0: int, budget: int, seed: int,
              dither: float = 0.0) -> np.ndarray:  # fmt: skip
    """Square's block search (steps 0.05, Linf 0.1) in the reduction's null space;
    ``dither``: fresh N(0, dither) noise a query, projected too (breaks Blacklight's hashes)."""
    lo, hi = kind.bounds
    span = hi - lo
    dims = Similarity().max_dims  # the documented default: the attacker reads the docs
    rng = np.random.default_rng(seed)
    delta, score, sent = np.zeros_like(x0, dtype=np.float64), np.inf, []
    for _ in range(budget):
        cand = delta.copy()
        b = _block(rng, x0.shape)
        cand[b] = np.clip(cand[b] + rng.choice([-0.05, 0.05]) * span, -0.1 * span, 0.1 * span)
        cand = null_project(kind, x0, cand, dims)
        noisy = cand + rng.normal(0, dither * span, x0.shape) if dither else cand
        q = np.clip(x0 + null_project(kind, x0, noisy, dims), lo, hi).astype(np.float32)
        sent.append(q)
        p = float(proba(kind, q[None], np.array([y0]))[0])
        if p < score:
            score, delta = p, cand
    return np.stack(sent)


def flatjump(kind: long.Kind, x0: np.ndarray, y0: int, budget: int, seed: int) -> np.ndarray:
    """Square's block search in small steps (0.01 of the range, Linf 0.1) that keeps a step
    only while the true class's log-odds fall by at most 0.1 a step (its answers stay
    flat), and every 100th query jumps: the accumulated step, extrapolated 4x into the
    ball, sent once (one query, far from the search's own ball)."""
    lo, hi = kind.bounds
    span = hi - lo
    rng = np.random.default_rng(seed)
    delta, sent = np.zeros_like(x0, dtype=np.float64), []

    def odds(q: np.ndarray) -> float:
        p = float(np.clip(proba(kind, q[None], np.array([y0]))[0], 1e-12, 1 - 1e-12))
        return float(np.log(p) - np.log1p(-p))

    score = odds(x0.astype(np.float32))  # the clean input's answer: one query, not sent here
    for i in range(budget):
        if (i + 1) % 100 == 0:
            sent.append(np.clip(x0 + np.clip(4 * delta, -0.1 * span, 0.1 * span), lo, hi))
            continue
        cand = delta.copy()
        b = _block(rng, x0.shape)
        cand[b] = np.clip(cand[b] + rng.choice([-0.01, 0.01]) * span, -0.1 * span, 0.1 * span)
        q = np.clip(x0 + cand, lo, hi).astype(np.float32)
        sent.append(q)
        s = odds(q)
        if score - 0.1 <= s < score:
            score, delta = s, cand
    return np.stack(sent).astype(np.float32)


def mirror(kind: long.Kind, x0: np.ndarray, y0: int, budget: int, seed: int,
           blocks: int = 6) -> np.ndarray:  # fmt: skip
    """Square's search confined to ``blocks`` fixed blocks (a ``blocks``-dimensional
    subspace: one value a block), each candidate ``d`` sent as the pair ``x0 + d``,
    ``x0 - d`` (the better side kept): the cloud's centre stays at ``x0`` and its variation
    spans ``blocks`` dimensions, as one input re-encoded (a gain, a few shifts) does."""
    lo, hi = kind.bounds
    span = hi - lo
    rng = np.random.default_rng(seed)
    where = [_block(rng, x0.shape) for _ in range(blocks)]
    coef, score = np.zeros(blocks), np.inf
    sent: list[np.ndarray] = []
    while len(sent) < budget:
        cand = coef.copy()
        i = int(rng.integers(blocks))
        cand[i] = np.clip(cand[i] + rng.choice([-0.05, 0.05]), -0.1, 0.1)
        d = np.zeros_like(x0, dtype=np.float64)
        for c, b in zip(cand, where, strict=True):
            d[b] = c * span
        pair = np.clip(np.stack([x0 + d, x0 - d]), lo, hi).astype(np.float32)
        sent += list(pair)
        p = proba(kind, pair, np.full(2, y0))
        if p.min() < score:
            score, coef = float(p.min()), cand if p[0] <= p[1] else -cand
    return np.stack(sent[:budget])


def hsja(kind: long.Kind, x0: np.ndarray, y0: int, budget: int, seed: int) -> np.ndarray:
    """HopSkipJump (untargeted, L2, label-only): the queries it sends, in order."""
    lo, hi = kind.bounds
    rng = np.random.default_rng(seed)
    x0 = x0.astype(np.float64)
    d = x0.size
    theta = d**-1.5  # the paper's binary-search tolerance and probe size for L2
    sent: list[np.ndarray] = []

    def adv(x: np.ndarray) -> bool:
        q = np.clip(x, lo, hi).astype(np.float32)
        sent.append(q)
        return bool(kind.labels(q[None])[0] != y0)

    def boundary(x_adv: np.ndarray) -> np.ndarray:
        a, b = 0.0, 1.0  # blend weight of x_adv: a clean side, b adversarial side
        while b - a > theta and len(sent) < budget:
            m = (a + b) / 2
            if adv((1 - m) * x0 + m * x_adv):
                b = m
            else:
                a = m
        return (1 - b) * x0 + b * x_adv

    start = None
    for i in rng.permutation(len(kind.data)):  # natural inputs until one is another class
        if len(sent) >= budget:
            break
        if adv(np.asarray(kind.data[int(i)], dtype=np.float64)):
            start = np.asarray(kind.data[int(i)], dtype=np.float64)
            break
    if start is None:
        return np.stack(sent[:budget])
    xb, t = boundary(start), 0
    while len(sent) < budget:
        t += 1
        dist = float(np.linalg.norm(xb - x0))
        delta = np.sqrt(d) * theta * dist
        grad = np.zeros(d)
        signs, dirs = [], []
        for _ in range(int(20 * np.sqrt(t))):
            u = rng.normal(0, 1, x0.shape)
            u /= np.linalg.norm(u)
            p = np.clip(xb + delta * u, lo, hi)
            signs.append(1.0 if adv(p) else -1.0)
            dirs.append(((p - xb) / delta).reshape(-1))
            if len(sent) >= budget:
                break
        s = np.asarray(signs)
        s = s - s.mean() if abs(s.mean()) < 1 else s
        grad = (s[:, None] * np.stack(dirs)).mean(axis=0).reshape(x0.shape)
        grad /= np.linalg.norm(grad) + 1e-12
        eps = dist / np.sqrt(t)
        while len(sent) < budget and not adv(xb + eps * grad):
            eps /= 2
        xb = boundary(np.clip(xb + eps * grad, lo, hi))
    return np.stack(sent[:budget])


def lit_search(kind: long.Kind, x0: np.ndarray, y0: int, budget: int, seed: int,
               gain_only: bool = False) -> np.ndarray:  # fmt: skip
    """Against the ``camera`` profile (its clouds judged without brightness and contrast):
    Square's block search (steps 0.05, Linf 0.1 of the range) with fresh N(0, 0.01) noise
    a query, every query sent under a drifting light (a gain of +-8% over the 300
    queries and a random walk, as :func:`camera`'s) and scored on that answer;
    ``gain_only``: the profile's named risk, a random search over brightness and
    contrast alone (``a x0 + b``, ``|a - 1|, |b| <= 0.1``) with sensor noise N(0, 0.004)."""
    lo, hi = kind.bounds
    span = hi - lo
    rng = np.random.default_rng(seed)
    delta, ab = np.zeros_like(x0, dtype=np.float64), np.array([1.0, 0.0])
    score, walk, sent = np.inf, 0.0, []
    for t in range(budget):
        walk = float(np.clip(walk + rng.normal(0, 0.004), -0.1, 0.1))
        if gain_only:
            cab = np.clip(ab + rng.normal(0, 0.02, 2), [0.9, -0.1], [1.1, 0.1])
            q = cab[0] * x0 + cab[1] * span + rng.normal(0, 0.004 * span, x0.shape)
        else:
            cand = delta.copy()
            b = _block(rng, x0.shape)
            cand[b] = np.clip(cand[b] + rng.choice([-0.05, 0.05]) * span, -0.1 * span, 0.1 * span)
            gain = 1 + 0.08 * np.sin(2 * np.pi * t / budget) + walk
            q = gain * (x0 + cand + rng.normal(0, 0.01 * span, x0.shape))
        q = np.clip(q, lo, hi).astype(np.float32)
        sent.append(q)
        p = float(proba(kind, q[None], np.array([y0]))[0])
        if p < score:
            score = p
            if gain_only:
                ab = cab
            else:
                delta = cand
    return np.stack(sent)


def slide_search(kind: long.Kind, x0: np.ndarray, y0: int, budget: int, seed: int, hop: int,
                 sigma: float) -> np.ndarray:  # fmt: skip
    """Issue 19's noisy random search sent as a stream: windows every ``hop`` samples over
    a tape of copies of ``x0``, each copy the search's next candidate (its kept step plus a
    block of +-0.1, and fresh N(0, ``sigma``) on every sample; ``sigma`` 0: Square's
    noiseless block steps of 0.05 in Linf 0.1). Each window continues the one before
    (the same samples at another offset); a candidate is judged on the window aligned
    with its copy and kept when the true class's probability falls. A copy is written
    on the tape once the window before it needs its first samples, after the answer to
    the window aligned with the copy before."""
    lo, hi = kind.bounds
    span, n = hi - lo, x0.size
    rng = np.random.default_rng(seed)
    delta, score = np.zeros_like(x0, dtype=np.float64), np.inf
    tape, cands, sent = np.zeros(0, np.float32), [], []  # type: ignore[var-annotated]
    while len(sent) < budget:
        at = len(sent) * hop
        while len(tape) < at + n:  # the next copy: the search's candidate
            cand = delta.copy()
            b = _block(rng, x0.shape)
            step = rng.choice([-0.1, 0.1]) if sigma else cand[b] / span + rng.choice([-0.05, 0.05])
            cand[b] = np.clip(step, -0.1, 0.1) * span
            noise = rng.normal(0, sigma * span, x0.shape) if sigma else 0.0
            copy_ = np.clip(x0 + cand + noise, lo, hi).astype(np.float32)
            cands.append(cand)
            tape = np.concatenate([tape, copy_.reshape(-1)])
        q = tape[at : at + n].reshape(x0.shape)
        sent.append(q)
        if at % n == 0:  # aligned with copy at // n: the candidate's answer
            p = float(proba(kind, q[None], np.array([y0]))[0])
            if p < score:
                score, delta = p, cands[at // n]
    return np.stack(sent)


def shift_copy(kind: long.Kind, x0: np.ndarray, y0: int, budget: int, seed: int,
               sigma: float = 0.05, most: int = 2000) -> np.ndarray:  # fmt: skip
    """Issue 19's noisy random search, each query rolled by a random shift of up to
    ``most`` samples (does the model see a shifted ``x0`` as ``x0``?); a step is kept when
    the shifted query's true class falls."""
    lo, hi = kind.bounds
    span = hi - lo
    rng = np.random.default_rng(seed)
    delta, score, sent = np.zeros_like(x0, dtype=np.float64), np.inf, []
    for _ in range(budget):
        cand = delta.copy()
        cand[_block(rng, x0.shape)] = rng.choice([-0.1, 0.1]) * span
        q = np.clip(x0 + cand + rng.normal(0, sigma * span, x0.shape), lo, hi)
        q = np.roll(q, int(rng.integers(-most, most + 1)), axis=-1).astype(np.float32)
        sent.append(q)
        p = float(proba(kind, q[None], np.array([y0]))[0])
        if p < score:
            score, delta = p, cand
    return np.stack(sent)


def achieved(kind: long.Kind, x0: Any, y0: int, qs: Any, upto: int) -> dict[str, Any]:
    """What the first ``upto`` answers gave: the largest drop of the true class's
    probability, a wrong answer within Linf 0.1 of the range, the closest wrong answer."""
    if upto == 0:
        return {"drop": 0.0, "wrong": False, "rms": None}
    ys = np.full(upto, y0)
    p0 = float(proba(kind, [x0] if kind.modality == "text" else x0[None], ys[:1])[0])
    p = proba(kind, qs[:upto], ys)
    bad = kind.labels(qs[:upto]) != y0
    if kind.modality == "text":
        return {"drop": round(p0 - float(p.min()), 3), "wrong": bool(bad.any()), "rms": None}
    span = kind.bounds[1] - kind.bounds[0]
    diff = (np.asarray(qs[:upto], dtype=np.float64) - x0).reshape(upto, -1) / span
    linf, rms = np.abs(diff).max(axis=1), np.sqrt((diff**2).mean(axis=1))
    close = float(rms[bad].min()) if bad.any() else None
    out = {"drop": round(p0 - float(p.min()), 3), "wrong": bool((bad & (linf <= 0.1 + 1e-6)).any()),
           "rms": None if close is None else round(close, 4)}  # fmt: skip
    if kind.modality == "audio":  # and by audio's own measure: dB_x (module docstring)
        peak = float(np.abs(np.asarray(x0, dtype=np.float64)).max()) / span
        dbx = 20 * np.log10(np.maximum(linf, 1e-12) / max(peak, 1e-12))
        out["dbx"] = round(float(dbx[bad].min()), 1) if bad.any() else None
    return out


def first_flag(kind: long.Kind, det: Detection, mon: Monitor, qs: Any, keys: list[str],
               every: int = 0) -> tuple[int | None, list[str]]:  # fmt: skip
    """The attack's query at which one of its keys is first flagged; ``every`` distinct
    benign queries of 100 other users before each of its queries (a busy gateway)."""
    feats, labels, probs = kind.feats(det, qs), kind.labels(qs), _answers(kind, det, qs)
    texts = [str(t) for t in qs] if kind.modality == "text" else None
    bf, bl, bp = _benign(kind, det) if every else ([], np.zeros(0), None)
    b = 0
    for i in range(len(feats)):
        for _ in range(every):
            rest = len(bf) - 7500  # the rows after the accounts' warm-up; a row sent
            j, user = 7500 + b % rest, (b + b // rest) % 100  # again: by another user
            _ask(mon, f"b{user}", bf, bl, bp, j)
            b += 1
        found = _ask(mon, keys[i], feats, labels, probs, i, texts)
        if found:
            return i + 1, sorted(found)
    return None, []


def _copy(mon: Monitor) -> Monitor:
    """A deep copy of a warmed gateway; every lock in it fresh (a gateway-wide detector
    holds locks ``gateway_detection_knowing._copy`` does not know of)."""
    lock, rlock = type(threading.Lock()), type(threading.RLock())
    saved = {t: copy._deepcopy_dispatch.get(t) for t in (lock, rlock)}  # type: ignore[attr-defined]
    copy._deepcopy_dispatch[lock] = lambda x, memo: threading.Lock()  # type: ignore[attr-defined]
    copy._deepcopy_dispatch[rlock] = lambda x, memo: threading.RLock()  # type: ignore[attr-defined]
    try:
        return copy.deepcopy(mon)
    finally:
        for t, f in saved.items():
            if f is None:
                copy._deepcopy_dispatch.pop(t, None)  # type: ignore[attr-defined]
            else:
                copy._deepcopy_dispatch[t] = f  # type: ignore[attr-defined]


def _target(kind: long.Kind, run: int) -> tuple[Any, int]:
    x = (
        kind.seeds[run % len(kind.seeds)][0]
        if kind.seeds
        else kind.calib[0][(100 + run) % len(kind.calib[0])]
    )
    if kind.modality != "text":
        x = np.asarray(x, dtype=np.float32)
        return x, int(kind.labels(x[None])[0])
    return x, int(kind.labels([x])[0])


def _warm(kind: long.Kind, det: Detection) -> Monitor:
    """A key after ``long.WARM`` distinct benign queries (``knowing._warm``, with answers)."""
    mon = kind.monitor(det)
    bf, bl, bp = _benign(kind, det)
    for j in range(min(long.WARM, len(bl))):
        _ask(mon, "k", bf, bl, bp, j)
    return mon


def _sybil_monitor(kind: long.Kind, det: Detection, k: int) -> Monitor:
    """One gateway with ``k`` fresh accounts of 200 (over 20 keys: 50) distinct benign
    queries each."""
    mon = kind.monitor(det)
    bf, bl, bp = _benign(kind, det)
    m = 200 if k <= 20 else 50
    for j in range(k):
        for i in range(m * j, m * j + m):
            _ask(mon, f"s{j}", bf, bl, bp, i)
    return mon


def run_attack(kind: long.Kind, det: Detection, plan: str, run: int, budget: int,
               warm: Monitor) -> dict[str, Any]:  # fmt: skip
    x0, y0 = _target(kind, run)
    if plan.startswith("null"):
        dither = 0.005 if plan == "nullnoise" else 0.0
        qs, keys = nullspace(kind, x0, y0, budget, run, dither), ["k"] * budget
    elif plan in ("litsearch", "gainsearch"):
        qs, keys = lit_search(kind, x0, y0, budget, run, plan == "gainsearch"), ["k"] * budget
    elif plan in SLIDES:
        hop, sigma = SLIDES[plan]
        qs, keys = slide_search(kind, x0, y0, budget, run, hop, sigma), ["k"] * budget
    elif plan == "shiftcopy":
        qs, keys = shift_copy(kind, x0, y0, budget, run), ["k"] * budget
    elif plan in ("hsja", "flatjump", "mirror"):
        attack = {"hsja": hsja, "flatjump": flatjump, "mirror": mirror}[plan]
        qs, keys = attack(kind, x0, y0, budget, run), ["k"] * budget
    else:  # sybilK / busyK: the issue's noisy search, round robin over K fresh accounts
        k = int(plan[5:] if plan.startswith("sybil") else plan[4:])
        qs = long.search(kind, x0, y0, 0.01, run)
        keys = [f"s{i % k}" for i in range(len(qs))]
    every = 100 if plan.startswith("busy") else 0
    first, by = first_flag(kind, det, _copy(warm), qs, keys, every)
    upto = first - 1 if first else len(qs)
    return {"first": first, "by": by, "at_flag": achieved(kind, x0, y0, qs, upto),
            "all": achieved(kind, x0, y0, qs, len(qs))}  # fmt: skip


def grief(kind: long.Kind, det: Detection, n: int = 1000, griefers: int = 10) -> dict[str, Any]:
    """The victim's flagged queries per 1,000 alone and with griefers copying each query."""
    lo, hi = kind.bounds
    rng = np.random.default_rng(7)
    victim = kind.pool[long.WARM : long.WARM + n]
    alone = feed(kind, det, kind.monitor(det), victim, [0] * n)
    rows, keys = [], []
    for x in victim:
        rows.append(x)
        keys.append(0)
        for g in range(griefers):
            rows.append(np.clip(x + rng.normal(0, 0.01 * (hi - lo), x.shape), lo, hi))
            keys.append(g + 1)
    xs = np.stack(rows).astype(np.float32)
    mon, mark = kind.monitor(det), np.asarray(keys) == 0
    both = feed(kind, det, mon, xs, keys, mark)
    return {"alone": alone, "griefed": both}


def griefcam(kind: long.Kind, det: Detection, n: int = 500, griefers: int = 10) -> dict[str, Any]:
    """A public webcam's frames (:func:`camera`) on the victim's key; before each frame the
    griefers, who watch the same scene, send it with noise N(0, 0.01) of their own."""
    rng = np.random.default_rng(8)
    pick = rng.choice(len(kind.data), 5, replace=False)
    frames = camera(kind.data[pick[0]], kind.data[pick[1:]], n, rng)
    alone = feed(kind, det, kind.monitor(det), frames, [0] * n)
    rows, keys = [], []
    for f in frames:
        for g in range(griefers):
            rows.append(np.clip(f + rng.normal(0, 0.01, f.shape), 0, 1))
            keys.append(g + 1)
        rows.append(f)
        keys.append(0)
    mark = np.asarray(keys) == 0
    both = feed(kind, det, kind.monitor(det), np.stack(rows).astype(np.float32), keys, mark)
    return {"alone": alone, "griefed": both}


# -- runs and tables -----------------------------------------------------------------
def kinds(only: set[str] | None) -> dict[str, tuple[long.Kind, bool]]:
    """Each kind (the long / clients benchmarks' data and models) and whether raw units."""
    want = lambda n: only is None or n in only  # noqa: E731
    base = {"images", "tabular", "audio", "text"}
    out = {name: (kind, False) for name, kind in long.kinds({n for n in base if want(n)}).items()}
    if want("mnist28"):
        out["mnist28"] = (clients._mnist_kind(), False)
    for name in ("breast cancer raw", "breast cancer", "wine"):
        if want(name):
            out[name] = clients._table_kind(name)
    return out


def calibrated_clients(name: str, kind: long.Kind, args: argparse.Namespace,
                       applies: dict[str, set[str]], benign: Any) -> tuple[Detection, dict[str, Any]]:  # fmt: skip
    """The kind calibrated as ``gateway calibrate`` does (printed), and the cells of each
    of ``--clients`` that ``applies`` to it, ``benign(det, client, seed)`` at each seed:
    (the calibrated detection config, the kind's row of results so far)."""
    det, summary = long._calibrated(kind)
    print(f"{name}: calibrated {json.dumps(summary)}", flush=True)
    row: dict[str, Any] = {"calibration": summary}
    for client in args.clients:
        if name in applies[client]:
            row[client] = [benign(det, client, s) for s in args.seeds]
            print(f"{name} {client}: {json.dumps(row[client])}", flush=True)
    return det, row


def run_kind(name: str, kind: long.Kind, raw: bool, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    det, row = calibrated_clients(name, kind, args, APPLIES,
                                  lambda det, c, s: benign(name, kind, det, c, args.n, s, raw))  # fmt: skip
    plans = [p for p in args.plans if name in APPLIES[p]]
    single = {"nullspace", "nullnoise", "mirror", "hsja", "flatjump", "litsearch", "gainsearch",
              "shiftcopy", *SLIDES}  # fmt: skip
    warm = _warm(kind, det) if single & set(plans) else None
    for plan in plans:
        if plan.startswith("grief"):
            row[plan] = (grief if plan == "grief" else griefcam)(kind, det)
            print(f"{name} {plan}: {json.dumps(row[plan])}", flush=True)
            continue
        k = plan[5:] if plan.startswith("sybil") else plan[4:] if plan.startswith("busy") else ""
        mon = _sybil_monitor(kind, det, int(k)) if k else warm
        for run in range(min(args.runs, 2) if plan.startswith("busy") else args.runs):
            res = run_attack(kind, det, plan, run, args.budget, mon)  # type: ignore[arg-type]
            row.setdefault(plan, []).append(res)
            print(f"{name} {plan} run {run}: {json.dumps(res)}", flush=True)
    row["seconds"] = round(time.time() - t0)
    return row


def _bcell(res: list[dict[str, Any]]) -> str:
    text = " / ".join(f"{r['any']:g}" for r in res)
    if max(r["any"] for r in res) <= 1:
        return text
    dets = sorted({f"{k} {v:g}" for k, v in res[0].items() if k not in ("any", "keys_flagged")})
    keys = f"; keys flagged {res[0]['keys_flagged']}" if res[0]["keys_flagged"] > 1 else ""
    return f"**{text}** ({', '.join(dets)}{keys})"


def _acell(res: list[dict[str, Any]]) -> str:
    hit = sorted(r["first"] for r in res if r["first"])
    dets = sorted({d for r in res for d in r["by"]})
    text = f"{len(hit)}/{len(res)}" + (f" at {hit[0]}-{hit[-1]} ({', '.join(dets)})" if hit else "")
    for part, label in (("at_flag", "before the flag"), ("all", "in 300")):
        a = [r[part] for r in res]
        rms = [x["rms"] for x in a if x["rms"] is not None]
        text += f"; {label}: drop <= {max(x['drop'] for x in a):.2f}, "
        text += f"{sum(x['wrong'] for x in a)}/{len(a)} wrong"
        text += f", closest wrong rms {min(rms):.3f}" if rms else ""
        dbx = [x["dbx"] for x in a if x.get("dbx") is not None]
        text += f" ({min(dbx):.1f} dB_x)" if dbx else ""
    return text


def table(results: dict[str, Any], clients: tuple[str, ...] = CLIENTS,
          attacks: tuple[str, ...] = ATTACKS) -> None:  # fmt: skip
    """The markdown tables of ``docs/benchmarks/gateway.md`` (rows of ``clients`` and
    ``attacks``: this benchmark's unless given)."""
    print("\n| input | client | flagged per 1,000 (per seed) |\n|---|---|---|")
    for name, row in results.items():
        for c in clients:
            if c in row:
                print(f"| {name} | {c} | {_bcell(row[c])} |")
    print("\n| input | attack | first flag (of runs) and what the attack had achieved |")
    print("|---|---|---|")
    for name, row in results.items():
        for plan in attacks:
            if plan.startswith("grief") and plan in row:
                g = row[plan]
                print(f"| {name} | {plan} | victim {_bcell([g['alone']])} per 1,000 alone, "
                      f"{_bcell([g['griefed']])} with 10 griefers |")  # fmt: skip
            elif plan in row:
                print(f"| {name} | {plan} | {_acell(row[plan])} |")


class _Every(dict[str, str]):
    """``--profile``: every key of every gateway the benchmark builds declares ``profile``."""

    def __init__(self, profile: str) -> None:
        super().__init__()
        self.profile = profile

    def get(self, key: str, default: Any = None) -> str:  # type: ignore[override]
        return self.profile


def _declare(profile: str) -> None:
    """Every :class:`Monitor` built from now on gives each key ``profile`` (``--profile``)."""
    init = Monitor.__init__

    def declared(self: Monitor, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.profiles = _Every(profile)

    Monitor.__init__ = declared  # type: ignore[method-assign]


def fix_secret(seed: int) -> bytes:
    """Every :class:`Monitor` built from now on in this process (the benchmark's gateways,
    ``gateway calibrate``'s) takes the sketch secret of ``seed`` instead of a fresh one
    (``--secret-seed``: a rerun reproduces a cell). The served gateway is untouched: it
    keeps its own secret in its state database."""
    return clients.fix_secret(seed)  # the one derivation: the clients' benchmark's


KINDS = "images, mnist28, audio, text, tabular, breast cancer raw, breast cancer, wine"


def add_common_args(ap: argparse.ArgumentParser, only: str | None = None, kinds: str = KINDS,
                    clients: tuple[str, ...] = CLIENTS, plans: tuple[str, ...] = ATTACKS,
                    profile: str = "every key declares this profile (serve/profiles.py)") -> None:  # fmt: skip
    """The options of this benchmark and those built on it (``redteam10``): kinds,
    clients, plans, benign queries and seeds, runs, budget, profile, output and the
    sketch secret's seed (read back by :func:`parse_common`)."""
    ap.add_argument("--only", default=only, help=f"comma-separated kinds ({kinds})")
    ap.add_argument("--clients", default=",".join(clients))
    ap.add_argument("--plans", default=",".join(plans))
    ap.add_argument("--n", type=int, default=2000, help="queries a benign client")
    ap.add_argument("--seeds", default="0", help="comma-separated benign client seeds")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--budget", type=int, default=long.BUDGET)
    ap.add_argument("--profile", help=profile)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--secret-seed", type=int, default=0, help="the gateways' sketch secret")


def parse_common(args: argparse.Namespace, clients: tuple[str, ...] = CLIENTS,
                 plans: tuple[str, ...] = ATTACKS) -> None:  # fmt: skip
    """:func:`add_common_args`'s options in place: lists of known clients, plans ("none":
    none) and seeds; every gateway built from now on takes the seed's secret."""
    args.clients = [c for c in args.clients.split(",") if c in clients]
    args.plans = [p for p in args.plans.split(",") if p in plans]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    fix_secret(args.secret_seed)


def run_all(args: argparse.Namespace, run: Any, show: Any) -> None:
    """``run(name, kind, raw, args)`` for each of ``--only``'s kinds (all: none given),
    the results written to ``--out`` after each, then ``show(results)``."""
    results: dict[str, Any] = {}
    for name, (kind, raw) in kinds(set(args.only.split(",")) if args.only else None).items():
        results[name] = run(name, kind, raw, args)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    show(results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap)
    args = ap.parse_args()
    if args.profile:
        _declare(args.profile)
    parse_common(args)
    run_all(args, run_kind, table)


if __name__ == "__main__":
    main()
