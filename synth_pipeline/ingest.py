"""Read sources (CSV, Parquet, SQL, DataFrame) into one event table, typed as the schema says.

``read_source`` reads raw text/columns; ``load_dataset`` joins an optional entity table and
``coerce`` turns raw columns into the schema's types, raising typed errors that name the
file/column and the fix. Nothing here ever echoes cell values (they may be personal data).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synth_pipeline.errors import IngestError, SchemaError
from synth_pipeline.schema import ColumnKind, DatasetSchema
from synth_pipeline.source import Source  # re-exported: callers import Source from here
from synth_pipeline.sql_source import read_sql

# pandas' default NA strings minus "None": in real data ("holiday" in metro_traffic) it is a value.
NA_STRINGS = ["", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "#N/A", "<NA>"]
_SQL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def read_source(source: Any) -> pd.DataFrame:
    """Read a file or SQL source as raw columns (strings stay strings; no type coercion yet)."""
    if isinstance(source, pd.DataFrame):
        return source.copy()
    src = Source.parse(source)
    kind = src.kind
    if kind == "sql":
        df = _read_sql(src)
    else:
        path = Path(src.path.removeprefix("file://"))
        if not path.exists():
            raise IngestError(f"source file '{path}' does not exist; check the path in the config")
        if path.is_dir():
            raise IngestError(f"source '{path}' is a folder; give the path of a CSV or Parquet file")
        if path.stat().st_size == 0:
            raise IngestError(f"source file '{path}' is empty; point the config at a file with a header and rows")
        if kind == "parquet":
            try:
                df = pd.read_parquet(path)
            except Exception as e:  # pyarrow raises several types for corrupt files
                raise IngestError(f"source file '{path}' is not readable Parquet ({type(e).__name__}); re-export it") from None
        elif kind == "csv":
            df = _read_csv(path, src.encoding)
        else:
            raise IngestError(f"source '{src.path}': unknown format '{kind}'; valid formats: csv, parquet, sql")
    if df.empty:
        raise IngestError(f"source '{src.path}' has no rows; nothing to learn from")
    return df


# Leading bytes of files that are not text: (magic, what it is, the fix).
_BINARY_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed", "name it '.csv.gz' so it is decompressed, or decompress it (gunzip)"),
    (b"PK\x03\x04", "a ZIP archive", "name it '.csv.zip' (one CSV inside) or extract the CSV"),
    (b"BZh", "bzip2-compressed", "name it '.csv.bz2' or decompress it (bunzip2)"),
    (b"\xfd7zXZ\x00", "xz-compressed", "name it '.csv.xz' or decompress it (unxz)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "name it '.csv.zst' or decompress it (unzstd)"),
    (b"PAR1", "a Parquet file", "name it '.parquet' or set format: parquet on the source"),
)
_COMPRESSED_SUFFIXES = (".gz", ".zip", ".bz2", ".xz", ".zst", ".tar")


def _sniff_binary(path: Path) -> None:
    """A compressed or Parquet file read as plain CSV fails with a misleading encoding error: say what it is."""
    if path.suffix.lower() in _COMPRESSED_SUFFIXES:
        return  # pandas decompresses by suffix
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return
    for magic, what, fix in _BINARY_MAGIC:
        if head.startswith(magic):
            raise IngestError(f"source file '{path}' is {what}, not plain CSV text; {fix}")


def _check_header(path: Path, enc: str) -> None:
    """Refuse duplicate header names: pandas would silently rename the second 'Open' to 'Open.1'."""
    try:  # the header row as data: no renaming; same quoting and decompression rules as the read
        first = pd.read_csv(path, encoding=enc, header=None, nrows=1, dtype=str, keep_default_na=False)
    except (ValueError, OSError, pd.errors.ParserError):
        return
    stripped = [str(h).strip() for h in first.iloc[0].tolist()] if len(first) else []
    seen: set[str] = set()
    dup: list[str] = []
    for h in stripped:
        if h in seen and h not in dup:
            dup.append(h)
        seen.add(h)
    if dup:
        raise IngestError(
            f"source file '{path}' has duplicate column header(s) {dup[:10]} (after trimming spaces); "
            f"rename them so each column has its own name"
        )


def _read_csv(path: Path, encoding: str) -> pd.DataFrame:
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding  # strips a BOM
    _sniff_binary(path)
    try:
        df = pd.read_csv(path, encoding=enc, keep_default_na=False, na_values=NA_STRINGS, low_memory=False)
    except UnicodeDecodeError as e:
        raise IngestError(
            f"source file '{path}' is not valid {encoding} (byte {e.start}); set 'encoding' on the source "
            f"(for example latin-1 or cp1252) or re-save the file as UTF-8"
        ) from None
    except pd.errors.EmptyDataError:
        raise IngestError(f"source file '{path}' is empty; point the config at a file with a header and rows") from None
    except pd.errors.ParserError as e:
        raise IngestError(f"source file '{path}' is not well-formed CSV: {str(e).splitlines()[0]}") from None
    _check_header(path, enc)
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _read_sql(src: Source) -> pd.DataFrame:
    """Read-only: one parsed SELECT, read-only connection, always rolled back (sql_source.py)."""
    return read_sql(src)


def _redact(uri: str) -> str:
    return re.sub(r"//([^:/@]+):([^@]+)@", r"//\1:***@", uri)


def join_entities(events: pd.DataFrame, entities: pd.DataFrame, entity_key: str, *, names=("events", "entities")) -> pd.DataFrame:
    """Attach static entity attributes to the event table; orphans and duplicate keys are errors."""
    for df, nm in ((events, names[0]), (entities, names[1])):
        if entity_key not in df.columns:
            raise IngestError(f"{nm} table has no entity key column '{entity_key}'; columns: {list(df.columns)}")
    dup = int(entities[entity_key].duplicated().sum())
    if dup:
        raise IngestError(
            f"{names[1]} table has {dup} duplicate '{entity_key}' key(s); keep one row per entity"
        )
    overlap = sorted((set(events.columns) & set(entities.columns)) - {entity_key})
    if overlap:
        raise IngestError(f"columns {overlap} appear in both tables; rename or drop them in one of them")
    # Compare keys as strings so an int key in CSV matches the same key read from SQL.
    ev_keys = events[entity_key].astype(str)
    en_keys = entities[entity_key].astype(str)
    orphans = int((~ev_keys.isin(set(en_keys))).sum())
    if orphans:
        raise IngestError(
            f"{orphans} {names[0]} row(s) have a '{entity_key}' missing from the {names[1]} table; add the "
            f"entities or filter the events"
        )
    ent = entities.copy()
    ent[entity_key] = en_keys
    out = events.copy()
    out["__key__"] = ev_keys
    out = out.merge(ent.rename(columns={entity_key: "__key__"}), on="__key__", how="left", validate="many_to_one")
    return out.drop(columns="__key__")


def load_dataset(events: Any, schema: DatasetSchema, entities: Any | None = None) -> pd.DataFrame:
    """Read, join and coerce: the one entry point the pipeline uses."""
    df = read_source(events)
    if entities is not None:
        if schema.entity_key is None:
            raise SchemaError("an entity table needs schema.entity_key to join on")
        df = join_entities(df, read_source(entities), schema.entity_key)
    return coerce(df, schema, source=_source_name(events))


def _source_name(obj: Any) -> str:
    if isinstance(obj, pd.DataFrame):
        return "<DataFrame>"
    src = Source.parse(obj)
    return _redact(src.path) + (f"#{src.table}" if src.table else "")


def parse_times(values: pd.Series, schema: DatasetSchema, column: str, source: str = "") -> pd.Series:
    """Parse a time column with the schema's format and zone; mixed zones need a target zone."""
    where = f"{source}: " if source else ""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        raw = values.astype("str").where(values.notna())
        has_offset = raw.str.contains(r"(?:[+-]\d\d:?\d\d|Z)$", regex=True, na=False)
        if schema.timezone is None and has_offset.any() and not has_offset.all():
            raise IngestError(
                f"{where}column '{column}' mixes timestamps with and without UTC offsets; set 'timezone' "
                f"in the schema (e.g. UTC) so all are converted to one zone"
            )
        dayfirst = _day_first(raw, column, where) if schema.time_format is None else None
        try:
            if schema.timezone is not None and not has_offset.all():
                parsed = _parse_local_times(raw, has_offset, schema, column, where, dayfirst=bool(dayfirst))
            else:
                parsed = pd.to_datetime(
                    raw, format=schema.time_format or "mixed", errors="coerce", utc=schema.timezone is not None,
                    dayfirst=bool(dayfirst),
                )
        except IngestError:
            raise
        except ValueError as e:
            if "timezone" in str(e).lower() or "offset" in str(e).lower():
                raise IngestError(
                    f"{where}column '{column}' mixes time zones; set 'timezone' in the schema (e.g. UTC) "
                    f"so every timestamp is converted to one zone"
                ) from None
            raise
        if parsed.dtype == object:
            raise IngestError(
                f"{where}column '{column}' mixes time zones; set 'timezone' in the schema (e.g. UTC) "
                f"so every timestamp is converted to one zone"
            )
        bad = int((parsed.isna() & values.notna()).sum())
        if bad:
            fmt = schema.time_format or "(auto)"
            raise IngestError(
                f"{where}column '{column}': {bad} value(s) do not parse as dates with format {fmt}; fix "
                f"'time_format' in the schema (strftime codes, e.g. %m/%d/%Y) or clean the source"
            )
    if schema.timezone is not None:
        if parsed.dt.tz is None:
            parsed = parsed.dt.tz_localize(schema.timezone)
        else:
            parsed = parsed.dt.tz_convert(schema.timezone)
    return parsed


