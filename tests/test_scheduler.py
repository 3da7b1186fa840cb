"""The noise-schedule math: every solver, driven by the exact posterior-mean model of a Gaussian,
must land on that Gaussian (mean and spread), in few steps."""

from __future__ import annotations

import pytest
import torch

from synth_pipeline.config import ModelConfig
from synth_pipeline.errors import ConfigError
from synth_pipeline.models.scheduler import DDPMScheduler, DPMSolverScheduler, make_scheduler

MU, SD = 1.5, 1.0  # a standardised latent


def exact_output(sch: DDPMScheduler, z: torch.Tensor, t: int) -> torch.Tensor:
    """What a perfect denoiser outputs for data ~ N(MU, SD^2): E[z0 | z_t] in the scheduler's
    parameterisation."""
    a = sch.alphas_cumprod[t].double()
    x0 = MU + (a.sqrt() * SD**2 / (a * SD**2 + 1 - a)) * (z.double() - a.sqrt() * MU)
    eps = (z.double() - a.sqrt() * x0) / (1 - a).sqrt()
    if sch.prediction_type == "epsilon":
        return eps.float()
    if sch.prediction_type == "sample":
        return x0.float()
    return (a.sqrt() * eps - (1 - a).sqrt() * x0).float()


def run(sch: DDPMScheduler, steps: int, n: int = 40_000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, 1, generator=g)
    ts = sch.set_timesteps(steps).tolist()
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        z = sch.step(exact_output(sch, z, t), t, t_prev, z, eta=1.0, generator=g)
    return z


@pytest.mark.parametrize(("solver", "steps", "tol"), [("ddpm", 100, 0.10), ("dpm++2m", 25, 0.05),
                                                   ("dpm++2m-sde", 25, 0.06)])
@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_solvers_reach_the_data_distribution(solver: str, steps: int, tol: float, prediction_type: str) -> None:
    sch = make_scheduler(solver, num_train_timesteps=100, prediction_type=prediction_type)
    z = run(sch, steps)
    assert abs(z.mean().item() - MU) < 0.03
    assert abs(z.std().item() / SD - 1) < tol, z.std().item()


@pytest.mark.parametrize("solver", ["dpm++2m", "dpm++2m-sde"])
def test_multistep_solver_beats_strided_ddpm_at_ten_steps(solver: str) -> None:
    """The reason a DPM-Solver++ variant is the default at 10 steps: with the same 10 model calls
    the strided DDPM update collapses the spread (measured 0.72 of the true std here) while the
    second-order solvers keep most of it (0.90-0.93)."""
    err = {}
    for name in ("ddpm", solver):
        z = run(make_scheduler(name, num_train_timesteps=100, prediction_type="v_prediction"), 10)
        err[name] = abs(z.std().item() / SD - 1)
    assert err[solver] < 0.15
    assert err[solver] < err["ddpm"] - 0.1


def test_second_order_beats_first_order_deterministic() -> None:
    """Deterministic samplers, same 6 model calls: DPM-Solver++(2M) ends closer to the true spread
    than DDIM (eta=0)."""
    ddim = DDPMScheduler(100, prediction_type="v_prediction")
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(40_000, 1, generator=g)

    def run_det(sch: DDPMScheduler) -> float:
        z = z0.clone()
        ts = sch.set_timesteps(6).tolist()
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            z = sch.step(exact_output(sch, z, t), t, t_prev, z, eta=0.0)
        return abs(z.std().item() - SD)

    assert run_det(DPMSolverScheduler(100, prediction_type="v_prediction", sde=False)) < run_det(ddim)


def test_solver_state_is_reset_between_batches() -> None:
    sch = make_scheduler("dpm++2m", num_train_timesteps=100, prediction_type="v_prediction")
    a, b = run(sch, 10, 1000), run(sch, 10, 1000)
    assert torch.equal(a, b)


def test_unknown_solver_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="valid: ddpm, dpm\\+\\+2m, dpm\\+\\+2m-sde"):
        ModelConfig(solver="euler")
    with pytest.raises(ConfigError, match="valid"):
        make_scheduler("euler")
