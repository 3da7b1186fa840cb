"""Temporal discriminative score: the discriminative score on first differences.

The classifier sees ``x[t+1] - x[t]`` instead of ``x[t]``, so levels and marginals are hidden and
only the step-to-step dynamics are left to tell real from synthetic: sequences with the right
values in the wrong order (shuffled time, no persistence) fail here.
"""

from __future__ import annotations

import numpy as np

from synth_pipeline.evaluation.fidelity.base import (
    MetricContext,
    MetricResult,
    discriminator_score,
    first_differences,
    sequence_inputs,
)
from synth_pipeline.evaluation.representation import EncodedSet


class TemporalDiscriminativeScore:
    name = "temporal_discriminative"
    goal = "lower"
    range = (0.0, 0.5)
    description = "discriminative score on first differences of each sequence"

    def compute(self, real: EncodedSet, synthetic: EncodedSet, ctx: MetricContext) -> MetricResult:
        if real.present.shape[1] < 3:
            return MetricResult(self.name, None, self.goal, self.range, note="not applicable: sequences shorter than 3 steps")

        def diffs(es: EncodedSet):
            x = sequence_inputs(es)
            d = first_differences(x[..., :-1], es.present)
            both = (es.present[:, 1:] & es.present[:, :-1]).astype(d.dtype)
            return np.concatenate([d, both[..., None]], 2), np.maximum(es.lengths - 1, 1)

        xr, lr = diffs(real)
        xs, ls = diffs(synthetic)
        value, details = discriminator_score(xr, lr, xs, ls, ctx, self.name)
        note = "" if value is not None else f"not applicable: {details['note']}"
        return MetricResult(self.name, value, self.goal, self.range, details, note)


metric = TemporalDiscriminativeScore()
