"""Data-parallel training on ``torch.distributed`` (``model.distributed: true``, under ``torchrun``).

Every rank builds the same model (weights seeded by ``model.seed``), trains on its own shard of the
training entities (``shard``: every ``world``-th one) with its own batch stream, and averages the
gradients of every step over the ranks (``data_parallel``: each training loop's step runs through
``DistributedDataParallel`` around the networks it optimises) before clipping and the optimiser step.
Weights therefore stay identical on every rank, and so do validation losses and early-stopping
decisions (the validation set is the same everywhere). NCCL on GPU, gloo on CPU. Only rank 0 should
save or log (``is_main``).

The components' training steps are closures that call several sub-networks (encoder, decoders,
denoiser, refiner); ``_Step`` holds the networks a loop optimises and runs the step as its
``forward``, which is what DistributedDataParallel needs to hook the backward pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def setup(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins the process group ``torchrun`` describes when not joined yet."""
    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def shard(idx: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's training entities: disjoint across ranks, together all of them."""
    return idx[rank::world]


class _Step(torch.nn.Module):
    """The networks one training loop optimises, with its step as ``forward`` (so DDP sees it)."""

    def __init__(self, modules: list[torch.nn.Module], train_step: Callable[[int], Any]):
        super().__init__()
        self.parts = torch.nn.ModuleList(modules)
        self.train_step = train_step

    def forward(self, step: int) -> Any:
        return self.train_step(step)


def data_parallel(train_step: Callable[[int], Any], modules: list[torch.nn.Module],
                  params: list[torch.nn.Parameter], device: torch.device) -> Callable[[int], Any]:
    """``train_step`` run through DistributedDataParallel around the modules being optimised (the
    ones holding ``params``; EMA copies stay out), so ``loss.backward()`` averages the gradients over
    the ranks. Unused parameters (a component's branch a batch does not reach) are allowed."""
    from torch.nn.parallel import DistributedDataParallel

    ids = {id(p) for p in params}
    trained = [m for m in modules if any(id(p) in ids for p in m.parameters())]
    ddp = DistributedDataParallel(_Step(trained, train_step), device_ids=[device.index] if device.type == "cuda" else None,
                                  find_unused_parameters=True, broadcast_buffers=False)
    return ddp


def fit_with_torchrun(schema: Any, train_parquet: Path, config: Any, processes: int,
                      timeout: float | None = None) -> Any:
    """Train in ``processes`` ranks under ``torch.distributed.run`` (the release's train stage with
    ``model.distributed`` and ``model.processes > 1``): rank 0 writes the model to a private temporary
    folder, which is loaded and returned (the caller saves it). The ranks read the staged training
    table; nothing else leaves the stage."""
    import json
    import subprocess
    import sys
    import tempfile

    from synth_pipeline.errors import ConfigError
    from synth_pipeline.synthesizer import Synthesizer

    with tempfile.TemporaryDirectory(prefix="synth-ddp-") as tmp:
        schema_path, cfg_path = Path(tmp) / "schema.yaml", Path(tmp) / "model.json"
        schema.to_yaml(schema_path)
        cfg_path.write_text(json.dumps(config.to_dict()))
        out = Path(tmp) / "model"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "synth_pipeline.models.distributed", str(schema_path), str(train_parquet), str(cfg_path), str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise ConfigError(f"distributed training ({processes} processes under torchrun) failed with exit code "
                              f"{res.returncode}; set model.processes to 1 to train in one process. Last output:\n"
                              + res.stderr[-2000:])
        return Synthesizer.load(out, device=config.device)


def _main(argv: list[str]) -> int:
    """One rank: ``python -m synth_pipeline.models.distributed SCHEMA TRAIN_PARQUET MODEL_JSON OUT``."""
    import json

    import pandas as pd

    from synth_pipeline.config import ModelConfig
    from synth_pipeline.ingest import coerce
    from synth_pipeline.schema import DatasetSchema
    from synth_pipeline.synthesizer import Synthesizer

    schema_path, data, cfg_path, out = argv
    schema = DatasetSchema.from_yaml(schema_path)
    cfg = ModelConfig.from_dict(json.loads(Path(cfg_path).read_text()))
    if cfg.device in ("auto", "cuda") and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        cfg = ModelConfig.from_dict({**cfg.to_dict(), "device": f"cuda:{os.environ['LOCAL_RANK']}"})
    syn = Synthesizer(schema, cfg).fit(coerce(pd.read_parquet(data), schema, source="staged train.parquet"))
    if is_main():
        syn.save(out)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
