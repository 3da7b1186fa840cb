"""Reference "synthetic" tables with a known answer, used to calibrate the gate.

Each takes typed real frames (``ingest.coerce`` output) and returns a table in the synthetic
format (a single long series gets a ``sequence_id`` column, as the synthesizer writes it):

* ``holdout_as_synthetic``: real sequences the model never saw; the ideal generator. Must pass.
* ``train_copy``: verbatim train sequences. Must fail (privacy).
* ``train_plus_noise``: train + N(0, (rel * column std)^2) on every numeric column. Must fail.
* ``independent_marginals``: every column drawn independently from the real pooled values (static
  columns per sequence): right marginals, no dependence at all. Must fail on fidelity.
* ``time_shuffled``: real sequences with their steps permuted within each entity: right values and
  cross-column relations per step, no temporal order. Must fail a temporal check.
* ``shifted_column``: real unseen sequences with one numeric column shifted by one standard
  deviation: everything right except one marginal. Must fail the marginal check.
* ``rekeyed_copy``: verbatim train sequences under new keys. Must fail (privacy).
* ``static_copied``: unseen dynamics under train entities' static attributes. Must fail (privacy,
  the static part of ``privacy/parts.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from synth_pipeline.encoding import sequence_ids
from synth_pipeline.evaluation.inputs import SEQUENCE_ID
from synth_pipeline.schema import ColumnKind, DatasetSchema


def _with_sequence_id(df: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    if schema.entity_key is not None:
        return df.reset_index(drop=True)
    out = df.reset_index(drop=True).copy()
    out.insert(0, SEQUENCE_ID, sequence_ids(out, schema))
    return out


def _entity_codes(df: pd.DataFrame, schema: DatasetSchema) -> np.ndarray:
    return sequence_ids(df, schema) if schema.entity_key is None else pd.factorize(df[schema.entity_key])[0]


def holdout_as_synthetic(holdout: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    return _with_sequence_id(holdout, schema)


def train_copy(train: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    return _with_sequence_id(train, schema)


def train_plus_noise(train: pd.DataFrame, schema: DatasetSchema, rel: float = 0.01, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = train.copy()
    for c in schema.modelled:
        if c.kind in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER):
            x = out[c.name].to_numpy(dtype=float, na_value=np.nan)
            sd = float(np.nanstd(x)) or 1.0
            noise = rng.normal(0.0, rel * sd, size=len(x))
            if c.static:  # keep entity attributes constant: one draw per entity
                codes = _entity_codes(out, schema)
                noise = rng.normal(0.0, rel * sd, size=codes.max() + 1)[codes]
            out[c.name] = x + noise
    return _with_sequence_id(out, schema)


def independent_marginals(real: pd.DataFrame, schema: DatasetSchema, seed: int = 0) -> pd.DataFrame:
    """Same keys and timestamps as ``real``; each modelled column resampled independently."""
    rng = np.random.default_rng(seed)
    out = real.copy()
    codes = _entity_codes(out, schema)
    first = np.r_[0, np.flatnonzero(np.diff(codes)) + 1]
    for c in schema.modelled:
        vals = real[c.name].to_numpy()
        if c.static:
            per_entity = vals[first]
            draw = per_entity[rng.integers(0, len(per_entity), size=len(first))]
            out[c.name] = draw[codes]
        else:
            out[c.name] = vals[rng.integers(0, len(vals), size=len(vals))]
    return _with_sequence_id(out, schema)


def time_shuffled(real: pd.DataFrame, schema: DatasetSchema, seed: int = 0) -> pd.DataFrame:
    """Permute the dynamic columns' rows within each entity (a window of a long series), keeping
    the time index in order: every step keeps its own values across columns."""
    rng = np.random.default_rng(seed)
    out = real.reset_index(drop=True).copy()
    codes = _entity_codes(out, schema)
    order = np.lexsort((rng.random(len(out)), codes))  # rows grouped by entity, shuffled within
    dyn = [c.name for c in schema.dynamic_columns]
    for c in dyn:
        out[c] = out[c].to_numpy()[order]
    return _with_sequence_id(out, schema)


def shifted_column(real: pd.DataFrame, schema: DatasetSchema, column: str | None = None, by_std: float = 1.0) -> pd.DataFrame:
    out = real.copy()
    if column is None:
        column = next(c.name for c in schema.dynamic_columns if c.kind in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER))
    x = out[column].to_numpy(dtype=float, na_value=np.nan)
    out[column] = x + by_std * float(np.nanstd(x))
    return _with_sequence_id(out, schema)


def rekeyed_copy(train: pd.DataFrame, schema: DatasetSchema, seed: int = 0) -> pd.DataFrame:
    """Verbatim train sequences under new entity keys, in shuffled entity order (a copy that a
    key-based comparison would miss). Must fail (privacy)."""
    out = _with_sequence_id(train, schema)
    key = schema.entity_key or SEQUENCE_ID
    keys = out[key].unique()
    fresh = np.char.add("k", np.char.zfill(np.random.default_rng(seed).permutation(len(keys)).astype(str), 7))
    out[key] = out[key].map(dict(zip(keys, fresh, strict=True)))
    order = [key, schema.time_index] if schema.time_index else [key]
    return out.sort_values(order, kind="stable").reset_index(drop=True)


def static_copied(train: pd.DataFrame, fresh: pd.DataFrame, schema: DatasetSchema, seed: int = 0) -> pd.DataFrame | None:
    """Real unseen sequences (``fresh``) carrying the static attributes of random train entities:
    dynamics new, entity attributes copied. Must fail (privacy, by parts). None without static columns."""
    static = [c.name for c in schema.modelled if c.static]
    if not static:
        return None
    fresh = _with_sequence_id(fresh, schema)
    key = schema.entity_key or SEQUENCE_ID
    codes = _entity_codes(train.reset_index(drop=True), schema)
    first = np.r_[0, np.flatnonzero(np.diff(codes)) + 1]
    donors = train.reset_index(drop=True).iloc[first][static].reset_index(drop=True)
    keys = fresh[key].unique()
    pick = donors.iloc[np.random.default_rng(seed).integers(0, len(donors), len(keys))].set_axis(keys)
    out = fresh.copy()
    for c in static:
        out[c] = fresh[key].map(pick[c]).astype(fresh[c].dtype)
    return out
