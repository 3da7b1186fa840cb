"""The encoder's statistics under differential privacy (issue 20 item 2; transformers/dp_noise.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from synth_pipeline.dp import StatisticsBudget
from synth_pipeline.encoding import TableEncoder
from synth_pipeline.ingest import coerce
from synth_pipeline.schema import infer_schema
from synth_pipeline.transformers import dp_noise
from synth_pipeline.transformers.dp_noise import StatsAccountant, level_threshold, plan_queries


def table(n: int = 200, T: int = 12, seed: int = 0, solo: bool = True) -> pd.DataFrame:
    """Static numeric (size), dynamic numerics (x, n), a datetime (when), a dynamic categorical (c)
    with one level held by a single entity, a static binary (grp) and a static level all hold (kind)."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(n):
        L = T - e % 4
        start = pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(e % 30))
        lvl = rng.lognormal(3, 0.5)
        for t in range(L):
            rows.append({
                "key": f"E{e}", "ts": start + pd.Timedelta(hours=t), "x": rng.normal(lvl, 1.0),
                "n": int(rng.integers(0, 50)), "c": "solo" if (solo and e == 0) else ["a", "b"][(e + t) % 2],
                "grp": ["g1", "g2"][e % 2], "kind": "all", "size": 10.0 + float(e % 7),
                "when": pd.Timestamp("2020-01-01") + pd.Timedelta(days=int(rng.integers(0, 1000))),
            })
    return pd.DataFrame(rows)


def prepared(df: pd.DataFrame):
    schema = infer_schema(df, time_index="ts", entity_key="key")
    for c in schema.columns:  # one level held by every entity is still a category
        if c.name == "kind":
            c.kind = type(c.kind)("categorical")
    return coerce(df, schema), schema


def fit_dp(df, schema, noise: float, seed: int = 0, **kw) -> TableEncoder:
    return TableEncoder(schema, dp=StatisticsBudget(noise, 1e-6, seed), **kw).fit(df)


@pytest.fixture(scope="module")
def data():
    return prepared(table())


def test_query_count_planned_equals_made(data, monkeypatch):
    df, schema = data
    kinds = {c.name: (c.kind.value, c.static) for c in schema.modelled}
    assert kinds["x"] == ("continuous", False) and kinds["size"] == ("continuous", True)
    assert kinds["when"][0] == "datetime" and kinds["c"] == ("categorical", False)
    n_num = sum(k in ("continuous", "integer", "datetime") for k, _ in kinds.values())
    n_dyn = sum(k in ("continuous", "integer", "datetime") and not s for k, s in kinds.values())
    n_cat = len(kinds) - n_num
    expected = (dp_noise.QUERIES_LAYOUT + dp_noise.QUERIES_NUMERIC * n_num + dp_noise.QUERIES_LEVELS * n_dyn
                + dp_noise.QUERIES_CATEGORICAL * n_cat)
    weight = expected + dp_noise.QUERIES_NUMERIC * (dp_noise.WEIGHT_STARTS - 1)  # the start-time queries weigh more
    assert plan_queries(schema, levels=True) == (weight, n_cat + dp_noise.THRESHOLDED_LAYOUT)
    made, sigmas = [], []
    orig = StatsAccountant.gaussian

    def counting(self, values):
        made.append(1)
        sigmas.append(self.sigma)
        return orig(self, values)

    monkeypatch.setattr(StatsAccountant, "gaussian", counting)
    enc = fit_dp(df, schema, 4.0)
    assert len(made) == expected and enc.dp_info["queries"] == weight
    # the queries compose (RDP of Gaussians: precisions add) to exactly one Gaussian at noise 4
    assert np.isclose(np.sum(1.0 / np.square(sigmas)), 1.0 / 4.0**2)
    assert np.isclose(min(sigmas), 4.0 * np.sqrt(weight / dp_noise.WEIGHT_STARTS))  # the start-time queries
    # without levels the plan drops one query per dynamic numeric, and the fit agrees
    made.clear()
    enc = fit_dp(df, schema, 4.0, levels=False)
    assert len(made) == expected - dp_noise.QUERIES_LEVELS * n_dyn
    assert enc.dp_info["queries"] == weight - dp_noise.QUERIES_LEVELS * n_dyn


