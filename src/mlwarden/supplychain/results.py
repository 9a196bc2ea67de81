"""Scan results: one :class:`FileResult` per file, with its verdict and findings.

The JSON form (:meth:`ScanResult.to_dict`) is an interface other tools rely on::

    {"schema_version": "1.0",
     "files": [{"path": ..., "format": ..., "verdict": "safe"|"suspicious"|"unsafe"|"error"|"unknown",
                "findings": [{"rule": ..., "severity": ..., "message": ...,
                              "global": ..., "offset": ..., "member": ...}]}]}

Exit status (:meth:`ScanResult.exit_code`): 0 when every file is safe; 1 when any file
is unsafe, or suspicious with none unscannable; 2 when a file could not be scanned, or
is of a format mlwarden does not know (verdict ``unknown``, unless ``allow_unknown``),
and none is unsafe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlwarden.core.severity import Severity
from mlwarden.supplychain.policy import DEFAULT_POLICY, Policy, Verdict

SCAN_SCHEMA_VERSION = "1.0"

#: Rule ids, titles and what to do about each.
RULES: dict[str, tuple[str, str]] = {
    "MLW-SCN-001": (
        "Model file imports a code-running, file, network or loader callable",
        "Do not load this file. Obtain the model from a trusted source, or ask its author "
        "for a safetensors/ONNX export that cannot run code.",
    ),
    "MLW-SCN-002": (
        "Model file imports a name outside the allow-list",
        "Check the name. If it is a class your code legitimately needs, allow it with "
        "'--allow module.name' or a policy file; otherwise do not load the file.",
    ),
    "MLW-SCN-003": (
        "Pickle stream has opcode-level anomalies no real library writes",
        "Treat the file as hostile: such streams are crafted to confuse scanners.",
    ),
    "MLW-SCN-004": (
        "File could not be scanned",
        "A file the scanner cannot parse is never reported safe. Re-download it, or "
        "convert the model to safetensors.",
    ),
    "MLW-SCN-005": (
        "Keras model contains Python code (Lambda layer or marshalled function)",
        "Do not load it with safe_mode off. Rebuild the layer in code and load only weights.",
    ),
    "MLW-SCN-006": (
        "Keras model references modules outside Keras or custom objects",
        "Load it only if you trust and have reviewed the named modules.",
    ),
    "MLW-SCN-007": (
        "ONNX model reads external data from outside its folder",
        "Do not load it: the runtime would read that file (e.g. secrets) into the model.",
    ),
    "MLW-SCN-008": (
        "Model uses custom operators (ONNX domains, TFLite or TensorFlow op libraries)",
        "Custom operators need a native library; load it only with libraries you trust.",
    ),
    "MLW-SCN-009": (
        "Tensor file header is malformed (safetensors, GGUF)",
        "Re-export the file: offsets, dtypes, counts or lengths disagree with the data.",
    ),
    "MLW-SCN-010": (
        "Archive exceeds the scan limits (possible decompression bomb or deep nesting)",
        "Unpack and inspect the archive by hand in a sandbox.",
    ),
    "MLW-SCN-011": (
        "Container has irregularities that loaders tolerate",
        "Usually harmless, but regenerate the file: it was not written by a standard tool.",
    ),
    "MLW-SCN-013": (
        "Chat template reaches Python internals (Jinja2 template injection)",
        "Do not use the template: remove it, or render chat prompts only in Jinja's "
        "sandbox (transformers does; some GGUF loaders did not, CVE-2024-34359).",
    ),
    "MLW-SCN-014": (
        "TensorFlow graph runs operations that read or write files, use the network or run Python",
        "Do not load or serve it: TensorFlow runs these ops when the model is called. Rebuild "
        "the model from code you control, or export it without them.",
    ),
    "MLW-SCN-020": (
        "Executable program or script where a model file should be (ELF, PE, Mach-O, #!, llamafile)",
        "Do not run it. Keep programs out of model folders and archives; get the weights alone "
        "(a llamafile's GGUF can be extracted and scanned on its own).",
    ),
    "MLW-SCN-021": (
        "Config instantiates callables by name (Hydra _target_ in a NeMo checkpoint or YAML)",
        "Do not restore the model: Hydra imports and calls every _target_. Get the checkpoint "
        "from a trusted source, or review every _target_ and rebuild the config yourself.",
    ),
    "MLW-SCN-022": (
        "XML document reaches outside itself (external entity, external DTD, XInclude, entities)",
        "Do not parse it with a resolving parser (XXE); remove the DOCTYPE and entities, and "
        "parse model XML with entity resolution off (defusedxml).",
    ),
    "MLW-SCN-023": (
        "R serialisation carries code (promises, closures, byte code, package namespaces)",
        "Do not readRDS/load it from an untrusted source (CVE-2024-27322); re-save only the "
        "data you need (coefficients, tables) or use a data format such as Parquet.",
    ),
    "MLW-SCN-024": (
        "Torch7 file carries Lua code (functions as byte code) or classes outside Torch",
        "Do not torch.load it in Lua Torch; convert the weights with a tool that reads tensors "
        "only, from a trusted copy.",
    ),
    "MLW-SCN-025": (
        "TorchServe archive runs code from the archive (handler, model file, requirements)",
        "Read the handler and model files before registering the archive, pin the reviewed "
        "archive by hash, and keep install_py_dep_per_model off.",
    ),
    "MLW-SCN-026": (
        "File format not recognised: nothing in it was checked",
        "Find out what the file is. If it belongs with the model (raw weights another file "
        "names, say), scan it together with that file; otherwise remove it, or pass "
        "--allow-unknown to let files of unknown formats pass.",
    ),
    "MLW-SCN-027": (
        "Secret or network indicator inside a model file (token, private key, credentials in "
        "a URL, URL of an executable)",
        "Revoke the credential now: anyone who downloaded the file has it. Remove it from the "
        "file and its history; find out why a model carries a URL of an executable.",
    ),
    "MLW-SCN-028": (
        "MLflow model runs code of its own when loaded (custom loader module, code paths, "
        "cloudpickled PythonModel, model from code)",
        "Read the named module, code folder or script before loading; prefer MLflow's own "
        "flavours with a non-pickle format (skops, ONNX), and pin the reviewed version.",
    ),
    "MLW-SCN-029": (
        "Core ML model needs code or models outside the file (custom layers, custom models, "
        "linked models, opaque serialized models)",
        "Use the model only with custom classes you wrote or reviewed; rebuild custom layers "
        "from built-in ones, and ship linked models inside the app bundle.",
    ),
    "MLW-SCN-030": (
        "Array store decodes its chunks with pickle (zarr array with the numcodecs pickle codec)",
        "Do not open the array from an untrusted source; re-save it with a numeric dtype "
        "and no pickle codec (Orbax and TensorStore never need one).",
    ),
    "MLW-SCN-012": (
        "Hugging Face config names custom code (auto_map) run with trust_remote_code",
        "Load it without trust_remote_code, or read the named Python modules first and pin "
        "the revision you reviewed.",
    ),
}


def printable(text: str) -> str:
    """``text`` as valid Unicode: bytes of a file name that are not UTF-8 (which Python
    keeps as lone surrogates) become ``\\xNN``, so JSON, SARIF, HTML and XML stay valid."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a surrogate that is not an undecodable byte
            return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class Issue:
    """One thing the scanner found in a file."""

    rule: str
    severity: Severity
    message: str
    global_: str | None = None
    offset: int | None = None
    member: str | None = None
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity.value,
            "message": printable(self.message),
            "global": None if self.global_ is None else printable(self.global_),
            "offset": self.offset,
            "member": None if self.member is None else printable(self.member),
        }


