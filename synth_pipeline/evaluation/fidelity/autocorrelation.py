"""Autocorrelation difference: mean |ACF_real(lag) - ACF_synthetic(lag)| over features and lags.

Within-sequence autocorrelation of every step feature that varies within real sequences: each
sequence's own mean is removed first (so differences in level between entities, e.g. a 40-dollar
and a 1000-dollar stock, are not mistaken for persistence), then products at each lag are pooled
over all sequences (observed, present steps only). Lags 1..min(max_lag, T - 2).
``details.holdout_baseline`` is the same difference between holdout and train sample.
"""

from __future__ import annotations

import numpy as np

from synth_pipeline.evaluation.fidelity.base import MetricContext, MetricResult
from synth_pipeline.evaluation.representation import EncodedSet

MIN_WITHIN_VARIANCE = 1e-3


def _masks(es: EncodedSet, n_num: int) -> np.ndarray:
    m = np.repeat(es.present[..., None], es.dyn.shape[2], axis=2)
    m[..., :n_num] &= es.num_observed
    return m


def acf(es: EncodedSet, n_num: int, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """([lags, F] autocorrelations, [F] within-sequence variance)."""
    m = _masks(es, n_num).astype(np.float64)
    x = es.dyn.astype(np.float64) * m
    cnt = m.sum(1, keepdims=True)
    xc = (x - x.sum(1, keepdims=True) / np.maximum(cnt, 1)) * m
    den = (xc * xc).sum((0, 1))
    var = den / np.maximum(m.sum((0, 1)), 1)
    out = np.zeros((max_lag, x.shape[2]))
    for lag in range(1, max_lag + 1):
        num = (xc[:, lag:] * xc[:, :-lag]).sum((0, 1))
        out[lag - 1] = np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)
    return out, var


class AutocorrelationDifference:
    name = "autocorrelation"
    goal = "lower"
    range = (0.0, 2.0)
    description = "mean absolute difference of within-sequence autocorrelations (features x lags)"

    def __init__(self, max_lag: int = 12):
        self.max_lag = max_lag

    def compute(self, real: EncodedSet, synthetic: EncodedSet, ctx: MetricContext) -> MetricResult:
        T = real.present.shape[1]
        max_lag = min(self.max_lag, T - 2)
        if max_lag < 1 or real.dyn.shape[2] == 0:
            return MetricResult(self.name, None, self.goal, self.range, note="not applicable: sequences too short")
        n_num = len(ctx.rep.numeric_columns)
        ar, var = acf(real, n_num, max_lag)
        asyn, _ = acf(synthetic, n_num, max_lag)
        use = var > MIN_WITHIN_VARIANCE
        if not use.any():
            return MetricResult(self.name, None, self.goal, self.range, note="not applicable: nothing varies within sequences")
        diff = np.abs(ar - asyn)[:, use]
        baseline = None
        if ctx.holdout is not None:
            baseline = float(np.abs(ar - acf(ctx.holdout, n_num, max_lag)[0])[:, use].mean())
        feats = ctx.rep.features
        num = [i for i in range(n_num) if use[i]]
        details = {
            "lags": max_lag,
            "features_used": int(use.sum()),
            "holdout_baseline": baseline,
            "per_column": {feats[i].name: float(np.abs(ar[:, i] - asyn[:, i]).mean()) for i in num},
            "real_numeric": {feats[i].name: np.round(ar[:, i], 4).tolist() for i in num},
            "synthetic_numeric": {feats[i].name: np.round(asyn[:, i], 4).tolist() for i in num},
        }
        return MetricResult(self.name, float(diff.mean()), self.goal, self.range, details)


metric = AutocorrelationDifference()
