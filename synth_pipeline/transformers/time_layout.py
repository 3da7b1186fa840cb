"""The time index and the sequence layout: spacing, calendar features, and a protected model of
where sequences start and how long they are.

With ``model.privacy`` (``TimeLayout.fit_dp``) the phase, the calendar-cycle places, the start and
length bins come from noisy per-unit normalised histograms instead (``dp_noise.py``); the spacing
(``infer_freq``) and the integer format stay inferred from the data (see ``fit_dp``).

Without it, starts and lengths are drawn from k-anonymous histograms (``protection.KAnonymousBins``) over
protected ranges, never from a stored list of real values: every bin holds at least ``k`` entities,
the range ends at a randomised k-th extreme, and a start is a point of the real time grid (the
data's spacing, on the lattice its sequence starts use: e.g. windows that start at midnight keep
starting at midnight).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from synth_pipeline.errors import ConfigError
from synth_pipeline.transformers.dp_noise import (
    WEIGHT_STARTS,
    StatsAccountant,
    numeric_histogram,
    thresholded_levels,
    unit_weights,
)
from synth_pipeline.transformers.protection import KAnonymousBins, Protection

N_CALENDAR = 8
DAY_NS = 86_400_000_000_000
_EPOCH_DAY = np.datetime64("1970-01-01", "D")


# ------------------------------------------------------------------------------------------------
# time values
# ------------------------------------------------------------------------------------------------
def to_ns(col: pd.Series, clock: str = "wall") -> np.ndarray:
    """int64 nanoseconds: the wall clock (time zone dropped; calendar steps stay on the calendar
    across DST), or UTC (``clock="utc"``: sub-daily steps of a zoned series stay exact across DST)."""
    if getattr(col.dt, "tz", None) is not None:
        col = col.dt.tz_convert("UTC").dt.tz_localize(None) if clock == "utc" else col.dt.tz_localize(None)
    return col.to_numpy(dtype="datetime64[ns]").astype(np.int64)


def from_ns(ns: np.ndarray, dtype: str | None, clock: str = "wall") -> pd.Series:
    s = pd.Series(np.asarray(ns).astype("datetime64[ns]"))
    if dtype and dtype.startswith("datetime64"):
        unit_tz = dtype[len("datetime64[") : -1]
        unit, _, tz = unit_tz.partition(", ")
        s = s.astype(f"datetime64[{unit}]")
        if tz and clock == "utc":
            s = s.dt.tz_localize("UTC").dt.tz_convert(tz)
        elif tz:
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


# ------------------------------------------------------------------------------------------------
# spacing
# ------------------------------------------------------------------------------------------------
_MONTHLY = re.compile(r"(\d*)M([SE])")


def _months(freq: str) -> tuple[int, str] | None:
    """``"3MS"`` -> (3, "S"): every 3 months at month starts; ``"12ME"``: yearly at month ends."""
    m = _MONTHLY.fullmatch(freq)
    return (int(m.group(1) or 1), m.group(2)) if m else None


def _month_index(ns: np.ndarray) -> np.ndarray:
    return ns.astype("datetime64[ns]").astype("datetime64[M]").astype(np.int64)


def _day_of_month(ns: np.ndarray) -> np.ndarray:
    dt = ns.astype("datetime64[ns]")
    return (dt.astype("datetime64[D]") - dt.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64)


def _is_month_end(ns: np.ndarray) -> np.ndarray:
    d = ns.astype("datetime64[ns]").astype("datetime64[D]")
    return (d + 1).astype("datetime64[M]") != d.astype("datetime64[M]")


def infer_freq(times_ns: np.ndarray, starts: np.ndarray) -> str:
    """The spacing of the time index: business days ("B"), calendar months at month starts or ends
    ("MS", "3MS" quarterly, "12MS" yearly; "ME", "3ME", "12ME"), or a fixed step ("3600s", weeks as
    "604800s"). Irregular spacing: the most common step (the output is regular; see README)."""
    boundary = np.zeros(len(times_ns), dtype=bool)
    boundary[starts] = True
    inner = ~boundary[1:]  # diffs across sequence boundaries are not spacings
    d = np.diff(times_ns)[inner]
    d = d[d > 0]
    if d.size == 0:
        return "86400s"
    vals, counts = np.unique(d, return_counts=True)
    step = int(vals[np.argmax(counts)])
    if step == DAY_NS:
        weekday = (times_ns // DAY_NS + 3) % 7
        if np.all(weekday < 5) and np.mean(d == 3 * DAY_NS) > 0.05:
            return "B"
    if step >= 28 * DAY_NS:
        md = np.diff(_month_index(times_ns))[inner]
        md = md[md > 0]
        if md.size:
            mv, mc = np.unique(md, return_counts=True)
            n = int(mv[np.argmax(mc)])
            tod = times_ns % DAY_NS
            same_tod = np.all(tod == tod[0])
            if same_tod and np.all(_day_of_month(times_ns) == 0):
                return f"{n if n > 1 else ''}MS"
            if same_tod and np.all(_is_month_end(times_ns)):
                return f"{n if n > 1 else ''}ME"
    return f"{step // 1_000_000_000}s" if step % 1_000_000_000 == 0 else f"{step}ns"


def _fixed_step(freq: str) -> int:
    return int(pd.Timedelta(freq).value)


def _holidays(holidays: list[str] | tuple[str, ...] | None) -> np.ndarray:
    return np.asarray(holidays or [], dtype="datetime64[D]")


def time_grid(start_ns: np.ndarray, length: int, freq: str, holidays: list[str] | None = None) -> np.ndarray:
    """[N, length] int64 ns timestamps starting at each ``start_ns`` with spacing ``freq`` (vectorized);
    business days skip weekends and the observed ``holidays``; months advance on the calendar."""
    k = np.arange(length)
    if freq == "B":
        start_d = start_ns.astype("datetime64[ns]").astype("datetime64[D]")
        tod = start_ns - start_d.astype("datetime64[ns]").astype(np.int64)
        days = np.busday_offset(start_d[:, None], k[None, :], roll="forward", holidays=_holidays(holidays))
        return days.astype("datetime64[ns]").astype(np.int64) + tod[:, None]
    if (mo := _months(freq)) is not None:
        n, anchor = mo
        start_m = start_ns.astype("datetime64[ns]").astype("datetime64[M]")
        tod = start_ns % DAY_NS
        months = start_m[:, None] + (n * k)[None, :].astype("timedelta64[M]")
        if anchor == "E":  # the last day of each month
            days = (months + 1).astype("datetime64[D]") - 1
        else:
            days = months.astype("datetime64[D]")
        return days.astype("datetime64[ns]").astype(np.int64) + tod[:, None]
    return start_ns[:, None] + _fixed_step(freq) * k[None, :]


def grid_position(ns: np.ndarray, freq: str, phase: int, holidays: list[str] | None = None) -> np.ndarray:
    """Timestamps -> integer positions on the grid (business days, months or steps since 1970)."""
    if freq == "B":
        d = ns.astype("datetime64[ns]").astype("datetime64[D]")
        return np.busday_count(_EPOCH_DAY, d, holidays=_holidays(holidays)).astype(np.int64)
    if _months(freq) is not None:
        return _month_index(ns)
    return (ns - phase) // _fixed_step(freq)


def grid_time(pos: np.ndarray, freq: str, phase: int, holidays: list[str] | None = None) -> np.ndarray:
    """Integer grid positions -> timestamps (int64 ns); ``phase`` is the time of day / step offset."""
    if freq == "B":
        days = np.busday_offset(_EPOCH_DAY, pos, roll="forward", holidays=_holidays(holidays))
        return days.astype("datetime64[ns]").astype(np.int64) + phase
    if (mo := _months(freq)) is not None:
        months = pos.astype("datetime64[M]")
        days = (months + 1).astype("datetime64[D]") - 1 if mo[1] == "E" else months.astype("datetime64[D]")
        return days.astype("datetime64[ns]").astype(np.int64) + phase
    return phase + pos * _fixed_step(freq)


def _cycle(freq: str) -> int:
    """Grid positions per calendar cycle: a day for sub-daily steps, a week of days, a week of
    business days, a year of months; 0 when there is no such cycle (weekly, yearly, odd steps)."""
    if freq == "B":
        return 5
    if (mo := _months(freq)) is not None:  # positions are months whatever the step
        return 12 if mo[0] < 12 else 0
    step = _fixed_step(freq)
    if step == DAY_NS:
        return 7
    return DAY_NS // step if step < DAY_NS and DAY_NS % step == 0 else 0


def _phase(starts_ns: np.ndarray, freq: str) -> int:
    """The grid's offset: the most common time of day (calendar steps) or remainder of the step."""
    mod = DAY_NS if freq == "B" or _months(freq) is not None else _fixed_step(freq)
    vals, counts = np.unique(starts_ns % mod, return_counts=True)
    return int(vals[np.argmax(counts)])


