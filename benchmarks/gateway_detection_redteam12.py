"""Gateway stream detectors against session 12's red team: shaped noise, decoys, held-out clients.

Built on ``gateway_detection_redteam11.py`` (its kinds, settings, :class:`Gate` and OARS,
imported, not copied). Every attacker here is ``oars-blind``: the issue's noisy random
search (Square's blocks of +-0.1 of the range, fresh noise a query) at the noise scale
OARS (Feng et al., CCS 2023, arXiv:2303.06280) learns on a gateway of its own with the
same configuration (rejections there are its oracle; under ``log`` the target shows
nothing), then run blind against the target. What changes is the *shape* of the noise,
each of the same root mean square per value as the white noise at the same scale (so
the search pays the same for it), fixed per run:

* ``white``: N(0, sd) per value (redteam11's ``oars-blind``);
* ``dirs8`` / ``dirs16`` / ``dirs20``: noise in 8 / 16 / 20 fixed random orthonormal
  directions of the input (a Gaussian in that subspace): a rule that tells noise from
  natural variation by how many directions a window's variation spans (the spread rule's
  white-noise gate: more than 24) sees a few natural inputs;
* ``blocks`` (images): low-frequency noise, constant on blocks (a 4x4 grid of the image,
  the same on every channel: 16 values, each block's value N(0, sd));
* ``smooth`` (images): white noise blurred by a Gaussian of a tenth of the side, scaled
  back to sd per value (a smooth field, every direction used, most energy low);
* ``pca``: noise along the top 8 principal directions of public data of the same kind
  (1,000 of the kind's natural inputs, not the target), each with the data's own variance
  along it, scaled to sd: noise that looks like the data's own variation;
* ``perfeature`` (tables): white noise scaled per feature like the data's spread;
* ``sparse2`` (tables): noise on 2 features a query, drawn afresh (each N(0, sd
  sqrt(values / 2))): a step between two queries touches a few fields, as an edit does.

``--decoys K``: before every ``K``-th attack query the key sends one natural input far
from the attacked one (the farthest quarter of the benign pool from the first query,
each once), on the attacker's own gateway too: the window of a rule measuring where the
key's queries are widens, at the cost of one query in ``K + 1``. ``--mix K``
(redteam11's): ``K`` distinct benign queries before each attack query.
``--own-secret``: the attacker's gateway draws its own sketch secret (redteam11's
``oars-blind`` shares the target's: the attacker who knows it).

Benign clients held out (built apart from the session's rules), flagged per 1,000:

* ``lowlight`` (images, digits): a fixed camera in low light: one scene (a natural input)
  under sensor noise N(0, s) with s wandering in 0.02-0.05 of the range (a slow random
  walk: the light changes), 8-bit pixels, a new scene every 100-400 frames;
* ``jpegq`` (images, digits): a photo service storing each upload at 3-5 JPEG qualities
  drawn from 30-90 (``gateway_detection_outside.jpeg``, each channel), classifying
  every version; a tenth of uploads are an earlier photo again;
* ``whatif`` (tables): an analyst rescoring one customer with small edits (a what-if
  slider): 10-40 edits, each one feature moved by 1-5% of the range (a walk, clipped),
  each rescored, a reset to the customer's own row a tenth of the time; then the next;
* ``intcols`` (tables): a form with drop-downs: each row a natural row whose first
  third of columns is rounded to 4 levels (integer / categorical inputs), rows distinct;
  ``decimal1``: distinct natural rows typed to one decimal (every value rounded to 0.1
  of the range);
* ``steady`` (tables): a plant's sensors scored every second: one operating point (a
  natural row) read with each sensor's own noise N(0, s_f), s_f fixed per sensor in
  0.01-0.03 of the range, a new operating point every 50-200 readings (lowlight's table).

Run (parts with ``--only`` / ``--plans`` / ``--clients``)::

    OMP_NUM_THREADS=1 timeout 3000 nice -n 10 env PYTHONPATH=src .venv/bin/python \\
        benchmarks/gateway_detection_redteam12.py --only digits,images --plans white,dirs8,blocks
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
import gateway_detection_long as long  # noqa: E402
import gateway_detection_outside as outside  # noqa: E402
import gateway_detection_realworld as rw  # noqa: E402
import gateway_detection_redteam10 as rt10  # noqa: E402
import gateway_detection_redteam11 as rt11  # noqa: E402
from mlwarden.serve.config import Detection  # noqa: E402
from mlwarden.serve.monitor import Monitor  # noqa: E402

SHAPES = ("white", "dirs8", "dirs16", "dirs20", "blocks", "smooth", "pca", "perfeature", "sparse2")
CLIENTS = ("lowlight", "jpegq", "whatif", "intcols", "decimal1", "steady")
IMAGES, TABLES = rt11.IMAGES, rt11.TABLES
APPLIES = {"blocks": IMAGES, "smooth": IMAGES, "perfeature": TABLES, "sparse2": TABLES, "lowlight": IMAGES,
           "jpegq": IMAGES, "whatif": TABLES, "intcols": TABLES, "decimal1": TABLES, "steady": TABLES} | {
    s: IMAGES | TABLES for s in ("white", "dirs8", "dirs16", "dirs20", "pca")}  # fmt: skip
PUBLIC = 1000  # natural inputs the attacker estimates the data's directions from


# -- noise shapes (each sd per value, root mean square) ---------------------------------
def _in_dirs(basis: np.ndarray, shape: tuple[int, ...], weights: Any = None) -> rt11.Noise:
    """Gaussian noise in the span of ``basis`` (D, k, orthonormal columns), each
    direction's variance proportional to ``weights`` (equal: None), sd per value."""
    d, k = basis.shape
    w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)
    w = np.sqrt(w * d / w.sum())  # E|n|^2 = d sd^2

    def draw(rng: np.random.Generator, sd: float) -> np.ndarray:
        return (basis @ (rng.standard_normal(k) * w * sd)).reshape(shape)

    return draw