_NUMERIC_DATE = r"^\s*(\d{1,2})[/.-](\d{1,2})[/.-]\d{2,4}(?:\D|$)"


def _day_first(raw: pd.Series, column: str, where: str) -> bool | None:
    """Without a time_format, dates such as 05/06/2020 are read one order for the whole column:
    day first when some first field exceeds 12, month first when some second field does (pandas'
    'mixed' parsing would decide per value). None: not such dates. Ambiguous or contradictory
    columns are refused, naming the formats to set."""
    parts = raw.str.extract(_NUMERIC_DATE)
    have = parts[0].notna()
    if not have.any():
        return None
    a = parts[0][have].astype(int)
    b = parts[1][have].astype(int)
    first_big, second_big = bool((a > 12).any()), bool((b > 12).any())
    if first_big and second_big:
        raise IngestError(
            f"{where}column '{column}': some dates put the day first and others the month first; clean the "
            f"source so all use one order, then set 'time_format' in the schema (e.g. '%d/%m/%Y')"
        )
    if first_big or second_big:
        return first_big
    if bool((a != b).any()):
        raise IngestError(
            f"{where}column '{column}': dates like 05/06/2020 are ambiguous here (day and month are both 12 or "
            f"less in every value, so the order cannot be told from the data); set 'time_format' in the "
            f"schema, e.g. '%d/%m/%Y' (day first) or '%m/%d/%Y' (month first)"
        )
    return False


