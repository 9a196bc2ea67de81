"""A symbolic pickle machine: follows every opcode of protocols 0-5 without running any.

It keeps a symbolic stack and memo, so an import is resolved even when its module and
name strings come from the memo or were pushed long before ``STACK_GLOBAL``; every
call site (``REDUCE``, ``INST``, ``OBJ``, ``NEWOBJ``, ``NEWOBJ_EX``, ``BUILD``) is
checked against the :class:`~mlwarden.supplychain.policy.Policy`. It also reports
opcode-level anomalies that real picklers never write (FRAME lengths that disagree
with the data, PROTO mid-stream, unknown opcodes, truncation, memo or stack
blow-ups, calls on values that are not imported names, BUILD on an imported module
or class).

The stream is read through :class:`~mlwarden.supplychain.stream.Source`: large
``BINBYTES``/``BINUNICODE`` payloads are skipped by seeking, strings longer than
:data:`MAX_STR` are not kept, and containers keep at most :data:`MAX_ITEMS` items,
so memory stays constant on a multi-GB pickle.

Joblib's inline arrays are followed too: after ``BUILD`` of a
``joblib.numpy_pickle.NumpyArrayWrapper`` the raw array bytes (or, for object
arrays, a nested pickle that is scanned in turn) sit in the middle of the stream.

Format reference: ``Lib/pickletools.py`` and PEP 3154 (protocol 4), PEP 574 (5).
"""

from __future__ import annotations

import codecs
import functools
import io
import re
import struct
from collections.abc import Callable
from typing import Any

from mlwarden.core.severity import Severity
from mlwarden.supplychain.policy import Verdict
from mlwarden.supplychain.results import Sink
from mlwarden.supplychain.stream import Source, Truncated

MAX_STR = 4096  #: longest string or bytes value kept (characters / bytes)
MAX_ITEMS = 64  #: items kept per container
MAX_STACK = 1_000_000  #: stack + mark depth before it is a blow-up
MAX_MEMO_GAP = 1_000_000  #: memo index this far beyond the entries stored is a blow-up
MAX_LONG_BYTES = 1 << 16  #: binary integer length (bytes) before it is a blow-up
MEMO_KEEP = 100_000  #: memo entries kept whatever their value
MEMO_HARD = 1_000_000  #: beyond MEMO_KEEP, only imports, calls and short strings, up to this
MAX_NESTED = 8  #: nested pickles (joblib object arrays) within one stream
HIGHEST_PROTOCOL = 5
NO_FRAME = 1 << 62  #: frame_end when no FRAME is open
CHECK_EVERY = 4096  #: bytes between stack-depth checks (a byte pushes at most one item)

#: Loaders a pickle may call on embedded bytes that the scanner follows: the bytes are
#: scanned as a file of their own, and the call is allowed only on bytes so scanned.
#: (``pickle.dumps`` of a tensor stores its storage via ``torch.storage._load_from_bytes``,
#: a legacy ``torch.save`` stream; at load time :mod:`mlwarden.supplychain.loader`
#: swaps in ``torch.load(weights_only=True)``.)
NESTED_LOADERS = frozenset({"torch.storage._load_from_bytes"})
JOBLIB_WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"
#: allowed callables that make an instance of the class they are given: joblib reads
#: array bytes after BUILD of any NumpyArrayWrapper instance, however it was made
INSTANCE_MAKERS = frozenset(
    {"copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__"}
)
_BUILD_HANDLED = INSTANCE_MAKERS | {JOBLIB_WRAPPER}  #: BUILD targets the slow path checks
CODECS_ENCODE = "_codecs.encode"  #: how protocols 0-2 pickle bytes: encode(text, 'latin1')
MAX_NESTED_TEXT = 64 << 20  #: longest such text scanned as nested bytes (held in memory)
GETATTR = "builtins.getattr"


class PickleError(Exception):
    """The stream is not a pickle the unpickler would accept (message says why)."""


class _Mark:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MARK"


MARK = _Mark()