def test_tiny_noise_approximates_the_data(data):
    df, schema = data
    enc = fit_dp(df, schema, 1e-6)
    by = {c.name: c for c in enc.codecs}
    for name in ("x", "n", "size"):
        v = df[name].to_numpy(float)
        lo, hi = by[name].qmap.bounds
        span = v.max() - v.min()
        assert lo <= v.min() + 1e-9 and hi >= v.max() - 1e-9, name  # all the data, at bin resolution
        assert v.min() - lo < 0.2 * span + 1.0 and hi - v.max() < 0.2 * span, (name, lo, hi)
        knots = np.asarray(by[name].qmap.knots)
        assert np.all(np.diff(knots) >= 0)
        probs = np.asarray(by[name].qmap.probs)
        mid = np.interp(0.5, probs, knots)
        assert abs(mid - np.median(df.groupby("key")[name].median())) < 0.15 * span, name
    # even without noise a level held by one entity stays below the threshold (tau > 1 >= its count)
    assert by["c"].real_levels == ["a", "b"]
    assert by["grp"].real_levels == ["g1", "g2"] and by["kind"].real_levels == ["all"]
    assert enc.layout.max_len == 12
    assert [c.level_edges is not None for c in enc.num_codecs] == [True] * len(enc.num_codecs)


def test_realistic_noise_fits_and_round_trips(data, tmp_path):
    df, schema = data
    for seed in range(3):
        enc = fit_dp(df, schema, 4.0, seed=seed)
        by = {c.name: c for c in enc.codecs}
        assert "solo" not in by["c"].real_levels  # held by one entity: never survives
        assert by["kind"].real_levels == ["all"]  # held by all 200: survives
        for c in enc.codecs:
            if c.is_numeric:
                k = np.asarray(c.qmap.knots)
                assert np.all(np.isfinite(k)) and np.all(np.diff(k) >= 0) and k[-1] > k[0]
        d = enc.transform(df)
        for f in ("num", "num_miss", "calendar"):
            assert np.isfinite(getattr(d, f)).all()
        assert np.abs(d.num).max() < 100
        out = enc.inverse_transform(d.num, d.num_miss, d.cat, d.static, d.lengths, d.start_ns,
                                    np.random.default_rng(0))
        assert len(out) == int(d.lengths.sum()) and not out[["x", "n", "size", "when"]].isna().any().any()
        lengths, starts = enc.layout.draw(50, np.random.default_rng(1))
        assert lengths.min() >= 1 and lengths.max() <= enc.max_len
        assert (pd.to_datetime(starts) > pd.Timestamp("2000-01-01")).all()
    public = {c["name"]: c for c in enc.public_schema().to_dict()["columns"]}
    assert all(public[c.name].get("nullable", True) == c.has_missing for c in enc.codecs)
    text = json.dumps(enc.to_dict(), default=float)
    assert '"dp"' in text and "seed" not in json.dumps(enc.to_dict()["dp"])
    enc.save(tmp_path / "enc.json")
    back = TableEncoder.load(tmp_path / "enc.json")
    assert back.dp_info == enc.dp_info and back.to_dict() == json.loads(json.dumps(enc.to_dict(), default=float))


def test_one_entity_extreme_value_does_not_move_the_bounds(data):
    """Same noise, one entity's values moved to 1e9: the bounds are bin edges chosen by counts that
    the entity changes by at most 1, far below the noise thresholds, so they (almost) never move."""
    df, schema = data
    v = df["x"].to_numpy(float)
    moved = df.copy()
    moved.loc[moved["key"] == "E7", "x"] = 1e9
    same = 0
    for seed in range(6):
        a = {c.name: c for c in fit_dp(df, schema, 4.0, seed=seed).codecs}["x"]
        b = {c.name: c for c in fit_dp(moved, schema, 4.0, seed=seed).codecs}["x"]
        assert b.qmap.bounds[1] <= 1e3  # nowhere near the one entity's 1e9
        assert a.qmap.bounds[1] != v.max() and a.qmap.bounds[0] != v.min()  # never the true extremes
        same += a.qmap.bounds == b.qmap.bounds
    assert same >= 5


