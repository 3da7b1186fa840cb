"""Differentially private versions of every statistic the encoder stores (``model.privacy``).

When ``TableEncoder`` is given a ``dp.StatisticsBudget``, each data-dependent statistic that reaches
the saved model is post-processing of Gaussian mechanisms whose L2 sensitivity is at most 1 with
respect to adding or removing one privacy unit (an entity; ``encoding.privacy_units``). The fit
makes exactly ``m`` such queries, ``m`` fixed by the schema before the data is read
(``plan_queries``), each with noise std ``noise_multiplier * sqrt(m)`` (weighted queries: see
``WEIGHT_STARTS``), so that in RDP they compose to one
Gaussian mechanism at ``budget.noise_multiplier``. ``StatsAccountant`` counts the queries made and
``finish`` asserts that the count equals the plan. Thresholded releases over an unknown domain
(category sets, the time-of-day phase) spend ``budget.delta`` in total, split evenly over them.

Queries per column kind (``plan_queries``):

* numeric (continuous, integer, datetime; static or time-varying): 3 -- a histogram over a
  data-independent coarse domain (signed decades from 1e-6 to 1e19 in magnitude -- groups of 3
  decades up to 1e21 when N < 40 noise stds --, or 4-year bins from 1900 to 2100 for datetimes) with one extra "missing" bin, then two histograms with bins
  between the previous stage's noisy bounds (log-spaced over a one-signed range of a decade or
  more, linear otherwise). Coarse bounds (``_extent``) span the run of bins around the noisy mode
  whose counts clear 1.5 noise stds, plus any bin clearing a threshold that pure noise reaches in
  1% of histograms; each refinement (``_tails``) keeps the first to last bin clearing a threshold that
  pure noise reaches in 5% of histograms, and bins under one noise std count as empty for the knots. So an extreme value held by a few units never moves a
  bound (the bounds are bin edges, never a real value). The quantile knots are read off the last
  histogram's noisy CDF (monotone by construction; ``lo < hi`` always). When even the coarse mode
  is within what noise reaches, the column is reported as lost in the noise (a warning; for the
  sequence lengths, the schema's ``min_sequence_length`` is used instead of a noisy bound).
* time-varying numeric with levels: 1 more -- a histogram of per-sequence levels over the fixed
  range [-4, 4] of the N(0, 1) space: level bin edges at its noisy quantiles, and ``dev_std`` from
  it (the column is N(0, 1) per unit, so within-sequence variance ~ 1 - the levels' variance, plus
  the spread of levels inside their bins).
* categorical / binary: 1 thresholded histogram of levels (``thresholded_levels``).
* time layout: 8 -- starts (3, the numeric procedure on start timestamps), lengths (3), the
  place of starts in the calendar cycle (1, a histogram over the cycle's places) and the
  time-of-day phase of the grid (1, thresholded like a category).

Per-unit normalisation: a unit with many rows counts no more than a unit with one row. In a
histogram each unit's rows (or sequences) carry weights summing to 1 across the bins (L1 = 1 hence
L2 <= 1); in a level histogram each of a unit's d distinct levels gets 1/sqrt(d) (L2 = 1), with at
most ``MAX_LEVELS_PER_UNIT`` levels per unit (its most frequent ones).

The number of units N is treated as public (as ``dp.py`` and Opacus do): it sizes the refinement
histograms (``fine_bins``: about 4 noise stds of units per bin, 4 to 64 bins, so histograms get
coarser when noise would swamp them), the number of knots and of static / level bins. The noise
comes from one ``numpy`` Generator seeded from ``budget.seed``, which is never stored.

Threshold rule and delta bound (``level_threshold``): a level held by one unit u alone receives
weight w = 1/sqrt(d_u) <= 1 from u and nothing from anyone else, so with noise Z ~ N(0, s^2) it
survives with probability P(w + Z > tau) = Q((tau - 1/sqrt(d_u)) / s). u holds at most
d_u <= C = ``MAX_LEVELS_PER_UNIT`` levels, so the probability that ANY level held only by u survives
is at most d_u * Q((tau - 1/sqrt(d_u)) / s) (union bound). tau is the smallest value with
max_{1<=d<=C} d * Q((tau - 1/sqrt(d)) / s) <= delta_q, delta_q = budget.delta / (number of
thresholded queries). Conditioned on no such level surviving (probability >= 1 - delta_q), the
released set is post-processing of the Gaussian mechanism on the levels both neighbours share,
whose L2 sensitivity is <= 1 (u's weight vector has norm 1); so each thresholded query is the
Gaussian mechanism plus delta_q, and all of them together spend at most ``budget.delta`` extra.
Levels that are not in the data are never released (their count is 0 < tau with probability 1 in
the bound above).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from synth_pipeline.dp import StatisticsBudget

QUERIES_NUMERIC = 3  # coarse histogram (+ missing bin), refinement, knots histogram
QUERIES_LEVELS = 1  # level histogram (dev_std is derived from it)
QUERIES_CATEGORICAL = 1  # thresholded level counts
QUERIES_LAYOUT = 8  # starts 3, lengths 3, cycle places 1, phase 1 (thresholded)
# Query weights: a query of weight w gets noise std sigma_1 / sqrt(w), where sigma_1 = noise_multiplier *
# sqrt(total weight), so the queries still compose to one Gaussian at noise_multiplier (sum of w / sigma_1^2
# = 1 / noise_multiplier^2). The start-time queries weigh more: a start model lost in the noise places a
# panel's dates anywhere in 1900-2100, while a noisy numeric column only blurs (measured on the 77-entity
# canary panel at epsilon 5: starts in 1903 at weight 1)
WEIGHT_STARTS = 4.0
THRESHOLDED_LAYOUT = 1  # the phase
MAX_LEVELS_PER_UNIT = 32  # a unit contributes to at most this many distinct levels
MAX_FINE_BINS = 64
MIN_FINE_BINS = 8
LEVEL_RANGE = 4.0  # per-sequence levels live in N(0,1) space, clipped to +-ndtri(1e-4) ~ 3.72
NEAR_COARSE = 1.5  # a coarse bin next to the bounds' run joins it above this many noise stds
FINE_FALSE_BINS = 0.05  # refinements keep outer bins that pure noise would reach in 5% of histograms only
EMPTY_BELOW = 1.0  # the knots' histogram counts a bin under this many noise stds as empty
COARSE_DECADES = 3  # coarse bins span this many decades when units are few for the noise (else one)
MIN_MASS = 1e-3  # no threshold is below this many units (the noiseless limit: an empty bin is empty)

_NS_1900 = int(np.datetime64("1900-01-01", "ns").astype(np.int64))
_NS_2100 = int(np.datetime64("2100-01-01", "ns").astype(np.int64))


def plan_queries(schema: Any, levels: bool) -> tuple[float, int]:
    """(total query weight, thresholded queries) the encoder's fit makes on ``schema``, from the
    schema alone (each query weighs 1 but the start-time ones, ``WEIGHT_STARTS``)."""
    from synth_pipeline.schema import NUMERIC_KINDS, ColumnKind

    m, thr = QUERIES_LAYOUT + QUERIES_NUMERIC * (WEIGHT_STARTS - 1), THRESHOLDED_LAYOUT
    for spec in schema.modelled:
        if ColumnKind(spec.kind) in NUMERIC_KINDS:
            m += QUERIES_NUMERIC + (QUERIES_LEVELS if levels and not spec.static else 0)
        else:
            m += QUERIES_CATEGORICAL
            thr += 1
    return m, thr


class StatsAccountant:
    """The encoder's Gaussian mechanisms: per-query noise, a seeded generator, and the query count."""

    def __init__(self, budget: StatisticsBudget, planned: float, thresholded: int) -> None:
        self.budget = budget
        self.planned = float(planned)  # total query weight
        self.planned_thresholded = int(thresholded)
        self.sigma_1 = float(budget.noise_multiplier) * float(np.sqrt(self.planned))  # a weight-1 query's noise
        self.weight = 1.0  # of the queries made now (``weighted``)
        self.delta_q = float(budget.delta) / max(int(thresholded), 1)
        self.rng = np.random.default_rng(budget.seed)
        self.made = 0.0
        self.made_thresholded = 0

    @property
    def sigma(self) -> float:
        """Noise std of the current query (thresholds derived from it are the query's own)."""
        return self.sigma_1 / float(np.sqrt(self.weight))

    @contextmanager
    def weighted(self, weight: float) -> Iterator[None]:
        """Queries made inside carry ``weight`` (less noise; the plan counts it)."""
        old, self.weight = self.weight, float(weight)
        try:
            yield
        finally:
            self.weight = old

    def gaussian(self, values: np.ndarray) -> np.ndarray:
        """One query: ``values`` (a vector of L2 sensitivity <= 1 per unit) plus N(0, sigma^2) noise."""
        self.made += self.weight
        v = np.asarray(values, dtype=np.float64)
        return v + self.rng.normal(0.0, self.sigma, v.shape)

    def finish(self) -> dict[str, Any]:
        assert abs(self.made - self.planned) < 1e-9, (
            f"DP statistics: queries of weight {self.made} made, {self.planned} planned")
        assert self.made_thresholded == self.planned_thresholded, (
            f"DP statistics: {self.made_thresholded} thresholded queries made, {self.planned_thresholded} planned")
        return {"noise_multiplier": float(self.budget.noise_multiplier), "delta": float(self.budget.delta),
                "queries": self.planned, "thresholded_queries": self.planned_thresholded}

    # -- thresholds ------------------------------------------------------------------------------
    def bin_threshold(self, n_bins: int) -> float:
        """A noisy count above this is 'held by several units' (few false bins among ``n_bins``)."""
        return max(self.sigma * max(2.0, float(ndtri(1.0 - 0.01 / max(n_bins, 1)))), MIN_MASS)

    def fine_bins(self, n_units: int) -> int:
        """Linear bins per refinement: each holds ~4 noise stds of units on average (N is public)."""
        return int(np.clip(n_units / (4.0 * self.sigma), MIN_FINE_BINS, MAX_FINE_BINS))


