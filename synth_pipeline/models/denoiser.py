"""Latent denoiser: predicts the noise of a whole latent trajectory [B, T, L] in one call.

Inputs per timestep: the noisy latent, a diffusion-step embedding, position features, calendar
features, the entity's static attributes, the padding mask, and the *known cells* of the mask
API (value + known-flag per numeric column, an embedding with an "unknown" slot per categorical
column). Unconditional generation is simply "no cell known".
"""

from __future__ import annotations

import math

import torch
from torch import nn

from synth_pipeline.models.vae import POSITION_FEATURES, CategoryEmbedding, StaticEmbedding, position_features


def step_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    ang = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(ang), torch.cos(ang)], -1)


class LatentDenoiser(nn.Module):
    def __init__(
        self,
        latent_dim: int,
        n_num: int,
        cat_cards: list[int],
        static_cards: list[int],
        n_calendar: int,
        hidden: int,
        layers: int = 1,
        kind: str = "gru",
        embed_dim: int = 8,
    ):
        super().__init__()
        self.kind, self.hidden = kind, hidden
        self.known_cat = CategoryEmbedding(cat_cards, embed_dim, extra=1)  # last index = unknown
        self.cat_cards = cat_cards
        in_dim = latent_dim + POSITION_FEATURES + n_calendar + 1 + 2 * n_num + self.known_cat.out_dim
        self.inp = nn.Linear(in_dim, hidden)
        self.t_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.static_emb = StaticEmbedding(static_cards, hidden)
        if kind == "gru":
            self.body = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True, bidirectional=True)
            body_out = 2 * hidden
        else:
            layer = nn.TransformerEncoderLayer(hidden, nhead=4, dim_feedforward=2 * hidden, batch_first=True, dropout=0.0)
            self.body = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
            body_out = hidden
        self.out = nn.Sequential(nn.Linear(body_out, hidden), nn.SiLU(), nn.Linear(hidden, latent_dim))

    def forward(
        self,
        z: torch.Tensor,
        t: torch.Tensor,
        calendar: torch.Tensor,
        present: torch.Tensor,
        static: torch.Tensor,
        known_num: torch.Tensor,
        known_num_mask: torch.Tensor,
        known_cat: torch.Tensor,
        static_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``static_keep`` [B] (0/1) drops the static condition for some training sequences, so the
        denoiser cannot key a memorised trajectory on a sequence's unique attribute combination."""
        B, T, _ = z.shape
        pos = position_features(T, z.device).expand(B, -1, -1)
        x = torch.cat(
            [z, pos, calendar, present[..., None], known_num * known_num_mask, known_num_mask, self.known_cat(known_cat)], -1
        )
        st = self.static_emb(static)
        if static_keep is not None:
            st = st * static_keep[:, None]
        h = self.inp(x) + self.t_mlp(step_embedding(t, self.hidden))[:, None, :] + st[:, None, :]
        h = self.body(h)[0] if self.kind == "gru" else self.body(h)
        return self.out(h)
