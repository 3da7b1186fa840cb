"""Great Expectations validation built from a schema: passing data, each failure listed, no value leaks."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from synth_pipeline.errors import DataValidationError, SynthPipelineError
from synth_pipeline.ingest import coerce, load_dataset, read_source
from synth_pipeline.schema import ColumnSpec, DatasetSchema, infer_schema
from synth_pipeline.validate import (
    ENTITY_LENGTH_CHECK,
    SAFE_RESULT_FORMAT,
    STATIC_CHECK,
    ValidationReport,
    build_suite,
    validate,
)

SECRET = "SECRET_VALUE_123"


@pytest.fixture(scope="module")
def nasdaq(nasdaq_csv):
    raw = read_source(nasdaq_csv).head(2000)
    schema = infer_schema(raw, entity_key="Symbol", time_index="date", name="nasdaq")
    return coerce(raw, schema), schema


def fresh(nasdaq):
    df, schema = nasdaq
    return df.copy(), DatasetSchema.from_dict(schema.to_dict())


def failed(report_or_error) -> dict[tuple[str, str], dict]:
    return {(f["expectation"], f["column"]): f for f in report_or_error.failures}


def test_passing_suite_on_nasdaq_slice(nasdaq):
    df, schema = nasdaq
    report = validate(df, schema)
    assert isinstance(report, ValidationReport)
    assert report.success and report.failures == []
    stats = report.statistics
    assert stats["evaluated_expectations"] == stats["successful_expectations"] > 10
    assert stats["success_percent"] == 100.0
    json.dumps(report.suite_json)
    json.dumps(report.result_json)
    types = [r["expectation_config"]["type"] for r in report.result_json["results"]]
    assert ENTITY_LENGTH_CHECK in types and STATIC_CHECK in types
    assert len(types) == stats["evaluated_expectations"]
    assert "passed" in report.summary()


def test_suite_contents(nasdaq):
    import great_expectations as gx

    _, schema = nasdaq
    suite = build_suite(schema)
    assert isinstance(suite, gx.ExpectationSuite)
    exps = [(e.expectation_type, dict(e.configuration.kwargs)) for e in suite.expectations]
    by_type: dict[str, list[dict]] = {}
    for t, kw in exps:
        by_type.setdefault(t, []).append(kw)
    assert {kw["column"] for kw in by_type["expect_column_to_exist"]} == set(schema.output_columns)
    assert {"column": "Symbol", "type_": "str"} in by_type["expect_column_values_to_be_of_type"]
    assert {"column": "date", "type_": "datetime64"} in by_type["expect_column_values_to_be_of_type"]
    numeric = {kw["column"] for kw in by_type["expect_column_values_to_be_in_type_list"]}
    assert numeric == {"Open", "Close", "Volume", "MarketCap"}
    in_set = {kw["column"]: kw["value_set"] for kw in by_type["expect_column_values_to_be_in_set"]}
    assert set(in_set) == {"Sector", "Industry"}
    assert in_set["Sector"] == schema.column("Sector").categories
    not_null = {kw["column"] for kw in by_type["expect_column_values_to_not_be_null"]}
    assert {"Symbol", "date", "Open"} <= not_null
    assert not_null == {c.name for c in schema.columns if not c.nullable}
    assert by_type["expect_compound_columns_to_be_unique"] == [{"column_list": ["Symbol", "date"]}]
    assert "expect_column_values_to_be_between" not in by_type  # nothing pinned yet
    meta = suite.to_json_dict()["meta"]
    assert meta["schema_fingerprint"] == schema.fingerprint()
    assert {c["type"] for c in meta["computed_checks"]} == {ENTITY_LENGTH_CHECK, STATIC_CHECK}


def test_each_failure_is_listed_and_no_value_leaks(nasdaq):
    df, schema = fresh(nasdaq)
    schema.column("Open").max = 100.0
    schema.column("Close").min = 0.0
    df.loc[3, "Sector"] = SECRET  # category not in set
    df.loc[5, "Open"] = np.nan  # null in a non-nullable column
    df.loc[7, "Close"] = -1234.5  # below the pinned minimum
    n_over = int((df["Open"] > 100).sum())
    with pytest.raises(DataValidationError) as exc:
        validate(df, schema)
    err = exc.value
    assert isinstance(err, SynthPipelineError) and err.exit_code == 2
    f = failed(err)
    assert f[("expect_column_values_to_be_in_set", "Sector")]["unexpected_count"] == 1
    assert f[("expect_column_values_to_not_be_null", "Open")]["unexpected_count"] == 1
    assert f[("expect_column_values_to_be_between", "Open")]["unexpected_count"] == n_over
    assert f[("expect_column_values_to_be_between", "Close")]["unexpected_count"] == 1
    assert f[("expect_column_values_to_be_in_set", "Sector")]["element_count"] == len(df)
    # the foreign Sector value also breaks "Sector is constant within each Symbol"
    assert f[(STATIC_CHECK, "Sector")]["unexpected_count"] == 1
    assert len(err.failures) == 5
    msg = str(err)
    for expectation, column in f:
        assert f"{expectation} on column '{column}'" in msg
    assert "1 of 2000 unexpected" in msg and f"{n_over} of 2000 unexpected" in msg
    # no cell values anywhere: error text, failures, result JSON, suite JSON
    report = validate(df, schema, raise_on_failure=False)
    assert not report.success and report.failures == err.failures
    blobs = [msg, json.dumps(err.failures), json.dumps(report.result_json), json.dumps(report.suite_json)]
    for blob in blobs:
        assert SECRET not in blob
        assert "-1234.5" not in blob
    assert "partial_unexpected_list" not in json.dumps(report.result_json)
    assert SAFE_RESULT_FORMAT == {"result_format": "BASIC", "partial_unexpected_count": 0}


def test_duplicate_keys_in_a_frame_built_directly(nasdaq):
    df, schema = fresh(nasdaq)
    dup = pd.concat([df, df.iloc[[10, 11]]], ignore_index=True)
    with pytest.raises(DataValidationError, match=r"expect_compound_columns_to_be_unique on column 'Symbol, date'"):
        validate(dup, schema)
    report = validate(dup, schema, raise_on_failure=False)
    f = failed(report)[("expect_compound_columns_to_be_unique", "Symbol, date")]
    assert f["unexpected_count"] == 4 and f["element_count"] == len(dup)


def test_short_entity(nasdaq):
    df, schema = fresh(nasdaq)
    first = df["Symbol"].iloc[0]
    keep = df.groupby("Symbol").cumcount() < 3
    short = df[(df["Symbol"] != first) | keep].reset_index(drop=True)
    schema.min_sequence_length = 10
    with pytest.raises(DataValidationError) as exc:
        validate(short, schema)
    f = failed(exc.value)[(ENTITY_LENGTH_CHECK, "Symbol")]
    n_entities = short["Symbol"].nunique()
    assert f["unexpected_count"] == 1 and f["element_count"] == n_entities
    assert f["unexpected_percent"] == pytest.approx(100 / n_entities)
    assert "at least 10 rows" in str(exc.value) and "shortest has 3" in str(exc.value)
    assert first not in str(exc.value)  # entity keys are not echoed either
    assert len(exc.value.failures) == 1


def test_short_entity_via_load_dataset(tmp_path):
    p = tmp_path / "events.csv"
    p.write_text("id,ts,v\na,2024-01-01,1\na,2024-01-02,2\na,2024-01-03,3\nb,2024-01-01,4\n")
    schema = DatasetSchema(
        columns=[ColumnSpec("id", "identifier", nullable=False), ColumnSpec("ts", "datetime"),
                 ColumnSpec("v", "integer")],
        time_index="ts", entity_key="id", min_sequence_length=2,
    )
    df = load_dataset(p, schema)  # ingest accepts it; the length rule lives in validation
    with pytest.raises(DataValidationError, match=rf"{ENTITY_LENGTH_CHECK} on column 'id': 1 of 2 unexpected"):
        validate(df, schema)


def test_static_column_must_be_constant(nasdaq):
    df, schema = fresh(nasdaq)
    assert schema.column("Sector").static
    sym = df["Symbol"].iloc[0]
    idx = df.index[df["Symbol"] == sym][:5]
    other = next(c for c in schema.column("Sector").categories if c != df.loc[idx[0], "Sector"])
    df.loc[idx, "Sector"] = other
    report = validate(df, schema, raise_on_failure=False)
    f = failed(report)[(STATIC_CHECK, "Sector")]
    assert f["unexpected_count"] == 1


def test_missing_column_and_wrong_type(nasdaq):
    df, schema = fresh(nasdaq)
    df = df.drop(columns=["Close"])
    df["Volume"] = df["Volume"].astype("str")
    with pytest.raises(DataValidationError) as exc:
        validate(df, schema)
    f = failed(exc.value)
    assert f[("expect_column_to_exist", "Close")]["details"] == "column missing from the data"
    type_fail = f[("expect_column_values_to_be_in_type_list", "Volume")]
    assert "observed dtype str" in type_fail["details"]
    assert ("expect_column_values_to_be_in_type_list", "Close") in f
    assert "column 'Close'" in str(exc.value) and "column 'Volume'" in str(exc.value)


def test_single_series_unique_time(shared_data):
    raw = read_source(shared_data / "etth1.csv").head(500)
    schema = infer_schema(raw, name="etth1")
    df = coerce(raw, schema)
    assert validate(df, schema).success
    dup = pd.concat([df, df.iloc[[0]]], ignore_index=True)
    report = validate(dup, schema, raise_on_failure=False)
    assert failed(report)[("expect_column_values_to_be_unique", "date")]["unexpected_count"] == 2
    schema.min_sequence_length = 1000
    report = validate(df, schema, raise_on_failure=False)
    f = failed(report)[(ENTITY_LENGTH_CHECK, None)]
    assert f["unexpected_count"] == 1 and f["element_count"] == 1
    assert "series need at least 1000 rows" in report.summary()


def test_inferred_schema_validates_its_own_file_after_sentinels(shared_data):
    raw = read_source(shared_data / "airquality.csv").head(2000)
    schema = infer_schema(raw)
    df = coerce(raw, schema)  # -200 -> NaN
    assert df["CO(GT)"].isna().any()
    report = validate(df.iloc[::-1], schema)  # a non-default index is fine too
    assert report.success


def test_tz_aware_time_and_bool_and_integer_categories():
    n = 6
    df = pd.DataFrame(
        {
            "ts": pd.Series(pd.date_range("2024-01-01", periods=n, freq="h")).astype(str),
            "flag": pd.Series([True, None, False, True, False, True], dtype=object),
            "level": [1, 2, 3, 1, 2, 3],
            "v": np.linspace(0, 1, n),
        }
    )
    schema = DatasetSchema(
        columns=[
            ColumnSpec("ts", "datetime", nullable=False),
            ColumnSpec("flag", "binary", categories=[False, True], dtype="object"),
            ColumnSpec("level", "categorical", categories=[1, 2, 3], dtype="int64"),
            ColumnSpec("v", "continuous", min=0.0, max=1.0),
        ],
        time_index="ts",
        timezone="Europe/Berlin",
    )
    typed = coerce(df, schema)
    assert str(typed["ts"].dt.tz) == "Europe/Berlin"
    report = validate(typed, schema)
    assert report.success, report.failures
    typed.loc[2, "level"] = 7
    with pytest.raises(DataValidationError, match=r"expect_column_values_to_be_in_set on column 'level': 1 of 6"):
        validate(typed, schema)


def test_full_nasdaq_validation_is_fast(nasdaq_csv):
    raw = read_source(nasdaq_csv)
    schema = infer_schema(raw, entity_key="Symbol", time_index="date")
    df = coerce(raw, schema)
    build_suite(schema)  # GX imported already
    t0 = time.perf_counter()
    report = validate(df, schema)
    elapsed = time.perf_counter() - t0
    assert report.success
    assert elapsed < 5.0, f"validation of {len(df)} rows took {elapsed:.2f}s"
