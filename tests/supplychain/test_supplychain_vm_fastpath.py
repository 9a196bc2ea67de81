"""The pickle machine's inlined loop agrees with its plain handler-per-opcode loop.

``PickleMachine._run`` runs the frequent opcodes inline for speed and hands the rest to
the opcode handlers; ``run_reference`` runs every opcode through its handler. Both must
give the same verdict, findings (rule, severity, message, global, offset, member),
format and error on every file: the two corpora, real pickles of many shapes, and
random mutations and truncations of them (hypothesis).
"""

from __future__ import annotations

import collections
import datetime
import pickle
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from corpus import Case, call2, su, u
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlwarden.supplychain import pickle_vm as vm
from mlwarden.supplychain import scan_bytes, scan_file
from mlwarden.supplychain.results import FileResult


@contextmanager
def reference_loop() -> Iterator[None]:
    inlined = vm.PickleMachine.run
    vm.PickleMachine.run = vm.PickleMachine.run_reference  # type: ignore[method-assign]
    try:
        yield
    finally:
        vm.PickleMachine.run = inlined  # type: ignore[method-assign]


def outcome(result: FileResult) -> dict[str, Any]:
    return {**result.to_dict(), "error": result.error}


def both(scan: Callable[[], FileResult]) -> tuple[dict[str, Any], dict[str, Any]]:
    fast = outcome(scan())
    with reference_loop():
        plain = outcome(scan())
    return fast, plain


def test_the_reference_loop_is_really_swapped_in() -> None:
    calls = []
    original = vm.PickleMachine._run_reference

    def spy(self: vm.PickleMachine) -> Any:
        calls.append(1)
        return original(self)

    vm.PickleMachine._run_reference = spy  # type: ignore[method-assign]
    try:
        with reference_loop():
            scan_bytes(pickle.dumps([1, 2, 3]))
    finally:
        vm.PickleMachine._run_reference = original  # type: ignore[method-assign]
    assert calls


def test_corpora_agree(malicious: list[Case], benign: list[Path]) -> None:
    paths = [c.path for c in malicious] + benign
    for path in paths:
        fast, plain = both(lambda p=path: scan_file(p))  # type: ignore[misc]
        assert fast == plain, path.name


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


REAL = [
    pickle.dumps(obj, protocol=proto)
    for proto in range(6)
    for obj in (
        {"a": [1, 2.5, "x" * 300, b"y" * 70000, None, True, False], "b": (1, 2, (3,))},
        [{"k": i, "v": -i * 70000, "s": f"s{i % 7}"} for i in range(300)],
        collections.OrderedDict((f"layer{i}.weight", (i, 2**40, 1.5)) for i in range(40)),
        {frozenset({1, 2}), (None,), "é中😀", 10**30},
        datetime.datetime(2026, 12, 5, 1, 2, 3),
        np.arange(12, dtype=np.float32).reshape(3, 4),
        [Point(1), Point(2)],
    )
]
REAL.append(call2("os", "system", "echo hi"))
# a call whose arguments are numbers of every encoding (they appear in the finding)
REAL.append(
    b"\x80\x02cos\nsystem\n(G\x3f\xf8\x00\x00\x00\x00\x00\x00K\x07M\x01\x02J\xff\xff\xff\xff"
    b"\x8a\x02\x00\x80\x88\x89Ntq\x00R."
)
REAL.append(b"\x80\x04" + su("os") + b"\x94" + su("system") + b"\x94" + b"00h\x00h\x01\x93)R.")


def test_real_pickles_agree() -> None:
    for data in REAL:
        fast, plain = both(lambda d=data: scan_bytes(d))  # type: ignore[misc]
        assert fast == plain


def test_frames_and_big_memo_indices_agree() -> None:
    body = su("x") + b"r" + struct.pack("<I", 3_000_000) + b"."
    for data in (
        b"\x80\x04\x95" + struct.pack("<Q", 1) + su("x") + b".",  # opcode crosses the frame
        b"\x80\x04\x95" + struct.pack("<Q", 50) + su("x") + b".",  # STOP inside the frame
        b"\x80\x04" + body,  # LONG_BINPUT far beyond the memo
        b"\x80\x04" + b"(" * 5000 + b".",  # unclosed marks
    ):
        fast, plain = both(lambda d=data: scan_bytes(d))  # type: ignore[misc]
        assert fast == plain


def test_stack_depth_limit_holds_in_the_inlined_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vm, "MAX_STACK", 20_000)
    data = b"\x80\x04" + b"N" * 30_000 + b"."
    fast, plain = both(lambda: scan_bytes(data))
    assert fast["verdict"] == plain["verdict"] == "error"
    assert "stack deeper than" in (fast["error"] or "")


SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@SETTINGS
@given(st.sampled_from(REAL), st.data())
def test_mutated_pickles_agree(sample: bytes, data: st.DataObject) -> None:
    buf = bytearray(sample)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(buf) - 1))
        buf[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(buf)))
    mutant = bytes(buf[:cut])
    fast, plain = both(lambda: scan_bytes(mutant))
    assert fast == plain


@SETTINGS
@given(st.binary(min_size=1, max_size=600))
def test_random_bytes_agree(body: bytes) -> None:
    for data in (body, b"\x80\x04" + body, b"\x80\x02" + body):
        fast, plain = both(lambda d=data: scan_bytes(d))  # type: ignore[misc]
        assert fast == plain


def test_memo_eviction_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    # small memo bounds, so the eviction regime is reached by small pickles
    monkeypatch.setattr(vm, "MEMO_KEEP", 50)
    monkeypatch.setattr(vm, "MEMO_HARD", 120)
    big = {f"key{i}": [i, float(i), "v" * (i % 300)] for i in range(200)}
    late_import = (
        b"\x80\x04"
        + b"".join(su(f"s{i}") + b"\x94" + b"0" for i in range(130))
        + su("os")
        + b"\x94"
        + su("system")
        + b"\x94"
        + b"0"
        + b"r"
        + struct.pack("<I", 130)
        + b"r"
        + struct.pack("<I", 131)
        + b"j"
        + struct.pack("<I", 130)
        + b"j"
        + struct.pack("<I", 131)
        + b"\x93)R."
    )
    # after eviction MEMOIZE numbers entries by the count stored, not the entries kept
    numbered = (
        b"\x80\x04"
        + b"".join(u("x" * 300) + b"\x94" for i in range(60))  # no handler opcode between
        + su("os")
        + b"\x94"
        + su("system")
        + b"\x94"
        + b"h\x3ch\x3d"  # BINGET 60, BINGET 61
        + b"\x93)R."
    )
    assert "calls os.system" in " ".join(i.message for i in scan_bytes(numbered).findings)
    for data in (
        numbered,
        *(pickle.dumps(big, protocol=p) for p in range(6)),
        pickle.dumps([Point(i) for i in range(150)], protocol=2),
        late_import,
    ):
        fast, plain = both(lambda d=data: scan_bytes(d))  # type: ignore[misc]
        assert fast == plain
    assert scan_bytes(late_import).verdict.value != "safe"