# ------------------------------------------------------------------------------------------------
# per-unit weights
# ------------------------------------------------------------------------------------------------
def unit_weights(units: np.ndarray) -> np.ndarray:
    """1 / (rows of the row's unit): each unit's rows sum to 1."""
    codes, inv, cnt = np.unique(np.asarray(units), return_inverse=True, return_counts=True)
    return 1.0 / cnt[inv]


def noisy_histogram(acc: StatsAccountant, bins: np.ndarray, units: np.ndarray, n_bins: int) -> np.ndarray:
    """One query: per-unit normalised histogram (L1 = L2 <= 1 per unit) plus noise."""
    w = unit_weights(units) if len(units) else np.zeros(0)
    return acc.gaussian(np.bincount(np.asarray(bins, dtype=np.int64), weights=w, minlength=n_bins)[:n_bins])


# ------------------------------------------------------------------------------------------------
# numeric columns
# ------------------------------------------------------------------------------------------------
def coarse_edges(domain: str, decades: int = 1) -> np.ndarray:
    """Data-independent bin edges: signed groups of ``decades`` decades of magnitude from 1e-6 (a bin [-1e-6, 1e-6]
    holds 0), or 4-year bins from 1900 to 2100 in nanoseconds for datetimes."""
    if domain == "datetime":
        return np.linspace(_NS_1900, _NS_2100, 51).astype(np.float64)
    mags = 10.0 ** np.arange(-6, 22 if decades > 1 else 20, decades)  # 1e-6 .. 1e19 (1e21 in groups)
    return np.r_[-mags[::-1], mags]


