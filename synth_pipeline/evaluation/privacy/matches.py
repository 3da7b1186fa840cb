"""Exact matches: whole synthetic sequences identical to a train sequence, and row-level matches.

Both use hashes of the typed values (``EncodedSet.row_hash`` / ``seq_hash``; floats at float32
precision, the time index and identifiers excluded) against *all* of train, not a sample.

Row-level: the share of synthetic rows equal to some train row means little on its own (a table
of a few small categoricals repeats rows naturally), so it is compared with the same share for
the holdout, real rows the model never saw: ``excess = synthetic rate - holdout rate``.
"""

from __future__ import annotations

import numpy as np

from synth_pipeline.evaluation.representation import EncodedSet


def exact_copies(synthetic: EncodedSet, train: EncodedSet) -> dict:
    """Synthetic sequences whose every step equals a train sequence's (same length)."""
    hit = np.isin(synthetic.seq_hash, train.seq_hash)
    n = len(synthetic)
    return {"count": int(hit.sum()), "rate": float(hit.mean()) if n else 0.0, "n_synthetic": n}


def _row_rate(rows: EncodedSet, train_rows: np.ndarray) -> tuple[float, int]:
    h = rows.row_hash[rows.present]
    if h.size == 0:
        return 0.0, 0
    return float(np.isin(h, train_rows).mean()), int(h.size)


def row_matches(synthetic: EncodedSet, train: EncodedSet, holdout: EncodedSet) -> dict:
    train_rows = np.unique(train.row_hash[train.present])
    syn_rate, n_syn = _row_rate(synthetic, train_rows)
    ho_rate, n_ho = _row_rate(holdout, train_rows)
    return {
        "synthetic_rate": syn_rate,
        "holdout_rate": ho_rate,
        "excess": syn_rate - ho_rate,
        "n_synthetic_rows": n_syn,
        "n_holdout_rows": n_ho,
    }
