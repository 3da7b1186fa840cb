"""Fidelity and fit time of the fast preset before/after a training-budget change (issue 16 item 2):
fit on an entity split, sample as many sequences as train has, audit with bench_peers' ``audit``
(our ``evaluate``: discriminative, temporal discriminative, predictive, DCR share).

- ``pollution``: bench_peers' 24-step windows and 80/20 window split;
- ``panel1k``: bench_speed's panel (40 hurricane regions x their first 24 months) as train; the
  holdout is the 8 other regions cut into 24-month windows (64 sequences, entities unseen in train).

    python benchmarks/bench_budget.py --label after [--datasets pollution panel1k] [--seeds 0 1]

Each (dataset, seed) runs in its own process; 1-minute load averages before/after are recorded
(the machine is shared). Results are appended to ``benchmarks/results/budget.json`` under ``--label``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from _shared import append_run, fit_and_sample, run_child, stage_steps

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "budget.json"
WORK = ROOT / "benchmarks" / ".work"
DATASETS = ("pollution", "panel1k")


def prepare_panel1k() -> Path:
    """``.work/panel1k/{train,holdout}.parquet`` + ``schema.yaml`` (see the module docstring)."""
    import pandas as pd

    from synth_pipeline.ingest import coerce, read_source
    from synth_pipeline.schema import infer_schema

    work = WORK / "panel1k"
    if (work / "holdout.parquet").exists():
        return work
    raw = read_source(SHARED / "hurricane.csv")
    regions = list(raw["region"].unique())
    train = raw[raw["region"].isin(regions[:40])].groupby("region", sort=False).head(24).reset_index(drop=True)
    schema = infer_schema(train, time_index="date", entity_key="region", name="panel1k")
    rest = raw[raw["region"].isin(regions[40:])].sort_values(["region", "date"]).copy()
    k = rest.groupby("region", sort=False).cumcount() // 24
    n_per = rest.groupby("region", sort=False)["region"].transform("size") // 24
    rest = rest[k < n_per].copy()
    rest["region"] = rest["region"].astype(str) + "/w" + k[k < n_per].astype(str)
    holdout = pd.DataFrame(rest).reset_index(drop=True)
    work.mkdir(parents=True, exist_ok=True)
    coerce(train, schema).to_parquet(work / "train.parquet", index=False)
    coerce(holdout, schema).to_parquet(work / "holdout.parquet", index=False)
    schema.to_yaml(work / "schema.yaml")
    return work


def workdir(dataset: str) -> Path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    if dataset == "panel1k":
        return prepare_panel1k()
    work = WORK / dataset
    if not (work / "holdout.parquet").exists():
        from bench_peers import prepare

        prepare(dataset)
    return work


def run_one(dataset: str, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd

    from synth_pipeline.config import ModelConfig
    from synth_pipeline.schema import DatasetSchema

    work = workdir(dataset)
    from bench_peers import audit

    schema = DatasetSchema.from_yaml(work / "schema.yaml")
    train = pd.read_parquet(work / "train.parquet")
    cfg = ModelConfig.from_preset("fast", {"seed": seed, "progress": False, **overrides})
    syn, synthetic, fit_s, sample_s = fit_and_sample(schema, cfg, train, seed)
    out = work / f"budget_seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    synthetic.to_parquet(out / "synthetic.parquet", index=False)
    steps = stage_steps(syn.model.history)
    return {"dataset": dataset, "seed": seed, "fit_seconds": round(fit_s, 2), "sample_seconds": round(sample_s, 2),
            "steps": steps, **audit(work, out / "synthetic.parquet")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--label", default="after")
    ap.add_argument("--overrides", default="{}", help="JSON model overrides")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one[0], int(a.one[1]), json.loads(a.overrides))))
        return 0
    for ds in a.datasets:
        for seed in a.seeds:
            row = run_child(__file__, ["--one", ds, str(seed), "--overrides", a.overrides], f"{ds} seed {seed}",
                            a.label, a.overrides)
            if row is None:
                continue
            append_run(RESULTS, row)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
