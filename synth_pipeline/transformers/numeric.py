"""Numeric columns (continuous, integer, non-index datetime) <-> N(0, 1) through protected quantiles.

Fitted on one value per entity for static columns and on rows for time-varying ones; the range ends
at a randomised k-th extreme entity (``protection.py``), interior knots are smoothed quantiles, so
no stored knot is a real value and generated values interpolate between knots (a real value comes
back only where many entities share it, e.g. a round number).

With ``model.privacy`` (``fit(..., dp=...)``) the map comes from ``dp_noise.numeric_histogram``
instead: three per-unit normalised noisy histograms (a data-independent coarse domain, then two
linear refinements between the noisy bounds), bounds at the extent of the bins that clear the noise,
knots at the last histogram's noisy quantiles, ``has_missing`` from a noisy "missing" bin. Static
token counts (``set_bins``) follow the public unit count and the released knots.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from synth_pipeline.errors import SchemaError
from synth_pipeline.transformers.base import ColumnTransformer
from synth_pipeline.transformers.dp_noise import StatsAccountant, cdf_quantiles, numeric_histogram
from synth_pipeline.transformers.protection import (
    Protection,
    move_rare_knots,
    protected_bounds,
    smoothed_quantiles,
)

_EPS = 1e-4
log = logging.getLogger(__name__)


@dataclass
class QuantileMap:
    """Monotone map of a numeric column to N(0, 1) through knots at probabilities ``probs``."""

    knots: list[float]
    probs: list[float]

    @classmethod
    def fit(cls, x: np.ndarray, n_quantiles: int, clip: tuple[float, float]) -> QuantileMap:
        """Unprotected map on clipped empirical quantiles (the audit's in-memory representation)."""
        x = x[np.isfinite(x)]
        probs = np.linspace(0.0, 1.0, _n_knots(x.size, n_quantiles))
        lo, hi = clip
        return cls(knots=np.quantile(x, lo + probs * (hi - lo)).tolist(), probs=probs.tolist())

    @classmethod
    def fit_protected(cls, x: np.ndarray, units: np.ndarray, unit_min: np.ndarray, unit_max: np.ndarray,
                      n_quantiles: int, prot: Protection, rng: np.random.Generator) -> QuantileMap:
        lo, hi = protected_bounds(unit_min, unit_max, prot, rng)
        probs = np.linspace(0.0, 1.0, _n_knots(x.size, n_quantiles))
        knots = smoothed_quantiles(np.clip(x, lo, hi), probs)
        knots[0], knots[-1] = lo, hi
        knots = np.clip(np.maximum.accumulate(knots), lo, hi)
        knots = move_rare_knots(knots, x, units, prot.k)
        return cls(knots=knots.tolist(), probs=probs.tolist())

    @classmethod
    def fit_dp(cls, hist: dict[str, Any], n_units: int, n_quantiles: int) -> QuantileMap:
        """Knots at the noisy CDF's quantiles of ``dp_noise.numeric_histogram``'s last stage; the ends
        are its noisy bounds (post-processing only: monotone, lo < hi)."""
        probs = np.linspace(0.0, 1.0, _n_knots(n_units, n_quantiles))
        knots = cdf_quantiles(np.asarray(hist["edges"]), np.asarray(hist["counts"]), probs)
        return cls(knots=knots.tolist(), probs=probs.tolist())

    def forward(self, x: np.ndarray) -> np.ndarray:
        knots, probs = np.asarray(self.knots), np.asarray(self.probs)
        uk, first = np.unique(knots, return_index=True)
        last = np.r_[first[1:] - 1, len(knots) - 1]
        p_lo, p_hi = probs[first], probs[last]
        xc = np.clip(x, uk[0], uk[-1])
        j = np.clip(np.searchsorted(uk, xc, side="right") - 1, 0, len(uk) - 1)
        exact = uk[j] == xc
        j1 = np.minimum(j + 1, len(uk) - 1)
        span = np.where(j1 > j, uk[j1] - uk[j], 1.0)
        t = np.where(j1 > j, (xc - uk[j]) / span, 0.0)
        u = np.where(exact, 0.5 * (p_lo[j] + p_hi[j]), p_hi[j] + t * (p_lo[j1] - p_hi[j]))
        u = np.where(np.isnan(x), 0.5, u)
        return ndtri(np.clip(u, _EPS, 1 - _EPS))

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return np.interp(ndtr(z), self.probs, self.knots)

    @property
    def bounds(self) -> tuple[float, float]:
        return self.knots[0], self.knots[-1]


def _n_knots(n: int, n_quantiles: int) -> int:
    return int(max(2, min(n_quantiles, n // 5 if n >= 10 else 2)))


@dataclass
class ContinuousTransformer(ColumnTransformer):
    """Float values <-> N(0, 1); static columns also as ``bins`` quantile tokens."""

    qmap: QuantileMap | None = None
    bins: int = 0  # static: number of quantile-bin tokens
    level_edges: list[float] | None = None  # time-varying: bin edges of per-sequence levels (N(0,1) space)
    dev_std: float = 1.0  # time-varying: spread of within-sequence deviations from the level

    KINDS: ClassVar[tuple[str, ...]] = ("continuous",)
    integral: ClassVar[bool] = False

    # -- fit ---------------------------------------------------------------------------------
    def fit(self, col: pd.Series, units: np.ndarray, prot: Protection | None, n_quantiles: int = 256,
            clip_quantiles: tuple[float, float] = (0.001, 0.999),
            dp: StatsAccountant | None = None) -> ContinuousTransformer:
        x = self.values(col)
        miss = np.isnan(x)
        if dp is not None:
            return self._fit_dp(x, units, dp, n_quantiles)
        self.has_missing = bool(miss.any())
        if miss.all():
            raise SchemaError(f"column '{self.name}' has no values in the training data; set kind 'ignore'")
        x, u = x[~miss], units[~miss]
        if prot is None:
            self.qmap = QuantileMap.fit(x, n_quantiles, clip_quantiles)
            return self
        per = pd.Series(x).groupby(u, sort=False)
        if self.static:  # one value per entity: a long entity must not weigh more than a short one
            x = per.first().to_numpy()
            u = np.arange(x.size)
            umin = umax = x
        else:
            umin, umax = per.min().to_numpy(), per.max().to_numpy()
        self.qmap = QuantileMap.fit_protected(x, u, umin, umax, n_quantiles, prot, prot.rng(self.name))
        return self

    def _fit_dp(self, x: np.ndarray, units: np.ndarray, dp: StatsAccountant, n_quantiles: int) -> ContinuousTransformer:
        """Differentially private fit (``dp_noise``): bounds, knots and ``has_missing`` from three
        per-unit normalised noisy histograms; nothing else about the data is read. A column with no
        values does not raise here (that would reveal it); its map is the noisy one all the same."""
        n_units = int(np.unique(units).size)
        domain = "datetime" if self.kind == "datetime" else "log"
        hist = numeric_histogram(dp, x, units, n_units, domain)
        if not hist["signal"]:
            log.warning("DP statistics: column '%s' is lost in the noise (%d units at noise std %.3g per query): "
                        "its range is a guess; more entities or a larger epsilon fix it", self.name, n_units, dp.sigma)
        self.has_missing = hist["has_missing"]
        self.qmap = QuantileMap.fit_dp(hist, n_units, n_quantiles)
        return self

    def set_bins(self, n_sequences: int, static_bins: int, min_bin_sequences: int) -> None:
        """Static token count: every bin holds ``min_bin_sequences`` sequences on average."""
        n_distinct = np.unique(np.asarray(self.qmap.knots)).size if self.qmap else 2
        self.bins = int(min(static_bins, max(2, n_distinct), max(1, n_sequences // min_bin_sequences)))

    # -- values ------------------------------------------------------------------------------
    def values(self, col: pd.Series) -> np.ndarray:
        """The column as float64 (NaN where missing)."""
        return col.to_numpy(dtype=np.float64, na_value=np.nan)

    def transform(self, col: pd.Series) -> np.ndarray:
        """Values -> N(0, 1) (NaN stays NaN)."""
        x = self.values(col)
        return np.where(np.isnan(x), np.nan, self.qmap.forward(np.nan_to_num(x)))

    def inverse(self, z: np.ndarray, missing: np.ndarray | None = None) -> np.ndarray | pd.Series:
        """N(0, 1) -> values in the column's dtype, within the protected range."""
        x = self.qmap.inverse(z)
        if missing is not None:
            x = np.where(missing, np.nan, x)
        return self.restore(x)

    def restore(self, x: np.ndarray) -> np.ndarray | pd.Series:
        if self.integral:
            lo, hi = self.qmap.bounds
            lo_i, hi_i = np.ceil(lo), np.floor(hi)
            x = np.clip(np.round(x), lo_i, max(lo_i, hi_i))
        if self.dtype.startswith(("int", "uint", "Int", "UInt")):
            return x.astype(self.dtype.lower()) if not np.isnan(x).any() else pd.array(x, dtype="Int64")
        return x.astype(self.dtype if self.dtype.startswith("float") else np.float64)

    # -- static tokens -----------------------------------------------------------------------
    def to_tokens(self, x: np.ndarray) -> np.ndarray:
        u = ndtr(self.qmap.forward(np.nan_to_num(x, nan=0.0)))
        b = np.clip((u * self.bins).astype(np.int64), 0, self.bins - 1)
        if self.has_missing:
            b = np.where(np.isnan(x), self.bins, b)
        return b

    def from_tokens(self, tok: np.ndarray, rng: np.random.Generator) -> np.ndarray | pd.Series:
        u = (tok + rng.random(tok.shape[0])) / self.bins
        x = self.qmap.inverse(ndtri(np.clip(u, _EPS, 1 - _EPS)))
        if self.has_missing:
            x = np.where(tok >= self.bins, np.nan, x)
        return self.restore(x)

    @property
    def n_tokens(self) -> int:
        return self.bins + (1 if self.has_missing else 0)

    # -- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["qmap"] = self.qmap.__dict__ if self.qmap else None
        return d

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> ContinuousTransformer:
        q = d.pop("qmap", None)
        return cls(**d, qmap=QuantileMap(**q) if q else None)


@dataclass
class IntegerTransformer(ContinuousTransformer):
    """Integers: continuous in the model, rounded and kept inside the protected range on output."""

    KINDS: ClassVar[tuple[str, ...]] = ("integer",)
    integral: ClassVar[bool] = True


@dataclass
class DatetimeTransformer(ContinuousTransformer):
    """A timestamp column that is not the time index: continuous nanoseconds, dtype restored."""

    KINDS: ClassVar[tuple[str, ...]] = ("datetime",)

    def values(self, col: pd.Series) -> np.ndarray:
        if pd.api.types.is_datetime64_any_dtype(col):
            from synth_pipeline.transformers.time_layout import to_ns

            return np.where(col.isna().to_numpy(), np.nan, to_ns(col).astype(np.float64))
        return super().values(col)

    def restore(self, x: np.ndarray) -> pd.Series:
        from synth_pipeline.transformers.time_layout import from_ns

        return from_ns(np.nan_to_num(x).astype(np.int64), self.dtype).where(~np.isnan(x))
