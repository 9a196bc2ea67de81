"""``registry diff``: what changed between two versions, down to tensors.

Files are compared by digest (added, removed, changed with old and new sizes).
For a changed file that is safetensors, npz or a PyTorch state dict on both sides,
:mod:`.tensordiff` names the tensors that changed and by how much.

Example::

    result = diff_versions(reg, reg.resolve("digits@1"), reg.resolve("digits@2"))
    result["changed"][0]["tensors"]
"""

from __future__ import annotations

from typing import Any

from mlwarden.core.errors import UserError
from mlwarden.integrity.registry import Registry, VersionRecord
from mlwarden.integrity.tensordiff import diff_tensors, read_tensors, sniff


def diff_versions(reg: Registry, old: VersionRecord, new: VersionRecord) -> dict[str, Any]:
    """Files added, removed and changed from ``old`` to ``new``, with tensor-level detail."""
    a, b = old.manifest.files, new.manifest.files
    changed: list[dict[str, Any]] = []
    for name in sorted(set(a) & set(b)):
        if a[name].digest == b[name].digest:
            continue
        entry: dict[str, Any] = {
            "file": name,
            "old_size": a[name].size,
            "new_size": b[name].size,
            "size_change": b[name].size - a[name].size,
            "old_sha256": a[name].digest,
            "new_sha256": b[name].digest,
        }
        pa, pb = reg.store.path(a[name].digest), reg.store.path(b[name].digest)
        fa, fb = sniff(pa), sniff(pb)
        if fa is not None and fa == fb:
            entry["format"] = fa
            try:
                rows = diff_tensors(read_tensors(pa, fa), read_tensors(pb, fb))
            except (UserError, ValueError, OSError) as exc:
                entry["tensor_error"] = str(exc)
            else:
                entry["tensors"] = [r for r in rows if r["status"] != "unchanged"]
                entry["tensors_unchanged"] = sum(1 for r in rows if r["status"] == "unchanged")
        changed.append(entry)
    return {
        "old": old.ref,
        "new": new.ref,
        "added": [{"file": n, "size": b[n].size} for n in sorted(set(b) - set(a))],
        "removed": [{"file": n, "size": a[n].size} for n in sorted(set(a) - set(b))],
        "changed": changed,
        "unchanged": sum(1 for n in set(a) & set(b) if a[n].digest == b[n].digest),
    }
