"""Checks and typing of the three evaluation inputs (train, holdout, synthetic) before any metric.

Everything here runs before anything is computed or written; a failure is a typed error that
names the table and the column at fault, never a cell value (the messages may end up in logs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synth_pipeline.encoding import sequence_index
from synth_pipeline.errors import IngestError, SynthPipelineError
from synth_pipeline.ingest import coerce, parse_times
from synth_pipeline.schema import NUMERIC_KINDS, ColumnKind, ColumnSpec, DatasetSchema
from synth_pipeline.transformers.protection import RARE_TOKEN

SEQUENCE_ID = "sequence_id"  # key column of synthetic windows of a single long series
ROLES = ("train", "holdout", "synthetic")


class EvaluationInputError(SynthPipelineError, ValueError):
    """The train, holdout or synthetic table cannot be audited as given (nothing is written)."""


class LeakageError(EvaluationInputError):
    """The holdout shares entities (or, for a single long series, timestamps) with train."""


@dataclass
class PreparedInputs:
    frames: dict[str, pd.DataFrame]  # typed frames, sorted by (sequence key, time)
    layouts: dict[str, DatasetSchema]  # sequence layout of each frame
    n_sequences: dict[str, int]


def read_table(path: str | Path, role: str) -> pd.DataFrame:
    """Read a CSV or Parquet file (CLI front-end); errors name the role."""
    from synth_pipeline.ingest import Source, read_source

    p = Path(path)
    if not p.exists():
        raise EvaluationInputError(f"{role} table '{path}' does not exist")
    try:
        return read_source(Source(path=str(p)))
    except IngestError as e:
        if "has no rows" in str(e):
            raise EvaluationInputError(f"{role} table '{path}' is empty (no rows); nothing to evaluate") from None
        raise EvaluationInputError(f"{role} table: {e}") from None


def _family(s: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(s):
        return "bool"
    if pd.api.types.is_numeric_dtype(s):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    if s.dtype == object:
        v = s.dropna()
        if len(v) and all(isinstance(x, (bool, np.bool_)) for x in v.head(1000).tolist()):
            return "bool"
        if len(v) and all(isinstance(x, (int, float, np.integer, np.floating)) for x in v.head(1000).tolist()):
            return "numeric"
    return "text"


def _spec_family(spec: ColumnSpec) -> str | None:
    if spec.dtype is None:
        return None
    if spec.dtype.startswith("bool") or spec.dtype == "boolean":
        return "bool"
    if spec.dtype.lower().startswith(("int", "uint", "float")):
        return "numeric"
    if spec.dtype.startswith("datetime"):
        return "datetime"
    return "text"


def sequence_layout(schema: DatasetSchema, df: pd.DataFrame) -> DatasetSchema:
    """The schema a frame is cut into sequences with: a single long series whose frame carries a
    ``sequence_id`` column (synthetic windows) is keyed by it."""
    if schema.entity_key is None and SEQUENCE_ID in df.columns:
        key = ColumnSpec(SEQUENCE_ID, ColumnKind.IDENTIFIER, nullable=False)
        return dataclasses.replace(schema, columns=[key, *schema.columns], entity_key=SEQUENCE_ID)
    return schema


def _check_columns(df: pd.DataFrame, schema: DatasetSchema, role: str) -> None:
    if role == "synthetic":
        expected = list(schema.output_columns)
    else:
        expected = [c.name for c in schema.columns if c.kind != ColumnKind.IGNORE]
    optional = {c.name for c in schema.columns if c.kind == ColumnKind.IGNORE}
    if schema.entity_key is None:
        optional.add(SEQUENCE_ID)
    cols = [str(c) for c in df.columns]
    missing = [c for c in expected if c not in cols]
    extra = [c for c in cols if c not in expected and c not in optional]
    if missing or extra:
        what = []
        if missing:
            what.append(f"missing column(s) {missing}")
        if extra:
            what.append(f"unexpected column(s) {extra}")
        raise EvaluationInputError(
            f"{role} table does not match the schema '{schema.name}': {'; '.join(what)}; "
            f"expected columns {expected}"
        )
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise EvaluationInputError(f"{role} table has duplicate column name(s) {dup}")


def train_families(train: pd.DataFrame, schema: DatasetSchema) -> dict[str, str]:
    """The type family of every modelled train column (what :func:`_check_dtypes` compares with)."""
    return {spec.name: _family(train[spec.name]) for spec in schema.modelled}


def _check_dtypes(df: pd.DataFrame, train: pd.DataFrame | dict[str, str], schema: DatasetSchema, role: str) -> None:
    """Modelled columns must have the same type family as the schema (or train): numbers stay
    numbers, text stays text. Int vs float is fine (an integer column with gaps is float).
    ``train``: the train frame, or its :func:`train_families`."""
    families = train if isinstance(train, dict) else None
    bad = []
    for spec in schema.modelled:
        s = df[spec.name]
        fam = _family(s)
        if spec.kind in NUMERIC_KINDS and spec.kind != ColumnKind.DATETIME:
            want = "numeric"
            ok = fam == "numeric"
        elif spec.kind == ColumnKind.DATETIME:
            want = "datetime"
            ok = fam in ("datetime", "text")
        else:
            want = _spec_family(spec) or (families[spec.name] if families is not None else _family(train[spec.name]))
            ok = fam == want or (s.isna().all())
        if not ok:
            bad.append(f"'{spec.name}' is {s.dtype} ({fam}) but the schema/train have {want} values")
    if bad:
        raise EvaluationInputError(
            f"{role} table column type(s) differ from the schema: " + "; ".join(bad)
            + "; regenerate the table from a model trained on this schema or fix the column types"
        )


def _parse_time(df: pd.DataFrame, schema: DatasetSchema, role: str) -> pd.DataFrame:
    """Parse the time index with the schema's format, falling back to ISO 8601 (synthetic tables
    written from datetime columns come back as ISO strings whatever the source format was)."""
    ti = schema.time_index
    if pd.api.types.is_datetime64_any_dtype(df[ti]):
        return df
    try:
        parsed = parse_times(df[ti], schema, ti, role)
    except (IngestError, ValueError) as first:
        try:
            parsed = parse_times(df[ti], dataclasses.replace(schema, time_format=None), ti, role)
        except (IngestError, ValueError):
            raise EvaluationInputError(f"{role} table: {first}") from None
    out = df.copy()
    out[ti] = parsed
    return out


def _keys(df: pd.DataFrame, col: str) -> set[str]:
    return set(df[col].astype(str).unique().tolist())


def prepare_inputs(
    train: pd.DataFrame, holdout: pd.DataFrame, synthetic: pd.DataFrame, schema: DatasetSchema,
    max_size_ratio: float, rare_tokens: tuple[str, ...] = (RARE_TOKEN,),
) -> PreparedInputs:
    real = prepare_real(train, holdout, schema, max_size_ratio, synthetic=synthetic)
    frame, layout, n_syn = prepare_synthetic(synthetic, schema, train_families(real.frames["train"], schema),
                                             rare_tokens)
    real.frames["synthetic"], real.layouts["synthetic"], real.n_sequences["synthetic"] = frame, layout, n_syn
    return PreparedInputs(frames={r: real.frames[r] for r in ROLES}, layouts={r: real.layouts[r] for r in ROLES},
                          n_sequences={r: real.n_sequences[r] for r in ROLES})


def prepare_real(
    train: pd.DataFrame, holdout: pd.DataFrame, schema: DatasetSchema, max_size_ratio: float,
    synthetic: pd.DataFrame | None = None,
) -> PreparedInputs:
    """Check and type train and holdout (``frames`` / ``layouts`` / ``n_sequences`` of those two);
    ``synthetic``, when given, has its columns checked first (the order of the unsharded checks)."""
    raw = {"train": train, "holdout": holdout}
    if synthetic is not None:
        raw["synthetic"] = synthetic
    for role, df in raw.items():
        if not isinstance(df, pd.DataFrame):
            raise EvaluationInputError(f"{role} must be a pandas DataFrame, got {type(df).__name__}")
        _check_columns(df, schema, role)
        if len(df) == 0:
            raise EvaluationInputError(f"{role} table is empty (no rows); nothing to evaluate")
    raw.pop("synthetic", None)
    _check_dtypes(holdout, train, schema, "holdout")
    frames: dict[str, pd.DataFrame] = {}
    layouts: dict[str, DatasetSchema] = {}
    for role, df in raw.items():
        frames[role], layouts[role] = _typed(df, schema, role)
    _check_leakage(frames, schema)
    counts = {role: _count(frames[role], layouts[role], role) for role in raw}
    big, small = max(counts["train"], counts["holdout"]), min(counts["train"], counts["holdout"])
    if big > max_size_ratio * max(small, 1):
        raise EvaluationInputError(
            f"train has {counts['train']} and holdout {counts['holdout']} sequences, a ratio of "
            f"{big / max(small, 1):.1f} > max_size_ratio={max_size_ratio:g}. The audit compares every synthetic "
            f"sequence with the holdout and with a random train sample of the same size, so the larger set is "
            f"subsampled to the smaller one; at this ratio most of it would be discarded. Split with a "
            f"holdout_fraction between 0.05 and 0.5, or raise max_size_ratio in the gate config"
        )
    return PreparedInputs(frames=frames, layouts=layouts, n_sequences=counts)


def prepare_synthetic(
    synthetic: pd.DataFrame, schema: DatasetSchema, families: dict[str, str],
    rare_tokens: tuple[str, ...] = (RARE_TOKEN,), *, whole: bool = True,
) -> tuple[pd.DataFrame, DatasetSchema, int]:
    """Check and type a synthetic table (or one shard of it): ``(frame, layout, n_sequences)``.
    ``families``: :func:`train_families`. A column with only missing values is refused, in a shard
    (``whole=False``) too: its values cannot be typed (use fewer, larger shards if a sparse column
    leaves one shard without values)."""
    if not isinstance(synthetic, pd.DataFrame):
        raise EvaluationInputError(f"synthetic must be a pandas DataFrame, got {type(synthetic).__name__}")
    _check_columns(synthetic, schema, "synthetic")
    if len(synthetic) == 0:
        raise EvaluationInputError("synthetic table is empty (no rows); nothing to evaluate")
    _check_dtypes(synthetic, families, schema, "synthetic")
    check_missing_columns(missing_columns(synthetic, schema), "" if whole else "this shard of the ")
    frame, layout = _typed(synthetic, schema, "synthetic")
    check_synthetic_values(frame, schema, rare_tokens)
    return frame, layout, _count(frame, layout, "synthetic")


def missing_columns(synthetic: pd.DataFrame, schema: DatasetSchema) -> list[str]:
    """Modelled columns of a synthetic table (or shard) holding only missing values."""
    return [c.name for c in schema.modelled if synthetic[c.name].isna().all()]


def check_missing_columns(empty: list[str], where: str = "") -> None:
    if empty:
        raise EvaluationInputError(
            f"{where}synthetic column(s) {empty} contain only missing values; the generator produced no values "
            f"for them: fix the model or the export, or mark the column 'ignore' in the schema for all tables"
            + ("; a sparse column may also need fewer, larger shards" if where else "")
        )


def _typed(df: pd.DataFrame, schema: DatasetSchema, role: str) -> tuple[pd.DataFrame, DatasetSchema]:
    layout = sequence_layout(schema, df)
    df = _parse_time(df, schema, role)
    try:
        return coerce(df, layout, source=f"{role} table"), layout
    except SynthPipelineError as e:
        if isinstance(e, EvaluationInputError):
            raise
        raise EvaluationInputError(str(e)) from None


def _count(frame: pd.DataFrame, layout: DatasetSchema, role: str) -> int:
    try:
        idx, _, _ = sequence_index(frame, layout)
    except SynthPipelineError as e:
        raise EvaluationInputError(f"{role} table: {e}") from None
    return int(idx.shape[0])


def check_synthetic_values(df: pd.DataFrame, schema: DatasetSchema,
                           rare_tokens: tuple[str, ...] = (RARE_TOKEN,)) -> None:
    """A synthetic table may only hold what the schema allows: pinned categories (and the model's
    protected token, which replaces levels held by too few entities), and values in every
    non-nullable column. Counts only in the message (never values)."""
    bad = []
    for spec in schema.modelled:
        s = df[spec.name]
        if not spec.nullable and s.isna().any():
            bad.append(f"'{spec.name}' has {int(s.isna().sum())} missing value(s) but is not nullable")
        if spec.categories is not None and spec.kind in (ColumnKind.CATEGORICAL, ColumnKind.BINARY):
            outside = s.notna() & ~s.isin(list(spec.categories) + list(rare_tokens))
            if outside.any():
                bad.append(f"'{spec.name}' has {int(outside.sum())} value(s) outside the schema's "
                           f"{len(spec.categories)} categories")
    if bad:
        raise EvaluationInputError(
            "synthetic table does not fit the schema: " + "; ".join(bad)
            + "; a model trained on this schema cannot produce these: regenerate the table, or fix the export"
        )


def _check_leakage(frames: dict[str, pd.DataFrame], schema: DatasetSchema) -> None:
    tr, ho = frames["train"], frames["holdout"]
    if schema.entity_key is not None:
        shared = _keys(tr, schema.entity_key) & _keys(ho, schema.entity_key)
        if shared:
            raise LeakageError(
                f"holdout shares {len(shared)} of its {ho[schema.entity_key].nunique()} entities "
                f"('{schema.entity_key}') with train: the holdout must be entities the model never saw. "
                f"Split by entity (synth_pipeline.split.split_sequences) and pass the two parts"
            )
        return
    ti = schema.time_index
    shared_t = np.intersect1d(tr[ti].to_numpy(), ho[ti].to_numpy())
    if shared_t.size:
        raise LeakageError(
            f"holdout shares {shared_t.size} timestamps with train: windows of a single series must not "
            f"overlap between train and holdout. Split by window (synth_pipeline.split.split_sequences)"
        )


def describe_inputs(prepared: PreparedInputs) -> dict[str, Any]:
    return {role: {"rows": int(len(prepared.frames[role])), "sequences": prepared.n_sequences[role]} for role in ROLES}
