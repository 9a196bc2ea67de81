"""XML documents (PMML models, OpenVINO IR ``.xml``, any other XML) checked for the
constructs that make a parser reach outside the file (MLW-SCN-022): external entities
and external DTDs (XXE: a resolving parser reads local files or fetches URLs, as Java
PMML evaluators did), entity declarations (billion-laughs expansion) and XInclude.

Parsed with expat, incrementally, with handlers that record and never resolve: no
entity is expanded (parsing stops at the first entity declaration), no DTD is fetched.
The root element names the format: ``PMML`` -> ``pmml``, OpenVINO's ``net`` -> ``openvino-ir``
(whose ``.bin`` of the same name, raw tensors, is credited as its weights in a folder scan).
"""

from __future__ import annotations

import re
from typing import Any

from mlwarden.core.severity import Severity
from mlwarden.supplychain.formats.base import FormatScanner, Scan
from mlwarden.supplychain.stream import Source

RULE = "MLW-SCN-022"
XINCLUDE = "http://www.w3.org/2001/XInclude"
_START = re.compile(rb"\A(\xef\xbb\xbf)?\s*<(\?xml[\s?]|!DOCTYPE\s|!--|[A-Za-z_][\w.:-]*[\s/>])")
CHUNK = 1 << 20


def _recognise(head: bytes, size: int | None) -> bool:
    return _START.match(head) is not None


class _Stop(Exception):
    """Raised from a handler: parsing goes no further (an entity was declared)."""


class _Walk:
    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.root: str | None = None
        self.attrs: dict[str, str] = {}

    def doctype(self, name: str, sysid: str | None, pubid: str | None, internal: int) -> None:
        if sysid or pubid:
            self.sink.add(
                RULE,
                Severity.HIGH,
                f"DOCTYPE {name!r} loads an external DTD ({sysid or pubid!r:.200}): a parser "
                "that resolves it fetches that file or URL",
            )
        elif internal:
            self.sink.add(RULE, Severity.LOW, f"DOCTYPE {name!r} with an internal DTD subset")

    def entity(
        self,
        name: str,
        is_param: int,
        value: str | None,
        base: Any,
        sysid: str | None,
        pubid: str | None,
        notation: str | None,
    ) -> None:
        kind = "parameter entity" if is_param else "entity"
        if sysid or pubid:
            self.sink.add(
                RULE,
                Severity.CRITICAL,
                f"external {kind} {name!r} -> {sysid or pubid!r:.200} (XXE): a parser that "
                "resolves entities reads that file or URL into the document",
            )
        else:
            self.sink.add(
                RULE,
                Severity.HIGH,
                f"{kind} {name!r} declared: entity expansion can blow up a parser's memory "
                "(billion laughs); model files have no use for entities",
            )
        raise _Stop

    def start(self, name: str, attrs: dict[str, str]) -> None:
        uri, _, local = name.rpartition(" ")
        if self.root is None:
            self.root, self.attrs = local, attrs
        if uri == XINCLUDE:
            href = attrs.get("href", "")
            self.sink.add(
                RULE,
                Severity.CRITICAL,
                f"XInclude element <{local} href={href!r:.200}>: a parser with XInclude "
                "processing reads that file or URL into the document",
            )


def scan_xml(src: Source, scan: Scan) -> str:
    """Walk an XML document without resolving anything; returns its format name."""
    from xml.parsers import expat

    walk = _Walk(scan.sink)
    parser: Any = expat.ParserCreate(namespace_separator=" ")
    parser.StartDoctypeDeclHandler = walk.doctype
    parser.EntityDeclHandler = walk.entity
    parser.StartElementHandler = walk.start
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    try:
        while True:
            chunk = src.peek(CHUNK)
            src.skip(len(chunk))
            parser.Parse(chunk, not chunk)
            if not chunk:
                break
    except _Stop:
        pass
    except expat.ExpatError:
        return (
            "xml" if walk.root else "text"
        )  # HTML and other tag soup: checked as far as it parsed
    if walk.root == "PMML":
        return "pmml"
    if walk.root == "net" and "version" in walk.attrs:
        if scan.path is not None:  # its weights: the .bin of the same name, raw tensors
            scan.sink.result.external_data.append(str(scan.path.with_suffix(".bin").resolve()))
        return "openvino-ir"
    return "xml"


FORMAT = FormatScanner("xml", _recognise, scan_xml)
