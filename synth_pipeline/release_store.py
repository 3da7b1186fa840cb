"""Releases on object stores: ``release_root`` as a URI (``s3://``, ``gs://``, any fsspec protocol).

Which root is which (:func:`is_remote`): a plain path or a ``file://`` URI is a local folder and keeps
the atomic-rename publish of :mod:`synth_pipeline.release` unchanged. Any other ``scheme://`` URI is
an object store, opened with ``pyarrow.fs.FileSystem.from_uri`` (``s3``, ``gs``/``gcs``, ``hdfs``,
``abfs``/``abfss``) or, for other protocols, with fsspec (wrapped as a ``pyarrow.fs.PyFileSystem``;
the protocol's package, e.g. ``adlfs`` for ``az://``, must be installed).

Credentials and endpoint come from the environment, never from the URI (the release root is logged
and tagged in MLflow): S3 reads ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN`` / ``AWS_PROFILE``, ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``) and
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for an S3-compatible server; GCS reads
``GOOGLE_APPLICATION_CREDENTIALS``. pyarrow's non-secret URI options also work, e.g.
``s3://bucket/releases?endpoint_override=127.0.0.1:9000&scheme=http&region=eu-west-1``.

Layout: the same as on disk (``<root>/<dataset>/<release_id>/data/part-NNNNN.parquet``, ``report/``,
``manifest.json``, ``_SUCCESS``; ``<root>/<dataset>/LATEST``; ``<root>/<dataset>/_quarantine/<id>/``).
Only the published release goes to the store: staging stays on local disk
(:func:`release.staging_root`: ``$SYNTH_PIPELINE_STAGING_ROOT``, else ``<tmp>/synth-pipeline-<uid>``).

Publish on a store without atomic rename (each object appears whole, but a folder cannot appear at
once), in this order:

1. the manifest is computed from the local files first (sha256, bytes, rows per part), so a rerun
   with the same inputs and hashes is a no-op (``unchanged``) and a different release of the same
   id is refused unless ``overwrite=True``, before anything is uploaded;
2. leftovers of an interrupted publish (objects under the release without ``_SUCCESS``) are
   deleted; on ``overwrite`` the old ``_SUCCESS`` is deleted first, so readers stop trusting the
   old release before any of its objects changes;
3. every data part, then every report file;
4. ``manifest.json``;
5. ``_SUCCESS``, whose content is the sha256 of the ``manifest.json`` bytes;
6. ``LATEST`` (the release id), last, and never moved backwards (as on disk).

Reader contract: a release exists only when ``_SUCCESS`` exists and matches the sha256 of
``manifest.json``; a reader uses the files the manifest lists (never a listing of ``data/``) and
:func:`verify_on_store` (``release.verify_release``) checks each one's sha256. A publish killed midway leaves objects without
``_SUCCESS``: readers refuse them, ``LATEST`` still names the previous release, and the next
publish of that id removes them. One publisher per dataset and release id at a time (the stages'
staging folder already refuses two attempts at the same date); two concurrent publishers of the same
id on a store are not detected.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from synth_pipeline import __version__
from synth_pipeline import release_format as rel
from synth_pipeline.errors import ReleaseError, ReleaseStoreError
from synth_pipeline.release_format import (
    LATEST,
    MANIFEST,
    SUCCESS,
    validate_dataset_name,
    validate_release_id,
)

LOCAL_SCHEMES = frozenset({"file"})
PYARROW_SCHEMES = frozenset({"s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss"})
BUCKET_SCHEMES = frozenset({"s3", "gs", "gcs"})
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CHUNK = 8 << 20


# ------------------------------------------------------------------------------------------------
# which root
# ------------------------------------------------------------------------------------------------
def scheme_of(root: Any) -> str | None:
    """The lower-case URI scheme of ``root`` (None for a plain path or a Path)."""
    if root is None or isinstance(root, Path):
        return None
    m = _SCHEME_RE.match(str(root).strip())
    return m.group(1).lower() if m else None


def is_remote(root: Any) -> bool:
    """True for an object-store URI (``s3://``, ``gs://``, ...); False for a path or ``file://``."""
    s = scheme_of(root)
    return s is not None and s not in LOCAL_SCHEMES


def local_path(root: str | Path) -> Path:
    """A plain path or ``file://`` URI as an absolute local path."""
    s = str(root)
    if scheme_of(s) == "file":
        parts = urlsplit(s.strip())
        if parts.netloc not in ("", "localhost"):
            raise ReleaseStoreError(f"release root {s!r}: file:// URIs name a local path (file:///abs/path); "
                                    f"'{parts.netloc}' is not this machine")
        s = unquote(parts.path)
    return Path(s).expanduser().resolve()


# ------------------------------------------------------------------------------------------------
# resolving a URI to a filesystem
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Store:
    """A resolved URI: the pyarrow filesystem and the path of the URI's folder inside it."""

    uri: str  # scheme://netloc/path (no trailing slash, no query)
    query: str  # pyarrow URI options (kept so derived URIs open the same way)
    fs: Any  # pyarrow.fs.FileSystem
    base: str  # the folder inside ``fs`` (e.g. "bucket/releases")

    def key(self, *parts: str) -> str:
        return "/".join([self.base.rstrip("/"), *parts]) if self.base.strip("/") else "/".join(parts)

    def uri_of(self, *parts: str) -> str:
        u = "/".join([self.uri, *parts])
        return f"{u}?{self.query}" if self.query else u

    def fail(self, what: str, err: BaseException) -> ReleaseStoreError:
        return ReleaseStoreError(f"{what} on '{self.uri}' failed: {_short(err)}; {_hint(self.uri)}")


def _short(err: BaseException) -> str:
    msg = str(err).split(" (Request ID")[0].strip() or type(err).__name__
    return msg[:400]


def _hint(uri: str) -> str:
    s = scheme_of(uri)
    if s == "s3":
        return ("check the bucket exists, the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
                "AWS_PROFILE), AWS_REGION, and for an S3-compatible server AWS_ENDPOINT_URL (or "
                "?endpoint_override=host:port&scheme=http in the URI)")
    if s in ("gs", "gcs"):
        return "check the bucket exists and GOOGLE_APPLICATION_CREDENTIALS names a service-account key with access"
    return "check the URI, that the store is reachable and that the credentials it needs are set"


def check_uri(uri: str) -> str:
    """Validate an object-store URI's form without opening it; returns it normalised
    (``scheme://netloc/path[?query]``, no trailing slash). ReleaseStoreError naming the fix."""
    scheme, clean, query = _parse(uri)
    return clean + (f"?{query}" if query else "")


def _parse(uri: str) -> tuple[str, str, str]:
    raw = str(uri).strip()
    scheme = scheme_of(raw)
    if scheme is None or scheme in LOCAL_SCHEMES:
        raise ReleaseStoreError(f"'{raw}' is a local path, not an object-store URI")
    parts = urlsplit(raw)
    if "@" in parts.netloc:
        raise ReleaseStoreError(
            f"release root '{scheme}://***@{parts.netloc.rsplit('@', 1)[1]}{parts.path}' carries credentials; "
            f"the URI is logged and tagged, so remove them and set them in the environment instead "
            f"({_hint(raw)})")
    if scheme in BUCKET_SCHEMES and not parts.netloc:
        raise ReleaseStoreError(f"release root '{raw}' names no bucket; use {scheme}://<bucket>/<prefix>")
    segments = [s for s in parts.path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise ReleaseStoreError(f"release root '{raw}' contains '.' or '..' segments; use a plain prefix")
    if parts.fragment:
        raise ReleaseStoreError(f"release root '{raw}' has a '#' fragment; remove it")
    clean = f"{scheme}://{parts.netloc}" + ("/" + "/".join(segments) if segments else "")
    secret = [k for k, _ in parse_qsl(parts.query) if re.search(r"secret|key|token|password|credential", k, re.I)]
    if secret:
        raise ReleaseStoreError(f"release root '{clean}' carries credentials in its options ({', '.join(secret)}); "
                                f"the URI is logged and tagged, so set them in the environment instead ({_hint(raw)})")
    if parts.query and scheme not in PYARROW_SCHEMES:
        raise ReleaseStoreError(f"release root '{raw}': URI options ('?{parts.query}') are only read for "
                                f"{sorted(PYARROW_SCHEMES)}; configure '{scheme}://' through its environment")
    return scheme, clean, parts.query


def resolve(uri: str) -> Store:
    """Validate an object-store URI and open its filesystem (ReleaseStoreError naming the fix)."""
    scheme, clean, query = _parse(uri)
    if scheme in PYARROW_SCHEMES:
        import pyarrow.fs as pafs

        try:
            fs, base = pafs.FileSystem.from_uri(clean + (f"?{query}" if query else ""))
        except Exception as e:  # ArrowInvalid (bad option), OSError (no credentials, ...)
            raise ReleaseStoreError(f"release root '{clean}' cannot be opened: {_short(e)}; {_hint(clean)}") from None
        return Store(clean, query, fs, base.rstrip("/"))
    try:
        import fsspec
        import pyarrow.fs as pafs

        cls = fsspec.get_filesystem_class(scheme)
    except ImportError as e:
        raise ReleaseStoreError(f"release root '{clean}': the package for '{scheme}://' is not installed ({e}); "
                                f"install it or use s3://, gs:// or a local path") from None
    except ValueError:
        raise ReleaseStoreError(
            f"release root '{clean}': unknown scheme '{scheme}://'; use a local path, file:///abs/path, "
            f"s3://<bucket>/<prefix>, gs://<bucket>/<prefix> or another fsspec protocol") from None
    try:
        fs = cls()
    except Exception as e:
        raise ReleaseStoreError(f"release root '{clean}' cannot be opened: {_short(e)}; {_hint(clean)}") from None
    base = cls._strip_protocol(clean)
    return Store(clean, "", pafs.PyFileSystem(pafs.FSSpecHandler(fs)), str(base).rstrip("/"))


# ------------------------------------------------------------------------------------------------
# object helpers (every write goes through _upload: the publish order is observable in one place)
# ------------------------------------------------------------------------------------------------
def _exists(store: Store, key: str) -> bool:
    import pyarrow.fs as pafs

    try:
        return store.fs.get_file_info(key).type != pafs.FileType.NotFound
    except OSError as e:
        raise store.fail(f"checking '{key}'", e) from None


def _read(store: Store, key: str) -> bytes | None:
    try:
        with store.fs.open_input_stream(key) as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise store.fail(f"reading '{key}'", e) from None


def _upload(store: Store, key: str, src: Path | bytes) -> None:
    """Write one object (whole-object visibility on S3/GCS): bytes, or a local file streamed."""
    try:
        with store.fs.open_output_stream(key) as out:
            if isinstance(src, bytes):
                out.write(src)
            else:
                with open(src, "rb") as fh:
                    while block := fh.read(_CHUNK):
                        out.write(block)
    except OSError as e:
        raise store.fail(f"writing '{key}'", e) from None


def _listing(store: Store, prefix: str) -> list[str]:
    import pyarrow.fs as pafs

    try:
        infos = store.fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    except OSError as e:
        raise store.fail(f"listing '{prefix}'", e) from None
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def _delete(store: Store, key: str) -> None:
    try:
        store.fs.delete_file(key)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise store.fail(f"deleting '{key}'", e) from None


def _delete_all(store: Store, prefix: str) -> None:
    """Remove every object under ``prefix``: ``_SUCCESS`` first, so readers stop trusting it."""
    _delete(store, f"{prefix}/{SUCCESS}")
    try:
        store.fs.delete_dir_contents(prefix, missing_dir_ok=True)  # batched deletes on S3
    except FileNotFoundError:
        pass
    except OSError as e:
        raise store.fail(f"deleting the objects under '{prefix}'", e) from None


def _sha256_object(store: Store, key: str) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    try:
        with store.fs.open_input_stream(key) as f:
            while block := f.read(_CHUNK):
                h.update(block)
                n += len(block)
    except OSError as e:
        raise store.fail(f"reading '{key}'", e) from None
    return h.hexdigest(), n


def _complete_manifest(store: Store, prefix: str) -> dict[str, Any] | None:
    """The manifest of the release at ``prefix`` if ``_SUCCESS`` vouches for it, else None."""
    success = _read(store, f"{prefix}/{SUCCESS}")
    if success is None:
        return None
    body = _read(store, f"{prefix}/{MANIFEST}")
    if body is None or hashlib.sha256(body).hexdigest() != success.decode("utf-8", "replace").strip():
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------------
# root checks, publish, quarantine, LATEST
# ------------------------------------------------------------------------------------------------
def check_store_root(release_root: str, dataset: str) -> str:
    """Check the store before any work: the bucket exists and an object can be written and deleted
    under ``<root>/<dataset>/``. Returns the dataset's URI."""
    validate_dataset_name(dataset)
    store = resolve(release_root)
    if scheme_of(store.uri) in BUCKET_SCHEMES:
        bucket = store.base.split("/", 1)[0]
        import pyarrow.fs as pafs

        try:
            kind = store.fs.get_file_info(bucket).type
        except OSError as e:
            raise store.fail(f"checking bucket '{bucket}'", e) from None
        if kind != pafs.FileType.Directory:
            raise ReleaseStoreError(f"bucket '{bucket}' of release root '{store.uri}' does not exist (or these "
                                    f"credentials cannot see it); create it or fix release_root. {_hint(store.uri)}")
    probe = store.key(dataset, f".write-probe-{uuid.uuid4().hex[:12]}")
    _upload(store, probe, b"")
    _delete(store, probe)
    return store.uri_of(dataset)


def publish_to_store(release_root: str, dataset: str, release_id: str, data: Any, manifest: Mapping[str, Any], *,
                    overwrite: bool = False, extra_files: Mapping[str, str | Path] | None = None,
                    parts: str | Path | None = None):  # noqa: ANN201 - release.PublishResult
    """``release.publish_release`` on an object store (see the module docstring for the order)."""
    rel.validate_release_id(release_id)
    rel.validate_dataset_name(dataset)
    store = resolve(release_root)
    prefix, uri = store.key(dataset, release_id), store.uri_of(dataset, release_id)
    if (data is None) == (parts is None):
        raise ReleaseError("publish_release needs exactly one of data (a frame) or parts (a staging folder)")
    with tempfile.TemporaryDirectory(prefix="synth-publish-") as scratch:
        files: dict[str, Path] = {}
        part_rows: dict[str, int] = {}
        if parts is None:
            local = Path(scratch) / "part-00000.parquet"
            data.to_parquet(local, index=False)
            files[rel.DATA_FILE] = local
            n_rows, n_cols = int(len(data)), int(data.shape[1])
        else:
            found, n_cols = rel.scan_parts(Path(parts))
            for p, n in found:
                files[f"data/{p.name}"] = p
                part_rows[f"data/{p.name}"] = n
            n_rows = sum(part_rows.values())
        for name, src in sorted((extra_files or {}).items()):
            name = rel.safe_relpath(name)
            if not Path(src).is_file():
                raise ReleaseError(f"release file '{src}' (for {name}) does not exist; nothing was published")
            files[name] = Path(src)
        entries = []
        for name, p in files.items():
            e = {"path": name, "sha256": rel.sha256_file(p), "bytes": p.stat().st_size}
            if name in part_rows:
                e["rows"] = part_rows[name]
            entries.append(e)
        full = {
            **dict(manifest),
            "dataset": dataset,
            "release_id": release_id,
            "status": "published",
            "created_at": rel.now(),
            "package_version": __version__,
            "counts": {**dict(manifest.get("counts") or {}), "rows": n_rows, "columns": n_cols},
            "files": entries,
        }
        old = _complete_manifest(store, prefix)
        if old is not None and rel.same_release(old, full):
            return rel.PublishResult("unchanged", uri, release_id, old)
        if old is not None and not overwrite:
            raise ReleaseError(
                f"release '{uri}' already exists with different content (inputs fingerprint "
                f"{old.get('inputs_fingerprint')} vs {full.get('inputs_fingerprint')}); "
                f"pass overwrite=True (CLI: --overwrite) to replace it")
        status = "replaced" if old is not None else "published"
        if _listing(store, prefix):  # the old release (overwrite) or leftovers of a killed publish
            _delete_all(store, prefix)
        for name, p in files.items():  # parts first (files is in that order), then report files
            _upload(store, f"{prefix}/{name}", p)
            rel.pause()
        body = rel.manifest_json(full).encode("utf-8")
        _upload(store, f"{prefix}/{rel.MANIFEST}", body)
        rel.pause()
        _upload(store, f"{prefix}/{rel.SUCCESS}", (hashlib.sha256(body).hexdigest() + "\n").encode())
    update_latest(store, dataset, release_id)
    return rel.PublishResult(status, uri, release_id, full)


def update_latest(store: Store, dataset: str, release_id: str) -> None:
    """Write ``LATEST`` unless it names a newer complete release (never moves backwards)."""
    current = latest_id_on_store(store, dataset)
    if (current is None or release_id >= current
            or _complete_manifest(store, store.key(dataset, current)) is None):
        _upload(store, store.key(dataset, LATEST), (release_id + "\n").encode())


def latest_id_on_store(store: Store, dataset: str) -> str | None:
    raw = _read(store, store.key(dataset, LATEST))
    rid = raw.decode("utf-8", "replace").strip() if raw is not None else ""
    return rid or None


def quarantine_on_store(release_root: str, dataset: str, release_id: str, manifest: Mapping[str, Any],
                       report_files: Mapping[str, str | Path] | None = None):  # noqa: ANN201 - PublishResult
    """``release.quarantine_release`` on an object store: report files, then ``manifest.json`` (a
    quarantine record has no ``_SUCCESS``: nothing in it is a release). Replaces an earlier record."""
    rel.validate_release_id(release_id)
    rel.validate_dataset_name(dataset)
    store = resolve(release_root)
    prefix, uri = store.key(dataset, rel.QUARANTINE, release_id), store.uri_of(dataset, rel.QUARANTINE, release_id)
    files: dict[str, Path] = {}
    for name, src in sorted((report_files or {}).items()):
        name = rel.safe_relpath(name)
        if name.startswith("data/") or name.endswith((".parquet", ".csv")):
            raise ReleaseError(f"quarantine records hold no data; refusing to copy '{name}'")
        files[name] = Path(src)
    full = {
        **dict(manifest),
        "dataset": dataset,
        "release_id": release_id,
        "status": "quarantined",
        "created_at": rel.now(),
        "package_version": __version__,
        "files": [{"path": n, "sha256": rel.sha256_file(p), "bytes": p.stat().st_size} for n, p in files.items()],
    }
    _delete_all(store, prefix)
    for name, p in files.items():
        _upload(store, f"{prefix}/{name}", p)
    _upload(store, f"{prefix}/{rel.MANIFEST}", rel.manifest_json(full).encode("utf-8"))
    return rel.PublishResult("quarantined", uri, release_id, full)


# ------------------------------------------------------------------------------------------------
# reading: only releases vouched for by _SUCCESS
# ------------------------------------------------------------------------------------------------
def release_uri(release_root: str, dataset: str, release_id: str) -> str:
    validate_dataset_name(dataset)
    validate_release_id(release_id)
    return resolve(release_root).uri_of(dataset, release_id)


def existing_on_store(release_root: str, dataset: str, release_id: str) -> dict[str, Any] | None:
    """The manifest of a complete release (``_SUCCESS`` matching the manifest), or None."""
    validate_dataset_name(dataset)
    validate_release_id(release_id)
    store = resolve(release_root)
    return _complete_manifest(store, store.key(dataset, release_id))


def latest_on_store(release_root: str, dataset: str) -> str | None:
    """URI of the release ``LATEST`` names, if it is complete (None otherwise)."""
    validate_dataset_name(dataset)
    store = resolve(release_root)
    rid = latest_id_on_store(store, dataset)
    if rid is None or _complete_manifest(store, store.key(dataset, rid)) is None:
        return None
    return store.uri_of(dataset, rid)


def open_release(uri: str) -> tuple[dict[str, Any], Any]:
    """``(manifest, pyarrow.dataset.Dataset of the listed data parts)`` of a complete release,
    without hashing the parts (cheap for large releases; :func:`verify_on_store` hashes them).
    ReleaseError if ``_SUCCESS`` is missing or does not match the manifest."""
    import pyarrow.dataset as pads

    store = resolve(uri)
    success = _read(store, store.key(SUCCESS))
    if success is None:
        raise ReleaseError(f"'{store.uri}' is not a complete release (no {SUCCESS}): it is being published, or "
                           f"its publish was interrupted; read the release LATEST names, or publish it again")
    body = _read(store, store.key(MANIFEST))
    if body is None:
        raise ReleaseError(f"'{store.uri}' has {SUCCESS} but no {MANIFEST}; publish it again")
    if hashlib.sha256(body).hexdigest() != success.decode("utf-8", "replace").strip():
        raise ReleaseError(f"'{store.uri}': {MANIFEST} does not match the sha256 in {SUCCESS} (changed after "
                           f"publishing, or a publish is replacing it); publish it again")
    try:
        manifest = json.loads(body)
    except ValueError:
        raise ReleaseError(f"'{store.uri}' has an unreadable {MANIFEST}; publish it again") from None
    keys = [store.key(f["path"]) for f in manifest.get("files", []) if str(f.get("path", "")).startswith("data/")]
    if not keys:
        raise ReleaseError(f"'{store.uri}': the manifest lists no data files")
    try:
        dataset = pads.dataset(keys, filesystem=store.fs, format="parquet")
    except (OSError, ValueError) as e:
        raise ReleaseError(f"'{store.uri}': a data part listed in the manifest cannot be opened ({_short(e)})") from None
    return manifest, dataset


def verify_on_store(uri: str) -> dict[str, Any]:
    """``_SUCCESS`` vouches for the manifest, and every listed file exists with its sha256 and size."""
    manifest, _ = open_release(uri)
    store = resolve(uri)
    for f in manifest.get("files", []):
        key = store.key(f["path"])
        if not _exists(store, key):
            raise ReleaseError(f"release file '{store.uri_of(f['path'])}' listed in the manifest is missing")
        digest, size = _sha256_object(store, key)
        if digest != f["sha256"] or ("bytes" in f and size != f["bytes"]):
            raise ReleaseError(f"release file '{store.uri_of(f['path'])}' does not match its manifest sha256")
    return manifest


def read_from_store(uri: str, verify: bool = True):  # noqa: ANN201 - pandas DataFrame
    """The release's data as one frame (the parts the manifest lists, in order); ``verify`` hashes
    every file first (as ``release.read_release`` does on disk)."""
    import pandas as pd

    if verify:
        verify_on_store(uri)
    manifest, _ = open_release(uri)
    store = resolve(uri)
    frames = [pd.read_parquet(store.key(f["path"]), filesystem=store.fs) for f in manifest["files"]
              if f["path"].startswith("data/")]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
