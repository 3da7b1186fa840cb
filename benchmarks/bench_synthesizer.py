"""Synthesizer benchmark: fit time, sampling throughput and peak RSS per dataset and preset.

Each (dataset, preset) runs in its own process so peak RSS is its own. Prints a table and writes
benchmarks/results/synthesizer.json. Data is read in place from ../shared/data; datasets that are
absent are skipped with the reason recorded.

    python benchmarks/bench_synthesizer.py [--presets fast default] [--datasets nasdaq100 pollution]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"

DATASETS = {
    "nasdaq100": dict(file="nasdaq100_2019.csv", entity_key="Symbol", time_index="date", sequence_length=None),
    "pollution": dict(file="pollution_data.csv", entity_key=None, time_index="date", sequence_length=24),
}


def run_one(dataset: str, preset: str, n_sample: int, seed: int) -> dict:
    import torch

    from synth_pipeline.config import ModelConfig
    from synth_pipeline.ingest import coerce, read_source
    from synth_pipeline.schema import infer_schema
    from synth_pipeline.split import split_sequences
    from synth_pipeline.synthesizer import Synthesizer

    spec = DATASETS[dataset]
    raw = read_source(SHARED / spec["file"])
    schema = infer_schema(raw, time_index=spec["time_index"], entity_key=spec["entity_key"],
                          sequence_length=spec["sequence_length"], name=dataset)
    df = coerce(raw, schema)
    train, _ = split_sequences(df, schema, 0.2, seed)
    cfg = ModelConfig.from_preset(preset, {"seed": seed, "progress": False})
    t0 = time.perf_counter()
    syn = Synthesizer(schema, cfg).fit(train)
    fit_s = time.perf_counter() - t0
    syn.sample(min(64, n_sample), seed=seed)  # warm-up
    t0 = time.perf_counter()
    out = syn.sample(n_sample, seed=seed + 1)
    sample_s = time.perf_counter() - t0
    return {
        "dataset": dataset, "preset": preset, "train_rows": len(train),
        "train_sequences": int(len(syn.encoder.transform(train).lengths)),
        "sequence_length": syn.encoder.max_len, "fit_seconds": round(fit_s, 2),
        "sampled_sequences": n_sample, "sampled_rows": len(out), "sample_seconds": round(sample_s, 3),
        "sequences_per_second": round(n_sample / sample_s, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["fast", "default"])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--n-sample", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--one", nargs=2, metavar=("DATASET", "PRESET"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one[0], a.one[1], a.n_sample, a.seed)))
        return 0
    rows = []
    for ds in a.datasets:
        if not (SHARED / DATASETS[ds]["file"]).exists():
            rows.append({"dataset": ds, "skipped": f"{SHARED / DATASETS[ds]['file']} not found"})
            print(f"skip {ds}: shared data not found at {SHARED}")
            continue
        for preset in a.presets:
            cmd = [sys.executable, __file__, "--one", ds, preset, "--n-sample", str(a.n_sample), "--seed", str(a.seed)]
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if res.returncode != 0:
                rows.append({"dataset": ds, "preset": preset, "error": res.stderr.strip().splitlines()[-1:]})
                print(f"{ds}/{preset}: FAILED {res.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{ds:10s} {preset:8s} fit {row['fit_seconds']:7.1f}s  sample {row['sequences_per_second']:8.1f} seq/s"
                  f"  peak RSS {row['peak_rss_mb']:7.1f} MB  ({row['train_sequences']} train sequences x {row['sequence_length']})")
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
               "processor": platform.processor()}
    out = RESULTS / "synthesizer.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine, "results": rows}, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