def _parse_local_times(raw: pd.Series, has_offset: pd.Series, schema: DatasetSchema, column: str, where: str,
                       dayfirst: bool = False) -> pd.Series:
    """With a schema zone, timestamps without an offset are wall-clock times in that zone (not UTC)."""
    tz = schema.timezone
    fmt = schema.time_format or "mixed"
    naive = pd.to_datetime(raw.where(~has_offset), format=fmt, errors="coerce", dayfirst=dayfirst)
    if getattr(naive.dt, "tz", None) is not None:  # the format itself carried an offset (%z)
        naive = naive.dt.tz_convert(tz)
    else:
        before = int(naive.isna().sum())
        naive = naive.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
        n_bad = int(naive.isna().sum()) - before
        if n_bad:
            raise IngestError(
                f"{where}column '{column}': {n_bad} local time(s) are ambiguous or do not exist in zone "
                f"{tz} (daylight-saving change); store the times in UTC or with UTC offsets, or set "
                f"'timezone: UTC' if they already are UTC"
            )
    if not has_offset.any():
        return naive
    aware = pd.to_datetime(raw.where(has_offset), format=fmt, errors="coerce", utc=True,
                           dayfirst=dayfirst).dt.tz_convert(tz)
    return naive.where(~has_offset, aware)


