"""Issue 14 benchmark: the formats a model hub carries and the formats that carry code,
mlwarden against ModelAudit (promptfoo, ``modelaudit``), plus start-up against picklescan.

Builds, in a temporary folder, a benign snapshot holding one file of every format issue
14 added (real libraries where they install here: py7zr, zstandard, lz4, msgpack, torch,
safetensors, Pillow; byte-exact to the published format otherwise: R serialize.c,
torch7 File.lua, Paddle LoDTensor/ProgramDesc, MXNet NDArray list, TensorRT/ExecuTorch
headers; Core ML, Orbax and MLflow files as coremltools 9.0, orbax-checkpoint 0.12.8 and
mlflow 3.18 wrote them for tests/supplychain/fixtures) and a malicious set (one file or
model folder per code-carrying case; payloads are harmless
strings, nothing is loaded). Each tool scans each file in its own process (verdict per
file) and each folder whole (timed: CPU seconds of the child, median of ``--repeats``).

    nice -n 10 timeout 1800 .venv/bin/python benchmarks/scan_formats.py --repeats 3
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import pickle
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PROMPTFOO_DISABLE_TELEMETRY": "1", "NO_COLOR": "1"}


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo CANARY",))


EVIL = pickle.dumps(_Evil())


#: an MLmodel as mlflow 3.18 writes it for a scikit-learn model saved with skops
MLMODEL = b"""artifact_path: file:///tmp/artifacts
flavors:
  python_function:
    env:
      conda: conda.yaml
      virtualenv: python_env.yaml
    loader_module: mlflow.sklearn
    model_path: model.skops
    predict_fn: predict
    python_version: 3.11.7
  sklearn:
    code: null
    pickled_model: model.skops
    serialization_format: skops
    sklearn_version: 1.9.1
