"""DatasetSchema: what each column is, inferred from data and then pinned by the user as YAML.

The schema is the contract between a source and the model. ``infer_schema`` proposes one (kinds from
dtype, cardinality, uniqueness and name hints); users review it, pin it, and every later run is
checked against it. ``fingerprint()`` goes into MLflow tags and release manifests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from synth_pipeline.errors import PIIError, SchemaError
from synth_pipeline.io_utils import read_yaml


class ColumnKind(StrEnum):
    CONTINUOUS = "continuous"
    INTEGER = "integer"  # continuous, rounded on output, observed bounds kept
    CATEGORICAL = "categorical"
    BINARY = "binary"
    DATETIME = "datetime"  # a non-index timestamp column, modelled as continuous seconds
    IDENTIFIER = "identifier"  # never modelled; fresh surrogate values in releases
    PII = "pii"  # refused: the run fails unless the column is dropped
    IGNORE = "ignore"  # dropped on ingest, absent from releases


MODELLED_KINDS = {
    ColumnKind.CONTINUOUS,
    ColumnKind.INTEGER,
    ColumnKind.CATEGORICAL,
    ColumnKind.BINARY,
    ColumnKind.DATETIME,
}
NUMERIC_KINDS = {ColumnKind.CONTINUOUS, ColumnKind.INTEGER, ColumnKind.DATETIME}
DISCRETE_KINDS = {ColumnKind.CATEGORICAL, ColumnKind.BINARY}

# Name hints: whole tokens of a snake/camel-cased column name.
PII_HINTS = {
    "email", "mail", "phone", "telephone", "mobile", "ssn", "sin", "passport", "iban", "name",
    "firstname", "lastname", "surname", "fullname", "address", "street", "zipcode", "postcode",
    "dob", "birthdate", "birthday", "ip", "creditcard", "cardnumber",
}
ID_HINTS = {"id", "uuid", "guid", "key", "instant", "index", "rowid", "idx"}
COMMON_SENTINELS = (-200.0, -999.0, -9999.0, 9999.0, -99.0, -1.0)
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.()\-\[\] /%]*$")


def name_tokens(name: str) -> set[str]:
    """Split ``customerEmail``/``customer_email``/``Customer Email`` into lower-case tokens."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    tokens = {t for t in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if t}
    joined = re.sub(r"[^a-z0-9]", "", name.lower())
    return tokens | {joined}


def looks_like_pii(name: str) -> bool:
    return bool(name_tokens(name) & PII_HINTS)


@dataclass
class ColumnSpec:
    name: str
    kind: ColumnKind
    static: bool = False  # constant within an entity (entity attribute)
    nullable: bool = True
    categories: list[Any] | None = None  # allowed values (validation); None = not pinned
    min: float | None = None  # pinned range (validation); None = not pinned
    max: float | None = None
    missing_sentinels: list[float] = field(default_factory=list)  # values that mean "missing"
    dtype: str | None = None  # pandas dtype seen at inference, restored on output
    pii_reviewed: bool = False  # the user confirmed a PII-looking name is not personal data
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        try:
            self.kind = ColumnKind(self.kind)
        except ValueError:
            raise SchemaError(
                f"column '{self.name}': unknown kind '{self.kind}'; valid kinds: "
                + ", ".join(k.value for k in ColumnKind)
            ) from None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind.value}
        for f in dataclasses.fields(self):
            if f.name in ("name", "kind"):
                continue
            v = getattr(self, f.name)
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            if v != default:
                d[f.name] = v
        return d


