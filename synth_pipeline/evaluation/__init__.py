"""Evaluation: fidelity metrics + memorization audit + release gate + HTML audit report.

``evaluate(train, holdout, synthetic, schema)`` is the one entry point (the CLI's ``evaluate`` and
the pipeline call it). All metrics use one representation fitted on train only
(``representation.py``) and work on whole sequences, not rows.

Balancing: the audit compares every synthetic sequence with the holdout and with a random sample of
train *of the holdout's size* (the DCR share is only centred on 0.5 when both reference sets are
equally large). When train is the smaller set, the holdout is subsampled to train's size instead.
The fidelity metrics compare synthetic sequences with that same train sample. Sizes further apart
than ``GateConfig.max_size_ratio`` are refused as bad input.

Sharding (``sharded.py``): ``evaluate`` is ``prepare_audit`` + one ``audit_shard`` over the whole
synthetic table + ``merge_audit``; a release audits each generated part as its own shard (an Airflow
mapped task each) and merges them, with the same privacy numbers. The fidelity metrics see a seeded
sample of at most ``GateConfig.max_sequences`` synthetic sequences (all of them, in order, below that).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synth_pipeline.evaluation.fidelity import MetricResult
from synth_pipeline.evaluation.fidelity.base import Metric
from synth_pipeline.evaluation.gate import GateConfig, GateResult
from synth_pipeline.evaluation.inputs import EvaluationInputError, LeakageError, read_table
from synth_pipeline.schema import DatasetSchema
from synth_pipeline.transformers.protection import RARE_TOKEN, Protection

__all__ = [
    "EvaluationInputError", "EvaluationResult", "GateConfig", "GateResult", "LeakageError", "evaluate",
    "read_table", "write_outputs",
]

METRICS_FILE, GATE_FILE, REPORT_FILE = "metrics.json", "gate.json", "report.html"


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


def _progress_fn(progress: bool | Callable[[str], None]) -> Callable[[str], None] | None:
    if callable(progress):
        return progress
    if not progress:
        return None
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[evaluate {time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    return say


def evaluate(
    train_df: pd.DataFrame,
    holdout_df: pd.DataFrame,
    synthetic_df: pd.DataFrame,
    schema: DatasetSchema | str | Path,
    gate_config: GateConfig | dict | str | Path | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    *,
    progress: bool | Callable[[str], None] = False,
    metrics: list[Metric] | None = None,
    rare_tokens: tuple[str, ...] = (RARE_TOKEN,),
    protection: Protection | None = None,
) -> EvaluationResult:
    """Audit ``synthetic_df`` against the real ``train_df`` it was trained on and the entity
    ``holdout_df`` it never saw; apply the gate; write ``metrics.json``, ``gate.json`` and
    ``report.html`` into ``out_dir`` (atomically, and only when everything succeeded).

    Raises ``EvaluationInputError`` (or ``LeakageError``) for tables that cannot be audited;
    nothing is written then. The gate failing is not an exception: see ``result.passed``.
    ``protection``: the model's privacy protection (default ``Protection()``); the report draws
    numeric marginals in data units only inside the range it protects (the model's own range when
    the model was fitted on the same train table with these settings).
    """
    from synth_pipeline.evaluation.sharded import audit_shard, merge_audit, prepare_audit

    say = _progress_fn(progress)
    t_all = time.perf_counter()
    prep = prepare_audit(train_df, holdout_df, schema, gate_config, seed, rare_tokens=rare_tokens,
                         protection=protection, progress=say, synthetic_df=synthetic_df)
    shard = audit_shard(prep, synthetic_df, progress=say)
    result = merge_audit(prep, [shard], metrics=metrics, progress=say)
    result.timings["total"] = time.perf_counter() - t_all
    if out_dir is not None:
        write_outputs(result, out_dir, progress=say)
    return result


def protected_ranges(train: pd.DataFrame, schema: DatasetSchema, protection: Protection) -> dict[str, tuple[float, float]]:
    """Column -> [lo, hi] of every modelled numeric column: the range the synthesizer's encoder
    keeps with ``protection`` (``transformers/numeric.py``: tails cut at a random 5th-7th extreme
    privacy unit, interpolated, never a real extreme). The report bins data-unit marginals inside it."""
    from synth_pipeline.encoding import privacy_units
    from synth_pipeline.transformers import transformer_for

    units = privacy_units(train, schema)
    out: dict[str, tuple[float, float]] = {}
    for spec in schema.modelled:
        col = train[spec.name]
        t = transformer_for(spec.name, spec.kind, str(col.dtype), spec.static)
        if not t.is_numeric or col.isna().all():
            continue
        t.fit(col, units, protection)
        out[spec.name] = tuple(float(v) for v in t.qmap.bounds)
    return out


def write_outputs(result: EvaluationResult, out_dir: str | Path, progress: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Render everything in memory first, then write the three files atomically."""
    import json
    import os

    from synth_pipeline.evaluation.report import render_report
    from synth_pipeline.io_utils import atomic_write

    def atomic_write_text(path: Path, text: str) -> Path:
        def writer(tmp: Path) -> None:
            tmp.write_text(text, encoding="utf-8")
            os.chmod(tmp, 0o644)  # a report is meant to be read (MLflow artifact, reviewers), not 0600

        return atomic_write(path, writer)

    if progress:
        progress("rendering report.html")
    t = time.perf_counter()
    html = render_report(result)
    result.timings["report"] = time.perf_counter() - t
    metrics_text = json.dumps(result.metrics_dict(), indent=2, sort_keys=True, allow_nan=False)
    gate_text = json.dumps(result.gate_dict(), indent=2, sort_keys=False, allow_nan=False)
    out = Path(out_dir)
    paths = {
        "metrics": atomic_write_text(out / METRICS_FILE, metrics_text),
        "gate": atomic_write_text(out / GATE_FILE, gate_text),
        "report": atomic_write_text(out / REPORT_FILE, html),
    }
    result.paths = paths
    if progress:
        progress(f"wrote {', '.join(str(p) for p in paths.values())}")
    return paths
