"""kill -9 in the middle of adds never leaves a registry that fails to verify."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from mlwarden.integrity.gc import collect, find_garbage, referenced_digests
from mlwarden.integrity.registry import Registry
from mlwarden.integrity.verify import verify_report

CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from mlwarden.integrity.registry import Registry

    root, work, key, tag = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    # The scanner is not under test here; these are plain random bytes.
    scanner = lambda paths: {str(p): ("safe", "") for p in paths}
    reg = Registry.open(root)
    i = 0
    while True:
        src = work / f"{tag}-{i}"
        (src / "sub").mkdir(parents=True)
        (src / "weights.bin").write_bytes(os.urandom(400_000))
        for j in range(20):
            (src / "sub" / f"shard{j}.bin").write_bytes(os.urandom(2_000))
        rec = reg.add(src, name="model", sign_key=key, scanner=scanner, source="kill-test")
        reg.set_alias("model", rec.version, "production", sign_key=key)
        print(rec.version, flush=True)
        i += 1
    """
)


def test_kill_9_during_adds_leaves_a_verifiable_registry(tmp_path: Path, keys) -> None:
    root, work = tmp_path / "reg", tmp_path / "work"
    work.mkdir()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rng = random.Random(7)
    killed_mid_run = 0
    for round_ in range(5):
        child = subprocess.Popen(
            [sys.executable, str(script), str(root), str(work), str(keys[0]), str(round_)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert child.stdout is not None
        first = child.stdout.readline()  # the child has committed at least one version
        assert first.strip().isdigit(), child.stderr.read().decode()[-2000:] if child.stderr else ""
        time.sleep(rng.uniform(0.0, 0.3))  # then kill it somewhere inside a later add
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            killed_mid_run += 1
        child.wait()
        assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
        with Registry.open(root) as reg:
            # what the kill left is named by fsck as leftovers only, and gc removes it
            leftovers = find_garbage(reg.store.root, referenced_digests(reg)).problems()
            assert reg.fsck() == leftovers
            collect(reg.store.root, lambda reg=reg: referenced_digests(reg))
            assert reg.fsck() == []
            versions = [r.version for r in reg.versions("model")] if reg.names() else []
            assert versions == list(range(1, len(versions) + 1))
    assert killed_mid_run == 5
    with Registry.open(root) as reg:
        versions = reg.versions("model")
    assert len(versions) >= 5
    for rec in versions:
        report = verify_report(rec.ref, registry=root, trust=[keys[1]])
        assert report.findings == [], [f.title for f in report.findings]
    assert verify_report("model@production", registry=root, trust=[keys[1]]).findings == []
