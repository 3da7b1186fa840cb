"""Mixed-type VAE that compresses the feature axis: [B, T, F] -> latent trajectory [B, T, L].

Encoder: per-column embeddings (numeric values through a sin/cos feature map, categories through
``nn.Embedding``) concatenated per timestep -> MLP -> two GRUs giving μ and log σ². Decoder: a
per-timestep MLP, then (``decoder="gru"``, the paper's MLP + RNN) a bidirectional GRU added to it,
so each step is decoded knowing its neighbours; one head per column type (MSE numeric, BCE
missing-masks, CE categories), conditioned on calendar features and the entity's static attributes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from synth_pipeline.models.batch import Batch, masked_mean

POSITION_FREQS = 4
POSITION_FEATURES = 2 * POSITION_FREQS + 1  # width of position_features: what a network's input adds for it


def position_features(T: int, device: torch.device, n: int = POSITION_FREQS) -> torch.Tensor:
    """[T, 2n+1] relative position t/T plus sin/cos at a few frequencies."""
    t = torch.arange(T, device=device, dtype=torch.float32)
    rel = t / max(T - 1, 1)
    freqs = 2 ** torch.arange(n, device=device, dtype=torch.float32)
    ang = math.pi * rel[:, None] * freqs[None, :]
    return torch.cat([rel[:, None], torch.sin(ang), torch.cos(ang)], -1)


def latent_spread(mu: torch.Tensor, present: torch.Tensor, per_sample: bool = False) -> torch.Tensor:
    """Standard deviation of the latent over the real (not padded) steps: per channel over the batch,
    or (DP-SGD, no sample may depend on another) per sequence. Padding would shrink it otherwise."""
    w = present[..., None]
    dims = (1,) if per_sample else (0, 1)
    n = w.sum(dims, keepdim=True).clamp(min=1)
    mean = (mu * w).sum(dims, keepdim=True) / n
    var = ((mu - mean) ** 2 * w).sum(dims, keepdim=True) / (n - 1).clamp(min=1)
    return var.sqrt().clamp(min=1e-3)


class StaticEmbedding(nn.Module):
    """Static tokens [B, S] -> one vector [B, D] (sum of per-column embeddings)."""

    def __init__(self, cards: list[int], dim: int):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(max(c, 1), dim) for c in cards)
        self.dim = dim

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(tokens.shape[0], self.dim, device=tokens.device)
        for j, emb in enumerate(self.tables):
            out = out + emb(tokens[:, j])
        return out


class CategoryEmbedding(nn.Module):
    """Per-column embeddings of [B, T, K] indices, concatenated -> [B, T, K*dim]."""

    def __init__(self, cards: list[int], dim: int, extra: int = 0):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(c + extra, dim) for c in cards)
        self.out_dim = dim * len(cards)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if not self.tables:
            return idx.new_zeros(*idx.shape[:2], 0, dtype=torch.float32)
        return torch.cat([emb(idx[..., j]) for j, emb in enumerate(self.tables)], -1)


class FourierNumeric(nn.Module):
    """Numeric values -> [x, sin(2^k π x), cos(2^k π x)] per column (vectorized over columns)."""

    def __init__(self, n_cols: int, n_freq: int):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(n_freq, dtype=torch.float32) / 4)
        self.out_dim = n_cols * (1 + 2 * n_freq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ang = x[..., None] * self.freqs
        return torch.cat([x, torch.sin(ang).flatten(-2), torch.cos(ang).flatten(-2)], -1)


class MixedVAE(nn.Module):
    def __init__(
        self,
        n_num: int,
        num_missing: list[bool],
        cat_cards: list[int],
        static_cards: list[int],
        n_calendar: int,
        latent_dim: int,
        hidden: int,
        embed_dim: int,
        n_fourier: int,
        decoder: str = "mlp",
    ):
        super().__init__()
        self.n_num, self.cat_cards = n_num, cat_cards
        self.miss_idx = [j for j, m in enumerate(num_missing) if m]
        self.latent_dim = latent_dim
        self.fourier = FourierNumeric(n_num, n_fourier)
        self.cat_emb = CategoryEmbedding(cat_cards, embed_dim)
        self.static_emb = StaticEmbedding(static_cards, hidden)
        in_dim = self.fourier.out_dim + len(self.miss_idx) + self.cat_emb.out_dim + n_calendar + 1
        self.enc_mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.gru_mu = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.gru_logvar = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.to_mu = nn.Linear(2 * hidden, latent_dim)
        self.to_logvar = nn.Linear(2 * hidden, latent_dim)
        dec_in = latent_dim + n_calendar
        self.dec_mlp = nn.Sequential(
            nn.Linear(dec_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )
        self.dec_static = nn.Linear(hidden, hidden)
        # the per-step MLP alone decodes each step on its own, so small latent errors of the prior become
        # step-to-step jumps in the data; the GRU (residual) lets a step see its neighbours
        self.dec_rnn = nn.GRU(hidden, hidden // 2, batch_first=True, bidirectional=True) if decoder == "gru" else None
        self.head_num = nn.Linear(hidden, n_num) if n_num else None
        self.head_miss = nn.Linear(hidden, len(self.miss_idx)) if self.miss_idx else None
        self.head_cat = nn.Linear(hidden, sum(cat_cards)) if cat_cards else None

    def _static_bias(self, static: torch.Tensor) -> torch.Tensor:
        return self.static_emb(static)[:, None, :]

    def encode(self, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        # no absolute position here: the VAE is trained on random crops of long sequences
        feats = [self.fourier(b.num), b.num_miss[..., self.miss_idx], self.cat_emb(b.cat), b.calendar, b.present[..., None]]
        h = self.enc_mlp(torch.cat(feats, -1)) + self._static_bias(b.static)
        mu = self.to_mu(self.gru_mu(h)[0])
        logvar = self.to_logvar(self.gru_logvar(h)[0]).clamp(-12, 6)
        return mu, logvar

    def decode(self, z: torch.Tensor, calendar: torch.Tensor, static: torch.Tensor,
               present: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-step outputs. ``present`` [B, T]: padded steps are zeroed before the decoder's GRU, so
        what a padded step holds cannot reach the real steps (the backward direction reads them)."""
        h = self.dec_mlp[0](torch.cat([z, calendar], -1)) + self.dec_static(self._static_bias(static))
        h = self.dec_mlp[1:](h)
        if self.dec_rnn is not None:
            if present is not None:
                h = h * present[..., None]
            h = h + self.dec_rnn(h)[0]
        empty = h[..., :0]
        return {
            name: head(h) if head is not None else empty
            for name, head in (("num", self.head_num), ("miss", self.head_miss), ("cat", self.head_cat))
        }

    def loss(self, b: Batch, beta: float, latent_noise: float = 0.0,
             per_sample: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
        """Token-weighted batch means; ``per_sample`` (DP-SGD): the sum of each sequence's own means,
        so no sample's gradient depends on another sample."""
        mu, logvar = self.encode(b)
        std = (0.5 * logvar).exp()
        if latent_noise > 0:
            # floor the posterior noise at a share of the latent spread: the decoder then tolerates
            # the small errors the diffusion prior makes, instead of turning them into jumps
            std = torch.sqrt(std**2 + (latent_noise * latent_spread(mu.detach(), b.present, per_sample)) ** 2)
        z = mu + torch.randn_like(mu) * std
        out = self.decode(z, b.calendar, b.static, b.present)
        rec, parts = self.reconstruction_loss(out, b, per_sample)
        pres = b.present[..., None]
        kl_cells = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)
        kl = masked_mean(kl_cells, pres, per_sample)
        total = rec + beta * kl
        parts["kl"] = float(kl.detach())
        return total, parts

    def reconstruction_loss(self, out: dict[str, torch.Tensor], b: Batch,
                            per_sample: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
        pres = b.present[..., None]
        parts: dict[str, float] = {}
        total = torch.zeros((), device=b.num.device)
        if self.n_num:
            mse = masked_mean((out["num"] - b.num) ** 2, pres * (1 - b.num_miss), per_sample)
            total = total + mse
            parts["mse"] = float(mse.detach())
        if self.miss_idx:
            target = b.num_miss[..., self.miss_idx]
            bce = masked_mean(F.binary_cross_entropy_with_logits(out["miss"], target, reduction="none"), pres, per_sample)
            total = total + bce
            parts["bce_missing"] = float(bce.detach())
        if self.cat_cards:
            ces = [
                F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b.cat[..., j].reshape(-1),
                                reduction="none").view(b.cat.shape[:2])
                for j, logits in enumerate(out["cat"].split(self.cat_cards, -1))
            ]
            ce = masked_mean(torch.stack(ces, -1), pres, per_sample)
            total = total + ce
            parts["ce"] = float(ce.detach())
        return total, parts