def _bin_of(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)


def _extent(h: np.ndarray, sigma: float, thr_far: float, thr_near: float, gap: bool) -> tuple[int, int]:
    """The bins a bound may span: from the noisy mode, extended to neighbours (one empty bin may be
    skipped when ``gap``) whose noisy count clears ``thr_near`` noise stds, united with the
    first..last bin that clears ``thr_far`` (a separate cluster far from the mode). Post-processing
    of the noisy counts only."""
    n = len(h)
    j = int(np.argmax(h))
    a = b = j
    near = max(thr_near * sigma, MIN_MASS)
    while a - 1 >= 0 and (h[a - 1] > near or (gap and a - 2 >= 0 and h[a - 2] > near)):
        a -= 1 if h[a - 1] > near else 2
    while b + 1 < n and (h[b + 1] > near or (gap and b + 2 < n and h[b + 2] > near)):
        b += 1 if h[b + 1] > near else 2
    far = np.flatnonzero(h > thr_far)
    if far.size:
        a, b = min(a, int(far[0])), max(b, int(far[-1]))
    return a, b


def _tails(h: np.ndarray, sigma: float, thr: float) -> tuple[int, int]:
    """The bins a refined bound spans: from the first to the last bin whose noisy count clears what
    pure noise reaches in ``thr`` (a family-wise rate) of histograms, so a tail of empty bins is cut
    even when their noise sums past a noise std (it did: a running sum of noise is a random walk, and
    pollution's TEMP, -18..42, came back spanning 1.6e3..2.7e6 at epsilon 3); a dip inside the range
    never cuts off the mass beyond it. Post-processing of the noisy counts only."""
    t = max(sigma * float(ndtri(1.0 - thr / max(len(h), 1))), MIN_MASS)
    keep = np.flatnonzero(h > t)
    if keep.size == 0:
        j = int(np.argmax(h))
        return j, j
    return int(keep[0]), int(keep[-1])


