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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from synth_pipeline.dp import (
    PrivacyConfig,
    StatisticsBudget,
    budget_share,
    epsilon_of,
    mechanism_entropy,
    sgd_noise,
    statistics_budget,
)
from synth_pipeline.errors import ConfigError


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


class DPTraining:
    """One DP fit's state and bookkeeping (``model.privacy``): the secret randomness, the entity
    sampler, each component's sample rate, DP-SGD's noise multiplier and the ledger every mechanism
    is written into; ``report()`` is the guarantee saved with the model."""

    def __init__(self, cfg: PrivacyConfig, units: np.ndarray, stats: StatisticsBudget | None = None):
        # the mechanisms' randomness (entity sampling, gradient and moment noise) is secret: drawn from
        # OS entropy and stored nowhere; a seed in the saved config would let anyone subtract the noise
        self.cfg, self.units = cfg, np.asarray(units)
        self.entropy = mechanism_entropy()
        self.stats = stats or statistics_budget(cfg, int(self._seed()))
        self.sampler = EntitySampler(self.units, np.random.default_rng(self.entropy.spawn(1)[0]))
        self.rates: dict[str, float] = {}
        self.noise_multiplier = 0.0
        self.ledger: list[tuple[float, float, int]] = []
        self.empty = False  # the last draw was empty (its step is noise only)

    def _seed(self) -> int:
        return int(self.entropy.spawn(1)[0].generate_state(1, np.uint64)[0] >> 1)

    def plan(self, budget: dict[str, int], sizes: dict[str, int],
             log: Callable[[str], None] | None = None) -> dict[str, int]:
        """Sample rates from each component's batch ``sizes`` and the noise multiplier for the whole
        ``budget``, before any step (a budget that cannot be met raises ConfigError here); returns the
        budget, shortened when a fixed noise multiplier affords fewer steps."""
        self.rates = {k: self.sampler.rate(sizes[k]) for k in budget}
        plan = [(self.rates[k], n) for k, n in budget.items() if n > 0]
        latent = [(self.stats.noise_multiplier, 1.0, 1)]  # the latent normalisation's Gaussian mechanism
        self.noise_multiplier = sgd_noise(self.cfg, self.stats, plan, extra=latent)
        if self.cfg.noise_multiplier is not None:  # a fixed noise: training stops where the budget does
            share = budget_share(self.cfg, self.stats, plan, latent, self.noise_multiplier)
            if share < 1.0:
                budget = {k: int(n * share) for k, n in budget.items()}
                if log:
                    log(f"DP: noise multiplier {self.cfg.noise_multiplier} affords {share:.0%} of the planned steps")
        self.ledger = [(self.stats.noise_multiplier, 1.0, 1), *latent]
        if log:
            log(f"DP-SGD: {self.sampler.n_units} entities, noise multiplier {self.noise_multiplier:.3f}, "
                f"target epsilon {self.cfg.epsilon} at delta {self.cfg.delta}")
        return budget

    def draw(self, size: int) -> np.ndarray:
        """Positions of one Poisson batch for an expected ``size`` entities; an empty draw keeps its step
        as one sequence whose loss the loop zeroes (``empty``)."""
        pos = self.sampler.draw(self.sampler.rate(size))
        self.empty = pos.size == 0
        return self.sampler.draw(1.0)[:1] if self.empty else pos

    def step_for(self, name: str, modules: list[nn.Module], params: list[nn.Parameter], lr: float) -> DPStep:
        """The DP optimiser step of component ``name`` (the trainable ``modules`` get per-sample hooks)."""
        owners = [m for m in modules if any(p.requires_grad for p in m.parameters())]
        return DPStep(owners, params, lr, self.cfg, self.noise_multiplier,
                      self.rates[name] * self.sampler.n_units, seed=self._seed())

    def record(self, name: str, steps: int) -> None:
        self.ledger.append((self.noise_multiplier, self.rates[name], int(steps)))

    def latent_moments(self, latents: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return noisy_latent_moments(latents, present, self.units, self.stats.noise_multiplier,
                                    np.random.default_rng(self.entropy.spawn(1)[0]))

    def report(self, budget: dict[str, int]) -> dict[str, Any]:
        """The spent (epsilon, delta) of the whole ledger, by the configured accountant, and how."""
        p = self.cfg
        spent = epsilon_of(self.ledger, p.delta - self.stats.delta, p.accountant)
        if spent > p.epsilon * 1.001:  # cannot happen with a calibrated noise; a fixed one is checked here
            raise ConfigError(f"DP training spent epsilon {spent:.3f} > model.privacy.epsilon={p.epsilon} with "
                              f"noise_multiplier={self.noise_multiplier}; raise it or leave it null to calibrate")
        return {
            "epsilon": round(spent, 4), "delta": p.delta, "accountant": p.accountant,
            "target_epsilon": p.epsilon, "noise_multiplier": round(self.noise_multiplier, 4),
            "max_grad_norm": p.max_grad_norm, "statistics_noise_multiplier": round(self.stats.noise_multiplier, 4),
            "statistics_delta": self.stats.delta, "entities": self.sampler.n_units,
            "sample_rates": {k: round(v, 5) for k, v in self.rates.items()},
            "steps": {k: int(v) for k, v in budget.items()},
        }
