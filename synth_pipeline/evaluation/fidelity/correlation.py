"""Feature-correlation difference: mean |corr_real - corr_synthetic| over pairs of step features.

Pearson correlations between the per-step features (numerics, missing flags, one-hot categories)
pooled over all present steps of all sequences. Pairs of features of the same column (one-hots of
one categorical, a numeric and its own missing flag) are left out: their correlation is fixed by
construction. A feature constant in a set has correlation 0 with everything in that set.
``details.holdout_baseline`` is the same difference between holdout and train sample.
"""

from __future__ import annotations

import numpy as np

from synth_pipeline.evaluation.fidelity.base import MetricContext, MetricResult, sample_index
from synth_pipeline.evaluation.representation import EncodedSet

MAX_ROWS = 500_000


def correlation_matrix(es: EncodedSet, rng: np.random.Generator) -> np.ndarray:
    rows = es.dyn[es.present].astype(np.float64)
    rows = rows[sample_index(len(rows), MAX_ROWS, rng)]
    if len(rows) < 2:
        return np.zeros((rows.shape[1], rows.shape[1]))
    c = rows - rows.mean(0)
    sd = np.sqrt((c * c).mean(0))
    ok = sd > 1e-9
    c[:, ok] /= sd[ok]
    c[:, ~ok] = 0.0
    return (c.T @ c) / len(c)


class CorrelationDifference:
    name = "correlation"
    goal = "lower"
    range = (0.0, 2.0)
    description = "mean absolute difference of feature correlation matrices (pairs of different columns)"

    def compute(self, real: EncodedSet, synthetic: EncodedSet, ctx: MetricContext) -> MetricResult:
        feats = ctx.rep.features
        cols = np.array([f.column for f in feats])
        pairs = np.triu(cols[:, None] != cols[None, :], 1)
        if not pairs.any():
            return MetricResult(self.name, None, self.goal, self.range, note="not applicable: fewer than two step columns")
        rng = np.random.default_rng([ctx.seed, 31])
        cr, cs = correlation_matrix(real, rng), correlation_matrix(synthetic, rng)
        diff = np.abs(cr - cs)[pairs]
        num = ctx.rep.feature_index("num")
        baseline = None
        if ctx.holdout is not None:
            baseline = float(np.abs(cr - correlation_matrix(ctx.holdout, rng))[pairs].mean())
        details = {
            "pairs": int(pairs.sum()),
            "holdout_baseline": baseline,
            "max_abs_difference": float(diff.max()),
            "numeric_columns": [feats[i].name for i in num],
            "real_numeric": np.round(cr[np.ix_(num, num)], 4).tolist(),
            "synthetic_numeric": np.round(cs[np.ix_(num, num)], 4).tolist(),
        }
        return MetricResult(self.name, float(diff.mean()), self.goal, self.range, details)


metric = CorrelationDifference()
