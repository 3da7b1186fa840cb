"""The release chain as a TaskGroup to drop into any DAG, and one nightly DAG per dataset config.

``synthetic_release(config, upstream=load)`` puts ingest -> validate -> train -> generate (mapped
shards) -> prepare_audit -> audit_shard (mapped over the same shards) -> evaluate -> publish after
an existing task; ``release_dag(config)`` builds the standalone
``synthetic_release_<dataset>`` DAG; ``release_dags(folder)`` builds one per healthy YAML config in
a folder, and ``check_configs(folder)`` raises one error naming each broken config. The two are
called from two DAG files: Airflow marks *every* DAG of a file that has an import error as stale
(no longer scheduled), so a broken config must not be reported from the file that defines the
other datasets' DAGs. The publish task has the dataset's :func:`release_asset` as outlet, so
downstream DAGs can ``schedule=[release_asset("nasdaq100")]``.

Parse time stays cheap: configs are checked structurally here (keys, name, model options, the
``airflow`` section) without pandas, torch, MLflow or GX; sources and schema are loaded by the
ingest task, because a source may not exist until an upstream task writes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, TaskGroup
from airflow.sdk.exceptions import AirflowTimetableInvalid
from synth_pipeline.operators.stages import (
    DEFAULT_LOGICAL_DATE,
    SyntheticAuditShardOperator,
    SyntheticEvaluateOperator,
    SyntheticGenerateOperator,
    SyntheticGenerateShardOperator,
    SyntheticIngestOperator,
    SyntheticPlanGenerationOperator,
    SyntheticPrepareAuditOperator,
    SyntheticPublishOperator,
    SyntheticTrainOperator,
    SyntheticValidateOperator,
)

DEFAULT_SCHEDULE = "@daily"
AUX_SUFFIXES = (".schema.yaml", ".schema.yml", ".gate.yaml", ".gate.yml")  # beside configs, not configs
DEFAULT_START = pendulum.datetime(2024, 1, 1, tz="UTC")
log = logging.getLogger(__name__)


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
    schedule = af.get("schedule", DEFAULT_SCHEDULE)
    _check_schedule(schedule, where)
    return DagSettings(path=path, name=name, schedule=schedule, queue=af.get("queue"), pool=af.get("pool"))


def _check_schedule(schedule: Any, where: str) -> None:
    """Airflow would reject a bad cron string only when it validates the DAG (an import error for
    the whole DAG file); check it here so it is this config's error, naming the key."""
    from synth_pipeline.errors import ConfigError

    hint = "use a cron expression ('0 2 * * *'), a preset ('@daily') or null (manual runs only)"
    if schedule is not None and not isinstance(schedule, str):
        raise ConfigError(f"{where}airflow.schedule must be a string or null, got {schedule!r}; {hint}")
    try:  # a throwaway DAG outside any `with` block: not registered, not collected by the DagBag
        DAG(dag_id="schedule_check", schedule=schedule, start_date=DEFAULT_START).timetable.validate()
    except (AirflowTimetableInvalid, ValueError) as e:
        raise ConfigError(f"{where}airflow.schedule {schedule!r} is not a valid schedule ({e}); {hint}") from None


def release_asset(dataset: str) -> Asset:
    """The Asset a dataset's publish task updates: schedule downstream DAGs on it."""
    return Asset(f"synthdata://releases/{dataset}", extra={"dataset": dataset})


def _chain(s: DagSettings, *, logical_date: str, release_root: str | None, tracking_uri: str | None,
           queue: str | None, pool: str | None, executor_config: dict | None, overwrite: bool) -> tuple[Any, Any]:
    """Create the tasks (generate and the audit fanned out over mapped shards) in the current DAG / TaskGroup
    context; return (first, last)."""
    common = dict(config=str(s.path), logical_date=logical_date, release_root=release_root,
                  tracking_uri=tracking_uri)
    routing: dict[str, Any] = {"queue": queue or s.queue, "pool": pool or s.pool, "executor_config": executor_config}
    routing = {k: v for k, v in routing.items() if v}
    ingest = SyntheticIngestOperator(task_id="ingest", overwrite=overwrite, **common)
    validate = SyntheticValidateOperator(task_id="validate", **common)
    train = SyntheticTrainOperator(task_id="train", **common, **routing)
    plan = SyntheticPlanGenerationOperator(task_id="plan_generation", **common)
    shards = SyntheticGenerateShardOperator.partial(task_id="generate_shard", **common, **routing).expand(
        shard=plan.output)  # one mapped task instance per shard (Airflow's executors fan out)
    generate = SyntheticGenerateOperator(task_id="generate", **common, **routing)
    prepare = SyntheticPrepareAuditOperator(task_id="prepare_audit", **common)
    audits = SyntheticAuditShardOperator.partial(task_id="audit_shard", **common, **routing).expand(
        shard=plan.output)  # the audit fans out over the same shards; evaluate merges
    evaluate = SyntheticEvaluateOperator(task_id="evaluate", **common)
    publish = SyntheticPublishOperator(task_id="publish", outlets=[release_asset(s.name)], **common)
    ingest >> validate >> train >> plan >> shards >> generate >> prepare >> audits >> evaluate >> publish
    return ingest, publish