mlflow_version: 3.18.0
model_id: m-29bc172802b049ab8e52091a848543ad
"""


def _tar(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _npy() -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.arange(4096, dtype=np.float32))
    return buf.getvalue()


def _r(body: bytes) -> bytes:
    def i(n: int) -> bytes:
        return struct.pack(">i", n)

    return b"X\n" + i(3) + i(0x040300) + i(0x030500) + i(5) + b"UTF-8" + body


def _ri(n: int) -> bytes:
    return struct.pack(">i", n)


def _rchar(s: str) -> bytes:
    return _ri(9 | (64 << 12)) + _ri(len(s)) + s.encode()


def _rcall(fn: str, arg: str) -> bytes:
    return _ri(6) + _ri(1) + _rchar(fn) + _ri(2) + _ri(16) + _ri(1) + _rchar(arg) + _ri(254)


def _t7(extra: bytes = b"", count: int = 1) -> bytes:
    def i(n: int) -> bytes:
        return struct.pack("<i", n)

    def s(b: bytes) -> bytes:
        return i(len(b)) + b

    storage = i(4) + i(4) + s(b"V 1") + s(b"torch.FloatStorage") + struct.pack("<q", 3) + bytes(12)
    tensor = i(4) + i(3) + s(b"V 1") + s(b"torch.FloatTensor") + i(1)
    tensor += struct.pack("<qqq", 3, 1, 1) + storage
    table = i(3) + i(2) + i(count) + i(2) + s(b"weight") + tensor + extra
    return i(4) + i(1) + s(b"V 1") + s(b"nn.Linear") + table


def _pdmodel(op: bytes) -> bytes:
    opdesc = b"\x1a" + bytes([len(op)]) + op
    block = b"\x08\x00\x10" + b"\xff" * 9 + b"\x01" + b"\x22" + bytes([len(opdesc)]) + opdesc
    return b"\x0a" + bytes([len(block)]) + block


def _mar(handler: str, **model: str) -> bytes:
    doc = {"runtime": "python", "archiverVersion": "0.12.0"}
    doc["model"] = {"modelName": "m", "serializedFile": "m.pt", "handler": handler, **model}  # type: ignore[assignment]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", json.dumps(doc))
        z.writestr("handler.py", "import os\nos.system('echo CANARY')\n")
    return buf.getvalue()


NEMO = (
    b"preprocessor:\n  _target_: nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor\n"
)


def build(root: Path) -> tuple[Path, Path]:
    """Write the benign snapshot and the malicious set; returns their folders."""
    import lz4.frame
    import msgpack
    import numpy as np
    import py7zr
    import torch
    import zstandard
    from PIL import Image
    from safetensors.numpy import save_file

    good, bad = root / "benign", root / "malicious"
    good.mkdir()
    bad.mkdir()
    w = np.arange(4096, dtype=np.float32)

    def ext(x: object) -> object:
        if isinstance(x, np.ndarray):
            return msgpack.ExtType(1, msgpack.packb((x.shape, x.dtype.name, x.tobytes())))
        raise TypeError(type(x))

    files = {
        "flax_model.msgpack": msgpack.packb({"params": {"Dense_0": {"kernel": w}}}, default=ext),
        "openvino_model.xml": b'<?xml version="1.0"?>\n<net name="m" version="11"><layers/></net>\n',
        "openvino_model.bin": w.tobytes(),
        "inference.pdiparams": struct.pack("<IQIi", 0, 0, 0, 4) + b"\x08\x05\x10\x04" + bytes(16),
        "inference.pdmodel": _pdmodel(b"matmul_v2"),
        "model-0000.params": struct.pack("<QQQ", 0x112, 0, 0) + struct.pack("<Q", 0),
        "model.pte": b"\x1c\x00\x00\x00ET12" + bytes(256),
        "model.engine": b"ftrt" + bytes(4096),
        "weights.tar.zst": zstandard.ZstdCompressor().compress(_tar({"w.npy": _npy()})),
        "weights.tar.lz4": lz4.frame.compress(_tar({"w.npy": _npy()})),
        "weights.tar.gz": _tar({"w.npy": _npy()}, "w:gz"),
        "weights.tar.xz": _tar({"w.npy": _npy()}, "w:xz"),
        "model.nemo": _tar({"./model_config.yaml": NEMO, "./w.npy": _npy()}, "w:gz"),
        "model.mar": _mar("image_classifier"),
        "model.pmml": b'<?xml version="1.0"?>\n<PMML version="4.4"><Header/></PMML>\n',
        "model.rds": gzip.compress(_r(_ri(14) + _ri(2) + struct.pack(">2d", 1.0, 2.0))),
        "model.t7": _t7(),
        "config.json": b'{"model_type": "bert", "hidden_size": 8}',
        "tokenizer_config.json": b'{"model_max_length": 512, "chat_template": "{{ messages }}"}',
        "README.md": b"---\nlicense: mit\n---\n# A model\nTrained on public data.\n",
    }
    for name, data in files.items():
        (good / name).write_bytes(data)
    with py7zr.SevenZipFile(good / "weights.7z", "w") as z:
        z.writestr(_npy(), "w.npy")
    # formats whose writers were run once (coremltools 9.0, orbax-checkpoint 0.12.8,
    # mlflow 3.18): their fixtures of tests/supplychain
    fix = Path(__file__).resolve().parents[1] / "tests" / "supplychain" / "fixtures"
    shutil.copy(fix / "coreml" / "dense.mlmodel", good / "model.mlmodel")
    shutil.copytree(fix / "coreml" / "program.mlpackage", good / "program.mlpackage")
    shutil.copytree(fix / "orbax" / "chunked", good / "orbax_checkpoint")
    (good / "mlflow_model").mkdir()
    (good / "mlflow_model" / "MLmodel").write_bytes(MLMODEL)
    save_file({"w": w}, str(good / "model.safetensors"))
    torch.save({"w": torch.zeros(8)}, good / "pytorch_model.bin")
    Image.new("RGB", (8, 8)).save(good / "sample.png")

    closure = _ri(3 | (1 << 10)) + _ri(253) + _ri(254) + _rcall("system", "echo CANARY")
    promise = _ri(5 | (1 << 10)) + _ri(253) + _ri(252) + _rcall("system", "echo CANARY")
    fn = b"".join(struct.pack("<i", n) for n in (2, 1)) + b"f" + struct.pack("<iii", 8, 9, 4)
    fn += b"\x1bLJ\x02" + struct.pack("<i", 0)
    true = Path(shutil.which("true") or "/bin/true").read_bytes()
    elf_zip = io.BytesIO()
    with zipfile.ZipFile(elf_zip, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
        z.writestr("archive/libplugin.so", true)
    ape = io.BytesIO()
    with zipfile.ZipFile(ape, "w") as z:
        z.writestr("model.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    xxe = b'<?xml version="1.0"?>\n<!DOCTYPE PMML [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    files = {
        "pickle_in.tar.zst": zstandard.ZstdCompressor().compress(_tar({"model.pkl": EVIL})),
        "pickle_in.tar.lz4": lz4.frame.compress(_tar({"model.pkl": EVIL})),
        "nemo_os_system.nemo": _tar(
            {"./model_config.yaml": NEMO + b"x:\n  _target_: os.system\n  _args_: [id]\n"}, "w:gz"
        ),
        "hydra_exec.yaml": b"trainer:\n  _target_: builtins.exec\n  _partial_: true\n",
        "custom_handler.mar": _mar("handler.py", requirementsFile="requirements.txt"),
        "xxe.pmml": xxe + b"<PMML>&x;</PMML>\n",
        "xinclude.xml": b'<net version="11" xmlns:xi="http://www.w3.org/2001/XInclude">'
        b'<xi:include href="/etc/passwd"/></net>\n',
        "promise.rds": gzip.compress(_r(promise)),
        "closure_system.rds": gzip.compress(_r(closure)),
        "lua_function.t7": _t7(fn, count=2),
        "elf_in_checkpoint.pt": elf_zip.getvalue(),
        "llamafile": b"MZqFpD='\n" + bytes(600) + ape.getvalue(),
        "plugin.engine": b"ftrt" + bytes(1024) + true[:8192],
        "py_func.pdmodel": _pdmodel(b"py_func"),
        "rar_archive.rar": b"Rar!\x1a\x07\x01\x00" + bytes(200),
    }
    for name, data in files.items():
        (bad / name).write_bytes(data)
    shutil.copy(fix / "coreml" / "custom_layer.mlmodel", bad / "coreml_custom_layer.mlmodel")
    shutil.copy(fix / "coreml" / "loop_custom.mlmodel", bad / "coreml_layer_in_loop.mlmodel")
    (bad / "mlflow_loader").mkdir()
    (bad / "mlflow_loader" / "MLmodel").write_bytes(
        MLMODEL.replace(b"loader_module: mlflow.sklearn", b"loader_module: evil_loader")
    )
    with py7zr.SevenZipFile(bad / "pickle_in.7z", "w") as z:
        z.writestr(EVIL, "model.pkl")
    with py7zr.SevenZipFile(bad / "encrypted.7z", "w", password="x") as z:
        z.writestr(EVIL, "model.pkl")
    return good, bad


def _run(cmd: list[str]) -> tuple[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out, cpu


def mlwarden_verdict(path: Path) -> str:
    out, _ = _run([str(BIN / "mlwarden"), "scan", str(path), "--format", "json"])
    verdicts = {f["verdict"] for f in json.loads(out)["files"]}
    for v in ("unsafe", "suspicious", "error", "unknown"):
        if v in verdicts:
            return {"unsafe": "flagged", "suspicious": "flagged"}.get(v, "error")
    return "clean"


def modelaudit_verdict(path: Path) -> str:
    out, _ = _run([str(BIN / "modelaudit"), "scan", str(path), "--format", "json", "--no-cache"])
    try:
        doc = json.loads(out)
    except ValueError:
        return "error"
    sev = {str(i.get("severity")).lower() for i in doc.get("issues", [])}
    if sev & {"critical", "warning", "high"}:
        return "flagged"
    return "error" if doc.get("has_errors") else "clean"


def mlwarden_folder(folder: Path) -> dict[str, str]:
    """Per-file verdicts (by path in the folder) of one scan of the whole folder (a
    snapshot is scanned whole: OpenVINO's .bin is credited to its .xml)."""
    out, _ = _run([str(BIN / "mlwarden"), "scan", str(folder), "--format", "json"])
    name = {"unsafe": "flagged", "suspicious": "flagged", "safe": "clean"}
    return {
        Path(f["path"]).relative_to(folder).as_posix(): name.get(f["verdict"], "error")
        for f in json.loads(out)["files"]
    }


def modelaudit_folder(folder: Path) -> dict[str, str]:
    """Per-file verdicts of one ModelAudit scan of the whole folder (issues by location)."""
    cmd = [str(BIN / "modelaudit"), "scan", str(folder), "--format", "json", "--no-cache"]
    doc = json.loads(_run(cmd)[0])
    out = {p.relative_to(folder).as_posix(): "clean" for p in folder.rglob("*") if p.is_file()}
    for issue in doc.get("issues", []):
        where = Path(str(issue.get("location", "")).split(":")[0].split(" (")[0])
        sev = str(issue.get("severity")).lower()
        if sev not in ("critical", "warning", "high"):
            continue
        rel = where.relative_to(folder).as_posix() if where.is_relative_to(folder) else ""
        for key in out:
            if key == rel or (not rel and Path(key).name == where.name):
                out[key] = "flagged"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        good, bad = build(Path(tmp))
        tools = {"mlwarden": (mlwarden_verdict, mlwarden_folder)}
        if (BIN / "modelaudit").exists():
            tools["modelaudit"] = (modelaudit_verdict, modelaudit_folder)
        for tool, (verdict, folder) in tools.items():
            mal = {p.name: verdict(p) for p in sorted(bad.iterdir())}  # each file alone
            ben = folder(good)
            missed = sorted(n for n, v in mal.items() if v == "clean")
            false = sorted(n for n, v in ben.items() if v != "clean")
            print(
                f"{tool}: malicious flagged or refused {len(mal) - len(missed)}/{len(mal)} "
                f"(missed: {missed}); benign clean {len(ben) - len(false)}/{len(ben)} "
                f"(flagged or error: { {n: ben[n] for n in false} })"
            )
        cmds = {"mlwarden": [str(BIN / "mlwarden"), "scan", str(good), "--format", "json"]}
        if "modelaudit" in tools:
            cmds["modelaudit"] = [str(BIN / "modelaudit"), "scan", str(good), "--format", "json"]
            cmds["modelaudit"].append("--no-cache")
        times = {
            k: statistics.median(_run(c)[1] for _ in range(args.repeats)) for k, c in cmds.items()
        }
        print(
            "folder scan of the benign snapshot, CPU s (median): "
            + ", ".join(f"{k} {v:.3f}" for k, v in times.items())
        )
        if "modelaudit" in times:
            print(f"  ModelAudit / mlwarden: {times['modelaudit'] / times['mlwarden']:.1f}x")
        one = good / "pytorch_model.bin"
        start = {
            "mlwarden": [str(BIN / "mlwarden"), "scan", str(one)],
            "picklescan": [str(BIN / "picklescan"), "-p", str(one)],
        }
        st = {
            k: statistics.median(_run(c)[1] for _ in range(5 * args.repeats))
            for k, c in start.items()
        }
        print(
            f"start-up (one file, CPU s, median of {5 * args.repeats}): mlwarden {st['mlwarden']:.3f}, "
            f"picklescan {st['picklescan']:.3f} ({st['mlwarden'] / st['picklescan']:.2f}x)"
        )


if __name__ == "__main__":
    main()
