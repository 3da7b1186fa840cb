"""``EvaluationResult``: what one audit found (gate, fidelity metrics, privacy numbers, sizes,
timings), with its ``metrics.json`` / ``gate.json`` content. Built by ``sharded.merge_audit``, rendered
by ``report.py``, written by ``outputs.py``; ``synth_pipeline.evaluation`` re-exports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synth_pipeline.evaluation.fidelity import MetricResult
from synth_pipeline.evaluation.gate import GateConfig, GateResult


@dataclass
class EvaluationResult:
    gate: GateResult
    metrics: dict[str, MetricResult]
    privacy: dict[str, Any]
    sizes: dict[str, dict[str, int]]
    balance: dict[str, Any]
    representation: dict[str, Any]
    timings: dict[str, float]
    dataset: str
    schema_fingerprint: str
    seed: int
    gate_config: GateConfig
    paths: dict[str, Path] = field(default_factory=dict)
    # the model's differential-privacy guarantee (dp.py; None: trained without model.privacy)
    guarantee: dict[str, Any] | None = None
    # in-memory aggregates inputs for the report (never serialized): encoded sets and DCR distances
    artifacts: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return self.gate.passed

    def metrics_dict(self) -> dict[str, Any]:
        return _jsonable({
            "dataset": self.dataset,
            "schema_fingerprint": self.schema_fingerprint,
            "seed": self.seed,
            "passed": self.gate.passed,
            "sizes": self.sizes,
            "balance": self.balance,
            "representation": self.representation,
            "fidelity": {k: m.to_dict() for k, m in self.metrics.items()},
            "privacy": self.privacy,
            "differential_privacy": self.guarantee,
            "timings_s": self.timings,
            "gate_config": self.gate_config.to_dict(),
        })

    def gate_dict(self) -> dict[str, Any]:
        return _jsonable({"dataset": self.dataset, "schema_fingerprint": self.schema_fingerprint, **self.gate.to_dict()})

    def values(self) -> dict[str, float | None]:
        """name -> value of every gate check (handy in tests and logs)."""
        return {c.name: c.value for c in self.gate.checks}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj
