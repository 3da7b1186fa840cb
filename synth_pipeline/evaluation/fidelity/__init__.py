"""Fidelity metrics, one per module; each has ``name``, ``goal``, ``range`` and ``compute(real, synthetic, ctx)``."""

from synth_pipeline.evaluation.fidelity.autocorrelation import AutocorrelationDifference
from synth_pipeline.evaluation.fidelity.base import Metric, MetricContext, MetricResult
from synth_pipeline.evaluation.fidelity.correlation import CorrelationDifference
from synth_pipeline.evaluation.fidelity.discriminative import DiscriminativeScore
from synth_pipeline.evaluation.fidelity.marginals import MarginalDistance
from synth_pipeline.evaluation.fidelity.predictive import PredictiveScore
from synth_pipeline.evaluation.fidelity.static_consistency import StaticConsistency
from synth_pipeline.evaluation.fidelity.temporal import TemporalDiscriminativeScore


def default_metrics() -> list[Metric]:
    return [
        DiscriminativeScore(), TemporalDiscriminativeScore(), PredictiveScore(), CorrelationDifference(),
        MarginalDistance(), AutocorrelationDifference(), StaticConsistency(),
    ]


__all__ = [
    "AutocorrelationDifference", "CorrelationDifference", "DiscriminativeScore", "MarginalDistance", "Metric",
    "MetricContext", "MetricResult", "PredictiveScore", "StaticConsistency", "TemporalDiscriminativeScore",
    "default_metrics",
]
