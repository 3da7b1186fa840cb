"""Releases on disk: atomic publish, manifest with sha256 per file, ``_SUCCESS``, ``LATEST``,
quarantine, idempotent reruns.

Layout (the design, `../shared/ARCHITECTURE.md`, "Releases")::

    <release_root>/<dataset>/<release_id>/data/part-00000.parquet
                                          manifest.json       (files listed with sha256 and size)
                                          _SUCCESS            (written last)
    <release_root>/<dataset>/LATEST                           (release id of the newest release)
    <release_root>/<dataset>/_quarantine/<release_id>/manifest.json + report files, never data

A release is staged in a hidden sibling folder (``.tmp-<release_id>-<pid>-<random>``) on the same
filesystem, every file fsynced, then renamed into place with one ``rename``: readers see the whole
release or none of it. A publish killed midway leaves only a hidden staging folder, which the next
publish of the dataset removes. ``LATEST`` is replaced atomically (temp file + rename) and never
moves backwards (a backfill of an older date leaves it alone).

Reruns: if ``<release_id>`` exists with the same ``inputs_fingerprint`` and the same file hashes,
publishing is a no-op (``status == "unchanged"``); if it differs, ``ReleaseError`` unless
``overwrite=True`` (then it is replaced: the old folder is renamed aside, the new one renamed in,
the old one deleted).

Only the synthetic data itself is written under ``data/``; the manifest carries digests, counts and
gate checks, never a source row.

Object stores: a ``release_root`` such as ``s3://bucket/releases`` or ``gs://bucket/releases`` has no
atomic rename; every public function here hands such a root (or release URI) to
:mod:`synth_pipeline.release_store`, which publishes in a fixed order (parts, report files,
``manifest.json``, ``_SUCCESS`` holding the manifest's sha256, ``LATEST`` last) and whose readers
trust a release only when ``_SUCCESS`` matches its manifest. Plain paths and ``file://`` URIs stay
here, unchanged.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from synth_pipeline import __version__
from synth_pipeline import release_store as store
from synth_pipeline.errors import ReleaseError
from synth_pipeline.io_utils import atomic_write_text

# The release format (names, name rules, manifest helpers, PublishResult) lives in release_format,
# shared with release_store and shards; re-exported here, where callers have always found it.
from synth_pipeline.release_format import (  # noqa: F401 - re-exports
    DATA_FILE,
    LATEST,
    MANIFEST,
    PART_RE,
    PAUSE_ENV,
    QUARANTINE,
    SUCCESS,
    PublishResult,
    sha256_file,
    validate_dataset_name,
    validate_release_id,
)
from synth_pipeline.release_format import manifest_json as _json
from synth_pipeline.release_format import now as _now
from synth_pipeline.release_format import pause as _pause
from synth_pipeline.release_format import safe_relpath as _safe_relpath
from synth_pipeline.release_format import same_release as _same_release
from synth_pipeline.release_format import scan_parts as _scan_parts

STAGING_ROOT_ENV = "SYNTH_PIPELINE_STAGING_ROOT"  # staging for an object-store release root

# ------------------------------------------------------------------------------------------------
# names
# ------------------------------------------------------------------------------------------------
def release_id_for(logical_date: Any) -> str:
    """The release id of a logical date: ``YYYY-MM-DD`` (accepts a date, datetime or ISO string)."""
    if isinstance(logical_date, _dt.datetime):
        d = logical_date.date()
    elif isinstance(logical_date, _dt.date):
        d = logical_date
    elif isinstance(logical_date, str):
        try:
            d = _dt.date.fromisoformat(logical_date.strip()[:10])
        except ValueError:
            raise ReleaseError(f"logical date {logical_date!r} is not a date; use YYYY-MM-DD") from None
        if len(logical_date.strip()) > 10 and logical_date.strip()[10] not in "T ":
            raise ReleaseError(f"logical date {logical_date!r} is not a date; use YYYY-MM-DD")
    else:
        raise ReleaseError(f"logical date must be a date or YYYY-MM-DD string, got {type(logical_date).__name__}")
    return d.isoformat()


# ------------------------------------------------------------------------------------------------
# file helpers
# ------------------------------------------------------------------------------------------------
def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cleanup_stale(folder: Path) -> None:
    """Remove hidden staging/aside folders left by killed publishes (their pid is gone)."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if not p.name.startswith((".tmp-", ".old-")) or not p.is_dir():
            continue
        parts = p.name.rsplit("-", 2)
        try:
            pid = int(parts[-2])
        except (ValueError, IndexError):
            continue
        if pid == os.getpid() or _pid_alive(pid):
            continue
        shutil.rmtree(p, ignore_errors=True)


