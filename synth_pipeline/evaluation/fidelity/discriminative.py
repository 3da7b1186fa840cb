"""Discriminative score: can a post-hoc classifier tell real sequences from synthetic ones?

A 2-layer GRU reads each whole sequence (all features of the shared representation plus the
presence channel) and predicts real vs synthetic. Trained on 80 % of a balanced sample, scored on
the other 20 %: ``|accuracy - 0.5|``, averaged over seeds. 0 = indistinguishable, 0.5 = trivially
separable.
"""

from __future__ import annotations

from synth_pipeline.evaluation.fidelity.base import (
    MetricContext,
    MetricResult,
    discriminator_score,
    sequence_inputs,
)
from synth_pipeline.evaluation.representation import EncodedSet


class DiscriminativeScore:
    name = "discriminative"
    goal = "lower"
    range = (0.0, 0.5)
    description = "|accuracy - 0.5| of a post-hoc 2-layer GRU classifier, real vs synthetic sequences"

    def compute(self, real: EncodedSet, synthetic: EncodedSet, ctx: MetricContext) -> MetricResult:
        value, details = discriminator_score(
            sequence_inputs(real), real.lengths, sequence_inputs(synthetic), synthetic.lengths, ctx, self.name
        )
        note = "" if value is not None else f"not applicable: {details['note']}"
        return MetricResult(self.name, value, self.goal, self.range, details, note)


metric = DiscriminativeScore()
