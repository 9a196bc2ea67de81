"""Run a detection benchmark with the monitor handed each text, as the gateway does.

Since session 9 (issue 19) ``Gateway.infer`` passes a text model's texts to
``Monitor.submit`` (typing chains, :class:`mlwarden.serve.text.TypingChain`); the
detection benchmarks hand ``Monitor.inspect`` the MinHash features only. This wrapper
records each text's feature row when a ``gateway_detection_long.Kind`` computes
features and hands the texts to ``inspect`` on text monitors (rows it did not compute,
such as calibration's own streams, go without, as before). ``OFF=1``: hand none (the
benchmark as it is). Example::

    PYTHONPATH=src python benchmarks/gateway_with_texts.py \\
        benchmarks/gateway_detection_realworld.py --only text --clients typing --plans none
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import gateway_detection_long as long  # noqa: E402
from mlwarden.serve import monitor  # noqa: E402

TEXTS: dict[bytes, str] = {}
_feats = long.Kind.feats
_inspect = monitor.Monitor.inspect


def _key(row: np.ndarray) -> bytes:
    return np.ascontiguousarray(row, dtype=np.float32).tobytes()


def feats(self: long.Kind, det: Any, xs: Any) -> np.ndarray:
    out = _feats(self, det, xs)
    if self.modality == "text":
        TEXTS.update((_key(row), str(t)) for row, t in zip(out, list(xs), strict=True))
    return out


def inspect(self: monitor.Monitor, key: str, x: np.ndarray, labels: np.ndarray,
            *rest: Any, **kw: Any) -> dict[str, list[int]]:  # fmt: skip
    if self.text and not os.environ.get("OFF") and "texts" not in kw:
        texts = [TEXTS.get(_key(r)) for r in x]
        if None not in texts:
            kw["texts"] = texts
    return _inspect(self, key, x, labels, *rest, **kw)


if __name__ == "__main__":
    long.Kind.feats = feats  # type: ignore[method-assign]
    monitor.Monitor.inspect = inspect  # type: ignore[method-assign]
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
