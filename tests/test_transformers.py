"""Per-kind column transformers and their privacy protections (synth_pipeline/transformers/)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from synth_pipeline.config import ModelConfig
from synth_pipeline.encoding import TableEncoder
from synth_pipeline.errors import ConditioningError, ConfigError
from synth_pipeline.ingest import coerce
from synth_pipeline.schema import infer_schema
from synth_pipeline.transformers import (
    BinaryTransformer,
    CategoricalTransformer,
    ColumnTransformer,
    ContinuousTransformer,
    DatetimeTransformer,
    IdentifierTransformer,
    IntegerTransformer,
    KAnonymousBins,
    Protection,
    TimeLayout,
)
from synth_pipeline.transformers.time_layout import grid_position

PROT = Protection()


def _units_panel(n_ent: int = 200, rows: int = 20, seed: int = 0) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    per_ent = np.round(rng.lognormal(10, 1, n_ent), 2)  # one static value per entity
    units = np.repeat(np.arange(n_ent), rows)
    return pd.Series(per_ent[units]), units, per_ent


def test_static_numeric_knots_are_not_real_values_and_range_is_protected():
    col, units, per_ent = _units_panel()
    t = ContinuousTransformer("cap", "continuous", "float64", static=True).fit(col, units, PROT)
    knots = np.asarray(t.qmap.knots)
    assert not np.isin(knots, per_ent).any(), "a stored knot is a real entity's value"
    lo, hi = t.qmap.bounds
    s = np.sort(per_ent)
    # at least 5 (the smallest clip rank) entities lie beyond each bound, at most 8
    assert 5 <= (per_ent < lo).sum() + 1 <= 8 and 5 <= (per_ent > hi).sum() + 1 <= 8
    assert lo > s[0] and hi < s[-1]
    # generated values: inside the protected range and (almost) never a real value
    vals = t.inverse(np.random.default_rng(1).normal(size=20_000))
    assert vals.min() >= lo and vals.max() <= hi
    assert np.isin(vals, per_ent).mean() < 0.001


def test_static_numeric_is_fitted_on_one_value_per_entity():
    """A long entity must not dominate the knots (rows-based fitting made every knot its value)."""
    col, units, per_ent = _units_panel(n_ent=100, rows=2)
    heavy = pd.Series(np.r_[np.full(10_000, per_ent[0]), col.to_numpy()])
    heavy_units = np.r_[np.zeros(10_000, np.int64), units]
    t = ContinuousTransformer("cap", "continuous", "float64", static=True).fit(heavy, heavy_units, PROT)
    assert np.mean(np.isclose(t.qmap.knots, per_ent[0])) < 0.05


def test_dynamic_extremes_of_one_entity_do_not_set_the_range():
    rng = np.random.default_rng(0)
    units = np.repeat(np.arange(100), 50)
    x = rng.normal(100, 10, units.size)
    x[units == 7] = 1e9  # one entity's whole series is extreme: a row-level quantile would keep it
    t = IntegerTransformer("v", "integer", "int64").fit(pd.Series(x), units, PROT)
    assert t.qmap.bounds[1] < 200
    out = t.inverse(np.linspace(-8, 8, 1000))
    assert out.dtype == np.int64 and out.max() < 200


def test_rare_levels_counted_by_entity_never_stored_and_decoded_to_the_token():
    units = np.repeat(np.arange(50), 10)
    vals = np.where(units < 25, "a", "b").astype(object)
    vals[units == 3] = "one_entity_many_rows"  # 10 rows, one entity
    vals[np.isin(units, [4, 5, 6, 7])] = "four_entities"
    t = CategoricalTransformer("c", "categorical", "object").fit(pd.Series(vals), units, Protection(rare_token="Other"))
    assert t.levels == ["a", "b", "<rare>"] and t.rare_token == "Other"
    blob = json.dumps(t.to_dict())
    assert "one_entity_many_rows" not in blob and "four_entities" not in blob
    codes = t.transform(pd.Series(vals))
    assert set(t.inverse(codes)) == {"a", "b", "Other"}
    with pytest.raises(ConditioningError, match="not levels the model knows"):
        t.transform(pd.Series(["four_entities"]), strict=True)
    again = ColumnTransformer.from_dict(json.loads(blob))
    assert isinstance(again, CategoricalTransformer) and again.levels == t.levels


def test_every_kind_round_trips_through_json():
    units = np.repeat(np.arange(40), 5)
    rng = np.random.default_rng(0)
    cases = [
        ContinuousTransformer("x", "continuous", "float64", static=True),
        IntegerTransformer("n", "integer", "int64"),
        DatetimeTransformer("d", "datetime", "datetime64[ns]"),
        CategoricalTransformer("c", "categorical", "object"),
        BinaryTransformer("b", "binary", "bool"),
    ]
    cols = [pd.Series(rng.normal(size=200)), pd.Series(rng.integers(0, 9, 200)),
            pd.Series(pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10**6, 200), "s")),
            pd.Series(rng.choice(["x", "y"], 200).astype(object)), pd.Series(rng.random(200) < 0.5)]
    for t, col in zip(cases, cols, strict=True):
        t.fit(col, units, PROT)
        again = ColumnTransformer.from_dict(json.loads(json.dumps(t.to_dict())))
        assert type(again) is type(t) and again.to_dict() == t.to_dict()
        if t.is_numeric:
            z = t.transform(col)
            back = again.inverse(z)
            assert len(back) == len(col)
    ids = IdentifierTransformer("id", "identifier", "").fit(pd.Series([5, 6, 7]))
    assert (ids.inverse(3, "syn") > 10**9).all()


def test_k_anonymous_bins_hold_k_units_and_never_emit_a_unique_extreme():
    pos = np.r_[np.full(100, 1000), [10], np.arange(2000, 2040)]  # one unique early start at 10
    bins = KAnonymousBins.fit(pos, PROT, np.random.default_rng(0))
    assert all(c >= PROT.k for c in bins.counts)
    draws = bins.sample(5000, np.random.default_rng(1))
    assert draws.min() >= 1000 and 10 not in draws
    assert draws.max() < 2039


def test_time_layout_draws_starts_on_the_grid_from_protected_bins():
    days = pd.bdate_range("2019-01-02", periods=400)
    starts = days[np.r_[np.zeros(60, int), np.arange(60) * 5 + 3, [399]]]  # one unique late start
    start_ns = starts.to_numpy().astype("datetime64[ns]").astype(np.int64)
    lengths = np.r_[np.full(120, 50), [7]]  # one unique length
    lay = TimeLayout.fit(start_ns, lengths, "B", "datetime64[ns]", PROT)
    blob = json.dumps(lay.to_dict())
    assert str(int(start_ns[-1])) not in blob and str(int(start_ns[0])) not in blob
    n_len, n_start = lay.draw(3000, np.random.default_rng(0))
    assert set(n_len) == {50} and lay.max_len == 50
    drawn = pd.to_datetime(n_start)
    assert drawn.dayofweek.max() < 5 and (drawn.normalize() == drawn).all()  # business days at midnight
    assert drawn.max() < days[399]
    again = TimeLayout.from_dict(json.loads(blob))
    assert again == lay


def test_window_starts_keep_their_lattice():
    """Windows that start at midnight of hourly data keep starting at midnight."""
    hours = pd.date_range("2020-01-01", periods=24 * 200, freq="h")
    start_ns = hours[::24].to_numpy().astype("datetime64[ns]").astype(np.int64)
    lay = TimeLayout.fit(start_ns, np.full(200, 24), "3600s", "datetime64[ns]", PROT)
    _, drawn = lay.draw(2000, np.random.default_rng(0))
    assert (pd.to_datetime(drawn).hour == 0).all()
    assert grid_position(drawn, "3600s", lay.phase).min() >= grid_position(start_ns, "3600s", 0)[5]


def test_model_directory_encoder_has_no_rare_level_and_public_schema_is_reduced():
    rng = np.random.default_rng(0)
    rows = []
    for e in range(40):
        for t in range(6):
            rows.append({"key": f"E{e}", "ts": pd.Timestamp("2024-01-01") + pd.Timedelta(days=t),
                         "v": rng.normal(), "grp": "solo_level" if e == 0 else ["g1", "g2"][e % 2]})
    df = pd.DataFrame(rows)
    schema = infer_schema(df, time_index="ts", entity_key="key")
    assert "solo_level" in schema.column("grp").categories  # pinned by inference
    enc = TableEncoder(schema).fit(coerce(df, schema))
    assert "solo_level" not in json.dumps(enc.to_dict())
    assert enc.public_schema().column("grp").categories == ["g1", "g2", "_RARE_"]


def test_protection_options_are_validated_with_the_valid_values():
    with pytest.raises(ConfigError, match="protect_k.*>= 1"):
        ModelConfig(protect_k=0)
    with pytest.raises(ConfigError, match="clip_rank"):
        ModelConfig(clip_rank=(7, 5))
    with pytest.raises(ConfigError, match="rare_token"):
        ModelConfig(rare_token="")
    assert ModelConfig(rare_token="Other").protection().rare_token == "Other"


def test_a_protected_level_of_a_bool_column_is_not_cast_to_true():
    """bool('_RARE_') is True: the token must not be silently turned into a real value."""
    rows = []
    for e in range(30):
        for t in range(4):
            rows.append({"key": f"E{e}", "ts": pd.Timestamp("2024-01-01") + pd.Timedelta(days=t),
                         "v": float(e + t), "flag": e == 0})  # True held by one entity only
    df = pd.DataFrame(rows)
    schema = infer_schema(df, time_index="ts", entity_key="key")
    enc = TableEncoder(schema).fit(coerce(df, schema))
    d = enc.transform(coerce(df, schema))
    out = enc.inverse_transform(d.num, d.num_miss, d.cat, d.static, d.lengths, d.start_ns, np.random.default_rng(0))
    assert True not in set(out["flag"]) and "_RARE_" in set(out["flag"])
    assert False in set(out["flag"])
