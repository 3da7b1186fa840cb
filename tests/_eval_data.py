"""Shared slices of the sample data for the evaluation tests (cached per test session)."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import pandas as pd

from synth_pipeline.encoding import sequence_ids
from synth_pipeline.ingest import coerce, read_source
from synth_pipeline.schema import DatasetSchema
from synth_pipeline.split import split_entities

REPO = Path(__file__).resolve().parents[1]
NASDAQ_CSV = REPO / "synth_pipeline" / "data" / "nasdaq100_2019.csv"  # the whole panel, packaged
NASDAQ_SCHEMA = REPO / "synth_pipeline" / "configs" / "nasdaq100.schema.yaml"
# What infer_schema(time_index="date", sequence_length=24) proposes on the *whole* pollution file
# (checked equal when the slice was cut). The slice in tests/data holds only the 800 windows used
# here, and inference on it alone would differ (TEMP: integer; its first fractional value is at
# row 42,427), so the whole-file schema is pinned.
POLLUTION_SCHEMA = REPO / "synth_pipeline" / "configs" / "pollution.schema.yaml"


@cache
def _nasdaq() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, DatasetSchema]:
    """nasdaq100 panel (Symbol entity) cut into 24-day windows; half of the symbols held out."""
    schema = DatasetSchema.from_yaml(NASDAQ_SCHEMA)
    schema.sequence_length = 24
    raw = read_source(NASDAQ_CSV)
    df = coerce(raw, schema)
    tr, ho = split_entities(df["Symbol"].to_numpy(), 0.5, seed=0)
    return raw, df[tr].reset_index(drop=True), df[ho].reset_index(drop=True), schema


@cache
def _pollution(data_dir: str, windows: int = 800) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, DatasetSchema]:
    """Beijing pollution: one hourly series, the first ``windows`` 24-hour windows, half held out."""
    raw = read_source(Path(data_dir) / "pollution_data.csv")
    schema = DatasetSchema.from_yaml(POLLUTION_SCHEMA)
    df = coerce(raw, schema).iloc[: 24 * windows]
    tr, ho = split_entities(sequence_ids(df, schema), 0.5, seed=0)
    return raw, df[tr].reset_index(drop=True), df[ho].reset_index(drop=True), schema


def nasdaq(data_dir: Path | None = None):
    """``data_dir`` is unused: the panel is read from the package."""
    raw, train, hold, schema = _nasdaq()
    return raw, train.copy(), hold.copy(), copy.deepcopy(schema)


def pollution(data_dir: Path):
    raw, train, hold, schema = _pollution(str(data_dir))
    return raw, train.copy(), hold.copy(), copy.deepcopy(schema)
