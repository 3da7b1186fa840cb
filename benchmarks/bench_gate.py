"""Calibration of the release gate by simulation: does its verdict follow the data, not the draw?

For each dataset and each of ``--splits`` random entity splits, the privacy units (stock symbols,
hurricane regions, windows of a long series) are dealt into three disjoint thirds: *train*,
*holdout* and *fresh*. Known answers are then audited with the default ``GateConfig``:

==================  ==========================================================  ===========
arm                 "synthetic" table                                           must
==================  ==========================================================  ===========
holdout             the fresh third: real entities the "model" never saw        pass >= 95%
copy                train, verbatim                                             fail 100%
near_copy           train + N(0, (1% of each column's std)^2)                   fail 100%
rekeyed             train, verbatim, under new keys, entity order shuffled      fail 100%
static_copied       fresh dynamics carrying the static attributes of random     fail 100%
                    train entities (datasets with static attributes)
model               a fast-preset model trained on the train third              reported
==================  ==========================================================  ===========

The failing arms are audited on the privacy checks alone (fidelity metrics off): they must fail
*as memorization*, whatever their fidelity. The holdout arm runs the whole default gate (GRU
fidelity metrics included): a perfect generator must get through every check. ``model`` trains
and samples (slow: minutes per split) and is off unless asked for.

    python benchmarks/bench_gate.py [--splits 20] [--datasets ...] [--arms ...] [--model-splits 3]

Writes ``benchmarks/results/gate.json``; the table in ``benchmarks/README.md`` comes from it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SYNTH_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results" / "gate.json"
WINDOW = 24
# dataset -> file, time column, privacy-unit column (None: a long series cut into windows)
DATASETS: dict[str, dict[str, Any]] = {
    "nasdaq100": dict(file="nasdaq100_2019.csv", time="date", unit="Symbol"),
    "hurricane": dict(file="hurricane.csv", time="date", unit="region"),
    "pollution": dict(file="pollution_data.csv", time="date", unit=None),
    "metro_traffic": dict(file="metro_traffic.csv", time="date", unit=None),
    "etth1": dict(file="etth1.csv", time="date", unit=None),
    # a large panel with entity attributes: pollution windows, each carrying its start month and its
    # mean temperature (near-unique per window, like a market capitalisation) as static attributes
    "pollution_static": dict(file="pollution_data.csv", time="date", unit=None, static_from="TEMP"),
}
ARMS = ("holdout", "copy", "near_copy", "rekeyed", "static_copied", "model")
MUST = {"holdout": "pass", "copy": "fail", "near_copy": "fail", "rekeyed": "fail", "static_copied": "fail",
        "model": "report"}
PRIVACY_ONLY = {"discriminative_max": None, "temporal_discriminative_max": None, "predictive_ratio_max": None,
                "correlation_max": None, "marginals_max": None, "autocorrelation_max": None,
                "static_consistency_min": None}


def load(name: str) -> tuple[pd.DataFrame, Any, np.ndarray]:
    """Typed frame, its schema (24-step sequences) and each row's privacy unit. A long series is cut
    into windows keyed ``window`` (each its own unit); a panel's entities are cut into windows by
    ``sequence_length`` and split by entity, so no entity has windows on two sides (the audit's
    bootstrap then resamples entities, not windows)."""
    from synth_pipeline.ingest import coerce, read_source
    from synth_pipeline.schema import infer_schema

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _shared import windowed

    spec = DATASETS[name]
    raw = read_source(SHARED / spec["file"])
    if spec["unit"] is None:
        df, schema = windowed(raw, spec["time"], WINDOW, name)
        if spec.get("static_from"):
            g = df.groupby("window", sort=False)
            df["start_month"] = g[spec["time"]].transform("first").dt.month_name()
            df["mean_" + spec["static_from"]] = g[spec["static_from"]].transform("mean").round(2)
            schema = infer_schema(df, time_index=spec["time"], entity_key="window", name=name)
            df = coerce(df, schema)
        return df, schema, df["window"].to_numpy()
    unit = spec["unit"]
    schema = infer_schema(raw, time_index=spec["time"], entity_key=unit, name=name)
    schema.sequence_length = WINDOW  # each entity cut into 24-step windows, like the evaluation tests
    df = coerce(raw, schema)
    return df, schema, df[unit].astype(str).to_numpy()


def split(df: pd.DataFrame, units: np.ndarray, seed: int) -> list[pd.DataFrame]:
    u = np.random.default_rng(seed).permutation(np.unique(units))
    n = len(u) // 3
    return [df[np.isin(units, u[i * n:(i + 1) * n])].reset_index(drop=True) for i in range(3)]


def model_synthetic(train: pd.DataFrame, schema: Any, seed: int) -> pd.DataFrame:
    from synth_pipeline.config import ModelConfig
    from synth_pipeline.synthesizer import Synthesizer

    cfg = ModelConfig.from_preset("fast", {"seed": seed, "progress": False})
    syn = Synthesizer(schema, cfg).fit(train)
    return syn.sample(int(train[schema.entity_key].nunique()), seed=seed + 1)


def make_arm(arm: str, train: pd.DataFrame, holdout: pd.DataFrame, fresh: pd.DataFrame, schema: Any, s: int,
             model_splits: int) -> pd.DataFrame | None:
    """The arm's "synthetic" table for split ``s`` (None: not applicable)."""
    from synth_pipeline.evaluation import baselines as B

    if arm == "holdout":
        return B.holdout_as_synthetic(fresh, schema)
    if arm == "copy":
        return B.train_copy(train, schema)
    if arm == "near_copy":
        return B.train_plus_noise(train, schema, rel=0.01, seed=s)
    if arm == "rekeyed":
        return B.rekeyed_copy(train, schema, s)
    if arm == "static_copied":
        return B.static_copied(train, fresh, schema, s)
    return model_synthetic(train, schema, s) if s < model_splits else None


