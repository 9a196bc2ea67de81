"""Image, audio and document files are data; a pickle wearing their signature is not."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlwarden.supplychain import scan_file
from mlwarden.supplychain.scanner import scan_bytes

FORMATS = ["PNG", "GIF", "BMP", "JPEG", "TIFF", "WEBP"]


def _image_bytes(fmt: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8"))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_images_written_by_pillow_are_safe_data(tmp_path: Path, fmt: str, seed: int) -> None:
    path = tmp_path / f"sample{seed}"  # no extension: identified by content
    path.write_bytes(_image_bytes(fmt, seed))
    result = scan_file(path)
    assert result.verdict.value == "safe", result.findings
    assert result.format == fmt.lower()


class _Canary:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, (f"touch {self.target}",))


def _gif_polyglot(canary: Path) -> bytes:
    # 'G' is BINFLOAT: "IF89a" plus three bytes form its 8-byte argument, then any
    # pickle may follow (its PROTO header dropped); pickle.loads runs it.
    body = pickle.dumps(_Canary(str(canary)), protocol=2)
    return b"GIF89a\x10\x00\x10" + body[2:]


def test_a_pickle_wearing_a_gif_signature_is_unsafe(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    data = _gif_polyglot(canary)
    result = scan_bytes(data, "photo.gif")
    assert result.verdict.value == "unsafe"
    assert any(f.global_ and "system" in f.global_ for f in result.findings)
    assert not canary.exists()


def test_a_truncated_gif_polyglot_keeps_its_import(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    data = _gif_polyglot(canary)
    cut = data.index(b"system") + len(b"system\n") + 4
    result = scan_bytes(data[:cut], "photo.gif")
    assert result.verdict.value != "safe"
    assert not canary.exists()
