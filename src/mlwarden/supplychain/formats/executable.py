"""Native executables and scripts where a model file should be (MLW-SCN-020).

Recognised at the start of any stream the scanner reads: the file itself, an archive
member, or bytes a pickle carries. ELF (Linux), PE (Windows; ``MZ`` with a ``PE\\0\\0``
header), Mach-O (macOS, thin and fat), ``#!`` scripts, and Actually Portable Executables
(``MZqFpD``: a llamafile is one, with its GGUF weights in an appended zip, which the
scanner also reads). No model loader runs these bytes, but anyone who runs the file
does, and a program has no place among model files: high.
"""

from __future__ import annotations

from mlwarden.core.severity import Severity
from mlwarden.supplychain.formats.base import FormatScanner, Scan, u32le
from mlwarden.supplychain.stream import Source

RULE = "MLW-SCN-020"
_MACHO = (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")
_FAT = b"\xca\xfe\xba\xbe"  # also a Java class file's magic: told apart by the arch count
_APE = b"MZqFpD"


def kind_of(head: bytes) -> str | None:
    """``elf``, ``pe``, ``ape``, ``macho``, ``script`` or None, from the first bytes."""
    if head.startswith(b"\x7fELF") and head[4:5] in (b"\x01", b"\x02"):
        return "elf"
    if head.startswith(_APE):
        return "ape"
    if head.startswith(b"MZ") and len(head) >= 0x40:
        at = u32le(head, 0x3C)
        if at + 4 <= len(head):
            return "pe" if head[at : at + 4] == b"PE\x00\x00" else None
        return None
    if head[:4] in _MACHO:
        return "macho"
    if head.startswith(_FAT) and 1 <= int.from_bytes(head[4:8], "big") <= 20:
        return "macho"
    if head.startswith((b"#!/", b"#! /")):
        return "script"
    return None


_WHAT = {
    "elf": "a native executable or shared library (ELF)",
    "pe": "a Windows executable or DLL (PE)",
    "macho": "a macOS executable or library (Mach-O)",
    "script": "a script with a #! interpreter line",
    "ape": (
        "an Actually Portable Executable (a llamafile, or another cosmopolitan program): "
        "running the file runs its native code on Linux, macOS and Windows"
    ),
}


def _recognise(head: bytes, size: int | None) -> bool:
    return kind_of(head) is not None


def scan_executable(src: Source, scan: Scan) -> str:
    """Report the executable; an APE's appended zip (llamafile weights) is read by the
    dispatcher's polyglot check, like any zip behind other bytes."""
    head = src.peek(4096)
    kind = kind_of(head) or "executable"
    line = ""
    if kind == "script":
        line = head.split(b"\n", 1)[0][:120].decode("utf-8", "replace")
        line = f" ({line!r})"
    scan.sink.add(RULE, Severity.HIGH, f"{_WHAT.get(kind, kind)}{line} where a model was expected")
    return {"ape": "llamafile"}.get(kind, kind)


FORMAT = FormatScanner("executable", _recognise, scan_executable)