def observed_holidays(times_ns: np.ndarray, first: np.ndarray, last: np.ndarray, min_spans: int) -> list[str]:
    """Weekdays no row has although at least ``min_spans`` sequences span them (exchange holidays):
    business-day output skips them. Public calendar facts, not anyone's value."""
    days = np.unique(times_ns.astype("datetime64[ns]").astype("datetime64[D]"))
    lo, hi = days[0], days[-1]
    cand = np.arange(lo, hi + 1, dtype="datetime64[D]")
    cand = cand[np.is_busday(cand) & ~np.isin(cand, days)]
    if cand.size == 0:
        return []
    f = np.sort(first.astype("datetime64[ns]").astype("datetime64[D]"))
    la = np.sort(last.astype("datetime64[ns]").astype("datetime64[D]"))
    spans = np.searchsorted(f, cand, side="right") - np.searchsorted(la, cand, side="left")
    return [str(d) for d in cand[spans >= min_spans]]


def _bins(edges: np.ndarray, counts: np.ndarray) -> KAnonymousBins:
    """Histogram bins for sampling from noisy counts (uniform when none is positive)."""
    c = np.maximum(np.asarray(counts, dtype=np.float64), 0.0)
    if not c.sum() > 0:
        c = np.ones_like(c)
    return KAnonymousBins([float(v) for v in edges], [float(v) for v in c])


