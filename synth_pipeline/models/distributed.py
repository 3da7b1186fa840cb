"""Data-parallel training on ``torch.distributed`` (``model.distributed: true``, under ``torchrun``).

Every rank builds the same model (weights seeded by ``model.seed``), trains on its own shard of the
training entities (``shard``: every ``world``-th one) with its own batch stream, and averages the
gradients of every step over the ranks (``average_gradients``: one all-reduce of the flattened
gradients, the reduction DistributedDataParallel performs) before clipping and the optimiser step.
Weights therefore stay identical on every rank, and so do validation losses and early-stopping
decisions (the validation set is the same everywhere). NCCL on GPU, gloo on CPU. Only rank 0 should
save or log (``is_main``).

The components' training steps are closures that call several sub-networks (encoder, decoders,
denoiser, refiner), so the gradients are reduced in the shared training loop rather than by wrapping
each network in ``DistributedDataParallel``; the arithmetic is the same (sum over ranks / world).
"""

from __future__ import annotations

import os

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


def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Sum every parameter's gradient over the ranks and divide by ``world`` (a missing gradient
    counts as zero, so every rank reduces the same flat vector)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n
