"""R serialisations (``saveRDS`` ``.rds``, ``save`` ``.rda``/``.RData``; the gzip, bzip2
or xz wrapper is undone by the dispatcher) walked item by item (MLW-SCN-023).

``readRDS``/``load`` rebuild every object the stream holds, and some hold code:
promises (unevaluated code that runs when the value is first touched, CVE-2024-27322:
critical), closures and byte code (functions that run when called, e.g. by
``predict``: high; critical when they call ``system``, ``eval``, ``download.file``...),
environments and namespace references (a namespace is loaded, running the package's
``.onLoad``), ALTREP objects of other packages. The walk follows R's ``serialize.c``
(format versions 2 and 3, XDR and native binary): it reads lengths and skips payloads,
never building the objects; pairlists are walked in a loop, nesting is capped. The ASCII
form (``saveRDS(ascii = TRUE)``, ``save(ascii = TRUE)``) is read as R's ``InWord`` and
``InString`` read it: numbers as whitespace-separated words (``NA``, ``Inf``...), raw
bytes as hex words, strings as exactly their declared number of characters after
whitespace, with C escapes and ``\\ooo`` octal.
"""

from __future__ import annotations

import struct
from typing import Any

from mlwarden.core.severity import Severity
from mlwarden.supplychain.formats.base import FormatScanner, Scan
from mlwarden.supplychain.stream import Source, Truncated

RULE = "MLW-SCN-023"
MAX_DEPTH = 200  #: nesting of vectors in vectors (pairlist tails are a loop, not nesting)
MAX_ITEMS = 50_000_000
# R's SEXP types (Rinternals.h) and serialize.c's pseudo-types
SYM, LIST, CLO, ENV, PROM, LANG, SPECIAL, BUILTIN, CHAR = 1, 2, 3, 4, 5, 6, 7, 8, 9
LGL, INT, REAL, CPLX, STR, DOT, VEC, EXPR, BCODE = 10, 13, 14, 15, 16, 17, 19, 20, 21
EXTPTR, WEAKREF, RAW, S4 = 22, 23, 24, 25
REF, NIL, GLOBALENV, UNBOUND, MISSING, BASENS, NAMESPACE, PACKAGE, PERSIST = (
    255,
    254,
    253,
    252,
    251,
    250,
    249,
    248,
    247,
)
CLASSREF, GENERICREF, BCREPDEF, BCREPREF, EMPTYENV, BASEENV = 246, 245, 244, 243, 242, 241
ATTRLANG, ATTRLIST, ALTREP = 240, 239, 238
_NOTHING = {NIL, GLOBALENV, UNBOUND, MISSING, BASENS, EMPTYENV, BASEENV, S4, WEAKREF}
_PAIRS = {LIST, LANG, CLO, PROM, DOT, ATTRLANG, ATTRLIST}
_WIDTH = {LGL: 4, INT: 4, REAL: 8, CPLX: 16, RAW: 1}
#: functions whose call in a closure or promise reaches the system, files, network or eval
DANGEROUS = frozenset(
    [
        "system",
        "system2",
        "shell",
        "shell.exec",
        "pipe",
        "eval",
        "evalq",
        "parse",
        "source",
        "sys.source",
        "download.file",
        "url",
        "file",
        "gzfile",
        "socketConnection",
        "readRDS",
        "load",
        "dyn.load",
        "library",
        "require",
        "requireNamespace",
        "loadNamespace",
        "Sys.setenv",
        "do.call",
        "match.fun",
        ".Call",
        ".C",
        ".External",
        ".Internal",
        ".Primitive",
        "unlink",
        "file.remove",
        "writeLines",
        "sink",
        "processx::run",
    ]
)
_BASE_PACKAGES = frozenset(
    [
        "base",
        "stats",
        "utils",
        "methods",
        "graphics",
        "grDevices",
        "datasets",
        "tools",
        "compiler",
        "grid",
        "splines",
        "stats4",
        "parallel",
        "tcltk",
    ]
)


