"""Property tests: no input crashes the scanner; damaged malicious files never pass.

Truncated malicious files must never be safe. A randomly mutated one may lose its
payload altogether (a flipped opcode), so for mutants the oracle is the real
unpickler: whenever the scanner calls a mutant safe, loading it with
``pickle.loads`` in a subprocess must not fire the canary.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

from corpus import Reducer, _torch_zip, call2, call4, g, su, u
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlwarden.supplychain import scan_bytes

CANARY = Path(os.environ.get("TMPDIR", "/tmp")) / f"mlwarden-mutation-canary-{os.getpid()}"
SH = f"touch {CANARY}"

PICKLES = [
    call2("os", "system", SH),
    call4("subprocess", "run", SH),
    b"\x80\x04"
    + su("os")
    + b"\x94"
    + su("system")
    + b"\x94"
    + b"00h\x00h\x01\x93"
    + u(SH)
    + b"\x85R.",
    g("os", "system") + b"(S'" + SH.encode() + b"'\ntR.",
    pickle.dumps(Reducer(os.system, (SH,)), protocol=0),
    pickle.dumps({"w": [1.0] * 50, "x": Reducer(os.system, (SH,))}, protocol=4),
]
CONTAINERS = [_torch_zip(PICKLES[0])]
_buf = io.BytesIO()
with zipfile.ZipFile(_buf, "w", zipfile.ZIP_DEFLATED) as _z:
    _z.writestr("archive/data.pkl", PICKLES[1])
CONTAINERS.append(_buf.getvalue())

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def loads_fires_canary(data: bytes) -> bool:
    code = "import pickle,sys\ntry:\n pickle.loads(sys.stdin.buffer.read())\nexcept Exception:\n pass\n"
    subprocess.run([sys.executable, "-c", code], input=data, timeout=30, capture_output=True)
    fired = CANARY.exists()
    CANARY.unlink(missing_ok=True)
    return fired


@SETTINGS
@given(st.binary(max_size=4096))
def test_random_bytes_never_crash(data: bytes) -> None:
    result = scan_bytes(data)
    assert result.verdict.value in ("safe", "suspicious", "unsafe", "error", "unknown")


@SETTINGS
@given(
    st.sampled_from(
        [b"\x80\x04", b"\x80\x02", b"PK\x03\x04", b"\x93NUMPY\x01\x00", b"\x1f\x8b", b"(", b"c"]
    ),
    st.binary(max_size=2048),
)
def test_random_bodies_behind_real_magic_never_crash(magic: bytes, body: bytes) -> None:
    assert scan_bytes(magic + body).verdict.value in (
        "safe",
        "suspicious",
        "unsafe",
        "error",
        "unknown",
    )


BINARY = [p for p in PICKLES if p.startswith(b"\x80")] + CONTAINERS
TEXT = [p for p in PICKLES if not p.startswith(b"\x80")]


@SETTINGS
@given(st.sampled_from(BINARY), st.data())
def test_truncated_malicious_file_is_never_safe(sample: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(sample) - 1))
    assert scan_bytes(sample[:cut]).verdict.value != "safe"


@SETTINGS
@given(st.sampled_from(TEXT), st.data())
def test_truncated_protocol0_pickle_is_safe_only_before_any_import(
    sample: bytes, data: st.DataObject
) -> None:
    # protocol 0 is text: a prefix cut inside its first opcode reads as a line of text
    cut = data.draw(st.integers(0, len(sample) - 1))
    if scan_bytes(sample[:cut]).verdict.value == "safe":
        assert cut <= sample.index(b"\n", sample.index(b"\n") + 1)


@SETTINGS
@given(st.sampled_from(PICKLES), st.data())
def test_mutated_malicious_pickle_is_never_safe_while_still_malicious(
    sample: bytes, data: st.DataObject
) -> None:
    buf = bytearray(sample)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        i = data.draw(st.integers(0, len(buf) - 1))
        if kind == "flip":
            buf[i] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            buf.insert(i, data.draw(st.integers(0, 255)))
        elif len(buf) > 1:
            del buf[i]
    mutant = bytes(buf)
    if scan_bytes(mutant).verdict.value == "safe":
        assert not loads_fires_canary(mutant), mutant


@SETTINGS
@given(st.sampled_from(CONTAINERS), st.data())
def test_mutated_containers_never_crash(sample: bytes, data: st.DataObject) -> None:
    buf = bytearray(sample)
    for _ in range(data.draw(st.integers(1, 8))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    assert scan_bytes(bytes(buf)).verdict.value in (
        "safe",
        "suspicious",
        "unsafe",
        "error",
        "unknown",
    )


def test_canary_never_fired() -> None:
    assert not CANARY.exists()
