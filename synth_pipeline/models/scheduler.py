"""DDPM noise schedule (diffusers-style): the scheduler owns all the noise math.

``add_noise`` is the forward process q(z_t | z_0); ``clean_and_noise`` turns a denoiser output
(epsilon, sample or v) into the clean and noise estimates; ``step`` is one reverse update and
``reverse`` the whole reverse chain, the one loop every sampler runs (the latent prior, PSLD's
Algorithm 2, the L2D refiner). Timesteps are one int for all rows or a tensor [B], one per row:
PSLD's sequences each run their own chain and stop at their own step, and a row whose next step
is -1 ends with its clean estimate (a row mask). ``set_timesteps(k)`` strides the reverse process
(DDIM when eta=0, ancestral DDPM when eta=1 and k equals the training steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from synth_pipeline.config import SOLVERS
from synth_pipeline.errors import ConfigError

BETA_SCHEDULES = ("linear", "cosine")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


@dataclass
class DDPMScheduler:
    num_train_timesteps: int = 100
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "epsilon"  # epsilon: the noise; sample: z_0; v_prediction: the velocity

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(
                f"unknown model.prediction_type '{self.prediction_type}'; valid: {', '.join(PREDICTION_TYPES)}"
            )
        T = self.num_train_timesteps
        if T < 2:
            raise ConfigError("model.num_timesteps must be at least 2")
        if self.beta_schedule == "linear":
            # scale so a short schedule still reaches pure noise (the 1000-step defaults, rescaled)
            scale = 1000 / T
            betas = torch.linspace(self.beta_start * scale, min(self.beta_end * scale, 0.999), T, dtype=torch.float64)
        elif self.beta_schedule == "cosine":
            s = 0.008
            t = torch.linspace(0, T, T + 1, dtype=torch.float64) / T
            f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        else:
            raise ConfigError(
                f"unknown model.beta_schedule '{self.beta_schedule}'; valid: {', '.join(BETA_SCHEDULES)}"
            )
        self.betas = betas.float()
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas.double(), 0).float()
        self.timesteps = torch.arange(T - 1, -1, -1)

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """Evenly strided reverse timesteps, always ending at t=0."""
        k = max(1, min(int(num_inference_steps), self.num_train_timesteps))
        ts = torch.linspace(self.num_train_timesteps - 1, 0, k).round().long().unique_consecutive()
        self.timesteps = ts
        return ts

    # -- the noise math, at one timestep for all rows (an int) or one per row (a tensor [B]) ---------
    def abar(self, t: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """alpha_bar at ``t`` in ``like``'s device and dtype, shaped to broadcast against it: a 0-d
        tensor for a scalar ``t``, [B, 1, ...] for per-row steps [B]. Negative steps read index 0
        (the value is then unused: a row with ``t < 0`` has ended)."""
        ac = self.alphas_cumprod.to(like.device, like.dtype)
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return ac[t.to(like.device).clamp(min=0)].view(-1, *([1] * (like.dim() - 1)))
        return ac[max(int(t), 0)]

    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(z_t | z_0) at per-row steps ``t`` [B]."""
        a = self.abar(t, z0)
        return a.sqrt() * z0 + (1 - a).sqrt() * noise

    def target(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser is trained to output."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return z0
        return self.velocity(z0, noise, t)

    def velocity(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar(t, z0)
        return a.sqrt() * noise - (1 - a).sqrt() * z0

    def clean_and_noise(self, model_output: torch.Tensor, t: int | torch.Tensor,
                        z_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The denoiser's output at step ``t`` (scalar or per row) -> (clean estimate z_0, noise
        estimate eps), in ``z_t``'s dtype. The one place the three parameterisations are inverted."""
        a = self.abar(t, z_t)
        out = model_output.to(z_t.dtype)
        if self.prediction_type == "epsilon":
            return (z_t - (1 - a).sqrt() * out) / a.sqrt(), out
        if self.prediction_type == "sample":
            return out, (z_t - a.sqrt() * out) / (1 - a).sqrt()
        # v = sqrt(a) eps - sqrt(1-a) z0
        return a.sqrt() * z_t - (1 - a).sqrt() * out, (1 - a).sqrt() * z_t + a.sqrt() * out

    # -- the reverse process ------------------------------------------------------------------
    def reset(self) -> None:
        """Forget solver state (none here; multistep solvers keep their previous estimate)."""

    @staticmethod
    def _ended(t_prev: int | torch.Tensor, like: torch.Tensor) -> tuple[bool, bool, torch.Tensor | None]:
        """(every row ended, some row ended, the per-row mask [B, 1, ...] or None) for ``t_prev``."""
        if isinstance(t_prev, torch.Tensor) and t_prev.dim() > 0:
            done = t_prev.to(like.device) < 0
            return bool(done.all()), bool(done.any()), done.view(-1, *([1] * (like.dim() - 1)))
        return int(t_prev) < 0, int(t_prev) < 0, None

    @staticmethod
    def _noise(z_t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(z_t.shape, generator=generator, device="cpu").to(z_t.device)

    def step(
        self,
        model_output: torch.Tensor,
        t: int | torch.Tensor,
        t_prev: int | torch.Tensor,
        z_t: torch.Tensor,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One reverse update z_t -> z_{t_prev}. ``t`` / ``t_prev``: one step for all rows (ints) or
        one per row (tensors [B]). A row whose ``t_prev < 0`` ends: it gets its clean estimate, the
        final denoising step, applied exactly once and with no noise added back; so a per-row
        ``t_prev`` is also a mask of the rows that stop here (PSLD's per-sequence stop). ``noise``:
        the noise to add (drawn from ``generator`` when None and the update needs it)."""
        z0, eps = self.clean_and_noise(model_output, t, z_t)
        all_done, any_done, done = self._ended(t_prev, z_t)
        if all_done:
            return z0
        a_t, a_prev = self.abar(t, z_t), self.abar(t_prev, z_t)
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp(min=0).sqrt()
        dir_coef = (1 - a_prev - sigma**2).clamp(min=0).sqrt()
        z = a_prev.sqrt() * z0 + dir_coef * eps
        if eta > 0:
            z = z + sigma * (self._noise(z_t, generator) if noise is None else noise.to(z.dtype))
        return torch.where(done, z0, z) if any_done else z

    def reverse(
        self,
        z: torch.Tensor,
        denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        timesteps: torch.Tensor,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
        noise_every_step: bool = False,
    ) -> torch.Tensor:
        """The reverse chain, the one loop every sampler runs. ``timesteps``: 1-D, one chain for all
        rows (as ``set_timesteps`` gives it; a final update to the clean estimate follows its last
        step), or [B, k+1], each row its own chain of k updates (a row ends with its clean estimate
        only where its chain ends in -1; otherwise its last z_t is returned). ``denoise(z_t, t)``
        takes the per-row steps [B]. ``noise_every_step``: draw the noise at every update, whether
        the update uses it or not (PSLD's Algorithm-2 sampler always has: its generator stream, and
        so its samples, stay as they were)."""
        self.reset()
        B, dev = z.shape[0], z.device
        if timesteps.dim() == 1:
            ts = timesteps.tolist() + [-1]
            pairs = [(ts[s], ts[s + 1], torch.full((B,), ts[s], device=dev)) for s in range(len(ts) - 1)]
        else:
            grid = timesteps.to(dev)
            pairs = [(grid[:, s], grid[:, s + 1], grid[:, s]) for s in range(grid.shape[1] - 1)]
        for t, t_prev, t_rows in pairs:
            noise = self._noise(z, generator) if noise_every_step else None
            z = self.step(denoise(z, t_rows), t, t_prev, z, eta=eta, generator=generator, noise=noise)
        self.reset()
        return z


@dataclass
class DPMSolverScheduler(DDPMScheduler):
    """DPM-Solver++(2M) (Lu et al. 2022) on the same noise schedule: a second-order multistep
    solver in log-SNR time on the model's clean-sample estimate. Training is unchanged (same
    ``add_noise`` / ``target``); only ``step`` differs, so a model trained once samples with either.

    Why: at 10 reverse steps the strided DDPM update loses fidelity (measured on pollution windows:
    discriminative 0.192 vs 0.176 at 25 steps) while the SDE variant of this solver at 10 steps
    scored 0.096 at 3.2x the throughput of 25 DDPM steps. ``sde=True`` re-injects noise each step
    (keeps sample diversity); ``sde=False`` is the deterministic ODE solver. The last update to
    t=0 is first order (stable at few steps), and so is any update after a zero-length one (a
    per-row chain may repeat a step). State (the previous clean estimate) is reset by ``reset``,
    which ``set_timesteps`` and ``reverse`` call first. Computed in float64.
    """

    sde: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._prev: tuple[torch.Tensor, torch.Tensor] | None = None

    def reset(self) -> None:
        self._prev = None

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        self.reset()
        return super().set_timesteps(num_inference_steps)

    def clean_estimate(self, model_output: torch.Tensor, t: int | torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        """The clean estimate z_0 in float64."""
        return self.clean_and_noise(model_output.double(), t, z_t.double())[0]

    def step(
        self,
        model_output: torch.Tensor,
        t: int | torch.Tensor,
        t_prev: int | torch.Tensor,
        z_t: torch.Tensor,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One solver update z_t -> z_{t_prev}, for all rows or per row as ``DDPMScheduler.step``
        (``eta`` is unused: ``sde`` decides the noise)."""
        z = z_t.double()
        x0 = self.clean_estimate(model_output, t, z_t)
        all_done, any_done, done = self._ended(t_prev, z_t)
        if all_done:  # the final step: the clean estimate, applied exactly once
            self._prev = None
            return x0.to(z_t.dtype)
        a_t, a_p = self.abar(t, z), self.abar(t_prev, z)
        h = 0.5 * (torch.log(a_p / (1 - a_p)) - torch.log(a_t / (1 - a_t)))  # log-SNR step (lambda)
        d = x0
        if self._prev is not None:  # second order from the previous estimate, where there is one
            x0_prev, h_prev = self._prev
            if isinstance(t_prev, torch.Tensor) and t_prev.dim() > 0:
                later = (t_prev.to(z.device) > 0).view(-1, *([1] * (z.dim() - 1)))
            else:
                later = torch.tensor(int(t_prev) > 0, device=z.device)
            second = x0 + 0.5 * (h / h_prev.clamp(min=1e-12)) * (x0 - x0_prev)
            d = torch.where(later & (h_prev > 0), second, x0)
        self._prev = (x0, h)
        sig_t, sig_p, al_p = (1 - a_t).sqrt(), (1 - a_p).sqrt(), a_p.sqrt()
        if not self.sde:
            z_next = (sig_p / sig_t) * z - al_p * torch.expm1(-h) * d
        else:
            z_next = (sig_p / sig_t) * torch.exp(-h) * z - al_p * torch.expm1(-2 * h) * d
            eps = (self._noise(z_t, generator) if noise is None else noise).double()
            z_next = z_next + sig_p * (-torch.expm1(-2 * h)).clamp(min=0).sqrt() * eps
        if any_done:
            z_next = torch.where(done, x0, z_next)
        return z_next.to(z_t.dtype)


def make_scheduler(solver: str, **kw) -> DDPMScheduler:
    """The scheduler for ``model.solver`` (one of SOLVERS)."""
    if solver == "ddpm":
        return DDPMScheduler(**kw)
    if solver in ("dpm++2m", "dpm++2m-sde"):
        return DPMSolverScheduler(**kw, sde=solver.endswith("sde"))
    raise ConfigError(f"unknown model.solver '{solver}'; valid: {', '.join(SOLVERS)}")