def _recognise(head: bytes, size: int | None) -> bool:
    body = head[5:] if head[:4] in (b"RDX2", b"RDX3", b"RDB2", b"RDB3", b"RDA2", b"RDA3") else head
    if head[:4] in (b"RDA2", b"RDA3") or body[:2] == b"A\n":
        return body[:2] == b"A\n" and body[2:4] in (b"2\n", b"3\n")
    if body[:2] == b"X\n":
        return body[2:6] in (b"\x00\x00\x00\x02", b"\x00\x00\x00\x03")
    if body[:2] == b"B\n":
        return body[2:6] in (b"\x02\x00\x00\x00", b"\x03\x00\x00\x00")
    return False


class _Walk:
    def __init__(self, src: Source, xdr: bool) -> None:
        self.src = src
        self.fmt = struct.Struct(">i" if xdr else "<i")
        self.refs: list[str | None] = []  #: what each back-reference points to (symbols)
        self.items = 0
        self.kinds: dict[int, int] = {}
        self.code_names: set[str] = set()  #: symbols in closures, promises and byte code
        self.namespaces: set[str] = set()
        self.altrep: list[str] = []
        self.in_code = 0
        self.trail: list[str] | None = None  #: symbols read while reading an ALTREP's info

    def i32(self) -> int:
        return int(self.fmt.unpack(self.src.read(4))[0])

    def length(self) -> int:
        n = self.i32()
        if n == -1:
            hi, lo = self.i32(), self.i32()
            n = (hi << 32) + (lo & 0xFFFFFFFF)
        if n < 0:
            raise Truncated(f"negative R vector length at offset {self.src.pos}")
        return n

    def text(self, n: int) -> str:
        return self.src.read(n).decode("utf-8", "replace") if n <= 4096 else self._skip(n)

    def values(self, t: int, n: int) -> None:
        """Skip the ``n`` elements of an atomic vector of type ``t``."""
        self.src.skip(n * _WIDTH[t])

    def _skip(self, n: int) -> str:
        self.src.skip(n)
        return ""

    def strvec(self, depth: int) -> list[str]:
        if self.i32() != 0:
            raise Truncated("R string vector reference without its 0 marker")
        return [self.item(depth + 1) or "" for _ in range(self.length())]

    def item(self, depth: int) -> str | None:
        """One item; returns a symbol's or string's text (else None)."""
        if depth > MAX_DEPTH:
            raise Truncated(f"R objects nested deeper than {MAX_DEPTH} levels")
        while True:
            self.items += 1
            if self.items > MAX_ITEMS:
                raise Truncated(f"more than {MAX_ITEMS} R objects")
            flags = self.i32()
            t = flags & 0xFF
            self.kinds[t] = self.kinds.get(t, 0) + 1
            if t in (CLO, PROM):  # environment, formals or value; then the code (CDR)
                self._pair(t, flags, depth)
                self.in_code += 1
                self.item(depth + 1)
                self.in_code -= 1
                return None
            if t in _PAIRS:
                self._pair(t, flags, depth)
                continue  # the tail (CDR) of a pairlist: a loop, not recursion
            return self._other(t, flags, depth)

    def _pair(self, t: int, flags: int, depth: int) -> None:
        if flags & (1 << 9):
            self.item(depth + 1)
        if flags & (1 << 10):
            self.item(depth + 1)
        self.item(depth + 1)

    def _other(self, t: int, flags: int, depth: int) -> str | None:
        if t in _NOTHING:
            if t == WEAKREF:
                self.refs.append(None)
            return None
        if t == REF:
            index = flags >> 8 or self.i32()
            return self.refs[index - 1] if 0 < index <= len(self.refs) else None
        if t in (PERSIST, PACKAGE, NAMESPACE):
            self.refs.append(None)
            names = self.strvec(depth)
            if t == NAMESPACE and names:
                self.namespaces.add(names[0])
            return None
        if t == SYM:
            slot = len(self.refs)
            self.refs.append(None)
            self.refs[slot] = name = self.item(depth + 1)
            if self.in_code and name:
                self.code_names.add(name)
            if self.trail is not None and name:
                self.trail.append(name)
            return name
        if t == ENV:
            self.refs.append(None)
            self.i32()  # locked
            for _ in range(4):  # enclosure, frame, hash table, attributes
                self.item(depth + 1)
            return None
        if t == ALTREP:
            self.trail = []
            self.item(depth + 1)  # info: class and package symbols, type
            self.altrep.append("::".join(reversed(self.trail[:2])))
            self.trail = None
            self.item(depth + 1)  # state
            self.item(depth + 1)  # attributes
            return None
        value = self._vector(t, depth)
        if t != CHAR and flags & (1 << 9):
            self.item(depth + 1)
        return value

    def _vector(self, t: int, depth: int) -> str | None:
        if t == CHAR:
            n = self.i32()
            return None if n == -1 else self.text(n)
        if t in _WIDTH:
            self.values(t, self.length())
        elif t == STR or t in (VEC, EXPR):
            for _ in range(self.length()):
                self.item(depth + 1)
        elif t in (SPECIAL, BUILTIN):
            return self.text(self.i32())
        elif t == EXTPTR:
            self.refs.append(None)
            self.item(depth + 1)
            self.item(depth + 1)
        elif t == BCODE:
            self.i32()  # number of repeated-cell slots
            self.in_code += 1
            self._bc(depth)
            self.in_code -= 1
        else:
            raise Truncated(f"unknown R object type {t} at offset {self.src.pos}")
        return None

    def _bc(self, depth: int) -> None:
        self.item(depth + 1)  # the code: an integer vector
        for _ in range(self.i32()):
            t = self.i32()
            if t == BCODE:
                self._bc(depth + 1)
            elif t in (LANG, LIST, BCREPDEF, BCREPREF, ATTRLANG, ATTRLIST):
                self._bc_lang(t, depth + 1)
            else:
                self.item(depth + 1)

    def _bc_lang(self, t: int, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise Truncated(f"R byte code nested deeper than {MAX_DEPTH} levels")
        while True:
            if t == BCREPREF:
                self.i32()
                return
            if t not in (BCREPDEF, LANG, LIST, ATTRLANG, ATTRLIST):
                self.item(depth + 1)  # after a padding integer
                return
            if t == BCREPDEF:
                self.i32()
                t = self.i32()
            if t in (ATTRLANG, ATTRLIST):
                self.item(depth + 1)
            self.item(depth + 1)  # tag
            self._bc_lang(self.i32(), depth + 1)
            t = self.i32()


_ESCAPES = {
    ord("n"): 10,
    ord("t"): 9,
    ord("v"): 11,
    ord("b"): 8,
    ord("r"): 13,
    ord("f"): 12,
    ord("a"): 7,
}
_SPACE = frozenset(b" \t\n\v\f\r")
MAX_WORD = 1 << 12


class _AsciiWalk(_Walk):
    """The walk over R's ASCII serialisation (serialize.c ``InWord``/``InString``)."""

    def __init__(self, src: Source) -> None:
        super().__init__(src, True)

    def _skip_space(self) -> None:
        while True:
            b = self.src.byte()
            if b < 0:
                raise Truncated("R ASCII serialisation ends inside an item")
            if b not in _SPACE:
                self.src.i -= 1  # the byte was in the buffer: step back onto it
                return

    def word(self) -> bytes:
        self._skip_space()
        chunk = self.src.peek(MAX_WORD + 1)
        end = next((k for k, b in enumerate(chunk) if b in _SPACE), len(chunk))
        if end > MAX_WORD:
            raise Truncated(f"R ASCII word longer than {MAX_WORD} bytes at offset {self.src.pos}")
        return self.src.read(end)

    def i32(self) -> int:
        w = self.word()
        if w == b"NA":
            return -(1 << 31)
        try:
            n = int(w)
        except ValueError:
            where = self.src.pos
            raise Truncated(f"R ASCII integer expected at offset {where}, got {w[:20]!r}") from None
        if not -(1 << 31) <= n < 1 << 31:
            raise Truncated(f"R ASCII integer {n} out of range")
        return n

    def values(self, t: int, n: int) -> None:
        for _ in range(n * (2 if t == CPLX else 1)):
            self.word()  # numbers, NA/NaN/Inf, or two hex digits of a raw byte

    def text(self, n: int) -> str:
        """Exactly ``n`` characters after whitespace, escapes decoded (InString)."""
        self._skip_space()
        out = bytearray()
        for _ in range(n):
            c = self.src.byte()
            if c < 0:
                raise Truncated("R ASCII string ends early")
            if c == 0x5C:  # backslash
                c = self.src.byte()
                if c < 0:
                    raise Truncated("R ASCII string ends inside an escape")
                if 0x30 <= c <= 0x37:
                    d, j = 0, 0
                    while 0x30 <= c <= 0x37 and j < 3:
                        d, j = d * 8 + c - 0x30, j + 1
                        c = self.src.byte()
                    if c >= 0:
                        self.src.i -= 1
                    c = d & 0xFF
                else:
                    c = _ESCAPES.get(c, c)
            if len(out) < 4096:
                out.append(c)
        return out.decode("utf-8", "replace")


def scan_r(src: Source, scan: Scan) -> str:
    """Walk an R serialisation and report the code it carries; returns ``rds``/``rdata``."""
    head = src.peek(16)
    rdata = head[:3] in (b"RDX", b"RDB", b"RDA")
    if rdata:
        src.read(5)
    form = src.read(2)
    walk = _AsciiWalk(src) if form == b"A\n" else _Walk(src, form == b"X\n")
    version = walk.i32()
    walk.i32(), walk.i32()  # writer's and minimal reader's R versions
    if version == 3:
        walk.text(walk.i32())  # native encoding
    walk.item(0)
    _report(walk, scan.sink)
    return "rdata" if rdata else "rds"


def _report(walk: _Walk, sink: Any) -> None:
    k = walk.kinds
    bad = sorted(walk.code_names & DANGEROUS)
    calls = f"; the code calls {', '.join(bad[:12])}" if bad else ""
    if k.get(PROM):
        sink.add(
            RULE,
            Severity.CRITICAL,
            f"{k[PROM]} promise(s): unevaluated R code that runs when the value is first used "
            f"after readRDS/load (CVE-2024-27322){calls}",
        )
    functions = k.get(CLO, 0) + k.get(BCODE, 0)
    if functions:
        sink.add(
            RULE,
            Severity.CRITICAL if bad else Severity.HIGH,
            f"{k.get(CLO, 0)} R function(s) (closures) and {k.get(BCODE, 0)} byte-code "
            f"object(s): they run when called (predict() calls a model's functions){calls}",
        )
    foreign = sorted({ns for ns in walk.namespaces if ns not in _BASE_PACKAGES})
    if foreign:
        sink.add(
            RULE,
            Severity.HIGH,
            f"references the namespaces of {', '.join(foreign[:8])}: loading the file loads "
            "those packages (running their .onLoad code)",
        )
    if k.get(ENV):
        sink.add(RULE, Severity.LOW, f"{k[ENV]} environment(s) (R's variable scopes) are rebuilt")
    if walk.altrep:
        sink.add(
            RULE,
            Severity.LOW,
            f"ALTREP objects ({', '.join(sorted(set(walk.altrep))[:6])}): their class's package "
            "rebuilds them",
        )


FORMAT = FormatScanner("r", _recognise, scan_r)
