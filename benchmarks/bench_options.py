"""Issue 7's seed methods, each on and off on the same data, seed, split and training budget.

    python benchmarks/bench_options.py [--experiments pollution24 ...] [--runs base l2d] [--seed 1] [--smoke]
    python benchmarks/bench_options.py --markdown      # the table for benchmarks/README.md

Experiments (each a long shared series cut into non-overlapping windows, each window an entity,
one entity-level 80/20 split, seed 0; the fast preset's budget for every run):

- ``pollution24``: 24-step windows of pollution_data.csv: base (the VAE objective) vs
  ``objective=psld`` vs ``refine=l2d``;
- ``etth1-256`` / ``etth1-512``: 256- and 512-step windows of etth1.csv: base (one denoiser over
  all steps) vs ``long=stagediff`` (Stage-Diff, 64-step stages); ``pollution-256``: the same on
  256-step windows of pollution_data.csv (171 windows: etth1's 34 windows of 512 steps leave only 7
  to audit).

Every synthetic table (as many sequences as train has) is audited by ``synth_pipeline.evaluation
.evaluate`` (discriminative, temporal discriminative, predictive, DCR share); the holdout audited as
if it were synthetic gives the floor. Also recorded: fit and sample seconds, the decoder's latent
dependency (``Synthesizer.dependency``) and, for long windows, how much larger the step-to-step
change is across 64-step stage boundaries than elsewhere (1 = no seam). Everything runs in this
process at one torch thread; the machine is shared, so timings are contended (the load average at
the start and end of each run is recorded). Writes ``benchmarks/results/options.json`` (merged per
experiment, so a partial run can be resumed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from _shared import audit_cells, cell, fit_and_sample, windowed

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "options.json"
HOLDOUT, SEED, SPLIT_SEED, STAGE = 0.2, 0, 0, 64

OFF = {"refine": "none"}  # the fast preset refines (refine=auto) since 2026-11-30; "base" is without
STAGEDIFF_ON = {**OFF, "long": "stagediff", "stage_length": STAGE}
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "pollution24": dict(file="pollution_data.csv", window=24, runs={
        "base": OFF, "psld": {**OFF, "objective": "psld"}, "l2d": {"refine": "l2d"}}),
    "etth1-256": dict(file="etth1.csv", window=256, runs={"base": OFF, "stagediff": STAGEDIFF_ON}),
    "etth1-512": dict(file="etth1.csv", window=512, runs={"base": OFF, "stagediff": STAGEDIFF_ON}),
    # etth1 has only 34 windows of 512 steps (7 held out): too few to audit; pollution has 171 of 256
    "pollution-256": dict(file="pollution_data.csv", window=256, runs={"base": OFF, "stagediff": STAGEDIFF_ON}),
}
SMOKE = {"vae_steps": 40, "diffusion_steps": 40, "static_steps": 10}


def windows(file: str, window: int):  # noqa: ANN201 - (train, holdout, schema)
    """Non-overlapping windows of a long series, each an entity; entity split 80/20 (seed 0)."""
    from synth_pipeline.ingest import read_source
    from synth_pipeline.split import split_sequences

    df, schema = windowed(read_source(SHARED / file), "date", window, f"{Path(file).stem}-{window}")
    train, holdout = split_sequences(df, schema, HOLDOUT, SPLIT_SEED)
    return train, holdout, schema


def seam_ratio(df, schema, train) -> float | None:  # noqa: ANN001 - pandas frames
    """Mean |x[t+1] - x[t]| across 64-step boundaries over the mean elsewhere (numerics scaled by
    train's spread); about 1 for real data, above 1 where stages are stitched with a jump."""
    import numpy as np

    key = schema.entity_key
    from synth_pipeline.schema import NUMERIC_KINDS

    num = [c.name for c in schema.modelled if c.kind in NUMERIC_KINDS and not c.static and c.name in df.columns]
    if not num:
        return None
    df = df.sort_values([key, schema.time_index])
    x = df[num].to_numpy(float) / train[num].std().to_numpy(float)
    pos = df.groupby(key, sort=False).cumcount().to_numpy()
    d = np.abs(np.diff(x, axis=0))
    same = pos[1:] > 0  # both rows in one sequence
    boundary = same & (pos[1:] % STAGE == 0)
    inner = same & ~boundary
    if not boundary.any():
        return None
    return float(np.nanmean(d[boundary]) / np.nanmean(d[inner]))


def audit(train, holdout, synthetic, schema, seed: int = SEED) -> dict[str, Any]:  # noqa: ANN001
    from synth_pipeline.evaluation import evaluate
    from synth_pipeline.evaluation.gate import GateConfig

    ev = evaluate(train, holdout, synthetic, schema, GateConfig(min_sequences=10), seed=seed)
    fid = {k: m.value for k, m in ev.metrics.items()}
    d = ev.privacy["dcr"]
    return {
        "discriminative": fid.get("discriminative"), "temporal_discriminative": fid.get("temporal_discriminative"),
        "predictive": fid.get("predictive"), "marginals": fid.get("marginals"), "correlation": fid.get("correlation"),
        "autocorrelation": fid.get("autocorrelation"), "dcr_share": d["share"], "dcr_ci": [d["ci_low"], d["ci_high"]],
        "exact_copies": ev.privacy["exact_copies"]["count"],
    }


def run_one(name: str, overrides: dict[str, Any], train, holdout, schema, smoke: bool,  # noqa: ANN001
            seed: int = SEED) -> dict[str, Any]:
    import torch

    from synth_pipeline.config import ModelConfig

    load0 = os.getloadavg()[0]
    cfg = ModelConfig.from_preset("fast", {"seed": seed, "progress": False, **(SMOKE if smoke else {}), **overrides})
    syn, synthetic, fit_s, sample_s = fit_and_sample(schema, cfg, train, seed)
    n = int(train[schema.entity_key].nunique())
    dep = syn.dependency(n=32, seed=seed + 2, max_steps=128).summary()
    row = {"run": name, "seed": seed, "overrides": overrides, "fit_seconds": round(fit_s, 1), "sample_seconds": round(sample_s, 2),
           "n_synthetic": n, "latent_dependency": round(dep["latent_dependency"], 4),
           "context_dependency": round(dep["context_dependency"], 4), **audit(train, holdout, synthetic, schema, seed),
           "seam_ratio": seam_ratio(synthetic, schema, train), "torch_threads": torch.get_num_threads(),
           "load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)], "commit": _commit()}
    return row


def _commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    ap.add_argument("--runs", nargs="+", help="only these runs of each experiment (e.g. base psld)")
    ap.add_argument("--smoke", action="store_true", help="tiny budgets: checks the harness, numbers meaningless")
    ap.add_argument("--markdown", action="store_true", help="print the README table from the results file")
    ap.add_argument("--seed", type=int, default=SEED, help="model, sampling and audit seed (the split stays seed 0)")
    a = ap.parse_args()
    if a.markdown:
        print(markdown(json.loads(RESULTS.read_text())))
        return 0
    import torch

    torch.set_num_threads(1)
    out = RESULTS.with_suffix(".smoke.json") if a.smoke else RESULTS
    doc = json.loads(out.read_text()) if out.exists() else {"experiments": {}}
    doc["machine"] = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                      "processor": platform.processor(), "note": "shared machine: timings are contended"}
    for exp in a.experiments:
        spec = EXPERIMENTS[exp]
        if not (SHARED / spec["file"]).exists():
            doc["experiments"][exp] = {"skipped": f"{SHARED / spec['file']} not found"}
            print(f"skip {exp}: {SHARED / spec['file']} not found")
            continue
        train, holdout, schema = windows(spec["file"], spec["window"])
        entry = doc["experiments"].setdefault(exp, {"runs": {}})
        entry.update(window=spec["window"], train_sequences=int(train["window"].nunique()),
                     holdout_sequences=int(holdout["window"].nunique()))
        if "floor" not in entry:
            entry["floor"] = {**audit(train, holdout, holdout, schema), "seam_ratio": seam_ratio(holdout, schema, train)}
        for name, over in spec["runs"].items():
            if a.runs and name not in a.runs:
                continue
            key = name if a.seed == SEED else f"{name} (seed {a.seed})"
            try:
                row = run_one(name, over, train, holdout, schema, a.smoke, a.seed)
            except Exception as e:  # noqa: BLE001 - one failed run must not lose the others
                row = {"run": name, "overrides": over, "error": f"{type(e).__name__}: {e}"}
            entry["runs"][key] = row
            print(json.dumps({"experiment": exp, **row}), flush=True)
            doc["updated"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(doc, indent=2))
            os.replace(tmp, out)
    print(markdown(doc))
    print(f"wrote {out}")
    return 0


def _f(v: Any, nd: int = 3) -> str:
    return cell(v, f"{{:.{nd}f}}", missing="")


def markdown(doc: dict[str, Any]) -> str:
    lines = ["| experiment | run | discr. ↓ | temporal ↓ | predictive ↓ | DCR share (95% CI) | latent dep. | seam | fit s | sample s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for exp, e in doc["experiments"].items():
        if "skipped" in e:
            lines.append(f"| {exp} | skipped: {e['skipped']} | | | | | | | | |")
            continue
        fl = e.get("floor", {})
        lines.append(f"| {exp} ({e['train_sequences']} train / {e['holdout_sequences']} holdout) | *holdout (floor)* | "
                     f"{_f(fl.get('discriminative'))} | {_f(fl.get('temporal_discriminative'))} | "
                     f"{_f(fl.get('predictive'))} | | | {_f(fl.get('seam_ratio'), 2)} | | |")
        for name, r in e["runs"].items():
            if "error" in r:
                lines.append(f"| {exp} | {name} | error: {r['error']} | | | | | | | |")
                continue
            lines.append(f"| {exp} | {name} | {audit_cells(r)} | {_f(r['latent_dependency'])} | "
                         f"{_f(r['seam_ratio'], 2)} | {r['fit_seconds']:.0f} | {r['sample_seconds']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
