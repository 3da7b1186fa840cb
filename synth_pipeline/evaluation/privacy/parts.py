"""Memorization by parts: the DCR share on whole entities, on static attributes alone, on the
dynamics alone and on a few random column subsets, reporting the worst.

A model can copy *part* of a record while the whole sequence looks fresh: an entity's static
attributes (a unique market capitalisation, a rare combination of levels) glued onto newly
generated dynamics, or a few columns of a training sequence. On the whole-entity vectors such a
copy is diluted by every other column; on the part it copies, the synthetic record sits at distance
0 from its source and the share jumps to ~1. MOSTLY AI's QA reports DCR the same way, per column
subset, worst case first.

Parts (each only where it differs from the whole entity):

* ``entity``: static attributes + sequence (the main DCR share, ``dcr.py``);
* ``static``: the static attribute vector of each entity, once (not weighted by its length);
* ``dynamics``: the time-varying features only;
* ``columns:<a,b,...>``: ``SUBSETS`` seeded random subsets of about half of the modelled columns
  (static or not), where there are at least three columns.

Each part is a DCR share with the same bootstrap interval as the main one. The gate judges the
worst of the entity, static and dynamics parts; that is a multiple comparison, so each part's
interval is read at the Bonferroni level ``1 - (1 - confidence) / k``. The column subsets are
reported (each share, the worst subset) but not gated: on slowly varying series (metro traffic's
temperature and weather) neighbouring windows are alike, a subset's share varies more across entity
splits than its bootstrap says (sd 0.033-0.036 against a mean se of 0.026 over 12 splits), and
gating on them failed 30% of real unseen windows (``benchmarks/bench_gate.py``; the gated parts'
spread matches their se: 0.025 vs 0.024).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from synth_pipeline.evaluation.privacy.dcr import dcr_from_neighbours
from synth_pipeline.evaluation.privacy.distances import search
from synth_pipeline.evaluation.representation import EncodedSet, Representation

SUBSETS = 4  # random column subsets per audit (the fixed parts come on top)
SUBSET = "columns:"


def part_vectors(s: EncodedSet, dyn_idx: np.ndarray, static_idx: np.ndarray, compact: bool) -> np.ndarray:
    """[N, D] distance vectors of the selected features: the dynamic ones over every step, the static
    ones once per step (compact: once scaled by sqrt(T), same distances); static-only parts are the
    attribute vector itself (one entity, one record, whatever its length)."""
    N, T, _ = s.dyn.shape
    st = s.static[:, static_idx]
    if len(dyn_idx) == 0:
        return np.ascontiguousarray(st, np.float32)
    dyn = s.dyn[:, :, dyn_idx]
    if compact:
        return np.ascontiguousarray(np.concatenate([dyn.reshape(N, -1), st * np.float32(np.sqrt(T))], 1), np.float32)
    full = np.concatenate([dyn, np.broadcast_to(st[:, None, :], (N, T, st.shape[1]))], 2) * s.present[..., None]
    return np.ascontiguousarray(full.reshape(N, -1), np.float32)


def plan_parts(rep: Representation, seed: int = 0, subsets: int = SUBSETS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Part name -> (dynamic feature indices, static feature indices); ``entity`` excluded."""
    dyn_cols = [f.column for f in rep.features]
    st_cols = [f.column for f in rep.static_features]
    columns = list(dict.fromkeys(dyn_cols + st_cols))
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    none = np.zeros(0, np.int64)
    all_dyn, all_st = np.arange(len(dyn_cols), dtype=np.int64), np.arange(len(st_cols), dtype=np.int64)
    if len(st_cols) and len(dyn_cols):
        parts["static"] = (none, all_st)
        parts["dynamics"] = (all_dyn, none)
    if len(columns) >= 3:
        rng = np.random.default_rng([seed, 11])
        size = (len(columns) + 1) // 2
        seen: set[tuple[str, ...]] = set()
        for _ in range(subsets * 4):  # distinct subsets; few columns allow only a few
            if len(seen) == subsets:
                break
            pick = tuple(sorted(rng.choice(len(columns), size, replace=False).tolist()))
            if pick in seen:
                continue
            seen.add(pick)
            chosen = {columns[i] for i in pick}
            parts[SUBSET + ",".join(columns[i] for i in pick)] = (
                np.array([i for i, c in enumerate(dyn_cols) if c in chosen], np.int64),
                np.array([i for i, c in enumerate(st_cols) if c in chosen], np.int64),
            )
    return parts


