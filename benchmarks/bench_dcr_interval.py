"""Is the DCR share's interval honest? A "perfect generator" on real data: split the entities (or
windows) of a dataset into three disjoint thirds, use one as train, one as holdout and one as the
"synthetic" table, and repeat over random splits. The spread of the share across splits is the
real uncertainty; the audit's ``se`` (evaluation/privacy/dcr.py) should match it, and its interval
should cover 0.5 about 95% of the time. Writes benchmarks/results/dcr_interval.json.

    python benchmarks/bench_dcr_interval.py [--splits 12] [--datasets pollution nasdaq100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the evaluation tests' dataset loaders (slices shipped in tests/data)
RESULTS = ROOT / "benchmarks" / "results" / "dcr_interval.json"


def one_dataset(name: str, splits: int) -> dict:
    from _eval_data import nasdaq, pollution

    from synth_pipeline.encoding import sequence_ids
    from synth_pipeline.evaluation import baselines as B
    from synth_pipeline.evaluation import evaluate
    from synth_pipeline.evaluation.privacy import wilson_interval

    loader = {"pollution": pollution, "nasdaq100": nasdaq}[name]
    _, train, hold, schema = loader(ROOT / "tests" / "data")
    full = pd.concat([train, hold], ignore_index=True)
    ids = full[schema.entity_key].to_numpy() if schema.entity_key else sequence_ids(full, schema)
    units = np.unique(ids)
    rows = []
    for seed in range(splits):
        perm = np.random.default_rng(seed).permutation(units)
        n = len(units) // 3
        parts = [full[np.isin(ids, perm[i * n:(i + 1) * n])].reset_index(drop=True) for i in range(3)]
        res = evaluate(parts[0], parts[1], B.holdout_as_synthetic(parts[2], schema), schema, seed=0, metrics=[],
                       gate_config={"min_sequences": 10})
        d = res.metrics_dict()["privacy"]["dcr"]
        wl, wh = wilson_interval(d["share"] * d["n_synthetic"], d["n_synthetic"])
        rows.append({"split": seed, "n_reference": d["n_reference"], "share": d["share"], "se": d["se"],
                     "ci": [d["ci_low"], d["ci_high"]], "wilson_ci": [wl, wh]})
        print(f"[dcr] {name} split {seed}: share {d['share']:.3f} se {d['se']:.3f} "
              f"ci {d['ci_low']:.3f}-{d['ci_high']:.3f} (Wilson {wl:.3f}-{wh:.3f})", flush=True)
    share = np.array([r["share"] for r in rows])
    cover = np.mean([r["ci"][0] <= 0.5 <= r["ci"][1] for r in rows])
    wcover = np.mean([r["wilson_ci"][0] <= 0.5 <= r["wilson_ci"][1] for r in rows])
    return {"n_reference": rows[0]["n_reference"], "splits": splits, "sd_of_share": float(share.std(ddof=1)),
            "mean_se": float(np.mean([r["se"] for r in rows])), "coverage_of_0.5": float(cover),
            "wilson_half_width": float(np.mean([(r["wilson_ci"][1] - r["wilson_ci"][0]) / 2 for r in rows])),
            "wilson_coverage_of_0.5": float(wcover), "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--splits", type=int, default=12)
    ap.add_argument("--datasets", nargs="+", default=["pollution", "nasdaq100"], choices=["pollution", "nasdaq100"])
    a = ap.parse_args()
    doc = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "datasets": {}}
    for ds in a.datasets:
        doc["datasets"][ds] = one_dataset(ds, a.splits)
        r = doc["datasets"][ds]
        print(f"[dcr] {ds}: sd of the share across splits {r['sd_of_share']:.3f}, mean se {r['mean_se']:.3f}, "
              f"coverage of 0.5 {r['coverage_of_0.5']:.2f} (Wilson half-width {r['wilson_half_width']:.3f}, "
              f"coverage {r['wilson_coverage_of_0.5']:.2f})", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, RESULTS)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
