"""The one encoded representation every evaluation metric works on (fitted on train only).

A sequence (an entity, or a window of a long series) becomes
  dyn      float32 [N, T, Fd]  per step: numerics in quantile-normal space, a missing flag for every
                               numeric column that had missing values in train, one-hot categoricals
  static   float32 [N, Fs]     per sequence: static numerics (quantile-normal, + missing flag) and
                               one-hot static categoricals, broadcast over time by ``features()``
  present  bool    [N, T]      padding mask (shorter entities are padded to train's longest)
Everything is zero at padding. The column codecs (quantile knots within the clipped range, category
levels, which columns have missing values, the longest sequence) come from
``TableEncoder(schema, levels=False).fit(train)``; nothing is fitted on holdout or synthetic data.

One deliberate difference from ``TableEncoder.transform``: numerics are mapped *continuously*.
The encoder's map sends a value sitting on an atom (e.g. the 99 % zeros of rain hours) to the
middle of the atom's probability mass but a value just above it to the atom's upper edge, a jump
of ~2.3 standard units for a 99 % atom. For a distance-based audit that is wrong: train plus 1 %
noise must stay next to train (measured on pollution windows: with the encoder's map such a
near-copy sat at median distance 10.1 from its source against 12.5 from the nearest holdout window;
with the continuous map 1.4 against 7.6). Here values are interpolated between the mid-probabilities
of the encoder's knots: the same monotone map off the atoms, continuous on them.

Rare categories: a level seen in fewer than ``min_level_units`` train entities (train windows of a
keyless series; the same privacy unit as the encoder's protection) is merged into one ``<other>`` slot, together with
values train never had. Between disjoint entity sets such levels cannot be compared (a 37-level
industry over 50 stocks puts most levels on one side only, which a classifier then "detects"),
and merging keeps rare values out of every output. The merge is decided on train alone.

Exact-match hashes (rows and whole sequences) are computed from the typed values, not from the
encoding (floats compared at float32 precision, so a CSV or float32 round trip still matches).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtri

from synth_pipeline.encoding import TableEncoder, privacy_units, sequence_index
from synth_pipeline.schema import DatasetSchema
from synth_pipeline.transformers import (
    NA_LEVEL,
    RARE_LEVEL,
    CategoricalTransformer,
    QuantileMap,
    transformer_for,
)
from synth_pipeline.transformers.protection import Protection

_EPS = 1e-4
_HASH_SEED = 0x5EED


@dataclass
class Feature:
    name: str  # display name: "col", "col:missing", "col=<common level>" or "col=<other>"
    column: str
    group: str  # num | miss | cat | static_num | static_miss | static_cat
    level: int = -1  # category index for one-hot features


@dataclass
class EncodedSet:
    """One table (train, holdout or synthetic) in the shared representation."""

    name: str
    dyn: np.ndarray  # float32 [N, T, Fd]
    static: np.ndarray  # float32 [N, Fs]
    present: np.ndarray  # bool [N, T]
    lengths: np.ndarray  # int64 [N]
    num_observed: np.ndarray  # bool [N, T, Fn]: numeric value present and not missing
    row_hash: np.ndarray  # uint64 [N, T] (0 at padding)
    seq_hash: np.ndarray  # uint64 [N]
    static_varies: np.ndarray  # bool [N]: a static column is not constant within the sequence
    units: np.ndarray  # int64 [N]: the privacy unit (entity) of each sequence; windows of one entity share it

    def __len__(self) -> int:
        return int(self.dyn.shape[0])

    def subset(self, idx: np.ndarray, name: str | None = None) -> EncodedSet:
        kw: dict[str, Any] = {f.name: getattr(self, f.name)[idx] for f in fields(self) if f.name != "name"}
        return EncodedSet(name=name or self.name, **kw)

    def features(self) -> np.ndarray:
        """[N, T, Fd + Fs] float32: dynamic features with the static ones broadcast over present steps."""
        st = np.broadcast_to(self.static[:, None, :], (*self.present.shape, self.static.shape[1]))
        out = np.concatenate([self.dyn, st], axis=2)
        return out * self.present[..., None]

    @property
    def full_length(self) -> bool:
        return bool(self.present.all())

    def flat(self, compact: bool | None = None) -> np.ndarray:
        """[N, D] float32 vectors whose Euclidean distance equals that of ``features()`` flattened.

        When every sequence has the full length, a static feature contributes T times the same
        squared difference, so it can be stored once scaled by sqrt(T) (``compact``: fewer
        dimensions, same distances). Sets compared with each other must use the same layout:
        pass ``compact=all(s.full_length for s in sets)``.
        """
        N, T, _ = self.dyn.shape
        if compact is None:
            compact = self.full_length
        if compact and not self.full_length:
            raise ValueError("compact distance vectors need full-length sequences")
        if compact:
            return np.ascontiguousarray(
                np.concatenate([self.dyn.reshape(N, -1), self.static * np.float32(np.sqrt(T))], 1), np.float32
            )
        return np.ascontiguousarray(self.features().reshape(N, -1), np.float32)


def continuous_forward(qmap: QuantileMap, x: np.ndarray) -> np.ndarray:
    """Quantile-normal score of ``x`` through the encoder's knots, continuous at atoms (see module doc)."""
    knots, probs = np.asarray(qmap.knots), np.asarray(qmap.probs)
    uk, first = np.unique(knots, return_index=True)
    last = np.r_[first[1:] - 1, len(knots) - 1]
    mid = 0.5 * (probs[first] + probs[last])
    if len(uk) == 1:
        u = np.full(x.shape, 0.5)
    else:
        u = np.interp(x, uk, mid)  # clamps outside the clipped range, like the encoder
    z = ndtri(np.clip(u, _EPS, 1 - _EPS))
    return np.where(np.isnan(x), 0.0, z)