def synthetic_release(
    config: str | Path,
    *,
    upstream: Any = None,
    group_id: str | None = None,
    logical_date: str = DEFAULT_LOGICAL_DATE,
    release_root: str | None = None,
    tracking_uri: str | None = None,
    queue: str | None = None,
    pool: str | None = None,
    executor_config: dict | None = None,
    overwrite: bool = False,
) -> TaskGroup:
    """The whole release chain as a TaskGroup in the current DAG, after ``upstream`` if given.
    ``queue`` / ``pool`` / ``executor_config`` route train, generate and the audit shards (default: the config's
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
    return _release_dag(read_settings(config), start_date=start_date, release_root=release_root,
                        tracking_uri=tracking_uri, executor_config=executor_config, **dag_kwargs)


def _release_dag(s: DagSettings, *, start_date: Any = DEFAULT_START, release_root: str | None = None,
                 tracking_uri: str | None = None, executor_config: dict | None = None, **dag_kwargs: Any) -> DAG:
    kwargs = dict(dag_id=f"synthetic_release_{s.name}", schedule=s.schedule, start_date=start_date, catchup=False,
                  max_active_runs=1, tags=["synthetic-release", s.name],
                  doc_md=f"Synthetic release of **{s.name}** from `{s.path}` (synth-pipeline). The audit report "
                         f"of every run is in MLflow (run artifact `report/report.html`).")
    kwargs.update(dag_kwargs)
    with DAG(**kwargs) as dag:
        _chain(s, logical_date=DEFAULT_LOGICAL_DATE, release_root=release_root, tracking_uri=tracking_uri, queue=None,
               pool=None, executor_config=executor_config, overwrite=False)
    return dag


def config_files(folder: str | Path) -> list[Path]:
    """The dataset configs of a folder: ``*.yaml`` / ``*.yml``, sorted, except the ``*.schema.yaml`` /
    ``*.gate.yaml`` files that may sit beside them."""
    return sorted(p for p in [*Path(folder).glob("*.yaml"), *Path(folder).glob("*.yml")]
                  if not p.name.endswith(AUX_SUFFIXES))


def _scan(folder: str | Path) -> tuple[list[DagSettings], list[str]]:
    """Settings of the healthy configs and one ``"<file>: <error>"`` line per broken one (a second
    config with an already used dataset name is broken: both would write the same releases)."""
    from synth_pipeline.errors import SynthPipelineError

    healthy: list[DagSettings] = []
    errors: list[str] = []
    owner: dict[str, str] = {}
    for path in config_files(folder):
        try:
            s = read_settings(path)
        except SynthPipelineError as e:
            errors.append(f"{path.name}: " + str(e).replace("\n", "\n    "))  # one entry per config
            continue
        if s.name in owner:
            errors.append(f"{path.name}: dataset name '{s.name}' is already used by {owner[s.name]}; give each "
                          f"config its own 'name'")
            continue
        owner[s.name] = path.name
        healthy.append(s)
    return healthy, errors


def release_dags(folder: str | Path, **kwargs: Any) -> dict[str, DAG]:
    """One release DAG per healthy config in ``folder``, keyed by dag_id (assign them to the DAG
    file's globals). Broken configs are skipped here and reported by :func:`check_configs`."""
    healthy, errors = _scan(folder)
    if errors:
        log.warning("%d dataset config(s) in %s skipped (see the import error of the file calling "
                    "check_configs): %s", len(errors), folder, "; ".join(errors))
    return {dag.dag_id: dag for dag in (_release_dag(s, **kwargs) for s in healthy)}


def check_configs(folder: str | Path) -> None:
    """Raise one ConfigError naming every broken config in ``folder`` (one line each), for a DAG
    file of its own: the DagBag records it as that file's import error and nothing else."""
    from synth_pipeline.errors import ConfigError

    _, errors = _scan(folder)
    if errors:
        raise ConfigError(f"{len(errors)} dataset config(s) in {folder} could not be loaded, so their "
                          f"synthetic_release_<dataset> DAGs are missing (the other configs' DAGs are "
                          f"unaffected):\n" + "\n".join(errors))
