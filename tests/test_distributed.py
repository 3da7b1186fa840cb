"""Data-parallel training on torch.distributed: 2 gloo processes on CPU, as ``torchrun`` starts them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import pick_free_port

from synth_pipeline.config import ModelConfig
from synth_pipeline.ingest import coerce, read_source
from synth_pipeline.schema import DatasetSchema
from synth_pipeline.synthesizer import Synthesizer

REPO = Path(__file__).resolve().parents[1]
STEPS = {"vae_steps": 60, "diffusion_steps": 60, "static_steps": 10, "budget": "fixed", "progress": False,
         "seed": 3, "threads": 1, "eval_every": 10}


def _data(shared: Path):
    schema = DatasetSchema.from_yaml(REPO / "synth_pipeline" / "configs" / "pollution.schema.yaml")
    df = coerce(read_source(shared / "pollution_data.csv"), schema).iloc[: 24 * 120].reset_index(drop=True)
    return df, schema


def _worker(rank: int, world: int, port: int, shared: str, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    df, schema = _data(Path(shared))
    syn = Synthesizer(schema, ModelConfig.from_preset("fast", {**STEPS, "distributed": True})).fit(df)
    model = syn.model
    flat = torch.cat([p.detach().reshape(-1) for p in model.vae.parameters()]).numpy()
    np.save(Path(out) / f"vae-{rank}.npy", flat)
    losses = [r["vae/loss"] for r in model.history if "vae/loss" in r]
    rec = {"rank": rank, "world": model.world, "shard": [int(i) for i in model.train_shard], "vae_loss": losses}
    if rank == 0:
        sample = syn.sample(5, seed=1)
        rec["sample_rows"] = len(sample)
        rec["sample_columns"] = sorted(sample.columns)
    (Path(out) / f"rank-{rank}.json").write_text(json.dumps(rec))
    dist.barrier()
    dist.destroy_process_group()



@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed gloo missing")
def test_two_gloo_ranks_share_data_average_gradients_and_sample(shared_data, tmp_path):
    mp.spawn(_worker, args=(2, pick_free_port(), str(shared_data), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank-{i}.json").read_text()) for i in range(2))
    assert r0["world"] == r1["world"] == 2
    # each rank trains on its own half of the training entities: disjoint, together all of them
    s0, s1 = set(r0["shard"]), set(r1["shard"])
    assert s0 and s1 and not (s0 & s1) and abs(len(s0) - len(s1)) <= 1
    # averaged gradients keep the replicas identical
    np.testing.assert_array_equal(np.load(tmp_path / "vae-0.npy"), np.load(tmp_path / "vae-1.npy"))
    # the loss goes down and the trained model samples
    for r in (r0, r1):
        assert r["vae_loss"][-1] < r["vae_loss"][0]
    assert r0["sample_rows"] == 5 * 24
    df, schema = _data(shared_data)
    assert set(df.columns) <= set(r0["sample_columns"])
    # a single process with the switch on and no process group trains as before
    one = Synthesizer(schema, ModelConfig.from_preset("fast", {**STEPS, "distributed": True,
                                                                "vae_steps": 5, "diffusion_steps": 5})).fit(df)
    assert one.model.world == 1


@pytest.mark.slow
def test_cli_train_under_torchrun_writes_one_model_from_rank_0(shared_data, tmp_path):
    """The README recipe: ``torchrun --nproc_per_node 2 -m synth_pipeline.cli train ...`` (gloo on CPU)."""
    import subprocess
    import sys

    data = tmp_path / "pollution.csv"  # the raw CSV's first 120 days, as the schema expects them
    data.write_text("".join((shared_data / "pollution_data.csv").read_text().splitlines(keepends=True)[: 1 + 24 * 120]))
    out = tmp_path / "model"
    sets = [x for k, v in STEPS.items() if k not in ("progress",) for x in ("--set", f"model.{k}={v}")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "synth_pipeline.cli", "train", str(data), "--schema",
           str(REPO / "synth_pipeline" / "configs" / "pollution.schema.yaml"), "--out", str(out),
           "--skip-validation", "--set", "model.distributed=true", *sets]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("model written to") == 1  # rank 0 only
    syn = Synthesizer.load(out)
    assert len(syn.sample(3, seed=0)) == 3 * 24


@pytest.mark.slow
def test_release_train_stage_launches_torchrun_ranks(mlflow_server, tmp_path):
    """``model.distributed`` + ``model.processes: 2``: the release's own train stage trains in 2 gloo
    ranks under torch.distributed.run, then registers, generates, audits and publishes as usual."""
    import yaml
    from _release_setup import PASS_GATE, TINY, write_config

    from synth_pipeline import release as rel
    from synth_pipeline.pipeline import run_release

    # its own dataset name: the MLflow server is shared by the session, and other tests count the
    # versions of nasdaq100-synthesizer
    cfg = write_config(tmp_path, mlflow_server, PASS_GATE, dataset="nasdaq100_ddp")
    doc = yaml.safe_load(cfg.read_text())
    doc["model"]["overrides"] = {**TINY, "distributed": True, "processes": 2, "threads": 1}
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    lines: list[str] = []
    res = run_release(cfg, "2024-06-03", progress=lines.append)
    assert "training in 2 data-parallel ranks under torch.distributed.run" in lines
    assert res.status == "published"
    assert rel.read_release(res.release_path)["Symbol"].nunique() == 60
