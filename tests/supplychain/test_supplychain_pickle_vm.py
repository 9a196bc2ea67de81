"""The symbolic pickle machine: imports through the memo, calls, anomalies."""

from __future__ import annotations

import os
import pickle
import struct

from corpus import Reducer, call2, call4, g, su, u

from mlwarden.supplychain import scan_bytes


def globals_of(data: bytes) -> set[str | None]:
    return {i.global_ for i in scan_bytes(data).findings if i.global_}


def messages(data: bytes) -> str:
    return " | ".join(i.message for i in scan_bytes(data).findings)


def test_stack_global_resolves_strings_stored_in_the_memo() -> None:
    data = b"\x80\x04" + su("os") + b"\x94" + su("system") + b"\x94" + b"00h\x00h\x01\x93)R."
    assert globals_of(data) == {"os.system"}


def test_stack_global_with_unknown_operands_is_suspicious() -> None:
    data = b"\x80\x04" + su("os") + b"K\x01\x93."
    r = scan_bytes(data)
    assert r.verdict.value == "suspicious"
    assert "cannot be checked" in messages(data)


def test_every_protocol_of_the_real_pickler_parses_safe() -> None:
    obj = {"a": [1, 2.5, "x", b"y", None, True], "b": (1, 2), "c": {3}, "d": frozenset({4})}
    for proto in range(6):
        r = scan_bytes(pickle.dumps(obj, protocol=proto))
        assert r.verdict.value == "safe", (proto, r.findings, r.error)


def test_call_message_shows_the_arguments() -> None:
    assert "os.system('id')" in messages(call2("os", "system", "id"))


def test_unknown_global_is_suspicious_not_safe() -> None:
    r = scan_bytes(call2("mypkg.models", "Net"))
    assert r.verdict.value == "suspicious"
    assert r.findings[0].rule == "MLW-SCN-002"


def test_proto_in_the_middle_is_an_anomaly() -> None:
    r = scan_bytes(b"\x80\x02N0\x80\x02N.")
    assert r.verdict.value == "suspicious"
    assert "PROTO opcode in the middle" in r.findings[0].message


def test_frame_length_that_disagrees_with_data_is_an_anomaly() -> None:
    body = su("x") + b"."
    data = b"\x80\x04\x95" + struct.pack("<Q", 1) + body
    assert "FRAME" in messages(data)
    assert scan_bytes(data).verdict.value != "safe"


def test_real_framed_pickle_has_no_frame_anomaly() -> None:
    data = pickle.dumps(list(range(100_000)), protocol=4)
    assert scan_bytes(data).verdict.value == "safe"


def test_truncated_stream_is_an_error() -> None:
    r = scan_bytes(pickle.dumps({"a": 1}, protocol=2)[:-3])
    assert r.verdict.value == "error"
    assert [i.rule for i in r.findings] == ["MLW-SCN-004"]


def test_unknown_opcode_is_never_safe() -> None:
    assert scan_bytes(b"\x80\x02N\xff.").verdict.value != "safe"


def test_payload_before_an_unknown_opcode_is_still_unsafe() -> None:
    assert scan_bytes(call2("os", "system", "id")[:-1] + b"\xfe").verdict.value == "unsafe"


def test_second_pickle_in_a_stream_is_scanned() -> None:
    data = pickle.dumps([1, 2], protocol=2) + call4("subprocess", "run", "id")
    assert globals_of(data) == {"subprocess.run"}


def test_huge_memo_index_is_a_blow_up() -> None:
    data = b"\x80\x02Nr\xff\xff\xff\x7f."
    assert "memo index" in messages(data)
    assert scan_bytes(data).verdict.value == "suspicious"


def test_get_of_missing_memo_index_fails_closed() -> None:
    assert scan_bytes(b"\x80\x02h\x05.").verdict.value != "safe"


def test_length_larger_than_the_stream_is_never_safe() -> None:
    data = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"."
    assert scan_bytes(data).verdict.value != "safe"


