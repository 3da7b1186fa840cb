"""MOSTLY AI engine (TabularARGN) on one benchmark job (runs in benchmarks/.peers/mostly, never
imported by the package). The engine's two-table setup: a flat model for the entity table (key +
static columns) generates the synthetic entities, then the sequential model generates each
entity's rows given its context. Training time per model is capped by ``--max-minutes``."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import torch
from _common import Clock, load_job, parse_args, peak_rss_mb, write_result


def train_model(ws: Path, max_minutes: float, **split_kw) -> None:
    from mostlyai import engine

    engine.split(workspace_dir=ws, **split_kw)
    engine.analyze(workspace_dir=ws)
    engine.encode(workspace_dir=ws)
    engine.train(workspace_dir=ws, max_training_time=max_minutes, device="cpu")


def generate(ws: Path, n: int | None = None, ctx: pd.DataFrame | None = None) -> pd.DataFrame:
    from mostlyai import engine

    engine.generate(workspace_dir=ws, sample_size=n, ctx_data=ctx, device="cpu")
    return pd.concat([pd.read_parquet(p) for p in sorted((ws / "SyntheticData").glob("*.parquet"))],
                     ignore_index=True)


def main() -> None:
    a = parse_args({"max_minutes": 10.0, "seed": 0})
    torch.manual_seed(a.seed)
    logging.getLogger().setLevel(logging.WARNING)
    train, meta = load_job(a.work)
    key, n = meta["entity_key"], meta["n_synthetic"]
    ctx = train[[key, *meta["static"]]].drop_duplicates(key).reset_index(drop=True)
    tgt = train.drop(columns=meta["static"])
    tmp = Path(tempfile.mkdtemp(prefix="mostly-"))
    try:
        clock = Clock()
        train_model(tmp / "ctx", a.max_minutes, tgt_data=ctx, tgt_primary_key=key, model_type="TABULAR")
        train_model(tmp / "tgt", a.max_minutes, tgt_data=tgt, ctx_data=ctx, tgt_context_key=key,
                    ctx_primary_key=key, model_type="TABULAR")
        fit_s = clock.lap()
        syn_ctx = generate(tmp / "ctx", n=n)
        syn_tgt = generate(tmp / "tgt", ctx=syn_ctx)
        out = syn_tgt.merge(syn_ctx, on=key, how="left")[list(train.columns)]
        sample_s = clock.lap()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_result(a.out, out, {"synthesizer": "mostlyai-engine", "fit_seconds": fit_s, "sample_seconds": sample_s,
                              "peak_rss_mb": peak_rss_mb(), "settings": {"max_training_minutes": a.max_minutes},
                              "torch_threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
