"""Where ``mlwarden scan`` finds the files it scans: local paths, Hugging Face
repositories named ``hf://org/name[@revision]``, and MLflow models named
``models:/name/version``, ``models:/name@alias``, ``models:/name/latest``,
``models:/m-<id>`` or ``runs:/RUN_ID/path`` (:mod:`mlwarden.supplychain.mlflow_source`).

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

A local folder inside a Hugging Face cache (a snapshot, a ``models--org--name`` folder
or the cache itself) gets the same link check as ``hf://``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mlwarden.core.errors import UserError
from mlwarden.supplychain.links import check_links

_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
_REV = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,255}")


#: the folder names huggingface_hub gives each repository in its cache
_CACHE_REPO = re.compile(r"(models|datasets|spaces)--[^/\\]+")
#: the schemes of MLflow model URIs
MLFLOW_SCHEMES = ("models:/", "runs:/")


def resolve_source(spec: str, *, tracking_uri: str | None = None) -> Path:
    """The local path to scan for ``spec`` (a path, ``hf://org/name[@rev]``, or an MLflow
    ``models:/`` or ``runs:/`` URI resolved through ``tracking_uri`` or
    ``MLFLOW_TRACKING_URI``)."""
    if spec.startswith("hf://"):
        return _huggingface(spec)
    if spec.startswith(MLFLOW_SCHEMES):
        from mlwarden.supplychain.mlflow_source import resolve_mlflow

        return resolve_mlflow(spec, tracking_uri)
    path = Path(spec)
    check_cache_links(path)
    return path


def check_cache_links(path: Path) -> None:
    """Refuse a local path in a Hugging Face cache whose snapshot links leave their
    repository folder (as :func:`check_snapshot_links` does for ``hf://``).

    The path may be a snapshot or a file in one, a ``models--org--name`` folder, or a
    cache holding such folders; a path outside any cache costs one look at its parts
    and, for a folder, at the names of its direct children.
    """
    absolute = Path(os.path.abspath(path))
    for parent in [absolute, *absolute.parents]:
        if _CACHE_REPO.fullmatch(parent.name) and (parent / "snapshots").is_dir():
            check_links(absolute, parent, "Hugging Face snapshot", "repository's cache folder")
            return
    try:
        children = [e for e in os.scandir(absolute) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for entry in children:
        repo = Path(entry.path)
        if _CACHE_REPO.fullmatch(entry.name) and (repo / "snapshots").is_dir():
            check_links(repo, repo, "Hugging Face snapshot", "repository's cache folder")


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
    check_links(snapshot, repo, "Hugging Face snapshot", "repository's cache folder")
