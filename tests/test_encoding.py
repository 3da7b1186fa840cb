"""TableEncoder: layout, round trips, JSON persistence, and what it refuses."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from synth_pipeline.encoding import (
    QuantileMap,
    TableEncoder,
    infer_freq,
    sequence_ids,
    sequence_index,
    time_grid,
)
from synth_pipeline.errors import SchemaError
from synth_pipeline.ingest import coerce
from synth_pipeline.schema import DatasetSchema, infer_schema
from synth_pipeline.split import split_entities


def panel(n_ent: int = 6, T: int = 10, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(n_ent):
        n = T - (e % 3)  # variable lengths
        start = pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(e))
        for t in range(n):
            rows.append({
                "key": f"E{e}", "ts": start + pd.Timedelta(hours=t), "x": rng.normal(10 * e, 1),
                "n": int(rng.integers(0, 5)), "c": ["a", "b", "c"][(e + t) % 3], "grp": ["g1", "g2"][e % 2],
            })
    df = pd.DataFrame(rows)
    df.loc[3, "x"] = np.nan
    return df


def fitted(df: pd.DataFrame, **kw):
    schema = infer_schema(df, time_index="ts", entity_key="key")
    df = coerce(df, schema)
    return TableEncoder(schema, **kw).fit(df), df, schema


def test_layout_shapes_and_masks():
    enc, df, schema = fitted(panel(), protection=None)  # 6 entities: protection would hide most of it
    d = enc.transform(df)
    assert d.num.shape == (6, 10, 2) and d.cat.shape == (6, 10, 1)
    assert d.present.sum() == len(df)
    assert list(d.lengths) == [10, 9, 8, 10, 9, 8]
    assert d.num_miss.sum() == 1  # the one missing x
    assert np.all(d.num[d.present == 0] == 0)
    assert [c.name for c in enc.static_codecs] == ["grp"]
    assert d.static.shape[1] == 1 + len(enc.level_cards)


def test_roundtrip_recovers_values_and_dtypes():
    enc, df, schema = fitted(panel(), protection=None, clip_quantiles=(0.0, 1.0), n_quantiles=1000)
    d = enc.transform(df)
    out = enc.inverse_transform(d.num, d.num_miss, d.cat, d.static, d.lengths, d.start_ns, np.random.default_rng(0))
    assert list(out.columns) == ["key", "ts", "x", "n", "c", "grp"]
    assert out["c"].tolist() == df["c"].tolist()
    assert out["grp"].tolist() == df["grp"].tolist()
    assert out["n"].dtype == df["n"].dtype and out["n"].tolist() == df["n"].tolist()
    np.testing.assert_allclose(out["x"].to_numpy(), df["x"].to_numpy(), rtol=0.05, atol=0.5)
    assert out["x"].isna().sum() == 1
    assert (out["ts"] == df["ts"]).all()
    assert not set(out["key"]) & set(df["key"]), "surrogate keys must never be the real ones"


def test_json_roundtrip_is_identical_and_holds_no_rows():
    enc, df, schema = fitted(panel(n_ent=30))
    blob = json.dumps(enc.to_dict())
    again = TableEncoder.from_dict(json.loads(blob))
    d1, d2 = enc.transform(df), again.transform(df)
    np.testing.assert_array_equal(d1.num, d2.num)
    np.testing.assert_array_equal(d1.static, d2.static)
    assert "E3" not in blob  # entity keys are never stored


def test_quantile_map_is_monotone_and_clips_extremes():
    x = np.r_[np.random.default_rng(0).normal(size=5000), 1e6]
    q = QuantileMap.fit(x, 256, (0.001, 0.999))
    z = q.forward(np.sort(x))
    assert np.all(np.diff(z) >= -1e-12)
    back = q.inverse(np.linspace(-6, 6, 100))
    assert back.max() < 10, "an extreme outlier must not be reproducible"
    # point masses (many zeros) map back to exactly zero
    q0 = QuantileMap.fit(np.r_[np.zeros(900), np.arange(1, 101)], 64, (0.0, 1.0))
    assert np.mean(q0.inverse(q0.forward(np.zeros(10))) == 0) == 1


def test_windows_for_long_series():
    ts = pd.date_range("2020-01-01", periods=100, freq="h")
    df = pd.DataFrame({"ts": ts, "v": np.arange(100.0)})
    schema = DatasetSchema(columns=[{"name": "ts", "kind": "datetime"}, {"name": "v", "kind": "continuous"}],
                           time_index="ts", sequence_length=24)
    idx, lengths, _ = sequence_index(df, schema)
    assert idx.shape == (4, 24) and idx[1, 0] == 24
    ids = sequence_ids(df, schema)
    assert ids[23] == 0 and ids[24] == 1
    schema.window_stride = 12
    idx, _, _ = sequence_index(df, schema)
    assert idx.shape == (7, 24) and idx[1, 0] == 12
    assert infer_freq(ts.to_numpy().astype("datetime64[ns]").astype(np.int64), np.array([0])) == "3600s"


def test_business_day_and_month_grids():
    b = pd.bdate_range("2019-01-02", periods=30)
    ns = b.to_numpy().astype("datetime64[ns]").astype(np.int64)
    assert infer_freq(ns, np.array([0])) == "B"
    np.testing.assert_array_equal(time_grid(ns[:1], 30, "B")[0], ns)
    m = pd.date_range("2002-01-01", periods=24, freq="MS")
    mns = m.to_numpy().astype("datetime64[ns]").astype(np.int64)
    assert infer_freq(mns, np.array([0])) == "MS"
    np.testing.assert_array_equal(time_grid(mns[:1], 24, "MS")[0], mns)


def test_too_many_categories_is_refused_without_blowing_memory():
    n = 100_000
    df = pd.DataFrame({"ts": pd.date_range("2020-01-01", periods=n, freq="min"),
                       "code": [f"c{i}" for i in range(n)], "v": np.arange(n, dtype=float)})
    schema = DatasetSchema(
        columns=[{"name": "ts", "kind": "datetime"}, {"name": "code", "kind": "categorical"},
                 {"name": "v", "kind": "continuous"}],
        time_index="ts", sequence_length=24,
    )
    with pytest.raises(SchemaError, match="code.*100000 categories.*identifier"):
        TableEncoder(schema).fit(df)


def test_rare_levels_are_protected_and_never_decoded_to_real_levels():
    """A level held by fewer than protect_k entities is neither stored nor emitted (it used to be
    kept in the encoder and decoded back to the real rare value)."""
    df = panel(n_ent=30, T=10)
    df.loc[df["key"].isin(["E1", "E2"]), "c"] = "zz_rare"  # two entities < k=5
    enc, cdf, _ = fitted(df)
    codec = next(c for c in enc.cat_codecs if c.name == "c")
    assert "zz_rare" not in codec.levels and "<rare>" in codec.levels and codec.rare_token == "_RARE_"
    assert "zz_rare" not in json.dumps(enc.to_dict())
    d = enc.transform(cdf)
    out = enc.inverse_transform(d.num, d.num_miss, d.cat, d.static, d.lengths, d.start_ns, np.random.default_rng(0))
    assert "zz_rare" not in set(out["c"]) and "_RARE_" in set(out["c"])
    assert set(out["c"]) <= {"a", "b", "c", "_RARE_"}


def test_static_column_that_varies_is_refused():
    df = panel()
    schema = infer_schema(df, time_index="ts", entity_key="key")
    schema.column("c").static = True
    with pytest.raises(SchemaError, match="'c' is marked static but varies"):
        TableEncoder(schema).fit(coerce(df, schema))


def test_short_entity_is_refused():
    df = panel()
    schema = infer_schema(df, time_index="ts", entity_key="key")
    schema.min_sequence_length = 10
    with pytest.raises(SchemaError, match="fewer than min_sequence_length=10"):
        TableEncoder(schema).fit(coerce(df, schema))


def test_entity_split_is_disjoint_and_seeded():
    keys = np.repeat(np.arange(50), 3)
    tr, ho = split_entities(keys, 0.2, seed=1)
    assert not set(keys[tr]) & set(keys[ho])
    assert len(set(keys[ho])) == 10
    tr2, _ = split_entities(keys, 0.2, seed=1)
    assert (tr == tr2).all()
