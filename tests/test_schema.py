"""Schema inference on the sample files (slices in tests/data), YAML round trip, fingerprint, typed errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synth_pipeline.errors import PIIError, SchemaError
from synth_pipeline.ingest import read_source
from synth_pipeline.schema import ColumnKind, ColumnSpec, DatasetSchema, infer_schema, looks_like_pii


@pytest.fixture(scope="module")
def nasdaq_schema(nasdaq_csv):
    df = read_source(nasdaq_csv).head(2000)
    return infer_schema(df, entity_key="Symbol", time_index="date", name="nasdaq")


def test_bike_sharing_instant_is_identifier(shared_data):
    df = read_source(shared_data / "bike_sharing.csv")
    schema = infer_schema(df)
    assert schema.time_index == "dteday"
    assert schema.column("instant").kind == ColumnKind.IDENTIFIER
    assert "instant" not in [c.name for c in schema.modelled]
    assert schema.column("cnt").kind == ColumnKind.INTEGER
    assert schema.column("temp").kind == ColumnKind.CONTINUOUS
    assert schema.column("workingday").kind == ColumnKind.BINARY
    assert schema.time_format == "%Y-%m-%d"


def test_nasdaq_panel_static_categoricals(nasdaq_schema):
    s = nasdaq_schema
    assert s.entity_key == "Symbol" and s.time_index == "date"
    assert s.column("Symbol").kind == ColumnKind.IDENTIFIER
    assert s.column("date").kind == ColumnKind.DATETIME
    assert s.time_format == "%m/%d/%Y"
    for name in ("Sector", "Industry"):
        col = s.column(name)
        assert col.kind == ColumnKind.CATEGORICAL
        assert col.static, f"{name} should be constant within each Symbol"
        assert col.categories and col.categories == sorted(col.categories)
    assert {c.name for c in s.static_columns} >= {"Sector", "Industry"}
    assert not s.column("Open").static and not s.column("Close").static
    assert s.column("Volume").kind == ColumnKind.INTEGER
    assert s.column("Open").kind == ColumnKind.CONTINUOUS
    assert {"Symbol", "date"}.isdisjoint(c.name for c in s.modelled)


def test_airquality_minus_200_is_a_missing_sentinel(shared_data):
    df = read_source(shared_data / "airquality.csv")
    schema = infer_schema(df)
    assert schema.time_index == "date"
    having = [c for c in df.columns if c != "date" and (df[c] == -200).any()]
    assert having, "the sample file is expected to use -200 as a missing marker"
    for name in having:
        assert -200.0 in schema.column(name).missing_sentinels, name
        assert schema.column(name).nullable, f"{name}: sentinels become missing values on ingest"
    assert "C6H6(GT)" in having and "PT08.S1(CO)" in having  # names with parentheses and dots kept


def test_sentinel_not_flagged_without_it():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"t": pd.date_range("2020", periods=200, freq="h"), "x": rng.normal(20, 3, 200)})
    assert infer_schema(df).column("x").missing_sentinels == []


def test_hurricane_bom_is_stripped(shared_data):
    df = read_source(shared_data / "hurricane.csv").head(2000)
    assert df.columns[0] == "date"
    schema = infer_schema(df, entity_key="region", time_index="date")
    assert schema.columns[0].name == "date"
    assert schema.column("type").static


def test_metro_holiday_none_is_a_category(shared_data):
    df = read_source(shared_data / "metro_traffic.csv").head(3000)
    assert not df["holiday"].isna().any(), "'None' must be read as a value, not as missing"
    schema = infer_schema(df, time_index="date")
    holiday = schema.column("holiday")
    assert holiday.kind == ColumnKind.CATEGORICAL
    assert "None" in holiday.categories
    assert not holiday.nullable


def test_pii_names_inferred_as_pii():
    n = 30
    df = pd.DataFrame(
        {
            "t": pd.date_range("2021-01-01", periods=n, freq="D"),
            "email": [f"u{i}@example.com" for i in range(n)],
            "phone": [f"555-01{i:02d}" for i in range(n)],
            "ssn": [f"{i:03d}-00-0000" for i in range(n)],
            "customer_name": [f"Person {i % 7}" for i in range(n)],
            "customerEmail": ["x"] * n,
            "value": np.arange(n) + 0.5,
        }
    )
    schema = infer_schema(df)
    for name in ("email", "phone", "ssn", "customer_name", "customerEmail"):
        assert schema.column(name).kind == ColumnKind.PII, name
    assert schema.column("value").kind == ColumnKind.CONTINUOUS
    assert "email" not in schema.output_columns
    assert looks_like_pii("Customer Name") and not looks_like_pii("Industry")


def test_mixed_type_object_column_does_not_crash():
    df = pd.DataFrame({"t": pd.date_range("2020", periods=30, freq="D"), "c": pd.Series([1, "a", 2] * 10, dtype=object)})
    col = infer_schema(df).column("c")
    assert col.kind == ColumnKind.CATEGORICAL and set(col.categories) == {1, 2, "a"}


def test_yaml_round_trip_and_fingerprint(nasdaq_schema, tmp_path):
    s = nasdaq_schema
    text = s.to_yaml()
    again = DatasetSchema.from_yaml(text)
    assert again.to_dict() == s.to_dict()
    assert again.fingerprint() == s.fingerprint()
    path = tmp_path / "schema.yaml"
    s.to_yaml(path)
    from_file = DatasetSchema.from_yaml(path)
    assert from_file.fingerprint() == s.fingerprint()
    assert DatasetSchema.from_yaml(str(path)).fingerprint() == s.fingerprint()
    # stable: same value on a second computation, notes do not count, kinds do
    assert s.fingerprint() == s.fingerprint() and len(s.fingerprint()) == 16
    from_file.column("Open").notes.append("reviewed")
    assert from_file.fingerprint() == s.fingerprint()
    from_file.column("Open").kind = ColumnKind.IGNORE
    assert from_file.fingerprint() != s.fingerprint()
    assert "column 'Open' kind continuous -> ignore" in s.diff(from_file)


def test_yaml_text_not_starting_with_time_index():
    text = "columns:\n- {name: t, kind: datetime}\n- {name: x, kind: continuous}\ntime_index: t\n"
    s = DatasetSchema.from_yaml(text)
    assert [c.name for c in s.columns] == ["t", "x"]


def test_unknown_keys_and_kinds_list_valid_options():
    base = {"time_index": "t", "columns": [{"name": "t", "kind": "datetime"}]}
    with pytest.raises(SchemaError, match=r"unknown schema key\(s\) \['colour'\].*valid keys.*entity_key"):
        DatasetSchema.from_dict({**base, "colour": "red"})
    with pytest.raises(SchemaError, match=r"column 'x': unknown key\(s\) \['typ'\].*valid keys.*kind"):
        DatasetSchema.from_dict({**base, "columns": [*base["columns"], {"name": "x", "kind": "integer", "typ": 1}]})
    with pytest.raises(SchemaError, match=r"unknown kind 'float'.*valid kinds: continuous, integer, categorical"):
        DatasetSchema.from_dict({**base, "columns": [*base["columns"], {"name": "x", "kind": "float"}]})
    with pytest.raises(SchemaError, match="valid kinds"):
        DatasetSchema.from_dict({**base, "columns": [*base["columns"], {"name": "x"}]})
    with pytest.raises(SchemaError, match="time_index 'nope'"):
        DatasetSchema.from_dict({**base, "time_index": "nope"})
    with pytest.raises(SchemaError, match="does not exist"):
        DatasetSchema.from_yaml("/nonexistent/schema.yaml")
    with pytest.raises(SchemaError, match="not valid YAML"):
        DatasetSchema.from_yaml("time_index: [unclosed\ncolumns: x\n")


def test_check_privacy_refuses_pii():
    marked = DatasetSchema(
        columns=[ColumnSpec("t", "datetime"), ColumnSpec("email", "pii"), ColumnSpec("x", "continuous")],
        time_index="t",
    )
    with pytest.raises(PIIError, match="'email' is marked pii"):
        marked.check_privacy()
    unmarked = DatasetSchema(
        columns=[ColumnSpec("t", "datetime"), ColumnSpec("customer_name", "categorical")], time_index="t"
    )
    with pytest.raises(PIIError, match="'customer_name' looks like personal data"):
        unmarked.check_privacy()
    assert issubclass(PIIError, SchemaError)
    # fixes the message suggests are accepted
    DatasetSchema(columns=[ColumnSpec("t", "datetime"), ColumnSpec("email", "ignore")], time_index="t").check_privacy()
    DatasetSchema(
        columns=[ColumnSpec("t", "datetime"), ColumnSpec("phone", "categorical", pii_reviewed=True)], time_index="t"
    ).check_privacy()


def test_infer_errors():
    with pytest.raises(SchemaError, match="empty table"):
        infer_schema(pd.DataFrame({"t": []}))
    with pytest.raises(SchemaError, match="no time column"):
        infer_schema(pd.DataFrame({"x": [1.0, 2.0]}))
    with pytest.raises(SchemaError, match="--entity-key 'who'"):
        infer_schema(pd.DataFrame({"t": ["2020-01-01"]}), entity_key="who")
