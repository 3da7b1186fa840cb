"""Where a table lives: :class:`Source`, a file path or a SQLAlchemy URI with its table or query.

Its own module so that :mod:`synth_pipeline.ingest` (which reads any source) and
:mod:`synth_pipeline.sql_source` (which reads SQL ones) both use it without importing each other;
``synth_pipeline.ingest.Source`` still works (re-exported).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth_pipeline.errors import IngestError


@dataclass
class Source:
    """Where a table lives. ``path`` is a file path or a SQLAlchemy URI (``sqlite:///x.db``)."""

    path: str
    table: str | None = None  # SQL table name (validated)
    query: str | None = None  # or a read-only SQL query
    encoding: str = "utf-8"
    format: str | None = None  # csv | parquet | sql; None = from the path

    @classmethod
    def parse(cls, obj: Any) -> Source:
        if isinstance(obj, Source):
            return obj
        if isinstance(obj, (str, Path)):
            return cls(path=str(obj))
        if isinstance(obj, dict):
            allowed = {"path", "table", "query", "encoding", "format"}
            bad = sorted(set(obj) - allowed)
            if bad:
                raise IngestError(f"unknown source key(s) {bad}; valid keys: {sorted(allowed)}")
            if "path" not in obj:
                raise IngestError("a source needs 'path' (a file path or a SQLAlchemy URI)")
            return cls(**obj)
        raise IngestError(f"cannot read a source from {type(obj).__name__}; pass a path, URI or dict")

    @property
    def kind(self) -> str:
        if self.format:
            return self.format
        if "://" in self.path and not self.path.startswith("file://"):
            return "sql"
        suffix = Path(self.path).suffix.lower()
        if suffix in (".parquet", ".pq"):
            return "parquet"
        return "csv"