def refine_edges(lo: float, hi: float, n_bins: int) -> np.ndarray:
    """Bins between noisy bounds: log-spaced when the range is one-signed and spans a decade or more
    (heavy-tailed positives), linear otherwise. A function of the noisy bounds only."""
    if lo > 0 and hi / lo >= 10:
        e = np.geomspace(lo, hi, n_bins + 1)
    elif hi < 0 and lo / hi >= 10:
        e = -np.geomspace(-lo, -hi, n_bins + 1)
    else:
        e = np.linspace(lo, hi, n_bins + 1)
    e[0], e[-1] = lo, hi
    return e


def numeric_histogram(acc: StatsAccountant, x: np.ndarray, units: np.ndarray, n_units: int,
                      domain: str = "log") -> dict[str, Any]:
    """``QUERIES_NUMERIC`` queries on one numeric column (NaN = missing): noisy bounds, whether
    values are missing, and the last stage's bin edges and noisy counts inside the bounds."""
    x = np.asarray(x, dtype=np.float64)
    units = np.asarray(units)
    miss = np.isnan(x)
    # few units for the noise (public: N and sigma): wider coarse bins, so the mode clears the noise
    e0 = coarse_edges(domain, 1 if n_units >= 40 * acc.sigma else COARSE_DECADES)
    b0 = np.where(miss, len(e0) - 1, _bin_of(np.nan_to_num(x), e0))  # the last index is "missing"
    h0 = noisy_histogram(acc, b0, units, len(e0))
    thr0 = acc.bin_threshold(len(e0))
    has_missing = bool(h0[-1] > thr0)
    i, j = _extent(h0[:-1], acc.sigma, thr0, NEAR_COARSE, gap=True)
    lo, hi = float(e0[i]), float(e0[j + 1])
    xv, uv = x[~miss], units[~miss]
    edges, h = e0, h0[:-1]
    for stage in range(QUERIES_NUMERIC - 1):
        nb = acc.fine_bins(n_units)
        edges = refine_edges(lo, hi, nb)
        h = noisy_histogram(acc, _bin_of(np.clip(xv, lo, hi), edges), uv, nb)
        i, j = _tails(h, acc.sigma, FINE_FALSE_BINS)
        lo, hi = float(edges[i]), float(edges[j + 1])
        if stage == QUERIES_NUMERIC - 2:
            edges, h = edges[i: j + 2], h[i: j + 1]
    # "signal": the coarse mode clears what pure noise reaches in 5% of histograms: the bounds are
    # not placed by noise alone
    # bins inside the range but under a noise std count as empty: their positive noise would otherwise
    # spread the knots' probability over ranges no unit holds
    counts = np.where(h > EMPTY_BELOW * acc.sigma, h, 0.0)
    counts = counts if counts.sum() > 0 else np.maximum(h, 0.0)
    return {"lo": lo, "hi": hi, "has_missing": has_missing, "edges": edges, "counts": counts,
            "signal": bool(np.max(h0[:-1]) > acc.sigma * float(ndtri(1.0 - 0.05 / len(e0))))}


