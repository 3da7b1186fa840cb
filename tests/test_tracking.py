"""The synth_pipeline MLflow flavor (save/load, pyfunc requests, signature, pinned requirements)
and the tracking helpers. No server here: tests/test_pipeline.py runs a real ``mlflow server``."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from synth_pipeline import tracking as trk
from synth_pipeline.config import ModelConfig
from synth_pipeline.demo import shipped_path
from synth_pipeline.errors import ConditioningError, TrackingError
from synth_pipeline.ingest import load_dataset
from synth_pipeline.schema import DatasetSchema
from synth_pipeline.split import split_sequences

TINY = {"vae_steps": 20, "diffusion_steps": 20, "static_steps": 10, "progress": False}


@pytest.fixture(scope="module")
def panel():
    schema = DatasetSchema.from_yaml(shipped_path("configs", "nasdaq100.schema.yaml"))
    df = load_dataset(shipped_path("data", "nasdaq100_2019.csv"), schema)
    keep = df["Symbol"].isin(sorted(df["Symbol"].unique())[:30])
    train, _ = split_sequences(df[keep].reset_index(drop=True), schema, 0.2, seed=0)
    return schema, train


@pytest.fixture(scope="module")
def synthesizer(panel, one_thread):
    from synth_pipeline.synthesizer import Synthesizer

    schema, train = panel
    return Synthesizer(schema, ModelConfig.from_preset("fast", TINY)).fit(train)


@pytest.fixture(scope="module")
def saved_model(synthesizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("flavor") / "model"
    trk.save_model(synthesizer, path)
    return path


def test_saved_model_has_both_flavors_signature_and_pinned_requirements(saved_model):
    mlmodel = yaml.safe_load((saved_model / "MLmodel").read_text())
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "synth_pipeline.tracking"
    assert mlmodel["flavors"]["synth_pipeline"]["schema_fingerprint"]
    sig_in = [c["name"] for c in yaml.safe_load(mlmodel["signature"]["inputs"])]
    assert sig_in[:2] == ["n_sequences", "seed"] and {"Sector", "Industry"} <= set(sig_in)
    sig_out = [c["name"] for c in yaml.safe_load(mlmodel["signature"]["outputs"])]
    assert sig_out[0] == "request_id" and "Open" in sig_out
    reqs = (saved_model / "requirements.txt").read_text().splitlines()
    names = {r.split("==")[0] for r in reqs}
    assert {"mlflow", "synth-pipeline", "torch", "pandas", "numpy"} <= names
    assert all("==" in r for r in reqs), reqs  # every requirement pinned
    assert not any("+" in r for r in reqs)  # local labels like +cpu are not installable pins
    assert (saved_model / "synthesizer" / "weights.pt").is_file()


def test_model_directory_holds_no_training_rows(saved_model, panel):
    _, train = panel
    text = "\n".join(p.read_text(errors="ignore") for p in saved_model.rglob("*") if p.is_file()
                     and p.suffix in (".json", ".yaml", ".txt", "") and p.name != "weights.pt")
    raw = pd.read_csv(shipped_path("data", "nasdaq100_2019.csv"), dtype=str)
    raw = raw[raw["Symbol"].isin(train["Symbol"].unique())]
    # the encoder keeps aggregates (quantile knots can coincide with single values), never a row
    for _, row in raw.dropna(subset=["Open", "Close", "Volume"]).sample(50, random_state=0).iterrows():
        assert not all(row[c] in text for c in ("Open", "Close", "Volume")), "a training row appears in the model files"
    for sym in train["Symbol"].unique():
        assert f'"{sym}"' not in text and f"- {sym}\n" not in text


def test_pyfunc_predict_requests(saved_model):
    import mlflow

    m = mlflow.pyfunc.load_model(str(saved_model))
    out = m.predict(pd.DataFrame({"n_sequences": [2, 1], "seed": [3, 4], "Sector": ["Technology", None]}))
    assert list(out.columns[:2]) == ["request_id", "Symbol"]
    assert out.groupby("request_id")["Symbol"].nunique().to_dict() == {0: 2, 1: 1}
    assert set(out.loc[out.request_id == 0, "Sector"]) == {"Technology"}
    again = m.predict(pd.DataFrame({"n_sequences": [2, 1], "seed": [3, 4], "Sector": ["Technology", None]}))
    pd.testing.assert_frame_equal(out, again)  # seeded
    plain = m.predict(pd.DataFrame({"n_sequences": [1]}))  # seed optional
    assert plain["request_id"].eq(0).all() and len(plain) > 0


def test_pyfunc_bad_requests_are_typed_errors(synthesizer):
    wrapper = trk.SynthesizerPyfunc(synthesizer)
    with pytest.raises(ConditioningError, match="n_sequences"):
        wrapper.predict(pd.DataFrame({"seed": [1]}))
    with pytest.raises(ConditioningError, match="n_sequences must be an integer"):
        wrapper.predict(pd.DataFrame({"n_sequences": [0]}))
    with pytest.raises(ConditioningError, match="unknown request column"):
        wrapper.predict(pd.DataFrame({"n_sequences": [1], "Open": [3.0]}))


def test_load_model_returns_the_synthesizer(saved_model, synthesizer):
    syn = trk.load_model(str(saved_model))
    assert syn.schema_fingerprint == synthesizer.schema_fingerprint == synthesizer.schema.fingerprint()
    assert syn.schema.column("Sector").categories is None or set(syn.schema.column("Sector").categories) <= (
        set(synthesizer.schema.column("Sector").categories or []) | {"_RARE_"})  # the protected copy
    pd.testing.assert_frame_equal(syn.sample(2, seed=5), synthesizer.sample(2, seed=5))


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_server_fails_fast_with_clear_error():
    t0 = time.perf_counter()
    with pytest.raises(TrackingError, match="unreachable.*mlflow/README.md"):
        trk.check_reachable(f"http://127.0.0.1:{_closed_port()}")
    assert time.perf_counter() - t0 < 5


def test_mlflow_errors_wraps_client_failures(monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(TrackingError, match="MLflow failed while listing"):
        with trk.mlflow_errors("listing experiments"):
            client.search_experiments(max_results=1)


def test_flat_params_metrics_and_airflow_tags(monkeypatch):
    assert trk.flat_params({"model": {"a": 1, "b": [1, 2]}, "x": None}) == {"model.a": "1", "model.b": "[1, 2]", "x": "None"}
    m = trk.flat_metrics({"fid": {"d": {"value": 0.1, "details": {"n": 3, "per": [1, 2]}, "note": "x"}},
                          "ok": True, "nan": float("nan")})
    assert m == {"fid.d.value": 0.1, "fid.d.details.n": 3.0, "ok": 1.0}
    assert trk.flat_metrics({"marginals": {"CO(GT)": 0.5}}) == {"marginals.CO_GT_": 0.5}  # valid MLflow key
    for env in trk.AIRFLOW_ENV.values():
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "synthetic_release_nasdaq100")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "scheduled__2024-05-17")
    assert trk.airflow_tags() == {"airflow.dag_id": "synthetic_release_nasdaq100",
                                  "airflow.run_id": "scheduled__2024-05-17"}
    assert trk.airflow_tags({"dag_id": "d", "task_id": "t"}) == {"airflow.dag_id": "d", "airflow.task_id": "t"}


def test_ui_command_for_local_store(tmp_path):
    cmd = trk.ui_command(f"sqlite:///{tmp_path}/mlflow.db")
    assert cmd.split()[1:4] == ["ui", "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    assert Path(cmd.split()[0]).name == "mlflow" and os.path.basename(cmd.split()[0]) == "mlflow"
