"""L2D-Diff refinement (papers/l2d-diff_latent-to-data-cascaded-diffusion.txt).

``model.refine=l2d`` cascades a second, data-space diffusion after the latent one: the latent
prior generates the representation c, and a data-space denoiser x_theta(x^k, k, F(c)) generates
the numeric columns conditioned on it, trained with x0-prediction
(L_x = E ||x^0 - x_theta(x^k, k, F(c))||^2). Its output replaces the VAE decoder's numeric values;
missing flags and categories still come from the decoder.

F(c) here is the latent trajectory together with what the frozen VAE decoder makes of it (its
numeric output): the refiner then only has to add the fine detail the per-step decoder loses.

Training conditions on the real sequence's latent with conditioning augmentation (the noise the
latent meets at sampling: the PSLD forward kernel at j ~ U{0..N}, or the VAE's latent-noise floor),
so the refiner does not rely on latents more exact than the prior will produce.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import nn

from synth_pipeline.models.batch import Batch, masked_mean, to_batch
from synth_pipeline.models.denoiser import step_embedding
from synth_pipeline.models.scheduler import DDPMScheduler
from synth_pipeline.models.training import EMA, Component
from synth_pipeline.models.vae import POSITION_FEATURES, StaticEmbedding, position_features

if TYPE_CHECKING:
    from synth_pipeline.config import ModelConfig
    from synth_pipeline.encoding import EncodedData
    from synth_pipeline.models.conditions import ConditionEncoder
    from synth_pipeline.models.private import DPTraining
    from synth_pipeline.models.psld import PSLD
    from synth_pipeline.models.vae import MixedVAE


class RefinerHost(Protocol):
    """What the refiner uses of the model that owns it (``TimeAutoDiff``), named here so this module
    does not import the model: the frozen VAE and PSLD, the latent scale, the refiner and its EMA,
    the scheduler, the budget and the shared training loop (models/training.py)."""

    config: ModelConfig
    device: torch.device
    vae: MixedVAE
    psld: PSLD | None
    latent_std: torch.Tensor
    refiner: L2DRefiner
    refiner_ema: L2DRefiner
    refine_scheduler: DDPMScheduler
    conditions: ConditionEncoder
    budget: dict[str, int]
    _dp: DPTraining | None
    _train: Callable[[Component], None]

    def _batch_idx(self, tr_idx: np.ndarray, gen: np.random.Generator, T: int | None = None) -> np.ndarray: ...


class L2DRefiner(nn.Module):
    """x_theta(x^k, k, F(c), known): a bidirectional GRU over [x^k, c, decode(c), position, calendar]
    and the known numeric cells with their mask (imputation and forecasting condition the refiner
    too, not only the latent prior; ``known=False``: a model saved before it did)."""

    def __init__(self, n_num: int, latent_dim: int, static_cards: list[int], n_calendar: int, hidden: int,
                 layers: int = 1, known: bool = True):
        super().__init__()
        self.hidden, self.known = hidden, known
        n_in = 2 * n_num + latent_dim + POSITION_FEATURES + n_calendar + 1 + (2 * n_num if known else 0)
        self.inp = nn.Linear(n_in, hidden)
        self.t_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.static_emb = StaticEmbedding(static_cards, hidden)
        self.body = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.out = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, n_num))

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor, dec_num: torch.Tensor,
                calendar: torch.Tensor, present: torch.Tensor, static: torch.Tensor,
                known_num: torch.Tensor | None = None, known_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        pos = position_features(T, x.device).expand(B, -1, -1)
        parts = [x, c, dec_num, pos, calendar, present[..., None]]
        if self.known:
            if known_num is None:  # unconditional: nothing known
                known_num = known_mask = torch.zeros_like(x)
            parts += [known_num, known_mask]
        h = self.inp(torch.cat(parts, -1))
        h = h + (self.t_mlp(step_embedding(t, self.hidden)) + self.static_emb(static))[:, None, :]
        return self.out(self.body(h)[0])


def condition_latent(model: RefinerHost, latent: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Conditioning augmentation: the real latent as noisy as a generated one reaches the decoder."""
    if model.psld is not None:
        return model.psld.vi_latent(latent, g)
    noise = model.config.latent_noise * model.latent_std.to(latent.device)
    return latent + noise * torch.randn(latent.shape, generator=g).to(latent.device)


