"""Issue 21 (items 1, 2, 4, 5, 7, 8): bad and hostile inputs get a typed error, exit code 2 and a
message naming the input and the fix; nothing the tool did not write is deleted or overwritten.

One table of bad CLI inputs (``BAD_INPUTS``) plus focused tests. Self-contained: a 6-entity slice
of the shipped nasdaq100 CSV and a model trained for a few steps (seconds)."""

from __future__ import annotations

import json
import pickle
import shutil
import sqlite3
from collections import OrderedDict
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from synth_pipeline.cli import build_parser, main
from synth_pipeline.dataset_config import DatasetConfig, shipped_config
from synth_pipeline.errors import ConfigError, ModelFileError, OutputError
from synth_pipeline.model_files import MARKER

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CSV = ROOT / "synth_pipeline" / "data" / "nasdaq100_2019.csv"
TRAIN_TINY = ["--set", "model.vae_steps=5", "--set", "model.diffusion_steps=5", "--set", "model.static_steps=2",
              "--set", "model.progress=false", "--skip-validation"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace: small CSV + schema, a trained tiny model, a synthetic table, a victim SQLite file."""
    d = tmp_path_factory.mktemp("hardening")
    df = pd.read_csv(SHIPPED_CSV, dtype=str, keep_default_na=False)
    df = df[df["Symbol"].isin(df["Symbol"].unique()[:6])]
    df.to_csv(d / "data.csv", index=False)
    df[df["Symbol"].isin(df["Symbol"].unique()[:3])].to_csv(d / "train.csv", index=False)
    df[df["Symbol"].isin(df["Symbol"].unique()[3:])].to_csv(d / "holdout.csv", index=False)
    shutil.copy(shipped_config("nasdaq100").parent / "nasdaq100.schema.yaml", d / "schema.yaml")
    assert main(["train", str(d / "data.csv"), "--schema", str(d / "schema.yaml"), "--out", str(d / "model"),
                 *TRAIN_TINY]) == 0
    assert main(["generate", str(d / "model"), "-n", "3", "-o", str(d / "syn.parquet")]) == 0
    (d / "plainfile").write_text("not a folder")
    (d / "afolder").mkdir()
    return d


def make_victim(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("create table victim(a integer, b text)")
    con.executemany("insert into victim values (?, ?)", [(i, f"r{i}") for i in range(5)])
    con.commit()
    con.close()
    return path


def victim_rows(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return con.execute("select count(*) from victim").fetchone()[0]
    finally:
        con.close()


def run(argv: list, capsys) -> tuple[int, str]:
    """rc and stderr of the CLI, in process; argparse errors (SystemExit) count as their exit code."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


# (id, argv with {ws} placeholders, words the message must contain)
BAD_INPUTS = [
    ("encoding", ["schema", "infer", "{ws}/data.csv", "--encoding", "bogus-enc"], ["--encoding", "bogus-enc", "utf-8"]),
    ("set-type", ["train", "{ws}/data.csv", "--schema", "{ws}/schema.yaml", "--out", "{ws}/m_set",
                  "--set", "model.vae_steps=abc"], ["model.vae_steps", "'abc'", "integer"]),
    ("set-unknown", ["train", "{ws}/data.csv", "--schema", "{ws}/schema.yaml", "--out", "{ws}/m_set",
                     "--set", "model.nope=1"], ["nope", "valid options"]),
    ("device-cuda7", ["train", "{ws}/data.csv", "--schema", "{ws}/schema.yaml", "--out", "{ws}/m_dev",
                      "--device", "cuda:7"], ["--device", "cuda:7"]),
    ("device-banana", ["train", "{ws}/data.csv", "--schema", "{ws}/schema.yaml", "--out", "{ws}/m_dev",
                       "--device", "banana"], ["--device", "banana", "cpu"]),
    ("generate-device", ["generate", "{ws}/model", "-n", "2", "-o", "{ws}/dev.parquet", "--device", "banana"],
     ["--device", "banana"]),
    ("seed-negative", ["train", "{ws}/data.csv", "--schema", "{ws}/schema.yaml", "--out", "{ws}/m_seed",
                       "--seed=-1"], ["--seed", "-1", "4294967295"]),
    ("seed-huge", ["generate", "{ws}/model", "-n", "2", "-o", "{ws}/seed.parquet", "--seed", str(2**70)],
     ["--seed", "4294967295"]),
    ("n-zero", ["generate", "{ws}/model", "-n", "0", "-o", "{ws}/n0.parquet"], ["-n", "positive"]),
    ("n-above-max", ["generate", "{ws}/model", "-n", "2000000", "-o", "{ws}/big.parquet"],
     ["2,000,000", "maximum", "--max-sequences"]),
    ("n-above-flag-max", ["generate", "{ws}/model", "-n", "11", "-o", "{ws}/big.parquet", "--max-sequences", "10"],
     ["maximum of 10"]),
    ("infer-out-unwritable", ["schema", "infer", "{ws}/data.csv", "-o", "{ws}/plainfile/schema.yaml"],
     ["plainfile", "is a file"]),
    ("infer-out-suffix", ["schema", "infer", "{ws}/data.csv", "-o", "{ws}/schema.txt"], [".yaml", ".yml"]),
    ("infer-out-exists", ["schema", "infer", "{ws}/data.csv", "-o", "{ws}/schema.yaml"],
     ["already exists", "--force"]),
    ("data-folder-infer", ["schema", "infer", "{ws}/afolder"], ["afolder", "is a folder"]),
    ("data-folder-validate", ["validate", "{ws}/afolder", "--schema", "{ws}/schema.yaml"], ["afolder", "is a folder"]),
    ("generate-out-folder", ["generate", "{ws}/model", "-n", "2", "-o", "{ws}/afolder"], ["afolder", "is a folder"]),
    ("generate-out-suffix", ["generate", "{ws}/model", "-n", "2", "-o", "{ws}/out.txt"],
     ["'.txt'", ".parquet", ".csv"]),
    ("generate-out-exists", ["generate", "{ws}/model", "-n", "2", "-o", "{ws}/syn.parquet"], ["already exists", "--force"]),
    ("generate-into-model", ["generate", "{ws}/model", "-n", "2", "-o", "{ws}/model/weights.parquet"],
     ["inside the model folder"]),
    ("generate-missing-model", ["generate", "{ws}/no_model", "-n", "2", "-o", "{ws}/x.parquet"], ["no_model", "does not exist"]),
    ("evaluate-out-under-file", ["evaluate", "--train", "{ws}/train.csv", "--holdout", "{ws}/holdout.csv",
                                 "--synthetic", "{ws}/syn.parquet", "--schema", "{ws}/schema.yaml",
                                 "--out", "{ws}/plainfile/sub", "--quiet"], ["plainfile", "is a file"]),
    ("train-out-file", ["train", "{ws}/data.csv", "--schema", "{ws}/schema.yaml", "--out", "{ws}/plainfile"],
     ["plainfile", "is a file"]),
    ("query-two-statements", ["schema", "infer", "sqlite:///{ws}/victim_q.db", "--query",
                              "SELECT * FROM victim; DROP TABLE victim"], ["2 statements", "one SELECT"]),
    ("query-with-delete", ["schema", "infer", "sqlite:///{ws}/victim_q.db", "--query",
                           "WITH x AS (SELECT 1) DELETE FROM victim"], ["found DELETE", "read-only SELECT"]),
    ("query-with-insert", ["schema", "infer", "sqlite:///{ws}/victim_q.db", "--query",
                           "WITH x AS (SELECT 1) INSERT INTO victim SELECT 9, 'y' FROM x RETURNING a"], ["found INSERT"]),
    ("query-cte-delete", ["schema", "infer", "sqlite:///{ws}/victim_q.db", "--query",
                          "WITH d AS (DELETE FROM victim RETURNING *) SELECT * FROM d"], ["DELETE"]),
]


@pytest.mark.parametrize("argv,words", [pytest.param(a, w, id=i) for i, a, w in BAD_INPUTS])
def test_bad_input_table(ws, argv, words, capsys):
    victim = ws / "victim_q.db"
    if not victim.exists():
        make_victim(victim)
    before = {p.name: p.stat().st_mtime_ns for p in ws.iterdir() if p.is_file()}
    rc, err = run([a.replace("{ws}", str(ws)) for a in argv], capsys)
    assert rc == 2, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    assert victim_rows(victim) == 5  # the SQL cases never change the source
    after = {p.name: p.stat().st_mtime_ns for p in ws.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k in before} == before  # no existing file was touched


# ------------------------------------------------------------------------------------------------
# 1. data loss
# ------------------------------------------------------------------------------------------------
def test_train_refuses_foreign_folder_and_force_replaces(ws, tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.txt").write_text("precious")
    argv = ["train", ws / "data.csv", "--schema", ws / "schema.yaml", "--out", docs, *TRAIN_TINY]
    rc, err = run(argv, capsys)
    assert rc == 2 and "not a model folder" in err and "--force" in err
    assert (docs / "thesis.txt").read_text() == "precious"
    # a folder written by the tool carries the marker and is replaced without --force
    model = tmp_path / "model"
    assert run(["train", ws / "data.csv", "--schema", ws / "schema.yaml", "--out", model, *TRAIN_TINY], capsys)[0] == 0
    assert (model / MARKER).is_file()
    assert run(["train", ws / "data.csv", "--schema", ws / "schema.yaml", "--out", model, *TRAIN_TINY], capsys)[0] == 0
    # an empty folder is fine; --force replaces a foreign one
    assert run([*argv, "--force"], capsys)[0] == 0
    assert (docs / MARKER).is_file() and not (docs / "thesis.txt").exists()


def test_legacy_model_folder_without_marker_needs_force(ws, tmp_path, capsys):
    legacy = tmp_path / "legacy"
    shutil.copytree(ws / "model", legacy)
    (legacy / MARKER).unlink()
    rc, err = run(["train", ws / "data.csv", "--schema", ws / "schema.yaml", "--out", legacy, *TRAIN_TINY], capsys)
    assert rc == 2 and "before marker files existed" in err
    rc, err = run(["generate", legacy, "-n", "2", "-o", legacy / "x.parquet"], capsys)  # still a model folder
    assert rc == 2 and "inside the model folder" in err


def test_generate_format_follows_suffix_and_force(ws, tmp_path, capsys):
    csv, pq = tmp_path / "out.csv", tmp_path / "out.parquet"
    assert run(["generate", ws / "model", "-n", "3", "-o", csv, "--seed", "4"], capsys)[0] == 0
    assert not csv.read_bytes().startswith(b"PAR1")
    assert run(["generate", ws / "model", "-n", "3", "-o", pq, "--seed", "4"], capsys)[0] == 0
    assert pq.read_bytes()[:4] == b"PAR1"
    a, b = pd.read_csv(csv), pd.read_parquet(pq)
    assert list(a.columns) == list(b.columns) and len(a) == len(b) and a["Symbol"].nunique() == 3
    pq.write_text("mine")
    rc, err = run(["generate", ws / "model", "-n", "3", "-o", pq], capsys)
    assert rc == 2 and pq.read_text() == "mine"
    assert run(["generate", ws / "model", "-n", "3", "-o", pq, "--force"], capsys)[0] == 0
    assert pd.read_parquet(pq)["Symbol"].nunique() == 3


# ------------------------------------------------------------------------------------------------
# 4. bounded generation
# ------------------------------------------------------------------------------------------------
def test_streaming_bounded_chunks_deterministic_unique_keys(ws, tmp_path):
    from synth_pipeline.streaming import chunk_seed, write_samples
    from synth_pipeline.synthesizer import Synthesizer

    syn = Synthesizer.load(ws / "model")
    calls: list[tuple[int, int]] = []
    orig = syn.sample

    def spy(n, seed=None, **kw):
        calls.append((n, seed))
        return orig(n, seed=seed, **kw)

    syn.sample = spy
    stats = write_samples(syn, 7, tmp_path / "a.parquet", seed=11, chunk_size=3)
    assert [n for n, _ in calls] == [3, 3, 1]  # never more than a chunk in memory
    assert [s for _, s in calls] == [chunk_seed(11, i) for i in range(3)] and calls[0][1] == 11
    assert stats["sequences"] == 7 and stats["chunks"] == 3
    a = pd.read_parquet(tmp_path / "a.parquet")
    assert a["Symbol"].nunique() == 7 and len(a) == stats["rows"]
    write_samples(syn, 7, tmp_path / "b.parquet", seed=11, chunk_size=3)
    pd.testing.assert_frame_equal(a, pd.read_parquet(tmp_path / "b.parquet"))  # same seed, same table
    # one chunk: exactly sample(n, seed)
    write_samples(syn, 3, tmp_path / "c.parquet", seed=5)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "c.parquet"), orig(3, seed=5).reset_index(drop=True))


