"""PSLD: posterior-stable latent diffusion (papers/psld_posterior-stability-latent-diffusion.txt).

``model.objective=psld`` replaces the VAE's KL term with the diffusion chain itself:

- variational inference (Alg. 1, lines 3-5): the encoder output v is diffused to z_j with
  j ~ U{0..N} and the decoder is trained on z_j, weighted by alpha_bar[gamma * j];
- collapse simulation (lines 6-7): v is diffused to an almost uninformative z_k, k ~ U{M..L},
  weighted by 1 - alpha_bar[ceil(k / eta)], and the decoder is penalised for reconstructing the
  data well from it (it would be ignoring its latent);
- sampling (Alg. 2): the reverse chain runs from L down to a random i ~ U{0..N} and z_i (not a
  clean z_0) is decoded: the decoder was trained on exactly such latents.

What differs from the paper, and why:

1. The collapse penalty is bounded. The paper's (1 - alpha_bar) ln p(X | z_k) is unbounded below
   for our fixed-variance Gaussian / categorical likelihoods: the decoder can lower it without limit
   by producing ever-worse outputs for noisy latents (measured on 200 pollution windows, fast
   preset: after 600 steps the loss was -2.9e10 and the reconstruction loss 5.9e10, against 0.21
   with the bound; the decoder is destroyed). We hinge it at the *information-free* loss
   tau (the loss of predicting every column's marginal): the decoder is penalised only while it
   reconstructs X from an uninformative latent better than the marginal would, which is exactly the
   shortcut (calendar / static context instead of z) the term targets, and gains nothing from
   garbage beyond that.
2. The encoder output is standardised per latent channel (batch normalisation without affine
   parameters, running statistics at inference). Without a KL term nothing fixes the scale of v,
   and the forward kernel's signal-to-noise ratio (what "i <= N is informative, k >= M is not"
   means) depends on it; the encoder could otherwise outgrow the noise.
3. Sampling is Algorithm 2 vectorised: each sequence draws its own i ~ U{0..N} and runs the strided
   reverse chain (the configured solver, ``sampling_steps`` calls) from L down to exactly i; the
   denoiser takes one diffusion step per sequence, so all sequences still share every call. The
   update is the scheduler's own (``DDPMScheduler.reverse`` with a per-row grid of steps).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synth_pipeline.models.scheduler import DDPMScheduler
from synth_pipeline.models.vae import Batch, MixedVAE


def per_sequence_loss(vae: MixedVAE, out: dict[str, torch.Tensor], b: Batch) -> torch.Tensor:
    """Reconstruction loss per sequence [B] (the same terms as ``MixedVAE.reconstruction_loss``,
    reduced per sequence so each can carry its own PSLD weight)."""
    pres = b.present
    total = torch.zeros(pres.shape[0], device=pres.device)
    if vae.n_num:
        w = pres[..., None] * (1 - b.num_miss)
        total = total + ((out["num"] - b.num) ** 2 * w).sum((1, 2)) / w.sum((1, 2)).clamp(min=1)
    if vae.miss_idx:
        bce = F.binary_cross_entropy_with_logits(out["miss"], b.num_miss[..., vae.miss_idx], reduction="none")
        total = total + (bce * pres[..., None]).sum((1, 2)) / (pres.sum(1) * len(vae.miss_idx)).clamp(min=1)
    if vae.cat_cards:
        ce = torch.zeros_like(total)
        B, T = pres.shape
        for j, logits in enumerate(out["cat"].split(vae.cat_cards, -1)):
            c = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b.cat[..., j].reshape(-1), reduction="none")
            ce = ce + (c.view(B, T) * pres).sum(1)
        total = total + ce / (pres.sum(1) * len(vae.cat_cards)).clamp(min=1)
    return total


def information_free_loss(num: np.ndarray, num_miss: np.ndarray, cat: np.ndarray, present: np.ndarray,
                          miss_idx: list[int], cat_cards: list[int]) -> float:
    """tau: the reconstruction loss of predicting each column's marginal (no information about the
    sequence at all): pooled variance of the numerics, binary entropy of the missing flags, entropy
    of the categories. Aggregates only."""
    pres = present > 0
    tau = 0.0
    if num.shape[-1]:
        obs = pres[..., None] & (num_miss < 0.5)
        cnt = np.maximum(obs.sum((0, 1)), 1)
        mean = (num * obs).sum((0, 1)) / cnt
        tau += float((((num - mean) ** 2) * obs).sum() / max(obs.sum(), 1))
    if miss_idx:
        p = np.clip(num_miss[..., miss_idx][pres].mean(0), 1e-6, 1 - 1e-6)
        tau += float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))
    if cat_cards:
        ents = []
        for j, k in enumerate(cat_cards):
            q = np.bincount(cat[..., j][pres], minlength=k).astype(float)
            q = q[q > 0] / q.sum()
            ents.append(float(-(q * np.log(q)).sum()))
        tau += float(np.mean(ents))
    return tau


class PSLD(nn.Module):
    """The PSLD objective for a ``MixedVAE`` plus Algorithm 2's stopping rule for the prior.

    Paper steps i in [0, L] map to scheduler indices i - 1 (step 0 is the undiffused v):
    ``abar[i]`` below is alpha_bar at paper step i, with ``abar[0] = 1``.
    """

    def __init__(self, sch: DDPMScheduler, latent_dim: int, N: int, M: int, gamma: int, eta: float):
        super().__init__()
        self.sch = sch
        self.L, self.N, self.M, self.gamma, self.eta = sch.num_train_timesteps, int(N), int(M), int(gamma), float(eta)
        self.register_buffer("abar", torch.cat([torch.ones(1), sch.alphas_cumprod.float()]))
        self.register_buffer("tau", torch.zeros(()))
        self.norm = nn.BatchNorm1d(latent_dim, affine=False, momentum=0.05)

    # -- training -------------------------------------------------------------------------------
    def set_reference(self, tau: float) -> None:
        self.tau.fill_(float(tau))

    def encode(self, vae: MixedVAE, b: Batch) -> torch.Tensor:
        """v = the standardised encoder mean [B, T, C] (padding steps stay 0)."""
        mu, _ = vae.encode(b)
        pres = b.present > 0
        v = torch.zeros_like(mu)
        v[pres] = self.norm(mu[pres])
        return v

    def diffuse(self, v: torch.Tensor, steps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """q(z_i | z_0 = v) at per-sequence paper steps ``steps`` [B]."""
        a = self.abar[steps].view(-1, *([1] * (v.dim() - 1)))
        return a.sqrt() * v + (1 - a).sqrt() * noise

    def vi_latent(self, v: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """A latent as the decoder meets it at sampling: v diffused to a random j ~ U{0..N}."""
        j = torch.randint(0, self.N + 1, (v.shape[0],), generator=g).to(v.device)
        return self.diffuse(v, j, torch.randn(v.shape, generator=g).to(v.device))

    def loss(self, vae: MixedVAE, b: Batch, g: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """L_VI + bounded L_CS on one batch; both decoder passes run as one batch of 2B."""
        v = self.encode(vae, b)
        B, dev = v.shape[0], v.device
        j = torch.randint(0, self.N + 1, (B,), generator=g).to(dev)
        k = torch.randint(self.M, self.L + 1, (B,), generator=g).to(dev)
        noise = torch.randn((2, *v.shape), generator=g).to(dev)
        z = torch.cat([self.diffuse(v, j, noise[0]), self.diffuse(v, k, noise[1])])
        two = Batch(**{f: torch.cat([getattr(b, f)] * 2) for f in b.__dataclass_fields__})
        rec = per_sequence_loss(vae, vae.decode(z, two.calendar, two.static, two.present), two)
        rec_vi, rec_cs = rec[:B], rec[B:]
        w_vi = self.abar[(self.gamma * j).clamp(max=self.L)]
        w_cs = 1 - self.abar[torch.ceil(k.double() / self.eta).long().clamp(max=self.L)]
        vi = (w_vi * rec_vi).mean()
        cs = (w_cs * F.relu(self.tau - rec_cs)).mean()
        parts = {"vi": float(vi.detach()), "cs": float(cs.detach()), "rec_collapsed": float(rec_cs.mean().detach()),
                 "rec": float(rec_vi.mean().detach())}
        return vi + cs, parts

    # -- sampling (Algorithm 2) -----------------------------------------------------------------
    def stop_steps(self, n: int, g: torch.Generator) -> torch.Tensor:
        """Algorithm 2, line 2: each sequence's stopping step i ~ U{0..N} (paper steps)."""
        return torch.randint(0, self.N + 1, (n,), generator=g)

    def grid(self, stops: torch.Tensor, sampling_steps: int) -> torch.Tensor:
        """[B, k+1] scheduler indices per sequence: strided from L down to its own step i (index i-1);
        a sequence stopping at i = 0 ends with -1, the clean estimate. Every row has k model calls."""
        k = max(1, int(sampling_steps))
        frac = torch.linspace(0, 1, k + 1, dtype=torch.float64)[None, :]
        end = (stops.double() - 1).clamp(min=0)[:, None]
        ts = (self.L - 1 - frac * (self.L - 1 - end)).round().long()
        return torch.where((stops == 0)[:, None] & (frac == 1), -1, ts)

    def reverse(self, z: torch.Tensor, denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                sampling_steps: int, eta: float, g: torch.Generator) -> torch.Tensor:
        """Algorithm 2, lines 1-5, vectorised: every sequence runs the strided reverse chain (the
        configured solver, with per-row steps) from z_L down to its own z_i, i ~ U{0..N}; z_i is
        what gets decoded. A sequence stopping at i = 0 ends with its clean estimate (its chain's
        last step is -1: the scheduler's row mask)."""
        ts = self.grid(self.stop_steps(z.shape[0], g), sampling_steps)
        return self.sch.reverse(z, denoise, ts, eta=eta, generator=g, noise_every_step=True)

    def extra_repr(self) -> str:
        return f"L={self.L}, N={self.N}, M={self.M}, gamma={self.gamma}, eta={self.eta}"

