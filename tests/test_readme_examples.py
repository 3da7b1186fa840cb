"""The README's examples run (issue 19 item 2).

Every fenced block of README.md is either executed here or listed in ``NOT_RUN`` with the reason it
cannot run in a test; a block that is neither (a new example) or a listing that matches no block
fails ``test_every_block_is_run_or_listed``. The blocks are read from README.md at test time, so an
edit that breaks an example fails its test.

Each example runs against a fixture of the shape the README assumes, with tiny training budgets
(``_release_setup.TINY``): command-line blocks run in bash with ``synth-pipeline`` from this
interpreter's environment, in a temporary folder holding the files they name (``data.csv``: the
packaged nasdaq100 panel; ``synth_pipeline/configs/nasdaq100.yaml``: the shipped config at a tiny
budget, writing to a ``.demo/mlflow.db`` store like ``make demo``); Python blocks run in that
folder with the names they take for granted bound to fixture objects (``train_df``,
``partial_rows``). The only edits to a block: ``synth-pipeline train`` gets the tiny budget appended
as ``--set`` options (the last ``--set`` of a key wins), and ``ModelConfig.from_preset`` merges the
same budget.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _release_setup import FAIL_GATE, PASS_GATE, TINY

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
NASDAQ_CSV = REPO / "synth_pipeline" / "data" / "nasdaq100_2019.csv"
NASDAQ_SCHEMA = REPO / "synth_pipeline" / "configs" / "nasdaq100.schema.yaml"
BIN = Path(sys.executable).parent  # synth-pipeline is installed beside this interpreter
TINY_FLAGS = " ".join(f"--set model.{k}={str(v).lower()}" for k, v in TINY.items())

# A block is named by a line it contains (stripped); each name must match exactly one block.
NOT_RUN = {
    "make demo   # installs into .venv, then publishes one release of the shipped pollution series end to end":
        "make targets: `make test`/`make test-all` run this suite, `make demo` installs and trains for minutes; "
        "the demo's release path runs below at a tiny budget (the release and MLflow blocks)",
    "sources (CSV | Parquet | SQL URI | DataFrame)": "a diagram of the stages, not code",
    "<release_root>/<dataset>/LATEST                       newest release id (atomic, never moves back)":
        "a folder layout, not code (test_release_layout_matches checks the folders it names)",
    "ingest -> validate -> train -> generate -> evaluate -> publish ──▶ Asset synthdata://releases/<dataset>":
        "a diagram of the Airflow tasks, not code",
    'with DAG("etl_orders", schedule="@daily", ...) as etl:             # (a) after your load task':
        "an Airflow deployment snippet: `DAG`, `load_orders` and /opt/airflow/configs/orders.yaml belong to "
        "the user's deployment and `...` is elided; the same API (release_dag, synthetic_release, "
        "release_asset) is exercised by tests/test_airflow.py",
    "from kubernetes.client import models as k8s":
        "needs the kubernetes client package and a KubernetesExecutor deployment (not a dependency)",
    "synth_pipeline/   library (pure Python)      operators/  Airflow operators (synth_pipeline.operators)":
        "the repository layout, not code",
    "torchrun --standalone --nproc_per_node 4 -m synth_pipeline.cli train events.parquet \\":
        "needs 4 GPUs and the user's data; the same command with 2 gloo processes on CPU runs in "
        "tests/test_distributed.py (slow)",
}
RUN = {
    "cli": "synth-pipeline schema infer data.csv --entity-key Symbol --time-index date -o schema.yaml",
    "python": "syn = Synthesizer(schema, ModelConfig.from_preset(\"fast\", {\"seed\": 0})).fit(train_df)",
    "release": "synth-pipeline release synth_pipeline/configs/nasdaq100.yaml --date 2024-05-17   # add --overwrite to redo a date",
    "champion": 'm = mlflow.pyfunc.load_model("models:/nasdaq100-synthesizer@champion")',
    "ungated": "from synth_pipeline.errors import UngatedModelError",
    "privacy": "privacy: {epsilon: 3}   # delta 1e-5, max_grad_norm 1.0, noise calibrated, RDP accountant by default",
}


def readme_blocks() -> list[tuple[int, str, str]]:
    """(first line number, info string, text) of every fenced block of README.md."""
    blocks, lines = [], README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\S*)\s*$", lines[i])
        if m:
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            assert j < len(lines), f"README.md:{i + 1}: unclosed code fence"
            blocks.append((i + 2, m.group(1), "\n".join(lines[i + 1:j]) + "\n"))
            i = j
        i += 1
    return blocks


def _matches(name: str, text: str) -> bool:
    return name in (line.strip() for line in text.splitlines())


def block(key: str) -> tuple[int, str]:
    """(line number, text) of the README block named by ``RUN[key]``."""
    found = [(n, text) for n, _, text in readme_blocks() if _matches(RUN[key], text)]
    assert len(found) == 1, f"README.md: expected one block containing {RUN[key]!r}, found {len(found)}"
    return found[0]


def test_every_block_is_run_or_listed():
    names = {**{v: f"run by this file ({k})" for k, v in RUN.items()}, **NOT_RUN}
    unlisted, hits = [], dict.fromkeys(names, 0)
    for lineno, _, text in readme_blocks():
        which = [n for n in names if _matches(n, text)]
        for n in which:
            hits[n] += 1
        if len(which) != 1:
            unlisted.append(f"README.md:{lineno} ({len(which)} names match): {text.splitlines()[0] if text.strip() else ''}")
    assert not unlisted, "blocks neither run nor listed in NOT_RUN (or matching several names):\n" + "\n".join(unlisted)
    stale = [n for n, k in hits.items() if k != 1]
    assert not stale, f"names matching no block (or several): {stale}"
    assert all(reason.strip() for reason in NOT_RUN.values())


# ---------------------------------------------------------------------------------------------- runners


def with_tiny_budget(script: str) -> str:
    """Continuation lines joined; every ``synth-pipeline train`` gets the tiny budget appended."""
    out, trained = [], 0
    for line in script.replace("\\\n", " ").splitlines():
        if line.lstrip().startswith("synth-pipeline train "):
            cmd, sep, comment = line.partition(" #")
            line = f"{cmd.rstrip()} {TINY_FLAGS}" + (f" #{comment}" if sep else "")
            trained += 1
        out.append(line)
    assert trained, "the CLI block no longer trains: update this test"
    return "\n".join(out) + "\n"


def run_bash(script: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    exe = BIN / "synth-pipeline"
    assert exe.exists(), f"{exe} not found: install the package into this environment (make install)"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def exec_block(text: str, lineno: int, ns: dict) -> list:
    """Execute a Python block in ``ns``; returns the values of its top-level expressions."""
    tree = ast.parse(text, filename="README.md")
    ast.increment_lineno(tree, lineno - 1)
    values: list = []
    ns["__readme_values__"] = values
    for i, node in enumerate(tree.body):
        if isinstance(node, ast.Expr):
            tree.body[i] = ast.copy_location(ast.Expr(ast.Call(
                ast.Attribute(ast.Name("__readme_values__", ast.Load()), "append", ast.Load()), [node.value], [])), node)
    exec(compile(ast.fix_missing_locations(tree), str(README), "exec"), ns)
    return values


@pytest.fixture
def mlflow_globals():
    """The README sets MLflow's tracking URI process-wide; restore it (and the env) afterwards."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield
    tracking_utils._tracking_uri, registry_utils._registry_uri = saved
    for k, v in saved_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


