"""Stage-Diff prior for long sequences (papers/stage-diff_long-term-generation.txt).

``model.long=stagediff`` (deprecated alias: ``stage``) replaces the latent denoiser with a
stage-wise network: the latent trajectory [B, T, C] is cut into stages of ``stage_length`` steps
that are processed in order, so one long entity is one sequence whose later stages are generated
from what the earlier ones became:

- within a stage, channel-independent progressive decomposition: every latent channel is patched
  and encoded on its own (shared weights plus a channel embedding); at each of ``stage_scales``
  layers a Transformer encoder/decoder predicts the stage, a moving average takes its trend, the
  trend is subtracted from the layer's input and the residual goes to the next, finer layer
  (moving-average kernels shrink from about a quarter of the stage to 1). The clean estimate is
  the sum of the trends (the scales add coarse to fine).
- across stages, multi-channel fusion: the trends of all channels at each scale are mixed by a
  temporal convolution over the channels and become the next stage's decoder memory (its history)
  at that scale; the first stage attends to a learned "no history" token.

The network predicts the clean trajectory (x0 / ``sample`` prediction, as in the paper); the
diffusion is over the whole trajectory, so every reverse step refines all stages together while
each stage still reads the previous stage's current estimate. Conditioning (diffusion step,
position, calendar, static attributes, known cells of the mask API) is the same as the default
denoiser's and enters every patch token, so imputation / forecasting work unchanged.

What differs from the paper: it models our VAE's latent channels, not raw data channels (the
latent diffusion framework of the base model); the fusion is a residual 1-D convolution over the
concatenated channel trends (kernel 5) rather than a D x L_conv 2-D convolution (the same
receptive field over channels, fewer parameters). Stitching: the paper's stages meet with a jump
(on 256-step etth1 windows, the step change across a stage boundary was 3.1x the one inside a
stage), so each stage's estimate is also pulled towards the previous stage's last value by a
learned, fading share of the gap (``align``, one weight per position in the stage, zero at init).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from synth_pipeline.models.denoiser import step_embedding
from synth_pipeline.models.vae import POSITION_FEATURES, CategoryEmbedding, StaticEmbedding, position_features

FUSE_KERNEL = 5


def trend_kernels(stage_length: int, scales: int) -> list[int]:
    """Odd moving-average widths, coarse to fine; the last scale is full resolution (1)."""
    ks = [2 * max(stage_length // 2 ** (s + 3), 0) + 1 for s in range(scales - 1)]
    return [*ks, 1]


def moving_average(x: torch.Tensor, k: int) -> torch.Tensor:
    """Same-length moving average over the last axis (edges replicated)."""
    if k <= 1:
        return x
    p = (k - 1) // 2
    return F.avg_pool1d(F.pad(x[:, None, :], (p, p), mode="replicate"), k, stride=1)[:, 0, :]


class StageDiffDenoiser(nn.Module):
    def __init__(
        self,
        latent_dim: int,
        n_num: int,
        cat_cards: list[int],
        static_cards: list[int],
        n_calendar: int,
        hidden: int,
        stage_length: int,
        patch: int,
        scales: int,
        layers: int = 1,
        embed_dim: int = 8,
    ):
        super().__init__()
        self.C, self.Ls, self.P, self.S, self.hidden = latent_dim, stage_length, patch, scales, hidden
        self.n_patch = stage_length // patch
        self.kernels = trend_kernels(stage_length, scales)
        self.known_cat = CategoryEmbedding(cat_cards, embed_dim, extra=1)  # last index = unknown
        ctx_in = POSITION_FEATURES + n_calendar + 1 + 2 * n_num + self.known_cat.out_dim
        self.ctx = nn.Linear(ctx_in * patch, hidden)  # a patch's per-step conditions -> one token
        self.t_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.static_emb = StaticEmbedding(static_cards, hidden)
        self.chan = nn.Parameter(torch.randn(latent_dim, hidden) * 0.02)
        self.patch_pos = nn.Parameter(torch.randn(self.n_patch, hidden) * 0.02)
        self.start = nn.Parameter(torch.zeros(1, 1, hidden))
        heads = 4 if hidden % 4 == 0 else 1

        def enc() -> nn.Module:
            layer = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout=0.0, batch_first=True)
            return nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)

        self.patch_in = nn.ModuleList(nn.Linear(patch, hidden) for _ in range(scales))
        self.enc = nn.ModuleList(enc() for _ in range(scales))
        self.dec = nn.ModuleList(
            nn.TransformerDecoderLayer(hidden, heads, 2 * hidden, dropout=0.0, batch_first=True) for _ in range(scales)
        )
        self.patch_out = nn.ModuleList(nn.Linear(hidden, patch) for _ in range(scales))
        self.fuse = nn.ModuleList(
            nn.Conv1d(latent_dim, latent_dim, FUSE_KERNEL, padding=FUSE_KERNEL // 2) for _ in range(scales)
        )
        self.hist_in = nn.ModuleList(nn.Linear(patch, hidden) for _ in range(scales))
        # seam alignment: stage m starts where stage m-1 ended, by a learned share of the gap that
        # fades over the stage (zero at init: the stages' own estimates)
        self.align = nn.Parameter(torch.zeros(stage_length))

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
        """Noisy latent [B, T, C] -> clean estimate [B, T, C] (same signature as LatentDenoiser)."""
        B, T, C = z.shape
        H, Ls, P, n_p = self.hidden, self.Ls, self.P, self.n_patch
        n_stage = math.ceil(T / Ls)
        pad = n_stage * Ls - T
        pos = position_features(T, z.device).expand(B, -1, -1)
        feats = torch.cat(
            [pos, calendar, present[..., None], known_num * known_num_mask, known_num_mask, self.known_cat(known_cat)], -1
        )
        feats = F.pad(feats, (0, 0, 0, pad))
        ctx = self.ctx(feats.reshape(B, n_stage, n_p, -1))  # [B, stages, patches, H]
        st = self.static_emb(static)
        if static_keep is not None:
            st = st * static_keep[:, None]
        ctx = ctx + (self.t_mlp(step_embedding(t, H)) + st)[:, None, None, :]
        # channel independence: every (sequence, channel) pair is its own row
        ctx = (ctx[:, None] + self.chan[None, :, None, None, :]).reshape(B * C, n_stage, n_p, H)
        x = F.pad(z, (0, 0, 0, pad)).permute(0, 2, 1).reshape(B * C, n_stage * Ls)
        outs: list[torch.Tensor] = []
        memory: list[torch.Tensor] | None = None
        for m in range(n_stage):
            xs = x[:, m * Ls:(m + 1) * Ls]
            est = torch.zeros_like(xs)
            trends = []
            for s in range(self.S):
                tok = self.patch_in[s](xs.reshape(B * C, n_p, P)) + self.patch_pos + ctx[:, m]
                mem = self.start.expand(B * C, 1, H) if memory is None else memory[s]
                h = self.dec[s](self.enc[s](tok), mem)
                trend = moving_average(self.patch_out[s](h).reshape(B * C, Ls), self.kernels[s])
                xs = xs - trend  # the residual goes on to the next, finer scale
                est = est + trend
                trends.append(trend)
            if outs:  # pull the stage's start towards the previous stage's end (causal: earlier stages only)
                est = est + self.align * (outs[-1][:, -1:] - est[:, :1])
            outs.append(est)
            memory = []
            for s, tr in enumerate(trends):  # multi-channel fusion -> the next stage's history
                tr = tr.reshape(B, C, Ls)
                fused = (tr + self.fuse[s](tr)).reshape(B * C, n_p, P)
                memory.append(self.hist_in[s](fused) + self.patch_pos)
        out = torch.cat(outs, -1).reshape(B, C, n_stage * Ls)[..., :T]
        return out.permute(0, 2, 1)