@dataclass
class FileResult:
    """The scan of one file (or one archive member when a directory holds many)."""

    path: str
    format: str = "unknown"
    findings: list[Issue] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    bytes_read: int = 0
    #: files this model reads its weights from (ONNX external data, resolved paths)
    external_data: list[str] = field(default_factory=list)
    #: no format mlwarden knows: nothing was checked (never safe, distinct from an error)
    unknown: bool = False

    @property
    def verdict(self) -> Verdict:
        worst = max((i.severity for i in self.findings), default=None)
        if worst is not None and worst >= Severity.CRITICAL:
            return Verdict.UNSAFE
        if worst is not None and worst >= Severity.HIGH and self.error is None:
            return Verdict.SUSPICIOUS
        if self.error is not None:
            return Verdict.ERROR
        if self.unknown:
            return Verdict.UNKNOWN
        return Verdict.SAFE

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": printable(self.path),
            "format": self.format,
            "verdict": self.verdict.value,
            "findings": [i.to_dict() for i in self.findings],
        }


@dataclass
class ScanResult:
    """The scan of every file named."""

    files: list[FileResult] = field(default_factory=list)
    policy: Policy = field(default_factory=lambda: DEFAULT_POLICY)
    #: files of unknown formats do not fail the scan (they stay listed as ``unknown``)
    allow_unknown: bool = False

    def verdicts(self) -> dict[str, int]:
        counts = {v.value: 0 for v in Verdict}
        for f in self.files:
            counts[f.verdict.value] += 1
        return counts

    @property
    def safe(self) -> bool:
        return bool(self.files) and all(f.verdict is Verdict.SAFE for f in self.files)

    def exit_code(self) -> int:
        verdicts = {f.verdict for f in self.files}
        if Verdict.UNSAFE in verdicts:
            return 1
        if Verdict.ERROR in verdicts:
            return 2
        if Verdict.SUSPICIOUS in verdicts:
            return 1
        if Verdict.UNKNOWN in verdicts and not self.allow_unknown:
            return 2
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCAN_SCHEMA_VERSION,
            "files": [f.to_dict() for f in self.files],
        }


