"""Reading CSV / Parquet / SQL sources, joining entity tables, and typed errors for bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synth_pipeline.errors import IngestError, PIIError, SchemaError, SynthPipelineError
from synth_pipeline.ingest import Source, coerce, join_entities, load_dataset, parse_times, read_source
from synth_pipeline.schema import ColumnSpec, DatasetSchema, infer_schema

PANEL_CSV = (
    "id,ts,value,level\n"
    "a,2024-01-01,1.5,low\n"
    "a,2024-01-02,2.5,high\n"
    "a,2024-01-03,3.5,low\n"
    "b,2024-01-01,4.5,high\n"
    "b,2024-01-02,5.5,low\n"
    "b,2024-01-03,6.5,low\n"
)


def panel_schema(**kw) -> DatasetSchema:
    return DatasetSchema(
        columns=[
            ColumnSpec("id", "identifier", nullable=False),
            ColumnSpec("ts", "datetime", nullable=False),
            ColumnSpec("value", "continuous"),
            ColumnSpec("level", "categorical", categories=["high", "low"]),
        ],
        time_index="ts",
        entity_key="id",
        name="panel",
        **kw,
    )


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def names(path: Path) -> str:
    return re.escape(str(path))


# ------------------------------------------------------------------------------------------------
# readers
# ------------------------------------------------------------------------------------------------
def test_csv_with_bom(tmp_path):
    p = write(tmp_path, "bom.csv", b"\xef\xbb\xbf" + PANEL_CSV.encode())
    df = read_source(p)
    assert list(df.columns) == ["id", "ts", "value", "level"]
    out = load_dataset(p, panel_schema())
    assert out["ts"].dtype.kind == "M"
    assert str(out["id"].dtype) == "str" and str(out["level"].dtype) == "str"
    assert out["value"].dtype == np.float64
    assert list(out["id"]) == ["a", "a", "a", "b", "b", "b"]


def test_metro_none_is_not_missing(shared_data):
    df = read_source(shared_data / "metro_traffic.csv")  # the first 3000 hours (tests/data)
    assert df["holiday"].isna().sum() == 0
    # every hour but the midnight of a holiday (Columbus Day, Veterans Day, Thanksgiving, Christmas, New Year)
    assert (df["holiday"] == "None").sum() > 0.99 * len(df)


def test_parquet_round_trip(tmp_path):
    schema = panel_schema()
    typed = load_dataset(write(tmp_path, "p.csv", PANEL_CSV), schema)
    pq = tmp_path / "events.parquet"
    typed.to_parquet(pq, index=False)
    assert Source.parse(str(pq)).kind == "parquet"
    again = load_dataset(pq, schema)
    pd.testing.assert_frame_equal(again, typed)


def test_corrupt_parquet(tmp_path):
    p = write(tmp_path, "bad.parquet", b"PAR1 this is not parquet")
    with pytest.raises(IngestError, match=names(p) + ".*not readable Parquet"):
        read_source(p)


def _sqlite(tmp_path: Path) -> str:
    import sqlalchemy as sa

    db = tmp_path / "warehouse.db"
    uri = f"sqlite:///{db}"
    engine = sa.create_engine(uri)
    try:
        pd.read_csv(pd.io.common.StringIO(PANEL_CSV)).to_sql("events", engine, index=False)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE other (x INTEGER)"))
    finally:
        engine.dispose()
    return uri


def test_sql_table_and_query(tmp_path):
    uri = _sqlite(tmp_path)
    schema = panel_schema()
    from_table = load_dataset({"path": uri, "table": "events"}, schema)
    assert len(from_table) == 6 and str(from_table["id"].dtype) == "str"
    from_query = load_dataset(Source(path=uri, query="SELECT * FROM events WHERE id = 'b'"), schema)
    assert list(from_query["id"].unique()) == ["b"] and len(from_query) == 3
    csv = load_dataset(write(tmp_path, "same.csv", PANEL_CSV), schema)
    pd.testing.assert_frame_equal(from_table, csv)


@pytest.mark.parametrize(
    "source, message",
    [
        ({"table": "events; DROP TABLE events"}, "not a plain identifier"),
        ({"table": "missing_table"}, "table 'missing_table' does not exist"),
        ({"query": "DELETE FROM events"}, "read-only SELECT"),
        ({}, "exactly one of 'table' or 'query'"),
        ({"table": "events", "query": "SELECT 1"}, "exactly one of 'table' or 'query'"),
    ],
)
def test_sql_refusals(tmp_path, source, message):
    uri = _sqlite(tmp_path)
    with pytest.raises(IngestError, match=re.escape(message)):
        read_source({"path": uri, **source})
    assert read_source({"path": uri, "table": "events"}).shape == (6, 4)  # table still there


def test_sql_uri_password_is_redacted():
    with pytest.raises(IngestError) as e:
        read_source({"path": "nosuchdialect://user:hunter2@host/db", "table": "t"})
    assert "hunter2" not in str(e.value) and "user:***@" in str(e.value)


def test_source_parse_errors(tmp_path):
    with pytest.raises(IngestError, match=r"unknown source key\(s\) \['tabel'\]"):
        Source.parse({"path": "x.csv", "tabel": "t"})
    with pytest.raises(IngestError, match="needs 'path'"):
        Source.parse({"table": "t"})
    missing = tmp_path / "nope.csv"
    with pytest.raises(IngestError, match=names(missing) + ".*does not exist"):
        read_source(missing)


# ------------------------------------------------------------------------------------------------
# entity join
# ------------------------------------------------------------------------------------------------
EVENTS_CSV = "id,ts,value\n1,2024-01-01,1.0\n1,2024-01-02,2.0\n2,2024-01-01,3.0\n2,2024-01-02,4.0\n"


def join_schema() -> DatasetSchema:
    return DatasetSchema(
        columns=[
            ColumnSpec("id", "identifier", nullable=False),
            ColumnSpec("ts", "datetime", nullable=False),
            ColumnSpec("value", "continuous"),
            ColumnSpec("segment", "categorical", static=True, categories=["x", "y"]),
        ],
        time_index="ts",
        entity_key="id",
    )


def test_two_table_join(tmp_path):
    ev = write(tmp_path, "events.csv", EVENTS_CSV)
    en = write(tmp_path, "entities.csv", "id,segment\n2,y\n1,x\n")
    df = load_dataset(ev, join_schema(), entities=en)
    assert df.groupby("id")["segment"].nunique().max() == 1
    assert dict(zip(df["id"], df["segment"], strict=True)) == {1: "x", 2: "y"}  # events keep their key dtype
    assert len(df) == 4


def test_join_orphans_and_duplicate_keys(tmp_path):
    ev = write(tmp_path, "events.csv", EVENTS_CSV)
    orphan = write(tmp_path, "orphans.csv", "id,segment\n1,x\n")
    with pytest.raises(IngestError, match=r"2 events row\(s\) have a 'id' missing from the entities table"):
        load_dataset(ev, join_schema(), entities=orphan)
    dup = write(tmp_path, "dup.csv", "id,segment\n1,x\n2,y\n2,x\n")
    with pytest.raises(IngestError, match=r"1 duplicate 'id' key"):
        load_dataset(ev, join_schema(), entities=dup)
    events = read_source(ev)
    with pytest.raises(IngestError, match="no entity key column 'id'"):
        join_entities(events, pd.DataFrame({"key": [1], "segment": ["x"]}), "id")
    with pytest.raises(IngestError, match=r"columns \['value'\] appear in both tables"):
        join_entities(events, pd.DataFrame({"id": [1, 2], "value": [0, 0]}), "id")
    no_key = DatasetSchema(columns=[ColumnSpec("ts", "datetime"), ColumnSpec("value", "continuous")], time_index="ts")
    with pytest.raises(SchemaError, match="entity_key"):
        load_dataset(ev, no_key, entities=orphan)


# ------------------------------------------------------------------------------------------------
# bad input: typed errors naming file and column
# ------------------------------------------------------------------------------------------------
def test_empty_file(tmp_path):
    empty = write(tmp_path, "empty.csv", "")
    with pytest.raises(IngestError, match=names(empty) + ".* is empty"):
        load_dataset(empty, panel_schema())
    header_only = write(tmp_path, "header.csv", "id,ts,value,level\n")
    with pytest.raises(IngestError, match=names(header_only) + ".*has no rows"):
        load_dataset(header_only, panel_schema())


@pytest.mark.parametrize("drop", ["id", "ts"])
def test_missing_entity_or_time_column(tmp_path, drop):
    df = pd.read_csv(pd.io.common.StringIO(PANEL_CSV)).drop(columns=drop)
    p = tmp_path / "missing.csv"
    df.to_csv(p, index=False)
    with pytest.raises(SchemaError, match=names(p) + rf".*column\(s\) \['{drop}'\] from the schema are missing"):
        load_dataset(p, panel_schema())


def test_extra_column_not_in_schema(tmp_path):
    p = write(tmp_path, "extra.csv", PANEL_CSV.replace("level\n", "level,new\n").replace("low\n", "low,1\n").replace("high\n", "high,1\n"))
    with pytest.raises(SchemaError, match=r"column\(s\) \['new'\] are not in the schema"):
        load_dataset(p, panel_schema())


def test_text_in_continuous_column(tmp_path):
    p = write(tmp_path, "text.csv", PANEL_CSV.replace("3.5", "SECRET_TEXT_42"))
    with pytest.raises(SchemaError, match=names(p) + r".*column 'value' is declared numeric but 1 value\(s\) are text") as e:
        load_dataset(p, panel_schema())
    assert "SECRET_TEXT_42" not in str(e.value)


def test_all_missing_column(tmp_path):
    p = write(tmp_path, "allna.csv", re.sub(r",\d\.5,", ",,", PANEL_CSV))
    assert read_source(p)["value"].isna().all()
    with pytest.raises(SchemaError, match=names(p) + ".*column 'value' has no values at all.*'ignore'"):
        load_dataset(p, panel_schema())
    # inference proposes 'ignore' for it, and then the column is dropped on ingest
    schema = infer_schema(read_source(p), entity_key="id", time_index="ts")
    assert schema.column("value").kind == "ignore"
    assert "value" not in load_dataset(p, schema).columns


def test_duplicate_entity_time(tmp_path):
    p = write(tmp_path, "dup.csv", PANEL_CSV + "a,2024-01-02,9.5,low\n")
    with pytest.raises(SchemaError, match=names(p) + r".*1 duplicate \(id, ts\) row\(s\).*drop_duplicate_times"):
        load_dataset(p, panel_schema())
    kept = load_dataset(p, panel_schema(drop_duplicate_times=True))
    assert len(kept) == 6 and 9.5 not in set(kept["value"])


def test_unparseable_dates(tmp_path):
    p = write(tmp_path, "dates.csv", PANEL_CSV.replace("2024-01-02", "not-a-date", 1))
    with pytest.raises(IngestError, match=names(p) + r".*column 'ts': 1 value\(s\) do not parse as dates"):
        load_dataset(p, panel_schema())
    wrong_format = write(tmp_path, "fmt.csv", PANEL_CSV)
    with pytest.raises(IngestError, match=r"with format %m/%d/%Y"):
        load_dataset(wrong_format, panel_schema(time_format="%m/%d/%Y"))


def test_mixed_time_zones(tmp_path):
    text = (
        "ts,value\n2024-01-01T00:00:00+01:00,1\n2024-01-01T03:00:00+02:00,2\n2024-01-01T03:00:00+00:00,3\n"
    )
    schema = DatasetSchema(columns=[ColumnSpec("ts", "datetime"), ColumnSpec("value", "continuous")], time_index="ts")
    p = write(tmp_path, "tz.csv", text)
    with pytest.raises(IngestError, match=names(p) + ".*column 'ts' mixes time zones.*'timezone'"):
        load_dataset(p, schema)
    half = write(tmp_path, "half.csv", "ts,value\n2024-01-01T00:00:00+01:00,1\n2024-01-01 02:00:00,2\n")
    with pytest.raises(IngestError, match=r"mixes timestamps with and without UTC offsets"):
        load_dataset(half, schema)
    schema.timezone = "UTC"
    out = load_dataset(p, schema)
    assert str(out["ts"].dt.tz) == "UTC"
    assert list(out["ts"].dt.hour) == [23, 1, 3]


def test_naive_times_are_wall_clock_in_schema_zone():
    schema = DatasetSchema(columns=[ColumnSpec("ts", "datetime")], time_index="ts", timezone="Europe/Berlin")
    parsed = parse_times(pd.Series(["2024-01-01 10:00", "2024-07-01 10:00"]), schema, "ts")
    assert list(parsed.dt.hour) == [10, 10]  # not shifted as if they were UTC
    assert list(parsed.dt.tz_convert("UTC").dt.hour) == [9, 8]
    with pytest.raises(IngestError, match=r"column 'ts': 1 local time\(s\) are ambiguous or do not exist"):
        parse_times(pd.Series(["2024-03-31 02:30"]), schema, "ts")


def test_infinite_values(tmp_path):
    p = write(tmp_path, "inf.csv", PANEL_CSV.replace("4.5", "inf").replace("5.5", "-inf"))
    with pytest.raises(SchemaError, match=names(p) + r".*column 'value' has 2 infinite value\(s\)"):
        load_dataset(p, panel_schema())


def test_non_utf8_file(tmp_path):
    p = write(tmp_path, "latin.csv", PANEL_CSV.replace("high", "h\u00e9gh").encode("latin-1"))
    with pytest.raises(IngestError, match=names(p) + r".*is not valid utf-8.*encoding"):
        read_source(p)
    df = read_source({"path": str(p), "encoding": "latin-1"})
    assert "h\u00e9gh" in set(df["level"])


def test_pii_column_not_marked(tmp_path):
    p = write(tmp_path, "pii.csv", "ts,email,value\n2024-01-01,a@x.org,1\n2024-01-02,b@x.org,2\n")
    schema = DatasetSchema(
        columns=[ColumnSpec("ts", "datetime"), ColumnSpec("email", "categorical"), ColumnSpec("value", "continuous")],
        time_index="ts",
    )
    with pytest.raises(PIIError, match="column 'email' looks like personal data") as e:
        load_dataset(p, schema)
    assert "a@x.org" not in str(e.value)
    schema.column("email").kind = "pii"
    with pytest.raises(PIIError, match="'email' is marked pii"):
        load_dataset(p, schema)
    schema.column("email").kind = "ignore"
    assert list(load_dataset(p, schema).columns) == ["ts", "value"]


def test_sentinels_become_missing_and_bools_keep_their_type(tmp_path):
    p = write(tmp_path, "s.csv", "ts,x,flag\n2024-01-01,-200,True\n2024-01-02,5,\n2024-01-03,6,False\n")
    schema = DatasetSchema(
        columns=[
            ColumnSpec("ts", "datetime"),
            ColumnSpec("x", "continuous", missing_sentinels=[-200.0]),
            ColumnSpec("flag", "binary", categories=[False, True]),
        ],
        time_index="ts",
    )
    out = load_dataset(p, schema)
    assert out["x"].isna().tolist() == [True, False, False]
    assert out["flag"].tolist()[0] is True and pd.isna(out["flag"].iloc[1])
    assert set(out["flag"].dropna()) <= set(schema.column("flag").categories)


def test_errors_are_typed_for_the_cli():
    for err in (IngestError, SchemaError, PIIError):
        assert issubclass(err, SynthPipelineError) and err.exit_code == 2


def test_coerce_orders_rows(tmp_path):
    shuffled = "\n".join([PANEL_CSV.splitlines()[0], *reversed(PANEL_CSV.splitlines()[1:])]) + "\n"
    out = coerce(read_source(write(tmp_path, "r.csv", shuffled)), panel_schema())
    assert list(out["value"]) == [1.5, 2.5, 3.5, 4.5, 5.5, 6.5]
