"""Airflow 3 integration against a real metadata DB (SQLite, migrated in a temp AIRFLOW_HOME set by
conftest.py) and a real MLflow server: the provider entry, the DagBag of dags/ (no import errors,
parse time, nothing heavy imported), broken-config isolation, full releases through dag.test(),
a failing gate stopping publish, the Asset event, and the example ETL DAG's TaskGroup."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pendulum
import pytest
import yaml
from _release_setup import (
    FAIL_GATE,
    PASS_GATE,
    TINY,
    assert_passed_every_default_check,
    assert_refused_as_memorization,
    memorizing_config,
    pollution_config,
    write_config,
)

from synth_pipeline import release as rel

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
DATE = pendulum.datetime(2024, 5, 17, tz="UTC")


@pytest.fixture(scope="module")
def airflow_db():
    """A migrated metadata DB in the temporary AIRFLOW_HOME (a few seconds)."""
    from airflow.utils import db

    db.initdb()
    return True


@pytest.fixture(scope="module", autouse=True)
def _restore_dags_folder():
    """The runs below point Airflow's DAG folder at their own folders, and in-process task runs
    leave AIRFLOW_CTX_* variables behind; put both back afterwards."""
    import os

    from airflow import settings
    from airflow.configuration import conf

    before = conf.get("core", "dags_folder"), settings.DAGS_FOLDER, dict(os.environ)
    yield
    conf.set("core", "dags_folder", before[0])
    settings.DAGS_FOLDER = before[1]
    os.environ.clear()
    os.environ.update(before[2])


def _states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def _xcom(dr, task_id: str):
    ti = next(t for t in dr.get_task_instances() if t.task_id == task_id)
    return ti.xcom_pull(task_ids=task_id)


# ------------------------------------------------------------------------------------------------
# provider entry point and parsing
# ------------------------------------------------------------------------------------------------
def test_provider_entry_point_returns_what_airflow_requires():
    eps = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("synth_pipeline")]
    assert len(eps) == 1, "the distribution must declare exactly one apache_airflow_provider entry"
    info = eps[0].load()()
    assert info["package-name"] == "synth-pipeline"  # must equal the canonical dist name
    assert info["name"] and info["description"] and not info["description"].endswith(" ")
    from synth_pipeline import __version__

    assert info["versions"] == [__version__]
    json.dumps(info)  # plain data: Airflow validates it against a JSON schema
    assert "airflow" not in eps[0].module  # reading it must not import Airflow
    # what every Airflow command does with it: schema validation, name check against the dist
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    pm.initialize_providers_list()
    assert pm.providers["synth-pipeline"].data["package-name"] == "synth-pipeline"


def test_dagbag_has_no_import_errors_and_parses_each_file_under_a_second(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors, bag.import_errors
    assert set(bag.dags) == {"synthetic_release_nasdaq100", "etl_prices", "synthetic_release_after_etl"}
    stats = {Path(st.file).name: st for st in bag.dagbag_stats}
    assert set(stats) == {"synthetic_releases.py", "synthetic_release_config_errors.py",
                          "etl_with_synthetic_release.py"}
    for name, stat in sorted(stats.items()):
        print(f"parse {name}: {stat.duration.total_seconds() * 1000:.1f} ms ({stat.dag_num} dags, "
              f"{stat.task_num} tasks)")
        assert stat.duration.total_seconds() < 1.0, stat
    dag = bag.dags["synthetic_release_nasdaq100"]
    assert dag.catchup is False and dag.max_active_runs == 1
    assert [t.task_id for t in dag.topological_sort()] == ["ingest", "validate", "train", "plan_generation",
                                                           "generate_shard", "generate", "prepare_audit",
                                                           "audit_shard", "evaluate", "publish"]
    # generate fans out: one mapped task instance per shard, expanded over plan_generation's XCom
    mapped = dag.get_task("generate_shard")
    assert type(mapped).__name__ == "MappedOperator" and set(mapped.expand_input.value) == {"shard"}
    assert mapped.upstream_task_ids == {"plan_generation"} and mapped.downstream_task_ids == {"generate"}
    # so does the audit, over the same shards; evaluate merges
    audit = dag.get_task("audit_shard")
    assert type(audit).__name__ == "MappedOperator" and set(audit.expand_input.value) == {"shard"}
    assert audit.upstream_task_ids == {"plan_generation", "prepare_audit"}
    assert audit.downstream_task_ids == {"evaluate"}
    # retries with backoff on the I/O stages only
    assert dag.get_task("ingest").retries >= 1 and dag.get_task("ingest").retry_exponential_backoff
    assert dag.get_task("publish").retries >= 1
    assert all(dag.get_task(t).retries == 0 for t in ("validate", "train", "generate", "evaluate"))
    assert [a.uri for a in dag.get_task("publish").outlets] == ["synthdata://releases/nasdaq100"]
    etl = bag.dags["etl_prices"]
    assert etl.get_task("synthetic_release_prices.ingest").upstream_task_ids == {"load_prices"}
    assert etl.get_task("synthetic_release_prices.publish").downstream_task_ids == set()


def test_train_and_generate_route_to_the_configured_queue_pool_and_executor_config(tmp_path):
    """Only the compute-heavy stages move to GPU workers; the config's airflow section is the default
    and explicit arguments override it."""
    from airflow.sdk import DAG
    from synth_pipeline.operators import release_dag, synthetic_release

    cfg = yaml.safe_load((DAGS / "configs" / "nasdaq100.yaml").read_text())
    cfg["schema"] = str(REPO / "synth_pipeline" / "configs" / "nasdaq100.schema.yaml")
    cfg["airflow"] = {"schedule": "0 2 * * *", "queue": "gpu", "pool": "gpus"}
    path = tmp_path / "routed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    pod = {"pod_override": {"spec": "a V1Pod in a real deployment"}}
    with DAG(dag_id="routing", schedule=None, start_date=DATE) as dag:
        synthetic_release(path, group_id="cfg_default")
        synthetic_release(path, group_id="explicit", queue="gpu-large", pool="big", executor_config=pod)
    default_queue = dag.get_task("cfg_default.ingest").queue
    assert default_queue != "gpu"
    for group, queue, pool, ec in (("cfg_default", "gpu", "gpus", {}), ("explicit", "gpu-large", "big", pod)):
        for t in ("train", "generate_shard", "generate", "audit_shard"):
            task = dag.get_task(f"{group}.{t}")
            assert (task.queue, task.pool, task.executor_config) == (queue, pool, ec), (group, t)
        for t in ("ingest", "validate", "prepare_audit", "evaluate", "publish"):
            task = dag.get_task(f"{group}.{t}")
            assert task.queue == default_queue and task.pool == "default_pool" and not task.executor_config
    nightly = release_dag(path)
    assert nightly.dag_id == "synthetic_release_nasdaq100" and nightly.get_task("train").queue == "gpu"
    assert nightly.timetable.expression == "0 2 * * *" and nightly.schedule == "0 2 * * *"


def test_dag_files_import_nothing_heavy_at_parse_time(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        os.environ["AIRFLOW_HOME"] = {str(tmp_path)!r}
        os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(DAGS)!r})
        assert not bag.import_errors, bag.import_errors
        heavy = [m for m in ("torch", "mlflow", "great_expectations", "pandas", "sklearn") if m in sys.modules]
        print("HEAVY", ",".join(heavy))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY"))
    assert line.strip() == "HEAVY", f"DAG parsing imported heavy modules: {line}"


def test_broken_configs_are_one_import_error_and_the_other_dags_stay_scheduled(tmp_path, airflow_db):
    """Each broken config (invalid YAML, unknown key, bad schedule, duplicate name) is named in the
    import error of synthetic_release_config_errors.py; the healthy config's DAG loads and, once
    written to the metadata DB as the DAG processor does, is neither stale nor flagged."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.models.dag import DagModel
    from airflow.models.errors import ParseImportError
    from airflow.utils.session import create_session
    from sqlalchemy import select

    folder = tmp_path / "dags"
    (folder / "configs").mkdir(parents=True)
    for f in ("synthetic_releases.py", "synthetic_release_config_errors.py"):
        shutil.copy(DAGS / f, folder)
    good = yaml.safe_load((DAGS / "configs" / "nasdaq100.yaml").read_text())
    good["name"] = "iso_good"
    good["sources"]["events"] = str(REPO / "synth_pipeline" / "data" / "nasdaq100_2019.csv")
    good["schema"] = str(REPO / "synth_pipeline" / "configs" / "nasdaq100.schema.yaml")
    (folder / "configs" / "good.yaml").write_text(yaml.safe_dump(good))
    (folder / "configs" / "typo.yaml").write_text(yaml.safe_dump({**good, "name": "iso_typo", "modle": {}}))
    (folder / "configs" / "broken.yaml").write_text("name: [unclosed\n")
    (folder / "configs" / "schedule.yaml").write_text(yaml.safe_dump(
        {**good, "name": "iso_schedule", "airflow": {"schedule": "every night"}}))
    (folder / "configs" / "same_name.yaml").write_text(yaml.safe_dump(good))

    bag = BundleDagBag(dag_folder=str(folder), bundle_path=folder)
    assert set(bag.dags) == {"synthetic_release_iso_good"}
    assert list(bag.import_errors) == ["synthetic_release_config_errors.py"]
    msg = bag.import_errors["synthetic_release_config_errors.py"]
    last = msg[msg.index("ConfigError: 4 dataset config(s)"):]
    lines = {ln.split(":")[0]: ln for ln in last.splitlines()[1:] if ln.strip() and not ln.startswith(" ")}
    assert set(lines) == {"broken.yaml", "same_name.yaml", "schedule.yaml", "typo.yaml"}, last
    assert "not valid YAML" in lines["broken.yaml"]
    assert "unknown key 'modle'" in lines["typo.yaml"] and "valid keys" in lines["typo.yaml"]
    assert "airflow.schedule 'every night' is not a valid schedule" in lines["schedule.yaml"]
    assert "already used by good.yaml" in lines["same_name.yaml"]
    assert "good.yaml:" not in last.replace("used by good.yaml", "")

    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(bag, "dags-folder", None)
    with create_session() as session:
        dm = session.scalar(select(DagModel).where(DagModel.dag_id == "synthetic_release_iso_good"))
        assert dm is not None and not dm.is_stale and not dm.has_import_errors
        errors = session.scalars(select(ParseImportError).where(ParseImportError.bundle_name == "dags-folder")).all()
        assert [e.filename for e in errors] == ["synthetic_release_config_errors.py"]


