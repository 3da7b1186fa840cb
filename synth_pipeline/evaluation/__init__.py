"""Evaluation: fidelity metrics + memorization audit + release gate + HTML audit report.

``evaluate(train, holdout, synthetic, schema)`` is the one entry point (the CLI's ``evaluate`` and
the pipeline call it). All metrics use one representation fitted on train only
(``representation.py``) and work on whole sequences, not rows.

Balancing: the audit compares every synthetic sequence with the holdout and with a random sample of
train *of the holdout's size* (the DCR share is only centred on 0.5 when both reference sets are
equally large). When train is the smaller set, the holdout is subsampled to train's size instead.
The fidelity metrics compare synthetic sequences with that same train sample. Sizes further apart
than ``GateConfig.max_size_ratio`` are refused as bad input.
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

from synth_pipeline.evaluation.fidelity import MetricContext, MetricResult, default_metrics
from synth_pipeline.evaluation.fidelity._gru import TrainSettings
from synth_pipeline.evaluation.fidelity.base import Metric, sample_index
from synth_pipeline.evaluation.gate import GateConfig, GateResult, decide
from synth_pipeline.evaluation.inputs import (
    EvaluationInputError,
    LeakageError,
    describe_inputs,
    prepare_inputs,
    read_table,
)
from synth_pipeline.evaluation.privacy import DCRResult, dcr_audit, exact_copies, row_matches
from synth_pipeline.evaluation.privacy.membership import distance_attack
from synth_pipeline.evaluation.privacy.parts import dcr_by_parts
from synth_pipeline.evaluation.representation import EncodedSet, Representation
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
    say = _progress_fn(progress)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    if not isinstance(schema, DatasetSchema):
        schema = DatasetSchema.from_yaml(schema)
    if gate_config is None:
        cfg = GateConfig()
    elif isinstance(gate_config, GateConfig):
        cfg = gate_config
    elif isinstance(gate_config, dict):
        cfg = GateConfig.from_dict(gate_config)
    else:
        cfg = GateConfig.from_yaml(gate_config)

    t = time.perf_counter()
    prepared = prepare_inputs(train_df, holdout_df, synthetic_df, schema, cfg.max_size_ratio, rare_tokens)
    rep = Representation(schema).fit(prepared.frames["train"], prepared.layouts["train"])
    sets: dict[str, EncodedSet] = {
        role: rep.transform(prepared.frames[role], role, prepared.layouts[role]) for role in prepared.frames
    }
    timings["encode"] = time.perf_counter() - t
    train, holdout, syn = sets["train"], sets["holdout"], sets["synthetic"]
    if say:
        say(f"encoded {len(train)} train, {len(holdout)} holdout, {len(syn)} synthetic sequences "
            f"({rep.T} steps, {train.dyn.shape[2]} step + {train.static.shape[1]} static features)")

    rng = np.random.default_rng([seed, 3])
    n_ref = min(len(train), len(holdout))
    train_ref = train.subset(sample_index(len(train), n_ref, rng), "train sample")
    holdout_ref = holdout.subset(sample_index(len(holdout), n_ref, rng), "holdout")
    balance = {
        "reference_size": n_ref,
        "train_subsampled": len(train) > n_ref,
        "holdout_subsampled": len(holdout) > n_ref,
        "rule": "DCR and fidelity use a random train sample of the holdout's size (or the holdout subsampled "
                "to train's size when train is smaller); exact-copy and row-match checks use all of train",
    }

    t = time.perf_counter()
    if say:
        n_q = min(len(syn), cfg.audit_max_synthetic or len(syn))
        say(f"memorization audit: {n_q} synthetic x {n_ref} train-sample and {n_ref} holdout sequences")
    compact = syn.full_length and train_ref.full_length and holdout_ref.full_length
    syn_dcr = syn
    if cfg.audit_max_synthetic is not None and len(syn) > cfg.audit_max_synthetic:
        syn_dcr = syn.subset(sample_index(len(syn), cfg.audit_max_synthetic, np.random.default_rng([seed, 5])))
    units = (syn_dcr.units, train_ref.units, holdout_ref.units)
    dcr: DCRResult = dcr_audit(
        syn_dcr.flat(compact), train_ref.flat(compact), holdout_ref.flat(compact), cfg.confidence, progress=say,
        units=units,
    )
    privacy = {
        "dcr": dcr.summary() | {"synthetic_sequences_total": len(syn)},
        "exact_copies": exact_copies(syn, train),
        "row_matches": row_matches(syn, train, holdout),
    }
    if cfg.dcr_parts_share_max is not None or cfg.report_all_privacy:
        privacy["dcr_parts"] = dcr_by_parts(rep, syn_dcr, train_ref, holdout_ref, privacy["dcr"], cfg.confidence,
                                            seed, progress=say)
    if cfg.membership_auc_max is not None or cfg.report_all_privacy:
        if say:
            say(f"membership inference: {n_ref} members and {n_ref} non-members against {len(syn_dcr)} synthetic")
        privacy["membership"] = distance_attack(syn_dcr.flat(compact), train_ref.flat(compact),
                                                holdout_ref.flat(compact), cfg.confidence, train_ref.units,
                                                holdout_ref.units)
    timings["privacy"] = time.perf_counter() - t

    ctx = MetricContext(
        rep=rep, seed=seed, n_seeds=cfg.seeds, max_sequences=cfg.max_sequences, holdout=holdout_ref,
        train=TrainSettings(**cfg.classifier), progress=say,
    )
    results: dict[str, MetricResult] = {}
    for m in metrics if metrics is not None else default_metrics():
        t = time.perf_counter()
        if say:
            say(f"fidelity: {m.name}")
        results[m.name] = m.compute(train_ref, syn, ctx)
        timings[m.name] = time.perf_counter() - t

    sizes = {role: len(sets[role]) for role in sets}
    gate = decide(cfg, sizes, results, privacy)
    timings["total"] = time.perf_counter() - t_all
    result = EvaluationResult(
        gate=gate, metrics=results, privacy=privacy, sizes=describe_inputs(prepared), balance=balance,
        representation={
            "sequence_length": rep.T, "step_features": int(train.dyn.shape[2]),
            "static_features": int(train.static.shape[1]),
            "distance_dimensions": int(train_ref.flat(compact).shape[1]),
            "fitted_on": "train", "encoder": "TableEncoder(levels=False) knots, continuous quantile-normal map",
        },
        timings=timings, dataset=schema.name, schema_fingerprint=schema.fingerprint(), seed=seed, gate_config=cfg,
        artifacts={"rep": rep, "real": train_ref, "synthetic": syn, "dcr": dcr,
                   "ranges": protected_ranges(prepared.frames["train"], schema, protection or Protection())},
    )
    if say:
        say(f"gate {'PASSED' if gate.passed else 'FAILED'}: {gate.reason}")
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
