"""Distance to closest record (DCR) share, its confidence interval, and the NN distance ratio.

For every synthetic sequence s: ``d_train(s)`` = distance to its nearest sequence in a random
sample of train of the same size as the holdout, ``d_holdout(s)`` = distance to its nearest
holdout sequence. A generator that learned the distribution, not the records, produces sequences
that are as close to unseen real sequences as to the ones it trained on:

    DCR share = P(d_train < d_holdout) + 1/2 P(d_train == d_holdout)      (0.5: no memorization)

Both reference sets have the same size, so 0.5 is the expected value of a perfect generator
whatever the data. The interval accounts for all three finite samples: the train-sample and
holdout *sequences* (one per entity in a panel) and the synthetic sequences. Its variance is the sum
of three one-factor Poisson bootstraps, each reweighting the comparisons by one sample's draw (the
synthetic sequences; the train reference each comparison hinges on; the holdout one) less the
comparisons' own spread counted twice too many (win_i = mu + a_train(i) + b_holdout(i) + c_i: each
reference bootstrap also sees Var(win) / N), around the point estimate: share +- z * se. The reference draw dominates on small panels: with ~25 reference
entities per side every synthetic sequence is compared with the same few, and a Wilson interval on
the synthetic count alone (treating comparisons as independent) was far too narrow (nasdaq100,
fast model: share 0.67 on one 77/26 split, 0.51 on another). Measured on real "perfect generators"
(a third disjoint real sample as synthetic, 12 random splits; ``benchmarks/bench_dcr_interval.py``):
nasdaq100 windows sd of the share across splits 0.090, pollution windows 0.036 (the Wilson
half-width assumed ~0.03 for both). Nearest neighbours are found once: dropping references inside a
replicate (a plain bootstrap of the reference sets) biases any nearest-neighbour statistic towards
0.5; a product-weight bootstrap of all three at once (se 0.082 on pollution) and the plain sum of
the three one-factor variances (0.055) over-counted the comparisons' own spread; the corrected sum
gives 0.034-0.036 on pollution and 0.089 on nasdaq100. The gate uses the upper bound, and ``se`` tells whether the
reference sets can tell a perfect generator (0.5) from the threshold at all (else: insufficient
evidence).
NNDR = d1 / d2 (nearest over second-nearest); a near-copy of one record has NNDR close to 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from synth_pipeline.evaluation.privacy.distances import search

TIE_TOLERANCE = 1e-9
BOOTSTRAP_REPLICATES = 400
_BOOTSTRAP_CELLS = 20_000_000  # replicates x queries weights per chunk (bounded memory)


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
    se: float = float("nan")  # bootstrap standard error of the share (references + synthetic resampled)
    method: str = "bootstrap"
    n_reference_units: int = 0  # privacy units (entities) behind the smaller reference set


    def summary(self) -> dict:
        def q(a: np.ndarray) -> dict:
            a = a[np.isfinite(a)]
            if a.size == 0:
                return {}
            return {f"p{p}": float(np.percentile(a, p)) for p in (1, 5, 25, 50, 75, 95)} | {"mean": float(a.mean())}

        return {
            "n_synthetic": self.n_synthetic,
            "n_reference": self.n_reference,
            "n_reference_units": self.n_reference_units,
            "share": self.share,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "confidence": self.confidence,
            "se": self.se,
            "interval": self.method,
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
    units: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    **block_kw,
) -> DCRResult:
    """DCR share of ``synthetic`` [Ns, D] against equal-size ``train_sample`` and ``holdout`` [Nr, D].

    ``units``: the privacy unit (entity) of every synthetic, train-sample and holdout vector. When
    sequences are windows of entities, the windows of one entity are not independent evidence; the
    bootstrap then resamples entities (default: every vector its own unit)."""
    d_tr, i_tr, d_ho, i_ho, infos = dcr_neighbours(synthetic, train_sample, holdout, progress, **block_kw)
    return dcr_from_neighbours(d_tr, i_tr, d_ho, i_ho, len(train_sample), len(holdout), confidence, units, infos)


def dcr_neighbours(
    synthetic: np.ndarray,
    train_sample: np.ndarray,
    holdout: np.ndarray,
    progress: Callable[[str], None] | None = None,
    **block_kw,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Each synthetic vector's 2 nearest train-sample and holdout vectors: ``(d_train, i_train,
    d_holdout, i_holdout, search infos)``. Every row depends only on its own query, so shards of
    the synthetic set give the rows of one search over all of them."""
    results, infos = [], {}
    for label, ref in (("train sample", train_sample), ("holdout", holdout)):
        last = [-1]

        def tick(done: int, total: int, label: str = label, last: list = last) -> None:
            pct = int(100 * done / total) // 10 * 10
            if progress is not None and pct != last[0]:
                last[0] = pct
                progress(f"DCR to {label}: {done}/{total} synthetic sequences ({pct}%)")

        dist, idx, info = search(synthetic, ref, k=2, progress=tick, **block_kw)
        results.append((dist, idx))
        infos[label.replace(" ", "_")] = info.to_dict()
    (d_tr, i_tr), (d_ho, i_ho) = results
    return d_tr, i_tr, d_ho, i_ho, infos