def refiner_loss(model: RefinerHost, b: Batch, latent: torch.Tensor, g: torch.Generator,
                 net: nn.Module) -> torch.Tensor:
    """The refiner's x0-prediction loss on one batch and its decoder-space latents: the latent made as
    noisy as a generated one, the frozen decoder's numerics, a random diffusion step and a random
    conditioning task; squared error over real, non-missing numeric cells."""
    dev, sch = model.device, model.refine_scheduler
    c = condition_latent(model, latent, g) * b.present[..., None]
    with torch.no_grad():
        dec = model.vae.decode(c, b.calendar, b.static, b.present)["num"]
    t = torch.randint(0, sch.num_train_timesteps, (len(latent),), generator=g).to(dev)
    xk = sch.add_noise(b.num, torch.randn(b.num.shape, generator=g).to(dev), t)
    known_num, known_mask, _ = model.conditions.random(b, g)  # the prior's tasks, drawn per sequence
    pred = net(xk, t, c, dec, b.calendar, b.present, b.static, known_num, known_mask)
    w = b.present[..., None] * (1 - b.num_miss)
    if model._dp is not None:  # DP-SGD: a sum of per-entity losses (models/private.py)
        return masked_mean((pred - b.num) ** 2, w, per_sample=True)
    return ((pred - b.num) ** 2 * w).sum() / w.sum().clamp(min=1)


def fit_refiner(model: RefinerHost, data: EncodedData, latents: torch.Tensor, tr_idx: np.ndarray,
                val_idx: np.ndarray, gen: np.random.Generator) -> None:
    """Train ``model.refiner`` (EMA copy in ``model.refiner_ema``) on the decoder-space latents."""
    cfg, dev = model.config, model.device
    latents = latents.to(dev)
    tgen = torch.Generator().manual_seed(cfg.seed + 2)
    model.vae.eval()

    def loss_of(idx: np.ndarray, g: torch.Generator, net: nn.Module) -> torch.Tensor:
        return refiner_loss(model, to_batch(data, idx, dev), latents[torch.as_tensor(idx, device=dev)], g, net)

    def train_step(step: int):
        return loss_of(model._batch_idx(tr_idx, gen, latents.shape[1]), tgen, model.refiner), {}

    def val_loss() -> float:
        with torch.inference_mode():
            return float(loss_of(val_idx, torch.Generator().manual_seed(11), model.refiner_ema))

    model._train(Component("refine", model.budget.get("refine", cfg.refine_steps or cfg.diffusion_steps),
                           list(model.refiner.parameters()), cfg.diffusion_lr, train_step,
                           [model.refiner, model.refiner_ema], val_loss if len(val_idx) else None,
                           EMA(model.refiner_ema, model.refiner, cfg.ema_decay)))


@torch.inference_mode()
def refine(model: RefinerHost, z: torch.Tensor, dec_num: torch.Tensor, calendar: torch.Tensor,
           present: torch.Tensor, static: torch.Tensor, g: torch.Generator,
           known_num: torch.Tensor | None = None, known_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Generate the numeric columns [B, T, Fn] given the generated latent ``z`` (x0-prediction chain)
    and the known cells (``known_num`` zero where unknown, ``known_mask`` 1.0 where known)."""
    sch: DDPMScheduler = model.refine_scheduler
    net = model.refiner_ema.eval()
    x = torch.randn(dec_num.shape, generator=g).to(z.device)

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return net(x_t, t, z, dec_num, calendar, present, static, known_num, known_mask)

    return sch.reverse(x, denoise, sch.set_timesteps(model.config.sampling_steps), eta=model.config.eta, generator=g)
