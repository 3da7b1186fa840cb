"""Training scale: fit time and peak RSS of the fast preset against the number of training rows,
up to 1,000,000 rows (the pollution series tiled: each copy shifted in time by the series' span and
given small multiplicative noise, so no two copies are identical), cut into 24-step windows.

    python benchmarks/bench_scaling.py [--rows 62500 125000 250000 500000 1000000]

Each point runs in its own process (peak RSS is its own). Writes benchmarks/results/scaling.json
and benchmarks/results/scaling.png (time and RSS against rows, with the linear fit). Target: peak
RSS <= 4 GB at 1M rows, time growing (at most) linearly in rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "pollution_data.csv"
RESULTS = ROOT / "benchmarks" / "results"
WINDOW = 24


def tiled(rows: int):  # noqa: ANN201 - DataFrame, schema
    import numpy as np
    import pandas as pd

    from synth_pipeline.ingest import coerce, read_source
    from synth_pipeline.schema import infer_schema

    raw = read_source(SOURCE)
    schema = infer_schema(raw, time_index="date", sequence_length=WINDOW, name="pollution_tiled")
    base = coerce(raw, schema)
    span = base["date"].max() - base["date"].min() + pd.Timedelta(hours=1)
    reps = -(-rows // len(base))
    rng = np.random.default_rng(0)
    parts = []
    num = [c.name for c in schema.columns if c.kind in ("continuous", "integer") and c.name in base]
    for k in range(reps):
        p = base.copy()
        p["date"] = p["date"] + k * span
        if k:
            for c in num:
                v = p[c].astype("float64") * (1 + 0.01 * rng.standard_normal(len(p)))
                p[c] = v.round().astype(p[c].dtype) if str(p[c].dtype).lower().startswith(("int", "uint")) else v
        parts.append(p)
    return pd.concat(parts, ignore_index=True).iloc[:rows], schema


def run_point(rows: int) -> dict:
    import torch

    from synth_pipeline.config import ModelConfig
    from synth_pipeline.synthesizer import Synthesizer

    df, schema = tiled(rows)
    cfg = ModelConfig.from_preset("fast", {"seed": 0, "progress": False})
    t0 = time.perf_counter()
    syn = Synthesizer(schema, cfg).fit(df)
    fit_s = time.perf_counter() - t0
    return {"rows": len(df), "sequences": len(df) // WINDOW, "fit_seconds": fit_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch_threads": torch.get_num_threads(), "train_stages": list(syn.model.history)}


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.array([p["rows"] for p in points], float)
    t = np.array([p["fit_seconds"] for p in points])
    m = np.array([p["peak_rss_mb"] for p in points])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(x, t, "o-", label="fit time")
    slope, icpt = np.polyfit(x, t, 1)
    a1.plot(x, slope * x + icpt, "--", label=f"linear fit: {slope * 1e6:.1f} s per 1M rows + {icpt:.0f} s")
    a1.set_xlabel("training rows"), a1.set_ylabel("seconds"), a1.legend(fontsize=8), a1.set_ylim(bottom=0)
    a2.plot(x, m / 1024, "o-", color="C1", label="peak RSS")
    a2.axhline(4, color="red", lw=0.8, ls=":", label="4 GB target")
    a2.set_xlabel("training rows"), a2.set_ylabel("GB"), a2.legend(fontsize=8), a2.set_ylim(bottom=0)
    fig.suptitle("fast preset on tiled pollution (24-step windows), 2 CPU cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[62_500, 125_000, 250_000, 500_000, 1_000_000])
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_point(a.one)))
        return 0
    if not SOURCE.exists():
        print(f"skip: {SOURCE} not found (the shared data folder is not beside the project)")
        return 0
    points = []
    for rows in a.rows:
        res = subprocess.run([sys.executable, __file__, "--one", str(rows)], capture_output=True, text=True, cwd=ROOT)
        if res.returncode != 0:
            print(f"{rows} rows: FAILED {res.stderr.strip().splitlines()[-1:]}")
            continue
        p = json.loads(res.stdout.strip().splitlines()[-1])
        points.append(p)
        print(f"{p['rows']:>9,d} rows ({p['sequences']:,d} windows): fit {p['fit_seconds']:6.1f} s, "
              f"peak RSS {p['peak_rss_mb']:7.0f} MB", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "scaling.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"cpus": os.cpu_count(), "points": points}, indent=2))
    os.replace(tmp, out)
    if len(points) >= 2:
        plot(points, RESULTS / "scaling.png")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
