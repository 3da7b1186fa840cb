"""CLI: the happy path (infer -> validate -> train -> generate) and exit code 2 with nothing written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synth_pipeline.cli import main


@pytest.fixture()
def small_csv(tmp_path, shared_data):
    raw = pd.read_csv(shared_data / "pollution_data.csv", nrows=480, keep_default_na=False, na_values=[""])
    path = tmp_path / "pollution.csv"
    raw.to_csv(path, index=False)
    return path


def test_infer_validate_train_generate(tmp_path, small_csv, capsys):
    schema = tmp_path / "schema.yaml"
    assert main(["schema", "infer", str(small_csv), "--time-index", "date", "--sequence-length", "24", "-o", str(schema)]) == 0
    assert "sequence_length: 24" in schema.read_text()
    assert main(["validate", str(small_csv), "--schema", str(schema)]) == 0
    model = tmp_path / "model"
    rc = main(["train", str(small_csv), "--schema", str(schema), "--out", str(model), "--seed", "1",
               "--set", "model.vae_steps=10", "--set", "model.diffusion_steps=10", "--set", "model.static_steps=2",
               "--set", "model.progress=false"])
    assert rc == 0 and (model / "weights.pt").exists()
    out = tmp_path / "synthetic.parquet"
    assert main(["generate", str(model), "-n", "7", "-o", str(out), "--seed", "3"]) == 0
    df = pd.read_parquet(out)
    assert df["sequence_id"].nunique() == 7 and len(df) == 7 * 24
    assert "written to" in capsys.readouterr().out


def test_bad_inputs_exit_2_and_write_nothing(tmp_path, small_csv, capsys):
    schema = tmp_path / "schema.yaml"
    main(["schema", "infer", str(small_csv), "--time-index", "date", "--sequence-length", "24", "-o", str(schema)])
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    model = tmp_path / "model"
    assert main(["train", str(empty), "--schema", str(schema), "--out", str(model)]) == 2
    assert "empty" in capsys.readouterr().err
    assert not model.exists()
    assert main(["train", str(small_csv), "--schema", str(schema), "--out", str(model), "--set", "model.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err and not model.exists()
    assert main(["train", str(small_csv), "--schema", str(schema), "--out", str(model), "--preset", "turbo"]) == 2
    assert not model.exists()
    bad = pd.read_csv(small_csv, keep_default_na=False, na_values=[""])
    bad["TEMP"] = bad["TEMP"].astype(object)
    bad.loc[5, "TEMP"] = "warm"
    bad_path = tmp_path / "bad.csv"
    bad.to_csv(bad_path, index=False)
    assert main(["validate", str(bad_path), "--schema", str(schema)]) == 2
    err = capsys.readouterr().err
    assert "TEMP" in err and "Traceback" not in err
    out = tmp_path / "o.parquet"
    assert main(["generate", str(tmp_path / "missing_model"), "-n", "3", "-o", str(out)]) == 2
    assert not out.exists()


def test_pii_column_refused(tmp_path, small_csv, capsys):
    df = pd.read_csv(small_csv, keep_default_na=False, na_values=[""])
    df["email"] = np.where(np.arange(len(df)) % 2 == 0, "a@example.org", "b@example.org")
    path = tmp_path / "with_pii.csv"
    df.to_csv(path, index=False)
    schema = tmp_path / "schema.yaml"
    assert main(["schema", "infer", str(path), "--time-index", "date", "--sequence-length", "24", "-o", str(schema)]) == 0
    assert main(["train", str(path), "--schema", str(schema), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "email" in err and "pii" in err and "example.org" not in err
