"""Open produced HTML reports in a real headless Chromium and check what a person sees.

Chromium is driven through its DevTools protocol over ``--remote-debugging-pipe``
(JSON messages separated by NUL bytes on file descriptors 3 and 4), so the test needs
no extra Python package and no browser download: Debian's ``chromium`` is enough
(``make test`` installs it when missing). It skips, saying why, only where no
Chromium binary exists.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlwarden.core.findings import Finding, Report, Severity
from mlwarden.report.html import write_html
from mlwarden.report.plots import image_grid, line_plot

pytestmark = pytest.mark.browser

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

        def wire_fds() -> None:  # runs in the child: fds 3 and 4 are the protocol pipe
            # Move both ends above 4 first so neither dup2 clobbers the other.
            high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self._log = (profile / "chromium.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=wire_fds,
            close_fds=False,  # close_fds would close 3 and 4 after wire_fds ran
        )
        os.close(to_child_r)
        os.close(from_child_w)
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


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    binary = _chromium()
    if binary is None:
        pytest.skip("no Chromium binary found (install Debian's 'chromium'; make test does)")
    tools = DevTools(binary, tmp_path_factory.mktemp("chromium-profile"))
    try:
        tools.call("Browser.getVersion")
        yield tools
    finally:
        tools.close()


def _report_with_plot() -> Report:
    report = Report.new("evasion", seed=3)
    report.add(
        Finding(
            rule="MLW-EVA-001",
            title="Robust accuracy drops to 3% under PGD at eps=0.1",
            severity=Severity.HIGH,
            atlas=["AML.T0043.000", "AML.T0015"],
            mitigations=["AML.M0003"],
            description="A white-box attacker flips almost every prediction.",
            recommendation="Train with PGD adversarial training (Madry et al.).",
            evidence={
                "robust_accuracy": 0.03,
                "eps": 0.1,
                "curve": line_plot({"a": ([0, 1], [1, 0])}),
            },
            artifact="model.pt",
            check="evasion",
        )
    )
    report.images["robust accuracy"] = line_plot(
        {"PGD": ([0.0, 0.05, 0.1], [0.98, 0.4, 0.03])}, title="robust accuracy", xlabel="eps"
    )
    rng = np.random.default_rng(0)
    report.images["examples"] = image_grid(rng.random((4, 1, 8, 8)), titles=list("abcd"))
    with report.timed("evasion"):
        pass
    return report


def test_report_opens_without_console_errors_and_every_image_loads(
    browser: DevTools, tmp_path: Path
) -> None:
    path = tmp_path / "report.html"
    write_html(_report_with_plot(), path)

    page = open_page(browser, path)

    assert page["errors"] == []
    assert page["findings"] == 1
    assert len(page["images"]) == 3  # two figures and one evidence plot
    assert all(img["complete"] and img["width"] > 0 and img["height"] > 0 for img in page["images"])


def test_harness_sees_a_broken_image_and_a_blocked_remote_resource(
    browser: DevTools, tmp_path: Path
) -> None:
    """The checks above can fail: a corrupt inline image and a remote one are caught."""
    path = tmp_path / "broken.html"
    path.write_text(
        "<!doctype html><html><head><title>x</title>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:\">"
        "</head><body><img alt='corrupt' src='data:image/png;base64,iVBORw0KGgoAAAA='>"
        "<img alt='remote' src='http://192.0.2.1/x.png'></body></html>",
        encoding="utf-8",
    )

    page = open_page(browser, path)

    assert [img["width"] for img in page["images"]] == [0, 0]
    assert any("Content Security Policy" in e or "192.0.2.1" in e for e in page["errors"])
