"""Differential privacy (``model.privacy``): one (epsilon, delta) for the whole trained model.

The privacy unit is an entity (a sequence of a panel; a non-overlapping window of a keyless series),
whatever its length. Two kinds of mechanism spend the budget, and one accountant composes them:

* **Statistics** the encoder stores (value bounds, quantile knots, category sets, start-time and
  length bins, level bins) and the latent normalisation: Gaussian mechanisms of L2 sensitivity 1 per
  entity. However many queries the encoder makes, their noise is set so that together they equal
  one Gaussian mechanism with noise multiplier ``StatisticsBudget.noise_multiplier`` (m queries at
  sigma * sqrt(m) each compose, in RDP, exactly to one at sigma; queries may be weighted, the
  precisions still summing to 1 / sigma^2). Category sets released by
  thresholding noisy counts spend an extra ``StatisticsBudget.delta``.
* **DP-SGD** (Opacus) for every trained network: Poisson sampling of entities (one sequence per
  sampled entity), per-entity gradient clipping at ``max_grad_norm``, Gaussian noise.

The statistics are calibrated on their own to ``stats_share * epsilon`` (default 30%); DP-SGD's
noise multiplier is then the smallest that keeps the composition of everything, in one accountant
(RDP by default, PRV optional), within (epsilon, delta - statistics' delta). The entity count N is
treated as public (as Opacus does for its sample rate).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

from synth_pipeline.errors import ConfigError

ACCOUNTANTS = ("rdp", "prv")
TEST_SEED_ENV = "SYNTH_PIPELINE_DP_TEST_SEED"


def mechanism_entropy():  # noqa: ANN201 - numpy.random.SeedSequence (numpy imported lazily)
    """The DP mechanisms' secret randomness (entity sampling, every noise draw): OS entropy, stored
    nowhere. ``SYNTH_PIPELINE_DP_TEST_SEED=<int>`` makes it reproducible for tests only: anyone who
    knows that seed can subtract the noise, so a model trained with it carries no guarantee."""
    import os

    import numpy as np

    seed = os.environ.get(TEST_SEED_ENV)
    return np.random.SeedSequence(int(seed)) if seed else np.random.SeedSequence()


@dataclass(frozen=True)
class PrivacyConfig:
    """``model.privacy``: the target guarantee and DP-SGD's clipping (noise calibrated unless given)."""

    epsilon: float
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    noise_multiplier: float | None = None  # None: calibrated so the whole training meets epsilon
    # share of epsilon the encoder's statistics are calibrated to on their own. 0.3, not 0.1: measured on
    # pollution windows (1,461 entities) at epsilon 3, 0.1 left bounds of a -40..28 column at -1.6e7..1e3
    # and cut 25-40% of pm2.5 / TEMP outside; 0.3 put every bound near the data (benchmarks/README.md)
    stats_share: float = 0.3
    accountant: str = "rdp"  # rdp | prv (Opacus accountants)

    def __post_init__(self) -> None:
        if not (isinstance(self.epsilon, int | float) and 0 < self.epsilon <= 100):
            raise ConfigError(f"model.privacy.epsilon={self.epsilon!r} must be a number in (0, 100]")
        if not (isinstance(self.delta, int | float) and 0 < self.delta < 1e-2):
            raise ConfigError(f"model.privacy.delta={self.delta!r} must be in (0, 0.01) (e.g. 1e-5, below 1/entities)")
        if not self.max_grad_norm > 0:
            raise ConfigError("model.privacy.max_grad_norm must be positive (per-entity gradient clipping)")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise ConfigError("model.privacy.noise_multiplier must be positive, or null to calibrate it to epsilon")
        if not 0 < self.stats_share < 1:
            raise ConfigError("model.privacy.stats_share must be in (0, 1): the encoder statistics' share of epsilon")
        if self.accountant not in ACCOUNTANTS:
            raise ConfigError(f"unknown model.privacy.accountant '{self.accountant}'; valid: {', '.join(ACCOUNTANTS)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | PrivacyConfig | None) -> PrivacyConfig | None:
        if d is None or isinstance(d, PrivacyConfig):
            return d
        if not isinstance(d, dict):
            raise ConfigError("model.privacy must be a mapping {epsilon, delta, max_grad_norm, noise_multiplier} or null")
        valid = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ConfigError(f"unknown model.privacy key(s) {unknown}; valid: {', '.join(sorted(valid))}")
        if "epsilon" not in d:
            raise ConfigError("model.privacy needs epsilon (e.g. {epsilon: 3}); omit model.privacy for no DP")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def stats_delta(self) -> float:
        """The part of delta the statistics' thresholded category sets may spend."""
        return self.delta / 10


@dataclass(frozen=True)
class StatisticsBudget:
    """What the encoder may spend: all its queries together equal one Gaussian mechanism of L2
    sensitivity 1 with this noise multiplier (a query of weight w out of a total W gets noise
    ``noise_multiplier * sqrt(W / w)``; transformers/dp_noise.py); thresholded releases spend at most
    ``delta`` more."""

    noise_multiplier: float
    delta: float
    seed: int = 0


def _accountant(kind: str, history: list[tuple[float, float, int]]):  # noqa: ANN202 - opacus accountant
    from opacus.accountants import PRVAccountant, RDPAccountant

    acc = RDPAccountant() if kind == "rdp" else PRVAccountant()
    acc.history = [(float(s), float(q), int(n)) for s, q, n in history if n > 0]
    return acc


# RDP orders: Opacus' defaults hold 100 fractional orders in (1, 11), each ~100x slower to evaluate for a
# subsampled mechanism than an integer one; three fractional orders near 1 and a wider integer range bound
# epsilon within 1-3% of the defaults (tests/test_dp.py) at a tenth of the cost
RDP_ORDERS = [1.25, 1.5, 1.75, *range(2, 64), 80, 96, 128, 256, 512, 1024, 4096]


def epsilon_of(history: list[tuple[float, float, int]], delta: float, accountant: str = "rdp") -> float:
    """Epsilon at ``delta`` of the composition of ``(noise_multiplier, sample_rate, steps)`` entries
    (a Gaussian mechanism is ``(sigma, 1.0, 1)``), by Opacus' own accountant."""
    if not history:
        return 0.0
    acc = _accountant(accountant, history)
    with warnings.catch_warnings():  # "optimal order is the largest/smallest alpha": a bound, still valid
        warnings.simplefilter("ignore", UserWarning)
        if accountant == "rdp":
            return float(acc.get_epsilon(delta, alphas=RDP_ORDERS))
        return float(acc.get_epsilon(delta))


def _bisect(fn, target: float, lo: float = 0.3, hi: float = 64.0) -> float:  # noqa: ANN001
    """Smallest sigma in [lo, hi] with fn(sigma) <= target (fn decreasing in sigma)."""
    if fn(hi) > target:
        return math.inf
    if fn(lo) <= target:
        return lo
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        if fn(mid) > target:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.005:
            break
    return hi


def statistics_budget(cfg: PrivacyConfig, seed: int = 0) -> StatisticsBudget:
    """The encoder's noise: one Gaussian mechanism meeting ``stats_share * epsilon`` at delta/2."""
    sigma = _bisect(lambda s: epsilon_of([(s, 1.0, 1)], cfg.delta / 2, cfg.accountant), cfg.stats_share * cfg.epsilon,
                    hi=4096.0)
    return StatisticsBudget(noise_multiplier=sigma, delta=cfg.stats_delta, seed=seed)


def sgd_noise(cfg: PrivacyConfig, stats: StatisticsBudget, plan: list[tuple[float, int]],
              extra: list[tuple[float, float, int]] = ()) -> float:  # type: ignore[assignment]
    """DP-SGD's noise multiplier for ``plan`` = [(sample_rate, steps) per component] so that the
    statistics, ``extra`` mechanisms and all training steps compose to (epsilon, delta - stats.delta).
    Raises ConfigError when no noise level up to 64 meets the budget."""
    fixed = [(stats.noise_multiplier, 1.0, 1), *extra]
    delta = cfg.delta - stats.delta

    def eps(sigma: float) -> float:
        return epsilon_of(fixed + [(sigma, q, n) for q, n in plan], delta, cfg.accountant)

    if cfg.noise_multiplier is not None:
        return float(cfg.noise_multiplier)
    sigma = _bisect(eps, cfg.epsilon)
    if not math.isfinite(sigma):
        raise ConfigError(
            f"model.privacy.epsilon={cfg.epsilon} cannot be met: with {sum(n for _, n in plan)} DP-SGD steps at "
            f"sample rates {sorted({round(q, 4) for q, _ in plan})} even noise multiplier 64 spends more; "
            "train on more entities, raise epsilon, or lower model.epochs / the *_steps caps"
        )
    return sigma


def budget_share(cfg: PrivacyConfig, stats: StatisticsBudget, plan: list[tuple[float, int]],
                 extra: list[tuple[float, float, int]], sigma: float) -> float:
    """Share (<= 1) of every component's planned steps that a fixed ``sigma`` affords within epsilon."""
    fixed = [(stats.noise_multiplier, 1.0, 1), *extra]
    delta = cfg.delta - stats.delta

    def eps(share: float) -> float:
        return epsilon_of(fixed + [(sigma, q, int(n * share)) for q, n in plan], delta, cfg.accountant)

    if eps(1.0) <= cfg.epsilon:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if eps(mid) <= cfg.epsilon else (lo, mid)
    if lo * min((n for _, n in plan), default=0) < 1:
        raise ConfigError(f"model.privacy.noise_multiplier={sigma} spends epsilon={cfg.epsilon} before one step of "
                          "every component; raise the noise multiplier or epsilon, or leave noise_multiplier null")
    return lo
