"""Dependency measures (PSLD paper, Sec. 3.2 and Appendix C-D): how much each decoder output step
is driven by each latent step, versus the decoder's other inputs.

For a decoder h = f(x) with inputs x (the latent steps z_1..z_T and the calendar context of each
step; the entity's static attributes are held fixed as part of f) and the all-zero baseline O,

    m_{t,j} = < h_t - h~_t , sum_k x_{j,k} int_0^1 d h_t(s x) / d x_{j,k} ds > / || h_t - h~_t ||^2

(h~_t = f(O)_t). Integrated gradients are complete, so sum_j m_{t,j} = 1 over all inputs
(Proposition 3.3): each row of the matrix is a signed split of output step t among the latent steps
and the context. The integral uses Gauss-Legendre quadrature (the paper averages random points;
with 32 nodes the rows sum to 1 within about 1e-5 for our smooth decoders, and the remaining gap
is reported as ``completeness_gap``).

Scalar summary: ``latent_dependency`` = mean over output steps of the latent steps' total share
(the paper's global dependency m_{t,0}: about 0 when the posterior has collapsed and the decoder
reconstructs from context alone; about 0.5 or more for the paper's stable model).
``local_latent_dependency`` is the share of output step t's own latent step z_t.
A model whose latent dependency is below ``COLLAPSE_THRESHOLD`` is reported as collapsed.

Aggregates only: the matrix is an average over generated sequences; nothing real is read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

COLLAPSE_THRESHOLD = 0.2  # latent share below which the decoder is reported as ignoring its latent
DEFAULT_POINTS = 32
STEP_CHUNK = 64  # output steps per batched backward pass (bounds memory on long sequences)


@dataclass
class DependencyResult:
    """Mean dependency matrix over sequences and its summary."""

    latent: np.ndarray  # [T_out, T_in] m_{t,j} of latent step j, averaged over sequences
    context: np.ndarray  # [T_out] the calendar context's total share of output step t
    n_sequences: int
    n_points: int
    completeness_gap: float  # max |sum_j m_{t,j} - 1| over sequences and steps (quadrature error)
    degenerate_rows: int  # (sequence, step) rows whose output equals the baseline's (left out)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def latent_share(self) -> np.ndarray:
        """[T_out] the latent steps' total share of each output step (global dependency)."""
        return self.latent.sum(1)

    def summary(self) -> dict[str, Any]:
        share = self.latent_share
        t = np.arange(len(share))
        diag = self.latent[t, t] if self.latent.shape[1] >= len(share) else np.full(len(share), np.nan)
        latent_dep = float(np.nanmean(share))
        return {
            "latent_dependency": latent_dep,
            "local_latent_dependency": float(np.nanmean(diag)),
            "context_dependency": float(np.nanmean(self.context)),
            "latent_dependency_first": float(share[0]),
            "latent_dependency_last": float(share[-1]),
            "completeness_gap": self.completeness_gap,
            "collapsed": bool(latent_dep < COLLAPSE_THRESHOLD),
            "n_sequences": self.n_sequences,
            "output_steps": int(self.latent.shape[0]),
            "latent_steps": int(self.latent.shape[1]),
            "quadrature_points": self.n_points,
        }

    def metrics(self, prefix: str = "dependency.") -> dict[str, float]:
        """Numeric summary for MLflow (``collapsed`` as 0/1)."""
        s = self.summary()
        keys = ("latent_dependency", "local_latent_dependency", "context_dependency", "latent_dependency_first",
                "latent_dependency_last", "completeness_gap", "collapsed")
        return {f"{prefix}{k}": float(s[k]) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "latent_share_per_step": self.latent_share.round(6).tolist(), **self.notes}

    def to_state(self) -> dict[str, Any]:
        """Everything (the averaged matrix included) as JSON-able data: what a release stage writes so
        the audit stage can render the heatmap."""
        return {"latent": self.latent.round(8).tolist(), "context": self.context.round(8).tolist(),
                "n_sequences": self.n_sequences, "n_points": self.n_points,
                "completeness_gap": self.completeness_gap, "degenerate_rows": self.degenerate_rows,
                "notes": self.notes, "summary": self.summary()}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> DependencyResult:
        return cls(np.asarray(d["latent"], dtype=float), np.asarray(d["context"], dtype=float), int(d["n_sequences"]),
                   int(d["n_points"]), float(d["completeness_gap"]), int(d["degenerate_rows"]), dict(d.get("notes", {})))

    def heatmap_png(self, max_cells: int = 96) -> str:
        """:meth:`heatmap_figure` as a base64 PNG (the report's style and resolution, ``plotting.png_b64``)."""
        from synth_pipeline.evaluation.plotting import plot_style, png_b64

        with plot_style():
            return png_b64(self.heatmap_figure(max_cells))

    def heatmap_figure(self, max_cells: int = 96):  # noqa: ANN201 - matplotlib Figure
        """A figure in the report's style, two panels sharing the x axis "output step" (1 .. analysed
        steps): the latent's and the calendar context's share of each output step, and the matrix
        m[t, j] with the latent step j on the y axis (in steps; long sequences are drawn as blocks of
        steps). Save it inside ``plotting.plot_style()``."""
        from synth_pipeline.evaluation.plotting import new_figure, plot_style

        T_out, T_in = self.latent.shape
        step = max(1, int(np.ceil(max(T_out, T_in) / max_cells)))  # long sequences: block means
        mat = self.latent
        if step > 1:
            r, c = -(-T_out // step), -(-T_in // step)
            lat = np.full((r * step, c * step), np.nan)
            lat[:T_out, :T_in] = self.latent
            mat = np.nanmean(lat.reshape(r, step, c, step), axis=(1, 3)) * step  # block sums per output row
        t = np.arange(1, T_out + 1)
        with plot_style():
            fig = new_figure(11.0, 8.0)
            ax1, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.35]})
            ax1.axhspan(0, 1, color="#ececec", zorder=0, label="0 to 1")
            ax1.plot(t, self.latent_share, color="#1f77b4", lw=1.6, label="latent steps (all)")
            ax1.plot(t, self.context, color="#d62728", lw=1.6, label="calendar context")
            ax1.axhline(COLLAPSE_THRESHOLD, color="#555", ls="--", lw=1, label="collapse threshold")
            ax1.set_ylabel("share of the output step")
            ax1.set_title(f"who drives each output step (latent dependency "
                          f"{self.summary()['latent_dependency']:.3f}; the two shares add up to 1)")
            ax1.legend(loc="best", framealpha=0.85, ncol=4)
            lim = float(np.nanmax(np.abs(mat))) if np.isfinite(mat).any() else 1.0
            # x: output step t, y: latent step j, both in steps
            im = ax2.imshow(mat.T, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest",
                            origin="lower", extent=(0.5, mat.shape[0] * step + 0.5, 0.5, mat.shape[1] * step + 0.5))
            ax2.set_xlim(0.5, T_out + 0.5)
            ax2.set_ylim(0.5, T_in + 0.5)
            ax2.set_xlabel(f"decoder output step t (first {T_out} of {T_in} analysed)" if T_out < T_in
                           else "decoder output step t")
            ax2.set_ylabel("latent step j")
            ax2.set_title("share of output step t due to latent step j" + (f" (blocks of {step} steps)" if step > 1
                                                                           else ""))
            cb = fig.colorbar(im, ax=ax2, shrink=0.95, pad=0.01)
            cb.set_label("signed share")
        return fig


