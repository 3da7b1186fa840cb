"""DP-SGD for the model's networks (``model.privacy``; the budget and accountant live in ``dp.py``).

Each component (VAE, latent prior, refiner, static model) trains its steps with Opacus:

* **Entities, not rows**: every step draws a Poisson sample of privacy units (each unit in with
  probability q = expected batch / units) and takes ONE of the sampled unit's sequences (a random
  one; the VAE then a random crop of it), so a per-sample gradient is a per-entity gradient whatever
  the entity's length. An empty draw still takes a noise-only step (the sampled-Gaussian analysis
  assumes it).
* **Per-sample gradients** from Opacus' ``GradSampleModule`` (hooks); ``nn.GRU`` is swapped for
  Opacus' ``DPGRU`` while training (same state-dict keys) and back afterwards, so saved models are
  the ordinary ones. Losses are sums of per-sequence means (``loss_reduction="sum"``): a sample's
  gradient must not depend on the other samples of the batch.
* **Clipping and noise** by Opacus' ``DPOptimizer`` (per-sample clipping at ``max_grad_norm``,
  Gaussian noise ``noise_multiplier * max_grad_norm``, averaged over the expected batch size).

No validation split and no early stopping under DP: held-out entities are private too, and picking
a checkpoint on them would spend budget the accountant does not see.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from synth_pipeline.dp import PrivacyConfig


def swap_grus(module: nn.Module, to_dp: bool) -> None:
    """Replace every ``nn.GRU`` by Opacus' ``DPGRU`` (``to_dp``) or back, weights kept (same keys)."""
    from opacus.layers import DPGRU

    src, dst = (nn.GRU, DPGRU) if to_dp else (DPGRU, nn.GRU)
    for name, child in list(module.named_children()):
        if isinstance(child, src) and type(child) is not dst:
            new = dst(child.input_size, child.hidden_size, num_layers=child.num_layers, bias=child.bias,
                      batch_first=child.batch_first, dropout=float(child.dropout),
                      bidirectional=child.bidirectional)
            new.load_state_dict(child.state_dict())
            new.to(next(child.parameters()).device).train(child.training)
            setattr(module, name, new)
        else:
            swap_grus(child, to_dp)


@dataclass
class EntitySampler:
    """Poisson sampling of privacy units; one random sequence of each sampled unit."""

    units: np.ndarray  # privacy unit of each training sequence
    rng: np.random.Generator
    order: np.ndarray = field(init=False)
    starts: np.ndarray = field(init=False)
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.order = np.argsort(self.units, kind="stable")
        _, self.starts, self.counts = np.unique(self.units[self.order], return_index=True, return_counts=True)

    @property
    def n_units(self) -> int:
        return int(self.counts.size)

    def rate(self, batch: int) -> float:
        """Sample rate q for an expected batch of ``batch`` entities."""
        return min(1.0, batch / max(self.n_units, 1))

    def draw(self, q: float) -> np.ndarray:
        """Positions (into the training sequences) of one sequence per sampled unit; may be empty."""
        hit = np.flatnonzero(self.rng.random(self.n_units) < q)
        pick = self.starts[hit] + (self.rng.random(hit.size) * self.counts[hit]).astype(np.int64)
        return self.order[pick]


class DPStep:
    """One component's DP-SGD: wraps the trained modules (GRUs already swapped by ``swap_grus``) for
    per-sample gradients and replaces the optimiser step by Opacus' clip + noise + Adam. ``close()``
    removes the hooks."""

    def __init__(self, modules: list[nn.Module], params: list[nn.Parameter], lr: float, cfg: PrivacyConfig,
                 noise_multiplier: float, expected_batch: float, seed: int):
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        self.params = [p for p in params if p.requires_grad]
        self.wrapped = [GradSampleModule(m, batch_first=True, loss_reduction="sum") for m in modules]
        self.base_lr = lr
        gen = torch.Generator(device=self.params[0].device if self.params else "cpu").manual_seed(seed)
        self.opt = DPOptimizer(torch.optim.Adam(self.params, lr=lr), noise_multiplier=noise_multiplier,
                               max_grad_norm=cfg.max_grad_norm, expected_batch_size=max(int(round(expected_batch)), 1),
                               loss_reduction="sum", generator=gen)

    def step(self, loss: torch.Tensor, progress: float) -> None:
        """Backward, per-sample clip, noise, Adam with the cosine decay of the plain loop."""
        for g in self.opt.param_groups:
            g["lr"] = self.base_lr * (0.1 + 0.9 * (1 + math.cos(math.pi * progress)) / 2)
        self.opt.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # Opacus' hooks on modules whose inputs need no grad: expected
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss.backward()
        self.opt.step()

    def close(self) -> None:
        for w in self.wrapped:
            w._close()



def noisy_latent_moments(latents: torch.Tensor, present: torch.Tensor, units: np.ndarray, sigma: float,
                         rng: np.random.Generator, bound: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent normalisation under DP: mean 0 and one scale for all channels, from a Gaussian
    mechanism of sensitivity 1 on per-entity mean squares clipped to ``bound**2`` (each entity's
    sequences pooled), noise ``sigma`` (accounted as one more ``(sigma, 1, 1)`` in the ledger). One
    scalar, not per-channel moments: a per-channel query would need sqrt(2 * channels) more noise."""
    L = latents.shape[-1]
    w = present.float().numpy()
    sq = ((latents.float() ** 2).mean(-1).numpy() * w).sum(1)  # [N] per sequence
    codes, inv = np.unique(units, return_inverse=True)
    per_unit = np.bincount(inv, weights=sq, minlength=codes.size) / np.maximum(
        np.bincount(inv, weights=w.sum(1), minlength=codes.size), 1.0)
    total = np.clip(per_unit, 0.0, bound**2).sum() / bound**2 + rng.normal(0.0, sigma)
    ms = float(np.clip(total * bound**2 / max(codes.size, 1), 0.05, bound**2))
    return torch.zeros(L), torch.full((L,), ms**0.5)
