"""DatasetSchema: what each column is, inferred from data and then pinned by the user as YAML.

The schema is the contract between a source and the model. ``infer_schema`` proposes one (kinds from
dtype, cardinality, uniqueness and name hints); users review it, pin it, and every later run is
checked against it. ``fingerprint()`` goes into MLflow tags and release manifests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import numbers
import re
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from synth_pipeline.errors import PIIError, SchemaError
from synth_pipeline.io_utils import read_yaml
from synth_pipeline.pii import scan_series

log = logging.getLogger(__name__)


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
# Text that means "missing" in an otherwise numeric column (compared stripped, case-insensitively).
MISSING_TOKENS = frozenset({
    "n.a.", "n.a", "na.", "n/a", "na", "n.v.", "nan", "null", "none", "nil", "missing", "unknown", "?", "-",
    "--", "---", ".", "n.d.", "nd", "no data", "not available", "#n/a", "#na", "#value!", "#div/0!",
    "#ref!", "#num!", "#null!", "#name?", "empty", "blank",
})
MAX_CATEGORY_CHARS = 200  # a longer text value is free text: the column is not pinned as a categorical
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
        if not isinstance(self.name, str) or not self.name.strip():
            raise SchemaError(
                f"a schema column's 'name' must be non-empty text, got {_show(self.name)}; quote names that "
                f"YAML reads as numbers or dates (name: '123')"
            )
        try:
            self.kind = ColumnKind(self.kind)
        except (ValueError, TypeError):
            raise SchemaError(
                f"column '{self.name}': unknown kind {_show(self.kind)}; valid kinds: "
                + ", ".join(k.value for k in ColumnKind)
            ) from None
        _check_column_values(self)

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
        if not isinstance(self.columns, list):
            raise SchemaError("schema 'columns' must be a list of {name, kind} mappings")
        self.columns = [c if isinstance(c, ColumnSpec) else ColumnSpec(**c) for c in self.columns]
        _check_dataset_values(self)
        names = [c.name for c in self.columns]
        counts = Counter(names)  # linear: a 300k-column schema is checked in milliseconds
        if len(counts) != len(names):
            dup = sorted(n for n, k in counts.items() if k > 1)
            raise SchemaError(f"schema lists column(s) {_cut_list(dup)} twice; keep one entry per column")
        for required, what in ((self.time_index, "time_index"), (self.entity_key, "entity_key")):
            if required is not None and required not in counts:
                raise SchemaError(f"schema {what} '{required}' is not among the schema columns {_cut_list(names)}")
        by_name = {c.name: c for c in self.columns}
        for key, what in ((self.time_index, "time_index"), (self.entity_key, "entity_key")):
            if key is not None and by_name[key].kind in (ColumnKind.IGNORE, ColumnKind.PII):
                raise SchemaError(
                    f"column '{key}' is the schema's {what} but has kind '{by_name[key].kind}'; a key column "
                    f"cannot be dropped: give it kind '{'datetime' if what == 'time_index' else 'identifier'}'"
                )

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

    def check_content_privacy(self, df: pd.DataFrame) -> None:
        """Refuse columns whose values look like personal data (the detectors of synth_pipeline.pii,
        on a bounded sample) unless they are dropped, identifiers, or reviewed (``pii_reviewed``).
        The message names the column, the detector and the fix, never a value."""
        keys = {self.time_index, self.entity_key}
        skip = (ColumnKind.IGNORE, ColumnKind.IDENTIFIER, ColumnKind.PII, ColumnKind.DATETIME)
        present = set(df.columns)
        for c in self.columns:
            if c.name in keys or c.pii_reviewed or c.kind in skip or c.name not in present:
                continue
            s = df[c.name]
            if not isinstance(s, pd.Series):
                continue  # duplicate column names: refused by the caller
            hits = scan_series(s)
            if hits:
                raise PIIError(
                    f"column '{c.name}' looks like personal data by its values ({hits[0].describe()}) but is "
                    f"kind '{c.kind}'; set kind 'ignore' to drop it, or 'pii_reviewed: true' if it is not "
                    f"personal data"
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
        """A schema from user input (YAML): every key and value is type-checked; every problem is a
        SchemaError naming the column/key and the fix. A schema with nothing to model is refused."""
        if not isinstance(d, dict) or "columns" not in d or "time_index" not in d:
            raise SchemaError("a schema needs at least 'time_index' and 'columns' (a list of {name, kind})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in set(d) - known)
        if unknown:
            raise SchemaError(f"unknown schema key(s) {_cut_list(unknown)}; valid keys: {sorted(known)}")
        col_known = {f.name for f in dataclasses.fields(ColumnSpec)}
        if not isinstance(d["columns"], list):
            raise SchemaError("schema 'columns' must be a list of {name, kind} mappings")
        for i, c in enumerate(d["columns"]):
            if not isinstance(c, dict) or "name" not in c or "kind" not in c:
                raise SchemaError(
                    f"schema column #{i + 1} must be a mapping with at least 'name' and 'kind'; valid kinds: "
                    + ", ".join(k.value for k in ColumnKind)
                )
            bad = sorted(str(k) for k in set(c) - col_known)
            if bad:
                name = c["name"] if isinstance(c["name"], str) else _show(c["name"])
                raise SchemaError(
                    f"column '{name}': unknown key(s) {_cut_list(bad)}; valid keys: {sorted(col_known)}"
                )
        schema = cls(**d)
        if not schema.modelled:
            raise SchemaError(
                f"schema '{schema.name}' has no column to model: every column other than the time index and "
                f"entity key is ignore, pii or identifier; give at least one column a modelled kind "
                f"(continuous, integer, categorical, binary, datetime)"
            )
        return schema

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        if path is not None:
            from synth_pipeline.io_utils import atomic_write_text

            atomic_write_text(Path(path), text)
        return text

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> DatasetSchema:
        is_text = _is_yaml_text(path_or_text)
        where = "schema" if is_text else f"schema file '{path_or_text}'"
        try:
            data = read_yaml(None if is_text else path_or_text, "schema" if is_text else "schema file",
                             SchemaError, text=str(path_or_text) if is_text else None)
            return cls.from_dict(data)
        except RecursionError:
            raise SchemaError(
                f"{where} is nested too deeply to be a schema; a schema is a mapping of keys and a list of "
                f"flat column mappings"
            ) from None

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


# ------------------------------------------------------------------------------------------------
# value checks (schemas come from hand-edited YAML: every value is type-checked before use)
# ------------------------------------------------------------------------------------------------


def _show(v: Any) -> str:
    """A schema value for a message: short scalars verbatim, containers by type (never deep reprs)."""
    if isinstance(v, (dict, list, tuple, set)):
        return f"a {'mapping' if isinstance(v, dict) else 'list'} ({type(v).__name__})"
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _cut_list(items: list[Any], n: int = 10) -> str:
    shown = [str(x) if len(str(x)) <= 60 else str(x)[:57] + "..." for x in items[:n]]
    return str(shown) if len(items) <= n else str(shown)[:-1] + f", ... ({len(items)} in all)]"


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _is_bool(v: Any) -> bool:
    return isinstance(v, (bool, np.bool_))


def _check_column_values(c: ColumnSpec) -> None:
    where = f"column '{c.name}'"
    for key in ("static", "nullable", "pii_reviewed"):
        v = getattr(c, key)
        if v.__class__ is bool:
            continue
        if not _is_bool(v):
            raise SchemaError(f"{where}: '{key}' must be true or false, got {_show(v)}")
        setattr(c, key, bool(v))
    if c.dtype is not None and not isinstance(c.dtype, str):
        raise SchemaError(f"{where}: 'dtype' must be a pandas dtype name such as float64 or str, got {_show(c.dtype)}")
    if c.notes is None:
        c.notes = []
    if not isinstance(c.notes, list) or (c.notes and not all(isinstance(n, str) for n in c.notes)):
        raise SchemaError(f"{where}: 'notes' must be a list of text lines, got {_show(c.notes)}")
    if c.categories is None and c.min is None and c.max is None and c.missing_sentinels == []:
        return  # nothing else set (most columns of a wide schema)
    modelled = c.kind in MODELLED_KINDS
    # categories
    if c.categories is not None:
        if not isinstance(c.categories, list) or not all(
            v is not None and not isinstance(v, (list, dict, tuple, set)) for v in c.categories
        ):
            raise SchemaError(
                f"{where}: 'categories' must be a list of plain values (text, numbers, true/false), "
                f"got {_show(c.categories)} or a list holding lists/mappings/nulls"
            )
        if modelled and c.kind not in DISCRETE_KINDS:
            raise SchemaError(
                f"{where}: 'categories' apply to categorical and binary columns, not to a '{c.kind}' column; "
                f"remove the list, or set kind: categorical"
            )
        if c.kind == ColumnKind.BINARY and len(c.categories) > 2:
            raise SchemaError(
                f"{where}: a binary column has at most 2 categories, {len(c.categories)} are listed; "
                f"set kind: categorical"
            )
    # range
    for key in ("min", "max"):
        v = getattr(c, key)
        if v is None:
            continue
        if not _is_number(v) or (isinstance(v, float) and math.isnan(v)):
            raise SchemaError(f"{where}: '{key}' must be a number (or null for no bound), got {_show(v)}")
        if modelled and c.kind not in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER):
            raise SchemaError(
                f"{where}: '{key}' bounds apply to continuous and integer columns, not to a '{c.kind}' column; "
                f"remove it"
            )
    if c.min is not None and c.max is not None and c.min > c.max:
        raise SchemaError(
            f"{where}: min {c.min!r} is greater than max {c.max!r}, so no value could pass validation; "
            f"swap them or fix the bound that is wrong"
        )
    # sentinels
    if not isinstance(c.missing_sentinels, list) or not all(
        isinstance(v, str) or _is_number(v) for v in c.missing_sentinels
    ):
        raise SchemaError(
            f"{where}: 'missing_sentinels' must be a list of numbers or text markers that mean "
            f"\"missing\" (e.g. [-200] or ['n.a.']), got {_show(c.missing_sentinels)}"
        )
    if c.missing_sentinels and modelled and c.kind not in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER):
        raise SchemaError(
            f"{where}: 'missing_sentinels' apply to continuous and integer columns, not to a '{c.kind}' "
            f"column; remove them (missing values of other kinds are empty cells)"
        )


def _check_time_format(fmt: Any) -> None:
    if fmt is None:
        return
    if not isinstance(fmt, str) or not fmt.strip():
        raise SchemaError(f"'time_format' must be a strftime format such as '%Y-%m-%d %H:%M:%S', got {_show(fmt)}")
    if fmt in ("ISO8601", "mixed"):
        return
    if "%" not in fmt:
        raise SchemaError(
            f"time_format '{fmt}' has no date codes; use strftime codes such as '%Y-%m-%d %H:%M:%S' "
            f"(or null to let pandas parse)"
        )
    try:
        pd.to_datetime(pd.Series(["2000-01-01"]), format=fmt, errors="coerce")
    except ValueError as e:
        raise SchemaError(
            f"time_format '{fmt}' is not a valid strftime format ({e}); use codes such as %Y %m %d %H %M %S "
            f"(see the Python strftime table)"
        ) from None


def _check_timezone(tz: Any) -> None:
    if tz is None:
        return
    if not isinstance(tz, str) or not tz.strip():
        raise SchemaError(f"'timezone' must be an IANA zone name such as UTC or Europe/Berlin, got {_show(tz)}")
    try:
        pd.Timestamp("2000-01-01").tz_localize(tz)
    except Exception:  # zoneinfo / pytz / dateutil raise different types
        raise SchemaError(
            f"timezone '{tz}' is not a known time zone; use an IANA name such as UTC, Europe/Berlin or "
            f"America/New_York"
        ) from None


def _check_dataset_values(s: DatasetSchema) -> None:
    if not isinstance(s.name, str) or not s.name.strip():
        raise SchemaError(f"schema 'name' must be non-empty text, got {_show(s.name)}; quote it (name: '123')")
    if not isinstance(s.time_index, str):
        raise SchemaError(f"schema 'time_index' must be a column name (text), got {_show(s.time_index)}")
    if s.entity_key is not None and not isinstance(s.entity_key, str):
        raise SchemaError(f"schema 'entity_key' must be a column name (text) or null, got {_show(s.entity_key)}")
    _check_time_format(s.time_format)
    _check_timezone(s.timezone)
    if s.sequence_length is not None and (not _is_int(s.sequence_length) or s.sequence_length < 2):
        raise SchemaError(
            f"sequence_length must be a whole number of at least 2 (or null for whole entities), "
            f"got {_show(s.sequence_length)}"
        )
    if s.window_stride is not None and (not _is_int(s.window_stride) or s.window_stride < 1):
        raise SchemaError(
            f"window_stride must be a positive whole number (or null for sequence_length), got {_show(s.window_stride)}"
        )
    if not _is_int(s.min_sequence_length) or s.min_sequence_length < 1:
        raise SchemaError(
            f"min_sequence_length must be a whole number of at least 1 (rows per entity), "
            f"got {_show(s.min_sequence_length)}"
        )
    if not _is_bool(s.drop_duplicate_times):
        raise SchemaError(f"drop_duplicate_times must be true or false, got {_show(s.drop_duplicate_times)}")


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


def _spread_sample(values: pd.Series, n: int) -> pd.Series:
    """Up to ``n`` non-missing values evenly spaced over the column (not just its head)."""
    v = values.dropna()
    if len(v) > n:
        v = v.iloc[np.linspace(0, len(v) - 1, n).astype(np.int64)]
    return v


def guess_time_format(values: pd.Series) -> str | None:
    """Pick the first common format that parses every sampled value (None: leave it to pandas)."""
    sample = _spread_sample(values, 2000).astype(str)
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


def swapped_day_month(fmt: str) -> str | None:
    """``fmt`` with %d and %m exchanged (None when it lacks one of them)."""
    if "%d" not in fmt or "%m" not in fmt:
        return None
    return fmt.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m")


def ambiguous_day_month(values: pd.Series, fmt: str) -> str | None:
    """The day/month-swapped format when it parses every sampled value as well as ``fmt`` does
    (every day and month 12 or less, so the order cannot be told from the data); else None."""
    other = swapped_day_month(fmt)
    if other is None:
        return None
    sample = _spread_sample(values, 2000).astype(str)
    try:
        a = pd.to_datetime(sample, format=fmt)
        b = pd.to_datetime(sample, format=other)
    except (ValueError, TypeError):
        return None
    return other if bool((a != b).any()) else None


def numeric_text(s: pd.Series) -> tuple[pd.Series, list[str], int] | None:
    """A text column that holds numbers except for a few cells: (the numbers with those cells
    missing, the missing-value markers found (from MISSING_TOKENS, e.g. 'n.a.'), how many other
    non-numeric cells there are). None when the column is not such a column."""
    if not (s.dtype == object or pd.api.types.is_string_dtype(s)):
        return None
    v = s.dropna()
    if len(v) < 2:
        return None
    txt = v.astype("str").str.strip()
    num = pd.to_numeric(txt, errors="coerce")
    bad = num.isna()
    n_bad = int(bad.sum())
    if n_bad == 0 or int((~bad).sum()) < 2:
        return None  # all numbers (text from SQL, say): left as before; or barely any number
    bad_txt = txt[bad]
    known = bad_txt.str.lower().isin(MISSING_TOKENS)
    n_unknown = int((~known).sum())
    if n_unknown and (n_unknown > 0.01 * len(v) or bad_txt[~known].nunique() > 3 or len(v) < 100):
        return None  # too much text to be a numeric column with a few stray cells
    markers = sorted(bad_txt[known].unique().tolist())
    return num.reindex(s.index), markers, n_unknown


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
        hits = scan_series(s)
        if hits:  # no value is kept: no categories, only the detector and the matching share
            cols.append(ColumnSpec(col, ColumnKind.PII, dtype=dtype, notes=[
                f"values look like personal data: {hits[0].describe()}; review it: set kind 'ignore' to drop "
                f"it, or set its kind and 'pii_reviewed: true' if it is not personal data"
            ]))
            continue
        markers: list[str] = []
        as_numbers = numeric_text(s)
        if as_numbers is not None:
            s, markers, n_text = as_numbers
            dtype, nunique = str(s.dtype), int(s.nunique(dropna=True))
            if markers:
                notes.append(f"{len(markers)} missing-value marker(s) in a numeric column (e.g. 'n.a.'): listed "
                             f"in missing_sentinels, read as missing")
            if n_text:
                notes.append(f"{n_text} cell(s) are neither numbers nor a known missing-value marker (values not "
                             f"shown): validation refuses them until the source is cleaned or the marker is "
                             f"listed in missing_sentinels")
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
            if nunique <= 2 and set(v.unique().tolist()) <= {0, 1} and not markers:
                cols.append(ColumnSpec(col, ColumnKind.BINARY, nullable=bool(s.isna().any()), dtype=dtype, notes=notes))
                continue
            # integers read as floats only because of missing values are integers; a float column whose
            # values are whole but not count-like (no missing values to explain the float, or beyond 2**31,
            # e.g. 7.37873E+11 written with 6 significant digits) stays continuous, as the shipped schemas say
            if integral and dtype.startswith("float"):
                float_only_for_nan = bool(s.isna().any() or markers or sentinels)
                if not float_only_for_nan or (v.size and float(np.abs(v.to_numpy(dtype=float)).max()) >= 2**31):
                    integral = False
                    notes.append("whole numbers stored as floats: kind 'continuous' (set 'integer' for counts)")
            kind = ColumnKind.INTEGER if integral else ColumnKind.CONTINUOUS
            if integral and nunique <= 12 and n >= 100:
                notes.append(f"integer with {nunique} levels: consider kind 'categorical'")
            # sentinels become missing values on ingest, so such a column is nullable
            nullable = bool(s.isna().any()) or bool(sentinels)
            cols.append(ColumnSpec(col, kind, nullable=nullable, missing_sentinels=[*markers, *sentinels],
                                   dtype=dtype, notes=notes))
            continue
        if pd.api.types.is_bool_dtype(s):
            cols.append(ColumnSpec(col, ColumnKind.BINARY, nullable=bool(s.isna().any()), dtype=dtype))
            continue
        if _is_datetime_like(s):
            cols.append(ColumnSpec(col, ColumnKind.DATETIME, nullable=bool(s.isna().any()), dtype=dtype))
            continue
        longest = int(s.dropna().astype("str").str.len().max())
        if longest > MAX_CATEGORY_CHARS and not unique_per_row:  # free text: no value goes into the schema
            cols.append(ColumnSpec(col, ColumnKind.IGNORE, dtype=dtype, notes=[
                f"text up to {longest} characters long (> {MAX_CATEGORY_CHARS}): free text, not modelled and "
                f"no categories pinned"
            ]))
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
        other = ambiguous_day_month(ti, schema.time_format) if schema.time_format else None
        if other is not None:
            msg = (f"every date parses both as {schema.time_format} and as {other} (day and month are 12 or "
                   f"less in all of them): guessed {schema.time_format}; if the days come first set "
                   f"time_format: '{other}'")
            log.warning("time index '%s': %s", time_index, msg)
            schema.column(time_index).notes.append(msg)
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
