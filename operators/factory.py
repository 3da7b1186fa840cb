"""The release chain as a TaskGroup to drop into any DAG, and one nightly DAG per dataset config.

``synthetic_release(config, upstream=load)`` puts ingest -> validate -> train -> generate ->
evaluate -> publish after an existing task; ``release_dag(config)`` builds the standalone
``synthetic_release_<dataset>`` DAG; ``release_dags(folder)`` builds one per YAML in a folder and
turns every broken config into one DagBag import error naming that config, while the other
datasets' DAGs still load. The publish task has the dataset's :func:`release_asset` as outlet,
so downstream DAGs can ``schedule=[release_asset("nasdaq100")]``.

Parse time stays cheap: configs are checked structurally here (keys, name, model options, the
``airflow`` section) without pandas, torch, MLflow or GX; sources and schema are loaded by the
ingest task, because a source may not exist until an upstream task writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, TaskGroup
from synth_pipeline.operators.stages import (
    SyntheticEvaluateOperator,
    SyntheticGenerateOperator,
    SyntheticIngestOperator,
    SyntheticPublishOperator,
    SyntheticTrainOperator,
    SyntheticValidateOperator,
)

DEFAULT_SCHEDULE = "@daily"
AUX_SUFFIXES = (".schema.yaml", ".schema.yml", ".gate.yaml", ".gate.yml")  # beside configs, not configs
DEFAULT_START = pendulum.datetime(2024, 1, 1, tz="UTC")


@dataclass(frozen=True)
class DagSettings:
    """What DAG construction needs from a dataset config (read without loading any data)."""

    path: Path
    name: str
    schedule: Any = DEFAULT_SCHEDULE
    queue: str | None = None
    pool: str | None = None


def read_settings(config: str | Path) -> DagSettings:
    """Structural check of a dataset config YAML and its ``airflow`` section (ConfigError naming
    the file and key on any problem)."""
    from synth_pipeline.dataset_config import check_name, check_structure
    from synth_pipeline.errors import ConfigError
    from synth_pipeline.io_utils import read_yaml

    path = Path(config).expanduser().resolve()
    where = f"config '{path}': "
    data = read_yaml(path, "config file", ConfigError)
    check_structure(data, where)
    name = data.get("name")
    if name is None and isinstance(data["schema"], str):  # the schema file's name, as the loader does
        schema_file = (path.parent / data["schema"]).resolve()
        name = (read_yaml(schema_file, "schema file", ConfigError) or {}).get("name")
    elif name is None and isinstance(data["schema"], dict):
        name = data["schema"].get("name")
    if name is None:
        raise ConfigError(f"{where}no dataset name: set 'name' (it names the DAG, releases and the model)")
    check_name(name)
    af = data.get("airflow") or {}
    for key in ("queue", "pool"):
        if af.get(key) is not None and not isinstance(af[key], str):
            raise ConfigError(f"{where}airflow.{key} must be a string or null, got {af[key]!r}")
    return DagSettings(path=path, name=name, schedule=af.get("schedule", DEFAULT_SCHEDULE),
                       queue=af.get("queue"), pool=af.get("pool"))


def release_asset(dataset: str) -> Asset:
    """The Asset a dataset's publish task updates: schedule downstream DAGs on it."""
    return Asset(f"synthdata://releases/{dataset}", extra={"dataset": dataset})


def _chain(s: DagSettings, *, logical_date: str, release_root: str | None, tracking_uri: str | None,
           queue: str | None, pool: str | None, executor_config: dict | None, overwrite: bool) -> tuple[Any, Any]:
    """Create the six tasks in the current DAG / TaskGroup context; return (first, last)."""
    common = dict(config=str(s.path), logical_date=logical_date, release_root=release_root,
                  tracking_uri=tracking_uri)
    routing: dict[str, Any] = {"queue": queue or s.queue, "pool": pool or s.pool, "executor_config": executor_config}
    routing = {k: v for k, v in routing.items() if v}
    ingest = SyntheticIngestOperator(task_id="ingest", overwrite=overwrite, **common)
    validate = SyntheticValidateOperator(task_id="validate", **common)
    train = SyntheticTrainOperator(task_id="train", **common, **routing)
    generate = SyntheticGenerateOperator(task_id="generate", **common, **routing)
    evaluate = SyntheticEvaluateOperator(task_id="evaluate", **common)
    publish = SyntheticPublishOperator(task_id="publish", outlets=[release_asset(s.name)], **common)
    ingest >> validate >> train >> generate >> evaluate >> publish
    return ingest, publish


