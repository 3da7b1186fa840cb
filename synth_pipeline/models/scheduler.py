"""DDPM noise schedule (diffusers-style): the scheduler owns all the noise math.

``add_noise`` is the forward process q(z_t | z_0); ``step`` is one reverse update with
ε-prediction. ``set_timesteps(k)`` strides the reverse process (DDIM when eta=0, ancestral
DDPM when eta=1 and k equals the training steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

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
