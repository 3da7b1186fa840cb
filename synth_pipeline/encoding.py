"""TableEncoder: a typed event table <-> tensors [N, T, F] + masks, fitted on train only.

Layout of one encoded batch (``EncodedData``):
  num       float32 [N, T, Fn]  numeric columns, quantile-mapped to N(0, 1); 0 where missing/padding
  num_miss  float32 [N, T, Fn]  1 where the value is missing (only columns that had missing values vary)
  cat       int64   [N, T, Fk]  category indices (a missing value is its own level)
  present   float32 [N, T]      1 for real steps, 0 for padding of shorter entities
  calendar  float32 [N, T, C]   sin/cos of hour, day of week, day of year, month (conditions)
  static    int64   [N, S]      static attributes as tokens (category index or quantile bin)

The table-level object is thin: it owns the sequence layout (entities / windows, padding, the
per-sequence level of each time-varying numeric) and composes one transformer per column
(``synth_pipeline.transformers``: continuous, integer, datetime, categorical, binary, identifier)
and the time layout. Each transformer owns its privacy protection (``transformers/protection.py``);
with ``protection=None`` nothing is protected, which only the audit's in-memory representation
uses. Everything is vectorized over rows: sequences are gathered with one index matrix.

With ``dp=StatisticsBudget`` (``model.privacy``) every data-dependent statistic the fit stores comes
from Gaussian mechanisms of L2 sensitivity 1 per privacy unit, planned from the schema and counted
(``transformers/dp_noise.py``: queries per column kind, the thresholds and their delta); only the
noise multiplier, delta and query count are stored (``dp`` in ``to_dict``), never the seed. Left
non-private, and why: the spacing of the time index (``infer_freq``) and an integer time index's
format, which one unit can change (see ``TimeLayout.fit_dp``); and the schema itself (kinds,
static flags, dtypes) where it was inferred rather than pinned in the dataset config.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synth_pipeline.dp import StatisticsBudget
from synth_pipeline.errors import SchemaError
from synth_pipeline.schema import DatasetSchema
from synth_pipeline.transformers import (
    N_CALENDAR,
    NA_LEVEL,
    RARE_LEVEL,
    CategoricalTransformer,
    ColumnTransformer,
    ContinuousTransformer,
    IdentifierTransformer,
    Protection,
    QuantileMap,
    TimeLayout,
    calendar,
    infer_freq,
    integer_time_format,
    observed_holidays,
    time_grid,
    to_ns,
    transformer_for,
)
from synth_pipeline.transformers.dp_noise import (
    LEVEL_RANGE,
    MIN_MASS,
    StatsAccountant,
    cdf_quantiles,
    noisy_histogram,
    plan_queries,
)

__all__ = ["NA_LEVEL", "RARE_LEVEL", "N_CALENDAR", "QuantileMap", "EncodedData", "TableEncoder", "infer_freq",
           "time_grid", "sequence_index", "sequence_ids", "privacy_units"]

log = logging.getLogger(__name__)
DEV_FLOOR = 0.5  # under DP: the smallest dev_std (a noisy level variance must not blow deviations up)


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


def privacy_units(df: pd.DataFrame, schema: DatasetSchema) -> np.ndarray:
    """The privacy unit of each row: its entity, or its non-overlapping window of a keyless series."""
    if schema.entity_key is not None:
        return pd.factorize(df[schema.entity_key], sort=False)[0].astype(np.int64)
    return np.asarray(sequence_ids(df, schema), dtype=np.int64)


# ------------------------------------------------------------------------------------------------
# the encoder
# ------------------------------------------------------------------------------------------------
@dataclass
class TableEncoder:
    schema: DatasetSchema
    protection: Protection | None = field(default_factory=Protection)
    n_quantiles: int = 256
    clip_quantiles: tuple[float, float] = (0.001, 0.999)  # unprotected (audit) maps only
    max_categories: int = 1000
    static_bins: int = 32
    # every static-numeric / level bin holds this many training sequences on average (fewer bins on
    # small panels): a token that pins one entity would let the generator reproduce that entity
    min_bin_sequences: int = 10
    levels: bool = True  # split dynamic numerics into a per-sequence level (static token) + deviation
    codecs: list[Any] = field(default_factory=list)  # one transformer per modelled column
    identifiers: list[IdentifierTransformer] = field(default_factory=list)
    key: IdentifierTransformer | None = None
    layout: TimeLayout | None = None
    # model.privacy: every stored data-dependent statistic through Gaussian mechanisms of this
    # budget (``transformers/dp_noise.py``); never stored itself (its seed would undo the noise)
    dp: StatisticsBudget | None = None
    dp_info: dict[str, Any] | None = None  # what is stored instead: noise multiplier, delta, query count

    # -- views ---------------------------------------------------------------------------------
    @property
    def num_codecs(self) -> list[ContinuousTransformer]:
        return [c for c in self.codecs if not c.static and c.is_numeric]

    @property
    def cat_codecs(self) -> list[CategoricalTransformer]:
        return [c for c in self.codecs if not c.static and not c.is_numeric]

    @property
    def static_codecs(self) -> list[Any]:
        return [c for c in self.codecs if c.static]

    @property
    def max_len(self) -> int:
        return self.layout.max_len if self.layout else 0

    @property
    def level_cards(self) -> list[int]:
        return [len(c.level_edges) - 1 for c in self.num_codecs if c.level_edges is not None]

    @property
    def dims(self) -> dict[str, Any]:
        return {
            "n_num": len(self.num_codecs),
            "num_missing": [c.has_missing for c in self.num_codecs],
            "cat_cards": [c.n_tokens for c in self.cat_codecs],
            "cat_levels_seen": [max(c.n_seen, c.n_tokens) for c in self.cat_codecs],
            "static_cards": [c.n_tokens for c in self.static_codecs] + self.level_cards,
            "n_static_columns": len(self.static_codecs),  # the rest of static_cards are level tokens
            "n_calendar": N_CALENDAR,
            "max_len": self.max_len,
        }

    # -- fit -----------------------------------------------------------------------------------
    def fit(self, df: pd.DataFrame) -> TableEncoder:
        if self.dp is not None:
            return self._fit_dp(df)
        s, prot = self.schema, self.protection
        idx, lengths = self._check_layout(df)
        units = privacy_units(df, s)
        if prot is not None and np.unique(units).size < 2 * prot.k:
            log.warning("only %d privacy units (entities / windows) for protect_k=%d: most levels and bins will "
                        "be protected", np.unique(units).size, prot.k)
        tdtype, freq, clock, times, int_dtype, int_format = self._time_facts(df, idx)
        last = times[idx[np.arange(len(idx)), np.minimum(lengths, idx.shape[1]) - 1]]
        holidays = (observed_holidays(times, times[idx[:, 0]], last, prot.k if prot else 1)
                    if freq == "B" else [])
        if prot is None:
            self.layout = TimeLayout(freq, 0, int(idx.shape[1]), tdtype, clock=clock, holidays=holidays,
                                     int_format=int_format, int_dtype=int_dtype if int_format else None)
        else:
            self.layout = TimeLayout.fit(times[idx[:, 0]], lengths, freq, tdtype, prot, holidays=holidays,
                                         int_dtype=int_dtype if int_format else None, int_format=int_format,
                                         clock=clock)
        self._fit_codecs(df, units, idx.shape[0])
        if self.levels:
            self._fit_levels(df, idx)
        return self

    def _fit_codecs(self, df: pd.DataFrame, units: np.ndarray, n_sequences: int,
                    dp: StatsAccountant | None = None) -> None:
        """One transformer per modelled column (``dp``: fitted on noisy statistics); static columns
        must be constant within each entity, and their bins are sized by ``n_sequences``."""
        s, prot = self.schema, self.protection
        self.codecs = []
        for spec in s.modelled:
            col = df[spec.name]
            if spec.static and s.entity_key is not None:
                per = df.groupby(s.entity_key, sort=False, observed=True)[spec.name].nunique(dropna=False)
                if int(per.max()) > 1:
                    raise SchemaError(
                        f"column '{spec.name}' is marked static but varies within {int((per > 1).sum())} "
                        f"entities; fix the data or set 'static: false'"
                    )
            t = transformer_for(spec.name, spec.kind, str(col.dtype), spec.static)
            if t.is_numeric:
                t.fit(col, units, prot, self.n_quantiles, self.clip_quantiles, dp=dp)
                if spec.static:
                    t.set_bins(n_sequences, self.static_bins, self.min_bin_sequences)
            else:
                t.fit(col, units, prot, self.max_categories, dp=dp)
            self.codecs.append(t)

    def _check_layout(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        s = self.schema
        if s.entity_key is not None:
            self.key = IdentifierTransformer(s.entity_key, "identifier", "").fit(df[s.entity_key])
        self.identifiers = [IdentifierTransformer(c.name, "identifier", "").fit(df[c.name]) for c in s.identifiers]
        idx, lengths, _ = sequence_index(df, s)
        short = int((lengths < s.min_sequence_length).sum())
        if short:
            raise SchemaError(
                f"{short} sequence(s) have fewer than min_sequence_length={s.min_sequence_length} rows "
                f"(shortest {int(lengths.min())}); drop those entities or lower min_sequence_length"
            )
        return idx, lengths

    def _time_facts(self, df: pd.DataFrame, idx: np.ndarray) -> tuple[str, str, str, np.ndarray, Any, str | None]:
        """The time column's dtype, spacing, clock, timestamps on that clock, declared dtype and integer
        format. Not private under DP: the spacing and format are read from the data (TimeLayout.fit_dp)."""
        s = self.schema
        tdtype = str(df[s.time_index].dtype)
        wall = to_ns(df[s.time_index])
        freq = infer_freq(wall, idx[:, 0])
        clock = TimeLayout.clock_for(freq, tdtype)
        times = wall if clock == "wall" else to_ns(df[s.time_index], clock)
        int_dtype = next((c.dtype for c in s.columns if c.name == s.time_index), None)
        return tdtype, freq, clock, times, int_dtype, integer_time_format(int_dtype, times)

    def _fit_dp(self, df: pd.DataFrame) -> TableEncoder:
        """``fit`` under differential privacy (``transformers/dp_noise.py``): the number of queries is
        planned from the schema, every stored statistic comes from them, and the count made is
        checked against the plan. The schema checks (static columns that vary, short sequences, too
        many categories) still raise on the real data: they stop the run, they store nothing."""
        s = self.schema
        planned, thresholded = plan_queries(s, self.levels)
        acc = StatsAccountant(self.dp, planned, thresholded)
        idx, lengths = self._check_layout(df)
        units = privacy_units(df, s)
        seq_units = units[idx[:, 0]]
        tdtype, freq, clock, times, int_dtype, int_format = self._time_facts(df, idx)
        self.layout = TimeLayout.fit_dp(times[idx[:, 0]], lengths, seq_units, freq, tdtype, acc,
                                        int_dtype=int_dtype if int_format else None, int_format=int_format,
                                        clock=clock, fixed_length=s.sequence_length,
                                        min_length=s.min_sequence_length)
        self._fit_codecs(df, units, int(np.unique(units).size), acc)  # DP: N (public) sizes the bins
        if self.levels:
            self._fit_levels_dp(df, idx, seq_units, acc)
        self.dp_info = acc.finish()
        return self

    def _fit_levels_dp(self, df: pd.DataFrame, idx: np.ndarray, seq_units: np.ndarray,
                       acc: StatsAccountant) -> None:
        """Levels under DP, 1 query per dynamic numeric column: a per-unit normalised noisy
        histogram of sequence levels over the fixed range [-4, 4] of N(0,1) space; edges at its noisy
        quantiles (the outer ones at the noisy extent). ``dev_std`` is post-processing of the same
        histogram: the column is N(0,1) over units, so the within-sequence variance is about
        1 - var(levels), plus the spread of levels around their bin centres (floored at ``DEV_FLOOR``
        so standardised deviations never blow up: too large a ``dev_std`` only shrinks them). The number of level bins follows the (public) unit
        count, as ``static_bins`` / ``min_bin_sequences``."""
        z, obs = self._gauss(df, idx)
        lv = self._seq_levels(z, obs)
        has = obs.any(1)
        n_units = int(np.unique(seq_units).size)
        n_bins = int(min(self.static_bins, max(1, n_units // self.min_bin_sequences)))
        for j, c in enumerate(self.num_codecs):
            nb = acc.fine_bins(n_units)
            edges = np.linspace(-LEVEL_RANGE, LEVEL_RANGE, nb + 1)
            vals, u = lv[has[:, j], j], seq_units[has[:, j]]
            b = np.clip(np.searchsorted(edges, vals, side="right") - 1, 0, nb - 1)
            h = np.maximum(noisy_histogram(acc, b, u, nb), 0.0)
            c.level_edges, c.dev_std = None, 1.0
            if n_bins < 2 or not h.sum() > 0:
                continue
            surv = np.flatnonzero(h > max(acc.sigma, MIN_MASS))
            if surv.size == 0:
                continue
            p = np.zeros(nb)
            p[surv[0]: surv[-1] + 1] = h[surv[0]: surv[-1] + 1]  # the bins that clear the noise
            p /= p.sum()
            mid = 0.5 * (edges[1:] + edges[:-1])
            # Sheppard's correction: midpoints of bins of width w overstate the variance by w^2 / 12
            var_lv = float(np.sum(p * mid**2) - np.sum(p * mid) ** 2 - (edges[1] - edges[0]) ** 2 / 12.0)
            e, cnt = edges[surv[0]: surv[-1] + 2], h[surv[0]: surv[-1] + 1]
            q = np.unique(cdf_quantiles(e, cnt, np.linspace(0, 1, n_bins + 1)))
            if len(q) < 3:
                continue
            c.level_edges = q.tolist()
            # spread of levels inside their level bins (uniform within the noisy density's bins)
            w_lv = np.diff(q)
            cdf_at = np.interp(q, np.r_[edges[0], edges[1:]], np.r_[0.0, np.cumsum(p)])
            p_lv = np.diff(cdf_at)
            inside = float(np.sum(p_lv * w_lv**2) / 12.0)
            c.dev_std = float(np.sqrt(np.clip(1.0 - var_lv, 0.0, 1.0) + inside).clip(DEV_FLOOR, 1.0))

    def _gauss(self, df: pd.DataFrame, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dynamic numerics in N(0,1) space [N, T, Fn] and their observed-mask."""
        pad = idx < 0
        safe = np.where(pad, 0, idx)
        z = np.zeros((*idx.shape, len(self.num_codecs)))
        obs = np.zeros(z.shape, dtype=bool)
        for j, c in enumerate(self.num_codecs):
            x = c.transform(df[c.name])[safe]
            obs[..., j] = ~np.isnan(x) & ~pad
            z[..., j] = np.where(obs[..., j], x, 0.0)
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
            cat[..., j] = np.where(pad, 0, c.transform(df[c.name])[safe])
        static = np.zeros((N, len(self.static_codecs)), np.int64)
        first = idx[:, 0]
        for j, c in enumerate(self.static_codecs):
            if c.is_numeric:
                static[:, j] = c.to_tokens(c.values(df[c.name])[first])
            else:
                static[:, j] = c.transform(df[c.name])[first]
        times = self.layout.to_ns(df[s.time_index])
        tgrid = np.where(pad, 0, times[safe])
        # padding steps continue the real spacing so calendar features stay meaningful
        tgrid = np.where(pad, self.layout.grid(times[first], T), tgrid)
        return EncodedData(
            num=num, num_miss=miss, cat=cat, present=present, calendar=calendar(tgrid),
            static=np.concatenate([static, tokens], 1), lengths=lengths, start_ns=times[first],
        )

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
            cols[c.name] = c.inverse(z[..., j][valid], num_miss[..., j][valid] > 0.5 if c.has_missing else None)
        for j, c in enumerate(self.cat_codecs):
            cols[c.name] = c.inverse(cat[..., j][valid])
        for j, c in enumerate(self.static_codecs):
            tok = static[:, j]
            vals = c.from_tokens(tok, rng) if c.is_numeric else c.inverse(tok)
            cols[c.name] = vals[seq] if isinstance(vals, np.ndarray) else vals.iloc[seq].reset_index(drop=True)
        times = self.layout.grid(start_ns, T)[valid]
        cols[s.time_index] = self.layout.restore(times)
        key_col = s.entity_key or "sequence_id"
        key = self.key or IdentifierTransformer(key_col, "identifier", "object")
        cols[key_col] = key.inverse(N, key_prefix)[seq]
        for t in self.identifiers:
            cols[t.name] = t.inverse(rows, f"{key_prefix}-{t.name}")
        order = [key_col] if s.entity_key is None else []
        order += [c for c in s.output_columns if c in cols]
        out = pd.DataFrame({k: (v if not isinstance(v, pd.Series) else v.to_numpy()) for k, v in cols.items()})
        out = out[order]
        for c in self.codecs:  # restore exact dtypes (category values came back as python objects)
            if c.is_numeric or c.dtype == "object":
                continue
            text = c.dtype.lower().startswith(("str", "string", "category"))
            if c.rare_token is not None and not text and (out[c.name] == c.rare_token).any():
                continue  # the protected token does not fit a bool / int column: it stays object
            try:
                out[c.name] = out[c.name].astype(c.dtype)
            except (TypeError, ValueError):
                pass
        return out

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
                static[:, j] = c.to_tokens(c.values(col))
            else:
                static[:, j] = np.where(known[:, j], c.transform(col, strict=True), 0)
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
                    codes[nn] = c.transform(col[nn], strict=True)
                cat[..., j] = np.where(k, codes[safe], 0)
                cat_known[..., j] = k
        return {
            "num": num, "num_known": num_known, "cat": cat, "cat_known": cat_known,
            "level_tokens": level_tok, "level_known": level_known,
        }

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": (self.public_schema() if self.protection else self.schema).to_dict(),
            "protection": self.protection.to_dict() if self.protection else None,
            "n_quantiles": self.n_quantiles,
            "clip_quantiles": list(self.clip_quantiles),
            "max_categories": self.max_categories,
            "static_bins": self.static_bins,
            "min_bin_sequences": self.min_bin_sequences,
            "levels": self.levels,
            "codecs": [c.to_dict() for c in self.codecs],
            "identifiers": [c.to_dict() for c in self.identifiers],
            "key": self.key.to_dict() if self.key else None,
            "layout": self.layout.to_dict() if self.layout else None,
        } | ({"dp": dict(self.dp_info)} if self.dp_info else {})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableEncoder:
        d = dict(d)
        schema = DatasetSchema.from_dict(d.pop("schema"))
        prot = d.pop("protection")
        codecs = [ColumnTransformer.from_dict(c) for c in d.pop("codecs")]
        ids = [IdentifierTransformer(**c) for c in d.pop("identifiers")]
        key = d.pop("key")
        layout = d.pop("layout")
        d["dp_info"] = d.pop("dp", None)
        d["clip_quantiles"] = tuple(d["clip_quantiles"])
        return cls(schema=schema, protection=Protection(**prot) if prot else None, codecs=codecs, identifiers=ids,
                   key=IdentifierTransformer(**key) if key else None,
                   layout=TimeLayout.from_dict(layout) if layout else None, **d)

    def save(self, path: Path) -> None:
        from synth_pipeline.io_utils import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1, default=_json_default))

    @classmethod
    def load(cls, path: Path) -> TableEncoder:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))



    def public_schema(self) -> DatasetSchema:
        """The schema as it may leave the training boundary (the model directory, MLflow): pinned
        categories reduced to the modelled levels (+ the protected token), no pinned min/max, no notes;
        under DP, a modelled column's ``nullable`` is its codec's noisy ``has_missing``."""
        d = self.schema.to_dict()
        by_name = {c.name: c for c in self.codecs}
        for col in d["columns"]:
            t = by_name.get(col["name"])
            col.pop("notes", None)
            if self.dp_info and t is not None:  # under DP: whether values are missing is the noisy answer
                col["nullable"] = bool(t.has_missing)
            col.pop("min", None)
            col.pop("max", None)
            if col.get("categories") is not None:
                if isinstance(t, CategoricalTransformer):
                    col["categories"] = t.real_levels + ([t.rare_token] if t.rare_token else [])
                else:
                    col["categories"] = None
        return DatasetSchema.from_dict(d)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