# ------------------------------------------------------------------------------------------------
# runs through dag.test()
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def af_workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("airflow_releases")


def _bag(folder: Path):
    """Parse ``folder`` as Airflow's configured DAG folder: dag.test() serializes the DAGs of the
    configured bundle before it runs one, as the scheduler would."""
    from airflow import settings
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag

    conf.set("core", "dags_folder", str(folder))
    settings.DAGS_FOLDER = str(folder)  # what the default local bundle reads
    bag = DagBag(dag_folder=str(folder))
    assert not bag.import_errors, bag.import_errors
    return bag


def _dag(workspace: Path, server: str, gate: dict, name: str, **extra: Any):
    """The shipped nightly factory file in a DAG folder of its own with one release config (the
    packaged nasdaq100 panel)."""
    return _factory_dag(workspace, name, lambda configs: write_config(
        configs, server, gate, name=f"{name}.yaml", dataset=name, **extra))


def _pollution_dag(workspace: Path, server: str, name: str, **kw: Any):
    """The same with the shipped pollution config (``pollution_config``: default gate unless given)."""
    return _factory_dag(workspace, name, lambda configs: pollution_config(
        configs, server, name, file=f"{name}.yaml", **kw))


def _factory_dag(workspace: Path, name: str, write: Callable[[Path], Path]):
    folder = workspace / name / "dags"
    (folder / "configs").mkdir(parents=True)
    shutil.copy(DAGS / "synthetic_releases.py", folder)
    write(folder / "configs")
    return _bag(folder).dags[f"synthetic_release_{name}"], folder / "configs" / "releases" / name


