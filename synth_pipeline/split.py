"""Entity-level train/holdout split: the holdout's entities are never seen by the model."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from synth_pipeline.errors import SchemaError

if TYPE_CHECKING:
    from synth_pipeline.schema import DatasetSchema


def split_entities(
    keys: np.ndarray | pd.Series, holdout_fraction: float = 0.2, seed: int = 0, min_holdout: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Return boolean masks (train, holdout) over ``keys`` so that no key is in both."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise SchemaError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    keys = pd.Series(np.asarray(keys))
    codes, uniques = pd.factorize(keys, sort=True)
    n = len(uniques)
    n_hold = int(round(n * holdout_fraction))
    if holdout_fraction > 0:
        n_hold = max(n_hold, min_holdout)
    if n_hold >= n:
        raise SchemaError(f"only {n} entities: too few to hold {n_hold} out; lower holdout_fraction or add data")
    rng = np.random.default_rng(seed)
    hold = np.zeros(n, dtype=bool)
    hold[rng.permutation(n)[:n_hold]] = True
    hold_rows = hold[codes]
    return ~hold_rows, hold_rows


def split_sequences(df: pd.DataFrame, schema: DatasetSchema, holdout_fraction: float = 0.2,
                    seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train / holdout frames by entity (panels) or by non-overlapping window (one long series, whose
    windows are the schema's sequences): the holdout shares no entity and no timestamp with train."""
    from synth_pipeline.encoding import sequence_ids

    keys = df[schema.entity_key].to_numpy() if schema.entity_key is not None else sequence_ids(df, schema)
    tr, ho = split_entities(keys, holdout_fraction, seed)
    return df[tr].reset_index(drop=True), df[ho].reset_index(drop=True)
