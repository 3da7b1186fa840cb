"""Privacy by design, the acceptance test: canaries planted in a real panel never leave the
training boundary.

Planted in training entities of the shipped nasdaq100 panel:
- a static numeric column with a unique value per entity, one of them an extreme;
- a static level held by one entity (Sector);
- a time-varying level held by one entity (a new ``Regime`` column);
- one extreme time-varying value (Volume);
- a unique start date (one entity gets extra rows a month before everyone else).

Then a whole release runs (train -> generate -> evaluate -> publish) against a real MLflow server,
and no canary may appear in the model directory, any MLflow artifact / param / tag (run and
registered version), the release (data, report, manifest), the captured logs or the synthetic
output; the static-numeric exact-match rate stays within what the holdout itself matches.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _release_setup import DATA, PASS_GATE, TINY, write_config

from synth_pipeline import release as rel
from synth_pipeline.pipeline import run_release
from synth_pipeline.schema import infer_schema
from synth_pipeline.split import split_sequences

EXTREME_STATIC = 987654321.125
EXTREME_VOLUME = 98765432123
RARE_SECTOR = "CanarySectorZebra"
RARE_REGIME = "CanaryRegimeQuokka"
EARLY_START = pd.Timestamp("2018-11-05")
TEXT_CANARIES = [
    "987654321.125", "9.87654321125e+08", "987654321",  # the static extreme, in any rendering
    "98765432123", "9.8765432123e+10",  # the time-varying extreme
    RARE_SECTOR, RARE_REGIME,
    "2018-11-05", "11/5/2018", "11/05/2018", str(EARLY_START.value), str(EARLY_START.value // 10**9),
]


def _planted(workspace: Path):
    """The canary panel, its inferred schema (as `schema infer` would pin it) and the train/holdout
    entities (the split is by entity key, so planting values does not move it)."""
    df = pd.read_csv(DATA)
    df["date"] = pd.to_datetime(df["date"], format="%m/%d/%Y")
    schema = infer_schema(df, time_index="date", entity_key="Symbol", name="canaries")
    train, hold = split_sequences(df, schema, 0.25, 0)
    tr_ids = sorted(train["Symbol"].unique())
    rng = np.random.default_rng(5)
    ids = df["Symbol"].unique()
    # a unique static value per entity (5 decimals: real-looking, never produced by chance)
    uniq = dict(zip(ids, np.round(rng.uniform(1_000, 50_000, len(ids)), 5), strict=True))
    uniq[tr_ids[0]] = EXTREME_STATIC
    df["Canary"] = df["Symbol"].map(uniq)
    df.loc[df["Symbol"] == tr_ids[1], "Sector"] = RARE_SECTOR
    df["Regime"] = np.where(df["Volume"] > df["Volume"].median(), "busy", "calm")
    df.loc[(df["Symbol"] == tr_ids[2]) & (df.groupby("Symbol").cumcount() % 3 == 0), "Regime"] = RARE_REGIME
    vol_row = df.index[df["Symbol"] == tr_ids[3]][50]
    df.loc[vol_row, "Volume"] = EXTREME_VOLUME
    early = df[df["Symbol"] == tr_ids[4]].head(20).copy()
    early["date"] = pd.bdate_range(EARLY_START, periods=20)
    df = pd.concat([early, df], ignore_index=True).sort_values(["Symbol", "date"], kind="stable")
    df["date"] = df["date"].dt.strftime("%Y-%m-%d")
    schema = infer_schema(df, time_index="date", entity_key="Symbol", name="canaries")
    path = workspace / "canaries.csv"
    df.to_csv(path, index=False)
    schema.to_yaml(workspace / "canaries.schema.yaml")
    return path, df, set(tr_ids), set(hold["Symbol"].unique())


def _all_text(folder: Path) -> dict[str, bytes]:
    return {p.as_posix(): p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}


def _found(blobs: dict[str, bytes]) -> list[tuple[str, str]]:
    hits = []
    for name, data in blobs.items():
        for c in TEXT_CANARIES:
            if c.encode() in data:
                hits.append((name, c))
    return hits


@pytest.mark.slow  # a whole release (~2 min): `make test-all`; fast variants of each canary's protection:
# tests/test_transformers.py (knots, ranges, rare levels, start bins, the model directory's encoder)
def test_no_canary_leaves_the_training_boundary(mlflow_server, tmp_path, one_thread, caplog, capfd):
    import mlflow
    from mlflow import MlflowClient

    caplog.set_level(logging.DEBUG)
    src, real, train_ids, hold_ids = _planted(tmp_path)
    cfg_path = write_config(
        tmp_path, mlflow_server, PASS_GATE, name="canaries.yaml", dataset="canaries",
        sources={"events": str(src)}, schema="canaries.schema.yaml", generate={"n_sequences": 400},
        model={"preset": "fast", "overrides": {**TINY, "vae_steps": 150, "diffusion_steps": 150, "static_steps": 150}},
    )
    said: list[str] = []
    res = run_release(cfg_path, "2024-06-01", progress=said.append)
    assert res.status == "published"

    blobs: dict[str, bytes] = {}
    # the release: data, report, manifest
    blobs.update(_all_text(res.release_path))
    data = rel.read_release(res.release_path)
    # MLflow: every artifact of the run, the registered model's files, params and tags
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    try:
        run_art = mlflow.artifacts.download_artifacts(run_id=res.run_id, dst_path=str(tmp_path / "run_art"))
        model_art = mlflow.artifacts.download_artifacts(res.model_uri, dst_path=str(tmp_path / "model_art"))
    finally:
        mlflow.set_tracking_uri(None)
    blobs.update(_all_text(Path(run_art)))
    blobs.update(_all_text(Path(model_art)))
    assert any(k.endswith("encoder.json") for k in blobs), "the model directory was not downloaded"
    run = client.get_run(res.run_id)
    mv = client.get_model_version(res.model_name, res.model_version)
    meta = {**run.data.params, **run.data.tags, **mv.tags}
    blobs["mlflow:params+tags"] = "\n".join(f"{k}={v}" for k, v in meta.items()).encode()
    blobs["mlflow:metric names"] = "\n".join(run.data.metrics).encode()
    # logs and progress lines
    out, err = capfd.readouterr()
    blobs["logs"] = "\n".join([caplog.text, out, err, *said]).encode()

    problems = [f"{Path(name).name if '/' in name else name}: {c}" for name, c in _found(blobs)]

    # the synthetic output, by value
    if RARE_SECTOR in set(data["Sector"].astype(str)):
        problems.append("output: the one-entity Sector level")
    if RARE_REGIME in set(data["Regime"].astype(str)):
        problems.append("output: the one-entity Regime level")
    if np.isclose(data["Canary"].to_numpy(float), EXTREME_STATIC).any():
        problems.append("output: the static extreme")
    if data["Canary"].max() >= real.loc[real["Canary"] < EXTREME_STATIC, "Canary"].max() * 1.01:
        problems.append(f"output: static values beyond the second-largest real one ({data['Canary'].max()})")
    if (data["Volume"] >= EXTREME_VOLUME / 10).any():
        problems.append("output: the time-varying extreme")
    if pd.to_datetime(data["date"]).min() <= EARLY_START + pd.Timedelta(days=28):
        problems.append("output: the unique early start")
    # static numeric values are not re-emitted real values (beyond what the holdout itself matches)
    per_entity = real.groupby("Symbol")["Canary"].first()
    train_vals = per_entity[per_entity.index.isin(train_ids)].to_numpy()
    syn_vals = data.groupby("Symbol")["Canary"].first().to_numpy()
    syn_rate = np.isin(syn_vals, train_vals).mean()
    hold_rate = np.isin(per_entity[per_entity.index.isin(hold_ids)].to_numpy(), train_vals).mean()
    if syn_rate > hold_rate + 0.01:
        problems.append(f"output: {syn_rate:.1%} of synthetic static values are real training values "
                        f"(holdout: {hold_rate:.1%})")
    assert not problems, "canaries leaked:\n" + "\n".join(sorted(set(problems)))