def synthetic_release(
    config: str | Path,
    *,
    upstream: Any = None,
    group_id: str | None = None,
    logical_date: str = "{{ ds }}",
    release_root: str | None = None,
    tracking_uri: str | None = None,
    queue: str | None = None,
    pool: str | None = None,
    executor_config: dict | None = None,
    overwrite: bool = False,
) -> TaskGroup:
    """The whole release chain as a TaskGroup in the current DAG, after ``upstream`` if given.
    ``queue`` / ``pool`` / ``executor_config`` route train and generate (default: the config's
    ``airflow.queue`` / ``airflow.pool``)."""
    s = read_settings(config)
    with TaskGroup(group_id=group_id or f"synthetic_release_{s.name}") as tg:
        _chain(s, logical_date=logical_date, release_root=release_root, tracking_uri=tracking_uri, queue=queue,
               pool=pool, executor_config=executor_config, overwrite=overwrite)
    if upstream is not None:
        upstream >> tg
    return tg


def release_dag(config: str | Path, *, start_date: Any = DEFAULT_START, release_root: str | None = None,
                tracking_uri: str | None = None, executor_config: dict | None = None, **dag_kwargs: Any) -> DAG:
    """The standalone ``synthetic_release_<dataset>`` DAG: the config's schedule (nightly by
    default), no catchup, one active run at a time."""
    s = read_settings(config)
    kwargs = dict(dag_id=f"synthetic_release_{s.name}", schedule=s.schedule, start_date=start_date, catchup=False,
                  max_active_runs=1, tags=["synthetic-release", s.name],
                  doc_md=f"Synthetic release of **{s.name}** from `{s.path}` (synth-pipeline). The audit report "
                         f"of every run is in MLflow (run artifact `report/report.html`).")
    kwargs.update(dag_kwargs)
    with DAG(**kwargs) as dag:
        _chain(s, logical_date="{{ ds }}", release_root=release_root, tracking_uri=tracking_uri, queue=None,
               pool=None, executor_config=executor_config, overwrite=False)
    return dag


class BrokenConfigsDag(DAG):
    """Stands in for dataset configs that failed to load: Airflow's DagBag validates every DAG it
    collects, and this one's validation raises the configs' errors, which the DagBag records as
    one import error for the DAG file while bagging the other DAGs of the file normally."""

    def validate(self) -> None:  # noqa: D102
        from synth_pipeline.errors import ConfigError

        raise ConfigError(self.description or "broken dataset config")


def release_dags(folder: str | Path, **kwargs: Any) -> dict[str, DAG]:
    """One release DAG per ``*.yaml`` / ``*.yml`` in ``folder`` (sorted), keyed by dag_id; files named
    ``*.schema.yaml`` / ``*.gate.yaml`` are the configs' schema and gate files, not configs. A config
    that fails its check contributes no DAG; all failures surface as one import error (one line
    per config) through a :class:`BrokenConfigsDag` under the key ``synthetic_release_config_errors``."""
    from synth_pipeline.errors import SynthPipelineError

    dags: dict[str, DAG] = {}
    errors: list[str] = []
    paths = sorted(p for p in [*Path(folder).glob("*.yaml"), *Path(folder).glob("*.yml")]
                   if not p.name.endswith(AUX_SUFFIXES))
    for path in paths:
        try:
            dag = release_dag(path, **kwargs)
        except SynthPipelineError as e:
            errors.append(f"{path.name}: {e}")
            continue
        if dag.dag_id in dags:
            errors.append(f"{path.name}: dataset name of dag '{dag.dag_id}' is already used by another config")
            continue
        dags[dag.dag_id] = dag
    if errors:
        dags["synthetic_release_config_errors"] = BrokenConfigsDag(
            dag_id="synthetic_release_config_errors", schedule=None, start_date=DEFAULT_START,
            description=f"{len(errors)} dataset config(s) in {folder} could not be loaded:\n" + "\n".join(errors))
    return dags
