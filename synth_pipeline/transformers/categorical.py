"""Categorical and binary columns <-> level indices.

A level held by fewer than ``k`` distinct entities (``protection.py``; default 5) is protected: it
is not stored, the model sees one protected level in its place, and the output carries the
protected token (``_RARE_`` by default, ``model.rare_token`` to choose another). A missing value is
a level of its own.

With ``model.privacy`` (``fit(..., dp=...)``) the level set is a thresholded noisy histogram
(``dp_noise.thresholded_levels``; the threshold rule and its delta bound are in that module's
docstring): a level survives when its per-unit normalised noisy count clears the threshold, the
protected level is always present, and a level held by a single entity never survives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from synth_pipeline.errors import ConditioningError, SchemaError
from synth_pipeline.transformers.base import ColumnTransformer
from synth_pipeline.transformers.dp_noise import StatsAccountant, thresholded_levels
from synth_pipeline.transformers.protection import RARE_TOKEN, Protection, unit_counts

NA_LEVEL = "<NA>"
RARE_LEVEL = "<rare>"  # the model's protected level; decoded to ``rare_token``


@dataclass
class CategoricalTransformer(ColumnTransformer):
    levels: list[Any] | None = None  # kept real levels, then RARE_LEVEL / NA_LEVEL when present
    rare_token: str | None = None  # what RARE_LEVEL decodes to (None: no level was protected)
    # distinct values seen before protection (a count, no value): the model's latent width follows
    # the column's information, not how many of its levels the protection merged
    n_seen: int = 0

    KINDS: ClassVar[tuple[str, ...]] = ("categorical",)

    def fit(self, col: pd.Series, units: np.ndarray, prot: Protection | None,
            max_categories: int = 1000, dp: StatsAccountant | None = None) -> CategoricalTransformer:
        nn = col.notna().to_numpy()
        n_levels = int(col[nn].nunique())
        if n_levels > max_categories:
            raise SchemaError(
                f"column '{self.name}' has {n_levels} categories, more than max_categories="
                f"{max_categories}; set its kind to 'identifier' or 'ignore', or raise "
                f"model.max_categories if it really is a category"
            )
        if dp is not None:
            return self._fit_dp(col, units, prot, dp)
        self.n_seen = n_levels + int((~nn).any())
        vals = col.to_numpy(dtype=object, na_value=None)[nn]
        counts = unit_counts(vals, units[nn])
        k = prot.k if prot is not None else 1
        keep = counts.index[counts.to_numpy() >= k]
        levels = sorted((_py(v) for v in keep), key=_sort_key)
        if len(keep) < len(counts):
            levels.append(RARE_LEVEL)
            self.rare_token = prot.rare_token if prot is not None else RARE_LEVEL
        self.has_missing = bool((~nn).any())
        if self.has_missing:
            levels.append(NA_LEVEL)
        self.levels = levels
        return self

    def _fit_dp(self, col: pd.Series, units: np.ndarray, prot: Protection | None,
                dp: StatsAccountant) -> CategoricalTransformer:
        """Differentially private level set (``dp_noise.thresholded_levels``): a level is kept when its
        per-unit normalised noisy count clears the threshold that bounds, for every unit, the chance
        that a level held by it alone survives by ``delta_q``; missing values are a level of their own
        (kept the same way). The protected level is always present (data-independent), and
        ``n_seen`` is the number of released levels, not the number seen."""
        kept = thresholded_levels(dp, col.to_numpy(dtype=object, na_value=None), units)
        self.has_missing = None in kept
        levels = sorted((_py(v) for v in kept if v is not None), key=_sort_key)
        levels.append(RARE_LEVEL)
        self.rare_token = prot.rare_token if prot is not None else RARE_TOKEN
        if self.has_missing:
            levels.append(NA_LEVEL)
        self.levels = levels
        self.n_seen = len(levels)
        return self

    @property
    def real_levels(self) -> list[Any]:
        return [v for v in self.levels or [] if v not in (NA_LEVEL, RARE_LEVEL)]

    @property
    def n_tokens(self) -> int:
        return len(self.levels or [])

    def transform(self, col: pd.Series, strict: bool = False) -> np.ndarray:
        """Level index per value (vectorised); values not kept map to the protected level, or raise
        when ``strict`` (conditions must use levels the model knows)."""
        levels = self.levels or []
        real = self.real_levels
        na = col.isna().to_numpy()
        codes = pd.Index(real, dtype=object).get_indexer(
            pd.Index(col.to_numpy(dtype=object, na_value=None))).astype(np.int64)
        unseen = (codes == -1) & ~na
        if unseen.any():
            if strict:
                raise ConditioningError(
                    f"column '{self.name}': {int(unseen.sum())} value(s) are not levels the model knows (levels "
                    f"held by fewer entities than the protection threshold are never modelled); valid "
                    f"values: {real[:50]}{' ...' if len(real) > 50 else ''}"
                )
            codes[unseen] = levels.index(RARE_LEVEL) if RARE_LEVEL in levels else 0
        if na.any():
            if NA_LEVEL in levels:
                codes[na] = levels.index(NA_LEVEL)
            elif strict:
                raise ConditioningError(f"column '{self.name}' had no missing values in training")
            else:
                codes[na] = 0
        return codes

    def inverse(self, codes: np.ndarray) -> np.ndarray:
        levels = np.array(self.levels, dtype=object)
        vals = levels[np.clip(codes, 0, len(levels) - 1)]
        vals[vals == NA_LEVEL] = None
        vals[vals == RARE_LEVEL] = self.rare_token
        return vals


@dataclass
class BinaryTransformer(CategoricalTransformer):
    """Two-level columns (booleans, yes/no): a categorical with the same protection."""

    KINDS: ClassVar[tuple[str, ...]] = ("binary",)


def _py(v: Any) -> Any:
    """numpy scalar -> python scalar (JSON-safe category values)."""
    return v.item() if isinstance(v, np.generic) else v


def _sort_key(v: Any) -> tuple[str, Any]:
    return (type(v).__name__, v)
