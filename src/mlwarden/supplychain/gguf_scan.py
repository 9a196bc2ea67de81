"""GGUF (llama.cpp) files: check the header, metadata and chat templates, never the model.

A GGUF file holds no code for its loader, but two parts of it have hurt users:

* **Chat templates** (``tokenizer.chat_template`` and ``tokenizer.chat_template.<name>``)
  are Jinja2 programs. llama-cpp-python rendered them outside Jinja's sandbox
  (CVE-2024-34359), so a template that walks Python internals (``__class__``,
  ``__globals__``, ``__subclasses__``, the ``attr`` filter, the ``cycler``/``joiner``/
  ``lipsum`` globals) runs code the moment a chat is formatted. Templates are parsed
  with Jinja's own parser (never rendered) and checked node by node: MLW-SCN-013.
* **Declared sizes.** The reference parser once trusted declared string lengths, array
  counts and tensor dimensions (CVE-2024-21802, CVE-2024-21825, CVE-2024-21836 and
  others: heap overflows). A header whose counts, lengths, types, dimensions, alignment
  or tensor extents disagree with the file is reported (MLW-SCN-009); one that runs past
  the end of the file cannot be scanned at all (an error, never safe).

Format: ``GGUF``, uint32 version (1-3), tensor and key/value counts (uint32 in version
1, uint64 since 2), the key/value pairs, the tensor infos, padding to
``general.alignment`` (32 by default), then the tensor data, which is never read.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from mlwarden.core.severity import Severity
from mlwarden.supplychain.results import Sink
from mlwarden.supplychain.stream import Source, Truncated

GGUF_MAGIC = b"GGUF"
MAX_DIMS = 4  #: GGML_MAX_DIMS
MAX_KEY = 65_535  #: longest key kept (bytes)
MAX_TEMPLATE = 1 << 20  #: longest chat template checked (bytes)
MAX_NESTING = 3  #: arrays of arrays
INT64_MAX = (1 << 63) - 1

#: value type -> (struct format, size) for the fixed-size scalars
SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),  # UINT8
    1: ("<b", 1),  # INT8
    2: ("<H", 2),  # UINT16
    3: ("<h", 2),  # INT16
    4: ("<I", 4),  # UINT32
    5: ("<i", 4),  # INT32
    6: ("<f", 4),  # FLOAT32
    7: ("<?", 1),  # BOOL
    10: ("<Q", 8),  # UINT64
    11: ("<q", 8),  # INT64
    12: ("<d", 8),  # FLOAT64
}
STRING, ARRAY = 8, 9

#: ggml tensor type -> (name, elements per block, bytes per block), from ggml.h
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

#: Jinja globals that are the usual first step out of a template into Python
#: (``cycler.__init__.__globals__`` reaches ``os``); no chat template needs them
ESCAPE_GLOBALS = frozenset({"cycler", "joiner", "lipsum", "self"})
#: attributes that reach frames, code or globals without a leading underscore
ESCAPE_ATTRS = frozenset(
    {
        "mro",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "ag_frame",
        "f_globals",
        "f_builtins",
        "f_locals",
        "f_back",
        "tb_frame",
        "co_code",
        "func_globals",
        "func_code",
        "format_map",
    }
)
_ESCAPED_UNDERSCORE = re.compile(
    r"\\x5f|\\u005f|\\U0000005f|\\137|\\N\{LOW LINE\}|&#95;|&#x5f;", re.IGNORECASE
)


def is_gguf(head: bytes) -> bool:
    return head[:4] == GGUF_MAGIC and len(head) >= 8


class _Reader:
    def __init__(self, src: Source, version: int) -> None:
        self.src = src
        self.count_fmt, self.count_size = ("<I", 4) if version == 1 else ("<Q", 8)

    def u32(self) -> int:
        return int(struct.unpack("<I", self.src.read(4))[0])

    def count(self) -> int:
        return int(struct.unpack(self.count_fmt, self.src.read(self.count_size))[0])

    def need(self, n: int, what: str) -> None:
        rem = self.src.remaining()
        if rem is not None and n > rem:
            raise Truncated(
                f"GGUF {what} declares {n} bytes but only {rem} remain (a length that would "
                "overflow a loader's buffer)"
            )

    def string(self, keep: int, what: str) -> str | None:
        n = self.count()
        self.need(n, what)
        if n > keep:
            self.src.skip(n)
            return None
        return self.src.read(n).decode("utf-8", "replace")


def scan_gguf(src: Source, sink: Sink) -> str:
    """Check a GGUF stream; returns its format name (``gguf``)."""

    def bad(message: str) -> None:
        sink.add("MLW-SCN-009", Severity.HIGH, message)

    if src.read(4) != GGUF_MAGIC:
        raise Truncated("not a GGUF file")
    (version,) = struct.unpack("<I", src.read(4))
    if version not in (1, 2, 3):
        raise Truncated(f"unsupported GGUF version {version} (this scanner knows 1-3)")
    r = _Reader(src, version)
    n_tensors, n_kv = r.count(), r.count()
    # every pair needs a key length, a type and a value; every tensor info at least
    # a name length, a dimension count, one dimension, a type and an offset
    r.need(n_kv * (r.count_size + 5) + n_tensors * (2 * r.count_size + 16), "header")
    alignment = 32
    templates: list[tuple[str, str]] = []
    keys: set[str] = set()
    for k in range(n_kv):
        key = r.string(MAX_KEY, "key") or f"<key {k} of more than {MAX_KEY} bytes>"
        if key in keys:
            bad(f"metadata key {key!r} appears twice (loaders disagree on which one wins)")
        keys.add(key)
        vtype = r.u32()
        is_template = key == "tokenizer.chat_template" or key.startswith("tokenizer.chat_template.")
        value = _value(r, vtype, key, 0, MAX_TEMPLATE if is_template else 256)
        if key == "general.alignment":
            if (
                not isinstance(value, int)
                or vtype != 4
                or value <= 0
                or value & (value - 1)
                or value > 1 << 20
            ):
                bad(f"general.alignment is {value!r}; it must be a uint32 power of two")
            else:
                alignment = value
        if is_template:
            if isinstance(value, str):
                templates.append((key, value))
            elif vtype == STRING:
                bad(f"{key} is longer than {MAX_TEMPLATE} bytes; it was not checked")
    spans: list[tuple[int, int, str]] = []
    for k in range(n_tensors):
        name = r.string(256, "tensor name") or f"<tensor {k} with a long name>"
        n_dims = r.u32()
        if n_dims > 64:
            raise Truncated(f"tensor {name!r} declares {n_dims} dimensions")
        dims = [r.count() for _ in range(n_dims)]
        ttype = r.u32()
        (offset,) = struct.unpack("<Q", src.read(8))
        nbytes = _tensor_bytes(name, n_dims, dims, ttype, bad)
        if offset % alignment:
            bad(f"tensor {name!r} data offset {offset} is not aligned to {alignment}")
        if nbytes is not None:
            spans.append((offset, offset + nbytes, name))
    data_start = -(-src.pos // alignment) * alignment
    size = src.size
    spans.sort()
    end = 0
    for begin, stop, name in spans:
        if begin < end:
            bad(f"tensor {name!r} overlaps the previous tensor's data (offset {begin} < {end})")
        end = max(end, stop)
        if size is not None and data_start + stop > size:
            bad(
                f"tensor {name!r} ends at byte {data_start + stop}, past the end of the "
                f"file ({size} bytes)"
            )
    for key, text in templates:
        check_chat_template(text, key, sink)
    return "gguf"


def _value(r: _Reader, vtype: int, key: str, depth: int, keep: int) -> Any:
    if vtype in SCALARS:
        fmt, size = SCALARS[vtype]
        return struct.unpack(fmt, r.src.read(size))[0]
    if vtype == STRING:
        return r.string(keep, f"string value of {key!r}")
    if vtype == ARRAY:
        etype = r.u32()
        n = r.count()
        if etype in SCALARS:
            total = n * SCALARS[etype][1]
            r.need(total, f"array {key!r}")
            r.src.skip(total)
            return None
        if etype == STRING:
            r.need(n * r.count_size, f"array {key!r}")
            for _ in range(n):
                r.string(0, f"string in array {key!r}")
            return None
        if etype == ARRAY:
            if depth + 1 >= MAX_NESTING:
                raise Truncated(f"arrays nested more than {MAX_NESTING} deep in {key!r}")
            r.need(n * (4 + r.count_size), f"array {key!r}")
            for _ in range(n):
                _value(r, ARRAY, key, depth + 1, 0)
            return None
        raise Truncated(f"array {key!r} has unknown element type {etype}")
    raise Truncated(f"metadata {key!r} has unknown value type {vtype}")


def _tensor_bytes(name: str, n_dims: int, dims: list[int], ttype: int, bad: Any) -> int | None:
    if not 1 <= n_dims <= MAX_DIMS:
        bad(f"tensor {name!r} has {n_dims} dimensions (ggml allows 1 to {MAX_DIMS})")
    info = GGML_TYPES.get(ttype)
    if info is None:
        bad(f"tensor {name!r} has unknown ggml type {ttype}")
        return None
    numel = 1
    for d in dims:
        numel *= d
    if any(d <= 0 for d in dims) or numel > INT64_MAX:
        bad(f"tensor {name!r} has dimensions {dims} (zero, or overflowing 64 bits)")
        return None
    tname, block, block_bytes = info
    if dims and dims[0] % block:
        bad(
            f"tensor {name!r} of type {tname}: first dimension {dims[0]} is not a multiple of {block}"
        )
        return None
    return numel // block * block_bytes


#: text without any of these cannot hold a construct the template check reports (each
#: check needs one: a dunder, an attribute or string starting with '_', a listed name or
#: attribute, an escaped underscore); ``could_escape`` adds computed subscripts
_RISKY = re.compile(
    r"__|\.\s*_|['\"]_|attr|cycler|joiner|lipsum|self|mro|gi_|cr_frame|ag_frame|f_globals|"
    r"f_builtins|f_locals|f_back|tb_frame|co_code|func_|format_map|\\[xuUN0-7]|&#"
)
#: subscripts that are one string literal, or names, numbers and arithmetic (messages[0],
#: message['content'], messages[loop.index0 - 1], messages[1:])
_PLAIN_SUBSCRIPT = re.compile(r"""\[\s*(?:'[^'\\\[\]]*'|"[^"\\\[\]]*"|[\w.:+\-*/%\s]*)\s*\]""")


def could_escape(text: str) -> bool:
    """False only when no construct :func:`check_chat_template` reports can be in ``text``
    (so the Jinja parser need not run): no risky token, and every subscript a plain one
    (a property test checks this against the parser-based check)."""
    if _RISKY.search(text):
        return True
    # a subscript that is not plain (an inner subscript, a list, an expression) may
    # compute a name when strings, '~' or filters are about
    rest = _PLAIN_SUBSCRIPT.sub("", text)
    return "[" in rest and any(c in text for c in "~|'\"")


def check_chat_template(text: str, where: str, sink: Sink, *, known: bool = True) -> None:
    """Report Jinja2 constructs in a chat template that reach Python internals.

    The template is parsed with Jinja's parser and never rendered; text in which
    :func:`could_escape` finds nothing is not parsed at all. ``known``: the text is
    declared a template (a GGUF key, a ``chat_template`` entry); otherwise (a text file
    that merely holds Jinja markers) text that does not parse is not reported.
    """
    if not could_escape(text):
        return
    from jinja2 import Environment, nodes
    from jinja2.exceptions import TemplateSyntaxError

    found: dict[str, Severity] = {}

    def note(what: str, severity: Severity) -> None:
        found.setdefault(what, severity)

    if _ESCAPED_UNDERSCORE.search(text):
        note("spells an underscore as an escape sequence (hiding a __dunder__ name)", Severity.HIGH)
    try:
        tree = Environment().parse(text)
    except TemplateSyntaxError as exc:
        if not known:
            return
        sink.add(
            "MLW-SCN-013",
            Severity.LOW,
            f"{where}: chat template is not valid Jinja2 (line {exc.lineno}: {exc.message}); "
            "no loader can render it",
        )
        if "__" in text:
            note("names a __dunder__ attribute", Severity.CRITICAL)
    else:
        node: Any
        checked = (nodes.Getattr, nodes.Getitem, nodes.Filter, nodes.Name, nodes.Const)
        for node in tree.find_all(checked):  # one walk over the tree
            if isinstance(node, nodes.Getattr):
                if node.attr.startswith("_") or node.attr in ESCAPE_ATTRS:
                    note(f"reads attribute {node.attr!r}", Severity.CRITICAL)
            elif isinstance(node, nodes.Getitem):
                arg = node.arg
                if isinstance(arg, nodes.Const):
                    key = arg.value
                    if isinstance(key, str) and (key.startswith("_") or key in ESCAPE_ATTRS):
                        note(f"reads item {key!r}", Severity.CRITICAL)
                elif isinstance(arg, nodes.Concat | nodes.Filter) or any(
                    isinstance(n, nodes.Concat | nodes.Filter)
                    or (isinstance(n, nodes.Const) and isinstance(n.value, str))
                    for n in arg.find_all((nodes.Concat, nodes.Filter, nodes.Const))
                ):
                    # a key computed from strings ('_'*2 ~ 'class' ~ '_'*2, |join,
                    # |format...) reads an attribute no constant names; numbers are fine
                    note("reads an item whose name is computed from strings", Severity.HIGH)
            elif isinstance(node, nodes.Filter):
                if node.name == "attr":
                    note("uses the 'attr' filter (reads any attribute by name)", Severity.HIGH)
            elif isinstance(node, nodes.Name):
                if node.name in ESCAPE_GLOBALS and node.ctx == "load":
                    note(f"uses the Jinja global {node.name!r}", Severity.HIGH)
            elif isinstance(node.value, str) and (
                "__" in node.value or (node.value and not node.value.strip("_"))
            ):  # a Const
                note(f"builds names from {node.value[:40]!r} (a __dunder__ name)", Severity.HIGH)
    if not found:
        return
    worst = max(found.values(), key=lambda s: s.rank)
    sink.add(
        "MLW-SCN-013",
        worst,
        f"{where}: chat template reaches Python internals when rendered ("
        + "; ".join(list(found)[:4])
        + "); loaders that render templates outside Jinja's sandbox run this code",
    )
