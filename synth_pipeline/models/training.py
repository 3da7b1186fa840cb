"""The one training loop. Every component (the VAE, the latent prior, the static model, the L2D
refiner) describes itself as a :class:`Component`: its parameters and budget, its learning rate, a
``train_step(step) -> (loss, logged parts)`` over a batch it draws itself, an optional held-out
``val_loss`` and an optional :class:`EMA` copy. :class:`Trainer` owns everything else, once:
Adam with a cosine decay (:class:`FusedAdam`) or DP-SGD (``models/private.py``), gradient clipping,
the EMA update, the validation cadence, early stopping with the best weights restored, the
progress bar, the loss history and the seconds per component.

Seeding: a component draws its batches and noise from its own ``numpy`` / ``torch.Generator``; what
torch draws globally (dropout) comes from the forked, seeded RNG of ``TimeAutoDiff.fit``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from synth_pipeline.config import ModelConfig
    from synth_pipeline.models.private import DPTraining


class Progress:
    """A tqdm bar when enabled (epoch-like counters, loss, ETA), a no-op otherwise."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, mininterval=1.0, leave=False, dynamic_ncols=True)

    def update(self, n: int, **postfix: float) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: f"{v:.4f}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class FusedAdam:
    """Adam with a cosine learning-rate decay to ``lr * min_ratio`` over ``total`` steps: the update of
    ``torch.optim.Adam(fused=True)`` + ``CosineAnnealingLR`` (same kernel, ``torch._fused_adam_``;
    tests/test_budget.py checks they agree). Why not torch.optim: constructing any torch.optim
    optimizer imports torch._dynamo (1.2-2.5 s measured on the 2-core machine, a tenth of a small
    panel's whole fit), and the per-parameter Adam it runs on CPU by default costs 2.1 ms a step
    against 0.5 ms fused (VAE, 64 wide)."""

    def __init__(self, params: list[nn.Parameter], lr: float, total: int, min_ratio: float = 0.1,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.state_steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]
        self.base_lr, self.total, self.min_ratio, self.betas, self.eps = lr, max(int(total), 1), min_ratio, betas, eps
        self.t = 0  # completed steps (the cosine schedule's position)

    @property
    def lr(self) -> float:
        eta_min = self.base_lr * self.min_ratio
        return eta_min + (self.base_lr - eta_min) * (1 + math.cos(math.pi * self.t / self.total)) / 2

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]
        if idx:
            steps = [self.state_steps[i] for i in idx]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                [self.params[i] for i in idx], [self.params[i].grad for i in idx], [self.exp_avg[i] for i in idx],
                [self.exp_avg_sq[i] for i in idx], [], steps, lr=self.lr, beta1=self.betas[0], beta2=self.betas[1],
                weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)
        self.t += 1


class EMA:
    """An exponential moving average of ``live``'s weights kept in ``average`` (the copy sampling
    and validation use): ``average <- decay * average + (1 - decay) * live`` after every step."""

    def __init__(self, average: nn.Module, live: nn.Module, decay: float):
        self.average, self.decay = average, decay
        self._avg, self._live = list(average.parameters()), list(live.parameters())

    def update(self) -> None:
        with torch.no_grad():
            torch._foreach_lerp_(self._avg, self._live, 1 - self.decay)


@dataclass
class Component:
    """What a component hands the loop (see the module docstring)."""

    name: str  # "vae", "diffusion", "static", "refine": the key of budgets, history and timings
    steps: int
    params: list[nn.Parameter]
    lr: float
    train_step: Callable[[int], tuple[torch.Tensor, dict[str, float]]]
    modules: list[nn.Module]  # put in train mode; their weights are the ones early stopping restores
    val_loss: Callable[[], float] | None = None
    ema: EMA | None = None
    every: int | None = None  # validation cadence (default: Trainer.cadence)


class Trainer:
    """Runs components one after another for one fit; appends to ``history`` and ``seconds``."""

    def __init__(self, config: ModelConfig, device: torch.device, history: list[dict[str, Any]],
                 seconds: dict[str, float], dp: DPTraining | None = None, world: int = 1):
        self.config, self.device, self.history, self.seconds = config, device, history, seconds
        self.dp, self.world = dp, world

    def cadence(self, steps: int) -> int:
        """Validation every ``eval_every`` steps; under budget=auto at most ceil(steps / 20), at least
        5, so patience can act in small budgets."""
        every = self.config.eval_every
        if self.config.budget == "auto":
            every = min(every, max(5, math.ceil(steps / 20)))
        return every

    def run(self, c: Component) -> None:
        """Adam (or DP-SGD), grad clipping, EMA, periodic validation, early stopping, best weights."""
        cfg = self.config
        t_start = time.perf_counter()
        steps, val_loss = c.steps, c.val_loss
        every = c.every if c.every is not None else self.cadence(steps)
        dp = None
        if self.dp is not None:  # DP-SGD (models/private.py): per-entity clipping + noise, no validation
            dp = self.dp.step_for(c.name, c.modules, c.params, c.lr)
            val_loss = None
        else:
            opt = FusedAdam(c.params, c.lr, steps)
        best, best_state, bad = math.inf, None, 0
        bar = Progress(steps, c.name, cfg.progress)
        running: dict[str, float] = {}
        for m in c.modules:
            m.train()
        run_step = c.train_step
        if self.world > 1:  # model.distributed under torchrun: gradients averaged by DDP
            from synth_pipeline.models.distributed import data_parallel

            run_step = data_parallel(c.train_step, c.modules, c.params, self.device)
        step = -1
        for step in range(steps):
            loss, parts = run_step(step)
            if dp is not None:
                if self.dp.empty:  # an empty Poisson draw: a noise-only step
                    loss = loss * 0.0
                dp.step(loss, step / steps)
                # losses on private batches are statistics epsilon does not cover: neither logged nor shown
                loss, parts = torch.zeros(()), {}
            else:
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(c.params, cfg.grad_clip)
                opt.step()
            if c.ema is not None:
                c.ema.update()
            if dp is None:
                parts = {"loss": float(loss.detach()), **parts}
            for k, v in parts.items():
                running[k] = running.get(k, 0.0) + v
            bar.update(1, **({"loss": parts["loss"]} if parts else {}))
            if (step + 1) % every == 0 or step + 1 == steps:
                k = (step % every) + 1
                rec = {f"{c.name}/{key}": v / k for key, v in running.items()}
                running = {}
                if val_loss is not None:
                    for m in c.modules:
                        m.eval()
                    vl = val_loss()
                    for m in c.modules:
                        m.train()
                    rec[f"{c.name}/val_loss"] = vl
                    if vl < best - 1e-4:
                        best, bad = vl, 0
                        best_state = [copy.deepcopy(m.state_dict()) for m in c.modules]
                    else:
                        bad += 1
                rec["step"] = step + 1
                self.history.append(rec)
                if val_loss is not None and bad >= cfg.patience:
                    break
        bar.close()
        if dp is not None:
            dp.close()
            self.dp.record(c.name, step + 1)
        if best_state is not None:
            for m, s in zip(c.modules, best_state, strict=True):
                m.load_state_dict(s)
        self.seconds[c.name] = time.perf_counter() - t_start
