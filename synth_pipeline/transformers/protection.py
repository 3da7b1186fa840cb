"""What every fitted statistic must satisfy before it may leave the training boundary.

The privacy unit is an entity (a sequence of a panel, or a non-overlapping window of one long
series without an entity key). Three rules, applied by the column transformers and the time layout:

* **Tails**: a numeric range ends at a randomised k-th extreme of the units' own extremes: the rank
  is drawn uniformly from ``clip_rank`` (default 5th to 7th, as MOSTLY AI's engine does), and the
  bound is placed at a random point between the rank-th and the next unit's extreme, so it is
  neither a real value nor the true min/max, and at least ``rank`` units lie beyond it.
* **Knots**: quantile knots are averages of the empirical quantile over a window of probabilities
  (smoothed), so an interior knot is a mix of several units' values; a knot that still equals a
  value held by fewer than ``k`` units is moved half-way to its neighbour.
* **Rare levels and bins**: a category level, a start-time bin or a length bin must be held by at
  least ``k`` distinct units (default 5); rarer levels become the protected token and are never
  stored, rarer bins are merged with their neighbours.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from synth_pipeline.privacy import check_protection

RARE_TOKEN = "_RARE_"


@dataclass
class Protection:
    k: int = 5  # minimum distinct privacy units behind a stored level or bin
    clip_rank: tuple[int, int] = (5, 7)  # tails clipped at a random rank-th extreme unit, rank in this range
    rare_token: str = RARE_TOKEN  # what a protected level decodes to (e.g. "Other")
    seed: int = 0  # randomises the clip rank and bound placement (recorded nowhere else)

    def __post_init__(self) -> None:
        self.clip_rank = check_protection(self.k, self.clip_rank, self.rare_token)

    def rng(self, salt: str) -> np.random.Generator:
        """A generator per column (salted by name) so bounds do not depend on column order."""
        h = int.from_bytes(salt.encode("utf-8")[:16].ljust(16, b"\0"), "little") % (2**63)
        return np.random.default_rng([self.seed, h])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["clip_rank"] = list(self.clip_rank)
        return d


def protected_bounds(unit_min: np.ndarray, unit_max: np.ndarray, prot: Protection,
                     rng: np.random.Generator) -> tuple[float, float]:
    """[lo, hi] at a random rank-th extreme of the units' minima / maxima, interpolated with the
    next one at a random weight (never the true min/max; a real value only where units tie)."""
    lo = _kth(np.sort(unit_min), prot, rng)
    hi = -_kth(np.sort(-unit_max), prot, rng)
    if hi < lo:  # tiny data: both ranks cross the middle; use the middle
        lo = hi = float(0.5 * (lo + hi))
    return float(lo), float(hi)


def _kth(sorted_vals: np.ndarray, prot: Protection, rng: np.random.Generator) -> float:
    n = sorted_vals.size
    rank = int(rng.integers(prot.clip_rank[0], prot.clip_rank[1] + 1))
    rank = min(rank, max(1, (n - 1) // 2))  # fewer than 2*rank units: as far in as the data allows
    a = sorted_vals[min(rank - 1, n - 1)]
    b = sorted_vals[min(rank, n - 1)]
    w = rng.uniform(0.25, 0.75)
    return float(a + w * (b - a))


def smoothed_quantiles(x: np.ndarray, probs: np.ndarray, window: int = 9) -> np.ndarray:
    """Quantiles averaged over +-half a knot spacing of probability: a knot mixes several values."""
    k = len(probs)
    h = 0.5 / max(k - 1, 1)
    offs = np.linspace(-h, h, window)
    grid = np.clip(probs[:, None] + offs[None, :], 0.0, 1.0)
    return np.quantile(x, grid).mean(1)


def unit_counts(values: np.ndarray, units: np.ndarray) -> pd.Series:
    """Number of distinct units holding each value (vectorised)."""
    pairs = pd.DataFrame({"v": values, "u": units}).drop_duplicates()
    return pairs["v"].value_counts(dropna=True)


def move_rare_knots(knots: np.ndarray, values: np.ndarray, units: np.ndarray, k: int) -> np.ndarray:
    """A knot equal to a value held by fewer than ``k`` units moves half-way to a neighbour."""
    counts = unit_counts(values, units)
    rare = counts.index[counts.to_numpy() < k].to_numpy(dtype=np.float64)
    hit = np.flatnonzero(np.isin(knots, rare))
    if hit.size == 0:
        return knots
    out = knots.copy()
    prev = np.r_[knots[0], knots[:-1]]
    nxt = np.r_[knots[1:], knots[-1]]
    other = np.where(nxt[hit] != knots[hit], nxt[hit], prev[hit])
    out[hit] = 0.5 * (knots[hit] + other)
    return np.maximum.accumulate(out)


@dataclass
class KAnonymousBins:
    """A histogram over a protected range whose every bin holds at least ``k`` units; sampling is
    uniform within a bin, on a lattice ``phase + step * i`` (the real grid of the quantity)."""

    edges: list[float]
    counts: list[int]
    step: int = 1
    phase: int = 0

    @classmethod
    def fit(cls, values: np.ndarray, prot: Protection, rng: np.random.Generator, step: int = 1,
            phase: int = 0, max_bins: int = 64) -> KAnonymousBins:
        v = np.asarray(values, dtype=np.float64)
        lo, hi = protected_bounds(v, v, prot, rng)
        vc = np.clip(v, lo, hi)
        if hi - lo <= 0:
            return cls([lo, hi], [int(v.size)], step, phase)
        n_bins = int(max(1, min(max_bins, v.size // (2 * prot.k))))
        edges = np.linspace(lo, hi, n_bins + 1)
        counts, _ = np.histogram(vc, edges)
        keep_e, keep_c, acc = [edges[0]], [], 0
        for i, c in enumerate(counts):  # at most max_bins iterations: merge until each bin has k units
            acc += int(c)
            if acc >= prot.k:
                keep_e.append(edges[i + 1])
                keep_c.append(acc)
                acc = 0
        if acc:
            if keep_c:
                keep_e[-1] = edges[-1]
                keep_c[-1] += acc
            else:
                keep_e.append(edges[-1])
                keep_c.append(acc)
        return cls([float(e) for e in keep_e], keep_c, step, phase)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Integers on the lattice, drawn bin by count and uniformly inside the bin."""
        e = np.asarray(self.edges)
        c = np.asarray(self.counts, dtype=np.float64)
        b = rng.choice(len(c), n, p=c / c.sum())
        x = e[b] + rng.random(n) * (e[b + 1] - e[b])
        lat = self.phase + self.step * np.round((x - self.phase) / self.step)
        first = self.phase + self.step * np.ceil((e[0] - self.phase) / self.step)
        last = self.phase + self.step * np.floor((e[-1] - self.phase) / self.step)
        if first > last:  # the protected range falls between two lattice points: the nearer one
            first = last = self.phase + self.step * np.round((0.5 * (e[0] + e[-1]) - self.phase) / self.step)
        return np.clip(lat, first, last).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