def _float_values(col: pd.Series) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(col):
        c = col.dt.tz_localize(None) if getattr(col.dt, "tz", None) is not None else col
        ns = c.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
        return np.where(col.isna().to_numpy(), np.nan, ns)
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def level_codes(col: pd.Series, codec: CategoricalTransformer) -> np.ndarray:
    """Category index per value; -1 for values train never had (their one-hot row stays zero)."""
    levels = codec.levels or []
    real = [v for v in levels if v not in (NA_LEVEL, RARE_LEVEL)]
    na = col.isna().to_numpy()
    vals = pd.Index(col.to_numpy(dtype=object, na_value=None))
    codes = pd.Index(real, dtype=object).get_indexer(vals).astype(np.int64)
    if len(real) and codes.min(initial=0) < 0 and not na.all():
        # the same category read back with another type (1 vs "1", True vs "True"): match as text
        as_text = pd.Index([str(v) for v in real]).get_indexer(pd.Index(col.astype(str).to_numpy()))
        codes = np.where((codes < 0) & ~na, as_text, codes)
    if na.any():
        codes[na] = levels.index(NA_LEVEL) if NA_LEVEL in levels else -1
    return codes


def _hash_columns(df: pd.DataFrame, columns: list[str], numeric: set[str]) -> np.ndarray:
    """uint64 hash per row of the given typed columns (floats at float32 precision, text as str)."""
    parts = {}
    for c in columns:
        s = df[c]
        if c in numeric:
            v = _float_values(s).astype(np.float32)
            parts[c] = pd.Series(v, index=df.index)
        else:
            na = s.isna().to_numpy()
            parts[c] = pd.Series(np.where(na, "\x00<NA>", s.astype(str).to_numpy(dtype=object)), index=df.index)
    if not parts:
        return np.zeros(len(df), np.uint64)
    frame = pd.DataFrame(parts)
    return pd.util.hash_pandas_object(frame, index=False, hash_key="synthpipeline-v1").to_numpy(np.uint64)