@pytest.fixture(scope="module")
def passed_run(airflow_db, mlflow_server, af_workspace, one_thread):
    dag, root = _dag(af_workspace, mlflow_server, PASS_GATE, "af_pass",
                     generate={"n_sequences": 60, "shards": 3})  # three mapped generate_shard instances
    dr = dag.test(logical_date=DATE)
    return dag, dr, root


def test_dag_test_runs_a_full_release_and_logs_it_in_mlflow(passed_run, mlflow_server):
    from mlflow import MlflowClient

    dag, dr, root = passed_run
    assert str(dr.state) == "success", _states(dr)
    assert set(_states(dr).values()) == {"success"}
    release = root / "2024-05-17"
    assert (release / rel.SUCCESS).exists() and rel.verify_release(release)
    assert rel.read_latest_id(root) == "2024-05-17"
    shard_tis = [ti for ti in dr.get_task_instances() if ti.task_id == "generate_shard"]
    assert sorted(ti.map_index for ti in shard_tis) == [0, 1, 2]
    audit_tis = [ti for ti in dr.get_task_instances() if ti.task_id == "audit_shard"]  # the audit, sharded alike
    assert sorted(ti.map_index for ti in audit_tis) == [0, 1, 2]
    parts = [f for f in rel.verify_release(release)["files"] if f["path"].startswith("data/")]
    assert [f["path"] for f in parts] == [f"data/part-{i:05d}.parquet" for i in range(3)]
    assert sum(f["rows"] for f in parts) == len(rel.read_release(release)) > 0
    assert not (root.parent / ".staging" / "af_pass" / "2024-05-17").exists()  # real data removed
    out = _xcom(dr, "publish")
    assert out["status"] == "published" and out["passed"] is True and out["release_path"] == str(release)
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    run = client.get_run(out["run_id"])
    assert run.data.tags["gate"] == "passed" and run.info.status == "FINISHED"
    assert run.data.tags["airflow.dag_id"] == "synthetic_release_af_pass"
    assert run.data.tags["airflow.task_id"] == "train"
    arts = {a.path for a in client.list_artifacts(out["run_id"], "report")}
    assert "report/report.html" in arts
    assert client.get_model_version_by_alias("af_pass-synthesizer", "champion").version == out["model_version"]


