"""TimeAutoDiff: a mixed-type VAE + DDPM over the whole latent trajectory (papers/timeautodiff.txt).

``fit(encoded)`` trains the VAE, then the latent diffusion prior (on normalised posterior means,
keeping an EMA of the denoiser), then the static-attribute model. ``sample(n, conditions)`` runs
one denoiser call per reverse step for the entire sequence, decodes, and fixes known cells: the
same call covers unconditional generation, imputation, forecasting and metadata conditioning.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from synth_pipeline.config import ModelConfig, check_device, default_threads
from synth_pipeline.dp import PrivacyConfig, StatisticsBudget
from synth_pipeline.encoding import EncodedData
from synth_pipeline.errors import ConfigError, ModelFileError
from synth_pipeline.models.batch import Batch, Conditions, masked_mean, to_batch
from synth_pipeline.models.conditions import ConditionEncoder
from synth_pipeline.models.denoiser import LatentDenoiser
from synth_pipeline.models.private import DPTraining, swap_grus
from synth_pipeline.models.psld import PSLD, information_free_loss
from synth_pipeline.models.refine import L2DRefiner, fit_refiner
from synth_pipeline.models.refine import refine as l2d_refine
from synth_pipeline.models.scheduler import make_scheduler
from synth_pipeline.models.stagediff import StageDiffDenoiser
from synth_pipeline.models.static import StaticAR
from synth_pipeline.models.training import EMA, Component, Trainer
from synth_pipeline.models.vae import MixedVAE

FORMAT_VERSION = 1
PRIOR_FLOOR = 4  # budget=auto: the prior's and refiner's floor is PRIOR_FLOOR * model.min_steps


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    return torch.device(device)


def default_latent_dim(n_num: int, n_missing: int, cat_cards: list[int]) -> int:
    """Latent channels when ``model.latent_dim`` is None. Numerics, missing flags and categoricals
    of up to 8 levels share a compressed budget (one channel each up to 8, else half, at least 8);
    a categorical with more levels adds ceil(log2 K) channels of its own. With one channel per
    column, the 11- and 35-level weather columns of metro_traffic were squeezed together: small
    errors of the prior flipped the category (discriminative 0.38 at 8 channels, 0.17 at 19)."""
    small = n_num + n_missing + sum(1 for k in cat_cards if k <= 8)
    base = small if small <= 8 else max(8, small // 2)
    return min(64, max(1, base + sum(math.ceil(math.log2(k)) for k in cat_cards if k > 8)))


def step_weighted_loss(err: torch.Tensor, present: torch.Tensor, difference: float = 0.0,
                       per_sample: bool = False) -> torch.Tensor:
    """The prior's loss on its error ``err`` [B, T, L]: mean squared error over real steps, plus
    ``difference`` x the mean squared *step-to-step change* of the error. Why: any positive weighting
    of the error has the same optimum (the exact denoiser), but a short training budget leaves most
    error where the loss looks least; the difference term weighs an error's high frequencies up to 4x
    and its slow drift hardly at all, so a small budget is spent on what makes sampled trajectories
    jitter (levels flipping step to step, see ModelConfig.difference_loss)."""
    w = present[..., None]
    L = err.shape[-1]
    if per_sample:  # DP-SGD: each sequence's own mean, summed
        loss = masked_mean(err**2, w, per_sample=True)
    else:
        loss = (err**2 * w).sum() / (w.sum() * L).clamp(min=1)
    if difference > 0 and err.shape[1] > 1:
        pair = w[:, 1:] * w[:, :-1]
        d2 = (err[:, 1:] - err[:, :-1]) ** 2
        loss = loss + difference * (masked_mean(d2, pair, per_sample=True) if per_sample
                                    else (d2 * pair).sum() / (pair.sum() * L).clamp(min=1))
    return loss


def use_threads(config: ModelConfig) -> int:
    """Set torch's intra-op threads from ``model.threads`` (None: ``config.default_threads()``)."""
    n = int(config.threads) if config.threads is not None else default_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