def gauss_legendre(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights on [0, 1]."""
    x, w = np.polynomial.legendre.leggauss(n)
    return torch.from_numpy((x + 1) / 2).float(), torch.from_numpy(w / 2).float()


def dependency_measures(
    decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    context: torch.Tensor,
    present: torch.Tensor | None = None,
    n_points: int = DEFAULT_POINTS,
    max_steps: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> DependencyResult:
    """Dependency matrix of ``decode(z, context) -> h [B, T, H]`` on the latent ``z`` [B, T, C]
    (per latent step) and ``context`` [B, T, K] (one total), baseline all zeros.

    ``max_steps`` limits the output steps (rows) analysed; every latent step stays a column.
    Rows at padding steps (``present`` = 0) and rows whose output equals the baseline's are left out.
    ``progress`` (optional) gets a line at each quarter of the quadrature points (the slow part:
    one batched backward pass per node and block of output steps).
    """
    z = z.detach().float().clone()
    context = context.detach().float().clone()
    B, T, _ = z.shape
    T_out = T if max_steps is None else min(T, int(max_steps))
    present = torch.ones(B, T) if present is None else present.detach().float().cpu()
    with torch.no_grad():
        dh = (decode(z, context) - decode(torch.zeros_like(z), torch.zeros_like(context)))[:, :T_out]
    norm2 = (dh**2).sum(-1)  # [B, T_out]
    nodes, weights = gauss_legendre(n_points)
    m_lat = torch.zeros(B, T_out, T)
    m_ctx = torch.zeros(B, T_out)
    t0, reported = time.perf_counter(), 0
    for i, (s, w) in enumerate(zip(nodes.tolist(), weights.tolist(), strict=True)):
        zs = (z * s).requires_grad_(True)
        cs = (context * s).requires_grad_(True)
        h = decode(zs, cs)[:, :T_out]
        g_t = (h * dh).sum(-1)  # [B, T_out]: <h_t - h~_t, h_t(s x)>, one scalar per output step
        for a in range(0, T_out, STEP_CHUNK):
            b_ = min(a + STEP_CHUNK, T_out)
            eye = torch.zeros(b_ - a, B, T_out)
            eye[torch.arange(b_ - a), :, torch.arange(a, b_)] = 1.0
            gz, gc = torch.autograd.grad(g_t, (zs, cs), grad_outputs=eye, is_grads_batched=True, retain_graph=True)
            # x_{j,k} * d<dh_t, h_t>/dx_{j,k}, summed over the features k of input step j
            m_lat[:, a:b_] += w * (gz * z).sum(-1).permute(1, 0, 2).detach()
            m_ctx[:, a:b_] += w * (gc * context).sum((-1, -2)).permute(1, 0).detach()
        quarter = 4 * (i + 1) // n_points
        if progress is not None and quarter > reported:
            reported = quarter
            progress(f"dependency diagnostic: {i + 1}/{n_points} quadrature points ({25 * quarter}%, "
                     f"{time.perf_counter() - t0:.1f}s)")
    ok = (norm2 > 1e-12) & (present[:, :T_out] > 0)
    denom = norm2.clamp(min=1e-12)
    m_lat = m_lat / denom[..., None]
    m_ctx = m_ctx / denom
    row_sum = m_lat.sum(-1) + m_ctx
    gap = float((row_sum - 1).abs()[ok].max()) if ok.any() else float("nan")
    okf = ok.float()
    cnt = okf.sum(0).clamp(min=1)  # sequences contributing to each output step
    lat_mean = (m_lat * okf[..., None]).sum(0) / cnt[:, None]
    ctx_mean = (m_ctx * okf).sum(0) / cnt
    lat_mean[okf.sum(0) == 0] = float("nan")
    ctx_mean[okf.sum(0) == 0] = float("nan")
    return DependencyResult(
        latent=lat_mean.numpy(), context=ctx_mean.numpy(), n_sequences=B, n_points=n_points,
        completeness_gap=gap, degenerate_rows=int(((norm2 <= 1e-12) & (present[:, :T_out] > 0)).sum()),
    )


def decoder_outputs(vae: Any, static: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The VAE decoder as h = f(z, calendar): numeric values, missing-flag and category logits
    concatenated per step (the entity's static attributes fixed)."""

    def f(z: torch.Tensor, calendar: torch.Tensor) -> torch.Tensor:
        out = vae.decode(z, calendar, static)
        return torch.cat([out["num"], out["miss"], out["cat"]], -1)

    return f
