"""Scale-out benchmark (issue 18): a sharded release, a large audit and training memory.

1. **Release**: ``--rows`` synthetic rows (10,000,000 by default: 416,667 sequences of 24 steps)
   generated as ``--shards`` seeded parts, each shard in its own process exactly as a mapped Airflow
   ``generate_shard`` task runs it (``shards.plan_shards`` / ``shards.write_shard``), ``--parallel``
   at a time. Per shard: seconds and peak RSS; in all: wall time, rows, and the release read back as
   one ``pyarrow.dataset``. The model has the fast preset's architecture (hidden width, sampling
   steps), trained for a few steps only: sampling cost depends on shapes, not on how well it learned.
2. **Audit**: the DCR search of ``--audit-synthetic`` synthetic sequences (1,000,000) against equal
   train-sample and holdout references of ``--audit-reference`` sequences (100,000) each, plus the
   membership attack (every reference against all synthetic sequences), on the shared
   representation's 483-dimensional vectors (``bench_audit.make_set``): seconds and peak RSS.
3. **Training memory**: the fast preset fitted on ``--train-rows`` rows (10,000,000) of the pollution
   series tiled (``bench_scaling.tiled``), with a step budget cut to ``--train-steps`` (memory is set
   by the data and a batch, not by the number of steps): seconds and peak RSS (goal <= 8 GB).

    python benchmarks/bench_scale.py [--rows 10000000 --shards 8 --parallel 2]
        [--parts release,audit,train] [--audit-synthetic 1000000 --audit-reference 100000]
        [--train-rows 10000000]

Every part runs in its own process (peak RSS is its own). Writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scale.json"
WORK = ROOT / "benchmarks" / ".work" / "scale"
WINDOW = 24
SEED = 0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(args: list[str]) -> dict:
    """Run this script with ``args`` in a fresh process; its last stdout line is a JSON record."""
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
# 1. sharded release
# ------------------------------------------------------------------------------------------------
def train_small_model(folder: Path) -> dict:
    """The fast preset's architecture on pollution windows, a few training steps."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_scaling import tiled

    from synth_pipeline.config import ModelConfig
    from synth_pipeline.synthesizer import Synthesizer

    df, schema = tiled(43_824)
    cfg = ModelConfig.from_preset("fast", {"seed": SEED, "progress": False, "vae_steps": 30,
                                           "diffusion_steps": 30, "static_steps": 10})
    t = time.perf_counter()
    Synthesizer(schema, cfg).fit(df).save(folder)
    return {"fit_seconds": time.perf_counter() - t}


def one_shard(model: Path, n_sequences: int, shards: int, index: int, out: Path) -> dict:
    import torch

    from synth_pipeline.shards import plan_shards, write_shard
    from synth_pipeline.synthesizer import Synthesizer

    torch.set_num_threads(1)  # one core per mapped task, as on a worker slot
    t = time.perf_counter()
    syn = Synthesizer.load(model, device="cpu")
    spec = plan_shards(n_sequences, SEED, shards)[index]
    entry = write_shard(syn, spec, out)
    return {"shard": index, "sequences": spec.count, "rows": entry["rows"], "seconds": time.perf_counter() - t,
            "peak_rss_mb": _peak_mb(), "bytes": entry["size"]}