def _sequence_hash(row_hash: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(_HASH_SEED)
    mult = rng.integers(1, 2**63, size=row_hash.shape[1], dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    with np.errstate(over="ignore"):
        h = (row_hash * mult[None, :]).sum(1, dtype=np.uint64)
        return h + lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)


class Representation:
    """Fit on train with ``TableEncoder(levels=False)``; ``transform`` any table into an EncodedSet."""

    def __init__(self, schema: DatasetSchema, min_level_units: int = 5):
        self.schema = schema
        self.min_level_units = min_level_units
        self.encoder: TableEncoder | None = None
        self.features: list[Feature] = []
        self.static_features: list[Feature] = []
        self.slots: dict[str, np.ndarray] = {}  # categorical column -> codec level index -> slot
        self.n_slots: dict[str, int] = {}
        self.slot_labels: dict[str, list[str]] = {}  # kept level names (common levels only) + "<other>"

    # -- layout -------------------------------------------------------------------------------
    def fit(self, train: pd.DataFrame, schema: DatasetSchema | None = None) -> Representation:
        """``train`` is a typed frame (``ingest.coerce``); ``schema`` its sequence layout if different."""
        # the audit's in-memory view: unprotected (real levels and ranges), never saved
        enc = TableEncoder(schema or self.schema, protection=None, levels=False)
        enc.fit(train)
        enc.schema = self.schema
        self.encoder = enc
        self._fit_slots(train, schema or self.schema)
        dyn: list[Feature] = []
        for c in enc.num_codecs:
            dyn.append(Feature(c.name, c.name, "num"))
        for c in enc.num_codecs:
            if c.has_missing:
                dyn.append(Feature(f"{c.name}:missing", c.name, "miss"))
        for c in enc.cat_codecs:
            dyn += [Feature(f"{c.name}={self.slot_labels[c.name][k]}", c.name, "cat", k) for k in range(self.n_slots[c.name])]
        st: list[Feature] = []
        for c in enc.static_codecs:
            if c.is_numeric:
                st.append(Feature(c.name, c.name, "static_num"))
                if c.has_missing:
                    st.append(Feature(f"{c.name}:missing", c.name, "static_miss"))
            else:
                st += [
                    Feature(f"{c.name}={self.slot_labels[c.name][k]}", c.name, "static_cat", k)
                    for k in range(self.n_slots[c.name])
                ]
        self.features, self.static_features = dyn, st
        return self

    def _fit_slots(self, train: pd.DataFrame, layout: DatasetSchema) -> None:
        enc = self._enc()
        idx, _, ent = sequence_index(train, layout)
        present = idx >= 0
        safe = np.where(present, idx, 0)
        for c in enc.codecs:
            if c.is_numeric:
                continue
            levels = c.levels or []
            codes = level_codes(train[c.name], c)[safe]
            # counted in privacy units (entities; windows of a keyless series), like the encoder's protection
            unit = ent if layout.entity_key is not None else np.arange(len(idx))
            u = np.broadcast_to(unit[:, None], codes.shape)[present & (codes >= 0)]
            k = codes[present & (codes >= 0)]
            pairs = np.unique(u.astype(np.int64) * (len(levels) + 1) + k)
            counts = np.bincount(pairs % (len(levels) + 1), minlength=len(levels))[: len(levels)]
            keep = counts >= self.min_level_units
            n_keep = int(keep.sum())
            lookup = np.full(len(levels), n_keep, np.int64)
            lookup[keep] = np.arange(n_keep)
            self.slots[c.name] = lookup
            self.n_slots[c.name] = n_keep + 1  # the last slot: merged rare levels and unseen values
            self.slot_labels[c.name] = [str(levels[i]) for i in np.flatnonzero(keep)] + ["<other>"]

    def slot_codes(self, col: pd.Series, name: str) -> np.ndarray:
        """Slot per value (-1 only for a missing value when train had none)."""
        codes = level_codes(col, self.codec(name))
        lookup = self.slots[name]
        other = self.n_slots[name] - 1
        out = np.where(codes >= 0, lookup[np.clip(codes, 0, None)], other)
        return np.where(col.isna().to_numpy() & (codes < 0), -1, out)

    @property
    def T(self) -> int:
        return int(self._enc().max_len)

    def _enc(self) -> TableEncoder:
        if self.encoder is None:
            raise RuntimeError("Representation.fit(train) must be called first")
        return self.encoder

    @property
    def numeric_columns(self) -> list[str]:
        return [c.name for c in self._enc().num_codecs]

    @property
    def categorical_columns(self) -> list[str]:
        return [c.name for c in self._enc().cat_codecs]

    @property
    def static_columns(self) -> list[str]:
        return [c.name for c in self._enc().static_codecs]

    def codec(self, name: str) -> Any:
        for c in self._enc().codecs:
            if c.name == name:
                return c
        raise KeyError(name)

    def feature_index(self, group: str, column: str | None = None) -> np.ndarray:
        feats = self.static_features if group.startswith("static") else self.features
        return np.array(
            [i for i, f in enumerate(feats) if f.group == group and (column is None or f.column == column)], dtype=np.int64
        )

    # -- transform ----------------------------------------------------------------------------
    def transform(self, df: pd.DataFrame, name: str, schema: DatasetSchema | None = None) -> EncodedSet:
        """Encode a typed frame sorted by (sequence key, time); ``schema`` gives its sequence layout
        when it differs from the dataset schema (synthetic windows keyed by ``sequence_id``)."""
        enc = self._enc()
        sch = schema or self.schema
        T = enc.max_len
        idx, lengths, ent = sequence_index(df, sch)
        units = np.asarray(ent if sch.entity_key is not None else np.arange(len(idx)), np.int64)
        if idx.shape[1] > T:
            idx = idx[:, :T]
        elif idx.shape[1] < T:
            idx = np.pad(idx, ((0, 0), (0, T - idx.shape[1])), constant_values=-1)
        lengths = np.minimum(lengths, T).astype(np.int64)
        pad = idx < 0
        present = ~pad
        safe = np.where(pad, 0, idx)
        N = idx.shape[0]
        first = idx[:, 0]

        num_codecs = enc.num_codecs
        num = np.zeros((N, T, len(num_codecs)), np.float32)
        observed = np.zeros(num.shape, bool)
        miss = []
        for j, c in enumerate(num_codecs):
            x = _float_values(df[c.name])
            obs = ~np.isnan(x)[safe] & present
            observed[..., j] = obs
            num[..., j] = np.where(obs, continuous_forward(c.qmap, x)[safe], 0.0)
            if c.has_missing:
                miss.append((~obs & present).astype(np.float32))
        parts = [num] + [m[..., None] for m in miss]
        for c in enc.cat_codecs:
            codes = self.slot_codes(df[c.name], c.name)[safe]
            oh = (codes[..., None] == np.arange(self.n_slots[c.name])) & present[..., None]
            parts.append(oh.astype(np.float32))
        dyn = np.concatenate(parts, axis=2) if parts else np.zeros((N, T, 0), np.float32)

        st_parts = []
        varies = np.zeros(N, bool)
        for c in enc.static_codecs:
            col = df[c.name]
            if c.is_numeric:
                x = _float_values(col)
                v = x[first]
                st_parts.append(continuous_forward(c.qmap, v)[:, None].astype(np.float32))
                if c.has_missing:
                    st_parts.append(np.isnan(v)[:, None].astype(np.float32))
                xv = x[safe]
                same = (xv == v[:, None]) | (np.isnan(xv) & np.isnan(v)[:, None])
            else:
                codes = self.slot_codes(col, c.name)
                st_parts.append((codes[first][:, None] == np.arange(self.n_slots[c.name])).astype(np.float32))
                raw = pd.factorize(col.astype(str).where(col.notna(), "\x00<NA>"))[0]
                same = raw[safe] == raw[first][:, None]
            varies |= (~same & present).any(1)
        static = np.concatenate(st_parts, axis=1) if st_parts else np.zeros((N, 0), np.float32)

        modelled = [c.name for c in enc.codecs]
        numeric = {c.name for c in enc.codecs if c.is_numeric}
        rh = _hash_columns(df, modelled, numeric)
        row_hash = np.where(present, rh[safe], np.uint64(0)).astype(np.uint64)
        return EncodedSet(
            name=name, dyn=dyn, static=static, present=present, lengths=lengths, num_observed=observed,
            row_hash=row_hash, seq_hash=_sequence_hash(row_hash, lengths), static_varies=varies, units=units,
        )


def protected_ranges(train: pd.DataFrame, schema: DatasetSchema, protection: Protection) -> dict[str, tuple[float, float]]:
    """Column -> [lo, hi] of every modelled numeric column: the range the synthesizer's encoder
    keeps with ``protection`` (``transformers/numeric.py``: tails cut at a random 5th-7th extreme
    privacy unit, interpolated, never a real extreme). The report bins data-unit marginals inside it."""
    units = privacy_units(train, schema)
    out: dict[str, tuple[float, float]] = {}
    for spec in schema.modelled:
        col = train[spec.name]
        t = transformer_for(spec.name, spec.kind, str(col.dtype), spec.static)
        if not t.is_numeric or col.isna().all():
            continue
        t.fit(col, units, protection)
        out[spec.name] = tuple(float(v) for v in t.qmap.bounds)
    return out
