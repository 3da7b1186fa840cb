"""Differential privacy's cost (issue 20 item 5): fidelity (discriminative, temporal, marginals),
DCR share and training time at epsilon in {1, 3, 10} against the same model without DP, on three
shared datasets, with the data preparation, split and audit of ``bench_peers.py``.

Every arm trains the same plan (``--overrides``, default a shortened fast preset: DP-SGD steps cost
~10x plain ones on CPU, Opacus' DPGRU being a Python loop over time steps) so the columns differ by
DP alone. Each fit runs in its own process. Results: ``benchmarks/results/dp.json`` and the table
in ``benchmarks/README.md`` ("Differential privacy").

    .venv/bin/python benchmarks/bench_dp.py                       # nasdaq100, pollution, metro_traffic
    .venv/bin/python benchmarks/bench_dp.py --datasets pollution --epsilons 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_peers as peers  # noqa: E402 - prepare(), audit(), machine(): one harness for both tables
from _shared import cell  # noqa: E402

RESULTS = peers.ROOT / "benchmarks" / "results" / "dp.json"
README = peers.ROOT / "benchmarks" / "README.md"
PLAN = {"budget": "fixed", "vae_steps": 300, "diffusion_steps": 600, "static_steps": 150, "refine": "none"}
EPSILONS = (10.0, 3.0, 1.0)


def run_one(work: Path, out: Path, overrides: dict[str, Any]) -> None:
    """Child process: fit with ``overrides``, sample as many entities as train, write the result."""
    import pandas as pd

    from synth_pipeline.config import ModelConfig
    from synth_pipeline.schema import DatasetSchema
    from synth_pipeline.synthesizer import Synthesizer

    meta = json.loads((work / "meta.json").read_text())
    schema = DatasetSchema.from_yaml(work / "schema.yaml")
    train = pd.read_parquet(work / "train.parquet")
    cfg = ModelConfig.from_preset("fast", {"seed": peers.SEED, "progress": False, **overrides})
    t0 = time.perf_counter()
    syn = Synthesizer(schema, cfg).fit(train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    synthetic = syn.sample(meta["n_synthetic"], seed=peers.SEED + 1)
    sample_s = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    synthetic.to_parquet(out / "synthetic.parquet", index=False)
    (out / "result.json").write_text(json.dumps({
        "fit_seconds": fit_s, "sample_seconds": sample_s, "steps": syn.model.budget,
        "dp": syn.model.dp_report,
    }))


def arm(ds: str, label: str, overrides: dict[str, Any], timeout: int) -> dict[str, Any]:
    work = peers.WORK / ds
    out = work / f"dp-{label}"
    cmd = [sys.executable, __file__, "--run-one", json.dumps(overrides), "--work", str(work), "--out", str(out)]
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout}s"}
    if res.returncode != 0 or not (out / "result.json").exists():
        return {"error": " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])}
    row = json.loads((out / "result.json").read_text())
    row.update(wall_seconds=time.perf_counter() - t0, load_avg_1m=[round(load0, 2), round(os.getloadavg()[0], 2)])
    row.update(peers.audit(work, out / "synthetic.parquet"))
    return row


def markdown(doc: dict[str, Any]) -> str:
    lines = ["| dataset | arm | epsilon spent | noise mult. | discriminative | temporal | marginals | DCR share "
             "[95% CI] | fit s |", "|---|---|---|---|---|---|---|---|---|"]
    for ds, entry in doc["datasets"].items():
        if "skipped" in entry:
            lines.append(f"| {ds} | skipped: {entry['skipped']} | | | | | | | |")
            continue
        fl = entry["floor"]
        lines.append(f"| {ds} | holdout floor | | | {cell(fl['discriminative'])} | {cell(fl['temporal_discriminative'])} "
                     f"| {cell(fl['marginals'])} | {cell(fl['dcr_share'])} | |")
        for label, r in entry["arms"].items():
            if "error" in r:  # the exception's message (a refused budget names what the noise swamped)
                msg = r["error"].rsplit("Error: ", 1)[-1]
                lines.append(f"| {ds} | {label} | refused: {msg[:120]} | | | | | | |")
                continue
            dp = r.get("dp") or {}
            ci = r["dcr_ci"]
            lines.append(
                f"| {ds} | {label} | {cell(dp.get('epsilon'), '{:.2f}')} | {cell(dp.get('noise_multiplier'), '{:.2f}')} "
                f"| {cell(r['discriminative'])} | {cell(r['temporal_discriminative'])} | {cell(r['marginals'])} "
                f"| {r['dcr_share']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}] | {r['fit_seconds']:.0f} |")
    return "\n".join(lines)


def write_readme(doc: dict[str, Any]) -> None:
    start, end = "<!-- dp-table:start -->", "<!-- dp-table:end -->"
    text = README.read_text()
    if start not in text:
        return
    head, rest = text.split(start, 1)
    README.write_text(head + start + "\n" + markdown(doc) + "\n" + end + rest.split(end, 1)[1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["nasdaq100", "pollution", "metro_traffic"],
                    choices=list(peers.DATASETS))
    ap.add_argument("--epsilons", nargs="+", type=float, default=list(EPSILONS))
    ap.add_argument("--overrides", default=json.dumps(PLAN), help="model overrides shared by every arm (JSON)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per fit")
    ap.add_argument("--run-one", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run_one:
        run_one(Path(a.work), Path(a.out), json.loads(a.run_one))
        return 0
    plan = json.loads(a.overrides)
    doc = {"machine": peers.machine(), "plan": plan, "datasets": {}}
    if RESULTS.exists():
        doc["datasets"] = json.loads(RESULTS.read_text()).get("datasets", {})
    for ds in a.datasets:
        src = peers.SHARED / peers.DATASETS[ds]["file"]
        if not src.exists():
            print(f"[bench_dp] skip {ds}: {src} not found (the shared data folder is not beside the project)")
            doc["datasets"][ds] = {"skipped": f"{src} not found"}
            continue
        meta = peers.prepare(ds)
        entry = {"meta": meta, "floor": peers.audit(peers.WORK / ds, None), "arms": {}}
        doc["datasets"][ds] = entry
        arms = [("no DP", plan)] + [(f"epsilon {e:g}", {**plan, "privacy": {"epsilon": e}}) for e in a.epsilons]
        for label, overrides in arms:
            r = arm(ds, label.replace(" ", "_"), overrides, a.timeout)
            entry["arms"][label] = r
            print(f"[bench_dp] {ds} {label}: " + (r["error"] if "error" in r else
                  f"eps {((r.get('dp') or {}).get('epsilon'))} discr {r['discriminative']:.3f} temporal "
                  f"{r['temporal_discriminative']:.3f} marginals {r['marginals']:.3f} DCR {r['dcr_share']:.3f} "
                  f"fit {r['fit_seconds']:.0f}s"), flush=True)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            tmp = RESULTS.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, indent=2, default=str))
            os.replace(tmp, RESULTS)
    write_readme(doc)
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
