"""Static-attribute consistency: the share of synthetic entities whose static columns are constant.

Entity attributes (``static: true`` in the schema, e.g. a stock's sector) must not change within
one synthetic entity. Checked on the typed values, per sequence. 1 = every entity consistent.
The static columns' distributions are covered by the marginal metric.
"""

from __future__ import annotations

from synth_pipeline.evaluation.fidelity.base import MetricContext, MetricResult
from synth_pipeline.evaluation.representation import EncodedSet


class StaticConsistency:
    name = "static_consistency"
    goal = "higher"
    range = (0.0, 1.0)
    description = "share of synthetic entities whose static attributes are constant"

    def compute(self, real: EncodedSet, synthetic: EncodedSet, ctx: MetricContext) -> MetricResult:
        if not ctx.rep.static_columns:
            return MetricResult(self.name, None, self.goal, self.range, note="not applicable: no static columns")
        n = len(synthetic)
        bad = int(synthetic.static_varies.sum())
        value = 1.0 - bad / n if n else 0.0
        return MetricResult(self.name, value, self.goal, self.range, {"inconsistent_entities": bad, "n_synthetic": n})


metric = StaticConsistency()