def verdict(passed: bool, failed: list[str], insufficient: list[str]) -> str:
    """pass; fail (a check failed outright, e.g. as memorization); or insufficient evidence only."""
    return "pass" if passed else "fail" if set(failed) - set(insufficient) else "insufficient"


def audit(train: pd.DataFrame, holdout: pd.DataFrame, synthetic: pd.DataFrame, schema: Any, full: bool) -> dict:
    from synth_pipeline.evaluation import evaluate
    from synth_pipeline.evaluation.gate import INSUFFICIENT

    res = evaluate(train, holdout, synthetic, schema, gate_config=None if full else PRIVACY_ONLY, seed=0,
                   metrics=None if full else [])
    p = res.privacy
    return {
        "passed": res.passed, "failed": [c.name for c in res.gate.failed], "reason": res.gate.reason,
        "verdict": verdict(res.passed, [c.name for c in res.gate.failed],
                           [c.name for c in res.gate.failed if c.explanation.startswith(INSUFFICIENT)]),
        "insufficient": [c.name for c in res.gate.failed if c.explanation.startswith(INSUFFICIENT)],
        "values": res.values(),
        "dcr_share": p["dcr"]["share"], "dcr_ci_high": p["dcr"]["ci_high"],
        "parts_worst": p["dcr_parts"]["worst"], "parts_worst_share": p["dcr_parts"]["worst_share"],
        "parts_worst_ci_high": p["dcr_parts"]["worst_ci_high"],
        "mia_auc": p["membership"]["auc"], "mia_ci_high": p["membership"]["ci_high"],
        "mia_tpr_at_fpr": p["membership"]["tpr_at_fpr"],
        "sizes": {k: v.get("sequences") if isinstance(v, dict) else v for k, v in res.sizes.items()},
    }


def summarize(rows: list[dict]) -> dict:
    """Per arm: pass / insufficient-evidence / fail rates, how often each check failed, mean values."""
    summary = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        rs = [r for r in rows if r["arm"] == arm]
        fails: dict[str, int] = {}
        for r in rs:
            for c in r["failed"]:
                fails[c] = fails.get(c, 0) + 1
        summary[arm] = {"runs": len(rs), "pass_rate": float(np.mean([r["passed"] for r in rs])), "must": MUST[arm],
                        "insufficient_rate": float(np.mean([r["verdict"] == "insufficient" for r in rs])),
                        "fail_rate": float(np.mean([r["verdict"] == "fail" for r in rs])),
                        "failed_checks": fails,
                        "dcr_share_mean": float(np.mean([r["dcr_share"] for r in rs])),
                        "parts_worst_share_mean": float(np.mean([r["parts_worst_share"] for r in rs])),
                        "mia_auc_mean": float(np.mean([r["mia_auc"] for r in rs]))}
    return summary


def run(name: str, splits: int, arms: list[str], model_splits: int) -> dict:
    df, schema, units = load(name)
    rows: list[dict] = []
    for s in range(splits):
        train, holdout, fresh = split(df, units, s)
        for arm in arms:
            t = time.perf_counter()
            syn = make_arm(arm, train, holdout, fresh, schema, s, model_splits)
            if syn is None:
                continue
            r = audit(train, holdout, syn, schema, full=arm in ("holdout", "model"))
            r |= {"split": s, "arm": arm, "seconds": time.perf_counter() - t}
            rows.append(r)
            print(f"[gate] {name} split {s:2d} {arm:13s} {r['verdict']:12s} "
                  f"dcr {r['dcr_share']:.3f} (hi {r['dcr_ci_high']:.3f}) parts {r['parts_worst_share']:.3f} "
                  f"(hi {r['parts_worst_ci_high']:.3f}, {r['parts_worst']}) mia {r['mia_auc']:.3f} "
                  f"(hi {r['mia_ci_high']:.3f}) failed={r['failed']} {r['seconds']:.0f}s", flush=True)
    summary = summarize(rows)
    n_units = len(np.unique(units))
    return {"privacy_units": n_units, "sequences": int(df[schema.entity_key].nunique()), "summary": summary,
            "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--arms", nargs="+", default=[a for a in ARMS if a != "model"], choices=ARMS)
    ap.add_argument("--model-splits", type=int, default=3, help="splits on which the model arm trains")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    missing = [d for d in a.datasets if not (SHARED / DATASETS[d]["file"]).exists()]
    if missing:
        print(f"[gate] skipping {missing}: not found under {SHARED} (set SYNTH_SHARED_DATA)")
    doc: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "splits": a.splits,
                           "arms": a.arms, "datasets": {}}
    if a.out.exists():  # keep other datasets' results from earlier runs
        doc["datasets"] = json.loads(a.out.read_text()).get("datasets", {})
    for ds in [d for d in a.datasets if d not in missing]:
        doc["datasets"][ds] = run(ds, a.splits, a.arms, a.model_splits)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = a.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2, default=float))
        os.replace(tmp, a.out)
        for arm, s in doc["datasets"][ds]["summary"].items():
            print(f"[gate] {ds} {arm}: pass {s['pass_rate']:.2f} insufficient evidence {s['insufficient_rate']:.2f} "
                  f"fail {s['fail_rate']:.2f} over {s['runs']} (must {s['must']}); "
                  f"failed checks {s['failed_checks']}", flush=True)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
