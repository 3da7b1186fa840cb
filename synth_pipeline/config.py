"""Model configuration: one dataclass, three presets, and ``key=value`` overrides.

Saved as JSON next to the weights so a model directory fully describes how it was trained.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass
from typing import Any

import yaml

from synth_pipeline.errors import ConfigError
from synth_pipeline.privacy import check_protection

DECODERS = ("mlp", "gru")  # VAE decoder (models/vae.py): per-step MLP, or MLP + bidirectional GRU
SOLVERS = ("ddpm", "dpm++2m", "dpm++2m-sde")  # reverse updates (models/scheduler.py)
OBJECTIVES = ("vae", "psld")  # autoencoder objective: KL-annealed VAE, or PSLD (models/psld.py)
REFINES = ("none", "l2d", "auto")  # data-space refinement (models/refine.py); auto: l2d when there are numerics
LONGS = ("none", "stagediff")  # long-sequence prior: one denoiser over all steps, or Stage-Diff (models/stagediff.py)
# deprecated spellings of model.long, still accepted (configs and saved models written before the
# rename): mapped to the current value, with a DeprecationWarning
LONG_ALIASES = {"stage": "stagediff"}
# training budget (models/timeautodiff.TimeAutoDiff.budgets): auto = steps follow the data size, with the
# *_steps options as caps; fixed = exactly the *_steps options (the behaviour before issue 16)
BUDGETS = ("auto", "fixed")

# fast preset's data-size budget (benchmarks/README.md "Speed of the fast preset"). The floor: measured
# on pollution windows and a 40-entity panel (2 seeds each), floors of 150 VAE / 300 prior steps more
# than doubled the panel's discriminative score (0.14 -> 0.32) and 20 epochs on pollution (420 / 840
# steps) raised it 0.13 -> 0.21: small panels are step-bound, not epoch-bound. Raised from 600 to 1500
# for issue 16 item 3: at 600 VAE steps the autoencoder alone (real sequences encoded and decoded)
# scored 0.18-0.21 temporal discriminative on pollution, above the gate's 0.2; at 1500, 0.016-0.027.
EPOCHS_FAST, MIN_STEPS_FAST = 20.0, 1500

PRESETS: dict[str, dict[str, Any]] = {
    # CPU, a few minutes on the sample data
    "fast": dict(
        hidden_dim=64, vae_steps=1500, diffusion_steps=2400, batch_size=64, num_timesteps=100,
        sampling_steps=20, denoiser_layers=2, static_steps=300, epochs=EPOCHS_FAST, min_steps=MIN_STEPS_FAST,
        # issue 16 item 3 (benchmarks/README.md "Fidelity of the fast preset"): the former fast preset
        # (600 / 1200 steps, a 1-layer denoiser, 10 reverse steps, L2D refinement) failed the gate's
        # temporal check on every 24-step set (pollution 0.336). A 2-layer denoiser with 20 reverse
        # steps, 1500 / 2400 steps and the step-to-step loss term: pollution 0.080, metro_weather 0.196
        # (was 0.27); L2D refinement no longer pays for itself there, so it is off
        difference_loss=2.0, refine="none",
    ),
    "default": dict(
        hidden_dim=128, vae_steps=2500, diffusion_steps=5000, batch_size=64, num_timesteps=100,
        sampling_steps=20, denoiser_layers=2, static_steps=800, epochs=60.0, min_steps=2500,
    ),
    # GPU-sized
    "quality": dict(
        hidden_dim=256, vae_steps=8000, diffusion_steps=20000, batch_size=128, num_timesteps=200,
        sampling_steps=50, denoiser_layers=3, static_steps=2000, epochs=150.0, min_steps=8000,
    ),
}


@dataclass
class ModelConfig:
    preset: str = "fast"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    progress: bool = True
    # encoding
    n_quantiles: int = 256
    clip_quantiles: tuple[float, float] = (0.001, 0.999)  # the audit's unprotected maps only
    # privacy protection (transformers/protection.py): a category level, start-time bin or length bin
    # needs protect_k distinct entities (sequences of a keyless series); numeric tails are clipped at a
    # random clip_rank-th extreme entity; protected levels decode to rare_token
    protect_k: int = 5
    clip_rank: tuple[int, int] = (5, 7)
    rare_token: str = "_RARE_"
    max_categories: int = 1000
    static_bins: int = 32
    min_bin_sequences: int = 10  # small panels get fewer level / static-numeric bins (memorisation)
    min_condition_count: int = 5  # static model: rarer parent categories are conditioned on jointly
    entity_levels: bool = True  # model each sequence's level separately from its dynamics
    # VAE (feature-axis compression)
    latent_dim: int | None = None  # None: models.timeautodiff.default_latent_dim (columns, many-level categoricals)
    hidden_dim: int = 64
    embed_dim: int = 8
    n_fourier: int = 4
    vae_steps: int = 1500
    vae_lr: float = 2e-3
    vae_crop: int | None = 32  # the VAE trains on random windows of this many steps (it is local)
    kl_start: float = 0.1  # KL weight annealed geometrically from kl_start to kl_end
    kl_end: float = 1e-5
    latent_noise: float = 0.1  # decoder trained to tolerate latent errors of this share of the latent spread
    decoder: str = "mlp"  # mlp: per-step decoder | gru: MLP + bidirectional GRU (the paper's MLP + RNN)
    # latent diffusion
    denoiser: str = "gru"  # gru | transformer
    denoiser_layers: int = 2
    diffusion_steps: int = 2400
    diffusion_lr: float = 1e-3
    num_timesteps: int = 100
    beta_schedule: str = "linear"  # linear | cosine
    prediction_type: str = "v_prediction"  # epsilon | sample (z_0) | v_prediction (best conditioned)
    sampling_steps: int = 20  # reverse steps at generation (strided)
    # reverse update: dpm++2m-sde (default; 10 steps beat 25 strided DDPM steps, measured),
    # dpm++2m (deterministic ODE) or ddpm (strided DDPM/DDIM with ``eta``)
    solver: str = "dpm++2m-sde"
    eta: float = 1.0  # ddpm solver only: 1 = ancestral DDPM noise, 0 = deterministic DDIM
    ema_decay: float = 0.995
    # weight of the step-to-step term of the prior's loss (models/timeautodiff.step_weighted_loss): same
    # optimum, but a small budget learns smooth trajectories first; 0 = plain mean squared error
    difference_loss: float = 0.0
    static_dropout: float = 0.3  # share of training sequences whose static condition is hidden
    p_unconditional: float = 0.5  # share of training sequences with no known cells (mask API)
    # seed methods (issue 7), off unless a preset turns one on: see
    # benchmarks/README.md "Seed methods (issue 7)"
    objective: str = "vae"  # vae | psld: no KL; decoder trained on diffused latents + collapse penalty
    psld_L: int = 1000  # PSLD diffusion chain length (replaces num_timesteps for the prior)
    psld_N: int = 50  # variational-inference steps i ~ U{0..N}; sampling stops at such an i
    psld_M: int = 100  # collapse simulation on steps k ~ U{M..L}
    psld_gamma: int = 2  # VI weight alpha_bar[gamma * i]
    psld_eta: float = 1.0  # collapse weight 1 - alpha_bar[ceil(k / eta)]
    refine: str = "none"  # none | l2d: data-space diffusion on numeric columns, conditioned on the latent | auto
    refine_steps: int | None = None  # refiner training steps (None: diffusion_steps)
    # none | stagediff: Stage-Diff prior (stage-wise, trend/residual decomposition); "stage" is a deprecated alias
    long: str = "none"
    stage_length: int = 64  # steps per stage; sequences must have at least this many
    stage_patch: int = 8  # patch length inside a stage (divides stage_length)
    stage_scales: int = 3  # progressive trend/residual decomposition layers per stage
    # static attribute model
    static_steps: int = 300
    # training loop. Budget (budget=auto): each component trains
    #   min(cap, max(floor, ceil(passes * steps_per_epoch)))
    # steps, where steps_per_epoch = ceil(training tokens / tokens per batch) (the VAE's batch holds
    # vae_crop-step windows, the prior's and refiner's whole sequences, the static model's one row per
    # entity), passes = epochs (VAE, static) or 2 * epochs (prior, refiner: the presets' 1:2 ratio),
    # floor = min_steps (4 * min_steps for prior and refiner), cap = vae_steps / diffusion_steps /
    # refine_steps / static_steps. Validation runs every min(eval_every, max(5, ceil(steps / 20)))
    # steps, so early stopping (patience) can act inside small budgets. budget=fixed: exactly the
    # *_steps options, validation every eval_every steps (early stopping still applies).
    budget: str = "auto"
    epochs: float = EPOCHS_FAST
    min_steps: int = MIN_STEPS_FAST
    batch_size: int = 64
    batch_tokens: int = 2048  # long sequences: batch = max(8, min(batch_size, batch_tokens // T))
    val_fraction: float = 0.1
    eval_every: int = 100
    patience: int = 5  # evaluations without improvement before early stopping
    grad_clip: float = 1.0
    # torch intra-op threads at fit and sample; None: default_threads() from the worker's CPU affinity
    threads: int | None = None
    # data-parallel training over torch.distributed ranks (run under torchrun; models/distributed.py)
    distributed: bool = False
    # with distributed: ranks the release's train stage launches itself under torch.distributed.run (1: none)
    processes: int = 1
    # differential privacy (dp.py; off: null): {epsilon, delta, max_grad_norm, noise_multiplier, stats_share,
    # accountant}. Entity-level DP-SGD (Opacus) for every network + DP encoder statistics, one accountant
    privacy: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _check_types(self)
        check_seed(self.seed, "model.seed")
        check_device_name(self.device)
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset '{self.preset}'; valid presets: {', '.join(PRESETS)}")
        if self.decoder not in DECODERS:
            raise ConfigError(f"unknown model.decoder '{self.decoder}'; valid: {', '.join(DECODERS)}")
        if self.denoiser not in ("gru", "transformer"):
            raise ConfigError(f"unknown model.denoiser '{self.denoiser}'; valid: gru, transformer")
        if self.solver not in SOLVERS:
            raise ConfigError(f"unknown model.solver '{self.solver}'; valid: {', '.join(SOLVERS)}")
        if self.beta_schedule not in ("linear", "cosine"):
            raise ConfigError(f"unknown model.beta_schedule '{self.beta_schedule}'; valid: linear, cosine")
        if self.budget not in BUDGETS:
            raise ConfigError(f"unknown model.budget '{self.budget}'; valid: {', '.join(BUDGETS)}")
        if not self.epochs > 0:
            raise ConfigError(f"model.epochs={self.epochs} must be a positive number (passes over the training data)")
        self.long = _canonical_long(self.long)
        _check_options(self)
        self.clip_rank = check_protection(self.protect_k, self.clip_rank, self.rare_token)  # type: ignore[assignment]
        self.clip_quantiles = tuple(self.clip_quantiles)  # type: ignore[assignment]
        lo, hi = self.clip_quantiles
        if not 0 <= lo < hi <= 1:
            raise ConfigError("model.clip_quantiles must be two probabilities lo < hi in [0, 1]")
        for name in ("vae_steps", "diffusion_steps", "batch_size", "hidden_dim", "sampling_steps", "num_timesteps",
                     "min_steps", "eval_every", "patience"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"model.{name} must be a positive integer")
        if self.threads is not None and int(self.threads) < 1:
            raise ConfigError("model.threads must be a positive integer (or null: from the CPU affinity)")
        if not 0.0 <= self.val_fraction < 0.5:
            raise ConfigError("model.val_fraction must be in [0, 0.5)")
        _check_privacy(self)

    def protection(self):  # noqa: ANN201 - transformers.Protection (imported lazily: numpy/pandas)
        """The encoder's privacy protection for this configuration."""
        from synth_pipeline.transformers.protection import Protection

        return Protection(k=self.protect_k, clip_rank=tuple(self.clip_rank), rare_token=self.rare_token,
                          seed=self.seed)

    @classmethod
    def from_preset(cls, preset: str = "fast", overrides: dict[str, Any] | None = None, **kw: Any) -> ModelConfig:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset '{preset}'; valid presets: {', '.join(PRESETS)}")
        values = {**PRESETS[preset], **kw, **(overrides or {})}
        _check_keys(values)
        return cls(preset=preset, **values)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["clip_quantiles"] = list(self.clip_quantiles)
        d["clip_rank"] = list(self.clip_rank)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        _check_keys(d)
        return cls(**d)