#: distinct findings of one rule listed per file; more are summed up in one finding (a
#: pickle importing 200,000 different names made a 500 MB SARIF log and 4 GB of memory)
MAX_LISTED = 200


class Sink:
    """Where the parsers put what they find in one file: deduplicated issues."""

    def __init__(self, result: FileResult, policy: Policy) -> None:
        self.result = result
        self.policy = policy
        self.member: str | None = None
        self.torchscript = False
        self.joblib_arrays = 0
        #: scans ``n`` bytes of a pickle's bytes payload as a nested file (set by the scanner)
        self.on_nested: Any = None
        self._seen: dict[tuple[str, str | None, str | None, str], Issue] = {}
        self._listed: dict[str, int] = {}  #: distinct issues listed, per rule
        self._more: dict[str, tuple[Issue, str]] = {}  #: per rule: the sum-up, first unlisted

    def checkpoint(self) -> int:
        """A mark to :meth:`rollback` to (provisional parses of possibly-text data)."""
        return len(self.result.findings)

    def rollback(self, mark: int, keep_rules: tuple[str, ...] = ()) -> None:
        """Drop issues added since ``mark``, except those whose rule is in ``keep_rules``."""
        findings = self.result.findings
        findings[mark:] = [i for i in findings[mark:] if i.rule in keep_rules]
        alive = {id(i) for i in findings}
        self._more = {r: m for r, m in self._more.items() if id(m[0]) in alive}
        sums = {id(m[0]) for m in self._more.values()}
        listed = [i for i in findings if id(i) not in sums]
        self._seen = {
            (i.rule, i.global_, i.member, i.message if i.global_ is None else ""): i for i in listed
        }
        self._listed = {}
        for i in listed:
            self._listed[i.rule] = self._listed.get(i.rule, 0) + 1

    def add(
        self,
        rule: str,
        severity: Severity,
        message: str,
        *,
        global_: str | None = None,
        offset: int | None = None,
    ) -> None:
        key = (rule, global_, self.member, message if global_ is None else "")
        seen = self._seen.get(key)
        if seen is not None:
            if message.startswith("calls ") and not seen.message.startswith("calls "):
                seen.message, seen.offset = message, offset  # the call says more
            else:
                seen.count += 1
            return
        if self._listed.get(rule, 0) >= MAX_LISTED:
            self._sum_up(rule, severity, message, offset)
            return
        issue = Issue(rule, severity, message, global_, offset, self.member)
        self._seen[key] = issue
        self._listed[rule] = self._listed.get(rule, 0) + 1
        self.result.findings.append(issue)

    def _sum_up(self, rule: str, severity: Severity, message: str, offset: int | None) -> None:
        more = self._more.get(rule)
        if more is None:
            issue = Issue(rule, severity, "", None, offset, None, count=0)
            self.result.findings.append(issue)
            more = self._more[rule] = (issue, message)
        issue, first = more
        issue.count += 1
        if severity > issue.severity:
            issue.severity = severity
        issue.message = (
            f"{issue.count} more finding(s) of this rule, not listed one by one (at most "
            f"{MAX_LISTED} per rule and file); the first: {first}"
        )
