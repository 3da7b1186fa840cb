"""Batch and condition types of the models: what a training step reads (``Batch``), what sampling
fixes (``Conditions``), and the gather from encoded arrays (``to_batch``). Their own module so the
VAE, the prior, the refiner and the sampler share them without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from synth_pipeline.encoding import EncodedData


@dataclass
class Batch:
    """Tensors of one minibatch (see encoding.EncodedData for shapes)."""

    num: torch.Tensor
    num_miss: torch.Tensor
    cat: torch.Tensor
    present: torch.Tensor
    calendar: torch.Tensor
    static: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        return Batch(**{k: getattr(self, k).to(device) for k in self.__dataclass_fields__})



@dataclass
class Conditions:
    """What is fixed at sampling time. Cells whose mask is False are generated."""

    calendar: torch.Tensor  # [n, T, C]
    present: torch.Tensor  # [n, T]
    static: torch.Tensor | None = None  # [n, S] tokens
    static_known: torch.Tensor | None = None  # [n, S] bool
    num: torch.Tensor | None = None  # [n, T, Fn] encoded values
    num_known: torch.Tensor | None = None  # [n, T, Fn] bool
    cat: torch.Tensor | None = None  # [n, T, Fk] indices
    cat_known: torch.Tensor | None = None  # [n, T, Fk] bool

    def slice(self, s: slice) -> Conditions:
        return Conditions(**{k: (v[s] if v is not None else None) for k, v in self.__dict__.items()})


def to_batch(
    d: EncodedData, idx: np.ndarray | torch.Tensor, device: torch.device, crop: int | None = None,
    gen: np.random.Generator | None = None,
) -> Batch:
    """Gather sequences ``idx``; with ``crop``, a random window of that many steps from each."""
    idx = np.asarray(idx)
    T = d.num.shape[1]
    if crop is not None and crop < T:
        hi = np.maximum(d.lengths[idx] - crop, 0) + 1
        start = (gen.random(len(idx)) * hi).astype(np.int64)
        steps = start[:, None] + np.arange(crop)[None, :]

        def take(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a[idx[:, None], steps])
    else:

        def take(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a[idx])

    return Batch(
        num=take(d.num), num_miss=take(d.num_miss), cat=take(d.cat), present=take(d.present),
        calendar=take(d.calendar), static=torch.from_numpy(d.static[idx]),
    ).to(device)


def masked_mean(x: torch.Tensor, w: torch.Tensor, per_sample: bool = False) -> torch.Tensor:
    """Mean of ``x`` [B, ...] over cells weighted by ``w`` (broadcast): over the whole batch, or (DP-SGD)
    each sample's own mean, summed over samples, so no sample's gradient depends on another's."""
    w = w.expand_as(x)
    if per_sample:
        dims = tuple(range(1, x.dim()))
        return ((x * w).sum(dims) / w.sum(dims).clamp(min=1)).sum()
    return (x * w).sum() / w.sum().clamp(min=1)
