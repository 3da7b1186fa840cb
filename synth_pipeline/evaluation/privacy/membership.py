"""Membership inference: can an attacker holding the release tell training entities from unseen ones?

The attack is the distance-to-closest-synthetic-record test (the baseline of DOMIAS, van Breugel
et al. 2023, and of the MIA suites in SDMetrics / NeMo Safe Synthesizer): a real record scores
``-d(record, nearest synthetic record)``; the closer, the more likely it was trained on. It is run
on the audit's equal-size members (the train sample) and non-members (the holdout), in the audit's
representation, whole entities (static attributes + sequence).

Reported: the attack's ROC AUC (0.5: the release says nothing about membership; 1: every member is
closer than every non-member), its DeLong standard error and interval (members and non-members are
independent entities; the synthetic set is held fixed), the advantage ``2 * AUC - 1`` and the true
positive rate at the threshold where 5% of non-members are flagged (the low-false-positive regime
that matters for a few memorized records, Carlini et al. 2022).

Why in-house and not a library: ``anonymeter`` 1.1.0 pins numpy < 1.27, pyarrow < 22 and numba 0.59
(this stack runs numpy 2, pyarrow 25) and works on flat rows, not entities; ``domias`` 0.0.5 (2023)
is research code that pulls tensorboardX and geomloss and fits a density model per run. The
distance attack needs nothing but the nearest-neighbour search the audit already has.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

from synth_pipeline.evaluation.privacy.distances import search

FPR = 0.05


def _mean_var(v: np.ndarray, units: np.ndarray | None) -> float:
    """Variance of the mean of ``v``, clustered by ``units`` (windows of one entity are one draw)."""
    m = len(v)
    if m < 2:
        return 0.0
    if units is None:
        return float(np.var(v, ddof=1) / m)
    codes = pd.factorize(np.asarray(units))[0]
    c = codes.max() + 1
    if c < 2:
        return float("nan")
    s = np.bincount(codes, weights=v - v.mean(), minlength=c)
    return float(c / (c - 1) * (s * s).sum() / (m * m))


def auc_delong(pos: np.ndarray, neg: np.ndarray, pos_units: np.ndarray | None = None,
               neg_units: np.ndarray | None = None) -> tuple[float, float]:
    """P(pos > neg) + 1/2 P(tie) and its DeLong standard error (vectorized through ranks; clustered
    by unit when given)."""
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return float("nan"), float("nan")
    all_r = rankdata(np.concatenate([pos, neg]))  # midranks: ties count half
    r_pos, r_neg = rankdata(pos), rankdata(neg)
    auc = (all_r[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (all_r[:m] - r_pos) / n  # per positive: share of negatives below it
    v01 = 1 - (all_r[m:] - r_neg) / m  # per negative: share of positives above it
    var = _mean_var(v10, pos_units) + _mean_var(v01, neg_units)
    return float(auc), float(np.sqrt(max(var, 0.0)))


def distance_attack(synthetic: np.ndarray, members: np.ndarray, non_members: np.ndarray,
                    confidence: float = 0.95, member_units: np.ndarray | None = None,
                    non_member_units: np.ndarray | None = None) -> dict:
    """Run the attack on flat distance vectors ([N, D] each, same layout); ``*_units``: the
    privacy unit of each real vector when sequences are windows of entities."""
    d_mem, d_non = nearest_synthetic(synthetic, members, non_members)
    return attack_from_distances(d_mem, d_non, confidence, member_units, non_member_units)


def nearest_synthetic(synthetic: np.ndarray, members: np.ndarray, non_members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each member's and non-member's distance to its nearest synthetic vector. Over shards of the
    synthetic set, the elementwise minimum of the shards' distances is the same distance."""
    return search(members, synthetic, k=1)[0][:, 0], search(non_members, synthetic, k=1)[0][:, 0]


def attack_from_distances(d_mem: np.ndarray, d_non: np.ndarray, confidence: float = 0.95,
                          member_units: np.ndarray | None = None, non_member_units: np.ndarray | None = None) -> dict:
    """The attack's AUC, interval, advantage and TPR at 5% FPR from the real records' distances to
    their nearest synthetic record."""
    auc, se = auc_delong(-d_mem, -d_non, member_units, non_member_units)
    z = float(norm.ppf(0.5 + confidence / 2))
    thr = float(np.quantile(d_non, FPR)) if len(d_non) else float("nan")
    return {
        "attack": "distance to closest synthetic record",
        "auc": auc, "se": se, "ci_low": max(0.0, auc - z * se), "ci_high": min(1.0, auc + z * se),
        "confidence": confidence, "advantage": 2 * auc - 1,
        "tpr_at_fpr": float(np.mean(d_mem <= thr)) if len(d_mem) else float("nan"), "fpr": FPR,
        "n_members": int(len(d_mem)), "n_non_members": int(len(d_non)),
        "non_member_units": int(len(np.unique(non_member_units))) if non_member_units is not None else int(len(d_non)),
    }
