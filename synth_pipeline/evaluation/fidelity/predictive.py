"""Predictive score (train on synthetic, test on real): one-step-ahead MAE.

A GRU is trained on synthetic sequences to predict every numeric column at step t+1 from all
features up to t, then its mean absolute error (quantile-normal units, observed targets only) is
measured on real train sequences. The same model trained on an equal number of holdout sequences
(real data the generator never saw) gives the baseline; ``details.ratio = MAE / baseline`` is what
the gate checks (1 = synthetic data is as useful for forecasting as real data).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from synth_pipeline.evaluation.fidelity._gru import TrainSettings, regression_mae
from synth_pipeline.evaluation.fidelity.base import MetricContext, MetricResult, sample_index, sequence_inputs
from synth_pipeline.evaluation.representation import EncodedSet

_BASELINE_CACHE: OrderedDict[str, float] = OrderedDict()  # holdout-trained baselines, reused across candidates


def _digest(*arrays: np.ndarray, extra: str = "") -> str:
    h = hashlib.blake2b(extra.encode(), digest_size=16)
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


class PredictiveScore:
    name = "predictive"
    goal = "lower"
    range = (0.0, float("inf"))
    description = "one-step-ahead MAE of a GRU trained on synthetic and tested on real sequences"

    def compute(self, real: EncodedSet, synthetic: EncodedSet, ctx: MetricContext) -> MetricResult:
        n_num = len(ctx.rep.numeric_columns)
        if n_num == 0 or real.present.shape[1] < 2:
            return MetricResult(self.name, None, self.goal, self.range, note="not applicable: no numeric column to forecast")
        rng = np.random.default_rng([ctx.seed, 29])
        sources = [("synthetic", synthetic)] + ([("holdout", ctx.holdout)] if ctx.holdout is not None else [])
        n_fit = int(min([len(s) for _, s in sources] + [ctx.max_sequences]))
        if n_fit < 2 or len(real) < 1:
            return MetricResult(self.name, None, self.goal, self.range, note="not applicable: too few sequences")
        test = real.subset(sample_index(len(real), ctx.max_sequences, rng))

        def arrays(es: EncodedSet):
            x = sequence_inputs(es)[:, :-1]
            y = es.dyn[:, 1:, :n_num]
            m = es.num_observed[:, 1:].astype(np.float32)
            return np.ascontiguousarray(x), np.ascontiguousarray(y), m

        xt, yt, mt = arrays(test)
        settings = TrainSettings(**{**ctx.train.__dict__, "layers": 1})
        mae = {}
        for label, es in sources:
            xs, ys, ms = arrays(es.subset(sample_index(len(es), n_fit, rng)))
            key = _digest(xs, ys, ms, xt, yt, mt, extra=f"{settings}{ctx.seeds}") if label == "holdout" else None
            if key is not None and key in _BASELINE_CACHE:
                mae[label] = _BASELINE_CACHE[key]  # same holdout, test set and settings: same number
                continue
            ctx.say(f"{self.name}: training GRU forecasters on {n_fit} {label} sequences")
            mae[label] = float(np.mean(regression_mae(xs, ys, ms, xt, yt, mt, ctx.seeds, settings)))
            if key is not None:
                _BASELINE_CACHE[key] = mae[label]
                while len(_BASELINE_CACHE) > 8:
                    _BASELINE_CACHE.popitem(last=False)
        details = {"mae_synthetic": mae["synthetic"], "n_train": n_fit, "n_test": len(test)}
        if "holdout" in mae:
            details["mae_holdout_baseline"] = mae["holdout"]
            details["ratio"] = mae["synthetic"] / mae["holdout"] if mae["holdout"] > 0 else None
        return MetricResult(self.name, mae["synthetic"], self.goal, self.range, details)


metric = PredictiveScore()
