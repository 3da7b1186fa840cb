"""Speed of the fast preset (issue 16 item 2): fit + sample seconds, optimisation steps and steps/s
per training stage, and sampling throughput on one core, for three data sizes:

- ``panel1k``: a ~1k-row panel (hurricane: 40 regions x their first 24 months = 960 rows, one
  static categorical ``type``, numerics otherwise), the shape of issue 16's first panel;
- ``nasdaq100``: the 103-stock panel (80 % of the stocks, as ``bench_peers.py`` splits it);
- ``pollution``: 24-step windows of the hourly series (80 % of the windows, as ``bench_peers.py``).

    python benchmarks/bench_speed.py [--datasets panel1k nasdaq100 pollution] [--label after]

Each dataset runs in its own process; the 1-minute load average before and after each run is
recorded (the machine is shared: compare runs at similar load). Results are appended to
``benchmarks/results/speed.json`` under ``--label``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _shared import append_run, run_child, stage_steps

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "speed.json"
WORK = ROOT / "benchmarks" / ".work"
DATASETS = ("panel1k", "nasdaq100", "pollution")


def panel1k() -> tuple[Any, Any]:
    """40 hurricane regions x their first 24 monthly rows (960 rows)."""
    from synth_pipeline.ingest import coerce, read_source
    from synth_pipeline.schema import infer_schema

    raw = read_source(SHARED / "hurricane.csv")
    raw = raw[raw["region"].isin(raw["region"].unique()[:40])]
    raw = raw.groupby("region", sort=False).head(24).reset_index(drop=True)
    schema = infer_schema(raw, time_index="date", entity_key="region", name="panel1k")
    return coerce(raw, schema), schema


def load(dataset: str) -> tuple[Any, Any]:
    """The training frame and schema (bench_peers' split for the shared sets)."""
    import pandas as pd

    from synth_pipeline.schema import DatasetSchema

    if dataset == "panel1k":
        return panel1k()
    work = WORK / dataset
    if not (work / "train.parquet").exists():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_peers import prepare

        prepare(dataset)
    return pd.read_parquet(work / "train.parquet"), DatasetSchema.from_yaml(work / "schema.yaml")


def run_one(dataset: str, overrides: dict[str, Any], n_sample: int) -> dict[str, Any]:
    import torch

    from synth_pipeline.config import ModelConfig
    from synth_pipeline.synthesizer import Synthesizer

    df, schema = load(dataset)
    cfg = ModelConfig.from_preset("fast", {"seed": 0, "progress": False, **overrides})
    t0 = time.perf_counter()
    syn = Synthesizer(schema, cfg).fit(df)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    syn.sample(len(syn.encoder.transform(df).lengths), seed=1)
    sample_s = time.perf_counter() - t0
    stages = stage_steps(syn.model.history)
    timing = getattr(syn.model, "stage_seconds", {})
    torch.set_num_threads(1)  # sampling throughput on one core (issue 16: >= 1,000 seq/s of 24 steps)
    syn.config.threads = 1
    syn.sample(64, seed=2)  # warm-up
    t0 = time.perf_counter()
    syn.sample(n_sample, seed=3)
    one_core = n_sample / (time.perf_counter() - t0)
    return {
        "dataset": dataset, "train_rows": len(df), "train_sequences": int(len(syn.encoder.transform(df).lengths)),
        "sequence_length": syn.encoder.max_len, "fit_seconds": round(fit_s, 2), "sample_seconds": round(sample_s, 2),
        "fit_plus_sample_seconds": round(fit_s + sample_s, 2), "steps": stages,
        "stage_seconds": {k: round(v, 2) for k, v in timing.items()},
        "steps_per_second": {k: round(stages[k] / timing[k], 1) for k in stages if timing.get(k)},
        "one_core_sequences_per_second": round(one_core, 1), "one_core_n": n_sample,
        "threads_at_fit": getattr(cfg, "threads", None) or torch.get_num_threads(),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--label", default="after")
    ap.add_argument("--overrides", default="{}", help="JSON model overrides")
    ap.add_argument("--n-sample", type=int, default=2000, help="sequences for the one-core throughput")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one, json.loads(a.overrides), a.n_sample)))
        return 0
    for ds in a.datasets:
        row = run_child(__file__, ["--one", ds, "--overrides", a.overrides, "--n-sample", str(a.n_sample)], ds,
                        a.label, a.overrides)
        if row is None:
            continue
        row["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=ROOT).stdout.strip()
        print(json.dumps(row), flush=True)
        append_run(RESULTS, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
