"""Paths that are not regular files: refused at once, never opened, never safe."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from mlwarden.supplychain import safe_load, scan_file, scan_paths


def test_named_pipe_is_an_error_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "model.pkl"
    os.mkfifo(fifo)  # no writer: opening it for reading would block forever
    result = scan_file(fifo)
    assert result.verdict.value == "error"
    assert "named pipe" in (result.error or "")


def test_device_is_an_error_without_reading() -> None:
    result = scan_file("/dev/zero")  # endless: reading it would never stop
    assert result.verdict.value == "error"
    assert "a device" in (result.error or "")


def test_socket_and_directory_are_errors(tmp_path: Path) -> None:
    sock_path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        assert "socket" in (scan_file(sock_path).error or "")
    assert "directory" in (scan_file(tmp_path).error or "")


def test_link_to_a_pipe_inside_a_scanned_folder(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "link.pt").symlink_to(tmp_path / "pipe")
    out = scan_paths([tmp_path])
    assert {f.verdict.value for f in out.files} == {"error"}
    assert out.exit_code() == 2


def test_safe_load_refuses_a_pipe(tmp_path: Path) -> None:
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    with pytest.raises(Exception, match="named pipe"):
        safe_load(fifo)