# ------------------------------------------------------------------------------------- command line


def test_cli_block_runs(tmp_path):
    lineno, text = block("cli")
    shutil.copy(NASDAQ_CSV, tmp_path / "data.csv")
    r = run_bash(with_tiny_budget(text), tmp_path)
    assert r.returncode == 0, f"README.md:{lineno} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert (tmp_path / "schema.yaml").exists() and (tmp_path / "model" / "weights.pt").exists()
    out = pd.read_parquet(tmp_path / "synthetic.parquet")
    real = pd.read_csv(tmp_path / "data.csv", nrows=5)
    assert set(out.columns) == set(real.columns)
    assert out["Symbol"].nunique() == 500  # -n 500


# ------------------------------------------------------------------------------------------- Python


@pytest.fixture(scope="module")
def panel():
    """The packaged panel typed by the shipped schema; the demo's split (a quarter held out)."""
    from synth_pipeline.ingest import load_dataset
    from synth_pipeline.schema import DatasetSchema
    from synth_pipeline.split import split_entities

    schema = DatasetSchema.from_yaml(NASDAQ_SCHEMA)
    df = load_dataset(str(NASDAQ_CSV), schema)
    tr, _ = split_entities(df["Symbol"].to_numpy(), 0.25, seed=0)
    return df[tr].reset_index(drop=True)


