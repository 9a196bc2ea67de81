"""Where ``mlwarden scan`` finds the files it scans: local paths, and Hugging Face
repositories named ``hf://org/name[@revision]``.

``hf://`` goes through ``huggingface_hub.snapshot_download``: with a network the
snapshot is fetched into the local Hugging Face cache (``HF_HUB_CACHE``); with
``HF_HUB_OFFLINE=1`` (or no network) the cache alone answers, and a repository or
revision that is not cached is one clear line. A cached snapshot
(``models--org--name/snapshots/REV/``) holds links into the repository's ``blobs/``:
every link must resolve inside that repository folder, or the source is refused
before anything is read (a planted link must not make the scan read ``~/.ssh``).

Example::

    resolve_source("hf://openai-community/gpt2@main")   # Path of the cached snapshot
    resolve_source("model.pt")                          # Path("model.pt")
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mlwarden.core.errors import UserError

_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
_REV = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,255}")


def resolve_source(spec: str) -> Path:
    """The local path to scan for ``spec`` (a path, or ``hf://org/name[@rev]``)."""
    if spec.startswith("hf://"):
        return _huggingface(spec)
    return Path(spec)


def _huggingface(spec: str) -> Path:
    repo, _, rev = spec[len("hf://") :].partition("@")
    if not _REPO.fullmatch(repo) or ".." in repo or (rev and not _REV.fullmatch(rev)):
        raise UserError(f"{spec}: expected hf://org/name or hf://org/name@revision")
    try:
        from huggingface_hub import errors as hf_errors
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(
            f"{spec}: hf:// sources need huggingface_hub (pip install huggingface_hub)"
        ) from None
    try:
        path = Path(snapshot_download(repo_id=repo, revision=rev or None))
    except hf_errors.LocalEntryNotFoundError:
        raise UserError(
            f"{spec}: not in the local Hugging Face cache and the Hub cannot be reached "
            "(offline, or HF_HUB_OFFLINE=1); download it once with a network"
        ) from None
    except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError) as exc:
        raise UserError(f"{spec}: {type(exc).__name__} (no such repository or revision)") from None
    except (hf_errors.HfHubHTTPError, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise UserError(f"{spec}: cannot fetch the snapshot ({reason})") from None
    check_snapshot_links(path)
    return path


def check_snapshot_links(snapshot: Path) -> None:
    """Refuse a cached snapshot holding a link that leaves its repository folder
    (``models--org--name``; snapshots link into its ``blobs/``)."""
    snapshot = Path(os.path.realpath(snapshot))
    repo = snapshot.parent.parent if snapshot.parent.name == "snapshots" else snapshot
    top = str(repo).rstrip(os.sep) + os.sep
    for root, dirs, names in os.walk(snapshot):
        for name in [*names, *dirs]:
            full = os.path.join(root, name)
            if os.path.islink(full) and not os.path.realpath(full).startswith(top):
                raise UserError(
                    f"{full}: a link in the Hugging Face snapshot leads outside the "
                    f"repository's cache folder ({os.path.realpath(full)!r}); refused, "
                    "nothing was scanned"
                )