def cdf_quantiles(edges: np.ndarray, counts: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Quantiles of the piecewise-uniform density ``counts`` over ``edges`` (monotone in probs)."""
    c = np.maximum(np.asarray(counts, dtype=np.float64), 0.0)
    tot = c.sum()
    c = c + (1e-9 * tot if tot > 0 else 1.0) / max(len(c), 1)  # strictly increasing CDF
    cdf = np.r_[0.0, np.cumsum(c)]
    cdf /= cdf[-1]
    q = np.interp(probs, cdf, edges)
    q[0], q[-1] = edges[0], edges[-1]
    return np.maximum.accumulate(q)


# ------------------------------------------------------------------------------------------------
# levels (categories, the phase): thresholded counts over an unknown domain
# ------------------------------------------------------------------------------------------------
def level_threshold(sigma: float, delta_q: float, max_levels: int = MAX_LEVELS_PER_UNIT) -> float:
    """Smallest tau with max_{1<=d<=C} d * Q((tau - 1/sqrt(d)) / sigma) <= delta_q (module docstring)."""
    d = np.arange(1, max_levels + 1, dtype=np.float64)

    def worst(tau: float) -> float:
        return float(np.max(d * ndtr(-(tau - 1.0 / np.sqrt(d)) / sigma)))

    lo, hi = 0.0, 1.0 + sigma * 50.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if worst(mid) > delta_q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-9 * max(1.0, hi):
            break
    return hi


def thresholded_levels(acc: StatsAccountant, values: np.ndarray, units: np.ndarray) -> dict[Any, float]:
    """One thresholded query: {level: noisy count} for the levels whose noisy count clears the
    threshold. Each unit contributes 1/sqrt(d) to each of its d <= ``MAX_LEVELS_PER_UNIT`` distinct
    levels (its most frequent ones). ``values`` may hold None (missing) as a level of its own."""
    acc.made_thresholded += 1
    vals_o = np.asarray(values, dtype=object).copy()
    vals_o[pd.isna(vals_o)] = _NA
    pairs = pd.DataFrame({"u": np.asarray(units), "v": vals_o})
    if len(pairs):
        pc = pairs.groupby(["u", "v"], sort=False, dropna=False).size().reset_index(name="n")
        pc = pc.sort_values(["u", "n"], ascending=[True, False], kind="stable")
        pc = pc[pc.groupby("u", sort=False).cumcount() < MAX_LEVELS_PER_UNIT]
        d = pc.groupby("u", sort=False)["v"].transform("size").to_numpy(dtype=np.float64)
        pc = pc.assign(w=1.0 / np.sqrt(d))
        counts = pc.groupby("v", sort=False)["w"].sum()
        keys, vals = list(counts.index), counts.to_numpy()
    else:
        keys, vals = [], np.zeros(0)
    noisy = acc.gaussian(vals)
    tau = level_threshold(acc.sigma, acc.delta_q)
    return {(None if k is _NA else k): float(n) for k, n in zip(keys, noisy, strict=True) if n > tau}


class _NAType:
    def __repr__(self) -> str:  # pragma: no cover
        return "<NA>"


_NA = _NAType()