def test_max_sequences_checked_before_loading_and_in_config(ws, tmp_path, capsys, monkeypatch):
    rc, err = run(["generate", ws / "no_such_model", "-n", "2000000", "-o", tmp_path / "x.parquet"], capsys)
    assert rc == 2 and "maximum" in err and "no_such_model" not in err  # refused before the model is read
    monkeypatch.setenv("SYNTH_PIPELINE_MAX_SEQUENCES", "5")
    rc, err = run(["generate", ws / "model", "-n", "6", "-o", tmp_path / "x.parquet"], capsys)
    assert rc == 2 and "maximum of 5" in err
    monkeypatch.delenv("SYNTH_PIPELINE_MAX_SEQUENCES")
    cfg = _config(ws, tmp_path, generate={"n_sequences": 100_000_000_000})
    with pytest.raises(ConfigError, match="generate.n_sequences=100,000,000,000 exceeds the maximum"):
        DatasetConfig.from_yaml(cfg)
    cfg = _config(ws, tmp_path, generate={"n_sequences": 2_000_000, "max_sequences": 3_000_000})
    assert DatasetConfig.from_yaml(cfg).n_sequences == 2_000_000


def _config(ws: Path, tmp_path: Path, name: str = "cfg.yaml", **extra) -> Path:
    c = {"name": "hardening", "sources": {"events": str(ws / "data.csv")}, "schema": str(ws / "schema.yaml"),
         "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}, **extra}
    p = tmp_path / name
    p.write_text(yaml.safe_dump(c))
    return p


@pytest.mark.parametrize("extra,words", [
    ({"seed": -1}, ["seed=-1", "0 to 4294967295"]),
    ({"seed": 2**40}, ["seed=", "0 to 4294967295"]),
    ({"model": {"overrides": [1, 2]}}, ["model.overrides must be a mapping"]),
    ({"model": {"overrides": {"vae_steps": "abc"}}}, ["model.vae_steps='abc'", "integer"]),
    ({"model": {"overrides": {"device": "banana"}}}, ["banana", "cuda:N"]),
    ({"mlflow": {"tracking_uri": "ftp://127.0.0.1/x"}}, ["'ftp'", "http, https, sqlite"]),
    ({"generate": {"n_sequences": 10, "max_sequences": 0}}, ["generate.max_sequences"]),
], ids=["seed-negative", "seed-huge", "overrides-list", "override-type", "device", "ftp", "max-zero"])
def test_bad_config_values_refused_at_load(ws, tmp_path, capsys, extra, words):
    cfg = _config(ws, tmp_path, **extra)
    with pytest.raises(ConfigError) as e:
        DatasetConfig.from_yaml(cfg)
    for w in words:
        assert w in str(e.value)
    rc, err = run(["release", cfg, "--date", "2024-01-02"], capsys)  # the CLI: exit 2, nothing trained
    assert rc == 2 and "Traceback" not in err


# ------------------------------------------------------------------------------------------------
# 5. model folders
# ------------------------------------------------------------------------------------------------
def _drop_key(path: Path, key: str) -> None:
    d = json.loads(path.read_text())
    del d[key]
    path.write_text(json.dumps(d))


def _weights_without(d: Path, key: str) -> None:
    state = torch.load(d / "weights.pt", weights_only=True)
    del state[key]
    torch.save(state, d / "weights.pt")


CORRUPTIONS = {
    "empty-weights": (lambda d: (d / "weights.pt").write_bytes(b""), "weights.pt", "empty"),
    "truncated-weights": (lambda d: (d / "weights.pt").write_bytes((d / "weights.pt").read_bytes()[:2000]),
                          "weights.pt", "corrupt"),
    "garbage-weights": (lambda d: (d / "weights.pt").write_bytes(b"\x00garbage" * 50), "weights.pt", "not a torch"),
    "foreign-pickle": (lambda d: (d / "weights.pt").write_bytes(pickle.dumps(OrderedDict(a=slice(1)))),
                       "weights.pt", "never unpickled"),
    "weights-missing-entry": (lambda d: _weights_without(d, "vae"), "weights.pt", "'vae'"),
    "empty-encoder": (lambda d: (d / "encoder.json").write_text(""), "encoder.json", "empty"),
    "bad-json-encoder": (lambda d: (d / "encoder.json").write_text("{nope"), "encoder.json", "not valid JSON"),
    "bad-json-config": (lambda d: (d / "model_config.json").write_text("[1,"), "model_config.json", "not valid JSON"),
    "json-list": (lambda d: (d / "synthesizer.json").write_text("[]"), "synthesizer.json", "not an object"),
    "missing-key": (lambda d: _drop_key(d / "synthesizer.json", "fit_seconds"), "synthesizer.json", "fit_seconds"),
    "missing-dims": (lambda d: _drop_key(d / "model_config.json", "dims"), "model_config.json", "dims"),
    "missing-file": (lambda d: (d / "encoder.json").unlink(), "encoder.json", "lacks"),
    "encoder-missing-key": (lambda d: _drop_key(d / "encoder.json", next(iter(json.loads((d / "encoder.json")
                                                                                        .read_text())))),
                            "encoder.json", "re-train"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_broken_model_folder_typed_error(ws, tmp_path, capsys, name):
    from synth_pipeline.synthesizer import Synthesizer

    corrupt, filename, words = CORRUPTIONS[name]
    d = tmp_path / "model"
    shutil.copytree(ws / "model", d)
    corrupt(d)
    with pytest.raises(ModelFileError) as e:
        Synthesizer.load(d)
    msg = str(e.value)
    assert filename in msg and words in msg and "re-train" in msg
    assert "weights_only" not in msg
    rc, err = run(["generate", d, "-n", "2", "-o", tmp_path / "x.parquet"], capsys)
    assert rc == 2 and filename in err and "weights_only" not in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------
# 2. read-only SQL sources
# ------------------------------------------------------------------------------------------------
def test_sqlite_with_delete_leaves_victim_intact(tmp_path):
    from synth_pipeline.errors import UnsafeQueryError
    from synth_pipeline.ingest import read_source

    db = make_victim(tmp_path / "src.db")
    for q in ("WITH x AS (SELECT 1) DELETE FROM victim",
              "WITH x AS (SELECT 1) INSERT INTO victim SELECT 9, 'y' FROM x RETURNING a",
              "WITH d AS (DELETE FROM victim RETURNING *) SELECT * FROM d",
              "SELECT * FROM victim; DELETE FROM victim", "SELECT * INTO copy FROM victim",
              "UPDATE victim SET a = 0", "DROP TABLE victim", "  ", "SELECT 1 FOR UPDATE"):
        with pytest.raises(UnsafeQueryError):
            read_source({"path": f"sqlite:///{db}", "query": q})
    assert victim_rows(db) == 5
    ok = read_source({"path": f"sqlite:///{db}", "query": "WITH x AS (SELECT a FROM victim) SELECT a FROM x;"})
    assert len(ok) == 5
    assert len(read_source({"path": f"sqlite:///{db}", "table": "victim"})) == 5


def test_sqlite_connection_is_read_only_even_if_the_check_is_bypassed(tmp_path, monkeypatch):
    """Defence in depth: with the statement check disabled, the read-only connection still refuses."""
    from synth_pipeline import sql_source
    from synth_pipeline.errors import IngestError
    from synth_pipeline.ingest import read_source

    db = make_victim(tmp_path / "src.db")
    monkeypatch.setattr(sql_source, "check_select", lambda q: q)
    for q in ("WITH x AS (SELECT 1) DELETE FROM victim",
              "WITH x AS (SELECT 1) INSERT INTO victim SELECT 9, 'y' FROM x RETURNING a"):
        with pytest.raises(IngestError, match="read-only|readonly"):
            read_source({"path": f"sqlite:///{db}", "query": q})
    assert victim_rows(db) == 5


def test_config_query_with_delete_refused_at_load(ws, tmp_path, capsys):
    db = make_victim(tmp_path / "src.db")
    cfg = _config(ws, tmp_path, sources={"events": {"path": f"sqlite:///{db}",
                                                    "query": "WITH x AS (SELECT 1) DELETE FROM victim"}})
    with pytest.raises(ConfigError, match="sources.events.query: .*found DELETE"):
        DatasetConfig.from_yaml(cfg)
    rc, err = run(["release", cfg, "--date", "2024-01-02"], capsys)
    assert rc == 2 and "found DELETE" in err
    assert victim_rows(db) == 5


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL on 127.0.0.1 (initdb + pg_ctl; as 'nobody' when run as root)."""
    import os
    import socket
    import subprocess

    pytest.importorskip("psycopg2", reason="psycopg2 (the PostgreSQL driver) is not installed")
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="synth-pg-"))  # not under pytest's 0700 base: 'nobody' must reach it
    prefix: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        setpriv = shutil.which("setpriv")
        if not setpriv:
            pytest.skip("running as root without setpriv: cannot start PostgreSQL as another user")
        os.chmod(d, 0o777)
        prefix = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    data = d / "data"
    r = subprocess.run([*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                       capture_output=True, timeout=120)
    if r.returncode:
        pytest.skip(f"initdb failed: {r.stderr.decode()[-300:]}")
    r = subprocess.run([*prefix, pg_ctl, "-D", str(data), "-o", f"-h 127.0.0.1 -p {port} -k {d}",
                        "-l", str(d / "log"), "-w", "-t", "60", "start"], capture_output=True, timeout=90)
    if r.returncode:
        pytest.skip(f"PostgreSQL did not start: {r.stderr.decode()[-300:]}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(d, ignore_errors=True)


def test_postgres_read_only(postgres, monkeypatch):
    import sqlalchemy as sa

    from synth_pipeline import sql_source
    from synth_pipeline.errors import IngestError, UnsafeQueryError
    from synth_pipeline.ingest import read_source

    eng = sa.create_engine(postgres)
    with eng.begin() as c:
        c.execute(sa.text("DROP TABLE IF EXISTS victim"))
        c.execute(sa.text("CREATE TABLE victim(a int, b text)"))
        c.execute(sa.text("INSERT INTO victim SELECT g, 'r' FROM generate_series(1, 5) g"))

    def count() -> int:
        with eng.connect() as c:
            return c.execute(sa.text("SELECT count(*) FROM victim")).scalar()

    with pytest.raises(UnsafeQueryError):
        read_source({"path": postgres, "query": "WITH d AS (DELETE FROM victim RETURNING *) SELECT * FROM d"})
    assert len(read_source({"path": postgres, "query": "WITH x AS (SELECT * FROM victim) SELECT * FROM x"})) == 5
    assert len(read_source({"path": postgres, "table": "victim"})) == 5
    monkeypatch.setattr(sql_source, "check_select", lambda q: q)  # bypass: the transaction is read-only
    for q in ("WITH d AS (DELETE FROM victim RETURNING *) SELECT * FROM d",
              "WITH x AS (SELECT 1) INSERT INTO victim SELECT 9, 'y' FROM x RETURNING a",
              "SELECT * INTO copy_of_victim FROM victim"):
        with pytest.raises(IngestError, match="read-only"):
            read_source({"path": postgres, "query": q})
    assert count() == 5
    eng.dispose()


# ------------------------------------------------------------------------------------------------
# 7. MLflow URI pre-check
# ------------------------------------------------------------------------------------------------
def test_tracking_uri_scheme_refused():
    from synth_pipeline.errors import TrackingError
    from synth_pipeline.tracking import check_reachable

    with pytest.raises(TrackingError, match="unsupported scheme 'ftp'; valid schemes: http, https, sqlite"):
        check_reachable("ftp://user:s3cret@127.0.0.1/x")
    try:
        check_reachable("ftp://user:s3cret@127.0.0.1/x")
    except TrackingError as e:
        assert "s3cret" not in str(e)


def test_tracking_uri_with_credentials(tmp_path, free_port):
    """http://user:pw@host:port: the health check authenticates (basic auth), MLflow gets the
    credentials from MLFLOW_TRACKING_USERNAME/PASSWORD for the block, no message shows the password."""
    import base64
    import os
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from synth_pipeline.errors import TrackingError
    from synth_pipeline.tracking import check_reachable
    from synth_pipeline.tracking_uri import credentials_env

    want = "Basic " + base64.b64encode(b"alice:p@ss:w0rd").decode()

    class H(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            ok = self.path == "/health" and self.headers.get("Authorization") == want
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    try:
        check_reachable(f"http://alice:p%40ss%3Aw0rd@127.0.0.1:{port}")  # passes: the server answers
        with pytest.raises(TrackingError) as e:
            check_reachable(f"http://alice:wrong-secret@127.0.0.1:{port}")
        assert "401" in str(e.value) and "wrong-secret" not in str(e.value)
    finally:
        srv.shutdown()
    with pytest.raises(TrackingError) as e:
        check_reachable(f"http://alice:top-secret@127.0.0.1:{free_port}")
    assert "unreachable" in str(e.value) and "top-secret" not in str(e.value) and "alice:***@" in str(e.value)
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ
    with credentials_env("https://alice:pw@host.example:5000/mlflow") as clean:
        assert clean == "https://host.example:5000/mlflow"
        assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "pw"
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ


# ------------------------------------------------------------------------------------------------
# 8. misc + issue 19 item 4
# ------------------------------------------------------------------------------------------------
def test_output_checks_unit(tmp_path):
    from synth_pipeline.model_files import check_output_dir, check_output_file

    assert check_output_file(tmp_path / "new" / "x.CSV") == "csv"
    with pytest.raises(OutputError, match="valid suffixes: .parquet, .pq, .csv"):
        check_output_file(tmp_path / "x")
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_output_dir(tmp_path / "f" / "sub")
    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"


def test_every_cli_option_has_help():
    import argparse

    def walk(p: argparse.ArgumentParser, path: str):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    yield from walk(sp, f"{path} {name}")
            elif not isinstance(a, argparse._HelpAction):
                yield path, a

    missing = [f"{path}: {a.option_strings or a.dest}" for path, a in walk(build_parser(), "synth-pipeline")
               if not a.help]
    assert not missing, missing


def test_pyproject_lists_data_folders():
    """setuptools warns when package data folders are not packages (issue 19): they are listed."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for folder in ("configs", "data"):
        assert f"synth_pipeline.{folder}" in cfg["packages"]
        assert f"synth_pipeline.{folder}" in cfg["package-data"]


def test_generate_shards_writes_the_release_parts_in_one_process(ws, tmp_path, capsys):
    """``generate --shards N``: the same seeded parts as shards.write_shards (the release's shard
    functions), a manifest with sha256 and rows per part, read back as one table."""
    import json

    from synth_pipeline.shards import write_shards
    from synth_pipeline.synthesizer import Synthesizer

    out = tmp_path / "parts"
    assert main(["generate", str(ws / "model"), "-n", "7", "-o", str(out), "--shards", "3", "--seed", "5"]) == 0
    manifest = json.loads((out / "_manifest.json").read_text())
    assert [p["path"] for p in manifest["parts"]] == [f"part-0000{i}.parquet" for i in range(3)]
    table = pd.read_parquet(out)
    assert len(table) == manifest["rows"] == sum(p["rows"] for p in manifest["parts"])
    ref = tmp_path / "ref"
    write_shards(Synthesizer.load(ws / "model"), 7, 5, ref, shards=3)
    for i in range(3):
        name = f"part-0000{i}.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), pd.read_parquet(ref / name))
    rc, err = run(["generate", str(ws / "model"), "-n", "7", "-o", str(out), "--shards", "3"], capsys)
    assert rc == 2 and "not empty" in err and "--force" in err
    rc, err = run(["generate", str(ws / "model"), "-n", "2", "-o", str(ws / "plainfile"), "--shards", "2"], capsys)
    assert rc == 2 and "is a file" in err