def _blocks(shape: tuple[int, ...], grid: int = 4) -> rt11.Noise:
    """Constant on a ``grid`` x ``grid`` of blocks, one value for every channel."""
    h, w = shape[-2:]
    rows, cols = np.arange(h) * grid // h, np.arange(w) * grid // w

    def draw(rng: np.random.Generator, sd: float) -> np.ndarray:
        coarse = rng.normal(0, sd, (grid, grid))
        return np.broadcast_to(coarse[rows][:, cols], shape).copy()

    return draw


def _smooth(shape: tuple[int, ...]) -> rt11.Noise:
    """White noise blurred over a tenth of the side, scaled back to ``sd`` per value."""
    blur = (0,) * (len(shape) - 2) + (shape[-2] / 10, shape[-1] / 10)

    def draw(rng: np.random.Generator, sd: float) -> np.ndarray:
        n = ndimage.gaussian_filter(rng.standard_normal(shape), blur, mode="wrap")
        return np.asarray(n * sd / max(float(n.std()), 1e-12))

    return draw


def _sparse(rng: np.random.Generator, sd: float, d: int, k: int) -> np.ndarray:
    """Noise on ``k`` of ``d`` values drawn afresh, ``sd`` per value over all ``d``."""
    out = np.zeros(d)
    out[rng.choice(d, k, replace=False)] = rng.normal(0, sd * np.sqrt(d / k), k)
    return out


def public(kind: long.Kind, seed: int) -> np.ndarray:
    """``PUBLIC`` natural inputs of the kind, flattened: the attacker's own data."""
    data = np.asarray(kind.data, dtype=np.float64)
    pick = np.random.default_rng(seed).choice(len(data), min(PUBLIC, len(data)), replace=False)
    return data[pick].reshape(len(pick), -1)


def shaped(plan: str, kind: long.Kind, shape: tuple[int, ...], seed: int) -> rt11.Noise | None:
    """The noise of ``plan`` for inputs of ``shape`` (None: white, redteam11's)."""
    d = int(np.prod(shape))
    if plan == "white":
        return None
    if plan.startswith("dirs"):
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, int(plan[4:]))))
        return _in_dirs(q, shape)
    if plan == "blocks":
        return _blocks(shape)
    if plan == "smooth":
        return _smooth(shape)
    if plan == "sparse2":
        return lambda rng, sd: _sparse(rng, sd, d, 2).reshape(shape)
    data = public(kind, seed)
    if plan == "pca":
        _, s, vt = np.linalg.svd(data - data.mean(axis=0), full_matrices=False)
        return _in_dirs(vt[:8].T, shape, s[:8] ** 2)
    std = data.std(axis=0)  # perfeature
    scale = std / np.sqrt(np.mean(std**2))
    return lambda rng, sd: (rng.standard_normal(d) * scale * sd).reshape(shape)