def default_threads() -> int:
    """Torch intra-op threads when ``model.threads`` is None: half the CPUs this process may run on
    (``os.sched_getaffinity``), at least 1 and at most 4. Why not all of them: the networks are small
    (64-wide GRUs, batches of 64), so extra threads buy little, and on a shared worker torch's
    spinning threads oversubscribe the cores: measured on a 2-core machine at load 5.5, a VAE step ran
    at 7.0 steps/s on 1 thread and 1.0 on 2 (denoiser 19.1 vs 2.3)."""
    import os

    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(n // 2, 4))


def _canonical_long(value: Any) -> Any:
    """``model.long`` with a deprecated alias (``LONG_ALIASES``) replaced by its current name."""
    if isinstance(value, str) and value in LONG_ALIASES:
        new = LONG_ALIASES[value]
        warnings.warn(f"model.long={value} is deprecated; use model.long={new} (same model)", DeprecationWarning,
                      stacklevel=4)
        return new
    return value


def _check_options(c: ModelConfig) -> None:
    """Issue-7 options: unknown values list the valid ones; impossible PSLD / Stage-Diff settings
    fail here, before any training."""
    for name, valid in (("objective", OBJECTIVES), ("refine", REFINES), ("long", LONGS)):
        if getattr(c, name) not in valid:
            raise ConfigError(f"unknown model.{name} '{getattr(c, name)}'; {name} must be one of: {', '.join(valid)}")
    L = int(c.psld_L)
    if L < 2:
        raise ConfigError(f"model.psld_L={c.psld_L} must be an integer >= 2 (the paper uses 1000)")
    if not 0 <= int(c.psld_N) <= L:
        raise ConfigError(f"model.psld_N={c.psld_N} must be in [0, psld_L={L}] (the paper uses N=50 with L=1000)")
    if not 1 <= int(c.psld_M) <= L:
        raise ConfigError(f"model.psld_M={c.psld_M} must be in [1, psld_L={L}] (the paper uses M=100 with L=1000)")
    if int(c.psld_gamma) < 1 or int(c.psld_gamma) * int(c.psld_N) > L:
        raise ConfigError(
            f"model.psld_gamma={c.psld_gamma} must be an integer >= 1 with psld_gamma * psld_N <= psld_L "
            f"(valid here: 1..{max(1, L // max(int(c.psld_N), 1))})"
        )
    if not c.psld_eta >= 1:
        raise ConfigError(f"model.psld_eta={c.psld_eta} must be >= 1")
    if not 1 <= int(c.processes) <= 256:
        raise ConfigError(f"model.processes={c.processes} must be between 1 and 256 (ranks the train stage launches "
                          "under torchrun with model.distributed; 1: train in one process)")
    if c.refine_steps is not None and int(c.refine_steps) < 1:
        raise ConfigError("model.refine_steps must be a positive integer (or null: diffusion_steps)")
    if int(c.stage_patch) < 1 or int(c.stage_length) < int(c.stage_patch) or int(c.stage_length) % int(c.stage_patch):
        raise ConfigError(
            f"model.stage_length={c.stage_length} must be a positive multiple of model.stage_patch={c.stage_patch}"
        )
    if int(c.stage_scales) < 1:
        raise ConfigError(f"model.stage_scales={c.stage_scales} must be >= 1")


MAX_SEED = 2**32 - 1  # numpy's and torch's seeding accept 0 .. 2**32 - 1 everywhere
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_seed(seed: Any, what: str = "seed") -> int:
    """A seed usable by numpy and torch: an integer in [0, 2**32 - 1]."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{what}={seed!r} is not a valid seed; use an integer from 0 to {MAX_SEED}")
    return seed


def check_device_name(device: Any) -> str:
    """``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N`` (no torch import: configs are parsed in DAG files)."""
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise ConfigError(f"device {device!r} is not valid; use auto, cpu, cuda, cuda:N (N = GPU index) or mps")
    return device


def check_device(device: str) -> str:
    """``check_device_name`` plus: the device exists on this machine (imports torch)."""
    check_device_name(device)
    if device in ("auto", "cpu"):
        return device
    import torch

    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("device 'mps' is not available on this machine; use --device cpu (or auto)")
        return device
    if not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' is not available: this machine has no usable CUDA GPU "
                          f"(or torch was built without CUDA); use --device cpu (or auto)")
    n = torch.cuda.device_count()
    idx = int(device.partition(":")[2] or 0)
    if idx >= n:
        raise ConfigError(f"device '{device}' does not exist: this machine has {n} CUDA GPU(s) "
                          f"(cuda:0 .. cuda:{n - 1}); pick one of them or use auto")
    return device


_TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def _check_privacy(c: ModelConfig) -> None:
    """model.privacy: a valid guarantee, and only with the components DP-SGD covers (dp.py)."""
    from synth_pipeline.dp import PrivacyConfig

    p = PrivacyConfig.from_dict(c.privacy)
    if p is None:
        return
    c.privacy = p.to_dict()
    for name, ok, valid in (("objective", c.objective == "vae", "vae"), ("long", c.long == "none", "none"),
                            ("denoiser", c.denoiser == "gru", "gru"), ("distributed", not c.distributed, "false")):
        if not ok:
            raise ConfigError(f"model.privacy trains with DP-SGD, which covers model.{name}={valid} only "
                              f"(got {getattr(c, name)!r}); set model.{name}: {valid} or drop model.privacy")


def _check_types(c: ModelConfig) -> None:
    """Each option has the type of its field (``--set model.vae_steps=abc`` names the option)."""
    for f in dataclasses.fields(c):
        v = getattr(c, f.name)
        t = str(f.type).replace(" ", "")
        optional = t.endswith("|None")
        base = t.removesuffix("|None")
        if v is None and optional:
            continue
        ok = True
        if base == "int":
            if isinstance(v, float) and v.is_integer():
                setattr(c, f.name, int(v))
            else:
                ok = isinstance(v, int) and not isinstance(v, bool)
        elif base == "float":
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        elif base == "bool":
            ok = isinstance(v, bool)
        elif base == "str":
            ok = isinstance(v, str)
        elif base.startswith("tuple[float"):
            ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        else:
            continue
        if not ok:
            want = _TYPE_NAMES.get(base, "two numbers [lo, hi]") + (" or null" if optional else "")
            raise ConfigError(f"model.{f.name}={v!r} must be {want} (default: {f.default!r}); "
                              f"e.g. --set model.{f.name}={_example(f)}")


def _example(f: dataclasses.Field) -> str:
    d = f.default
    if isinstance(d, bool):
        return str(d).lower()
    if isinstance(d, tuple):
        return "[" + ", ".join(map(str, d)) + "]"
    return "null" if d is None else str(d)


def _check_keys(values: dict[str, Any]) -> None:
    valid = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ConfigError(f"unknown model option(s) {unknown}; valid options: {', '.join(sorted(valid))}")


def parse_overrides(items: list[str] | None, prefix: str = "model.") -> dict[str, Any]:
    """``["model.vae_steps=50", "model.denoiser=transformer"]`` -> ``{"vae_steps": 50, ...}`` (YAML-typed)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. model.vae_steps=100)")
        key = key.strip()
        if key.startswith(prefix):
            key = key[len(prefix):]
        elif "." in key:
            raise ConfigError(f"override '{item}': only '{prefix}<option>' keys can be set here")
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key] = raw
    _check_keys(out)
    return out