def test_build_on_an_imported_class_is_unsafe() -> None:
    data = b"\x80\x02" + g("collections", "OrderedDict") + b"}" + u("x") + b"K\x01sb."
    r = scan_bytes(data)
    assert r.verdict.value == "unsafe"
    assert "BUILD" in r.findings[0].message


def test_reduce_on_a_non_imported_value_is_an_anomaly() -> None:
    data = b"\x80\x02" + g("collections", "OrderedDict") + b")R)R."
    assert "not an imported name" in messages(data)


def test_large_payloads_are_skipped_not_kept() -> None:
    blob = b"\x00" * (1 << 20)
    data = pickle.dumps({"w": blob}, protocol=4)
    r = scan_bytes(data)
    assert r.verdict.value == "safe"


def test_python2_module_names_are_normalised() -> None:
    assert globals_of(g("__builtin__", "eval") + b"(S'1'\ntR.") == {"builtins.eval"}


def test_dotted_name_walking_a_dunder_is_unsafe() -> None:
    data = b"\x80\x04" + su("collections") + su("OrderedDict.__init__.__globals__") + b"\x93."
    assert scan_bytes(data).verdict.value == "unsafe"


def test_memo_stays_bounded_and_evicted_imports_fail_closed(monkeypatch) -> None:
    from mlwarden.supplychain import pickle_vm

    monkeypatch.setattr(pickle_vm, "MEMO_KEEP", 4)
    monkeypatch.setattr(pickle_vm, "MEMO_HARD", 4)
    fill = b"".join(b"K\x01\x940" for _ in range(10))  # ten memoized ints
    data = b"\x80\x04" + fill + su("os") + b"\x94" + su("system") + b"\x94" + b"00h\x0ah\x0b\x93)R."
    r = scan_bytes(data)
    assert r.verdict.value != "safe"
    assert "cannot be checked" in messages(data)


def test_many_memo_entries_of_a_real_pickle_stay_safe(monkeypatch) -> None:
    from mlwarden.supplychain import pickle_vm

    monkeypatch.setattr(pickle_vm, "MEMO_KEEP", 100)
    monkeypatch.setattr(pickle_vm, "MEMO_HARD", 200)
    data = pickle.dumps({f"k{i}": [i, str(i)] for i in range(2000)}, protocol=4)
    assert scan_bytes(data).verdict.value == "safe"


def _getattr_pickle(*calls: tuple[str, str, str], extra: bytes = b"") -> bytes:
    """Protocol 2: getattr imported once (memo 0), then getattr(module.cls, attr)() calls."""
    body = b"\x80\x02" + g("builtins", "getattr") + b"q\x00"
    for module, cls, attr in calls:
        body += b"h\x00" + g(module, cls) + u(attr) + b"\x86R)R0"
    return body + extra + b"N."


def test_getattr_of_an_allowed_method_resolves_to_that_name() -> None:
    import zoneinfo

    for proto in (2, 4, 5):
        assert (
            scan_bytes(pickle.dumps(zoneinfo.ZoneInfo("UTC"), protocol=proto)).verdict.value
            == "safe"
        )
    assert (
        scan_bytes(_getattr_pickle(("zoneinfo", "ZoneInfo", "_unpickle"))).verdict.value == "safe"
    )


def test_getattr_that_does_not_resolve_to_an_allowed_name_is_unsafe() -> None:
    for calls in (
        [("zoneinfo", "ZoneInfo", "__init__")],  # dunder
        [("collections", "OrderedDict", "fromkeys")],  # not listed
        [("os", "path", "join")],  # module not allowed
        [("zoneinfo", "ZoneInfo", "_unpickle"), ("zoneinfo", "ZoneInfo", "clear_cache")],
    ):
        r = scan_bytes(_getattr_pickle(*calls))
        assert r.verdict.value == "unsafe", calls
        assert "builtins.getattr" in {i.global_ for i in r.findings}


