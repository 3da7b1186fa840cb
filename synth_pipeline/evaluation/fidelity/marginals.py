"""Per-column marginal distance: Kolmogorov-Smirnov for numerics, total variation for categories.

Numerics: the two empirical CDFs are compared on the train-fitted quantile grid, i.e. at the
midpoints between consecutive knots of the column's encoder (up to 256), plus a point mass for
missing values below every value, so a wrong missing rate counts too. Comparing at midpoints makes
the distance blind to jitter finer than the grid: integers and integers + 1 % noise have the same
binned distribution, whereas a plain KS statistic would put 0.5 between them at every atom. Categoricals: total variation distance between level frequencies (missing and
never-seen values are levels of their own). Dynamic columns are compared over all present steps,
static columns once per sequence. The value is the worst column; every column is in ``details``,
and so is the same distance between the holdout and the train sample (``holdout_baseline``): how
far two real samples of these sizes already are, which the gate allows for.
"""

from __future__ import annotations

import numpy as np

from synth_pipeline.evaluation.fidelity.base import MetricContext, MetricResult, sample_index
from synth_pipeline.evaluation.representation import EncodedSet, continuous_forward

MAX_VALUES = 1_000_000
_MISSING = -1e9


def ks_distance(a: np.ndarray, b: np.ndarray, grid: np.ndarray | None = None) -> float:
    """max |F_a - F_b| over ``grid`` (default: every observed value, i.e. the plain KS statistic)."""
    if a.size == 0 or b.size == 0:
        return 1.0 if a.size != b.size else 0.0
    a, b = np.sort(a), np.sort(b)
    if grid is None:
        grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / a.size
    fb = np.searchsorted(b, grid, side="right") / b.size
    return float(np.abs(fa - fb).max())


def quantile_grid(codec) -> np.ndarray:
    """Encoded midpoints between the codec's unique knots, plus the missing-value point."""
    uk = np.unique(np.asarray(codec.qmap.knots, dtype=float))
    mids = continuous_forward(codec.qmap, 0.5 * (uk[:-1] + uk[1:])) if len(uk) > 1 else np.zeros(0)
    return np.r_[_MISSING, mids]


def tv_distance(a: np.ndarray, b: np.ndarray, n_levels: int) -> float:
    """Codes in [-1, n_levels): -1 is 'never seen in train'."""
    if a.size == 0 or b.size == 0:
        return 1.0 if a.size != b.size else 0.0
    pa = np.bincount(a + 1, minlength=n_levels + 1) / a.size
    pb = np.bincount(b + 1, minlength=n_levels + 1) / b.size
    return float(0.5 * np.abs(pa - pb).sum())


def column_values(es: EncodedSet, rep, column: str, rng: np.random.Generator) -> tuple[str, np.ndarray, int]:
    """('num', values, 0) or ('cat', codes, n_levels) for one column of a set."""
    feats, sfeats = rep.features, rep.static_features
    num = [i for i, f in enumerate(feats) if f.column == column and f.group == "num"]
    if num:
        j = num[0]
        v = np.where(es.num_observed[..., j], es.dyn[..., j], _MISSING)[es.present]
        return "num", v[sample_index(v.size, MAX_VALUES, rng)], 0
    cat = [i for i, f in enumerate(feats) if f.column == column and f.group == "cat"]
    if cat:
        oh = es.dyn[..., cat][es.present]
        codes = np.where(oh.any(1), oh.argmax(1), -1)
        return "cat", codes[sample_index(codes.size, MAX_VALUES, rng)], len(cat)
    snum = [i for i, f in enumerate(sfeats) if f.column == column and f.group == "static_num"]
    if snum:
        v = es.static[:, snum[0]].astype(np.float64)
        miss = [i for i, f in enumerate(sfeats) if f.column == column and f.group == "static_miss"]
        if miss:
            v = np.where(es.static[:, miss[0]] > 0.5, _MISSING, v)
        return "num", v, 0
    scat = [i for i, f in enumerate(sfeats) if f.column == column and f.group == "static_cat"]
    oh = es.static[:, scat]
    return "cat", np.where(oh.any(1), oh.argmax(1), -1), len(scat)


class MarginalDistance:
    name = "marginals"
    goal = "lower"
    range = (0.0, 1.0)
    description = "worst per-column marginal distance (KS for numerics, total variation for categories)"

    def per_column(self, real: EncodedSet, other: EncodedSet, ctx: MetricContext) -> tuple[dict, dict]:
        rng = np.random.default_rng([ctx.seed, 37])
        rep = ctx.rep
        per: dict[str, float] = {}
        kinds: dict[str, str] = {}
        for col in rep.numeric_columns + rep.categorical_columns + rep.static_columns:
            kind, a, n_lv = column_values(real, rep, col, rng)
            _, b, _ = column_values(other, rep, col, rng)
            if kind == "num":
                per[col] = ks_distance(a, b, quantile_grid(rep.codec(col)))
            else:
                per[col] = tv_distance(a, b, n_lv)
            kinds[col] = "ks_on_quantile_grid" if kind == "num" else "total_variation"
        return per, kinds

    def compute(self, real: EncodedSet, synthetic: EncodedSet, ctx: MetricContext) -> MetricResult:
        per, kinds = self.per_column(real, synthetic, ctx)
        if not per:
            return MetricResult(self.name, None, self.goal, self.range, note="not applicable: no modelled column")
        worst = max(per, key=per.get)
        details = {"per_column": per, "distance": kinds, "mean": float(np.mean(list(per.values()))), "worst_column": worst}
        if ctx.holdout is not None:
            base, _ = self.per_column(real, ctx.holdout, ctx)
            details["holdout_per_column"] = base
            details["holdout_baseline"] = float(max(base.values()))
        return MetricResult(self.name, float(per[worst]), self.goal, self.range, details)


metric = MarginalDistance()
