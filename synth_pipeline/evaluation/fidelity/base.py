"""What every fidelity metric shares: its result type, its context, and input helpers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from synth_pipeline.evaluation.fidelity._gru import TrainSettings
from synth_pipeline.evaluation.representation import EncodedSet, Representation

MIN_PER_CLASS = 5  # below this a classifier score means nothing (the evidence check fails anyway)


@dataclass
class MetricResult:
    name: str
    value: float | None  # None: not applicable to this data (see ``note``)
    goal: str  # "lower" or "higher" is better
    range: tuple[float, float]
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def applicable(self) -> bool:
        return self.value is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "value": self.value, "goal": self.goal, "range": list(self.range),
            "details": self.details, "note": self.note,
        }


@dataclass
class MetricContext:
    """Everything a metric may need besides the two sets it compares."""

    rep: Representation
    seed: int = 0
    n_seeds: int = 3
    max_sequences: int = 10_000  # per side, for the trained (GRU) metrics
    holdout: EncodedSet | None = None  # real sequences the model never saw (predictive baseline)
    train: TrainSettings = field(default_factory=TrainSettings)
    progress: Callable[[str], None] | None = None

    @property
    def seeds(self) -> list[int]:
        return [self.seed * 1000 + i for i in range(self.n_seeds)]

    def say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(msg)


class Metric(Protocol):
    name: str
    goal: str
    range: tuple[float, float]
    description: str

    def compute(self, real: EncodedSet, synthetic: EncodedSet, ctx: MetricContext) -> MetricResult: ...


def sample_index(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` of ``n`` indices without replacement (all of them, in order, when k >= n)."""
    if k >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=k, replace=False))


def sequence_inputs(es: EncodedSet) -> np.ndarray:
    """GRU inputs [N, T, F + 1]: all features plus the presence channel."""
    return np.concatenate([es.features(), es.present[..., None].astype(np.float32)], 2)


def first_differences(x: np.ndarray, present: np.ndarray) -> np.ndarray:
    """x[t+1] - x[t] where both steps are present, else 0: [N, T - 1, F]."""
    both = present[:, 1:] & present[:, :-1]
    return ((x[:, 1:] - x[:, :-1]) * both[..., None]).astype(np.float32)


def discriminator_score(
    x_real: np.ndarray, len_real: np.ndarray, x_syn: np.ndarray, len_syn: np.ndarray, ctx: MetricContext, label: str,
) -> tuple[float | None, dict[str, Any]]:
    """|accuracy - 0.5| of post-hoc GRU classifiers (80/20 split), averaged over the context's seeds.
    The larger side is subsampled so both classes have the same size (capped at max_sequences)."""
    from synth_pipeline.evaluation.fidelity._gru import classifier_accuracy

    rng = np.random.default_rng([ctx.seed, 17])
    n = int(min(len(x_real), len(x_syn), ctx.max_sequences))
    if n < MIN_PER_CLASS:
        return None, {"n_per_class": n, "note": f"fewer than {MIN_PER_CLASS} sequences per class"}
    ir = sample_index(len(x_real), n, rng)
    is_ = sample_index(len(x_syn), n, rng)
    x = np.concatenate([x_real[ir], x_syn[is_]])
    lengths = np.maximum(np.concatenate([len_real[ir], len_syn[is_]]), 1)
    y = np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)]
    ctx.say(f"{label}: training {ctx.n_seeds} GRU classifiers on {n} + {n} sequences")
    acc = classifier_accuracy(x, y, lengths, ctx.seeds, ctx.train)
    score = float(np.mean(np.abs(acc - 0.5)))
    return score, {
        "accuracy_per_seed": [float(a) for a in acc],
        "n_per_class": n,
        "test_per_class": int(round(n * 0.2)),
        "train_steps": ctx.train.steps(2 * n - 2 * int(round(n * 0.2))),
    }