def release(rows: int, shards: int, parallel: int) -> dict:
    import pyarrow.dataset as ds

    model, out = WORK / "model", WORK / "release"
    out.mkdir(parents=True, exist_ok=True)
    for p in out.glob("part-*.parquet"):
        p.unlink()
    fit = _child(["--child", "fit", str(model)]) if not (model / "config.json").exists() else {"fit_seconds": None}
    n_seq = -(-rows // WINDOW)
    t = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        per = list(pool.map(lambda i: _child(["--child", "shard", str(model), str(n_seq), str(shards), str(i), str(out)]),
                            range(shards)))
    wall = time.perf_counter() - t
    for r in per:
        print(f"[scale] shard {r['shard']}: {r['sequences']} sequences, {r['rows']} rows in {r['seconds']:.1f}s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    t = time.perf_counter()
    read_rows = ds.dataset(out, format="parquet").count_rows()
    return {"rows_requested": rows, "sequences": n_seq, "shards": shards, "parallel": parallel, "wall_seconds": wall,
            "rows": sum(r["rows"] for r in per), "rows_read_back": read_rows, "read_back_seconds": time.perf_counter() - t,
            "max_shard_peak_rss_mb": max(r["peak_rss_mb"] for r in per),
            "sequences_per_second": n_seq / wall, "per_shard": per, "model": fit}


# ------------------------------------------------------------------------------------------------
# 2. audit
# ------------------------------------------------------------------------------------------------
def audit(n_syn: int, n_ref: int) -> dict:
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_audit import N_NUM, make_set

    from synth_pipeline.evaluation.privacy import dcr_audit
    from synth_pipeline.evaluation.privacy.membership import distance_attack

    loadings = np.random.default_rng(123).normal(0, 0.6, (4, N_NUM)).astype(np.float32)  # as bench_audit
    t = time.perf_counter()
    syn = make_set(n_syn, 1, loadings).flat(True)
    tr = make_set(n_ref, 2, loadings).flat(True)
    ho = make_set(n_ref, 3, loadings).flat(True)
    data_s = time.perf_counter() - t
    t = time.perf_counter()
    res = dcr_audit(syn, tr, ho)
    dcr_s = time.perf_counter() - t
    t = time.perf_counter()
    mia = distance_attack(syn, tr, ho)
    mia_s = time.perf_counter() - t
    return {"synthetic": n_syn, "reference": n_ref, "dims": int(syn.shape[1]), "data_seconds": data_s,
            "dcr_seconds": dcr_s, "membership_seconds": mia_s, "share": res.share, "ci": [res.ci_low, res.ci_high],
            "membership_auc": mia["auc"], "search": res.search, "peak_rss_mb": _peak_mb()}


# ------------------------------------------------------------------------------------------------
# 3. training memory
# ------------------------------------------------------------------------------------------------
def train(rows: int, steps: int) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_scaling import tiled

    from synth_pipeline.config import ModelConfig
    from synth_pipeline.synthesizer import Synthesizer

    t = time.perf_counter()
    df, schema = tiled(rows)
    data_s = time.perf_counter() - t
    data_mb = _peak_mb()
    cfg = ModelConfig.from_preset("fast", {"seed": SEED, "progress": False, "vae_steps": steps,
                                           "diffusion_steps": steps, "static_steps": max(1, steps // 2)})
    t = time.perf_counter()
    Synthesizer(schema, cfg).fit(df)
    return {"rows": len(df), "sequences": len(df) // WINDOW, "steps": steps, "data_seconds": data_s,
            "fit_seconds": time.perf_counter() - t, "peak_rss_after_data_mb": data_mb, "peak_rss_mb": _peak_mb()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="release,audit,train")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--audit-synthetic", type=int, default=1_000_000)
    ap.add_argument("--audit-reference", type=int, default=100_000)
    ap.add_argument("--train-rows", type=int, default=10_000_000)
    ap.add_argument("--train-steps", type=int, default=50)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, *rest = a.child
        if kind == "fit":
            rec = train_small_model(Path(rest[0]))
        elif kind == "shard":
            rec = one_shard(Path(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]), Path(rest[4]))
        elif kind == "audit":
            rec = audit(int(rest[0]), int(rest[1]))
        else:
            rec = train(int(rest[0]), int(rest[1]))
        print(json.dumps(rec, default=float))
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    doc = json.loads(a.out.read_text()) if a.out.exists() else {}
    doc.update({"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
                "load_avg_at_start": os.getloadavg()})
    parts = a.parts.split(",")

    def save() -> None:  # after every part: a long run that is stopped keeps what it measured
        doc["load_avg_now"] = os.getloadavg()
        a.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = a.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2, default=float))
        os.replace(tmp, a.out)

    if "release" in parts:
        doc["release"] = r = release(a.rows, a.shards, a.parallel)
        print(f"[scale] release: {r['rows']} rows in {r['shards']} shards ({r['parallel']} at a time) in "
              f"{r['wall_seconds']:.0f}s, {r['sequences_per_second']:.0f} sequences/s, max shard RSS "
              f"{r['max_shard_peak_rss_mb']:.0f} MB; read back {r['rows_read_back']} rows", flush=True)
        save()
    if "audit" in parts:
        doc["audit"] = r = _child(["--child", "audit", str(a.audit_synthetic), str(a.audit_reference)])
        print(f"[scale] audit {r['synthetic']} x {r['reference']}: DCR {r['dcr_seconds']:.0f}s, membership "
              f"{r['membership_seconds']:.0f}s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        save()
    if "train" in parts:
        doc["train"] = r = _child(["--child", "train", str(a.train_rows), str(a.train_steps)])
        print(f"[scale] training on {r['rows']} rows ({r['steps']} steps per component): fit {r['fit_seconds']:.0f}s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    save()
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
