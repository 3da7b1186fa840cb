"""Personal data found by content (synth_pipeline.pii): each detector, its false-positive guards,
inference marking hits as pii without keeping values, and validation refusing unreviewed hits."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import pytest

from synth_pipeline import pii
from synth_pipeline.errors import PIIError
from synth_pipeline.ingest import coerce, read_source
from synth_pipeline.schema import ColumnKind, DatasetSchema, infer_schema

N = 40

# (column name without a PII name hint, values, expected detector)
POSITIVE = [
    ("contact", [f"user{i}@example.com" for i in range(N)], "email"),
    ("contact", [f"Person {i} <p{i}@corp.example.org>" for i in range(N)], "email"),
    ("tel", [f"+1 415-555-{2600 + i:04d}" for i in range(N)], "phone"),
    ("tel", [f"(212) 555-{1000 + i:04d}" for i in range(N)], "phone"),
    ("tel", [f"020 7946 {i:04d}" for i in range(N)], "phone"),
    ("tel", [f"0049 30 1234{i:04d}" for i in range(N)], "phone"),
    ("pan", ["4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009", "4012888888881881",
             "6011000990139424", "3530111333300000", "5105105105105100", "4222222222222"], "card"),
    ("acct", ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR1420041010050500013M02606",
              "NL91ABNA0417164300", "ES9121000418450200051332"], "iban"),
    ("host", [f"192.168.{i}.{i + 1}" for i in range(N)], "ip"),
    ("host", ["2001:db8::1", "fe80::1%eth0", "::1", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "::ffff:10.0.0.1"], "ip"),
    ("tax", [f"{100 + i:03d}-{10 + i:02d}-{1000 + i:04d}" for i in range(N)], "national_id"),
    ("tax", ["AB 12 34 56 C", "CE123456D", "JK 98 76 54 A", "PR 11 22 33 B"], "national_id"),
    ("tax", ["12345678Z", "X1234567L", "00000000T", "87654321X"], "national_id"),
    ("rep", ["Alice Smith", "Bob O'Brien", "Maria de la Cruz", "Smith, John", "John A. Smith", "Priya Patel",
             "Jan van der Berg", "Fatima Khan"], "person_name"),
    ("Owner", ["Alice", "Bob", "Carol", "David", "Emma", "Hiroshi", "Olga"], "person_name"),
]

# values that must not be flagged (shapes close to the detectors)
NEGATIVE = [
    ("sector", ["Capital Goods", "Consumer Durables", "Health Care", "Public Utilities", "Technology"]),
    ("month", ["January", "February", "March", "April", "May", "June", "July", "August", "September",
               "October", "November", "December"]),
    ("day", [f"2020-01-{d:02d}" for d in range(1, 29)]),
    ("eu_day", [f"{d:02d}.01.2020" for d in range(1, 29)]),
    ("clock", [f"{h:02d}:30" for h in range(24)]),
    ("amount", [f"{1234.5 + i:.2f}" for i in range(N)]),
    ("version", ["1.2.3", "2.0.1", "10.4.7"]),
    ("serial", [f"{4111111111111110 + i}" for i in range(0, 50, 1) if i % 10 != 1]),  # Luhn fails
    ("iban_like", ["DE00 3704 0044 0532 0130 00", "GB00WEST12345698765432"]),  # check digits wrong
    ("ssn_like", ["000-12-3456", "666-12-3456", "123-00-4567"]),
    ("weather", ["sky is clear", "light rain", "overcast clouds", "Clouds", "Rain"]),
    ("code", [f"A{i:04d}" for i in range(N)]),
    ("free_text", ["the order was shipped", "called back later", "no answer"]),
]


@pytest.mark.parametrize(("col", "values", "detector"), POSITIVE, ids=[f"{p[2]}-{i}" for i, p in enumerate(POSITIVE)])
def test_detector_finds_personal_data(col, values, detector):
    hits = pii.scan_series(pd.Series(values, dtype=object))
    assert hits and hits[0].detector == detector, hits
    assert 0 < hits[0].share <= 1 and hits[0].n_sampled == len(set(values))
    text = hits[0].describe()
    assert not any(v in text for v in values)  # describes, never quotes


@pytest.mark.parametrize(("col", "values"), NEGATIVE, ids=[n[0] for n in NEGATIVE])
def test_detectors_leave_ordinary_values_alone(col, values):
    assert pii.scan_series(pd.Series(values, dtype=object)) == []


def test_checksums_vectorised():
    digits = pd.Series(["4111111111111111", "4111111111111112", "79927398713", "0"])
    assert pii.luhn_valid(digits).tolist() == [True, False, True, True]
    ibans = pd.Series(["GB82WEST12345698765432", "GB83WEST12345698765432", "NL91ABNA0417164300"])
    assert pii.iban_valid(ibans).tolist() == [True, False, True]


def test_card_numbers_stored_as_integers():
    cards = pd.Series([4111111111111111, 5500000000000004, 4012888888881881, 6011000990139424])
    assert pii.scan_series(cards)[0].detector == "card"
    assert pii.scan_series(pd.Series(np.arange(10**12, 10**12 + 500))) == []  # ~10% pass Luhn: below threshold
    assert pii.scan_series(pd.Series(np.arange(500))) == []


def test_mixed_contact_column_is_reported():
    values = [f"u{i}@example.com" for i in range(10)] + [f"+44 20 7946 {i:04d}" for i in range(10)]
    hits = pii.scan_series(pd.Series(values))
    assert hits and set(hits[0].detector.split("+")) >= {"email"}
    assert hits[0].share >= 0.5


def test_sample_is_bounded_and_long_values_skipped():
    s = pd.Series([f"user{i}@example.com" for i in range(200_000)])
    v = pii.sample_values(s)
    assert len(v) == pii.SAMPLE_VALUES
    t0 = time.perf_counter()
    assert pii.scan_series(s)[0].detector == "email"
    assert time.perf_counter() - t0 < 2.0
    blob = pd.Series(["x" * 5_000_000 + "@example.com", "short"])
    assert pii.scan_series(blob) == []  # a huge cell is not examined


def test_shared_data_has_no_false_positives(shared_data, nasdaq_csv):
    paths = sorted(shared_data.glob("*.csv")) + [nasdaq_csv]
    assert len(paths) == 8  # every sample dataset (slices in tests/data, the packaged panel)
    for path in paths:
        df = read_source(path)
        assert pii.scan_frame(df) == {}, path.name


def _table(col: str, values: list) -> pd.DataFrame:
    n = len(values)
    return pd.DataFrame({"t": pd.date_range("2021-01-01", periods=n, freq="D"), col: values,
                         "value": np.arange(n) + 0.5})


@pytest.mark.parametrize(("col", "values", "detector"), POSITIVE, ids=[f"{p[2]}-{i}" for i, p in enumerate(POSITIVE)])
def test_inferred_as_pii_without_values(col, values, detector, caplog):
    df = _table(col, values)
    with caplog.at_level(logging.DEBUG):
        schema = infer_schema(df)
    spec = schema.column(col)
    assert spec.kind == ColumnKind.PII and spec.categories is None
    assert any(f"detector '{detector}'" in n for n in spec.notes), spec.notes
    text = schema.to_yaml()
    assert not any(str(v) in text for v in values)
    assert not any(str(v) in caplog.text for v in values)
    assert col not in schema.output_columns


def test_inferred_schema_refused_until_reviewed():
    values = [f"user{i}@example.com" for i in range(N)]
    df = _table("contact", values)
    schema = infer_schema(df)
    with pytest.raises(PIIError, match="column 'contact' is marked pii"):
        coerce(df, schema)
    # the user changes the kind without reviewing: the values still give it away
    d = schema.to_dict()
    for c in d["columns"]:
        if c["name"] == "contact":
            c["kind"] = "categorical"
    edited = DatasetSchema.from_dict(d)
    with pytest.raises(PIIError) as exc:
        coerce(df, edited)
    msg = str(exc.value)
    assert "column 'contact'" in msg and "detector 'email'" in msg and "pii_reviewed: true" in msg
    assert "'ignore'" in msg and not any(v in msg for v in values)
    # reviewed, or dropped: accepted
    for c in d["columns"]:
        if c["name"] == "contact":
            c["pii_reviewed"] = True
    assert "contact" in coerce(df, DatasetSchema.from_dict(d)).columns
    for c in d["columns"]:
        if c["name"] == "contact":
            c["kind"], c["pii_reviewed"] = "ignore", False
    assert "contact" not in coerce(df, DatasetSchema.from_dict(d)).columns


def test_handwritten_schema_with_names_in_a_categorical_is_refused():
    names = ["Alice Smith", "Bob Jones", "Carol White", "David Brown"] * 10
    df = _table("rep", names)
    schema = DatasetSchema.from_dict({
        "time_index": "t",
        "columns": [{"name": "t", "kind": "datetime"}, {"name": "rep", "kind": "categorical"},
                    {"name": "value", "kind": "continuous"}],
    })
    with pytest.raises(PIIError, match=r"column 'rep' looks like personal data by its values .*'person_name'"):
        coerce(df, schema)


def test_first_name_list_is_shipped():
    names = pii.first_names()
    assert 300 < len(names) < 5000 and {"alice", "mohammed", "priya"} <= names
    assert not {"may", "june", "april", "august"} & names  # months are not names