def test_python_block_runs(panel, tmp_path, monkeypatch, one_thread):
    from synth_pipeline.config import ModelConfig

    lineno, text = block("python")
    shutil.copy(NASDAQ_SCHEMA, tmp_path / "schema.yaml")
    monkeypatch.chdir(tmp_path)
    preset = ModelConfig.from_preset.__func__
    monkeypatch.setattr(ModelConfig, "from_preset",
                        classmethod(lambda cls, name, overrides=None: preset(cls, name, {**(overrides or {}), **TINY})))
    # a stock whose Industry is a modelled level (held by >= protect_k=5 training stocks)
    per_stock = panel.groupby("Symbol")["Industry"].first()
    common = per_stock[per_stock.map(per_stock.value_counts()) >= 5].index[0]
    first = panel[panel["Symbol"] == common].head(30).copy()
    first.loc[first.index[20:], ["Open", "Close", "Volume"]] = float("nan")  # forecast the last 10 days
    ns = {"pd": pd, "train_df": panel, "partial_rows": first}
    unconditional, by_sector, completed, _saved, _loaded = exec_block(text, lineno, ns)
    assert unconditional["Symbol"].nunique() == 100
    assert by_sector.groupby("Symbol")["Sector"].first().eq("Technology").all()
    assert by_sector["Symbol"].nunique() == 10
    assert len(completed) == 30 and completed[["Open", "Close", "Volume"]].notna().all().all()
    pd.testing.assert_series_equal(completed["Close"].iloc[:20].reset_index(drop=True),
                                   first["Close"].iloc[:20].reset_index(drop=True), check_names=False)
    assert (tmp_path / "model" / "weights.pt").exists()


# ----------------------------------------------------------------------------- releases and MLflow


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory):
    """A folder laid out like the repository for the README's release command: the shipped
    nasdaq100 config at a tiny budget (gate checks that a 30-step model can pass), MLflow in
    ``.demo/mlflow.db`` as ``make demo`` writes it. Runs the README's release block there."""
    ws = tmp_path_factory.mktemp("readme_release")
    configs = ws / "synth_pipeline" / "configs"
    configs.mkdir(parents=True)
    shutil.copy(NASDAQ_SCHEMA, configs / "nasdaq100.schema.yaml")
    shipped = yaml.safe_load((REPO / "synth_pipeline" / "configs" / "nasdaq100.yaml").read_text())
    shipped["sources"]["events"] = str(NASDAQ_CSV)
    shipped["model"]["overrides"] = TINY
    shipped["generate"]["n_sequences"] = 60
    shipped["gate"] = PASS_GATE
    shipped["release"]["root"] = str(ws / "releases")
    shipped["mlflow"]["tracking_uri"] = f"sqlite:///{ws / '.demo' / 'mlflow.db'}"
    (ws / ".demo").mkdir()
    (configs / "nasdaq100.yaml").write_text(yaml.safe_dump(shipped, sort_keys=False))
    lineno, text = block("release")
    r = run_bash(text, ws)
    return ws, configs / "nasdaq100.yaml", lineno, r


