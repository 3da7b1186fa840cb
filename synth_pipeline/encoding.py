"""TableEncoder: a typed event table <-> tensors [N, T, F] + masks, fitted on train only.

Layout of one encoded batch (``EncodedData``):
  num       float32 [N, T, Fn]  numeric columns, quantile-mapped to N(0, 1); 0 where missing/padding
  num_miss  float32 [N, T, Fn]  1 where the value is missing (only columns that had missing values vary)
  cat       int64   [N, T, Fk]  category indices (a missing value is its own level)
  present   float32 [N, T]      1 for real steps, 0 for padding of shorter entities
  calendar  float32 [N, T, C]   sin/cos of hour, day of week, day of year, month (conditions)
  static    int64   [N, S]      static attributes as tokens (category index or quantile bin)
Everything is vectorized over rows: sequences are gathered with one index matrix, never row by row.
The encoder holds only aggregates (quantile knots within a clipped range, category sets, bins);
it never stores a row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from synth_pipeline.errors import ConditioningError, SchemaError
from synth_pipeline.schema import NUMERIC_KINDS, ColumnKind, DatasetSchema

NA_LEVEL = "<NA>"
RARE_LEVEL = "<rare>"
N_CALENDAR = 8
_EPS = 1e-4


@dataclass
class EncodedData:
    num: np.ndarray
    num_miss: np.ndarray
    cat: np.ndarray
    present: np.ndarray
    calendar: np.ndarray
    static: np.ndarray
    lengths: np.ndarray
    start_ns: np.ndarray  # first timestamp of each sequence (int64 ns, UTC wall clock)

    def __len__(self) -> int:
        return self.num.shape[0]

    def subset(self, idx: np.ndarray) -> EncodedData:
        return EncodedData(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})


# ------------------------------------------------------------------------------------------------
# column transforms
# ------------------------------------------------------------------------------------------------
@dataclass
class QuantileMap:
    """Monotone map of a numeric column to N(0, 1) through clipped empirical quantiles.

    Clipping to ``[q_lo, q_hi]`` keeps the model from learning (and leaking) the extreme values.
    """

    knots: list[float]  # value at each probability in ``probs`` (non-decreasing)
    probs: list[float]

    @classmethod
    def fit(cls, x: np.ndarray, n_quantiles: int, clip: tuple[float, float]) -> QuantileMap:
        x = x[np.isfinite(x)]
        k = int(max(2, min(n_quantiles, x.size // 5 if x.size >= 10 else 2)))
        probs = np.linspace(0.0, 1.0, k)
        lo, hi = clip
        knots = np.quantile(x, lo + probs * (hi - lo))
        return cls(knots=knots.tolist(), probs=probs.tolist())

    def forward(self, x: np.ndarray) -> np.ndarray:
        knots, probs = np.asarray(self.knots), np.asarray(self.probs)
        uk, first = np.unique(knots, return_index=True)
        last = np.r_[first[1:] - 1, len(knots) - 1]
        p_lo, p_hi = probs[first], probs[last]
        xc = np.clip(x, uk[0], uk[-1])
        j = np.clip(np.searchsorted(uk, xc, side="right") - 1, 0, len(uk) - 1)
        exact = uk[j] == xc
        j1 = np.minimum(j + 1, len(uk) - 1)
        span = np.where(j1 > j, uk[j1] - uk[j], 1.0)
        t = np.where(j1 > j, (xc - uk[j]) / span, 0.0)
        u = np.where(exact, 0.5 * (p_lo[j] + p_hi[j]), p_hi[j] + t * (p_lo[j1] - p_hi[j]))
        u = np.where(np.isnan(x), 0.5, u)
        return ndtri(np.clip(u, _EPS, 1 - _EPS))

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return np.interp(ndtr(z), self.probs, self.knots)

    @property
    def bounds(self) -> tuple[float, float]:
        return self.knots[0], self.knots[-1]


def _calendar(ns: np.ndarray) -> np.ndarray:
    """sin/cos of hour-of-day, day-of-week, day-of-year and month: [..., 8] (conditions only)."""
    flat = ns.reshape(-1)
    days = flat // 86_400_000_000_000
    hour = (flat % 86_400_000_000_000) / 3_600_000_000_000
    dow = (days + 3) % 7  # 1970-01-01 was a Thursday
    dt = flat.astype("datetime64[ns]")
    year_start = dt.astype("datetime64[Y]")
    doy = (dt - year_start).astype("timedelta64[D]").astype(np.int64)
    month = dt.astype("datetime64[M]").astype(np.int64) % 12
    feats = []
    for v, period in ((hour, 24.0), (dow, 7.0), (doy, 365.25), (month, 12.0)):
        ang = 2 * np.pi * v / period
        feats += [np.sin(ang), np.cos(ang)]
    return np.stack(feats, -1).astype(np.float32).reshape(*ns.shape, N_CALENDAR)


def infer_freq(times_ns: np.ndarray, starts: np.ndarray) -> str:
    """The real spacing of the time index: a fixed step ("3600s"), business days ("B") or month starts ("MS")."""
    d = np.diff(times_ns)
    # diffs across sequence boundaries are not spacings
    boundary = np.zeros(len(times_ns), dtype=bool)
    boundary[starts] = True
    d = d[~boundary[1:]]
    d = d[d > 0]
    if d.size == 0:
        return "86400s"
    vals, counts = np.unique(d, return_counts=True)
    step = int(vals[np.argmax(counts)])
    day = 86_400_000_000_000
    dt = times_ns.astype("datetime64[ns]")
    if step == day:
        weekday = (times_ns // day + 3) % 7
        if np.all(weekday < 5) and np.mean(d == 3 * day) > 0.05:
            return "B"
    if 28 * day <= step <= 31 * day:
        dom = (dt - dt.astype("datetime64[M]")).astype("timedelta64[D]").astype(np.int64)
        if np.all(dom == 0):
            return "MS"
    return f"{step // 1_000_000_000}s" if step % 1_000_000_000 == 0 else f"{step}ns"


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
    step = int(pd.Timedelta(freq).value)
    return start_ns[:, None] + step * k[None, :]


# ------------------------------------------------------------------------------------------------
# sequence layout
# ------------------------------------------------------------------------------------------------
def sequence_index(df: pd.DataFrame, schema: DatasetSchema) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-index matrix [N, T] (-1 = padding), lengths [N] and the entity position of each sequence.

    ``df`` must be sorted by (entity, time), as ``ingest.coerce`` leaves it. Without a
    ``sequence_length`` each entity is one sequence; with one, entities are cut into windows.
    """
    n = len(df)
    if schema.entity_key is not None:
        codes = pd.factorize(df[schema.entity_key], sort=False)[0]
        change = np.r_[True, codes[1:] != codes[:-1]]
    else:
        change = np.zeros(n, dtype=bool)
        change[0] = True
    offsets = np.flatnonzero(change)
    counts = np.diff(np.r_[offsets, n])
    L = schema.sequence_length
    if L is None:
        T = int(counts.max())
        idx = offsets[:, None] + np.arange(T)[None, :]
        idx = np.where(np.arange(T)[None, :] < counts[:, None], idx, -1)
        return idx, counts.astype(np.int64), np.arange(len(offsets))
    S = schema.stride
    n_win = np.where(counts >= L, (counts - L) // S + 1, 0)
    total = int(n_win.sum())
    if total == 0:
        raise SchemaError(
            f"no entity has {L} rows: sequence_length={L} is longer than every sequence (longest "
            f"{int(counts.max())}); lower sequence_length"
        )
    ent = np.repeat(np.arange(len(offsets)), n_win)
    first_win = np.r_[0, np.cumsum(n_win)[:-1]]
    starts = offsets[ent] + S * (np.arange(total) - first_win[ent])
    idx = starts[:, None] + np.arange(L)[None, :]
    return idx, np.full(total, L, dtype=np.int64), ent


def sequence_ids(df: pd.DataFrame, schema: DatasetSchema) -> np.ndarray:
    """A sequence id per row (non-overlapping windows), for splitting train/holdout by sequence."""
    if schema.entity_key is not None and schema.sequence_length is None:
        return pd.factorize(df[schema.entity_key], sort=False)[0]
    L = schema.sequence_length
    if L is None:  # a single long series with no windowing: one sequence
        return np.zeros(len(df), dtype=np.int64)
    if schema.entity_key is not None:
        codes = pd.factorize(df[schema.entity_key], sort=False)[0]
        pos = df.groupby(codes, sort=False).cumcount().to_numpy()
        return codes.astype(np.int64) * (len(df) + 1) + pos // L
    return np.arange(len(df)) // L


# ------------------------------------------------------------------------------------------------
# the encoder
# ------------------------------------------------------------------------------------------------
@dataclass
class ColumnCodec:
    name: str
    kind: str
    dtype: str
    static: bool
    qmap: QuantileMap | None = None  # numeric
    levels: list[Any] | None = None  # discrete (incl. NA/rare)
    rare: list[Any] | None = None  # real levels merged into <rare> (decoded uniformly among them)
    has_missing: bool = False
    integral: bool = False
    bins: int = 0  # static numeric: number of quantile bins
    level_edges: list[float] | None = None  # dynamic numeric: bin edges of per-sequence levels
    dev_std: float = 1.0  # dynamic numeric: spread of within-sequence deviations from the level

    @property
    def is_numeric(self) -> bool:
        return ColumnKind(self.kind) in NUMERIC_KINDS

    @property
    def n_tokens(self) -> int:
        """Vocabulary size when the column is a static token."""
        if self.is_numeric:
            return self.bins + (1 if self.has_missing else 0)
        return len(self.levels or [])


@dataclass
class TableEncoder:
    schema: DatasetSchema
    n_quantiles: int = 256
    clip_quantiles: tuple[float, float] = (0.001, 0.999)
    min_category_count: int = 1
    max_categories: int = 1000
    static_bins: int = 32
    # every static-numeric / level bin holds this many training sequences on average (fewer bins on
    # small panels): a token that pins one entity would let the generator reproduce that entity
    min_bin_sequences: int = 10
    levels: bool = True  # split dynamic numerics into a per-sequence level (static token) + deviation
    codecs: list[ColumnCodec] = field(default_factory=list)
    freq: str | None = None
    max_len: int = 0
    key_dtype: str | None = None
    time_dtype: str | None = None
    id_dtypes: dict[str, str] = field(default_factory=dict)

    # -- views ---------------------------------------------------------------------------------
    @property
    def num_codecs(self) -> list[ColumnCodec]:
        return [c for c in self.codecs if not c.static and c.is_numeric]

    @property
    def cat_codecs(self) -> list[ColumnCodec]:
        return [c for c in self.codecs if not c.static and not c.is_numeric]

    @property
    def static_codecs(self) -> list[ColumnCodec]:
        return [c for c in self.codecs if c.static]

    @property
    def level_cards(self) -> list[int]:
        return [len(c.level_edges) - 1 for c in self.num_codecs if c.level_edges is not None]

    @property
    def dims(self) -> dict[str, Any]:
        return {
            "n_num": len(self.num_codecs),
            "num_missing": [c.has_missing for c in self.num_codecs],
            "cat_cards": [len(c.levels) for c in self.cat_codecs],
            "static_cards": [c.n_tokens for c in self.static_codecs] + self.level_cards,
            "n_static_columns": len(self.static_codecs),  # the rest of static_cards are level tokens
            "n_calendar": N_CALENDAR,
            "max_len": self.max_len,
        }

    # -- fit -----------------------------------------------------------------------------------
    def fit(self, df: pd.DataFrame) -> TableEncoder:
        s = self.schema
        self.codecs = []
        if s.entity_key is not None:
            self.key_dtype = str(df[s.entity_key].dtype)
        self.time_dtype = str(df[s.time_index].dtype)
        self.id_dtypes = {c.name: str(df[c.name].dtype) for c in s.identifiers}
        idx, lengths, _ = sequence_index(df, s)
        short = int((lengths < s.min_sequence_length).sum())
        if short:
            raise SchemaError(
                f"{short} sequence(s) have fewer than min_sequence_length={s.min_sequence_length} rows "
                f"(shortest {int(lengths.min())}); drop those entities or lower min_sequence_length"
            )
        self.max_len = int(idx.shape[1])
        times = _to_ns(df[s.time_index])
        starts = idx[:, 0]
        self.freq = infer_freq(times, starts)
        for spec in s.modelled:
            col = df[spec.name]
            codec = ColumnCodec(spec.name, spec.kind.value, str(col.dtype), spec.static)
            if spec.static and s.entity_key is not None:
                per = df.groupby(s.entity_key, sort=False, observed=True)[spec.name].nunique(dropna=False)
                if int(per.max()) > 1:
                    raise SchemaError(
                        f"column '{spec.name}' is marked static but varies within {int((per > 1).sum())} "
                        f"entities; fix the data or set 'static: false'"
                    )
            if codec.is_numeric:
                x = _numeric_values(col)
                codec.has_missing = bool(np.isnan(x).any())
                if np.isnan(x).all():
                    raise SchemaError(f"column '{spec.name}' has no values in the training data; set kind 'ignore'")
                codec.integral = spec.kind == ColumnKind.INTEGER
                codec.qmap = QuantileMap.fit(x, self.n_quantiles, self.clip_quantiles)
                if spec.static:
                    codec.bins = int(min(self.static_bins, max(2, np.unique(x[~np.isnan(x)]).size),
                                         max(1, idx.shape[0] // self.min_bin_sequences)))
            else:
                vc = col.value_counts(dropna=True)
                if len(vc) > self.max_categories:
                    raise SchemaError(
                        f"column '{spec.name}' has {len(vc)} categories, more than max_categories="
                        f"{self.max_categories}; set its kind to 'identifier' or 'ignore', or raise "
                        f"model.max_categories if it really is a category"
                    )
                keep = vc[vc >= self.min_category_count].index.tolist()
                rare = vc[vc < self.min_category_count].index.tolist()
                levels = sorted(_py(v) for v in keep)
                codec.rare = sorted(_py(v) for v in rare) or None
                if rare:
                    levels.append(RARE_LEVEL)
                codec.has_missing = bool(col.isna().any())
                if codec.has_missing:
                    levels.append(NA_LEVEL)
                codec.levels = levels
            self.codecs.append(codec)
        if self.levels:
            self._fit_levels(df, idx)
        return self

    def _gauss(self, df: pd.DataFrame, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dynamic numerics in N(0,1) space [N, T, Fn] and their observed-mask."""
        pad = idx < 0
        safe = np.where(pad, 0, idx)
        z = np.zeros((*idx.shape, len(self.num_codecs)))
        obs = np.zeros(z.shape, dtype=bool)
        for j, c in enumerate(self.num_codecs):
            x = _numeric_values(df[c.name])[safe]
            obs[..., j] = ~np.isnan(x) & ~pad
            z[..., j] = np.where(obs[..., j], c.qmap.forward(x), 0.0)
        return z, obs

    @staticmethod
    def _seq_levels(z: np.ndarray, obs: np.ndarray) -> np.ndarray:
        cnt = obs.sum(1)
        return np.where(cnt > 0, (z * obs).sum(1) / np.maximum(cnt, 1), 0.0)  # [N, Fn]

    def _fit_levels(self, df: pd.DataFrame, idx: np.ndarray) -> None:
        """Per-sequence level of each dynamic numeric column: panels differ mostly in level
        (a 40-dollar vs a 1000-dollar stock), so a coarse level becomes a static token generated
        first, and the sequence model learns the deviations from that bin's centre at their own
        scale (jointly across columns, which keeps correlated columns such as Open/Close together)."""
        z, obs = self._gauss(df, idx)
        lv = self._seq_levels(z, obs)
        has = obs.any(1)
        for j, c in enumerate(self.num_codecs):
            vals = lv[has[:, j], j]
            n_bins = int(min(self.static_bins, max(1, vals.size // self.min_bin_sequences)))
            c.level_edges = None
            if n_bins < 2 or np.ptp(vals) < 1e-6:
                continue
            edges = np.unique(np.quantile(vals, np.linspace(0, 1, n_bins + 1)))
            if len(edges) < 3:
                continue
            c.level_edges = edges.tolist()
        centers = self.level_centers(self.level_tokens(lv))
        for j, c in enumerate(self.num_codecs):
            if c.level_edges is not None:
                dev = (z[..., j] - centers[:, None, j])[obs[..., j]]
                c.dev_std = float(max(np.sqrt(np.mean(dev**2)), 1e-3))

    def level_tokens(self, lv: np.ndarray) -> np.ndarray:
        """Levels [N, Fn] -> tokens [N, n_level_columns]."""
        cols = [
            np.clip(np.searchsorted(np.asarray(c.level_edges), lv[:, j], side="right") - 1, 0, len(c.level_edges) - 2)
            for j, c in enumerate(self.num_codecs) if c.level_edges is not None
        ]
        return np.stack(cols, 1).astype(np.int64) if cols else np.zeros((lv.shape[0], 0), np.int64)

    def _standardize(self, z: np.ndarray, lv: np.ndarray) -> np.ndarray:
        out = z.copy()
        for j, c in enumerate(self.num_codecs):
            if c.level_edges is not None:
                out[..., j] = (z[..., j] - lv[:, None, j]) / c.dev_std
        return out

    def _unstandardize(self, num: np.ndarray, lv: np.ndarray) -> np.ndarray:
        out = num.astype(np.float64).copy()
        for j, c in enumerate(self.num_codecs):
            if c.level_edges is not None:
                out[..., j] = num[..., j] * c.dev_std + lv[:, None, j]
        return out

    def level_centers(self, tokens: np.ndarray) -> np.ndarray:
        """Level tokens -> bin centres [N, Fn] (0 for columns without levels)."""
        lv = np.zeros((tokens.shape[0], len(self.num_codecs)))
        k = 0
        for j, c in enumerate(self.num_codecs):
            if c.level_edges is None:
                continue
            e = np.asarray(c.level_edges)
            lv[:, j] = 0.5 * (e[tokens[:, k]] + e[tokens[:, k] + 1])
            k += 1
        return lv

    def transform(self, df: pd.DataFrame) -> EncodedData:
        s = self.schema
        idx, lengths, _ = sequence_index(df, s)
        if idx.shape[1] > self.max_len:
            idx, lengths = idx[:, : self.max_len], np.minimum(lengths, self.max_len)
        T = self.max_len
        if idx.shape[1] < T:
            idx = np.pad(idx, ((0, 0), (0, T - idx.shape[1])), constant_values=-1)
        pad = idx < 0
        safe = np.where(pad, 0, idx)
        present = (~pad).astype(np.float32)
        N = idx.shape[0]
        z, obs = self._gauss(df, idx)
        tokens = self.level_tokens(self._seq_levels(z, obs))
        num = np.where(obs, self._standardize(z, self.level_centers(tokens)), 0.0).astype(np.float32)
        miss = (~obs & ~pad[..., None]).astype(np.float32)
        cat = np.zeros((N, T, len(self.cat_codecs)), np.int64)
        for j, c in enumerate(self.cat_codecs):
            cat[..., j] = np.where(pad, 0, self._codes(df[c.name], c)[safe])
        static = np.zeros((N, len(self.static_codecs)), np.int64)
        first = idx[:, 0]
        for j, c in enumerate(self.static_codecs):
            if c.is_numeric:
                static[:, j] = self._bin(_numeric_values(df[c.name])[first], c)
            else:
                static[:, j] = self._codes(df[c.name], c)[first]
        times = _to_ns(df[s.time_index])
        tgrid = np.where(pad, 0, times[safe])
        # padding steps continue the real spacing so calendar features stay meaningful
        tgrid = np.where(pad, time_grid(times[first], T, self.freq), tgrid)
        return EncodedData(
            num=num, num_miss=miss, cat=cat, present=present, calendar=_calendar(tgrid),
            static=np.concatenate([static, tokens], 1), lengths=lengths, start_ns=times[first],
        )

    def _codes(self, col: pd.Series, c: ColumnCodec, strict: bool = False) -> np.ndarray:
        """Vectorized level lookup; unseen values map to <rare> (or raise when ``strict``)."""
        levels = c.levels or []
        real = [v for v in levels if v not in (NA_LEVEL, RARE_LEVEL)]  # always the leading levels
        na = col.isna().to_numpy()
        codes = pd.Index(real).get_indexer(pd.Index(col.to_numpy(dtype=object, na_value=None))).astype(np.int64)
        unseen = (codes == -1) & ~na
        if unseen.any():
            if strict:
                raise ConditioningError(
                    f"column '{c.name}': {int(unseen.sum())} value(s) were never seen in training; valid "
                    f"values: {real[:50]}{' ...' if len(real) > 50 else ''}"
                )
            codes[unseen] = levels.index(RARE_LEVEL) if RARE_LEVEL in levels else 0
        if na.any():
            if NA_LEVEL in levels:
                codes[na] = levels.index(NA_LEVEL)
            elif strict:
                raise ConditioningError(f"column '{c.name}' had no missing values in training")
            else:
                codes[na] = 0
        return codes

    def _bin(self, x: np.ndarray, c: ColumnCodec) -> np.ndarray:
        u = ndtr(c.qmap.forward(np.nan_to_num(x, nan=0.0)))
        b = np.clip((u * c.bins).astype(np.int64), 0, c.bins - 1)
        if c.has_missing:
            b = np.where(np.isnan(x), c.bins, b)
        return b

    # -- inverse -------------------------------------------------------------------------------
    def inverse_transform(
        self,
        num: np.ndarray,
        num_miss: np.ndarray,
        cat: np.ndarray,
        static: np.ndarray,
        lengths: np.ndarray,
        start_ns: np.ndarray,
        rng: np.random.Generator,
        key_prefix: str = "syn",
    ) -> pd.DataFrame:
        """Decode sampled arrays into a table with the source's columns and dtypes.

        ``static`` holds the static-column tokens followed by the level tokens.
        """
        s = self.schema
        N, T = num.shape[0], self.max_len
        n_static = len(self.static_codecs)
        lv = self.level_centers(static[:, n_static:])
        static = static[:, :n_static]
        z = self._unstandardize(num, lv)
        valid = np.arange(T)[None, :] < lengths[:, None]
        rows = int(valid.sum())
        seq = np.repeat(np.arange(N), lengths)
        cols: dict[str, Any] = {}
        for j, c in enumerate(self.num_codecs):
            x = c.qmap.inverse(z[..., j][valid])
            if c.has_missing:
                x = np.where(num_miss[..., j][valid] > 0.5, np.nan, x)
            cols[c.name] = self._restore_numeric(x, c)
        for j, c in enumerate(self.cat_codecs):
            cols[c.name] = self._restore_levels(cat[..., j][valid], c, rng)
        for j, c in enumerate(self.static_codecs):
            tok = static[:, j]
            if c.is_numeric:
                u = (tok + rng.random(N)) / c.bins
                x = c.qmap.inverse(ndtri(np.clip(u, _EPS, 1 - _EPS)))
                if c.has_missing:
                    x = np.where(tok >= c.bins, np.nan, x)
                vals = self._restore_numeric(x, c)
            else:
                vals = self._restore_levels(tok, c, rng)
            cols[c.name] = vals[seq] if isinstance(vals, np.ndarray) else vals.iloc[seq].reset_index(drop=True)
        times = time_grid(start_ns, T, self.freq)[valid]
        cols[s.time_index] = _from_ns(times, self.time_dtype)
        key_col = s.entity_key or "sequence_id"
        cols[key_col] = self._surrogate_keys(N, self.key_dtype, key_prefix)[seq]
        for name, dtype in self.id_dtypes.items():
            cols[name] = self._surrogate_keys(rows, dtype, f"{key_prefix}-{name}")
        order = [key_col] if s.entity_key is None else []
        order += [c for c in s.output_columns if c in cols]
        out = pd.DataFrame({k: (v if not isinstance(v, pd.Series) else v.to_numpy()) for k, v in cols.items()})
        out = out[order]
        for c in self.codecs:  # restore exact dtypes (category values came back as python objects)
            if not c.is_numeric and c.dtype != "object":
                try:
                    out[c.name] = out[c.name].astype(c.dtype)
                except (TypeError, ValueError):
                    pass
        return out

    def _restore_numeric(self, x: np.ndarray, c: ColumnCodec) -> np.ndarray | pd.Series:
        if c.integral:
            lo, hi = c.qmap.bounds
            x = np.clip(np.round(x), np.ceil(lo), np.floor(hi))
        if c.kind == ColumnKind.DATETIME.value:
            return pd.Series(_from_ns(x.astype(np.int64), c.dtype))
        if c.dtype.startswith("int") or c.dtype.startswith("uint"):
            return x.astype(c.dtype) if not np.isnan(x).any() else pd.array(x, dtype="Int64")
        return x.astype(c.dtype if c.dtype.startswith("float") else np.float64)

    def _restore_levels(self, codes: np.ndarray, c: ColumnCodec, rng: np.random.Generator) -> np.ndarray:
        levels = np.array(c.levels, dtype=object)
        vals = levels[np.clip(codes, 0, len(levels) - 1)]
        vals[vals == NA_LEVEL] = None
        is_rare = vals == RARE_LEVEL
        if is_rare.any() and c.rare:
            vals[is_rare] = np.array(c.rare, dtype=object)[rng.integers(0, len(c.rare), int(is_rare.sum()))]
        return vals

    @staticmethod
    def _surrogate_keys(n: int, dtype: str | None, prefix: str) -> np.ndarray:
        if dtype is not None and (dtype.startswith("int") or dtype.startswith("uint")):
            return np.arange(1, n + 1, dtype=np.int64) + 10**9  # outside any plausible real range
        width = max(6, len(str(n)))
        return (pd.Series(np.arange(1, n + 1)).astype(str).str.zfill(width).radd(prefix + "-")).to_numpy(dtype=object)

    # -- conditions ----------------------------------------------------------------------------
    def encode_static_conditions(self, cond: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Static tokens [N, S] and a known-mask [N, S] from a frame of entity attributes."""
        static = np.zeros((len(cond), len(self.static_codecs)), np.int64)
        known = np.zeros_like(static, dtype=bool)
        for j, c in enumerate(self.static_codecs):
            if c.name not in cond.columns:
                continue
            col = cond[c.name]
            known[:, j] = col.notna().to_numpy()
            if c.is_numeric:
                static[:, j] = self._bin(_numeric_values(col), c)
            else:
                static[:, j] = np.where(known[:, j], self._codes(col, c, strict=True), 0)
        n_lv = len(self.level_cards)  # levels are generated unless cells pin them
        static = np.concatenate([static, np.zeros((len(cond), n_lv), np.int64)], 1)
        known = np.concatenate([known, np.zeros((len(cond), n_lv), bool)], 1)
        return static, known

    def encode_cells(self, df: pd.DataFrame, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Known dynamic cells for conditioning. A column's level is the mean of its known cells;
        where none is known the level stays free (NaN) and is generated."""
        pad = idx < 0
        safe = np.where(pad, 0, idx)
        N, T = idx.shape
        full = df.copy()
        for c in self.num_codecs:
            if c.name not in full.columns:
                full[c.name] = np.nan
        z, num_known = self._gauss(full, idx)
        level_tok = self.level_tokens(self._seq_levels(z, num_known))
        num = np.where(num_known, self._standardize(z, self.level_centers(level_tok)), 0.0).astype(np.float32)
        has = num_known.any(1)
        use = [j for j, c in enumerate(self.num_codecs) if c.level_edges is not None]
        level_known = has[:, use] if use else np.zeros((N, 0), dtype=bool)
        cat = np.zeros((N, T, len(self.cat_codecs)), np.int64)
        cat_known = np.zeros_like(cat, dtype=bool)
        for j, c in enumerate(self.cat_codecs):
            if c.name in df.columns:
                col = df[c.name]
                k = col.notna().to_numpy()[safe] & ~pad
                codes = np.zeros(len(col), np.int64)
                nn = col.notna().to_numpy()
                if nn.any():
                    codes[nn] = self._codes(col[nn], c, strict=True)
                cat[..., j] = np.where(k, codes[safe], 0)
                cat_known[..., j] = k
        return {
            "num": num, "num_known": num_known, "cat": cat, "cat_known": cat_known,
            "level_tokens": level_tok, "level_known": level_known,
        }

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema.to_dict(),
            "n_quantiles": self.n_quantiles,
            "clip_quantiles": list(self.clip_quantiles),
            "min_category_count": self.min_category_count,
            "max_categories": self.max_categories,
            "static_bins": self.static_bins,
            "min_bin_sequences": self.min_bin_sequences,
            "levels": self.levels,
            "freq": self.freq,
            "max_len": self.max_len,
            "key_dtype": self.key_dtype,
            "time_dtype": self.time_dtype,
            "id_dtypes": self.id_dtypes,
            "codecs": [
                {**{k: v for k, v in c.__dict__.items() if k != "qmap"}, "qmap": c.qmap.__dict__ if c.qmap else None}
                for c in self.codecs
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableEncoder:
        d = dict(d)
        schema = DatasetSchema.from_dict(d.pop("schema"))
        codecs = []
        for c in d.pop("codecs"):
            c = dict(c)
            q = c.pop("qmap")
            codecs.append(ColumnCodec(**c, qmap=QuantileMap(**q) if q else None))
        d["clip_quantiles"] = tuple(d["clip_quantiles"])
        return cls(schema=schema, codecs=codecs, **d)

    def save(self, path: Path) -> None:
        from synth_pipeline.io_utils import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1, default=_json_default))

    @classmethod
    def load(cls, path: Path) -> TableEncoder:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# ------------------------------------------------------------------------------------------------
def _py(v: Any) -> Any:
    """numpy scalar -> python scalar (JSON-safe category values)."""
    return v.item() if isinstance(v, np.generic) else v


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _numeric_values(col: pd.Series) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(col):
        ns = _to_ns(col).astype(np.float64)
        return np.where(col.isna().to_numpy(), np.nan, ns)
    return col.to_numpy(dtype=np.float64, na_value=np.nan)


def _to_ns(col: pd.Series) -> np.ndarray:
    """Wall-clock int64 nanoseconds (time zone dropped; restored on output from the dtype)."""
    if getattr(col.dt, "tz", None) is not None:
        col = col.dt.tz_localize(None)
    return col.to_numpy(dtype="datetime64[ns]").astype(np.int64)


def _from_ns(ns: np.ndarray, dtype: str | None) -> pd.Series:
    s = pd.Series(ns.astype("datetime64[ns]"))
    if dtype and dtype.startswith("datetime64"):
        unit_tz = dtype[len("datetime64[") : -1]
        unit, _, tz = unit_tz.partition(", ")
        s = s.astype(f"datetime64[{unit}]")
        if tz:
            s = s.dt.tz_localize(tz)
    return s
