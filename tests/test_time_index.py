"""The time index contract: the time column comes back in the input's type (integer years stay
integers, dates stay dates, time zones kept) and calendar steps advance on the calendar.

Each case fits the encoder on a panel of 40 entities with staggered starts, draws layouts from the
protected model and decodes them (the decoded values do not matter here, only the time column);
one case runs a tiny end-to-end Synthesizer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synth_pipeline.config import ModelConfig
from synth_pipeline.encoding import TableEncoder
from synth_pipeline.ingest import coerce
from synth_pipeline.schema import infer_schema
from synth_pipeline.synthesizer import Synthesizer

N_ENT = 40


def _panel(grid, length: int = 8, n_ent: int = N_ENT, seed: int = 0) -> pd.DataFrame:
    """Entity e covers grid[e % 12 : e % 12 + length] (staggered starts on the grid)."""
    rng = np.random.default_rng(seed)
    grid = list(grid)
    parts = []
    for e in range(n_ent):
        off = e % 12
        t = grid[off: off + length]
        parts.append(pd.DataFrame({"k": f"E{e:02d}", "t": t, "v": rng.normal(size=len(t))}))
    return pd.concat(parts, ignore_index=True)


def _decoded(df: pd.DataFrame, n: int = 300) -> tuple[pd.DataFrame, TableEncoder]:
    schema = infer_schema(df, time_index="t", entity_key="k")
    enc = TableEncoder(schema).fit(coerce(df, schema))
    rng = np.random.default_rng(1)
    lengths, starts = enc.layout.draw(n, rng)
    d = enc.dims
    T = enc.max_len
    out = enc.inverse_transform(
        np.zeros((n, T, d["n_num"])), np.zeros((n, T, d["n_num"])), np.zeros((n, T, len(d["cat_cards"])), np.int64),
        np.zeros((n, len(d["static_cards"])), np.int64), lengths, starts, rng)
    return out, enc


def _steps(out: pd.DataFrame) -> pd.Series:
    return out.groupby("k")["t"].diff().dropna()


def test_integer_years_with_a_five_year_step_stay_integers():
    df = _panel(range(1950, 2100, 5))
    out, enc = _decoded(df)
    assert out["t"].dtype == np.int64 and enc.layout.int_format == "%Y"
    assert (_steps(out) == 5).all()
    assert (out["t"] % 5 == 0).all()  # on the input's lattice
    assert out["t"].min() >= 1950 and out["t"].max() < 2100


@pytest.mark.parametrize("freq,check", [
    ("YS", lambda t: (t.dt.month == 1) & (t.dt.day == 1)),
    ("YE", lambda t: (t.dt.month == 12) & (t.dt.day == 31)),
    ("MS", lambda t: t.dt.day == 1),
    ("ME", lambda t: t.dt.is_month_end),
    ("QS", lambda t: (t.dt.day == 1) & t.dt.month.isin([1, 4, 7, 10])),
    ("QE", lambda t: t.dt.is_month_end & t.dt.month.isin([3, 6, 9, 12])),
])
def test_calendar_steps_advance_on_the_calendar(freq, check):
    grid = pd.date_range("1990-01-01", periods=40, freq=freq)
    out, enc = _decoded(_panel(grid))
    t = out["t"]
    assert t.dtype.kind == "M" and check(t).all(), f"{freq}: {t[~check(t)].head().tolist()} off the calendar"
    months = (t.dt.year * 12 + t.dt.month).groupby(out["k"]).diff().dropna()
    want = {"YS": 12, "YE": 12, "MS": 1, "ME": 1, "QS": 3, "QE": 3}[freq]
    assert (months == want).all()


def test_weekly_steps_keep_the_weekday():
    grid = pd.date_range("2020-01-06", periods=40, freq="W-MON")
    out, _ = _decoded(_panel(grid))
    assert (out["t"].dt.dayofweek == 0).all() and (_steps(out) == pd.Timedelta(days=7)).all()


def test_business_days_skip_weekends_and_observed_holidays():
    days = pd.bdate_range("2019-01-02", periods=120)
    holidays = pd.to_datetime(["2019-01-21", "2019-02-18", "2019-04-19", "2019-05-27"])
    grid = days[~days.isin(holidays)]
    out, enc = _decoded(_panel(grid, length=100))
    assert enc.layout.freq == "B"
    assert set(str(pd.Timestamp(h).date()) for h in holidays) <= set(enc.layout.holidays)
    t = out["t"]
    assert (t.dt.dayofweek < 5).all()
    assert not t.isin(holidays).any(), "an observed holiday was generated"


def test_hourly_with_dst_keeps_the_zone_and_exact_hours():
    for start in ("2024-03-30 12:00", "2024-10-26 12:00"):  # spring forward / fall back in Berlin
        grid = pd.date_range(start, periods=60, freq="h", tz="Europe/Berlin")
        out, enc = _decoded(_panel(grid, length=36))
        t = out["t"]
        assert str(t.dt.tz) == "Europe/Berlin" and enc.layout.clock == "utc"
        assert t.notna().all() and (_steps(out) == pd.Timedelta(hours=1)).all()
        assert out.groupby("k")["t"].apply(lambda s: s.is_unique).all()


def test_irregular_spacing_comes_back_regular_at_the_most_common_step():
    """Documented behaviour: irregular timestamps are modelled on the most common step; the output
    is regular (no gaps), its starts on that grid."""
    rng = np.random.default_rng(0)
    parts = []
    for e in range(N_ENT):
        gaps = rng.choice([1, 1, 1, 2, 5], size=10)  # hours, mostly 1
        t = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.cumsum(gaps) + e, "h")
        parts.append(pd.DataFrame({"k": f"E{e:02d}", "t": t, "v": rng.normal(size=10)}))
    out, enc = _decoded(pd.concat(parts, ignore_index=True))
    assert enc.layout.freq == "3600s"
    assert (_steps(out) == pd.Timedelta(hours=1)).all()


def test_integer_years_end_to_end():
    df = _panel(range(1960, 2100, 5), length=10)
    schema = infer_schema(df, time_index="t", entity_key="k")
    cfg = ModelConfig.from_preset("fast", {"vae_steps": 20, "diffusion_steps": 20, "static_steps": 5,
                                           "progress": False, "refine": "none"})
    out = Synthesizer(schema, cfg).fit(df).sample(20, seed=0)
    assert out["t"].dtype == df["t"].dtype == np.int64
    assert (out.groupby("k")["t"].diff().dropna() == 5).all()


def test_inferred_kinds_match_the_shipped_schema():
    """`schema infer` on the shipped CSV proposes what the shipped schema pins (whole-number floats
    such as MarketCap = 7.37873E+11 stay continuous; integer counts stay integer)."""
    from synth_pipeline.dataset_config import shipped_config
    from synth_pipeline.ingest import read_source
    from synth_pipeline.schema import DatasetSchema

    shipped = DatasetSchema.from_yaml(shipped_config("nasdaq100").parent / "nasdaq100.schema.yaml")
    raw = read_source(shipped_config("nasdaq100").parent.parent / "data" / "nasdaq100_2019.csv")
    inferred = infer_schema(raw, time_index="date", entity_key="Symbol")
    for spec in shipped.columns:
        got = inferred.column(spec.name)
        assert (got.kind, got.static) == (spec.kind, spec.static), spec.name


def test_starts_keep_their_place_in_the_daily_cycle():
    """Hourly windows that mostly start at 06:00 or 18:00 (gaps shift a few): synthetic starts keep
    that hour-of-day profile instead of starting at any hour (traffic's daily shape would shift)."""
    rng = np.random.default_rng(0)
    days = rng.choice(400, 200, replace=False)
    hour = np.where(rng.random(200) < 0.7, 6, 18)
    hour[:3] = [1, 2, 3]  # three lone starts (fewer than protect_k share each hour)
    parts = []
    for e, (d, h) in enumerate(zip(days, hour, strict=True)):
        t = pd.Timestamp("2020-01-01") + pd.Timedelta(days=int(d), hours=int(h)) + pd.to_timedelta(np.arange(24), "h")
        parts.append(pd.DataFrame({"k": f"W{e:03d}", "t": t, "v": rng.normal(size=24)}))
    out, enc = _decoded(pd.concat(parts, ignore_index=True), n=2000)
    start_hours = out.groupby("k")["t"].min().dt.hour
    assert set(start_hours) == {6, 18}
    assert 0.6 < (start_hours == 6).mean() < 0.8