def _prepare_dir(path: Path, what: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReleaseError(f"{what} '{path}' cannot be created: {e.strerror or type(e).__name__}; "
                           f"choose a writable release root") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ReleaseError(f"{what} '{path}' is not writable; fix its permissions or choose another release root")
    return path


def _dataset_dir(release_root: str | Path, dataset: str) -> Path:
    root = store.local_path(release_root)
    validate_dataset_name(dataset)
    _prepare_dir(root, "release root")
    return _prepare_dir(root / dataset, "release folder")


def check_release_root(release_root: str | Path, dataset: str) -> Path | str:
    """Create ``<root>/<dataset>`` if needed and check it is writable (ReleaseError otherwise). On an
    object store: the bucket exists and a probe object can be written and deleted (ReleaseStoreError)."""
    if store.is_remote(release_root):
        return store.check_store_root(str(release_root), dataset)
    return _dataset_dir(release_root, dataset)


def staging_root(release_root: str | Path) -> Path:
    """Where the stages keep their private staging folders: beside a local release root (as before);
    for an object-store root, ``$SYNTH_PIPELINE_STAGING_ROOT`` or ``<tmp>/synth-pipeline-<uid>`` (local
    disk: real rows never go to the store). On Airflow with stages on several machines, point
    ``SYNTH_PIPELINE_STAGING_ROOT`` at shared storage."""
    if not store.is_remote(release_root):
        return store.local_path(release_root)
    env = os.environ.get(STAGING_ROOT_ENV)
    if env:
        return Path(env).expanduser().resolve()
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"synth-pipeline-{uid}"


def _stage_dir(parent: Path, release_id: str) -> Path:
    tmp = parent / f".tmp-{release_id}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
    except OSError as e:
        raise ReleaseError(f"cannot write under '{parent}': {e.strerror or type(e).__name__}") from None
    return tmp


def _file_entries(folder: Path, files: list[str]) -> list[dict[str, Any]]:
    return [{"path": f, "sha256": sha256_file(folder / f), "bytes": (folder / f).stat().st_size} for f in files]


def _swap_in(tmp: Path, final: Path, replace: bool) -> None:
    """Rename the staged folder into place (replacing ``final`` when asked)."""
    _fsync_path(tmp)
    if replace and final.exists():
        aside = final.parent / f".old-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(final, aside)
        try:
            os.replace(tmp, final)
        except OSError:
            os.replace(aside, final)  # put the old one back
            raise
        shutil.rmtree(aside, ignore_errors=True)
    else:
        try:
            os.rename(tmp, final)  # fails if a concurrent publish got there first (non-empty dir)
        except OSError as e:
            raise ReleaseError(f"'{final}' appeared while publishing ({e.strerror}); rerun to compare") from None
    _fsync_path(final.parent)


# ------------------------------------------------------------------------------------------------
# publish
# ------------------------------------------------------------------------------------------------
def build_manifest(release_id: str, state: Mapping[str, Any], schema_fingerprint: str,
                   gate: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's part of a release manifest (lineage, model, counts, gate) from the staged state:
    one home for its fields; ``publish_release`` adds files, times and versions."""
    counts = state["counts"]
    return {
        "logical_date": release_id, "inputs_fingerprint": state["inputs_fingerprint"],
        "schema_fingerprint": schema_fingerprint, "data_fingerprint": state["data_fingerprint"],
        "model": {"name": state["model_name"], "version": state["model_version"], "uri": state["model_uri"],
                  "run_id": state["run_id"], "experiment_id": state["experiment_id"],
                  "report_uri": state["report_uri"]},
        "counts": {"sequences": int(state["n_synthetic"]), "train_sequences": counts["train_sequences"],
                   "holdout_sequences": counts["holdout_sequences"]},
        "gate": dict(gate),
        # the model's differential-privacy guarantee (model.privacy; None: not trained with DP)
        "differential_privacy": state.get("differential_privacy"),
    }


def publish_release(
    release_root: str | Path,
    dataset: str,
    release_id: str,
    data: pd.DataFrame | None,
    manifest: Mapping[str, Any],
    *,
    overwrite: bool = False,
    extra_files: Mapping[str, str | Path] | None = None,
    parts: str | Path | None = None,
) -> PublishResult:
    """Atomically publish ``data`` (the synthetic table) as ``<root>/<dataset>/<release_id>/``.

    With ``parts`` (a staging folder of ``part-NNNNN.parquet`` shards, see :mod:`synth_pipeline.shards`)
    and ``data=None``, every part is copied under ``data/`` and listed in the manifest with its sha256
    and row count, so the release reads as one dataset (``pd.read_parquet(<release>/data)``).

    ``manifest`` holds the caller's fields (model, fingerprints, counts, gate, ...), among them
    ``inputs_fingerprint`` used to recognise a rerun; ``files``, ``created_at``, ``release_id``,
    ``dataset``, ``status`` and ``package_version`` are filled in here. ``extra_files`` maps a
    relative name (e.g. ``report/report.html``) to a local file copied into the release.

    An object-store ``release_root`` (``s3://...``) is published by :mod:`synth_pipeline.release_store`
    (same manifest, ``status`` values and rerun rules; ``path`` is then the release's URI).
    """
    if store.is_remote(release_root):
        return store.publish_to_store(str(release_root), dataset, release_id, data, manifest, overwrite=overwrite,
                                     extra_files=extra_files, parts=parts)
    validate_release_id(release_id)
    ds_dir = _dataset_dir(release_root, dataset)
    _cleanup_stale(ds_dir)
    final = ds_dir / release_id
    tmp = _stage_dir(ds_dir, release_id)
    try:
        (tmp / "data").mkdir()
        if (data is None) == (parts is None):
            raise ReleaseError("publish_release needs exactly one of data (a frame) or parts (a staging folder)")
        if parts is None:
            data.to_parquet(tmp / DATA_FILE, index=False)
            _fsync_path(tmp / DATA_FILE)
            names, n_rows, n_cols = [DATA_FILE], int(len(data)), int(data.shape[1])
        else:
            names, n_rows, n_cols, part_rows = _copy_parts(Path(parts), tmp / "data")
        _pause()
        for rel, src in sorted((extra_files or {}).items()):
            rel = _safe_relpath(rel)
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            _fsync_path(dst)
            names.append(rel)
        full = {
            **dict(manifest),
            "dataset": dataset,
            "release_id": release_id,
            "status": "published",
            "created_at": _now(),
            "package_version": __version__,
            "counts": {**dict(manifest.get("counts") or {}), "rows": n_rows, "columns": n_cols},
            "files": _file_entries(tmp, names),
        }
        if parts is not None:
            for f in full["files"]:
                if f["path"] in part_rows:
                    f["rows"] = part_rows[f["path"]]
        if final.exists():
            old = _read_manifest_or_none(final)
            if old is not None and (final / SUCCESS).exists() and _same_release(old, full):
                shutil.rmtree(tmp, ignore_errors=True)
                return PublishResult("unchanged", final, release_id, old)
            if not overwrite:
                raise ReleaseError(
                    f"release '{final}' already exists with different content (inputs fingerprint "
                    f"{(old or {}).get('inputs_fingerprint')} vs {full.get('inputs_fingerprint')}); "
                    f"pass overwrite=True (CLI: --overwrite) to replace it"
                )
        atomic_write_text(tmp / MANIFEST, _json(full))
        _pause()
        atomic_write_text(tmp / SUCCESS, "")
        status = "replaced" if final.exists() else "published"
        _swap_in(tmp, final, replace=overwrite)
    except OSError as e:
        if isinstance(e, ReleaseError):
            raise
        raise ReleaseError(f"publishing '{final}' failed: {e.strerror or type(e).__name__}; nothing was published") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _update_latest(ds_dir, release_id)
    return PublishResult(status, final, release_id, full)


def _copy_parts(src: Path, dst: Path) -> tuple[list[str], int, int, dict[str, int]]:
    """Copy the shard parts into the staged release; names, total rows, columns, rows per part."""
    found, n_cols = _scan_parts(src)
    names, rows = [], {}
    for p, n in found:
        shutil.copyfile(p, dst / p.name)
        _fsync_path(dst / p.name)
        rel = f"data/{p.name}"
        names.append(rel)
        rows[rel] = n
    return names, sum(rows.values()), n_cols, rows


def quarantine_release(
    release_root: str | Path,
    dataset: str,
    release_id: str,
    manifest: Mapping[str, Any],
    report_files: Mapping[str, str | Path] | None = None,
) -> PublishResult:
    """Record a failed gate: ``<root>/<dataset>/_quarantine/<release_id>/`` with the manifest and
    the report files (never data). Replaces an earlier quarantine record of the same id."""
    if store.is_remote(release_root):
        return store.quarantine_on_store(str(release_root), dataset, release_id, manifest, report_files)
    validate_release_id(release_id)
    ds_dir = _dataset_dir(release_root, dataset)
    q_dir = _prepare_dir(ds_dir / QUARANTINE, "quarantine folder")
    _cleanup_stale(q_dir)
    final = q_dir / release_id
    tmp = _stage_dir(q_dir, release_id)
    try:
        names = []
        for rel, src in sorted((report_files or {}).items()):
            rel = _safe_relpath(rel)
            if rel.startswith("data/") or rel.endswith((".parquet", ".csv")):
                raise ReleaseError(f"quarantine records hold no data; refusing to copy '{rel}'")
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            names.append(rel)
        full = {
            **dict(manifest),
            "dataset": dataset,
            "release_id": release_id,
            "status": "quarantined",
            "created_at": _now(),
            "package_version": __version__,
            "files": _file_entries(tmp, names),
        }
        atomic_write_text(tmp / MANIFEST, _json(full))
        _swap_in(tmp, final, replace=True)
    except OSError as e:
        if isinstance(e, ReleaseError):
            raise
        raise ReleaseError(f"writing quarantine record '{final}' failed: {e.strerror or type(e).__name__}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PublishResult("quarantined", final, release_id, full)


def _update_latest(ds_dir: Path, release_id: str) -> None:
    current = read_latest_id(ds_dir)
    if current is None or release_id >= current or not (ds_dir / current / SUCCESS).exists():
        atomic_write_text(ds_dir / LATEST, release_id + "\n")


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
def _read_manifest_or_none(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_latest_id(ds_dir: Path) -> str | None:
    try:
        rid = (Path(ds_dir) / LATEST).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return rid or None


def release_path(release_root: str | Path, dataset: str, release_id: str) -> Path | str:
    """The release's folder (its URI on an object store)."""
    if store.is_remote(release_root):
        return store.release_uri(str(release_root), dataset, release_id)
    validate_dataset_name(dataset)
    validate_release_id(release_id)
    return store.local_path(release_root) / dataset / release_id


def existing_release(release_root: str | Path, dataset: str, release_id: str) -> dict[str, Any] | None:
    """The manifest of a complete (``_SUCCESS``) release, or None."""
    if store.is_remote(release_root):
        return store.existing_on_store(str(release_root), dataset, release_id)
    p = release_path(release_root, dataset, release_id)
    if not (p / SUCCESS).exists():
        return None
    return _read_manifest_or_none(p)


def latest_release(release_root: str | Path, dataset: str) -> Path | str | None:
    """Folder (URI on an object store) of the release ``LATEST`` points to (None if there is none)."""
    if store.is_remote(release_root):
        return store.latest_on_store(str(release_root), dataset)
    validate_dataset_name(dataset)
    ds_dir = store.local_path(release_root) / dataset
    rid = read_latest_id(ds_dir)
    if rid is None or not (ds_dir / rid / SUCCESS).exists():
        return None
    return ds_dir / rid


def verify_release(path: str | Path) -> dict[str, Any]:
    """Check ``_SUCCESS`` and every file's sha256 against the manifest; return the manifest. A release
    URI on an object store also needs ``_SUCCESS`` to hold the manifest's sha256."""
    if store.is_remote(path):
        return store.verify_on_store(str(path))
    path = Path(path)
    if not (path / SUCCESS).exists():
        raise ReleaseError(f"'{path}' is not a complete release (no {SUCCESS})")
    manifest = _read_manifest_or_none(path)
    if manifest is None:
        raise ReleaseError(f"'{path}' has no readable {MANIFEST}")
    for f in manifest.get("files", []):
        p = path / f["path"]
        if not p.is_file():
            raise ReleaseError(f"release file '{p}' listed in the manifest is missing")
        if sha256_file(p) != f["sha256"]:
            raise ReleaseError(f"release file '{p}' does not match its manifest sha256")
    return manifest


def read_release(path: str | Path) -> pd.DataFrame:
    """Read a verified release's data (a folder, or a release URI on an object store)."""
    if store.is_remote(path):
        return store.read_from_store(str(path))
    verify_release(path)
    return pd.read_parquet(Path(path) / "data")