class Unknown:
    """A value the machine does not track (large payload, buffer, skipped data)."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"<{self.what}>"


EVICTED = Unknown("memo value not kept")


class Global:
    """An imported name (``GLOBAL``/``STACK_GLOBAL``/``INST``)."""

    __slots__ = ("module", "name", "offset", "full", "verdict")

    def __init__(self, module: str, name: str, offset: int, full: str, verdict: Verdict) -> None:
        self.module = module
        self.name = name
        self.offset = offset
        self.full = full
        self.verdict = verdict

    def __repr__(self) -> str:
        return self.full


class _Getattr(Global):
    """An import of ``builtins.getattr``, reported when the pickle ends unless every call
    of it only read an allowed name (``getattr(ZoneInfo, '_unpickle')``, the way Python
    pickles a class's methods)."""

    __slots__ = ("reason", "safe_calls", "reported")

    def __init__(self, module: str, name: str, offset: int, full: str, reason: str) -> None:
        super().__init__(module, name, offset, full, Verdict.UNSAFE)
        self.reason = reason
        self.safe_calls = 0
        self.reported = False


class Call:
    """The result of calling something: ``func(*args)`` plus any ``BUILD`` state."""

    __slots__ = ("func", "args", "offset", "state")

    def __init__(self, func: Any, args: Any, offset: int) -> None:
        self.func = func
        self.args = args
        self.offset = offset
        self.state: Any = None

    def __repr__(self) -> str:
        return f"{self.func!r}{self.args!r}"


class Seq:
    """A tuple, list, set or dict; keeps the first :data:`MAX_ITEMS` items."""

    __slots__ = ("kind", "items", "n")

    def __init__(self, kind: str, items: list[Any] | None = None) -> None:
        self.kind = kind
        if items is None:
            self.n = 0
            self.items: list[Any] = []
        else:
            self.n = len(items)
            self.items = items if self.n <= MAX_ITEMS else items[:MAX_ITEMS]

    def extend(self, values: list[Any]) -> None:
        room = MAX_ITEMS - len(self.items)
        if room > 0:
            self.items.extend(values[:room])
        self.n += len(values)

    def get(self, key: str) -> Any:
        """Value for ``key`` in a dict (items stored as key, value, key, value...); the last
        one wins, as when the unpickler fills a real dict."""
        for i in range(len(self.items) - 2 - len(self.items) % 2, -1, -2):
            if self.items[i] == key:
                return self.items[i + 1]
        return None

    def __repr__(self) -> str:
        if self.kind == "tuple":
            inner = ", ".join(_short(v) for v in self.items)
            return f"({inner}{', ...' if self.n > len(self.items) else ''})"
        return f"<{self.kind} of {self.n}>"


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 120 else text[:117] + "..."


class Scanned:
    """A bytes payload that was scanned as a nested file."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"<scanned {self.size} bytes>"


class Persistent:
    """A persistent id (``PERSID``/``BINPERSID``): PyTorch's storages, for instance."""

    __slots__ = ("pid",)

    def __init__(self, pid: Any) -> None:
        self.pid = pid

    def __repr__(self) -> str:
        return f"persistent{self.pid!r}"


_OPNAMES = {
    0x28: "MARK",
    0x2E: "STOP",
    0x30: "POP",
    0x31: "POP_MARK",
    0x32: "DUP",
    0x46: "FLOAT",
    0x49: "INT",
    0x4A: "BININT",
    0x4B: "BININT1",
    0x4C: "LONG",
    0x4D: "BININT2",
    0x4E: "NONE",
    0x50: "PERSID",
    0x51: "BINPERSID",
    0x52: "REDUCE",
    0x53: "STRING",
    0x54: "BINSTRING",
    0x55: "SHORT_BINSTRING",
    0x56: "UNICODE",
    0x58: "BINUNICODE",
    0x61: "APPEND",
    0x62: "BUILD",
    0x63: "GLOBAL",
    0x64: "DICT",
    0x7D: "EMPTY_DICT",
    0x65: "APPENDS",
    0x67: "GET",
    0x68: "BINGET",
    0x69: "INST",
    0x6A: "LONG_BINGET",
    0x6C: "LIST",
    0x5D: "EMPTY_LIST",
    0x6F: "OBJ",
    0x70: "PUT",
    0x71: "BINPUT",
    0x72: "LONG_BINPUT",
    0x73: "SETITEM",
    0x74: "TUPLE",
    0x29: "EMPTY_TUPLE",
    0x75: "SETITEMS",
    0x47: "BINFLOAT",
    0x80: "PROTO",
    0x81: "NEWOBJ",
    0x82: "EXT1",
    0x83: "EXT2",
    0x84: "EXT4",
    0x85: "TUPLE1",
    0x86: "TUPLE2",
    0x87: "TUPLE3",
    0x88: "NEWTRUE",
    0x89: "NEWFALSE",
    0x8A: "LONG1",
    0x8B: "LONG4",
    0x42: "BINBYTES",
    0x43: "SHORT_BINBYTES",
    0x8C: "SHORT_BINUNICODE",
    0x8D: "BINUNICODE8",
    0x8E: "BINBYTES8",
    0x8F: "EMPTY_SET",
    0x90: "ADDITEMS",
    0x91: "FROZENSET",
    0x92: "NEWOBJ_EX",
    0x93: "STACK_GLOBAL",
    0x94: "MEMOIZE",
    0x95: "FRAME",
    0x96: "BYTEARRAY8",
    0x97: "NEXT_BUFFER",
    0x98: "READONLY_BUFFER",
}
OPCODES = frozenset(_OPNAMES)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def _importable(module: str, name: str) -> bool:
    """Both are dotted Python identifiers (what a real pickler writes)."""
    if len(module) + len(name) > 256:  # only short names are cached: bounded memory
        return bool(_IDENT.fullmatch(module) and _IDENT.fullmatch(name))
    return _importable_cached(module, name)


@functools.lru_cache(maxsize=1 << 14)
def _importable_cached(module: str, name: str) -> bool:
    return bool(_IDENT.fullmatch(module) and _IDENT.fullmatch(name))


_DTYPE_STR = re.compile(r"[<>|=]?[a-zA-Z][0-9]{0,3}")


class PickleMachine:
    """Runs one pickle (up to STOP) symbolically, reporting into a :class:`Sink`.

    ``on_persistent`` receives each persistent id (PyTorch storage keys).
    """

    def __init__(
        self,
        src: Source,
        sink: Sink,
        *,
        on_persistent: Callable[[Any], None] | None = None,
        depth: int = 0,
    ) -> None:
        self.src = src
        self.sink = sink
        self.on_persistent = on_persistent
        self.depth = depth
        self.stack: list[Any] = []
        self.marks: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.memo_count = 0
        self.evicted = False
        self.proto = 0
        self.frame_end = NO_FRAME
        self.ops = 0
        self.start = src.pos
        self.getattrs: list[_Getattr] = []

    # -- reporting ---------------------------------------------------------------------
    def anomaly(self, message: str, offset: int, severity: Severity = Severity.HIGH) -> None:
        self.sink.add("MLW-SCN-003", severity, message, offset=offset)

    def fatal(self, message: str, offset: int) -> PickleError:
        return PickleError(f"{message} (offset {offset})")

    # -- stack helpers -----------------------------------------------------------------
    def pop(self, off: int, op: str) -> Any:
        if not self.stack:
            raise self.fatal(f"{op} on an empty stack", off)
        return self.stack.pop()

    def pop_mark(self, off: int, op: str) -> list[Any]:
        if not self.marks:
            raise self.fatal(f"{op} without a MARK", off)
        items = self.stack
        self.stack = self.marks.pop()
        return items

    # -- checks ------------------------------------------------------------------------
    def import_name(self, module: Any, name: Any, off: int, op: str) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            self.anomaly(
                f"{op} imports a name that is not a known string "
                f"(module={_short(module)}, name={_short(name)}); it cannot be checked",
                off,
            )
            return Unknown("import")
        if not _importable(module, name):
            self.anomaly(
                f"{op} names {module!r} {name!r}, which is not an importable name "
                "(no real pickler writes it)",
                off,
            )
            return Unknown("bad import")
        c = self.sink.policy.classify(module, name, torchscript=self.sink.torchscript)
        if c.full in NESTED_LOADERS and self.sink.on_nested is not None:
            return Global(module, name, off, c.full, Verdict.SAFE)  # checked at the call
        if c.full == GETATTR and c.verdict is Verdict.UNSAFE:
            g = _Getattr(module, name, off, c.full, c.reason)
            self.getattrs.append(g)  # reported by _settle_getattrs unless all calls resolve
            return g
        if c.verdict is Verdict.UNSAFE:
            self.sink.add(
                "MLW-SCN-001",
                Severity.CRITICAL,
                f"imports {c.full}: {c.reason}",
                global_=c.full,
                offset=off,
            )
        elif c.verdict is Verdict.SUSPICIOUS:
            self.sink.add(
                "MLW-SCN-002",
                Severity.HIGH,
                f"imports {c.full}: {c.reason}",
                global_=c.full,
                offset=off,
            )
        return Global(module, name, off, c.full, c.verdict)

    def call(self, func: Any, args: Any, off: int, op: str) -> Call | Global:
        if func.__class__ is _Getattr:
            attr = self._resolve_getattr(args, off) if op == "REDUCE" else None
            if attr is not None:
                func.safe_calls += 1
                return attr
            self._report_getattr(func)
        if isinstance(args, Seq):
            for item in args.items:
                if item.__class__ is _Getattr:
                    self._report_getattr(item)  # handed to another callable: fail closed
        if isinstance(func, Global) and func.full in NESTED_LOADERS:
            scanned = (
                isinstance(args, Seq)
                and args.n == 1
                and self.sink.on_nested is not None
                and self._nested_scanned(args.items[0], off)
            )
            if not scanned:
                self.sink.add(
                    "MLW-SCN-001",
                    Severity.CRITICAL,
                    f"calls the nested loader {func.full}{_short(args)} on data that could "
                    "not be scanned",
                    global_=func.full,
                    offset=off,
                )
        if isinstance(func, Global):
            if func.verdict is Verdict.UNSAFE:
                self.sink.add(
                    "MLW-SCN-001",
                    Severity.CRITICAL,
                    f"calls {func.full}{_short(args)} when loaded",
                    global_=func.full,
                    offset=off,
                )
        elif func is EVICTED:
            self.anomaly(
                f"{op} calls a memo value the scanner did not keep (more than {MEMO_KEEP} "
                "memo entries); it cannot be checked",
                off,
            )
        elif not isinstance(func, Unknown):
            self.anomaly(
                f"{op} calls a value that is not an imported name ({_short(func)}); "
                "real pickles only call imported classes and functions",
                off,
            )
        return Call(func, args, off)

    def _before_nested_encode(self) -> bool:
        """The two values below the one being read (across MARKs) are ``_codecs.encode``
        and a nested loader: ``loader(encode(<this text>, 'latin1'))``, as protocol 2
        (TUPLE2) and protocols 0-1 (MARK ... TUPLE) write it."""
        found: list[Any] = []
        for seq in (self.stack, *self.marks[-2:][::-1]):
            for value in reversed(seq[-2:]):
                found.append(value)
                if len(found) == 2:
                    encode, loader = found
                    return (
                        isinstance(encode, Global)
                        and encode.full == CODECS_ENCODE
                        and isinstance(loader, Global)
                        and loader.full in NESTED_LOADERS
                    )
        return False

    def _nested_scanned(self, arg: Any, off: int) -> bool:
        """The argument of a nested loader is bytes that were scanned: a bytes payload, or
        ``_codecs.encode(text, 'latin1')`` (how protocols 0-2 pickle bytes) whose text was
        scanned as it was read or, if short, is scanned now."""
        if isinstance(arg, Scanned):
            return True
        if not (
            isinstance(arg, Call)
            and isinstance(arg.func, Global)
            and arg.func.full == CODECS_ENCODE
            and isinstance(arg.args, Seq)
            and arg.args.n == 2
            and arg.args.items[1] in ("latin1", "latin-1", "iso-8859-1")
        ):
            return False
        text = arg.args.items[0]
        if isinstance(text, Scanned):
            return True
        if not isinstance(text, str) or self.sink.on_nested is None:
            return False
        try:
            raw = text.encode("latin-1")
        except UnicodeEncodeError:
            return False
        self.sink.on_nested(Source(io.BytesIO(raw), len(raw)), len(raw), off)
        return True

    def _resolve_getattr(self, args: Any, off: int) -> Global | None:
        """``getattr(<allowed class or module>, 'name')`` as the import of the dotted name,
        when that name is itself on the allow-list; None otherwise."""
        if not (isinstance(args, Seq) and args.kind == "tuple" and args.n == 2):
            return None
        obj, attr = args.items
        if obj.__class__ is not Global or obj.verdict is not Verdict.SAFE:
            return None
        if not isinstance(attr, str) or obj.full in NESTED_LOADERS:
            return None
        name = f"{obj.name}.{attr}"
        if not _importable(obj.module, name):
            return None
        c = self.sink.policy.classify(obj.module, name, torchscript=self.sink.torchscript)
        if c.verdict is not Verdict.SAFE or c.full in NESTED_LOADERS:
            return None
        return Global(obj.module, name, off, c.full, Verdict.SAFE)

    def _report_getattr(self, g: _Getattr) -> None:
        if not g.reported:
            g.reported = True
            self.sink.add(
                "MLW-SCN-001",
                Severity.CRITICAL,
                f"imports {g.full}: {g.reason}",
                global_=g.full,
                offset=g.offset,
            )

    def _settle_getattrs(self) -> None:
        """At the end of the pickle: an imported getattr never called, or called in a way
        that did not resolve to an allowed name, is reported (fail closed)."""
        for g in self.getattrs:
            if not g.safe_calls:
                self._report_getattr(g)
        self.getattrs = []

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> Any:
        """Run to STOP; returns the symbolic top of stack. Raises PickleError / Truncated.

        The exception carries ``ops``: how many opcodes ran before the failure.
        """
        return self._drive(self._run)

    def _drive(self, loop: Callable[[], Any]) -> Any:
        try:
            return loop()
        except (PickleError, Truncated) as exc:
            exc.ops = self.ops  # type: ignore[union-attr]
            raise
        finally:
            if self.getattrs:
                self._settle_getattrs()

    def _first_opcode(self) -> tuple[int, int]:
        """The first opcode and its offset; a stream that cannot start a pickle is refused."""
        off = self.src.pos
        code = self.src.byte()
        if code < 0:
            raise PickleError("empty stream: no pickle opcodes")
        if code != 0x80 and self.depth == 0 and code not in _PLAUSIBLE_FIRST:
            name = _OPNAMES.get(code, f"0x{code:02x}")
            raise self.fatal(f"does not start like a pickle (opcode {name})", off)
        return code, off

    def _run(self) -> Any:
        # The hottest opcodes run inline, with the read position, buffer and stack held in
        # locals. Every other opcode, and an inlined one whose preconditions do not hold
        # (bytes not yet buffered, memo full, a call of a name that is not allowed...),
        # goes through its handler: the locals are written back before the call and read
        # again after it. ``i`` is the buffer index just past the current opcode, so the
        # opcode's stream offset is ``base + i - 1``. One comparison per opcode, ``i >
        # check``, covers both the FRAME end and the periodic stack-depth check.
        src = self.src
        code, off = self._first_opcode()
        table = _TABLE
        memo = self.memo
        marks = self.marks
        stack = self.stack
        buf, i, base = src.buf, src.i, src.base
        blen = len(buf)
        evicted = self.evicted
        deferred = bool(self.getattrs)  # calls then go through call(), which tracks them
        check = min(self.frame_end - base, i + CHECK_EVERY)
        ops = self.ops
        new_seq = Seq
        new_call = Call
        safe = Verdict.SAFE
        nested = NESTED_LOADERS
        unpack_from = struct.unpack_from
        try:
            while True:
                ops += 1
                if code == 0x68 and i < blen and buf[i] in memo:  # BINGET
                    stack.append(memo[buf[i]])
                    i += 1
                elif code == 0x4B and i < blen:  # BININT1
                    stack.append(buf[i])
                    i += 1
                elif (
                    code == 0x71 and i < blen and stack and not evicted and len(memo) < MEMO_KEEP
                ):  # BINPUT
                    b = buf[i]
                    i += 1
                    memo[b] = stack[-1]
                    if b >= self.memo_count:
                        self.memo_count = b + 1
                elif code == 0x94 and stack:  # MEMOIZE (the memo bounds of ``_put`` inlined)
                    n = len(memo)
                    b = self.memo_count if evicted else n
                    v = stack[-1]
                    if n < MEMO_KEEP or (
                        n < MEMO_HARD
                        and (
                            v.__class__ is Global
                            or v.__class__ is Call
                            or (v.__class__ is str and len(v) <= 256)
                        )
                    ):
                        memo[b] = v
                    else:
                        evicted = self.evicted = True
                        memo.pop(b, None)
                    if b >= self.memo_count:
                        self.memo_count = b + 1
                elif code == 0x8C and i < blen and (j := i + 1 + buf[i]) <= blen:
                    # SHORT_BINUNICODE
                    try:
                        stack.append(buf[i + 1 : j].decode("utf-8", "surrogatepass"))
                    except UnicodeDecodeError:
                        raise self.fatal("string that is not valid UTF-8", base + i - 1) from None
                    i = j
                elif code == 0x28:  # MARK
                    marks.append(stack)
                    stack = []
                    if len(marks) > MAX_STACK:
                        raise self.fatal("MARK nesting blow-up", base + i - 1)
                elif (
                    code == 0x58  # BINUNICODE, short and fully buffered
                    and i + 4 <= blen
                    and buf[i + 2] == 0
                    and buf[i + 3] == 0
                    and (j := i + 4 + (buf[i] | buf[i + 1] << 8)) <= blen
                    and j - i - 4 <= MAX_STR
                ):
                    try:
                        stack.append(buf[i + 4 : j].decode("utf-8", "surrogatepass"))
                    except UnicodeDecodeError:
                        raise self.fatal("string that is not valid UTF-8", base + i - 1) from None
                    i = j
                elif (
                    (code == 0x52 or code == 0x81)  # REDUCE, NEWOBJ: a call of an allowed name
                    and not deferred
                    and len(stack) >= 2
                    and (func := stack[-2]).__class__ is Global
                    and func.verdict is safe
                    and func.full not in nested
                ):
                    args = stack.pop()
                    stack[-1] = new_call(func, args, base + i - 1)
                elif code == 0x74 and marks:  # TUPLE
                    value = new_seq("tuple", stack)
                    stack = marks.pop()
                    stack.append(value)
                elif code == 0x87 and len(stack) >= 3:  # TUPLE3
                    value = new_seq("tuple", stack[-3:])
                    del stack[-3:]
                    stack.append(value)
                elif code == 0x4E:  # NONE
                    stack.append(None)
                elif code == 0x85 and stack:  # TUPLE1
                    stack[-1] = new_seq("tuple", [stack[-1]])
                elif (
                    code == 0x62  # BUILD on an ordinary object
                    and len(stack) >= 2
                    and (obj := stack[-2]).__class__ is Call
                    and obj.func.__class__ is Global
                    and obj.func.full not in _BUILD_HANDLED
                ):
                    obj.state = stack.pop()
                elif code == 0x86 and len(stack) >= 2:  # TUPLE2
                    value = new_seq("tuple", stack[-2:])
                    del stack[-2:]
                    stack.append(value)
                elif code == 0x7D:  # EMPTY_DICT
                    stack.append(new_seq("dict"))
                elif code == 0x29:  # EMPTY_TUPLE
                    stack.append(new_seq("tuple"))
                elif code == 0x89:  # NEWFALSE
                    stack.append(False)
                elif code == 0x88:  # NEWTRUE
                    stack.append(True)
                elif (
                    code == 0x75  # SETITEMS into a dict
                    and marks
                    and not len(stack) & 1
                    and marks[-1]
                    and marks[-1][-1].__class__ is Seq
                ):
                    items = stack
                    stack = marks.pop()
                    stack[-1].extend(items)
                elif (
                    code == 0x72  # LONG_BINPUT
                    and i + 4 <= blen
                    and stack
                    and not evicted
                    and len(memo) < MEMO_KEEP
                    and (b := unpack_from("<I", buf, i)[0]) <= self.memo_count + MAX_MEMO_GAP
                ):
                    i += 4
                    memo[b] = stack[-1]
                    if b >= self.memo_count:
                        self.memo_count = b + 1
                elif code == 0x4D and i + 2 <= blen:  # BININT2
                    stack.append(buf[i] | buf[i + 1] << 8)
                    i += 2
                elif code == 0x4A and i + 4 <= blen:  # BININT
                    stack.append(unpack_from("<i", buf, i)[0])
                    i += 4
                elif code == 0x5D:  # EMPTY_LIST
                    stack.append(new_seq("list"))
                elif (
                    code == 0x65  # APPENDS to a list
                    and marks
                    and marks[-1]
                    and marks[-1][-1].__class__ is Seq
                ):
                    items = stack
                    stack = marks.pop()
                    stack[-1].extend(items)
                elif code == 0x47 and i + 8 <= blen:  # BINFLOAT
                    stack.append(unpack_from(">d", buf, i)[0])
                    i += 8
                elif code == 0x2E:  # STOP
                    src.i = i
                    self.stack = stack
                    off = base + i - 1
                    if self.frame_end != NO_FRAME and base + i != self.frame_end:
                        self.anomaly("STOP inside a FRAME that declares more data", off)
                    if marks:
                        self.anomaly("STOP with an unclosed MARK", off, Severity.LOW)
                    return stack.pop() if stack else None
                else:
                    off = base + i - 1
                    handler = table[code]
                    if handler is None:
                        self.anomaly(f"unknown opcode 0x{code:02x}; no unpickler accepts it", off)
                        raise self.fatal(f"unknown opcode 0x{code:02x}", off)
                    if code == 0x80 and off != self.start:
                        self.anomaly("PROTO opcode in the middle of a pickle", off)
                    src.i = i
                    self.stack = stack
                    self.ops = ops
                    handler(self, off)
                    stack = self.stack
                    buf, i, base = src.buf, src.i, src.base
                    blen = len(buf)
                    evicted = self.evicted
                    deferred = bool(self.getattrs)
                    check = min(self.frame_end - base, i + CHECK_EVERY)
                # the next opcode
                if i < blen:
                    code = buf[i]
                    i += 1
                else:
                    src.i = i
                    off = src.pos
                    code = src.byte()
                    buf, i, base = src.buf, src.i, src.base
                    blen = len(buf)
                    if code < 0:
                        raise Truncated(f"pickle ends at offset {off} without a STOP opcode")
                    check = min(self.frame_end - base, i - 1 + CHECK_EVERY)
                if i > check:
                    off = base + i - 1
                    frame_end = self.frame_end
                    if off >= frame_end:
                        if off > frame_end:
                            self.anomaly(
                                "an opcode crosses the end of its FRAME (declared frame length "
                                "disagrees with the data)",
                                off,
                            )
                        self.frame_end = NO_FRAME
                    if len(stack) + len(marks) > MAX_STACK:
                        raise self.fatal(f"stack deeper than {MAX_STACK} items (blow-up)", off)
                    check = min(self.frame_end - base, i + CHECK_EVERY)
        finally:
            self.ops = ops

    def run_reference(self) -> Any:
        """:meth:`run` through the opcode handlers alone, one call per opcode.

        The plain form of the loop that :meth:`_run` inlines for speed; tests check the
        two agree on every finding, result and error.
        """
        return self._drive(self._run_reference)

    def _run_reference(self) -> Any:
        src = self.src
        code, off = self._first_opcode()
        while True:
            self.ops += 1
            if code == 0x2E:  # STOP
                if self.frame_end != NO_FRAME and src.pos != self.frame_end:
                    self.anomaly("STOP inside a FRAME that declares more data", off)
                if self.marks:
                    self.anomaly("STOP with an unclosed MARK", off, Severity.LOW)
                return self.pop(off, "STOP") if self.stack else None
            handler = _TABLE[code]
            if handler is None:
                self.anomaly(f"unknown opcode 0x{code:02x}; no unpickler accepts it", off)
                raise self.fatal(f"unknown opcode 0x{code:02x}", off)
            if code == 0x80 and off != self.start:
                self.anomaly("PROTO opcode in the middle of a pickle", off)
            handler(self, off)
            if len(self.stack) + len(self.marks) > MAX_STACK:
                raise self.fatal(f"stack deeper than {MAX_STACK} items (blow-up)", off)
            off = src.pos
            code = src.byte()
            if code < 0:
                raise Truncated(f"pickle ends at offset {off} without a STOP opcode")
            if off >= self.frame_end:
                if off > self.frame_end:
                    self.anomaly(
                        "an opcode crosses the end of its FRAME (declared frame length "
                        "disagrees with the data)",
                        off,
                    )
                self.frame_end = NO_FRAME

    # -- opcode handlers (bound through _DISPATCH) ---------------------------------------
    def op_mark(self, off: int) -> None:
        self.marks.append(self.stack)
        self.stack = []
        if len(self.marks) > MAX_STACK:
            raise self.fatal("MARK nesting blow-up", off)

    def op_pop(self, off: int) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self.pop_mark(off, "POP")

    def op_pop_mark(self, off: int) -> None:
        self.pop_mark(off, "POP_MARK")

    def op_dup(self, off: int) -> None:
        if not self.stack:
            raise self.fatal("DUP on an empty stack", off)
        self.stack.append(self.stack[-1])

    def op_float(self, off: int) -> None:
        value = _c_float(self.src.readline())
        if value is None:
            raise self.fatal("FLOAT with a malformed number", off)
        self.stack.append(value)

    def op_int(self, off: int) -> None:
        line = self.src.readline()
        if line == b"00":
            self.stack.append(False)
        elif line == b"01":
            self.stack.append(True)
        else:
            self.stack.append(self._parse_int(line, off, "INT"))

    def _parse_int(self, line: bytes, off: int, op: str) -> int:
        if len(line) > 4300:
            self.anomaly(f"{op} with a {len(line)}-digit number (parse blow-up)", off)
            return 0
        value = _c_int(line) if op == "INT" else _c_long(line)
        if value is None:
            raise self.fatal(f"{op} with a malformed number", off)
        return value

    def op_binint(self, off: int) -> None:
        self.stack.append(struct.unpack("<i", self.src.read(4))[0])

    def op_binint1(self, off: int) -> None:
        self.stack.append(self.src.read(1)[0])

    def op_binint2(self, off: int) -> None:
        self.stack.append(struct.unpack("<H", self.src.read(2))[0])

    def op_long(self, off: int) -> None:
        self.stack.append(self._parse_int(self.src.readline(), off, "LONG"))

    def op_long1(self, off: int) -> None:
        n = self.src.read(1)[0]
        self.stack.append(int.from_bytes(self.src.read(n), "little", signed=True) if n else 0)

    def op_long4(self, off: int) -> None:
        (n,) = struct.unpack("<i", self.src.read(4))
        if n < 0:
            raise self.fatal("LONG4 with a negative length", off)
        if n > MAX_LONG_BYTES:
            self.anomaly(f"LONG4 with a {n}-byte integer (blow-up)", off)
            self.src.skip(n)
            self.stack.append(Unknown("huge int"))
            return
        self.stack.append(int.from_bytes(self.src.read(n), "little", signed=True) if n else 0)

    def op_none(self, off: int) -> None:
        self.stack.append(None)

    def op_true(self, off: int) -> None:
        self.stack.append(True)

    def op_false(self, off: int) -> None:
        self.stack.append(False)

    def op_binfloat(self, off: int) -> None:
        self.stack.append(struct.unpack(">d", self.src.read(8))[0])

    def _payload(self, n: int, off: int, kind: str) -> Any:
        if n < 0:
            raise self.fatal(f"{kind} with a negative length", off)
        rem = self.src.remaining()
        if rem is not None and n > rem:
            self.anomaly(f"{kind} declares {n} bytes but only {rem} remain (length blow-up)", off)
            raise Truncated(f"{kind} at offset {off} declares {n} bytes, only {rem} remain")
        top = self.stack[-1] if self.stack else None
        if (
            kind == "bytes"
            and isinstance(top, Global)
            and top.full in NESTED_LOADERS
            and self.sink.on_nested is not None
        ):
            self.sink.on_nested(self.src, n, off)
            return Scanned(n)
        if (
            kind == "str"
            and MAX_STR < n <= MAX_NESTED_TEXT
            and self.sink.on_nested is not None
            and self._before_nested_encode()
        ):
            # protocol 0-2 pickles bytes as _codecs.encode(text, 'latin1'): the text of
            # the bytes a nested loader is about to get, scanned as their own file
            raw = _latin1(self.src.read(n))
            if raw is None:
                return Unknown("text that is not latin-1 bytes")
            self.sink.on_nested(Source(io.BytesIO(raw), len(raw)), len(raw), off)
            return Scanned(len(raw))
        if n > MAX_STR:
            self.src.skip(n)
            return Unknown(f"{kind} of {n} bytes")
        data = self.src.read(n)
        if kind == "str":
            try:
                return data.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                raise self.fatal("string that is not valid UTF-8", off) from None
        return data

    def op_string(self, off: int) -> None:
        line = self.src.readline()
        if len(line) >= 2 and line[:1] == line[-1:] and line[:1] in (b"'", b'"'):
            try:
                self.stack.append(codecs.escape_decode(line[1:-1])[0].decode("latin-1"))  # type: ignore[attr-defined]
            except ValueError:
                raise self.fatal("STRING with a malformed escape", off) from None
        else:
            raise self.fatal("STRING argument is not quoted", off)

    def op_binstring(self, off: int) -> None:
        (n,) = struct.unpack("<i", self.src.read(4))
        v = self._payload(n, off, "bytes")
        self.stack.append(v.decode("latin-1") if isinstance(v, bytes) else v)

    def op_short_binstring(self, off: int) -> None:
        v = self._payload(self.src.read(1)[0], off, "bytes")
        self.stack.append(v.decode("latin-1") if isinstance(v, bytes) else v)

    def op_unicode(self, off: int) -> None:
        line = self.src.readline()
        try:
            self.stack.append(line.decode("raw-unicode-escape"))
        except UnicodeDecodeError:
            raise self.fatal("UNICODE with a malformed escape", off) from None

    def op_binunicode(self, off: int) -> None:
        (n,) = struct.unpack("<I", self.src.read(4))
        self.stack.append(self._payload(n, off, "str"))

    def op_short_binunicode(self, off: int) -> None:
        self.stack.append(self._payload(self.src.read(1)[0], off, "str"))

    def op_binunicode8(self, off: int) -> None:
        (n,) = struct.unpack("<Q", self.src.read(8))
        self.stack.append(self._payload(n, off, "str"))

    def op_binbytes(self, off: int) -> None:
        (n,) = struct.unpack("<I", self.src.read(4))
        self.stack.append(self._payload(n, off, "bytes"))

    def op_short_binbytes(self, off: int) -> None:
        self.stack.append(self._payload(self.src.read(1)[0], off, "bytes"))

    def op_binbytes8(self, off: int) -> None:
        (n,) = struct.unpack("<Q", self.src.read(8))
        self.stack.append(self._payload(n, off, "bytes"))

    def op_bytearray8(self, off: int) -> None:
        (n,) = struct.unpack("<Q", self.src.read(8))
        v = self._payload(n, off, "bytes")
        self.stack.append(bytearray(v) if isinstance(v, bytes) else v)

    def op_next_buffer(self, off: int) -> None:
        self.stack.append(Unknown("out-of-band buffer"))

    def op_readonly_buffer(self, off: int) -> None:
        if not self.stack:
            raise self.fatal("READONLY_BUFFER on an empty stack", off)

    def op_empty_tuple(self, off: int) -> None:
        self.stack.append(Seq("tuple"))

    def op_tuple(self, off: int) -> None:
        value = Seq(
            "tuple", self.pop_mark(off, "TUPLE")
        )  # pop_mark swaps self.stack: evaluate first
        self.stack.append(value)

    def op_tuple1(self, off: int) -> None:
        self.stack.append(Seq("tuple", [self.pop(off, "TUPLE1")]))

    def op_tuple2(self, off: int) -> None:
        b = self.pop(off, "TUPLE2")
        a = self.pop(off, "TUPLE2")
        self.stack.append(Seq("tuple", [a, b]))

    def op_tuple3(self, off: int) -> None:
        c = self.pop(off, "TUPLE3")
        b = self.pop(off, "TUPLE3")
        a = self.pop(off, "TUPLE3")
        self.stack.append(Seq("tuple", [a, b, c]))

    def op_empty_list(self, off: int) -> None:
        self.stack.append(Seq("list"))

    def op_list(self, off: int) -> None:
        value = Seq("list", self.pop_mark(off, "LIST"))  # pop_mark swaps self.stack: evaluate first
        self.stack.append(value)

    def op_empty_dict(self, off: int) -> None:
        self.stack.append(Seq("dict"))

    def op_dict(self, off: int) -> None:
        items = self.pop_mark(off, "DICT")
        if len(items) % 2:
            raise self.fatal("DICT with an odd number of items", off)
        self.stack.append(Seq("dict", items))

    def op_empty_set(self, off: int) -> None:
        self.stack.append(Seq("set"))

    def op_frozenset(self, off: int) -> None:
        value = Seq(
            "frozenset", self.pop_mark(off, "FROZENSET")
        )  # pop_mark swaps self.stack: evaluate first
        self.stack.append(value)

    def _target(self, off: int, op: str) -> Any:
        if not self.stack:
            raise self.fatal(f"{op} without a container on the stack", off)
        return self.stack[-1]

    def _add_items(self, target: Any, items: list[Any], off: int, op: str) -> None:
        if isinstance(target, Seq):
            target.extend(items)
        elif isinstance(target, Global):
            self.sink.add(
                "MLW-SCN-001",
                Severity.CRITICAL,
                f"{op} mutates the imported object {target.full}",
                global_=target.full,
                offset=off,
            )
        elif (
            isinstance(target, Call)
            and isinstance(target.func, Global)
            and target.func.verdict is not Verdict.SAFE
        ):
            # list/dict subclasses: APPENDS calls .append/.extend, SETITEMS calls __setitem__
            self.sink.add(
                "MLW-SCN-001" if target.func.verdict is Verdict.UNSAFE else "MLW-SCN-002",
                Severity.CRITICAL if target.func.verdict is Verdict.UNSAFE else Severity.HIGH,
                f"{op} calls methods of an instance of {target.func.full}",
                global_=target.func.full,
                offset=off,
            )

    def op_append(self, off: int) -> None:
        v = self.pop(off, "APPEND")
        self._add_items(self._target(off, "APPEND"), [v], off, "APPEND")

    def op_appends(self, off: int) -> None:
        items = self.pop_mark(off, "APPENDS")
        self._add_items(self._target(off, "APPENDS"), items, off, "APPENDS")

    def op_setitem(self, off: int) -> None:
        v = self.pop(off, "SETITEM")
        k = self.pop(off, "SETITEM")
        self._add_items(self._target(off, "SETITEM"), [k, v], off, "SETITEM")

    def op_setitems(self, off: int) -> None:
        items = self.pop_mark(off, "SETITEMS")
        if len(items) % 2:
            raise self.fatal("SETITEMS with an odd number of items", off)
        self._add_items(self._target(off, "SETITEMS"), items, off, "SETITEMS")

    def op_additems(self, off: int) -> None:
        items = self.pop_mark(off, "ADDITEMS")
        self._add_items(self._target(off, "ADDITEMS"), items, off, "ADDITEMS")

    # memo
    def _put(self, idx: int, off: int) -> None:
        if not self.stack:
            raise self.fatal("memo PUT on an empty stack", off)
        if idx > self.memo_count + MAX_MEMO_GAP:
            self.anomaly(
                f"memo index {idx} far beyond the {self.memo_count} entries stored "
                "(memory blow-up in the unpickler)",
                off,
            )
        v = self.stack[-1]
        n = len(self.memo)
        if n < MEMO_KEEP or (
            n < MEMO_HARD
            and (isinstance(v, Global | Call) or (isinstance(v, str) and len(v) <= 256))
        ):
            self.memo[idx] = v
        else:
            # bounded memory on huge pickles: drop values the analysis does not need;
            # a later GET of one yields Unknown, which fails closed where it matters
            self.evicted = True
            self.memo.pop(idx, None)
        if idx >= self.memo_count:
            self.memo_count = idx + 1

    def op_put(self, off: int) -> None:
        idx = _memo_index(self.src.readline())
        if idx is None:
            raise self.fatal("PUT with a malformed index", off)
        self._put(idx, off)

    def op_binput(self, off: int) -> None:
        self._put(self.src.read(1)[0], off)

    def op_long_binput(self, off: int) -> None:
        self._put(struct.unpack("<I", self.src.read(4))[0], off)

    def op_memoize(self, off: int) -> None:
        self._put(self.memo_count if self.evicted else len(self.memo), off)

    def _get(self, idx: int, off: int) -> None:
        if idx not in self.memo and self.evicted and 0 <= idx < self.memo_count:
            self.stack.append(EVICTED)
            return
        if idx not in self.memo:
            self.anomaly(f"memo GET of index {idx} that was never stored", off)
            raise self.fatal(f"memo GET of missing index {idx}", off)
        self.stack.append(self.memo[idx])

    def op_get(self, off: int) -> None:
        idx = _memo_index(self.src.readline())
        if idx is None:
            raise self.fatal("GET with a malformed index", off)
        self._get(idx, off)

    def op_binget(self, off: int) -> None:
        self._get(self.src.read(1)[0], off)

    def op_long_binget(self, off: int) -> None:
        self._get(struct.unpack("<I", self.src.read(4))[0], off)

    # imports and calls
    def _line(self, off: int, op: str) -> str:
        raw = self.src.readline(limit=MAX_STR)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fatal(f"{op} with a name that is not UTF-8", off) from None

    def op_global(self, off: int) -> None:
        module = self._line(off, "GLOBAL")
        name = self._line(off, "GLOBAL")
        self.stack.append(self.import_name(module, name, off, "GLOBAL"))

    def op_stack_global(self, off: int) -> None:
        name = self.pop(off, "STACK_GLOBAL")
        module = self.pop(off, "STACK_GLOBAL")
        self.stack.append(self.import_name(module, name, off, "STACK_GLOBAL"))

    def op_inst(self, off: int) -> None:
        module = self._line(off, "INST")
        name = self._line(off, "INST")
        cls = self.import_name(module, name, off, "INST")
        args = self.pop_mark(off, "INST")
        self.stack.append(self.call(cls, Seq("tuple", args), off, "INST"))

    def op_obj(self, off: int) -> None:
        items = self.pop_mark(off, "OBJ")
        if not items:
            raise self.fatal("OBJ without a class", off)
        self.stack.append(self.call(items[0], Seq("tuple", items[1:]), off, "OBJ"))

    def op_reduce(self, off: int) -> None:
        args = self.pop(off, "REDUCE")
        func = self.pop(off, "REDUCE")
        self.stack.append(self.call(func, args, off, "REDUCE"))

    def op_newobj(self, off: int) -> None:
        args = self.pop(off, "NEWOBJ")
        cls = self.pop(off, "NEWOBJ")
        self.stack.append(self.call(cls, args, off, "NEWOBJ"))

    def op_newobj_ex(self, off: int) -> None:
        kwargs = self.pop(off, "NEWOBJ_EX")
        args = self.pop(off, "NEWOBJ_EX")
        cls = self.pop(off, "NEWOBJ_EX")
        self.stack.append(self.call(cls, Seq("tuple", [args, kwargs]), off, "NEWOBJ_EX"))

    def op_build(self, off: int) -> None:
        state = self.pop(off, "BUILD")
        obj = self._target(off, "BUILD")
        if isinstance(obj, Global):
            self.sink.add(
                "MLW-SCN-001",
                Severity.CRITICAL,
                f"BUILD sets attributes on the imported object {obj.full} "
                "(patches a module or class)",
                global_=obj.full,
                offset=off,
            )
            return
        if isinstance(obj, Call):
            obj.state = state
            f = obj.func
            if isinstance(f, Global) and self._makes_joblib_wrapper(obj, off):
                self.stack.pop()
                self.stack.append(self._joblib_array(state, off))
        elif not isinstance(obj, Unknown | Persistent | Seq):
            self.anomaly(f"BUILD on a value that is not an object ({_short(obj)})", off)

    def _makes_joblib_wrapper(self, call: Call, off: int) -> bool:
        """Whether ``call`` made a joblib ``NumpyArrayWrapper`` (joblib then reads the array
        bytes that follow its BUILD): called directly, or through a copyreg helper."""
        full = call.func.full
        if full == JOBLIB_WRAPPER:
            return True
        if full not in INSTANCE_MAKERS:
            return False
        cls = call.args.items[0] if isinstance(call.args, Seq) and call.args.items else None
        if not isinstance(cls, Global):
            raise self.fatal(f"{full} of a class that cannot be told (a joblib array?)", off)
        return cls.full == JOBLIB_WRAPPER

    def _joblib_array(self, state: Any, off: int) -> Any:
        """Skip (or scan) the array bytes joblib writes right after the wrapper."""
        if not isinstance(state, Seq) or state.kind != "dict":
            raise self.fatal("joblib array wrapper without its state", off)
        if state.n > len(state.items):  # a key past those kept could override any of them
            raise self.fatal("joblib array wrapper state too large to follow", off)
        shape = state.get("shape")
        dtype = state.get("dtype")
        if not isinstance(shape, Seq) or not all(
            isinstance(d, int) and d >= 0 for d in shape.items
        ):
            raise self.fatal("joblib array wrapper with an unreadable shape", off)
        self.sink.joblib_arrays += 1
        if self.frame_end != NO_FRAME:
            # joblib commits the frame before writing array bytes to the raw file
            if self.src.pos != self.frame_end:
                self.anomaly("joblib array data starts inside a FRAME", off)
            self.frame_end = NO_FRAME
        itemsize, hasobject = _dtype_info(dtype)
        if itemsize is None:
            raise self.fatal("joblib array wrapper with an unreadable dtype", off)
        if hasobject:
            if self.depth >= MAX_NESTED:
                raise self.fatal("joblib object arrays nested too deeply", off)
            inner = PickleMachine(
                self.src, self.sink, on_persistent=self.on_persistent, depth=self.depth + 1
            )
            inner.run()
            return Unknown("joblib object array")
        count = 1
        for d in shape.items:
            count *= d
        if _joblib_reads_padding(state):
            pad = self.src.read(1)[0]
            if pad > 16:
                self.anomaly(f"joblib array padding of {pad} bytes (at most 16 expected)", off)
            self.src.skip(pad)
        self.src.skip(count * itemsize)
        return Unknown("joblib array")

    def op_persid(self, off: int) -> None:
        pid = self._line(off, "PERSID")
        self.stack.append(self._persistent(pid))

    def op_binpersid(self, off: int) -> None:
        self.stack.append(self._persistent(self.pop(off, "BINPERSID")))

    def _persistent(self, pid: Any) -> Persistent:
        if self.on_persistent is not None:
            self.on_persistent(pid)
        return Persistent(pid)

    def _ext(self, code: int, off: int) -> None:
        self.anomaly(
            f"extension-registry code {code} imports a name through copyreg that cannot "
            "be checked statically",
            off,
        )
        self.stack.append(Unknown("extension"))

    def op_ext1(self, off: int) -> None:
        self._ext(self.src.read(1)[0], off)

    def op_ext2(self, off: int) -> None:
        self._ext(struct.unpack("<H", self.src.read(2))[0], off)

    def op_ext4(self, off: int) -> None:
        self._ext(struct.unpack("<i", self.src.read(4))[0], off)

    # framing
    def op_proto(self, off: int) -> None:
        v = self.src.read(1)[0]
        if v > HIGHEST_PROTOCOL:
            raise self.fatal(f"unsupported pickle protocol {v}", off)
        self.proto = v

    def op_frame(self, off: int) -> None:
        (n,) = struct.unpack("<Q", self.src.read(8))
        if self.frame_end != NO_FRAME and self.src.pos - 9 < self.frame_end:
            self.anomaly("a FRAME starts before the previous frame ends", off)
        rem = self.src.remaining()
        if rem is not None and n > rem:
            self.anomaly(f"FRAME declares {n} bytes but only {rem} remain", off)
        self.frame_end = self.src.pos + n


_PLAUSIBLE_FIRST = frozenset(
    b"\x80(}])NIJKLMFSTUVXcGBClPi\x8c\x8d\x8e\x8f\x95\x88\x89\x8a\x8b\x94\x96\x97dt"
)

_DISPATCH: dict[int, Callable[[PickleMachine, int], None]] = {
    0x28: PickleMachine.op_mark,
    0x30: PickleMachine.op_pop,
    0x31: PickleMachine.op_pop_mark,
    0x32: PickleMachine.op_dup,
    0x46: PickleMachine.op_float,
    0x49: PickleMachine.op_int,
    0x4A: PickleMachine.op_binint,
    0x4B: PickleMachine.op_binint1,
    0x4C: PickleMachine.op_long,
    0x4D: PickleMachine.op_binint2,
    0x4E: PickleMachine.op_none,
    0x50: PickleMachine.op_persid,
    0x51: PickleMachine.op_binpersid,
    0x52: PickleMachine.op_reduce,
    0x53: PickleMachine.op_string,
    0x54: PickleMachine.op_binstring,
    0x55: PickleMachine.op_short_binstring,
    0x56: PickleMachine.op_unicode,
    0x58: PickleMachine.op_binunicode,
    0x61: PickleMachine.op_append,
    0x62: PickleMachine.op_build,
    0x63: PickleMachine.op_global,
    0x64: PickleMachine.op_dict,
    0x7D: PickleMachine.op_empty_dict,
    0x65: PickleMachine.op_appends,
    0x67: PickleMachine.op_get,
    0x68: PickleMachine.op_binget,
    0x69: PickleMachine.op_inst,
    0x6A: PickleMachine.op_long_binget,
    0x6C: PickleMachine.op_list,
    0x5D: PickleMachine.op_empty_list,
    0x6F: PickleMachine.op_obj,
    0x70: PickleMachine.op_put,
    0x71: PickleMachine.op_binput,
    0x72: PickleMachine.op_long_binput,
    0x73: PickleMachine.op_setitem,
    0x74: PickleMachine.op_tuple,
    0x29: PickleMachine.op_empty_tuple,
    0x75: PickleMachine.op_setitems,
    0x47: PickleMachine.op_binfloat,
    0x80: PickleMachine.op_proto,
    0x81: PickleMachine.op_newobj,
    0x82: PickleMachine.op_ext1,
    0x83: PickleMachine.op_ext2,
    0x84: PickleMachine.op_ext4,
    0x85: PickleMachine.op_tuple1,
    0x86: PickleMachine.op_tuple2,
    0x87: PickleMachine.op_tuple3,
    0x88: PickleMachine.op_true,
    0x89: PickleMachine.op_false,
    0x8A: PickleMachine.op_long1,
    0x8B: PickleMachine.op_long4,
    0x42: PickleMachine.op_binbytes,
    0x43: PickleMachine.op_short_binbytes,
    0x8C: PickleMachine.op_short_binunicode,
    0x8D: PickleMachine.op_binunicode8,
    0x8E: PickleMachine.op_binbytes8,
    0x8F: PickleMachine.op_empty_set,
    0x90: PickleMachine.op_additems,
    0x91: PickleMachine.op_frozenset,
    0x92: PickleMachine.op_newobj_ex,
    0x93: PickleMachine.op_stack_global,
    0x94: PickleMachine.op_memoize,
    0x95: PickleMachine.op_frame,
    0x96: PickleMachine.op_bytearray8,
    0x97: PickleMachine.op_next_buffer,
    0x98: PickleMachine.op_readonly_buffer,
}


_TABLE: list[Callable[[PickleMachine, int], None] | None] = [_DISPATCH.get(c) for c in range(256)]


#: what C's strtol(s, 0) reads: blanks, a sign, then hex (0x..), octal (0..) or decimal
_STRTOL = re.compile(rb"[ \t\n\v\f\r]*([+-]?)(?:0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))")


def _latin1(data: bytes) -> bytes | None:
    """UTF-8 text of latin-1 characters (as protocols 0-2 store bytes) back to the bytes."""
    try:
        return data.decode("utf-8", "surrogatepass").encode("latin-1")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return None


def _c_str(line: bytes) -> bytes:
    """The line as C code sees it: CPython's unpickler hands INT, LONG, FLOAT, PUT and GET
    lines to C parsers (``strtol``, ``PyLong_FromString``, ``PyOS_string_to_double``)
    that stop at the first NUL byte, so ``I1\\x00junk`` is the number 1."""
    k = line.find(b"\0")
    return line if k < 0 else line[:k]


def _c_int(line: bytes) -> int | None:
    """An INT line as CPython's unpickler reads it (``load_int``): ``strtol(s, 0)`` when its
    end pointer lands on the newline or a NUL (so ``0x10`` is 16, ``010`` is 8 and
    ``1\\x00junk`` is 1), else ``PyLong_FromString(s, 0)`` on the text before the first NUL,
    which is Python's ``int(s, 0)`` (also what pickle's pure-Python unpickler, used by
    joblib, reads); None when every reading rejects it."""
    if line[:1] == b"\0":
        return 0  # strtol converts nothing and leaves its end pointer on the NUL: accepted
    m = _STRTOL.match(line)
    if m is not None and (m.end() == len(line) or line[m.end()] == 0):
        sign, hexa, octal, dec = m.groups()
        v = int(hexa, 16) if hexa is not None else int(octal, 8) if octal is not None else int(dec)
        v = -v if sign == b"-" else v
        if -(1 << 63) <= v < 1 << 63:  # beyond a C long strtol overflows: the fallback reads it
            return v
    return _py_int(_c_str(line))


def _c_long(line: bytes) -> int | None:
    """A LONG line as ``load_long`` reads it: one trailing ``L`` dropped, then
    ``PyLong_FromString(s, 0)`` on the text before the first NUL (``int(s, 0)``)."""
    return _py_int(_c_str(line[:-1] if line.endswith(b"L") else line))


#: what ``PyOS_string_to_double`` reads: no leading blanks, no underscores, no hex
_C_FLOAT = re.compile(
    rb"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan)", re.I
)


def _c_float(line: bytes) -> float | None:
    """A FLOAT line as either unpickler reads it; None when both reject it.

    CPython's ``load_float`` accepts the number when the parser's end pointer lands on
    the newline or a NUL (``1.5\\x00junk`` is 1.5) and fails on overflow; the pure-Python
    unpickler (joblib's) calls ``float()``, which also takes blanks, underscores and
    ``1e999`` (inf). A scanner must read on wherever either of them does.
    """
    m = _C_FLOAT.match(line)
    if m is not None and (m.end() == len(line) or line[m.end()] == 0):
        return float(m.group())
    try:
        return float(line)
    except ValueError:
        return None


def _memo_index(line: bytes) -> int | None:
    """A PUT/GET index: ``PyLong_FromString(s, 10)`` on the text before the first NUL."""
    try:
        return int(_c_str(line).decode("ascii"), 10)
    except (ValueError, UnicodeDecodeError):
        return None


def _py_int(text: bytes) -> int | None:
    try:
        return int(text.decode("ascii"), 0)
    except (ValueError, UnicodeDecodeError):
        return None


def _joblib_reads_padding(state: Seq) -> bool:
    """Whether joblib reads a padding byte before the array: only when the wrapper's
    ``numpy_array_alignment_bytes`` is set and not None (joblib >= 1.2 writes None for
    arrays dumped to unseekable files; older files lack the key). A value the machine
    cannot see (an evicted memo entry...) cannot tell how many bytes joblib skips."""
    if "numpy_array_alignment_bytes" not in state.items[0::2]:
        return False
    value = state.get("numpy_array_alignment_bytes")
    if value is None:
        return False
    if isinstance(value, int):
        return True
    raise PickleError(
        f"joblib array wrapper with an unreadable alignment ({_short(value)}): where joblib "
        "reads the array cannot be told"
    )


def _dtype_info(dtype: Any) -> tuple[int | None, bool]:
    """(itemsize in bytes, holds Python objects) of a symbolic ``numpy.dtype`` call, as the
    unpickler builds it (see :func:`_build_dtype`); None when it cannot be told."""
    built = _build_dtype(dtype)
    if built is None:
        return None, True
    return built.itemsize, built.hasobject


def _build_dtype(dtype: Any) -> Any:
    """The numpy dtype a symbolic ``numpy.dtype(typestr, align, copy)`` call and its BUILD
    state make: numpy's own constructor (copy=True, never one of numpy's shared instances)
    and ``__setstate__``, fed only literals and dtypes built the same way (building a
    dtype never unpickles anything). numpy ignores a state's element size for types of
    fixed size (``'<f8'`` with ``elsize=4`` is still 8 bytes); its flags set
    ``hasobject``. None when the dtype cannot be told or numpy refuses it."""
    if not isinstance(dtype, Call) or not isinstance(dtype.func, Global):
        return None
    if dtype.func.full != "numpy.dtype" or not isinstance(dtype.args, Seq):
        return None
    typestr = dtype.args.items[0] if dtype.args.items else None
    if not isinstance(typestr, str) or not _DTYPE_STR.fullmatch(typestr):
        return None
    state = None if dtype.state is None else _literal(dtype.state)
    if state is _NOT_LITERAL:
        return None
    try:
        return _numpy_dtype(typestr, state)  # equal dtypes are built once per process
    except TypeError:  # a key that cannot be hashed (a list in the state...)
        return _numpy_dtype.__wrapped__(typestr, state)


@functools.lru_cache(maxsize=1024)
def _numpy_dtype(typestr: str, state: Any) -> Any:
    import numpy as np

    try:
        built = np.dtype(typestr, False, True)
        if state is not None:
            built.__setstate__(_thaw(state))  # type: ignore[attr-defined]
    except Exception:  # numpy refuses the type or the state: the load fails there
        return None
    return built


_NOT_LITERAL = object()
_PLAIN = frozenset({type(None), bool, int, float, str, bytes})


def _literal(value: Any) -> Any:
    """A symbolic value as the plain Python value it stands for (tuples, dicts, nested
    dtypes), or ``_NOT_LITERAL``."""
    cls = value.__class__
    if cls in _PLAIN:
        return value
    if cls is Call:
        built = _build_dtype(value)
        return _NOT_LITERAL if built is None else built
    if cls is not Seq or value.n != len(value.items):
        return _NOT_LITERAL
    items = []
    for v in value.items:
        if v.__class__ not in _PLAIN:
            v = _literal(v)
            if v is _NOT_LITERAL:
                return _NOT_LITERAL
        items.append(v)
    if value.kind == "tuple":
        return tuple(items)
    if value.kind == "dict" and len(items) % 2 == 0:
        return _Dict(zip(items[0::2], items[1::2], strict=True))
    return _NOT_LITERAL


class _Dict(tuple):  # type: ignore[type-arg]
    """A dict's (key, value) pairs, hashable so that equal dtype states share one build."""


def _thaw(value: Any) -> Any:
    if isinstance(value, _Dict):
        return {k: _thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return tuple(_thaw(v) for v in value)
    return value


def _trailing_pickle(src: Source, sink: Sink) -> bool:
    """Data after a pickle that starts with a protocol 0/1 opcode: scanned as a pickle
    (True) if it parses as one; otherwise only the imports met on the way are kept,
    since an unpickler runs everything before the point where it fails."""
    mark = sink.checkpoint()
    try:
        PickleMachine(src, sink).run()
    except (PickleError, Truncated):
        sink.rollback(mark, keep_rules=("MLW-SCN-001", "MLW-SCN-002"))
        return False
    return True


def scan_pickle_stream(
    src: Source,
    sink: Sink,
    *,
    on_persistent: Callable[[Any], None] | None = None,
    max_pickles: int = 64,
    count: int | None = None,
) -> int:
    """Scan consecutive pickles from ``src``; returns how many were parsed.

    The first pickle must parse (else PickleError/Truncated propagates). With
    ``count`` set, exactly that many are required (legacy PyTorch's five). Otherwise
    any later data that looks like a pickle is scanned too (a loader reading several
    pickles from one stream runs them all); data that does not parse as one is left
    alone, since no unpickler would run it.
    """
    parsed = 0
    while True:
        if count is not None and parsed >= count:
            return parsed
        if parsed and count is None:
            if src.at_eof() or parsed >= max_pickles:
                return parsed
            head = src.peek(2)
            if not (head[:1] == b"\x80" and len(head) == 2 and 2 <= head[1] <= 5):
                at, left = src.pos, src.remaining()
                if head[:1] and head[0] in _PLAUSIBLE_FIRST and _trailing_pickle(src, sink):
                    parsed += 1  # a protocol 0/1 pickle: a second load() runs it too
                    continue
                sink.add(
                    "MLW-SCN-011",
                    Severity.INFO,
                    f"{left if left is not None else 'some'} bytes of non-pickle "
                    "data after the last pickle",
                    offset=at,
                )
                return parsed
            try:
                PickleMachine(src, sink, on_persistent=on_persistent).run()
            except (PickleError, Truncated) as exc:
                sink.add(
                    "MLW-SCN-011",
                    Severity.LOW,
                    f"trailing data after pickle {parsed} looks like a pickle but does not "
                    f"parse ({exc})",
                    offset=src.pos,
                )
                return parsed + 1
            parsed += 1
            continue
        PickleMachine(src, sink, on_persistent=on_persistent).run()
        parsed += 1
