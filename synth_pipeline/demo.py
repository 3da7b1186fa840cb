"""``make demo``: the shipped nasdaq100 panel end to end (ingest -> validate -> split -> train ->
generate), with everything written under one work directory."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from synth_pipeline.config import ModelConfig
from synth_pipeline.ingest import load_dataset
from synth_pipeline.io_utils import atomic_write
from synth_pipeline.schema import DatasetSchema
from synth_pipeline.split import split_frame
from synth_pipeline.synthesizer import Synthesizer


def shipped_path(kind: str, name: str) -> Path:
    """Path of a file shipped inside the package (``data/`` or ``configs/``)."""
    return Path(str(resources.files("synth_pipeline") / kind / name))


def run_demo(workdir: str | Path = ".demo", preset: str = "fast", seed: int = 0) -> int:
    from synth_pipeline.validate import validate

    workdir = Path(workdir).resolve()
    schema = DatasetSchema.from_yaml(shipped_path("configs", "nasdaq100.schema.yaml"))
    t0 = time.perf_counter()
    df = load_dataset(shipped_path("data", "nasdaq100_2019.csv"), schema)
    report = validate(df, schema)
    print(f"[demo] ingested {len(df)} rows, {df[schema.entity_key].nunique()} entities; "
          f"validation {report.statistics.get('successful_expectations')}/{report.statistics.get('evaluated_expectations')} passed")
    train, holdout = split_frame(df, schema.entity_key, holdout_fraction=0.2, seed=seed)
    print(f"[demo] split by entity: {train[schema.entity_key].nunique()} train, "
          f"{holdout[schema.entity_key].nunique()} holdout entities")
    cfg = ModelConfig.from_preset(preset, {"seed": seed})
    syn = Synthesizer(schema, cfg).fit(train)
    model_dir = syn.save(workdir / "model")
    print(f"[demo] trained ({preset} preset) in {syn.fit_seconds:.0f}s -> {model_dir}")
    n = int(train[schema.entity_key].nunique())
    t1 = time.perf_counter()
    out = syn.sample(n, seed=seed)
    out_path = atomic_write(workdir / "synthetic.parquet", lambda p: out.to_parquet(p, index=False))
    print(f"[demo] generated {n} synthetic entities ({len(out)} rows) in {time.perf_counter() - t1:.1f}s -> {out_path}")
    print(f"[demo] done in {time.perf_counter() - t0:.0f}s")
    return 0
