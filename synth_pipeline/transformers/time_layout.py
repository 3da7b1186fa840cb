"""The time index and the sequence layout: spacing, calendar features, and a protected model of
where sequences start and how long they are.

Starts and lengths are drawn from k-anonymous histograms (``protection.KAnonymousBins``) over
protected ranges, never from a stored list of real values: every bin holds at least ``k`` entities,
the range ends at a randomised k-th extreme, and a start is a point of the real time grid (the
data's spacing, on the lattice its sequence starts use: e.g. windows that start at midnight keep
starting at midnight).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from synth_pipeline.transformers.protection import KAnonymousBins, Protection

N_CALENDAR = 8
DAY_NS = 86_400_000_000_000
_EPOCH_DAY = np.datetime64("1970-01-01", "D")


# ------------------------------------------------------------------------------------------------
# time values
# ------------------------------------------------------------------------------------------------
def to_ns(col: pd.Series) -> np.ndarray:
    """Wall-clock int64 nanoseconds (time zone dropped; restored on output from the dtype)."""
    if getattr(col.dt, "tz", None) is not None:
        col = col.dt.tz_localize(None)
    return col.to_numpy(dtype="datetime64[ns]").astype(np.int64)


def from_ns(ns: np.ndarray, dtype: str | None) -> pd.Series:
    s = pd.Series(np.asarray(ns).astype("datetime64[ns]"))
    if dtype and dtype.startswith("datetime64"):
        unit_tz = dtype[len("datetime64[") : -1]
        unit, _, tz = unit_tz.partition(", ")
        s = s.astype(f"datetime64[{unit}]")
        if tz:
            s = s.dt.tz_localize(tz, ambiguous="NaT", nonexistent="shift_forward")
    return s


def calendar(ns: np.ndarray) -> np.ndarray:
    """sin/cos of hour-of-day, day-of-week, day-of-year and month: [..., 8] (conditions only)."""
    flat = ns.reshape(-1)
    days = flat // DAY_NS
    hour = (flat % DAY_NS) / 3_600_000_000_000
    dow = (days + 3) % 7  # 1970-01-01 was a Thursday
    dt = flat.astype("datetime64[ns]")
    doy = (dt - dt.astype("datetime64[Y]")).astype("timedelta64[D]").astype(np.int64)
    month = dt.astype("datetime64[M]").astype(np.int64) % 12
    feats = []
    for v, period in ((hour, 24.0), (dow, 7.0), (doy, 365.25), (month, 12.0)):
        ang = 2 * np.pi * v / period
        feats += [np.sin(ang), np.cos(ang)]
    return np.stack(feats, -1).astype(np.float32).reshape(*ns.shape, N_CALENDAR)


def infer_freq(times_ns: np.ndarray, starts: np.ndarray) -> str:
    """The real spacing of the time index: a fixed step ("3600s"), business days ("B") or month starts ("MS")."""
    d = np.diff(times_ns)
    boundary = np.zeros(len(times_ns), dtype=bool)
    boundary[starts] = True
    d = d[~boundary[1:]]  # diffs across sequence boundaries are not spacings
    d = d[d > 0]
    if d.size == 0:
        return "86400s"
    vals, counts = np.unique(d, return_counts=True)
    step = int(vals[np.argmax(counts)])
    dt = times_ns.astype("datetime64[ns]")
    if step == DAY_NS:
        weekday = (times_ns // DAY_NS + 3) % 7
        if np.all(weekday < 5) and np.mean(d == 3 * DAY_NS) > 0.05:
            return "B"
    if 28 * DAY_NS <= step <= 31 * DAY_NS:
        dom = (dt - dt.astype("datetime64[M]")).astype("timedelta64[D]").astype(np.int64)
        if np.all(dom == 0):
            return "MS"
    return f"{step // 1_000_000_000}s" if step % 1_000_000_000 == 0 else f"{step}ns"


def _fixed_step(freq: str) -> int:
    return int(pd.Timedelta(freq).value)


def time_grid(start_ns: np.ndarray, length: int, freq: str) -> np.ndarray:
    """[N, length] int64 ns timestamps starting at each ``start_ns`` with spacing ``freq`` (vectorized)."""
    k = np.arange(length)
    if freq == "B":
        start_d = start_ns.astype("datetime64[ns]").astype("datetime64[D]")
        tod = start_ns - start_d.astype("datetime64[ns]").astype(np.int64)
        days = np.busday_offset(start_d[:, None], k[None, :], roll="forward")
        return days.astype("datetime64[ns]").astype(np.int64) + tod[:, None]
    if freq == "MS":
        start_m = start_ns.astype("datetime64[ns]").astype("datetime64[M]")
        tod = start_ns - start_m.astype("datetime64[ns]").astype(np.int64)
        months = start_m[:, None] + k[None, :].astype("timedelta64[M]")
        return months.astype("datetime64[ns]").astype(np.int64) + tod[:, None]
    return start_ns[:, None] + _fixed_step(freq) * k[None, :]


def grid_position(ns: np.ndarray, freq: str, phase: int) -> np.ndarray:
    """Timestamps -> integer positions on the grid (business days, months or steps since 1970)."""
    if freq == "B":
        return np.busday_count(_EPOCH_DAY, ns.astype("datetime64[ns]").astype("datetime64[D]")).astype(np.int64)
    if freq == "MS":
        return ns.astype("datetime64[ns]").astype("datetime64[M]").astype(np.int64)
    return (ns - phase) // _fixed_step(freq)


def grid_time(pos: np.ndarray, freq: str, phase: int) -> np.ndarray:
    """Integer grid positions -> timestamps (int64 ns); ``phase`` is the time of day / step offset."""
    if freq == "B":
        days = np.busday_offset(_EPOCH_DAY, pos, roll="forward")
        return days.astype("datetime64[ns]").astype(np.int64) + phase
    if freq == "MS":
        return pos.astype("datetime64[M]").astype("datetime64[ns]").astype(np.int64) + phase
    return phase + pos * _fixed_step(freq)


def _phase(starts_ns: np.ndarray, freq: str) -> int:
    """The grid's offset: the most common time of day (calendar steps) or remainder of the step."""
    mod = DAY_NS if freq in ("B", "MS") else _fixed_step(freq)
    vals, counts = np.unique(starts_ns % mod, return_counts=True)
    return int(vals[np.argmax(counts)])