class TimeAutoDiff:
    def __init__(self, config: ModelConfig, dims: dict[str, Any]):
        # weight initialisation is part of a seeded run, but must not reseed the caller's global RNG
        # (load() builds the model too): seed a forked RNG state that is restored on exit
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self._build(config, dims)

    def _build(self, config: ModelConfig, dims: dict[str, Any]) -> None:
        # the refiner reads the known cells (a model saved before that: load() says refiner_known False)
        dims = {**dims, "refiner_known": dims.get("refiner_known", True)}
        self.config, self.dims = config, dims
        self.device = resolve_device(config.device)
        self.latent_dim = config.latent_dim or default_latent_dim(
            dims["n_num"], sum(dims["num_missing"]), dims.get("cat_levels_seen", dims["cat_cards"]))
        if config.long == "stagediff" and dims["max_len"] < config.stage_length:
            raise ConfigError(
                f"model.long=stagediff needs sequences of at least one stage: model.stage_length={config.stage_length} "
                f"but the data's sequences have {dims['max_len']} steps; set model.stage_length to a multiple of "
                f"model.stage_patch={config.stage_patch} in [{config.stage_patch}, {dims['max_len']}], or model.long=none"
            )
        # auto (the fast preset): refine when there is something numeric to refine, and not under DP (a
        # fourth network would split the privacy budget once more: each one trains with more noise)
        self.refine = config.refine if config.refine != "auto" else (
            "l2d" if dims["n_num"] and config.privacy is None else "none")
        if config.refine == "l2d" and not dims["n_num"]:
            raise ConfigError("model.refine=l2d refines numeric columns but this table has no time-varying numeric "
                              "column; use model.refine=none")
        # PSLD: the prior is the very chain the decoder was trained on (length psld_L); Stage-Diff predicts x0
        self.scheduler = make_scheduler(
            config.solver, num_train_timesteps=config.psld_L if config.objective == "psld" else config.num_timesteps,
            beta_schedule=config.beta_schedule,
            prediction_type="sample" if config.long == "stagediff" else config.prediction_type,
        )
        self.vae = MixedVAE(
            dims["n_num"], dims["num_missing"], dims["cat_cards"], dims["static_cards"], dims["n_calendar"],
            self.latent_dim, config.hidden_dim, config.embed_dim, config.n_fourier, config.decoder,
        ).to(self.device)
        # the prior sees the entity's attributes but not its level tokens: a unique level combination
        # would let it key (memorise) a training trajectory; levels enter through the decoder only
        self.n_static_cond = dims.get("n_static_columns", len(dims["static_cards"]))
        self.psld = None
        if config.objective == "psld":
            self.psld = PSLD(self.scheduler, self.latent_dim, config.psld_N, config.psld_M, config.psld_gamma,
                             config.psld_eta).to(self.device)
        if config.long == "stagediff":
            self.denoiser = StageDiffDenoiser(
                self.latent_dim, dims["n_num"], dims["cat_cards"], dims["static_cards"][: self.n_static_cond],
                dims["n_calendar"], config.hidden_dim, config.stage_length, config.stage_patch, config.stage_scales,
                config.denoiser_layers, config.embed_dim,
            ).to(self.device)
        else:
            self.denoiser = LatentDenoiser(
                self.latent_dim, dims["n_num"], dims["cat_cards"], dims["static_cards"][: self.n_static_cond],
                dims["n_calendar"],
                config.hidden_dim, config.denoiser_layers, config.denoiser, config.embed_dim,
            ).to(self.device)
        self.ema = copy.deepcopy(self.denoiser).requires_grad_(False)
        self.conditions = ConditionEncoder(dims["n_num"], dims["cat_cards"], config.p_unconditional)
        self.static_model = StaticAR(dims["static_cards"], config.hidden_dim).to(self.device)
        self.refiner = self.refiner_ema = None
        if self.refine == "l2d":
            self.refine_scheduler = make_scheduler(
                config.solver, num_train_timesteps=config.num_timesteps, beta_schedule=config.beta_schedule,
                prediction_type="sample",  # L2D-Diff's x0-prediction
            )
            self.refiner = L2DRefiner(dims["n_num"], self.latent_dim, dims["static_cards"], dims["n_calendar"],
                                      config.hidden_dim, config.denoiser_layers,
                                      known=dims["refiner_known"]).to(self.device)
            self.refiner_ema = copy.deepcopy(self.refiner).requires_grad_(False)
        self.latent_mean = torch.zeros(self.latent_dim)
        self.latent_std = torch.ones(self.latent_dim)
        self.history: list[dict[str, float]] = []
        self.fit_seconds = 0.0
        self.budget: dict[str, int] = {}  # steps per component of the last fit (budgets())
        self.privacy_config = PrivacyConfig.from_dict(config.privacy)
        self.dp_report: dict[str, Any] | None = None  # the guarantee of the last DP fit (model.privacy)
        self._dp: DPTraining | None = None  # DP-SGD state during fit (models/private.py)
        self.stage_seconds: dict[str, float] = {}  # seconds per component of the last fit

    # ------------------------------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------------------------------
    def fit(self, data: EncodedData, log: Callable[[str], None] | None = None, units: np.ndarray | None = None,
            stats: StatisticsBudget | None = None) -> TimeAutoDiff:
        """Train every component. ``units``: the privacy unit of each sequence (model.privacy samples
        entities, not sequences; default: each sequence its own); ``stats``: what the encoder's DP
        statistics spent (accounted together with DP-SGD)."""
        # a seeded run draws dropout and initial noise from torch's global RNG: seed a forked state, so
        # fitting never reseeds the caller's RNG (restored on exit, as in __init__)
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.config.seed)
            return self._fit(data, log, units, stats)

    def _fit(self, data: EncodedData, log: Callable[[str], None] | None, units: np.ndarray | None,
             stats: StatisticsBudget | None) -> TimeAutoDiff:
        cfg = self.config
        use_threads(cfg)
        gen = np.random.default_rng(cfg.seed)
        t0 = time.perf_counter()
        n = len(data)
        perm = gen.permutation(n)
        n_val = int(n * cfg.val_fraction) if n * cfg.val_fraction >= 2 else 0
        if self.privacy_config is not None:
            n_val = 0  # held-out entities are private too: no validation, no early stopping
        val_idx, tr_idx = perm[:n_val], perm[n_val:]
        if self.privacy_config is not None:
            self._start_dp(len(data), tr_idx, units, stats)
        self.budget = self.budgets(data, tr_idx)
        if self._dp is not None:
            self._plan_dp(data, log)
        self.world = 1
        if cfg.distributed:  # each rank its own shard of the entities and its own batch stream
            from synth_pipeline.models.distributed import setup, shard

            rank, self.world = setup(self.device)
            if self.world > 1:
                tr_idx = shard(tr_idx, rank, self.world)
                gen = np.random.default_rng([cfg.seed, 1 + rank])
            self.train_shard = tr_idx
        if log:
            log("training budget (steps): " + ", ".join(f"{k} {v}" for k, v in self.budget.items()))
        self._fit_vae(data, tr_idx, val_idx, gen)
        latents = self._posterior_means(data)
        pres = torch.from_numpy(data.present).bool()
        if self._dp is not None:  # a Gaussian mechanism on per-entity moments, accounted
            self.latent_mean, self.latent_std = self._dp.latent_moments(latents[tr_idx], pres[tr_idx])
        else:
            flat = latents[pres]
            self.latent_mean, self.latent_std = flat.mean(0), flat.std(0).clamp(min=1e-3)
        if self.psld is not None:  # v is standardised already; the prior must diffuse v itself (Alg. 2 decodes z_i)
            self.latent_mean, self.latent_std = torch.zeros(self.latent_dim), torch.ones(self.latent_dim)
        z = ((latents - self.latent_mean) / self.latent_std) * pres[..., None]
        self._fit_diffusion(data, z, tr_idx, val_idx, gen)
        self._fit_static(data, tr_idx, val_idx, gen)
        if self.refiner is not None:
            fit_refiner(self, data, latents, tr_idx, val_idx, gen)
        if self._dp is not None:
            self._finish_dp(log)
        self.fit_seconds = time.perf_counter() - t0
        if log:
            log(f"trained in {self.fit_seconds:.1f}s on {self.device}")
        return self

    def budgets(self, data: EncodedData, tr_idx: np.ndarray) -> dict[str, int]:
        """Optimisation steps per component (``model.budget``, see the training-loop comment in
        config.ModelConfig). auto: ``min(cap, max(floor, ceil(passes * steps_per_epoch)))`` with the
        *_steps options as caps, so a 40-entity panel trains a few hundred steps and a large table up to
        the caps; fixed: exactly the *_steps options."""
        cfg = self.config
        caps = {"vae": int(cfg.vae_steps), "diffusion": int(cfg.diffusion_steps), "static": int(cfg.static_steps)}
        if self.refiner is not None:
            caps["refine"] = int(cfg.refine_steps or cfg.diffusion_steps)
        if cfg.budget == "fixed":
            return caps
        n = max(len(tr_idx), 1)
        T = data.num.shape[1]
        tokens = max(float(data.present[tr_idx].sum()), 1.0)

        def epoch_steps(window: int) -> int:  # batches of `window`-step sequences that cover the tokens once
            size = min(max(8, min(cfg.batch_size, cfg.batch_tokens // window)), n)
            if self._dp is not None:  # DP: only the (public) entity count may set the budget
                return math.ceil(1.0 / self._dp.sampler.rate(size))
            return math.ceil(tokens / (size * window))

        crop = cfg.vae_crop if cfg.vae_crop and cfg.vae_crop < T else T
        per_epoch = {"vae": epoch_steps(crop), "diffusion": epoch_steps(T), "refine": epoch_steps(T),
                     "static": math.ceil(n / min(cfg.batch_size, n)) if self._dp is None else epoch_steps(1)}
        # the prior and refiner: twice the passes and four times the floor (measured on the fast preset:
        # their step count, not the VAE's, sets fidelity on small panels; config.ModelConfig)
        passes = {"vae": 1, "static": 1, "diffusion": 2, "refine": 2}
        floors = {"vae": 1, "static": 1, "diffusion": PRIOR_FLOOR, "refine": PRIOR_FLOOR}
        return {k: min(cap, max(int(cfg.min_steps) * floors[k], math.ceil(cfg.epochs * passes[k] * per_epoch[k])))
                for k, cap in caps.items()}

    def _train(self, c: Component) -> None:
        """One component through the shared loop (models/training.py), with this fit's DP state."""
        Trainer(self.config, self.device, self.history, self.stage_seconds, self._dp,
                getattr(self, "world", 1)).run(c)

    def _batch_size(self, T: int | None) -> int:
        """Sequences per batch; for long sequences fewer of them (a budget of ``batch_tokens`` steps)."""
        cfg = self.config
        return cfg.batch_size if T is None else max(8, min(cfg.batch_size, cfg.batch_tokens // T))

    def _batch_idx(self, tr_idx: np.ndarray, gen: np.random.Generator, T: int | None = None) -> np.ndarray:
        """Random sequences (DP: a Poisson sample of entities, one sequence each; see models/private.py)."""
        size = self._batch_size(T)
        if self._dp is not None:
            return tr_idx[self._dp.draw(size)]
        return tr_idx[gen.integers(0, len(tr_idx), min(size, len(tr_idx)))]

    # ------------------------------------------------------------------------------------------
    # differential privacy (model.privacy; dp.py, models/private.py)
    # ------------------------------------------------------------------------------------------
    def _start_dp(self, n: int, tr_idx: np.ndarray, units: np.ndarray | None,
                  stats: StatisticsBudget | None) -> None:
        units = np.arange(n) if units is None else np.asarray(units)
        self._dp = DPTraining(self.privacy_config, units[tr_idx], stats)
        for m in (self.vae, self.denoiser, self.ema, self.refiner, self.refiner_ema):
            if m is not None:
                swap_grus(m, to_dp=True)  # Opacus' DPGRU while training (same weights and keys)

    def _plan_dp(self, data: EncodedData, log: Callable[[str], None] | None) -> None:
        """Batch sizes per component -> sample rates and the noise for the whole plan, before any step."""
        T = data.num.shape[1]
        crop = self.config.vae_crop if self.config.vae_crop and self.config.vae_crop < T else None
        sizes = {"vae": self._batch_size(crop), "diffusion": self._batch_size(T), "refine": self._batch_size(T),
                 "static": self._batch_size(None)}
        if not self.dims["static_cards"]:
            self.budget["static"] = 0  # nothing to train: spends nothing
        self.budget = self._dp.plan(self.budget, sizes, log)

    def _finish_dp(self, log: Callable[[str], None] | None) -> None:
        for m in (self.vae, self.denoiser, self.ema, self.refiner, self.refiner_ema):
            if m is not None:
                swap_grus(m, to_dp=False)
        self.dp_report = self._dp.report(self.budget)
        if log:
            r = self.dp_report
            log(f"DP: epsilon {r['epsilon']:.3f} (target {r['target_epsilon']}) at delta {r['delta']}, "
                f"{r['accountant']} accountant")
        self._dp = None

    def _fit_vae(self, data: EncodedData, tr_idx, val_idx, gen) -> None:
        cfg = self.config
        vb = to_batch(data, val_idx, self.device) if len(val_idx) else None
        ratio = cfg.kl_end / cfg.kl_start

        def beta(step: int) -> float:
            return cfg.kl_start * ratio ** (step / max(steps - 1, 1))

        steps = self.budget.get("vae", cfg.vae_steps)
        crop = cfg.vae_crop if cfg.vae_crop and cfg.vae_crop < data.num.shape[1] else None
        pgen = torch.Generator().manual_seed(cfg.seed + 3)
        if self.psld is not None:
            tr = data.subset(tr_idx)
            self.psld.set_reference(information_free_loss(
                tr.num, tr.num_miss, tr.cat, tr.present, self.vae.miss_idx, self.dims["cat_cards"]))

        def train_step(step: int):
            b = to_batch(data, self._batch_idx(tr_idx, gen, crop), self.device, crop, gen)
            if self.psld is not None:
                return self.psld.loss(self.vae, b, pgen)
            return self.vae.loss(b, beta(step), cfg.latent_noise, per_sample=self._dp is not None)

        def val_loss() -> float:
            with torch.inference_mode():
                mu = self._encode_mean(vb)
                return float(self.vae.reconstruction_loss(self.vae.decode(mu, vb.calendar, vb.static, vb.present), vb)[0])

        self._train(Component("vae", steps, list(self.vae.parameters()), cfg.vae_lr, train_step,
                              [self.vae] + ([self.psld] if self.psld is not None else []),
                              val_loss if vb is not None else None))

    def _encode_mean(self, b: Batch) -> torch.Tensor:
        """The decoder-space latent of real sequences: the posterior mean (PSLD: the standardised v)."""
        return self.psld.encode(self.vae, b) if self.psld is not None else self.vae.encode(b)[0]

    @torch.inference_mode()
    def _posterior_means(self, data: EncodedData) -> torch.Tensor:
        self.vae.eval()
        if self.psld is not None:
            self.psld.eval()
        out = []
        for s in range(0, len(data), 1024):
            b = to_batch(data, np.arange(s, min(s + 1024, len(data))), self.device)
            out.append(self._encode_mean(b).cpu())
        return torch.cat(out)

    def prior_loss(self, b: Batch, z0: torch.Tensor, g: torch.Generator, net: nn.Module) -> torch.Tensor:
        """The latent prior's loss on one batch and its (normalised) latents ``z0``: a random diffusion
        step and noise, a random conditioning task (``ConditionEncoder.random``), the static condition
        dropped for a share of sequences, and the step-weighted error of ``net``'s prediction."""
        cfg, sch, dev = self.config, self.scheduler, self.device
        t = torch.randint(0, sch.num_train_timesteps, (len(z0),), generator=g).to(dev)
        noise = torch.randn(z0.shape, generator=g).to(dev)
        zt = sch.add_noise(z0, noise, t)
        kn, kn_mask, kc = self.conditions.random(b, g)
        keep = (torch.rand(len(z0), generator=g) >= cfg.static_dropout).float().to(dev)
        pred = net(zt, t, b.calendar, b.present, b.static[:, : self.n_static_cond], kn, kn_mask, kc, keep)
        return step_weighted_loss(pred - sch.target(z0, noise, t), b.present, cfg.difference_loss,
                                  per_sample=self._dp is not None)

    def _fit_diffusion(self, data: EncodedData, z: torch.Tensor, tr_idx, val_idx, gen) -> None:
        cfg = self.config
        tgen = torch.Generator().manual_seed(cfg.seed + 1)
        z = z.to(self.device)

        def diffusion_loss(idx: np.ndarray, g: torch.Generator, model: nn.Module) -> torch.Tensor:
            return self.prior_loss(to_batch(data, idx, self.device), z[torch.as_tensor(idx, device=self.device)],
                                   g, model)

        def train_step(step: int):
            return diffusion_loss(self._batch_idx(tr_idx, gen, z.shape[1]), tgen, self.denoiser), {}

        def val_loss() -> float:
            with torch.inference_mode():
                return float(diffusion_loss(val_idx, torch.Generator().manual_seed(7), self.ema))

        self._train(Component("diffusion", self.budget.get("diffusion", cfg.diffusion_steps),
                              list(self.denoiser.parameters()), cfg.diffusion_lr, train_step, [self.denoiser, self.ema],
                              val_loss if len(val_idx) else None, EMA(self.ema, self.denoiser, cfg.ema_decay)))

    def _fit_static(self, data: EncodedData, tr_idx, val_idx, gen) -> None:
        """Entity attributes (static columns, then level tokens). Not early-stopped on held-out
        likelihood: tried on the 77-stock panel, the summed NLL is dominated by rare categories and
        stopped at ~50 steps, before the level tokens' joint (Open with Close) was learned -- the
        demo's cross-feature correlation error went from 0.01 to 0.49. Training uses the training
        split only; rare parent categories are pooled (``set_rare``)."""
        if not self.dims["static_cards"]:
            return
        tokens = torch.from_numpy(data.static).to(self.device)
        if self._dp is None:  # under DP the encoder's noisy level sets already protect rare parents
            self.static_model.set_rare(tokens[torch.as_tensor(tr_idx, device=self.device)],
                                       self.config.min_condition_count)

        def train_step(step: int):
            idx = torch.as_tensor(self._batch_idx(tr_idx, gen), device=self.device)
            loss = self.static_model.loss(tokens[idx])
            return (loss * len(idx) if self._dp is not None else loss), {}  # DP: a sum of per-entity losses

        self._train(Component("static", self.budget.get("static", self.config.static_steps),
                              list(self.static_model.parameters()), 3e-3, train_step, [self.static_model]))

    # ------------------------------------------------------------------------------------------
    # sampling
    # ------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def sample(self, n: int, conditions: Conditions, seed: int = 0, batch_size: int = 4096) -> dict[str, np.ndarray]:
        """Generate ``n`` sequences. Returns encoded arrays: num, num_miss, cat, static."""
        use_threads(self.config)
        for m in (self.vae, self.ema, self.static_model):
            m.eval()
        g = torch.Generator().manual_seed(seed)
        static = self._sample_static(n, conditions, g)
        outs = []
        for s in range(0, n, batch_size):
            sl = slice(s, min(s + batch_size, n))
            outs.append(self._sample_batch(conditions.slice(sl), static[sl], g))
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]} | {"static": static.cpu().numpy()}

    def _sample_static(self, n: int, c: Conditions, g: torch.Generator) -> torch.Tensor:
        if not self.dims["static_cards"]:
            return torch.zeros(n, 0, dtype=torch.long, device=self.device)
        known = c.static.to(self.device) if c.static is not None else None
        mask = c.static_known.to(self.device) if c.static_known is not None else None
        return self.static_model.sample(n, known, mask, generator=g)

    @torch.inference_mode()
    def sample_latents(self, n: int, conditions: Conditions, seed: int = 0) -> dict[str, torch.Tensor]:
        """The decoder's inputs for ``n`` generated sequences (latent, calendar, present, static), exactly
        as ``sample`` makes them: what the dependency diagnostic (evaluation/dependency.py) probes."""
        for m in (self.vae, self.ema, self.static_model):
            m.eval()
        g = torch.Generator().manual_seed(seed)
        return self._sample_batch(conditions, self._sample_static(n, conditions, g), g, decode=False)

    def _sample_batch(self, c: Conditions, static: torch.Tensor, g: torch.Generator, decode: bool = True) -> dict:
        dev = self.device
        B, T = c.present.shape
        Fn, cards = self.dims["n_num"], self.dims["cat_cards"]
        cal, pres = c.calendar.to(dev), c.present.to(dev)
        (known_num, kn_mask, kc), kn = self.conditions.encode(c, dev)
        z = torch.randn(B, T, self.latent_dim, generator=g).to(dev)

        def denoise(z_t: torch.Tensor, t_vec: torch.Tensor) -> torch.Tensor:
            return self.ema(z_t, t_vec, cal, pres, static[:, : self.n_static_cond], known_num, kn_mask, kc)

        if self.psld is not None:  # Algorithm 2: each sequence's chain stops at its own i ~ U{0..N}
            z = self.psld.reverse(z, denoise, self.config.sampling_steps, self.config.eta, g)
        else:
            z = self.scheduler.reverse(z, denoise, self.scheduler.set_timesteps(self.config.sampling_steps),
                                       eta=self.config.eta, generator=g)
        z = z * self.latent_std.to(dev) + self.latent_mean.to(dev)
        if not decode:
            return {"z": z, "calendar": cal, "present": pres, "static": static}
        out = self.vae.decode(z, cal, static, pres)
        if self.refiner is not None:
            out["num"] = l2d_refine(self, z, out["num"], cal, pres, static, g, known_num, kn_mask)
        num = out["num"]
        miss = torch.zeros(B, T, Fn, device=dev)
        mi = self.vae.miss_idx
        if mi:
            p = torch.sigmoid(out["miss"])
            miss[..., mi] = (torch.rand(p.shape, generator=g).to(dev) < p).float()
        cat = torch.zeros(B, T, len(cards), dtype=torch.long, device=dev)
        for j, logits in enumerate(out["cat"].split(cards, -1) if cards else []):
            probs = torch.softmax(logits.reshape(-1, cards[j]).float(), -1).cpu()
            cat[..., j] = torch.multinomial(probs, 1, generator=g).view(B, T).to(dev)
        # known cells are fixed exactly, not just encouraged
        if c.num_known is not None:
            num = torch.where(kn_mask > 0, kn, num)
            miss = torch.where(kn_mask > 0, torch.zeros_like(miss), miss)
        if c.cat_known is not None and len(cards):
            cat = torch.where(c.cat_known.to(dev), c.cat.to(dev), cat)
        return {"num": num.float().cpu().numpy(), "num_miss": miss.cpu().numpy(), "cat": cat.cpu().numpy()}

    # ------------------------------------------------------------------------------------------
    # persistence: config JSON + state dicts loaded with weights_only=True
    # ------------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        from synth_pipeline.io_utils import atomic_write, atomic_write_json

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION, "config": self.config.to_dict(), "dims": self.dims,
            "latent_dim": self.latent_dim, "fit_seconds": self.fit_seconds, "history": self.history,
            "budget": self.budget, "stage_seconds": self.stage_seconds, "privacy": self.dp_report,
        }
        atomic_write_json(directory / "model_config.json", meta)
        state = {
            "vae": self.vae.state_dict(), "ema": self.ema.state_dict(), "denoiser": self.denoiser.state_dict(),
            "static": self.static_model.state_dict(),
            "latent_mean": self.latent_mean, "latent_std": self.latent_std,
        }
        if self.psld is not None:
            state["psld"] = self.psld.state_dict()
        if self.refiner is not None:
            state["refiner"], state["refiner_ema"] = self.refiner.state_dict(), self.refiner_ema.state_dict()
        atomic_write(directory / "weights.pt", lambda p: torch.save(state, p))

    @classmethod
    def load(cls, directory: Path, device: str = "auto") -> TimeAutoDiff:
        directory = Path(directory)
        try:
            meta = json.loads((directory / "model_config.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelFileError(f"'{directory}' has no model_config.json; pass a directory written by save()") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelFileError(f"'{directory}' has model format {meta.get('format_version')}, expected {FORMAT_VERSION}")
        from synth_pipeline.model_files import load_errors

        check_device(device)  # an unavailable device is a ConfigError, not a corrupt model
        with load_errors(directory):  # corrupt/truncated/foreign files -> ModelFileError (never torch's advice)
            # models saved before model.decoder existed decode with the per-step MLP
            cfg = ModelConfig.from_dict({"decoder": "mlp", **meta["config"], "device": device})
            model = cls(cfg, {"refiner_known": False, **meta["dims"]})
            state = torch.load(directory / "weights.pt", map_location=model.device, weights_only=True)
            model.vae.load_state_dict(state["vae"])
            model.ema.load_state_dict(state["ema"])
            model.denoiser.load_state_dict(state["denoiser"])
            model.static_model.load_state_dict(state["static"])
            if model.psld is not None:
                model.psld.load_state_dict(state["psld"])
            if model.refiner is not None:
                model.refiner.load_state_dict(state["refiner"])
                model.refiner_ema.load_state_dict(state["refiner_ema"])
            model.latent_mean, model.latent_std = state["latent_mean"].cpu(), state["latent_std"].cpu()
        model.history, model.fit_seconds = meta.get("history", []), meta.get("fit_seconds", 0.0)
        model.budget, model.stage_seconds = meta.get("budget", {}), meta.get("stage_seconds", {})
        model.dp_report = meta.get("privacy")
        return model