def test_getattr_imported_but_never_called_or_handed_on_is_unsafe() -> None:
    assert scan_bytes(_getattr_pickle()).verdict.value == "unsafe"
    handed = _getattr_pickle(
        ("zoneinfo", "ZoneInfo", "_unpickle"),
        extra=g("collections", "OrderedDict") + b"h\x00\x85R0",
    )
    assert scan_bytes(handed).verdict.value == "unsafe"
    truncated = _getattr_pickle(("zoneinfo", "ZoneInfo", "_unpickle"))[:-2]
    assert scan_bytes(b"\x80\x02" + g("builtins", "getattr") + b"q\x00").verdict.value == "unsafe"
    assert scan_bytes(truncated).verdict.value == "error"


def test_int_and_long_lines_are_read_as_cpython_reads_them() -> None:
    from mlwarden.supplychain.pickle_vm import _c_int, _c_long

    lines = [b"0x10", b"010", b"08", b"", b"  12", b"12 ", b"-0x1F", b"1_000", b"+5", b"0x"]
    lines += [b"9" * 30, b" ", b"abc", b"0b101", b"0o17", b"1e3", b"-0", b"0X7f", b"\t3"]
    for op, parse in ((b"I", _c_int), (b"L", _c_long)):
        for line in lines + [x + b"L" for x in lines]:
            try:
                want = pickle.loads(op + line + b"\n.")
            except Exception:
                want = None
            if want is not None and not isinstance(want, bool):
                assert parse(line) == want, (op, line)
            elif want is None:
                assert parse(line) is None, (op, line)


def test_hex_int_does_not_hide_a_later_import_as_text() -> None:
    data = b"I0x10\n0cos\nsystem\n(S'true'\ntR."
    assert scan_bytes(data).verdict.value == "unsafe"


def test_protocol_0_pickle_after_the_first_is_scanned() -> None:
    first = pickle.dumps({"a": 1}, protocol=2)
    r = scan_bytes(first + b"cos\nsystem\n(S'true'\ntR.")
    assert r.verdict.value == "unsafe"
    assert any(i.global_ == "os.system" for i in r.findings)
    # text after a pickle stays a note; an import in broken trailing data is kept
    assert scan_bytes(first + b"hello world\n").verdict.value == "safe"
    cut = scan_bytes(first + b"cos\nsystem\n(S'tr")
    assert cut.verdict.value == "unsafe"


def _legacy_evil(pad: int) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(
        {"x": Reducer(os.system, ("true",)), "pad": torch.zeros(pad)},
        buf,
        _use_new_zipfile_serialization=False,
    )
    return buf.getvalue()


def test_tensor_bytes_in_protocol_0_to_2_are_scanned() -> None:
    import torch

    for proto in (0, 1, 2):
        for size in (2, 5000):  # kept as a string / read by the payload hook
            data = pickle.dumps({"w": torch.ones(size)}, protocol=proto)
            assert scan_bytes(data).verdict.value == "safe", (proto, size)
    for pad in (2, 5000):
        text = _legacy_evil(pad).decode("latin-1")
        for proto in (0, 1, 2):
            r = scan_bytes(_encode_call(text, proto))
            assert r.verdict.value == "unsafe", (pad, proto)
            assert any(
                "posix.system" in (i.global_ or "") or "os.system" in (i.global_ or "")
                for i in r.findings
            )


def _encode_call(text: str, proto: int) -> bytes:
    """loader(_codecs.encode(text, 'latin1')) as protocol 2 (TUPLE2) or 0/1 (MARK..TUPLE)."""
    raw = text.encode()
    string = b"X" + struct.pack("<I", len(raw)) + raw
    latin = b"X\x06\x00\x00\x00latin1"
    head = b"\x80\x02" + g("torch.storage", "_load_from_bytes") + g("_codecs", "encode")
    if proto == 2:
        return head + string + latin + b"\x86R\x85R."
    return (
        b"\x80\x02"
        + g("torch.storage", "_load_from_bytes")
        + b"("
        + g("_codecs", "encode")
        + b"("
        + string
        + latin
        + b"tRtR."
    )


def test_encoded_text_that_is_not_latin1_bytes_is_not_scanned() -> None:
    r = scan_bytes(_encode_call("\u20ac" * 5000, 2))
    assert r.verdict.value == "unsafe"
    assert "could not be scanned" in " ".join(i.message for i in r.findings)
