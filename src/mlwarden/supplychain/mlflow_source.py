"""MLflow model URIs as scan sources, resolved through the user's tracking and registry
store (``--tracking-uri`` or ``MLFLOW_TRACKING_URI``; ``MLFLOW_REGISTRY_URI`` if set).

Accepted: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/NAME/latest``,
``models:/m-<id>`` (a logged model, MLflow 3), ``runs:/RUN_ID/PATH`` (a run's
artifacts, or, as MLflow 3 does, the logged model of that name from that run).

The store answers where the artifacts are. On the local file system they are scanned
in place, never loaded and never copied; any other artifact store (``s3://``,
``mlflow-artifacts:``...) is downloaded by MLflow into a temporary folder, removed
when the process ends. Every link under the artifact folder must resolve inside it
(the model's own folder, or the run's artifact root), or the source is refused before
anything is read; so are local artifacts outside every experiment's artifact location
(a version registered from an arbitrary path). A store that does not exist is refused
rather than created (MLflow
would create an empty sqlite database or ``mlruns`` folder). MLflow is imported only
here, lazily: without it, one line says how to install it.

Example::

    resolve_mlflow("models:/fraud@champion", "sqlite:///mlflow.db")   # Path of its artifacts
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from mlwarden.core.errors import UserError
from mlwarden.supplychain.links import check_links

#: a registered model name as MLflow takes it in a URI (no quotes: it goes into a filter)
_NAME = r"[^'\"\\/@][^'\"\\@]{0,255}"
_VERSION = re.compile(rf"models:/(?P<name>{_NAME})/(?P<version>[0-9]{{1,9}}|latest)")
_ALIAS = re.compile(rf"models:/(?P<name>{_NAME})@(?P<alias>[A-Za-z0-9_-]{{1,255}})")
_LOGGED = re.compile(r"models:/(?P<id>m-[0-9a-f]{32})")
_RUN = re.compile(r"runs:/(?P<run>[0-9A-Za-z_-]{1,64})(?:/(?P<path>[^\x00]*))?")
_SHAPES = (
    "models:/NAME/VERSION, models:/NAME@ALIAS, models:/NAME/latest, models:/m-<id> "
    "or runs:/RUN_ID/PATH"
)


def resolve_mlflow(spec: str, tracking_uri: str | None = None) -> Path:
    """The local folder (or file) holding the artifacts ``spec`` names, link-checked."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise UserError(
            f"{spec}: an MLflow URI needs the tracking store that knows it: pass "
            "--tracking-uri (e.g. sqlite:///mlflow.db) or set MLFLOW_TRACKING_URI"
        )
    _check_store_exists(spec, uri)
    try:
        import mlflow  # noqa: F401
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise UserError(
            f"{spec}: MLflow sources need mlflow (pip install mlflow-skinny sqlalchemy alembic)"
        ) from None
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            artifact_uri, top_uri = _artifact_uri(spec, uri)
            path = _local(spec, artifact_uri, top_uri, uri)
            if _is_local(artifact_uri):
                _check_in_store(spec, path, uri)
            return path
    except MlflowException as exc:
        reason = " ".join(str(exc.message).split())[:240]
        raise UserError(f"{spec}: the MLflow store at {uri} cannot resolve it ({reason})") from None
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:240]
        raise UserError(f"{spec}: cannot read the MLflow store at {uri} ({reason})") from None


def _check_store_exists(spec: str, uri: str) -> None:
    """Refuse a local store that is not there (MLflow would create an empty one)."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        where = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
        if where and where != ":memory:" and not os.path.isfile(where):
            raise UserError(f"{spec}: no MLflow database at {where} (from the tracking URI {uri})")
    elif parsed.scheme in ("", "file") and not os.path.isdir(_local_path(uri)):
        raise UserError(f"{spec}: no MLflow store folder at {_local_path(uri)}")


def _artifact_uri(spec: str, tracking_uri: str) -> tuple[str, str]:
    """(artifact URI of what ``spec`` names, URI of the folder its links must stay in)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    if m := _LOGGED.fullmatch(spec):
        where = client.get_logged_model(m["id"]).artifact_location
        return where, where
    if m := _ALIAS.fullmatch(spec):
        version = client.get_model_version_by_alias(m["name"], m["alias"]).version
        where = client.get_model_version_download_uri(m["name"], version)
        return where, where
    if m := _VERSION.fullmatch(spec):
        version = m["version"]
        if version == "latest":
            version = _latest(client, m["name"], spec)
        where = client.get_model_version_download_uri(m["name"], version)
        return where, where
    if m := _RUN.fullmatch(spec):
        return _run_artifacts(client, spec, m["run"], m["path"] or "")
    raise UserError(f"{spec}: not an MLflow model URI; expected {_SHAPES}")


def _latest(client: Any, name: str, spec: str) -> str:
    versions = [int(v.version) for v in client.search_model_versions(f"name = '{name}'")]
    if not versions:
        raise UserError(f"{spec}: the registered model {name!r} has no versions")
    return str(max(versions))


def _run_artifacts(client: Any, spec: str, run_id: str, path: str) -> tuple[str, str]:
    """A run's artifact at ``path``, or (MLflow 3) its logged model named by the first
    part of ``path``; the links of a run artifact must stay in the run's artifact root."""
    parts = [p for p in path.split("/") if p]
    if any(p in ("..", ".") for p in parts):
        raise UserError(f"{spec}: the artifact path must not hold '.' or '..' parts")
    run = client.get_run(run_id)
    root = run.info.artifact_uri.rstrip("/")
    here = "/".join([root, *parts])
    if not parts or not _is_local(root) or os.path.exists(_local_path(here)):
        return here, root
    for model in client.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"name = '{parts[0]}'"
    ):
        if model.source_run_id == run_id:
            base = model.artifact_location.rstrip("/")
            return "/".join([base, *parts[1:]]), base
    raise UserError(f"{spec}: run {run_id} has no artifact or logged model at {path!r}")


def _local(spec: str, artifact_uri: str, top_uri: str, tracking_uri: str) -> Path:
    """The artifacts on this machine: in place if local, else downloaded by MLflow."""
    if _is_local(artifact_uri):
        path, top = Path(_local_path(artifact_uri)), Path(_local_path(top_uri))
        if not os.path.lexists(path):
            raise UserError(f"{spec}: the store names {path}, which does not exist")
        check_links(path, top, "MLflow artifacts", "model's artifact folder")
        return path
    import mlflow.artifacts

    dst = tempfile.mkdtemp(prefix="mlwarden-mlflow-")
    atexit.register(shutil.rmtree, dst, True)
    got = Path(mlflow.artifacts.download_artifacts(artifact_uri, dst_path=dst))
    check_links(got, Path(dst), "MLflow artifacts", "download folder")
    return got


def _check_in_store(spec: str, path: Path, tracking_uri: str) -> None:
    """Refuse local artifacts outside every experiment's artifact location: a model
    version registered from any path (``register_model("file:///home/u/.ssh", ...)``)
    must not make the scan read it."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    roots = []
    for exp in client.search_experiments(max_results=10_000, view_type=3):  # ALL
        if exp.artifact_location and _is_local(exp.artifact_location):
            roots.append(os.path.realpath(_local_path(exp.artifact_location)))
    real = os.path.realpath(path)
    if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
        raise UserError(
            f"{spec}: the store places its artifacts at {real}, outside every experiment's "
            "artifact location; refused, nothing was scanned (scan that folder by path if "
            "you trust it)"
        )


def _is_local(uri: str) -> bool:
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def _local_path(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return url2pathname(unquote(parsed.path))
    return uri