def test_release_block_runs(release_dir):
    ws, _, lineno, r = release_dir
    assert r.returncode == 0, f"README.md:{lineno} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert (ws / "releases" / "nasdaq100" / "LATEST").read_text().strip() == "2024-05-17"


def test_release_layout_matches(release_dir):
    ws, _, _, r = release_dir
    assert r.returncode == 0
    rel = ws / "releases" / "nasdaq100" / "2024-05-17"
    for p in ("data/part-00000.parquet", "report/report.html", "report/metrics.json", "report/gate.json",
              "manifest.json", "_SUCCESS"):
        assert (rel / p).is_file(), p


@pytest.fixture(scope="module")
def quarantined(release_dir):
    """A second date whose gate fails, as the demo's does (``exit 3``): version 2, ``gate=failed``,
    alias ``candidate``; ``champion`` stays on version 1. (The fast variant of
    test_pipeline.py::test_gate_failure_quarantines_keeps_champion_and_exits_3, marked slow.)"""
    ws, config, _, r = release_dir
    assert r.returncode == 0
    cfg = yaml.safe_load(config.read_text())
    cfg["gate"] = FAIL_GATE
    config.with_name("failing.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    failed = run_bash("synth-pipeline release synth_pipeline/configs/failing.yaml --date 2024-05-18", ws)
    assert failed.returncode == 3, f"{failed.stdout[-3000:]}\n{failed.stderr[-3000:]}"
    return ws


def test_gate_failure_quarantines_and_keeps_the_champion(quarantined):
    from mlflow import MlflowClient

    root = quarantined / "releases" / "nasdaq100"
    q = root / "_quarantine" / "2024-05-18"
    files = sorted(p.relative_to(q).as_posix() for p in q.rglob("*") if p.is_file())
    assert "manifest.json" in files and "report/report.html" in files
    assert not any(f.startswith("data/") or f.endswith(".parquet") for f in files)  # no data
    assert not (root / "2024-05-18").exists() and (root / "LATEST").read_text().strip() == "2024-05-17"
    uri = f"sqlite:///{quarantined / '.demo' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = "nasdaq100-synthesizer"
    champion, candidate = (client.get_model_version_by_alias(name, a) for a in ("champion", "candidate"))
    assert str(champion.version) == "1" and champion.tags["gate"] == "passed"
    assert str(candidate.version) == "2" and candidate.tags["gate"] == "failed"


def test_mlflow_blocks_run(quarantined, monkeypatch, mlflow_globals, capsys, one_thread):
    from synth_pipeline.errors import UngatedModelError

    monkeypatch.chdir(quarantined)  # the README's relative sqlite:///.demo/mlflow.db
    ns: dict = {}
    lineno, text = block("champion")
    *_, predicted = exec_block(text, lineno, ns)
    assert {"request_id", "Symbol", "date", "Close"} <= set(predicted.columns)
    assert predicted["Symbol"].nunique() == 100

    lineno, text = block("ungated")
    exec_block(text, lineno, ns)  # same session: the names of the block above are still bound
    assert "gate=failed" in capsys.readouterr().out  # refused (the except branch ran)
    assert ns["m"].predict(pd.DataFrame({"n_sequences": [3], "seed": [1]}))["Symbol"].nunique() == 3
    assert issubclass(ns["UngatedModelError"], UngatedModelError)


def test_privacy_block_is_a_valid_model_config():
    """The differential-privacy snippet is a dataset config's ``model`` section: it parses into a
    ModelConfig whose privacy has the defaults the comment names (a DP fit runs in tests/test_dp.py)."""
    from synth_pipeline.config import ModelConfig
    from synth_pipeline.dp import PrivacyConfig

    _, text = block("privacy")
    model = yaml.safe_load(text)["model"]
    cfg = ModelConfig.from_preset(model["preset"], model["overrides"])
    p = PrivacyConfig.from_dict(cfg.privacy)
    assert (p.epsilon, p.delta, p.max_grad_norm, p.noise_multiplier, p.accountant) == (3, 1e-5, 1.0, None, "rdp")
