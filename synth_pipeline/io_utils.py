"""Atomic file writes: write to a temp file in the same directory, fsync, then rename into place."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

READABLE = 0o644  # files meant to be read by others (release parts, audit reports); the temp file is 0600


def atomic_write(path: Path, writer: Callable[[Path], None], mode: int | None = None) -> Path:
    """Call ``writer(tmp_path)`` then rename ``tmp_path`` onto ``path`` (same filesystem). The temp
    file is created 0600 (a half-written file is never readable by others); ``mode`` sets the final
    permissions before the rename (e.g. :data:`READABLE`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        if mode is not None:
            os.chmod(tmp_path, mode)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"), mode)


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def read_yaml(source: str | Path | None, what: str, error: type[Exception], *, text: str | None = None) -> Any:
    """Parse YAML from the file ``source`` (or from ``text`` when given); every failure becomes
    ``error`` whose message names ``what`` and the file, so callers share one set of messages."""
    import yaml

    if text is None:
        p = Path(source).expanduser()  # type: ignore[arg-type]
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise error(f"{what} '{source}' does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise error(f"{what} '{source}' cannot be read: {type(e).__name__}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = f" '{source}'" if source is not None else ""
        raise error(f"{what}{where} is not valid YAML: {e}") from None
