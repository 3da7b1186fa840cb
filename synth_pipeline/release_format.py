"""What a release is, wherever it lives: its file names, the rules for dataset names and release ids,
the data parts' names, the manifest's JSON and file digests, and the result of a publish.

Both publishers use these: :mod:`synth_pipeline.release` (local folders, atomic rename) and
:mod:`synth_pipeline.release_store` (object stores), and :mod:`synth_pipeline.shards` names and hashes
its parts with them; none of those imports another for them. ``synth_pipeline.release`` re-exports
every public name (``rel.MANIFEST``, ``rel.sha256_file``, ``rel.PublishResult``, ...).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth_pipeline.errors import ConfigError, ReleaseError
from synth_pipeline.names import check_name

MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"
LATEST = "LATEST"
QUARANTINE = "_quarantine"
DATA_FILE = "data/part-00000.parquet"
PART_RE = re.compile(r"^part-(\d{5})\.parquet$")  # a generate shard's part (shards.ShardSpec.part_name)
# Test hook: seconds to sleep after each file written while staging (lets a test SIGKILL a
# publish midway). Unset in production.
PAUSE_ENV = "SYNTH_PIPELINE_PUBLISH_PAUSE_S"


@dataclass
class PublishResult:
    status: str  # published | replaced | unchanged | quarantined
    path: Path | str  # a local folder, or the release's URI on an object store
    release_id: str
    manifest: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "path": str(self.path), "release_id": self.release_id}


# ------------------------------------------------------------------------------------------------
# names
# ------------------------------------------------------------------------------------------------
def validate_dataset_name(name: Any) -> str:
    try:
        return check_name(name, "dataset name")
    except ConfigError as e:
        raise ReleaseError(str(e)) from None


def validate_release_id(release_id: Any) -> str:
    try:
        rid = check_name(release_id, "release id")
    except ConfigError as e:
        raise ReleaseError(str(e)) from None
    if rid.startswith(("_", ".")) or rid == LATEST:
        raise ReleaseError(f"release id {release_id!r} is reserved")
    return rid


def safe_relpath(rel: str) -> str:
    """A file name allowed inside a release: relative, no ``..``, not the manifest or ``_SUCCESS``."""
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts or rel in (MANIFEST, SUCCESS):
        raise ReleaseError(f"file name '{rel}' is not allowed inside a release")
    return p.as_posix()


# ------------------------------------------------------------------------------------------------
# files and manifest
# ------------------------------------------------------------------------------------------------
def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def scan_parts(src: Path) -> tuple[list[tuple[Path, int]], int]:
    """The staged shard parts in order with their row counts, and their (common) column count."""
    import pyarrow.parquet as pq

    found = sorted(p for p in src.iterdir() if PART_RE.match(p.name)) if src.is_dir() else []
    if not found:
        raise ReleaseError(f"no part-NNNNN.parquet files in '{src}'; run the generate shards first")
    out, cols = [], set()
    for p in found:
        meta = pq.ParquetFile(p).metadata
        out.append((p, int(meta.num_rows)))
        cols.add(int(meta.num_columns))
    if len(cols) != 1:
        raise ReleaseError(f"shard parts in '{src}' have different column counts {sorted(cols)}; regenerate them")
    return out, cols.pop()


def manifest_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)


def same_release(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Same inputs fingerprint and same files (path, sha256): a rerun that changes nothing."""
    if old.get("inputs_fingerprint") != new.get("inputs_fingerprint"):
        return False
    files = lambda m: sorted((f["path"], f["sha256"]) for f in m.get("files", []))  # noqa: E731
    return files(old) == files(new)


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def pause() -> None:
    """The :data:`PAUSE_ENV` test hook (no-op unless set)."""
    s = os.environ.get(PAUSE_ENV)
    if s:
        time.sleep(float(s))