def integer_time_format(dtype: str | None, times_ns: np.ndarray) -> str | None:
    """How an integer time index was written: years ("%Y": every time is Jan 1, 00:00) or dates as
    yyyymmdd ("%Y%m%d": midnight); None when the column was not integer."""
    if not dtype or not dtype.lower().startswith(("int", "uint")):
        return None
    dt = times_ns.astype("datetime64[ns]")
    if np.all(dt.astype("datetime64[Y]").astype("datetime64[ns]") == dt):
        return "%Y"
    if np.all(times_ns % DAY_NS == 0):
        return "%Y%m%d"
    return None


# ------------------------------------------------------------------------------------------------
# the layout
# ------------------------------------------------------------------------------------------------
@dataclass
class TimeLayout:
    freq: str = "86400s"
    phase: int = 0
    max_len: int = 0
    time_dtype: str | None = None  # the typed column's dtype (tz kept), datetime64[...]
    starts: KAnonymousBins | None = None  # grid positions of sequence starts
    lengths: KAnonymousBins | None = None
    clock: str = "wall"  # "utc" for sub-daily steps of a zoned series (exact across DST)
    holidays: list[str] = field(default_factory=list)  # business days never observed (B only)
    int_format: str | None = None  # integer time index: "%Y" (years) or "%Y%m%d"
    int_dtype: str | None = None
    # where starts fall in the calendar cycle (_cycle): probabilities of each place on the lattice
    # (places held by fewer than protect_k units get 0); empty: starts drawn on the lattice directly
    cycle_probs: list[float] = field(default_factory=list)
    lattice_step: int = 1
    lattice_phase: int = 0

    @staticmethod
    def clock_for(freq: str, time_dtype: str | None) -> str:
        zoned = bool(time_dtype) and ", " in str(time_dtype)
        sub_daily = freq not in ("B",) and _months(freq) is None and _fixed_step(freq) < DAY_NS
        return "utc" if zoned and sub_daily else "wall"

    @classmethod
    def fit(cls, start_ns: np.ndarray, lengths: np.ndarray, freq: str, time_dtype: str | None,
            prot: Protection, holidays: list[str] | None = None, int_dtype: str | None = None,
            int_format: str | None = None, clock: str = "wall") -> TimeLayout:
        """One start and one length per privacy unit (a sequence of a panel; a window of a series)."""
        phase = _phase(start_ns, freq)
        pos = grid_position(start_ns, freq, phase, holidays)
        upos = np.unique(pos)
        step = int(np.gcd.reduce(np.diff(upos))) if upos.size > 1 else 1
        step = max(step, 1)
        lattice0 = int(upos[0] % step)
        period = _cycle(freq)
        cycle_probs: list[float] = []
        if period and period % step == 0 and period // step > 1:
            # starts keep their place in the calendar cycle (hour of day, weekday, month of year):
            # windows of traffic that start in the morning must not start at 13:00
            m = period // step
            q = (pos - lattice0) // step
            counts = np.bincount(q % m, minlength=m)  # one start per unit
            kept = np.where(counts >= prot.k, counts, 0).astype(np.float64)
            cycle_probs = (kept / kept.sum() if kept.sum() > 0 else np.full(m, 1.0 / m)).tolist()
            starts = KAnonymousBins.fit(q // m, prot, prot.rng("__starts__"))
        else:
            starts = KAnonymousBins.fit(pos, prot, prot.rng("__starts__"), step=step, phase=lattice0)
        lens = KAnonymousBins.fit(lengths, prot, prot.rng("__lengths__"))
        max_len = int(max(1, np.floor(lens.edges[-1])))
        return cls(freq, phase, max_len, time_dtype, starts, lens, clock, list(holidays or []), int_format,
                   int_dtype, cycle_probs, step, lattice0)

    @classmethod
    def fit_dp(cls, start_ns: np.ndarray, lengths: np.ndarray, seq_units: np.ndarray, freq: str,
               time_dtype: str | None, dp: StatsAccountant, int_dtype: str | None = None,
               int_format: str | None = None, clock: str = "wall",
               fixed_length: int | None = None, min_length: int = 1) -> TimeLayout:
        """Differentially private layout (``dp_noise``; 8 queries, sequences weighted 1/(sequences
        of their unit)): the grid's phase is the most common start residue among those whose noisy
        count clears the level threshold (0 if none); starts keep their place in the calendar cycle
        through a noisy histogram over the cycle's places (places below the bin threshold get 0);
        start and length bins are the last stage of the numeric procedure (datetime domain for starts,
        signed decades for lengths; never below the schema's ``min_sequence_length``). The lattice of starts is the grid itself (step 1): the gcd of the
        start positions would depend on single units. Business-day holidays are not learned (empty):
        which weekdays no row has is decided by single units.

        Not private: ``freq`` (``infer_freq``: the most common spacing, and whether every time is a
        weekday / a month start) and ``int_format`` (whether every time is on Jan 1 / midnight) are
        format facts, but one unit can change them (e.g. a single row off the grid or on a weekend);
        they stay as inferred and are named in the release's privacy notes by the lead."""
        units = np.asarray(seq_units)
        n_units = int(np.unique(units).size)
        mod = DAY_NS if freq == "B" or _months(freq) is not None else _fixed_step(freq)
        kept = thresholded_levels(dp, (np.asarray(start_ns) % mod).astype(object), units)
        phase = int(max(kept, key=lambda r: (kept[r], -int(r)))) if kept else 0
        pos = grid_position(start_ns, freq, phase, None)
        m = 12 if _months(freq) is not None else _cycle(freq)  # yearly data keeps its month too
        cycle_probs: list[float] = []
        if m > 1:
            place = np.mod(pos, m)
            h = dp.gaussian(np.bincount(place, weights=unit_weights(units), minlength=m)[:m])
            kept_p = np.where(h > dp.bin_threshold(m), h, 0.0)
            cycle_probs = (kept_p / kept_p.sum() if kept_p.sum() > 0 else np.full(m, 1.0 / m)).tolist()
        else:  # no cycle: the query is made all the same (its count is fixed by the plan) and unused
            dp.gaussian(np.array([float(n_units)]))
        with dp.weighted(WEIGHT_STARTS):
            hs = numeric_histogram(dp, np.asarray(start_ns, dtype=np.float64), units, n_units, "datetime")
        if not hs["signal"]:  # no public fallback for where the dates lie: stop, do not publish 1903
            raise ConfigError(
                f"model.privacy: the start times of the {n_units} entities are lost in the statistics' noise "
                f"(noise std {dp.sigma_1 / WEIGHT_STARTS ** 0.5:.0f} entities per bin); raise model.privacy.epsilon "
                "or model.privacy.stats_share, or train on more entities")
        e_pos = grid_position(np.asarray(hs["edges"]).astype(np.int64), freq, phase, None).astype(np.float64)
        e_pos = np.maximum.accumulate(e_pos)
        if m > 1:
            e_pos = np.floor_divide(e_pos, m)
        starts = _bins(e_pos, hs["counts"])
        hl = numeric_histogram(dp, np.asarray(lengths, dtype=np.float64), units, n_units, "log")
        if fixed_length is None and not hl["signal"]:  # like the starts: no public fallback worth publishing
            raise ConfigError(
                f"model.privacy: the sequence lengths of the {n_units} entities are lost in the statistics' noise; "
                "raise model.privacy.epsilon or model.privacy.stats_share, train on more entities, or set the "
                "schema's sequence_length (windows of a public length)")
        if fixed_length is not None:  # windows of a fixed length (public)
            fixed = int(fixed_length)
            lens = KAnonymousBins([float(fixed), float(fixed)], [1.0])
            max_len = fixed
        else:
            e = np.clip(np.asarray(hl["edges"]), float(max(min_length, 1)), None)  # the schema's minimum
            lens = _bins(e, hl["counts"])
            max_len = int(max(1, np.floor(e[-1])))
        return cls(freq, phase, max_len, time_dtype, starts, lens, clock, [], int_format, int_dtype,
                   cycle_probs, 1, 0)

    # -- the time column ------------------------------------------------------------------------
    def to_ns(self, col: pd.Series) -> np.ndarray:
        return to_ns(col, self.clock)

    def grid(self, start_ns: np.ndarray, length: int) -> np.ndarray:
        return time_grid(start_ns, length, self.freq, self.holidays)

    def restore(self, ns: np.ndarray) -> pd.Series | np.ndarray:
        """Timestamps -> the input's type: the datetime dtype with its zone, or integers (years /
        yyyymmdd) when the time index was an integer column."""
        if self.int_format is not None:
            dt = np.asarray(ns).astype("datetime64[ns]")
            year = dt.astype("datetime64[Y]").astype(np.int64) + 1970
            if self.int_format == "%Y":
                out = year
            else:
                month = dt.astype("datetime64[M]").astype(np.int64) % 12 + 1
                day = _day_of_month(np.asarray(ns)) + 1
                out = year * 10000 + month * 100 + day
            return out.astype(self.int_dtype or "int64")
        return from_ns(ns, self.time_dtype, self.clock)

    # -- the protected layout model -------------------------------------------------------------
    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` (lengths, start timestamps in int64 ns) from the protected model."""
        lengths = np.clip(self.lengths.sample(n, rng), 1, self.max_len)
        if self.cycle_probs:
            m = len(self.cycle_probs)
            place = rng.choice(m, n, p=np.asarray(self.cycle_probs) / np.sum(self.cycle_probs))
            pos = self.lattice_phase + self.lattice_step * (self.starts.sample(n, rng) * m + place)
        else:
            pos = self.starts.sample(n, rng)
        starts = grid_time(pos, self.freq, self.phase, self.holidays)
        return lengths.astype(np.int64), starts.astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"freq": self.freq, "phase": self.phase, "max_len": self.max_len, "time_dtype": self.time_dtype,
                "starts": self.starts.to_dict() if self.starts else None,
                "lengths": self.lengths.to_dict() if self.lengths else None, "clock": self.clock,
                "holidays": list(self.holidays), "int_format": self.int_format, "int_dtype": self.int_dtype,
                "cycle_probs": list(self.cycle_probs), "lattice_step": self.lattice_step,
                "lattice_phase": self.lattice_phase}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TimeLayout:
        d = dict(d)
        for k in ("starts", "lengths"):
            d[k] = KAnonymousBins(**d[k]) if d.get(k) else None
        return cls(**d)