# -- decoys far from the attacked input -------------------------------------------------
@dataclass
class Decoys(rt11.Gate):
    """A :class:`~gateway_detection_redteam11.Gate` whose key sends, before every
    ``mix``-th attack query, one natural input of the benign pool (``decoys``) far from
    the attack's first query: the pool's farthest quarter, each once, farthest first."""

    far: list[int] | None = None

    def _mixed(self) -> bool:
        if not self.queries or self.sent % self.mix:
            return False
        feats, labels, probs = self.decoys
        if self.far is None:
            x0 = self.queries[0].reshape(-1)
            flat = np.asarray(feats, dtype=np.float64).reshape(len(labels), -1)
            dist = ((flat - x0) ** 2).sum(axis=1)
            self.far = np.argsort(-dist)[: len(labels) // 4].tolist()
        i = self.far[self.used_decoys % len(self.far)]
        self.used_decoys += 1
        found = rw._ask(self.mon, self.key, feats, labels, probs, i)
        return bool(found) and self._flag(found, self.sent + 1)


# -- held-out benign clients -----------------------------------------------------------
def lowlight(data: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A fixed camera in low light: one scene under sensor noise of 0.02-0.05 (a slow
    walk), 8-bit; a new scene every 100-400 frames."""
    out: list[np.ndarray] = []
    s = rng.uniform(0.02, 0.05)
    while len(out) < n:
        scene = np.asarray(data[int(rng.integers(len(data)))], dtype=np.float64)
        for _ in range(int(rng.integers(100, 401))):
            s = float(np.clip(s + rng.normal(0, 0.001), 0.02, 0.05))
            out.append(rt10._eight_bit(scene + rng.normal(0, s, scene.shape)))
    return np.stack(out[:n]).astype(np.float32)


def jpegq(data: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Each upload stored and classified at 3-5 JPEG qualities of 30-90; a tenth of
    uploads an earlier photo again."""
    out: list[np.ndarray] = []
    seen: list[int] = []
    while len(out) < n:
        again = seen and rng.random() < 0.1
        i = seen[int(rng.integers(len(seen)))] if again else int(rng.integers(len(data)))
        seen.append(i)
        im = np.clip(np.asarray(data[i], dtype=np.float64), 0, 1)
        for q in rng.uniform(30, 90, int(rng.integers(3, 6))):
            out.append(np.stack([outside.jpeg(c, float(q)) for c in im]))
    return np.stack(out[:n]).astype(np.float32)


def whatif(data: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """One customer rescored under 10-40 small edits (one feature by 1-5% of the range,
    a walk, a reset a tenth of the time), then the next customer (rows in [0, 1])."""
    out: list[np.ndarray] = []
    while len(out) < n:
        own = np.asarray(data[int(rng.integers(len(data)))], dtype=np.float64)
        row = own.copy()
        out.append(row.copy())
        for _ in range(int(rng.integers(10, 41))):
            if rng.random() < 0.1:
                row = own.copy()
            else:
                f = int(rng.integers(len(row)))
                row[f] = np.clip(row[f] + rng.choice([-1, 1]) * rng.uniform(0.01, 0.05), 0, 1)
            out.append(row.copy())
    return np.stack(out[:n]).astype(np.float32)


def intcols(data: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct natural rows, the first third of their columns rounded to 4 levels."""
    rows = np.asarray(data, dtype=np.float64)[rng.choice(len(data), n, replace=len(data) < n)]
    k = max(1, rows.shape[1] // 3)
    rows[:, :k] = np.round(rows[:, :k] * 3) / 3
    return rows.astype(np.float32)


def decimal1(data: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct natural rows, every value rounded to 0.1 of the range."""
    rows = np.asarray(data, dtype=np.float64)[rng.choice(len(data), n, replace=len(data) < n)]
    return (np.round(rows * 10) / 10).astype(np.float32)


def steady(data: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A plant's sensor rows: an operating point read with each sensor's noise (0.01-0.03
    of the range, fixed per sensor), a new point every 50-200 readings (rows in [0, 1])."""
    data = np.asarray(data, dtype=np.float64)
    noise = rng.uniform(0.01, 0.03, data.shape[1])
    out: list[np.ndarray] = []
    while len(out) < n:
        point = data[int(rng.integers(len(data)))]
        for _ in range(int(rng.integers(50, 201))):
            out.append(np.clip(point + rng.normal(0, noise), 0, 1))
    return np.stack(out[:n]).astype(np.float32)


def benign(kind: long.Kind, det: Detection, client: str, n: int, seed: int) -> dict[str, Any]:
    """A client's ``n`` queries on a fresh key of a fresh gateway: flagged per 1,000."""
    rng = np.random.default_rng(seed)
    make = {"lowlight": lowlight, "jpegq": jpegq, "whatif": whatif, "intcols": intcols,
            "decimal1": decimal1, "steady": steady}[client]  # fmt: skip
    xs = make(np.asarray(kind.data), n, rng)
    return rw.feed(kind, det, kind.monitor(det), xs, [0] * n)


# -- runs and tables -------------------------------------------------------------------
def run_shaped(name: str, kind: long.Kind, det: Detection, plan: str, run: int,
               target: Monitor, make: Any, args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """One ``oars-blind`` run of ``plan``'s noise (fixed for the run: its own seed)."""
    x0, _ = rw._target(kind, run)
    noise = shaped(plan, kind, tuple(np.shape(x0)), 500 + run)
    mix, gate = (args.decoys, Decoys) if args.decoys else (args.mix, rt11.Gate)
    return rt11.run_oars(kind, det, "oars-blind", run, args.budget, target, make,
                         name == "digits", mix, noise, gate, args.own_secret)  # fmt: skip


def run_kind(name: str, kind: long.Kind, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    det, summary, make = rt11.setting(name, kind, args.calib_sigma, bool(args.mix))
    print(f"{name}: {json.dumps(summary)}", flush=True)
    row: dict[str, Any] = {"calibration": summary}
    for client in args.clients:
        if name in APPLIES[client]:
            row[client] = [benign(kind, det, client, args.n, s) for s in args.seeds]
            print(f"{name} {client}: {json.dumps(row[client])}", flush=True)
    plans = [p for p in args.plans if name in APPLIES[p]]
    target = make() if plans else None
    for plan in plans:
        for run in range(args.runs):
            res = run_shaped(name, kind, det, plan, run, target, make, args)
            row.setdefault(plan, []).append(res)
            print(f"{name} {plan} run {run}: {json.dumps(res)}", flush=True)
    row["seconds"] = round(time.time() - t0)
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    rw.add_common_args(ap, "digits,images", "digits, images, mnist28, tabular, breast cancer, "
                       "wine", CLIENTS, SHAPES, "not used here")  # fmt: skip
    ap.add_argument("--calib-sigma", type=float, help="calibrate against a search of this "
                    "noise (gateway calibrate --sigma; digits too, else its defaults)")  # fmt: skip
    ap.add_argument("--mix", type=int, default=0, help="distinct benign queries the attack "
                    "key sends before each attack query (redteam11's)")  # fmt: skip
    ap.add_argument("--decoys", type=int, default=0, help="one far natural input before every "
                    "K-th attack query")  # fmt: skip
    ap.add_argument("--own-secret", action="store_true", help="the attacker's gateway on "
                    "another sketch secret (default: the target's)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.profile or (args.mix and args.decoys):
        raise SystemExit("--profile: not used here; --mix and --decoys: one at a time")
    rw.parse_common(args, CLIENTS, SHAPES)  # every gateway on --secret-seed's secret
    rt11.SECRET_SEED = args.secret_seed
    results: dict[str, Any] = {}
    for name, kind in rt11.kinds(set(args.only.split(","))).items():
        results[name] = run_kind(name, kind, args)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    rt11.table(results, args.budget, SHAPES, "noise", CLIENTS)
    return results


if __name__ == "__main__":
    main()
