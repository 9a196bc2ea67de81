"""The pickle-polyglot probe: a file of another format run through the pickle machine
when an unpickler would start on its first byte (media signatures, GGUF, TensorFlow
files, the formats table), and the rules for telling where the machine stopped at one of
its own limits (an unpickler would read on: never data, never text).

Example::

    polyglot_pickle(src, sink, "a complete pickle wearing a PNG signature")  # None: no pickle
"""

from __future__ import annotations

import re

from mlwarden.core.severity import Severity
from mlwarden.supplychain.limits import ScanLimit
from mlwarden.supplychain.pickle_vm import (
    _PLAUSIBLE_FIRST,
    MAX_STR,
    PickleError,
    _c_int,
    _c_long,
    scan_pickle_stream,
)
from mlwarden.supplychain.results import Sink
from mlwarden.supplychain.stream import Source, Truncated

#: Failures where the pickle machine stopped at one of its own limits (a line too long to
#: hold, a stack or MARK blow-up), not at bytes an unpickler rejects: ``pickle.load`` would
#: read on, so the rest of the stream is unanalysed and the data can never pass as text.
_LIMIT_FAILURE = re.compile(r"blow-up|nested too deeply|line longer than (\d+) bytes")


def stopped_at_limit(exc: Exception) -> bool:
    """The machine stopped at one of its own limits, where an unpickler reads on."""
    m = _LIMIT_FAILURE.search(str(exc))
    if m is None:
        return False
    # module and attribute names are read up to MAX_STR: no importable name is longer, so
    # an unpickler fails on such a line too
    return m.group(1) is None or int(m.group(1)) > MAX_STR


def limit_error(exc: Exception) -> ScanLimit:
    """The error for a stream the machine could not follow to its end."""
    return ScanLimit(f"{exc}; an unpickler would read on, so the rest was not analysed")


_NUMBER_FAILURE = re.compile(r"\b(INT|LONG) with a malformed number \(offset (\d+)\)")


def unpickler_reads_number(src: Source, exc: Exception) -> bool:
    """The machine rejected an INT/LONG line that CPython's unpickler reads (it parses them
    in base 0: ``I0x10`` is 16), so an unpickler would go on past the point of failure."""
    m = _NUMBER_FAILURE.search(str(exc))
    if m is None:
        return False
    at = int(m.group(2)) + 1 - src.base
    if not 0 <= at < len(src.buf):
        return True  # the line is no longer at hand: cannot tell, so never text
    end = src.buf.find(b"\n", at)
    line = src.buf[at : end if end >= 0 else len(src.buf)]
    parse = _c_int if m.group(1) == "INT" else _c_long  # the unpickler's own rules
    return parse(line) is not None


def polyglot_pickle(src: Source, sink: Sink, message: str) -> str | None:
    """Run a file of another format through the pickle machine when an unpickler would
    start on its first byte: imports met on the way are kept (an unpickler runs everything
    before the point where it fails); a complete pickle is reported with ``message`` (a
    polyglot) and its format returned; None when it is no pickle. Where the machine
    stopped at one of its own limits an unpickler reads on: an error, never data.
    """
    head = src.peek(1)
    if not head or not (head[0] in _PLAUSIBLE_FIRST or head[0] == 0x80):
        return None
    mark = sink.checkpoint()
    before = sink.joblib_arrays
    try:
        scan_pickle_stream(src, sink)
    except (PickleError, Truncated) as exc:
        if stopped_at_limit(exc) or unpickler_reads_number(src, exc):
            raise limit_error(exc) from None
        sink.rollback(mark, keep_rules=("MLW-SCN-001", "MLW-SCN-002"))
        return None
    sink.add("MLW-SCN-011", Severity.HIGH, message)
    return "joblib" if sink.joblib_arrays > before else "pickle"
