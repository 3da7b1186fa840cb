"""Where a preset's fidelity goes (issue 16 item 3): fit one model per arm (a preset + overrides) on
bench_peers' split of a dataset, sample as many sequences as train has, and audit it with
bench_peers' ``audit`` (our ``evaluate``). Beside the scores, per column:

- numerics: mean |step-to-step change|, synthetic / real (1 = as rough as the data; > 1 jitter);
- time-varying categoricals: the share of steps whose level differs from the previous step,
  synthetic / real (> 1: levels flip more often than they do in the data);

and the VAE's ceiling: the real training sequences encoded to their posterior means and decoded
(argmax levels), audited the same way. A ceiling above the gate's threshold means the autoencoder,
not the prior, is the bottleneck.

    python benchmarks/bench_ablation.py --dataset pollution --arm fast '{}' --arm deeper '{"denoiser_layers": 2}'
    python benchmarks/bench_ablation.py --dataset pollution --attribute benchmarks/.work/ablation/pollution-fast.parquet

``--attribute``: the temporal and plain discriminative scores of one synthetic table on each column
alone (which column gives a table away). Results are appended to ``benchmarks/results/ablation.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

from _shared import append_run, run_child

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ablation.json"
WORK = ROOT / "benchmarks" / ".work"
SCORES = ("discriminative", "temporal_discriminative", "predictive", "marginals", "correlation", "dcr_share",
          "failed_checks")


def _kinds(schema: Any) -> tuple[list[str], list[str]]:
    kind = {c.name: str(c.kind).split(".")[-1].lower() for c in schema.columns if not c.static}
    return ([c for c, k in kind.items() if k in ("continuous", "integer")],
            [c for c, k in kind.items() if k in ("categorical", "binary")])


def step_changes(df: Any, schema: Any) -> dict[str, float]:
    """Per column: mean |change| (numerics) or share of level changes (categoricals) between steps."""
    num, cat = _kinds(schema)
    df = df.sort_values([schema.entity_key, schema.time_index])
    g = df.groupby(schema.entity_key, sort=False)
    out = {c: float(v) for c, v in g[num].diff().abs().mean().items()} if num else {}
    for c in cat:
        prev = g[c].shift()
        out[c] = float(((prev != df[c]) & prev.notna()).mean())
    return out


def _scores(work: Path, path: Path, real_changes: dict[str, float], schema: Any, table: Any) -> dict[str, Any]:
    from bench_peers import audit

    r = audit(work, path)
    syn = step_changes(table, schema)
    return {**{k: r[k] for k in SCORES},
            "change_ratio": {c: round(syn[c] / v, 3) if v else None for c, v in real_changes.items()}}


def run_arm(dataset: str, preset: str, overrides: dict[str, Any], label: str, seed: int) -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    import torch
    from bench_peers import prepare

    from synth_pipeline.config import ModelConfig
    from synth_pipeline.models.batch import to_batch
    from synth_pipeline.schema import DatasetSchema
    from synth_pipeline.synthesizer import Synthesizer

    work = WORK / dataset
    if not (work / "holdout.parquet").exists():
        prepare(dataset)
    schema = DatasetSchema.from_yaml(work / "schema.yaml")
    train = pd.read_parquet(work / "train.parquet")
    real = step_changes(train, schema)
    cfg = ModelConfig.from_preset(preset, {"seed": seed, "progress": False, **overrides})
    t0 = time.perf_counter()
    syn = Synthesizer(schema, cfg).fit(train)
    fit_s = time.perf_counter() - t0
    n = int(train[schema.entity_key].nunique())
    out = WORK / "ablation"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    table = syn.sample(n, seed=seed + 1)
    sample_s = time.perf_counter() - t0
    path = out / f"{dataset}-{label}-{seed}.parquet"
    table.to_parquet(path, index=False)
    row = {"dataset": dataset, "arm": label, "preset": preset, "overrides": overrides, "seed": seed,
           "fit_seconds": round(fit_s, 1), "sample_seconds": round(sample_s, 2), "steps": syn.model.budget,
           **_scores(work, path, real, schema, table)}
    # the VAE's ceiling: real sequences through encoder (posterior mean) and decoder
    enc, m = syn.encoder, syn.model
    data = enc.transform(train)
    with torch.inference_mode():
        lat = m._posterior_means(data)
        b = to_batch(data, np.arange(len(data)), m.device)
        o = m.vae.decode(lat, b.calendar, b.static, b.present)
    cards = m.dims["cat_cards"]
    cat = (torch.stack([x.argmax(-1) for x in o["cat"].split(cards, -1)], -1).numpy() if cards
           else np.zeros((*data.present.shape, 0), dtype=np.int64))
    rng = np.random.default_rng(seed)
    lengths = data.present.sum(1).astype(int)
    _, starts = enc.layout.draw(len(lengths), rng)
    recon = enc.inverse_transform(o["num"].numpy(), np.zeros_like(o["num"].numpy()), cat, data.static, lengths,
                                  starts, rng)
    rpath = out / f"{dataset}-{label}-{seed}-recon.parquet"
    recon.to_parquet(rpath, index=False)
    row["vae_ceiling"] = _scores(work, rpath, real, schema, recon)
    return row


def attribute(dataset: str, path: Path) -> dict[str, Any]:
    """Discriminative and temporal scores of ``path`` against train, one column at a time."""
    import pandas as pd

    from synth_pipeline.evaluation import evaluate
    from synth_pipeline.evaluation.gate import GateConfig
    from synth_pipeline.ingest import coerce
    from synth_pipeline.schema import DatasetSchema

    work = WORK / dataset
    schema = DatasetSchema.from_yaml(work / "schema.yaml")
    frames = [pd.read_parquet(p) for p in (work / "train.parquet", work / "holdout.parquet", path)]
    keep = {schema.entity_key, schema.time_index}
    per: dict[str, Any] = {}
    for col in [c.name for c in schema.columns if c.name not in keep]:
        one = copy.deepcopy(schema)
        one.columns = [c for c in schema.columns if c.name in keep or c.name == col]
        names = [c.name for c in one.columns]
        tr, ho, sy = (coerce(f[names], one) for f in frames)
        ev = evaluate(tr, ho, sy, one, GateConfig(min_sequences=20), seed=0)
        per[col] = {k: ev.metrics[k].value for k in ("discriminative", "temporal_discriminative")}
        print(col, per[col], flush=True)
    return {"dataset": dataset, "attribute": str(path.name), "per_column": per}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--arm", nargs=2, action="append", metavar=("LABEL", "OVERRIDES"), default=[],
                    help="an arm: its label and JSON model overrides (repeatable)")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--attribute", type=Path, help="a synthetic parquet to score column by column")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    if a.one:
        label, overrides, seed = a.one
        print(json.dumps(run_arm(a.dataset, a.preset, json.loads(overrides), label, int(seed))))
        return 0
    if a.attribute:
        row = attribute(a.dataset, a.attribute)
        append_run(RESULTS, row)
        print(json.dumps(row))
        return 0
    for label, overrides in a.arm:
        for seed in a.seeds:
            row = run_child(__file__, ["--dataset", a.dataset, "--preset", a.preset, "--one", label, overrides,
                                       str(seed)], f"{a.dataset} {label} seed {seed}", label, overrides)
            if row is not None:
                append_run(RESULTS, row)
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