def test_template_fields_render_the_logical_date(passed_run):
    from airflow.models.renderedtifields import RenderedTaskInstanceFields

    dag, dr, _ = passed_run
    assert "{{ ds" in dag.get_task("ingest").logical_date
    for ti in dr.get_task_instances():
        rendered = RenderedTaskInstanceFields.get_templated_fields(ti)
        assert rendered["logical_date"] == "2024-05-17", (ti.task_id, rendered)
        assert rendered["config"].endswith("af_pass.yaml") and "{{" not in json.dumps(rendered)
    for task_id in ("ingest", "validate", "train", "generate", "evaluate"):
        assert _xcom(dr, task_id)["release_id"] == "2024-05-17", task_id


def test_publish_emits_the_asset_event(passed_run):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    _, dr, _ = passed_run
    with create_session() as session:
        asset = session.scalar(select(AssetModel).where(AssetModel.uri == "synthdata://releases/af_pass"))
        assert asset is not None and asset.extra == {"dataset": "af_pass"}
        events = session.scalars(select(AssetEvent).where(AssetEvent.asset_id == asset.id)).all()
        assert [(e.source_dag_id, e.source_task_id, e.source_run_id) for e in events] == [
            ("synthetic_release_af_pass", "publish", dr.run_id)]


def test_impossible_gate_fails_evaluate_and_never_publishes(airflow_db, mlflow_server, af_workspace, one_thread,
                                                           capfd):
    dag, root = _dag(af_workspace, mlflow_server, FAIL_GATE, "af_fail")
    dr = dag.test(logical_date=DATE)
    logged = capfd.readouterr().out  # dag.test logs the task's exception instead of raising it
    failure = next(ln for ln in logged.splitlines() if ln.startswith("airflow.sdk.exceptions.AirflowFailException"))
    assert "release gate failed for af_fail 2024-05-17; failed checks: evidence: insufficient evidence" in failure
    assert "Report in MLflow: mlflow-artifacts:/" in failure and "report/report.html" in failure
    states = _states(dr)
    assert str(dr.state) == "failed"
    assert states["evaluate"] == "failed" and states["publish"] == "upstream_failed"
    assert all(states[t] == "success" for t in ("ingest", "validate", "train", "generate"))
    q = root / rel.QUARANTINE / "2024-05-17"
    manifest = json.loads((q / rel.MANIFEST).read_text())
    assert manifest["status"] == "quarantined" and manifest["gate"]["passed"] is False
    assert not (root / "2024-05-17").exists() and rel.read_latest_id(root) is None
    assert not (root.parent / ".staging" / "af_fail" / "2024-05-17").exists()


