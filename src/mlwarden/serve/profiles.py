"""Per-key detection profiles: a benign workload the operator declares, and what it costs.

Some real clients send queries that are near each other *and move*, which is what a
search looks like to a stream detector: a fixed camera whose light drifts through the
day (session 9's realworld benchmark: 992 of 1,000 frames flagged with lighting drift
alone). No rule over every key can excuse such a client without excusing the search
shaped like it, so the excuse is per key, declared in the config
(``keys.NAME.profile``, ``mlwarden gateway add-key NAME --profile camera``), reported by
``gateway check`` (MLW-GW-016) with the risk it takes, and never applied to another key.

Profiles (:data:`PROFILES`):

* ``camera`` — a fixed camera: its frames' brightness and contrast drift (a gain and an
  offset of the whole input, ``x -> a x + b``). The still-ball rule
  (:mod:`mlwarden.serve.stationary`) judges the key's clouds after removing, from every
  row, its projection on the cloud's mean row and on the directions an offset and a
  gain take in the detectors' representation (:func:`unlit`): a drifting light is then
  one scene resent with noise, while a search's steps (a block here, another there)
  keep all but those two or three directions of their drift. **Risk**: a search along
  brightness and contrast alone (two numbers a query) is a still ball on such a key and
  goes unflagged; every other search is judged as on any key.

Example::

    rows = scene * rng.uniform(0.9, 1.1, (40, 1)) + rng.normal(0, 0.01, (40, 128))
    unlit(rows, np.ones((1, 128)))   # the noise alone: a still ball
"""

from __future__ import annotations

import numpy as np

#: profile name -> (what the key's client is, the risk the operator takes)
PROFILES: dict[str, tuple[str, str]] = {
    "camera": (
        "a fixed camera whose lighting drifts (brightness and contrast of the whole input)",
        "a search along brightness and contrast alone (a gain and an offset of the whole "
        "input) is not flagged on this key",
    ),
}


def lighting_directions(dims: int, mean: np.ndarray | None = None,
                        axes: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """The fixed directions (k, dims) a whole-input offset takes in the detectors' vectors:
    every block mean alike (``ones``); with ``similarity.projection`` (``mean``, ``axes``
    (values, dims)), ``ones`` projected, and the projection's mean projected (a gain
    ``a v`` moves ``(v - mean) @ axes`` along the row itself and along ``mean @ axes``).
    A gain's own direction, the scene, is each cloud's mean row (:func:`unlit`)."""
    if axes is None or mean is None:
        return np.ones((1, dims), dtype=np.float64)
    ones = np.ones(len(mean), dtype=np.float64)
    return np.stack([ones @ axes, np.asarray(mean, dtype=np.float64) @ axes])


def unlit(rows: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """``rows`` (n, dims) without what a change of light explains: their components along
    their own mean row and along ``fixed`` (k, dims), a gain ``a x`` and an offset ``x + b``
    of one scene (orthogonal projection, a QR basis), then per value the least-squares fit
    of a quadratic in each row's own gain (its projection on the mean row, centred):
    highlights that saturate and 8-bit steps bend a gain's straight line (a camera's
    frames under lighting drift alone: 70% of its clouds read as moving with the
    projection only, 5% with the fit; ``docs/benchmarks/gateway.md``)."""
    x = np.asarray(rows, dtype=np.float64)
    centre = x.mean(axis=0)
    basis = np.concatenate([centre[None], fixed]).T
    q, r = np.linalg.qr(basis)
    q = q[:, np.abs(np.diag(r)) > 1e-9 * max(float(np.abs(r).max()), 1e-30)]
    rest = x - (x @ q) @ q.T
    gain = (x - centre) @ centre / max(float(centre @ centre), 1e-30)
    gain -= gain.mean()
    bend = np.stack([gain, gain * gain - float(np.mean(gain * gain))], axis=1)
    coef, *_ = np.linalg.lstsq(bend, rest - rest.mean(axis=0), rcond=None)
    return rest - bend @ coef
