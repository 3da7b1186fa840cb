"""Distance to closest record (DCR) share, its confidence interval, and the NN distance ratio.

For every synthetic sequence s: ``d_train(s)`` = distance to its nearest sequence in a random
sample of train of the same size as the holdout, ``d_holdout(s)`` = distance to its nearest
holdout sequence. A generator that learned the distribution, not the records, produces sequences
that are as close to unseen real sequences as to the ones it trained on:

    DCR share = P(d_train < d_holdout) + 1/2 P(d_train == d_holdout)      (0.5: no memorization)

Both reference sets have the same size, so 0.5 is the expected value of a perfect generator
whatever the data. The interval is Wilson's score interval on the n synthetic sequences (ties
count half); the gate uses its *upper* bound, so a small synthetic set cannot pass by luck.
NNDR = d1 / d2 (nearest over second-nearest); a near-copy of one record has NNDR close to 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from synth_pipeline.evaluation.privacy.distances import search

TIE_TOLERANCE = 1e-9


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (``successes`` may be fractional: ties count half)."""
    if n <= 0:
        return 0.0, 1.0
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


@dataclass
class DCRResult:
    n_synthetic: int
    n_reference: int  # size of the train sample = size of the holdout set used
    share: float
    ci_low: float
    ci_high: float
    confidence: float
    closer_to_train: int
    ties: int
    d_train: np.ndarray  # [n_synthetic] nearest distance to the train sample
    d_holdout: np.ndarray  # [n_synthetic] nearest distance to the holdout
    nndr_train: np.ndarray  # [n_synthetic] d1/d2 against the train sample
    nndr_holdout: np.ndarray
    search: dict | None = None  # how each nearest-neighbour pass was computed and how exact it is

    def summary(self) -> dict:
        def q(a: np.ndarray) -> dict:
            a = a[np.isfinite(a)]
            if a.size == 0:
                return {}
            return {f"p{p}": float(np.percentile(a, p)) for p in (1, 5, 25, 50, 75, 95)} | {"mean": float(a.mean())}

        return {
            "n_synthetic": self.n_synthetic,
            "n_reference": self.n_reference,
            "share": self.share,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "confidence": self.confidence,
            "closer_to_train": self.closer_to_train,
            "ties": self.ties,
            "d_train": q(self.d_train),
            "d_holdout": q(self.d_holdout),
            "nndr_train_median": _median(self.nndr_train),
            "nndr_holdout_median": _median(self.nndr_holdout),
            "nndr_ratio": _ratio(_median(self.nndr_train), _median(self.nndr_holdout)),
            "search": self.search,
        }


def _median(a: np.ndarray) -> float | None:
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return float(a / b) if b > 0 else (1.0 if a == 0 else float("inf"))


def _nndr(d: np.ndarray) -> np.ndarray:
    if d.shape[1] < 2:
        return np.full(d.shape[0], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = d[:, 0] / d[:, 1]
    return np.where(d[:, 1] > 0, r, np.where(d[:, 0] > 0, np.nan, 0.0))


def dcr_audit(
    synthetic: np.ndarray,
    train_sample: np.ndarray,
    holdout: np.ndarray,
    confidence: float = 0.95,
    progress: Callable[[str], None] | None = None,
    **block_kw,
) -> DCRResult:
    """DCR share of ``synthetic`` [Ns, D] against equal-size ``train_sample`` and ``holdout`` [Nr, D]."""
    results, infos = [], {}
    for label, ref in (("train sample", train_sample), ("holdout", holdout)):
        last = [-1]

        def tick(done: int, total: int, label: str = label, last: list = last) -> None:
            pct = int(100 * done / total) // 10 * 10
            if progress is not None and pct != last[0]:
                last[0] = pct
                progress(f"DCR to {label}: {done}/{total} synthetic sequences ({pct}%)")

        dist, _, info = search(synthetic, ref, k=2, progress=tick, **block_kw)
        results.append(dist)
        infos[label.replace(" ", "_")] = info.to_dict()
    d_tr, d_ho = results
    a, b = d_tr[:, 0], d_ho[:, 0]
    tie = np.abs(a - b) <= TIE_TOLERANCE * np.maximum(1.0, np.maximum(a, b))
    closer = (a < b) & ~tie
    n = len(a)
    wins = float(closer.sum()) + 0.5 * float(tie.sum())
    share = wins / n if n else float("nan")
    lo, hi = wilson_interval(wins, n, confidence)
    return DCRResult(
        n_synthetic=n, n_reference=int(min(len(train_sample), len(holdout))), share=float(share),
        ci_low=lo, ci_high=hi, confidence=confidence, closer_to_train=int(closer.sum()), ties=int(tie.sum()),
        d_train=a, d_holdout=b, nndr_train=_nndr(d_tr), nndr_holdout=_nndr(d_ho), search=infos,
    )