# ------------------------------------------------------------------------------------------------
# the layout
# ------------------------------------------------------------------------------------------------
@dataclass
class TimeLayout:
    freq: str = "86400s"
    phase: int = 0
    max_len: int = 0
    time_dtype: str | None = None
    starts: KAnonymousBins | None = None  # grid positions of sequence starts
    lengths: KAnonymousBins | None = None

    @classmethod
    def fit(cls, start_ns: np.ndarray, lengths: np.ndarray, freq: str, time_dtype: str | None,
            prot: Protection) -> TimeLayout:
        """One start and one length per privacy unit (a sequence of a panel; a window of a series)."""
        phase = _phase(start_ns, freq)
        pos = grid_position(start_ns, freq, phase)
        upos = np.unique(pos)
        step = int(np.gcd.reduce(np.diff(upos))) if upos.size > 1 else 1
        step = max(step, 1)
        starts = KAnonymousBins.fit(pos, prot, prot.rng("__starts__"), step=step, phase=int(upos[0] % step))
        lens = KAnonymousBins.fit(lengths, prot, prot.rng("__lengths__"))
        max_len = int(max(1, np.floor(lens.edges[-1])))
        return cls(freq, phase, max_len, time_dtype, starts, lens)

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` (lengths, start timestamps in int64 ns) from the protected model."""
        lengths = np.clip(self.lengths.sample(n, rng), 1, self.max_len)
        starts = grid_time(self.starts.sample(n, rng), self.freq, self.phase)
        return lengths.astype(np.int64), starts.astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"freq": self.freq, "phase": self.phase, "max_len": self.max_len, "time_dtype": self.time_dtype,
                "starts": self.starts.to_dict() if self.starts else None,
                "lengths": self.lengths.to_dict() if self.lengths else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TimeLayout:
        d = dict(d)
        for k in ("starts", "lengths"):
            d[k] = KAnonymousBins(**d[k]) if d.get(k) else None
        return cls(**d)