def dcr_by_parts(
    rep: Representation,
    synthetic: EncodedSet,
    train_ref: EncodedSet,
    holdout_ref: EncodedSet,
    entity: dict,
    confidence: float = 0.95,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """DCR share per part (``entity``: the main audit's summary) and the worst one.

    Returns ``{"parts": {name: {share, ci_low, ci_high, se, n_features}}, "worst": name,
    "worst_share", "worst_ci_high", "confidence": the per-part (Bonferroni) level, "k"}``; the
    ``entity`` entry keeps the main audit's own confidence.
    """
    neighbours = part_neighbours(rep, synthetic, train_ref, holdout_ref, seed, progress)
    return parts_from_neighbours(rep, neighbours, (synthetic.units, train_ref.units, holdout_ref.units),
                                 len(train_ref), len(holdout_ref), entity, confidence, seed)


def part_neighbours(
    rep: Representation,
    synthetic: EncodedSet,
    train_ref: EncodedSet,
    holdout_ref: EncodedSet,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Part name -> each synthetic sequence's nearest train-sample and holdout reference on that part:
    ``(d_train, i_train, d_holdout, i_holdout)``, each [Ns] (the first column of a k = 2 search, as
    the DCR share uses). Shards of the synthetic set concatenate these in order."""
    compact = synthetic.full_length and train_ref.full_length and holdout_ref.full_length
    out = {}
    for name, (di, si) in plan_parts(rep, seed).items():
        if progress:
            progress(f"DCR by parts: {name} ({len(di)} step + {len(si)} static features)")
        q, tr, ho = (part_vectors(s, di, si, compact) for s in (synthetic, train_ref, holdout_ref))
        d_tr, i_tr, _ = search(q, tr, k=2)
        d_ho, i_ho, _ = search(q, ho, k=2)
        out[name] = (d_tr[:, 0], i_tr[:, 0], d_ho[:, 0], i_ho[:, 0])
    return out


def parts_from_neighbours(
    rep: Representation,
    neighbours: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    units: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_train: int,
    n_holdout: int,
    entity: dict,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """:func:`dcr_by_parts` from the parts' nearest references (:func:`part_neighbours`; a sharded
    audit concatenates the shards' in order)."""
    plan = plan_parts(rep, seed)
    k = sum(not name.startswith(SUBSET) for name in plan) + 1  # the gated parts: entity, static, dynamics
    level = 1 - (1 - confidence) / k
    out: dict[str, dict] = {}
    for name, (di, si) in plan.items():
        d_tr, i_tr, d_ho, i_ho = neighbours[name]
        r = dcr_from_neighbours(d_tr[:, None], i_tr[:, None], d_ho[:, None], i_ho[:, None], n_train, n_holdout,
                                level, units=units)
        out[name] = {"share": r.share, "ci_low": r.ci_low, "ci_high": r.ci_high, "se": r.se,
                     "n_features": int(len(di) + len(si)), "ties": r.ties}
    # the entity part at the Bonferroni level too (same se, wider z), so the worst compares like with like
    z_main = _z(entity["confidence"])
    z_part = _z(level)
    se = entity.get("se")
    hi = entity["ci_high"] if se is None or not np.isfinite(se) else min(1.0, entity["share"] + z_part * se)
    lo = entity["ci_low"] if se is None or not np.isfinite(se) else max(0.0, entity["share"] - z_part * se)
    out = {"entity": {"share": entity["share"], "ci_low": lo, "ci_high": hi, "se": se,
                      "n_features": len(rep.features) + len(rep.static_features), "ties": entity.get("ties", 0),
                      "main_ci_high": entity["ci_high"], "main_z": z_main}} | out
    gated = [n for n in out if not n.startswith(SUBSET)]
    worst = max(gated, key=lambda n: (out[n]["ci_high"], out[n]["share"]))
    subsets = [n for n in out if n.startswith(SUBSET)]
    worst_subset = max(subsets, key=lambda n: (out[n]["ci_high"], out[n]["share"])) if subsets else None
    return {"parts": out, "worst": worst, "worst_share": out[worst]["share"], "worst_ci_high": out[worst]["ci_high"],
            "worst_se": out[worst]["se"], "confidence": level, "k": k, "gated": gated,
            "worst_subset": worst_subset,
            "worst_subset_share": out[worst_subset]["share"] if worst_subset else None}


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))
