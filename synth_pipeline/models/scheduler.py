"""DDPM noise schedule (diffusers-style): the scheduler owns all the noise math.

``add_noise`` is the forward process q(z_t | z_0); ``step`` is one reverse update with
ε-prediction. ``set_timesteps(k)`` strides the reverse process (DDIM when eta=0, ancestral
DDPM when eta=1 and k equals the training steps).
"""

from __future__ import annotations

import math
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

    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod.to(z0.device)[t].view(-1, *([1] * (z0.dim() - 1)))
        return a.sqrt() * z0 + (1 - a).sqrt() * noise

    def target(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser is trained to output."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return z0
        return self.velocity(z0, noise, t)

    def velocity(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod.to(z0.device)[t].view(-1, *([1] * (z0.dim() - 1)))
        return a.sqrt() * noise - (1 - a).sqrt() * z0

    def step(
        self,
        model_output: torch.Tensor,
        t: int,
        t_prev: int,
        z_t: torch.Tensor,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One reverse update z_t -> z_{t_prev}. At the last step (t_prev < 0) return the clean estimate."""
        ac = self.alphas_cumprod.to(z_t.device)
        a_t = ac[t]
        if self.prediction_type == "epsilon":
            eps = model_output
            z0 = (z_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        elif self.prediction_type == "sample":
            z0 = model_output
            eps = (z_t - a_t.sqrt() * z0) / (1 - a_t).sqrt()
        else:  # v = sqrt(a) eps - sqrt(1-a) z0
            z0 = a_t.sqrt() * z_t - (1 - a_t).sqrt() * model_output
            eps = (1 - a_t).sqrt() * z_t + a_t.sqrt() * model_output
        if t_prev < 0:  # the final denoising step, applied exactly once: no noise is added back
            return z0
        a_prev = ac[t_prev]
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp(min=0).sqrt()
        dir_coef = (1 - a_prev - sigma**2).clamp(min=0).sqrt()
        z = a_prev.sqrt() * z0 + dir_coef * eps
        if eta > 0:
            noise = torch.randn(z_t.shape, generator=generator, device="cpu").to(z_t.device)
            z = z + sigma * noise
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
    t=0 is first order (stable at few steps). State (the previous clean estimate) is reset by
    ``set_timesteps``, which every sampling batch calls first.
    """

    sde: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._prev: tuple[torch.Tensor, torch.Tensor] | None = None

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        self._prev = None
        return super().set_timesteps(num_inference_steps)

    def clean_estimate(self, model_output: torch.Tensor, t: int, z_t: torch.Tensor) -> torch.Tensor:
        a_t = self.alphas_cumprod.to(z_t.device).double()[t]
        out, z = model_output.double(), z_t.double()
        if self.prediction_type == "epsilon":
            return (z - (1 - a_t).sqrt() * out) / a_t.sqrt()
        if self.prediction_type == "sample":
            return out
        return a_t.sqrt() * z - (1 - a_t).sqrt() * out

    def step(
        self,
        model_output: torch.Tensor,
        t: int,
        t_prev: int,
        z_t: torch.Tensor,
        eta: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One solver update z_t -> z_{t_prev} (``eta`` is unused: ``sde`` decides the noise)."""
        x0 = self.clean_estimate(model_output, t, z_t)
        if t_prev < 0:  # the final step: the clean estimate, applied exactly once
            self._prev = None
            return x0.to(z_t.dtype)
        ac = self.alphas_cumprod.to(z_t.device).double()
        a_t, a_p = ac[t], ac[t_prev]
        h = 0.5 * (torch.log(a_p / (1 - a_p)) - torch.log(a_t / (1 - a_t)))  # log-SNR step (lambda)
        d = x0
        if self._prev is not None and t_prev > 0:  # second order from the previous estimate
            x0_prev, h_prev = self._prev
            d = x0 + 0.5 * (h / h_prev) * (x0 - x0_prev)
        self._prev = (x0, h)
        sig_t, sig_p, al_p = (1 - a_t).sqrt(), (1 - a_p).sqrt(), a_p.sqrt()
        z = z_t.double()
        if not self.sde:
            z_next = (sig_p / sig_t) * z - al_p * torch.expm1(-h) * d
        else:
            z_next = (sig_p / sig_t) * torch.exp(-h) * z - al_p * torch.expm1(-2 * h) * d
            noise = torch.randn(z_t.shape, generator=generator, device="cpu").to(z_t.device).double()
            z_next = z_next + sig_p * (-torch.expm1(-2 * h)).sqrt() * noise
        return z_next.to(z_t.dtype)


def make_scheduler(solver: str, **kw) -> DDPMScheduler:
    """The scheduler for ``model.solver`` (one of SOLVERS)."""
    if solver == "ddpm":
        return DDPMScheduler(**kw)
    if solver in ("dpm++2m", "dpm++2m-sde"):
        return DPMSolverScheduler(**kw, sde=solver.endswith("sde"))
    raise ConfigError(f"unknown model.solver '{solver}'; valid: {', '.join(SOLVERS)}")
