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

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from synth_pipeline.evaluation.fidelity.base import Metric
from synth_pipeline.evaluation.gate import GateConfig, GateResult
from synth_pipeline.evaluation.inputs import EvaluationInputError, LeakageError, read_table
from synth_pipeline.evaluation.outputs import GATE_FILE, METRICS_FILE, REPORT_FILE, write_outputs  # noqa: F401 - re-exported
from synth_pipeline.evaluation.representation import protected_ranges  # noqa: F401 - re-exported
from synth_pipeline.evaluation.result import EvaluationResult, _jsonable  # noqa: F401 - re-exported
from synth_pipeline.schema import DatasetSchema
from synth_pipeline.transformers.protection import RARE_TOKEN, Protection

__all__ = [
    "EvaluationInputError", "EvaluationResult", "GateConfig", "GateResult", "LeakageError", "evaluate",
    "read_table", "write_outputs",
]

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
