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