@pytest.mark.slow  # a real fast-preset fit on 1,278 windows (~5 min on 2 cores); fast variants: the two dag.test()
# releases above (the same tasks with a tiny model) and test_pipeline's keyless pollution release
def test_dag_publishes_a_model_that_passes_the_default_gate(airflow_db, mlflow_server, af_workspace, one_thread):
    """Issue 15 item 4 through Airflow: the shipped pollution config as it is (fast preset, ``gate: {}``)
    runs task by task through the nightly factory's DAG and publishes; every default check had a
    threshold and passed."""
    dag, root = _pollution_dag(af_workspace, mlflow_server, "af_default_gate")
    dr = dag.test(logical_date=DATE)
    assert str(dr.state) == "success", _states(dr)
    out = _xcom(dr, "publish")
    assert out["status"] == "published" and out["passed"] is True
    assert_passed_every_default_check(json.loads((root / "2024-05-17" / rel.MANIFEST).read_text()))


@pytest.mark.slow  # an over-trained fit on 357 windows (~3-5 min on 2 cores); fast variant:
# test_impossible_gate_fails_evaluate_and_never_publishes (the same failure path)
def test_dag_quarantines_a_memorizing_model_as_memorization(airflow_db, mlflow_server, af_workspace, one_thread,
                                                          capfd):
    """Issue 15 item 4 through Airflow: the memorizing model of test_pipeline fails evaluate with the
    memorization verdict, publish never runs, and the quarantine record says why."""
    dag, root = _factory_dag(af_workspace, "af_memorizing", lambda configs: memorizing_config(
        configs, mlflow_server, "af_memorizing", file="af_memorizing.yaml"))
    dr = dag.test(logical_date=DATE)
    logged = capfd.readouterr().out
    failure = next(ln for ln in logged.splitlines() if ln.startswith("airflow.sdk.exceptions.AirflowFailException"))
    assert "release gate failed for af_memorizing 2024-05-17; failed checks: " in failure
    assert "(memorization)" in failure and "membership can be inferred" in failure
    states = _states(dr)
    assert states["evaluate"] == "failed" and states["publish"] == "upstream_failed"
    assert_refused_as_memorization(json.loads((root / rel.QUARANTINE / "2024-05-17" / rel.MANIFEST).read_text()))
    assert not (root / "2024-05-17").exists() and rel.read_latest_id(root) is None


@pytest.mark.slow  # two releases (~2 min); fast variants: test_dag_test_runs_a_full_release_and_logs_it_in_mlflow
# (the same operators through dag.test) and the DagBag tests, which load this example file
def test_the_example_etl_dags_run_both_integrations_end_to_end(airflow_db, mlflow_server, tmp_path, monkeypatch,
                                                                one_thread):
    """The shipped example file itself, loaded from a copy whose release configs have a tiny budget:
    (a) the TaskGroup after the load task; (b) the asset-scheduled DAG, run as Airflow 3 runs it on
    an asset event, without a logical date (the release is dated by run_after)."""
    folder = tmp_path / "dags"
    (folder / "configs" / "etl").mkdir(parents=True)
    shutil.copy(DAGS / "etl_with_synthetic_release.py", folder)
    for name in ("prices.yaml", "prices_on_asset.yaml"):
        cfg = yaml.safe_load((DAGS / "configs" / "etl" / name).read_text())
        cfg["schema"] = str(REPO / "synth_pipeline" / "configs" / "nasdaq100.schema.yaml")
        cfg["model"]["overrides"] = TINY
        cfg["gate"] = PASS_GATE
        cfg["generate"] = {"n_sequences": 40}
        (folder / "configs" / "etl" / name).write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("SYNTH_ETL_LANDING", str(tmp_path / "landing"))
    monkeypatch.setenv("SYNTH_PIPELINE_RELEASE_ROOT", str(tmp_path / "releases"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    bag = _bag(folder)
    dr = bag.dags["etl_prices"].test(logical_date=DATE)
    states = _states(dr)
    assert str(dr.state) == "success", states
    assert states["load_prices"] == "success" and states["synthetic_release_prices.publish"] == "success"
    assert (tmp_path / "releases" / "prices" / "2024-05-17" / rel.SUCCESS).exists()
    # (b) the separate release DAG is scheduled on the asset the load task updates
    load_outlets = [a.uri for a in bag.dags["etl_prices"].get_task("load_prices").outlets]
    downstream = bag.dags["synthetic_release_after_etl"]
    assert [a.uri for a in downstream.timetable.asset_condition.objects] == load_outlets
    dr = downstream.test(logical_date=None, run_after=DATE.add(hours=3))
    assert dr.logical_date is None
    assert str(dr.state) == "success", _states(dr)
    assert (tmp_path / "releases" / "prices_on_asset" / "2024-05-17" / rel.SUCCESS).exists()
