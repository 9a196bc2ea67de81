"""Shared helpers for the report tests: sample reports, the official SARIF schema and a
headless Chromium driven over the DevTools protocol.

Chromium is driven through ``--remote-debugging-pipe`` (JSON messages separated by
NUL bytes on file descriptors 3 and 4), so the browser tests need no extra Python
package and no browser download: Debian's ``chromium`` is enough (``make test``
installs it when missing). They skip, saying why, only where no Chromium exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jsonschema import Draft7Validator

from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.report.plots import line_plot

#: The official OASIS SARIF 2.1.0 schema (oasis-tcs/sarif-spec,
#: Documents/CommitteeSpecifications/2.1.0/sarif-schema-2.1.0.json), kept as test data.
SARIF_SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"


def sarif_errors(log: Any) -> list[str]:
    """Every way ``log`` breaks the official SARIF 2.1.0 schema (formats checked too)."""
    schema = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    validator = Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(log)
    ]


@pytest.fixture
def check_sarif() -> Callable[[Any], list[str]]:
    return sarif_errors


def sample_report(tmp_path: Path | None = None) -> Report:
    """A report with one finding of every severity, two checks (one failed) and a plot."""
    report = Report.new("evasion", seed=7)
    artifact = None
    if tmp_path is not None:
        artifact = tmp_path / "models" / "my model.pt"
        artifact.parent.mkdir(parents=True, exist_ok=True)
        artifact.write_bytes(b"not really a model")
    specs = [
        ("MLW-EVA-001", Severity.CRITICAL, ["AML.T0043.000", "AML.T0015"], ["AML.M0003"]),
        ("MLW-EVA-002", Severity.HIGH, ["AML.T0043.001"], ["AML.M0004"]),
        ("MLW-EVA-003", Severity.MEDIUM, ["AML.T0015"], []),
        ("MLW-EVA-004", Severity.LOW, [], []),
        ("MLW-EVA-005", Severity.INFO, ["AML.T0040"], []),
    ]
    for rule, severity, atlas_ids, mitigations in specs:
        report.add(
            Finding(
                rule=rule,
                title=f"{severity.value} finding <script>alert(1)</script>",
                severity=severity,
                atlas=atlas_ids,
                mitigations=mitigations,
                description=f"What happened ({severity.value}).",
                recommendation=f"Fix it ({rule}).",
                evidence={"robust_accuracy": 0.125, "eps": [0.1, 0.3], "nan": float("nan")},
                artifact=str(artifact) if artifact and severity >= Severity.HIGH else "digits_cnn",
                check="pgd" if severity >= Severity.MEDIUM else "square",
            )
        )
    with report.timed("pgd"):
        pass
    report.checks.append(
        report.checks[0].model_copy(update={"name": "square", "status": "error", "message": "boom"})
    )
    report.metrics["evasion"] = {"clean_accuracy": np.float32(0.98), "robust": {"pgd": 0.125}}
    report.metrics["inf"] = float("inf")
    report.images["robust accuracy"] = line_plot({"PGD": ([0.0, 0.1], [0.98, 0.1])})
    return report


@pytest.fixture
def make_report() -> Callable[..., Report]:
    return sample_report


# -- headless Chromium over the DevTools pipe ------------------------------------------
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


class DevTools:
    """A minimal Chrome DevTools Protocol client over the debugging pipe."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # The child's ends go above fd 4 so "3<&r 4>&w" cannot clobber one
        # with the other; the shell then execs Chromium with them on fds 3 and 4.
        r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_child_r)
        os.close(from_child_w)
        self._log = (profile / "chromium.log").open("wb")
        self.proc = subprocess.Popen(
            [
                shutil.which("bash") or "/bin/bash",
                "-c",
                f'exec "$0" "$@" 3<&{r} 4>&{w} {r}<&- {w}>&-',
                binary,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            pass_fds=(r, w),
        )
        os.close(r)
        os.close(w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(timeout=60)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = len(self.events)
        while True:
            for ev in self.events[seen:]:
                if ev.get("method") == method and ev.get("sessionId") == session:
                    return ev
            seen = len(self.events)
            self.events.append(self._read(timeout=max(0.1, deadline - time.monotonic())))

    def _read(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_child], [], [], max(left, 0))
            if not ready:
                raise TimeoutError("chromium did not answer over the DevTools pipe")
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)  # type: ignore[no-any-return]

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)
        self._log.close()


def open_page(tools: DevTools, path: Path) -> dict[str, Any]:
    """Load ``path`` in a new tab; return its console errors and every image's state."""
    target = tools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = tools.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
        "sessionId"
    ]
    for domain in ("Page", "Runtime", "Log"):
        tools.call(f"{domain}.enable", session=session)
    start = len(tools.events)
    tools.call("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
    tools.wait_event("Page.loadEventFired", session)
    probe = """JSON.stringify({
        title: document.title,
        findings: document.querySelectorAll('details.finding').length,
        images: Array.from(document.images).map(i => ({
            alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))
    })"""
    value = tools.call(
        "Runtime.evaluate", {"expression": probe, "returnByValue": True}, session=session
    )["result"]["value"]
    tools.call("Runtime.evaluate", {"expression": "1"}, session=session)  # flush late events
    errors = []
    for ev in tools.events[start:]:
        if ev.get("sessionId") != session:
            continue
        method, params = ev.get("method"), ev.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(str(params.get("args")))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append(params["entry"].get("text", ""))
    tools.call("Target.closeTarget", {"targetId": target})
    return {**json.loads(value), "errors": errors}


class Browser:
    """What the browser tests use: ``browser.open(path)`` -> errors and image states."""

    def __init__(self, tools: DevTools) -> None:
        self.tools = tools

    def open(self, path: Path) -> dict[str, Any]:
        return open_page(self.tools, path)


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """A headless Chromium (Debian's ``chromium``), shared by the browser tests."""
    binary = _chromium()
    if binary is None:
        pytest.skip("no Chromium binary found (install Debian's 'chromium'; make test does)")
    tools = DevTools(binary, tmp_path_factory.mktemp("chromium-profile"))
    try:
        tools.call("Browser.getVersion")
        yield Browser(tools)
    finally:
        tools.close()