def coerce(df: pd.DataFrame, schema: DatasetSchema, source: str = "") -> pd.DataFrame:
    """Cast raw columns to the schema's kinds; drop ignore columns; refuse PII; sentinels -> NaN."""
    where = f"{source}: " if source else ""
    schema.check_privacy()
    present = set(df.columns)
    missing = [c.name for c in schema.columns if c.name not in present and c.kind != ColumnKind.IGNORE]
    if missing:
        raise SchemaError(
            f"{where}column(s) {missing} from the schema are missing in the data (columns: {list(df.columns)}); "
            f"fix the source or the schema"
        )
    declared = {s.name for s in schema.columns}
    extra = [c for c in df.columns if c not in declared]
    if extra:
        raise SchemaError(
            f"{where}column(s) {extra} are not in the schema; add them (kind 'ignore' to drop) or re-run "
            f"'synth-pipeline schema infer'"
        )
    if df.empty:
        raise IngestError(f"{where}the table has no rows")
    if len(present) != len(df.columns):
        cols = [str(c) for c in df.columns]
        dup = sorted(n for n, k in Counter(cols).items() if k > 1)
        raise SchemaError(f"{where}the table has duplicate column name(s) {dup[:10]}; rename them")
    schema.check_content_privacy(df)  # values that look like personal data, unless reviewed
    out: dict[str, pd.Series] = {}
    for c in schema.columns:
        if c.kind in (ColumnKind.IGNORE,) or c.name not in df.columns:
            continue
        s = df[c.name]
        if c.name == schema.time_index:
            s = parse_times(s, schema, c.name, source)
            if s.isna().any():
                raise IngestError(f"{where}time index '{c.name}' has {int(s.isna().sum())} missing value(s); drop those rows")
        elif c.kind in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER):
            markers = [m.strip() for m in c.missing_sentinels if isinstance(m, str)]
            numbers = [m for m in c.missing_sentinels if not isinstance(m, str)]
            if markers and not pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                s = s.mask(s.astype("str").str.strip().isin(markers) & s.notna())  # 'n.a.' -> missing
            s = _to_numeric(s, c.name, where)
            if numbers:
                s = s.mask(s.isin(numbers))
        elif c.kind == ColumnKind.DATETIME:
            s = parse_times(s, schema, c.name, source)
        elif c.kind in (ColumnKind.CATEGORICAL, ColumnKind.BINARY):
            if s.dtype == object and not _all_bool(s):
                # text (e.g. from SQL) -> pandas' str dtype; True/False with gaps stay Python bools so
                # they still equal the inferred categories [False, True]
                s = s.astype("str").where(s.notna())
        if c.kind in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER, ColumnKind.CATEGORICAL, ColumnKind.BINARY, ColumnKind.DATETIME):
            if c.name != schema.time_index and s.isna().all():
                raise SchemaError(
                    f"{where}column '{c.name}' has no values at all; set its kind to 'ignore' to drop it"
                )
        out[c.name] = s
    res = pd.DataFrame(out, index=df.index)
    if schema.entity_key is not None and res[schema.entity_key].isna().any():
        raise IngestError(f"{where}entity key '{schema.entity_key}' has missing values; drop those rows")
    return _order_and_dedupe(res, schema, where)


def _all_bool(s: pd.Series) -> bool:
    v = s.dropna()
    return len(v) > 0 and all(isinstance(x, (bool, np.bool_)) for x in v.tolist())


def _to_numeric(s: pd.Series, name: str, where: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(s):
        return s.astype(float)
    if not pd.api.types.is_numeric_dtype(s):
        num = pd.to_numeric(s.astype("str").str.strip().where(s.notna()), errors="coerce")
        bad = int((num.isna() & s.notna()).sum())
        if bad:
            raise SchemaError(
                f"{where}column '{name}' is declared numeric but {bad} value(s) are text; clean the source, "
                f"list the marker in 'missing_sentinels', or declare the column 'categorical'"
            )
        s = num
    arr = s.to_numpy(dtype=float, na_value=np.nan)
    n_inf = int(np.isinf(arr).sum())
    if n_inf:
        raise SchemaError(
            f"{where}column '{name}' has {n_inf} infinite value(s); replace them with a missing value or a bound"
        )
    return s


def _order_and_dedupe(df: pd.DataFrame, schema: DatasetSchema, where: str) -> pd.DataFrame:
    keys = [k for k in (schema.entity_key, schema.time_index) if k is not None]
    dup = df.duplicated(subset=keys, keep="first")
    n_dup = int(dup.sum())
    if n_dup:
        if not schema.drop_duplicate_times:
            raise SchemaError(
                f"{where}{n_dup} duplicate ({', '.join(keys)}) row(s); deduplicate the source or set "
                f"'drop_duplicate_times: true' in the schema to keep the first of each"
            )
        df = df[~dup]
    return df.sort_values(keys, kind="stable").reset_index(drop=True)