@dataclass
class DatasetSchema:
    """Dataset-level layout plus one ColumnSpec per source column."""

    columns: list[ColumnSpec]
    time_index: str
    entity_key: str | None = None  # None: one long series, cut into windows
    time_format: str | None = None  # strftime format of the time index (None: let pandas parse)
    timezone: str | None = None  # IANA zone; mixed offsets are converted into it
    sequence_length: int | None = None  # window length; None = whole entities (panels)
    window_stride: int | None = None  # default: sequence_length (non-overlapping windows)
    min_sequence_length: int = 2  # shorter entities are an error
    drop_duplicate_times: bool = False  # keep the first of duplicate (entity, time) rows instead of failing
    name: str = "dataset"

    def __post_init__(self) -> None:
        self.columns = [c if isinstance(c, ColumnSpec) else ColumnSpec(**c) for c in self.columns]
        names = [c.name for c in self.columns]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SchemaError(f"schema lists column(s) {dup} twice; keep one entry per column")
        for required, what in ((self.time_index, "time_index"), (self.entity_key, "entity_key")):
            if required is not None and required not in names:
                raise SchemaError(f"schema {what} '{required}' is not among the schema columns {names}")
        if self.sequence_length is not None and self.sequence_length < 2:
            raise SchemaError("sequence_length must be at least 2 (or null for whole entities)")
        if self.window_stride is not None and self.window_stride < 1:
            raise SchemaError("window_stride must be a positive integer")

    # -- views ---------------------------------------------------------------------------------
    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise SchemaError(f"no column '{name}' in the schema; columns: {[c.name for c in self.columns]}")

    @property
    def modelled(self) -> list[ColumnSpec]:
        keys = {self.time_index, self.entity_key}
        return [c for c in self.columns if c.kind in MODELLED_KINDS and c.name not in keys]

    @property
    def static_columns(self) -> list[ColumnSpec]:
        return [c for c in self.modelled if c.static]

    @property
    def dynamic_columns(self) -> list[ColumnSpec]:
        return [c for c in self.modelled if not c.static]

    @property
    def identifiers(self) -> list[ColumnSpec]:
        return [c for c in self.columns if c.kind == ColumnKind.IDENTIFIER and c.name != self.entity_key]

    @property
    def output_columns(self) -> list[str]:
        """Columns of a synthetic release, in source order (pii/ignore dropped)."""
        return [c.name for c in self.columns if c.kind not in (ColumnKind.PII, ColumnKind.IGNORE)]

    @property
    def stride(self) -> int | None:
        return self.window_stride or self.sequence_length

    def check_privacy(self) -> None:
        """Refuse PII: marked columns must be dropped; PII-looking names must be marked or reviewed."""
        for c in self.columns:
            if c.kind == ColumnKind.PII:
                raise PIIError(
                    f"column '{c.name}' is marked pii and cannot be modelled or released; drop it "
                    f"from the source, or set its kind to 'ignore' in the schema to drop it on ingest"
                )
            if (
                looks_like_pii(c.name)
                and c.kind not in (ColumnKind.IGNORE, ColumnKind.IDENTIFIER)
                and not c.pii_reviewed
            ):
                raise PIIError(
                    f"column '{c.name}' looks like personal data (name hint) but is kind '{c.kind}'; "
                    f"set kind 'ignore' to drop it, or 'pii_reviewed: true' if it is not personal data"
                )

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "columns":
                continue
            d[f.name] = getattr(self, f.name)
        d["columns"] = [c.to_dict() for c in self.columns]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetSchema:
        if not isinstance(d, dict) or "columns" not in d or "time_index" not in d:
            raise SchemaError("a schema needs at least 'time_index' and 'columns' (a list of {name, kind})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SchemaError(f"unknown schema key(s) {unknown}; valid keys: {sorted(known)}")
        col_known = {f.name for f in dataclasses.fields(ColumnSpec)}
        if not isinstance(d["columns"], list):
            raise SchemaError("schema 'columns' must be a list of {name, kind} mappings")
        for i, c in enumerate(d["columns"]):
            if not isinstance(c, dict) or "name" not in c or "kind" not in c:
                raise SchemaError(
                    f"schema column #{i + 1} must be a mapping with at least 'name' and 'kind'; valid kinds: "
                    + ", ".join(k.value for k in ColumnKind)
                )
            bad = sorted(set(c) - col_known)
            if bad:
                raise SchemaError(
                    f"column '{c.get('name')}': unknown key(s) {bad}; valid keys: {sorted(col_known)}"
                )
        return cls(**d)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        if path is not None:
            from synth_pipeline.io_utils import atomic_write_text

            atomic_write_text(Path(path), text)
        return text

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> DatasetSchema:
        is_text = _is_yaml_text(path_or_text)
        data = read_yaml(None if is_text else path_or_text, "schema" if is_text else "schema file", SchemaError,
                         text=str(path_or_text) if is_text else None)
        return cls.from_dict(data)

    def fingerprint(self) -> str:
        """Stable hash of what the model depends on (names, kinds, layout); notes are excluded."""
        d = self.to_dict()
        for c in d["columns"]:
            c.pop("notes", None)
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def diff(self, other: DatasetSchema) -> list[str]:
        """Human-readable differences (used when a source's schema changed)."""
        out = []
        a = {c.name: c for c in self.columns}
        b = {c.name: c for c in other.columns}
        out += [f"column '{n}' removed" for n in a if n not in b]
        out += [f"column '{n}' added" for n in b if n not in a]
        out += [f"column '{n}' kind {a[n].kind} -> {b[n].kind}" for n in a if n in b and a[n].kind != b[n].kind]
        return out


def _is_yaml_text(obj: str | Path) -> bool:
    """A multi-line string, an inline mapping or a one-line ``key: value`` is YAML text, not a path."""
    if isinstance(obj, Path):
        return False
    text = str(obj)
    if "\n" in text or text.lstrip().startswith("{"):
        return True
    if not re.match(r"^\s*[A-Za-z_]+\s*:(\s|$)", text):
        return False
    if text.strip().lower().endswith((".yaml", ".yml", ".json")):
        return False
    try:
        return not Path(text).exists()
    except OSError:
        return True


# ------------------------------------------------------------------------------------------------
# inference
# ------------------------------------------------------------------------------------------------
def _is_datetime_like(s: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(s):
        return True
    if not (pd.api.types.is_string_dtype(s) or s.dtype == object):
        return False
    sample = s.dropna().astype(str).head(200)
    if sample.empty or not sample.str.contains(r"\d", regex=True).all():
        return False
    if not sample.str.contains(r"[-/:]", regex=True).all():
        return False
    try:
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    except (ValueError, TypeError):
        return False
    return bool(parsed.notna().mean() > 0.95)


def guess_time_format(values: pd.Series) -> str | None:
    """Pick the first common format that parses every sampled value (None: leave it to pandas)."""
    sample = values.dropna().astype(str).head(500)
    candidates = [
        "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%m/%d/%Y %H:%M",
        "%m/%d/%Y %H:%M:%S", "%m/%d/%Y", "%d/%m/%Y %H:%M", "%d/%m/%Y", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y",
    ]
    for fmt in candidates:
        try:
            pd.to_datetime(sample, format=fmt)
            return fmt
        except (ValueError, TypeError):
            continue
    return None


def _sentinel_candidates(x: pd.Series) -> list[float]:
    """Values like -200 that sit far outside the bulk and repeat: probably "missing" markers."""
    v = x.dropna().to_numpy(dtype=float)
    if v.size < 20:
        return []
    found = []
    q1, q99 = np.quantile(v, [0.01, 0.99])
    for s in COMMON_SENTINELS:
        share = float(np.mean(v == s))
        if share < 0.001:
            continue
        rest = v[v != s]
        if rest.size == 0:
            continue
        lo, hi = np.quantile(rest, [0.001, 0.999])
        spread = max(hi - lo, 1e-9)
        if s < lo - 0.5 * spread or s > hi + 0.5 * spread or (s < 0 and lo >= 0):
            found.append(s)
    del q1, q99
    return found


def infer_schema(
    df: pd.DataFrame,
    *,
    time_index: str | None = None,
    entity_key: str | None = None,
    sequence_length: int | None = None,
    name: str = "dataset",
    max_categories: int = 1000,
) -> DatasetSchema:
    """Propose a schema from data. Heuristics are documented in the ``notes`` of each column."""
    if df.empty:
        raise SchemaError("cannot infer a schema from an empty table; pass a source with rows")
    for key, what in ((time_index, "--time-index"), (entity_key, "--entity-key")):
        if key is not None and key not in df.columns:
            raise SchemaError(f"{what} '{key}' is not a column; columns: {list(df.columns)}")
    if time_index is None:
        cands = [c for c in df.columns if _is_datetime_like(df[c])]
        if not cands:
            raise SchemaError(
                f"no time column found among {list(df.columns)}; pass --time-index with the column name"
            )
        time_index = cands[0]
    cols: list[ColumnSpec] = []
    n = len(df)
    for col in df.columns:
        s = df[col]
        notes: list[str] = []
        dtype = str(s.dtype)
        nunique = int(s.nunique(dropna=True))
        tokens = name_tokens(col)
        if col == time_index:
            cols.append(ColumnSpec(col, ColumnKind.DATETIME, nullable=False, dtype=dtype, notes=["time index"]))
            continue
        if col == entity_key:
            cols.append(ColumnSpec(col, ColumnKind.IDENTIFIER, nullable=False, dtype=dtype, notes=["entity key"]))
            continue
        if tokens & PII_HINTS:
            cols.append(ColumnSpec(col, ColumnKind.PII, dtype=dtype, notes=["name looks like personal data"]))
            continue
        if s.isna().all():
            cols.append(ColumnSpec(col, ColumnKind.IGNORE, dtype=dtype, notes=["all values missing"]))
            continue
        is_numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        unique_per_row = nunique == s.notna().sum() and n > 20
        if (tokens & ID_HINTS) and unique_per_row:
            cols.append(ColumnSpec(col, ColumnKind.IDENTIFIER, dtype=dtype, notes=["unique per row with an id-like name"]))
            continue
        if is_numeric:
            v = s.dropna()
            integral = bool(np.all(np.mod(v.to_numpy(dtype=float), 1) == 0))
            if integral and (tokens & ID_HINTS) and v.is_monotonic_increasing and unique_per_row:
                cols.append(ColumnSpec(col, ColumnKind.IDENTIFIER, dtype=dtype, notes=["monotonic row number"]))
                continue
            sentinels = _sentinel_candidates(s)
            if sentinels:
                notes.append(f"likely missing sentinel(s) {sentinels}: values far outside the bulk that repeat")
            if nunique <= 2 and set(v.unique().tolist()) <= {0, 1}:
                cols.append(ColumnSpec(col, ColumnKind.BINARY, nullable=bool(s.isna().any()), dtype=dtype, notes=notes))
                continue
            kind = ColumnKind.INTEGER if integral else ColumnKind.CONTINUOUS
            if integral and nunique <= 12 and n >= 100:
                notes.append(f"integer with {nunique} levels: consider kind 'categorical'")
            # sentinels become missing values on ingest, so such a column is nullable
            nullable = bool(s.isna().any()) or bool(sentinels)
            cols.append(
                ColumnSpec(col, kind, nullable=nullable, missing_sentinels=sentinels, dtype=dtype, notes=notes)
            )
            continue
        if pd.api.types.is_bool_dtype(s):
            cols.append(ColumnSpec(col, ColumnKind.BINARY, nullable=bool(s.isna().any()), dtype=dtype))
            continue
        if _is_datetime_like(s):
            cols.append(ColumnSpec(col, ColumnKind.DATETIME, nullable=bool(s.isna().any()), dtype=dtype))
            continue
        if unique_per_row or nunique > max_categories:
            kind = ColumnKind.IDENTIFIER if unique_per_row else ColumnKind.IGNORE
            why = "unique per row" if unique_per_row else f"{nunique} levels > max_categories={max_categories}"
            cols.append(ColumnSpec(col, kind, dtype=dtype, notes=[f"{why}: not modelled"]))
            continue
        cats = _sorted_values(s.dropna().unique().tolist())
        kind = ColumnKind.BINARY if nunique == 2 else ColumnKind.CATEGORICAL
        cols.append(ColumnSpec(col, kind, nullable=bool(s.isna().any()), categories=cats, dtype=dtype, notes=notes))
    schema = DatasetSchema(
        columns=cols,
        time_index=time_index,
        entity_key=entity_key,
        time_format=None,
        sequence_length=sequence_length,
        name=name,
    )
    ti = df[time_index]
    if not pd.api.types.is_datetime64_any_dtype(ti):
        schema.time_format = guess_time_format(ti)
    if entity_key is not None:
        _mark_static(df, schema)
    return schema


def _sorted_values(values: list[Any]) -> list[Any]:
    """Sort category values; mixed types (e.g. ints and strings from an object column) by type name first."""
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=lambda v: (type(v).__name__, str(v)))


def _mark_static(df: pd.DataFrame, schema: DatasetSchema) -> None:
    """A modelled column constant within every entity is an entity attribute (static)."""
    g = df.groupby(schema.entity_key, sort=False, observed=True)
    for c in schema.modelled:
        per_entity = g[c.name].nunique(dropna=False)
        if len(per_entity) > 1 and int(per_entity.max()) <= 1:
            c.static = True
            c.notes.append(f"constant within each {schema.entity_key}: static attribute")