def dcr_from_neighbours(
    d_tr: np.ndarray,
    i_tr: np.ndarray,
    d_ho: np.ndarray,
    i_ho: np.ndarray,
    n_train: int,
    n_holdout: int,
    confidence: float = 0.95,
    units: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    infos: dict | None = None,
) -> DCRResult:
    """The DCR share and its interval from each synthetic vector's nearest train-sample and holdout
    references (distances ``d_*`` [Ns, k] ascending, indices ``i_*``; k = 2 gives the NNDR, k = 1
    leaves it NaN). A sharded audit concatenates the shards' neighbours in order and calls this:
    the same share and interval as one search over every synthetic vector."""
    a, b = d_tr[:, 0], d_ho[:, 0]
    tie = _ties(a, b)
    closer = (a < b) & ~tie
    n = len(a)
    wins = float(closer.sum()) + 0.5 * float(tie.sum())
    share = wins / n if n else float("nan")
    win = closer + 0.5 * tie
    if units is not None and all(len(np.unique(u)) == len(u) for u in units):
        units = None  # every sequence its own unit: the plain per-sequence bootstrap
    n_units = int(min(n_train, n_holdout)) if units is None else int(
        min(len(np.unique(units[1])), len(np.unique(units[2]))))
    if units is None:
        lo, hi, se = bootstrap_interval(win, i_tr[:, 0], n_train, i_ho[:, 0], n_holdout, confidence)
    else:
        syn_u = _codes(units[0])[0] if n else None
        lo, hi, se = bootstrap_interval(win, *_codes(np.asarray(units[1])[i_tr[:, 0]]),
                                        *_codes(np.asarray(units[2])[i_ho[:, 0]]), confidence, syn_units=syn_u)
    return DCRResult(
        n_synthetic=n, n_reference=int(min(n_train, n_holdout)), share=float(share),
        ci_low=lo, ci_high=hi, confidence=confidence, closer_to_train=int(closer.sum()), ties=int(tie.sum()),
        d_train=a, d_holdout=b, nndr_train=_nndr(d_tr), nndr_holdout=_nndr(d_ho), search=infos, se=se,
        n_reference_units=n_units,
    )


def _codes(labels: np.ndarray) -> tuple[np.ndarray, int]:
    codes, uniq = pd.factorize(np.asarray(labels), sort=False)
    return codes.astype(np.int64), len(uniq)


def _ties(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) <= TIE_TOLERANCE * np.maximum(1.0, np.maximum(a, b))


def bootstrap_interval(win: np.ndarray, nn_train: np.ndarray, n_train: int, nn_holdout: np.ndarray, n_holdout: int,
                       confidence: float = 0.95, replicates: int = BOOTSTRAP_REPLICATES, seed: int = 0,
                       syn_units: np.ndarray | None = None) -> tuple[float, float, float]:
    """Interval ``share +- z * se`` of the DCR share (``win``: 1 closer to train, 0.5 tie, 0 closer
    to holdout, per synthetic sequence); ``se**2`` sums one-factor Poisson bootstraps over the
    synthetic sequences (or their units, ``syn_units`` codes), the train references and the holdout
    references (``nn_*``: each synthetic sequence's nearest reference, or that reference's unit
    code; codes below ``n_*``)."""
    nq = len(win)
    if nq == 0:
        return 0.0, 1.0, float("nan")
    rng = np.random.default_rng(seed)
    share = float(win.mean())
    parts = []
    factors = [(np.arange(nq), nq), (nn_train, n_train), (nn_holdout, n_holdout)]
    if syn_units is not None:
        factors.append((syn_units, int(syn_units.max()) + 1))
    for labels, n_levels in factors:
        # the comparisons' totals per level of this factor, then reweighted levels
        tot = np.bincount(labels, weights=win, minlength=n_levels)
        cnt = np.bincount(labels, minlength=n_levels).astype(np.float64)
        used = cnt > 0
        tot, cnt = tot[used], cnt[used]
        shares = np.empty(replicates)
        chunk = max(1, min(replicates, _BOOTSTRAP_CELLS // max(1, len(cnt))))
        for b0 in range(0, replicates, chunk):  # bounded memory: a few replicates at a time
            bs = min(chunk, replicates - b0)
            w = rng.poisson(1.0, (bs, len(cnt))).astype(np.float64)
            den = w @ cnt
            shares[b0:b0 + bs] = np.where(den > 0, (w @ tot) / np.maximum(den, 1.0), np.nan)
        parts.append(float(np.nanvar(shares, ddof=1)))
    v_own, v_train, v_hold = parts[:3]
    v_syn = parts[3] if syn_units is not None else v_own
    # crossed effects: win_i = mu + a_train(i) + b_holdout(i) + s_unit(i) + c_i. Every bootstrap also
    # picks up the comparisons' own spread (~ Var(win) / N, which the per-sequence bootstrap v_own
    # estimates), so the plain sum counts it three times; keep it once (and never below the
    # synthetic-only variance)
    se = float(np.sqrt(max(v_train + v_hold + v_syn - 2 * v_own, v_syn)))
    z = float(norm.ppf(0.5 + confidence / 2))
    return max(0.0, share - z * se), min(1.0, share + z * se), se