def test_tiny_panels_fit_or_say_the_layout_is_lost_in_the_noise():
    """Tiny panels either fit usable statistics or stop with a ConfigError naming what the noise
    swamped (start times / lengths have no public fallback worth publishing); nothing else raises."""
    from synth_pipeline.errors import ConfigError

    fitted = 0
    for n in (1, 3, 12, 50, 400):
        df, schema = prepared(table(n=n, T=6))
        try:
            enc = fit_dp(df, schema, 4.2)
        except ConfigError as e:
            assert "lost in the statistics' noise" in str(e) and n < 400, (n, e)
            continue
        fitted += 1
        assert 2 <= enc.max_len <= 1000
        for c in enc.num_codecs + [c for c in enc.static_codecs if c.is_numeric]:
            k = np.asarray(c.qmap.knots)
            assert np.isfinite(k).all() and np.all(np.diff(k) >= 0) and k[-1] > k[0]  # usable, never degenerate
        d = enc.transform(df)
        assert np.isfinite(d.num).all()
        enc.inverse_transform(d.num, d.num_miss, d.cat, d.static, d.lengths, d.start_ns, np.random.default_rng(0))


def test_threshold_bounds_a_single_units_levels():
    from scipy.special import ndtr

    for sigma in (0.5, 4.0, 20.0):
        tau = level_threshold(sigma, 1e-7)
        d = np.arange(1, dp_noise.MAX_LEVELS_PER_UNIT + 1)
        assert np.max(d * ndtr(-(tau - 1 / np.sqrt(d)) / sigma)) <= 1e-7 * (1 + 1e-6)
        assert np.max(d * ndtr(-(0.99 * tau - 1 / np.sqrt(d)) / sigma)) > 1e-7  # the smallest such tau


def test_non_dp_encoder_stores_no_dp_key(data):
    df, schema = data
    enc = TableEncoder(schema).fit(df)
    assert "dp" not in enc.to_dict() and enc.dp_info is None


def test_business_day_monthly_and_windowed_layouts():
    rng = np.random.default_rng(0)
    days = pd.bdate_range("2023-01-02", periods=60)
    bday = pd.DataFrame([{"sym": f"S{e}", "date": t, "px": rng.lognormal(4, 1) if rng.random() > .05 else np.nan,
                          "sector": rng.choice(["tech", "fin", None], p=[.5, .4, .1])}
                         for e in range(150) for t in days[: 40 + e % 20]])
    months = pd.DataFrame([{"id": e, "m": p, "v": rng.normal(e, 1)} for e in range(150)
                           for p in pd.date_range("2015-01-01", periods=24, freq="MS")])
    for df, ti, key, freq in ((bday, "date", "sym", "B"), (months, "m", "id", "MS")):
        schema = infer_schema(df, time_index=ti, entity_key=key)
        df = coerce(df, schema)
        for noise in (1e-6, 4.0):
            enc = fit_dp(df, schema, noise)
            assert enc.layout.freq == freq and enc.layout.holidays == []
            d = enc.transform(df)
            out = enc.inverse_transform(d.num, d.num_miss, d.cat, d.static, d.lengths, d.start_ns,
                                        np.random.default_rng(0))
            assert len(out) == int(d.lengths.sum())
            lengths, starts = enc.layout.draw(20, np.random.default_rng(0))
            if freq == "MS":  # starts stay on month starts
                assert (pd.to_datetime(starts).day == 1).all()
            else:
                assert (pd.to_datetime(starts).dayofweek < 5).all()
    series = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=3000, freq="h", tz="Europe/Berlin")})
    series["load"] = rng.normal(100, 10, len(series))
    schema = infer_schema(series, time_index="t")
    schema.sequence_length = 24
    df = coerce(series, schema)
    enc = fit_dp(df, schema, 4.0)
    assert enc.max_len == 24  # the windows' length is public
    assert np.isfinite(enc.transform(df).num).all()
