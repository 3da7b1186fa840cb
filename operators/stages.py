"""One thin Airflow 3 operator per release stage (``synth_pipeline.stages``).

Each stores its arguments as ``template_fields`` (config path, logical date, release root,
tracking URI), calls one library function in ``execute`` and returns its small JSON result to
XCom; data moves by path through the stage's private staging folder, never through XCom. The
DAG run (dag_id / run_id) owns the folder: a concurrent run of another DAG for the same dataset
and date makes the later stages fail instead of mixing files.

The logical date defaults to the run's ``ds``; runs without one (Airflow 3 asset-triggered or
manually triggered without a date) use the day of ``dag_run.run_after`` instead.

Failures: bad input (config, schema, data validation, PII) and a failed gate raise
``AirflowFailException`` (no retry: retrying cannot fix them); the gate's message lists the failed
checks and the report's MLflow URI, and the quarantine record already exists. Other errors
(I/O: an unreachable tracking server, a busy file system) propagate and are retried where the
operator has retries: ingest and publish retry with exponential backoff, the compute stages
(validate, train, generate, the audit, evaluate) do not.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

DEFAULT_LOGICAL_DATE = "{{ ds if ds is defined else dag_run.run_after | ds }}"
IO_RETRIES = {"retries": 2, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True,
              "max_retry_delay": timedelta(minutes=15)}


def _ids(context: Any) -> dict[str, Any]:
    """Airflow ids recorded as MLflow tags (dag_id, run_id, task_id, try_number, map_index)."""
    ti = context.get("ti") or context.get("task_instance")
    out = {"dag_id": getattr(ti, "dag_id", None), "task_id": getattr(ti, "task_id", None),
           "run_id": getattr(ti, "run_id", None) or context.get("run_id"),
           "try_number": getattr(ti, "try_number", None), "map_index": getattr(ti, "map_index", None)}
    return {k: v for k, v in out.items() if v not in (None, -1)}


def _attempt(context: Any) -> str | None:
    """The DAG run that owns the staging folder (a cleared and rerun task keeps it)."""
    ids = _ids(context)
    return f"{ids['dag_id']}/{ids['run_id']}" if ids.get("dag_id") and ids.get("run_id") else None


class SyntheticStageOperator(BaseOperator):
    """Runs ``synth_pipeline.stages.<stage>`` for one dataset config and logical date."""

    stage: str = ""
    template_fields = ("config", "logical_date", "release_root", "tracking_uri")
    ui_color = "#e8f4ea"

    def __init__(self, *, config: str, logical_date: str = DEFAULT_LOGICAL_DATE,
                 release_root: str | None = None, tracking_uri: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 0)  # compute stages: a deployment-wide default_task_retries does not apply
        super().__init__(**kwargs)
        self.config, self.logical_date = config, logical_date
        self.release_root, self.tracking_uri = release_root, tracking_uri

    def call_library(self, context: Any) -> Any:
        from synth_pipeline import stages

        return getattr(stages, self.stage)(
            self.config, self.logical_date, release_root=self.release_root or None,
            tracking_uri=self.tracking_uri or None, airflow_context=_ids(context), attempt=_attempt(context),
            progress=self.log.info,
        )

    def execute(self, context: Any) -> dict[str, Any]:
        from synth_pipeline.errors import (
            ConditioningError,
            ConfigError,
            DataValidationError,
            GateFailedError,
            PIIError,
            SchemaError,
        )

        try:
            out = self.call_library(context)
        except GateFailedError as e:
            raise AirflowFailException(str(e)) from None
        except (ConfigError, SchemaError, PIIError, DataValidationError, ConditioningError) as e:
            raise AirflowFailException(f"{type(e).__name__}: {e}") from None
        return out.to_dict() if hasattr(out, "to_dict") else out


class SyntheticIngestOperator(SyntheticStageOperator):
    """Checks config, release root and tracking server, reads the sources, stages the typed table."""

    stage = "ingest"

    def __init__(self, *, overwrite: bool = False, **kwargs: Any) -> None:
        super().__init__(**{**IO_RETRIES, **kwargs})
        self.overwrite = overwrite

    def call_library(self, context: Any) -> Any:
        from synth_pipeline import stages

        return stages.ingest(self.config, self.logical_date, release_root=self.release_root or None,
                             tracking_uri=self.tracking_uri or None, overwrite=self.overwrite,
                             attempt=_attempt(context), progress=self.log.info)


class SyntheticValidateOperator(SyntheticStageOperator):
    """Great Expectations validation of the staged table, then the entity-level split."""

    stage = "validate"


class SyntheticTrainOperator(SyntheticStageOperator):
    """Fits and registers the synthesizer. Route it to GPU workers with ``queue`` (Celery) or
    ``executor_config={"pod_override": ...}`` (Kubernetes); ``pool`` caps concurrent trainings."""

    stage = "train"


class SyntheticPlanGenerationOperator(SyntheticStageOperator):
    """Returns the generate shards (small dicts) to XCom for ``SyntheticGenerateShardOperator.expand``."""

    stage = "plan_generation"


class SyntheticGenerateShardOperator(SyntheticStageOperator):
    """Samples one shard into a seeded Parquet part in staging; map it with ``.expand(shard=plan.output)``."""

    stage = "generate_shard"

    def __init__(self, *, shard: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shard = shard

    def call_library(self, context: Any) -> Any:
        from synth_pipeline import stages

        return stages.generate_shard(self.config, self.logical_date, shard=self.shard,
                                     release_root=self.release_root or None, tracking_uri=self.tracking_uri or None,
                                     attempt=_attempt(context), progress=self.log.info)


class SyntheticGenerateOperator(SyntheticStageOperator):
    """Checks the staged parts (sampling any shard not yet staged) and runs the dependency diagnostic
    (same routing options as train)."""

    stage = "generate"


class SyntheticPrepareAuditOperator(SyntheticStageOperator):
    """Fits the audit's representation on train and stages the reference vectors for the audit shards."""

    stage = "prepare_audit"


class SyntheticAuditShardOperator(SyntheticStageOperator):
    """Audits one generated part (nearest references, membership distances, exact copies) into a small
    npz in staging; map it over the generate shards with ``.expand(shard=plan.output)``."""

    stage = "audit_shard"

    def __init__(self, *, shard: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shard = shard

    def call_library(self, context: Any) -> Any:
        from synth_pipeline import stages

        return stages.audit_shard(self.config, self.logical_date, shard=self.shard,
                                  release_root=self.release_root or None, tracking_uri=self.tracking_uri or None,
                                  attempt=_attempt(context), progress=self.log.info)


class SyntheticEvaluateOperator(SyntheticStageOperator):
    """Merges the audit shards (auditing any a mapped task did not) and applies the release gate
    (fails the task when it fails)."""

    stage = "evaluate"


class SyntheticPublishOperator(SyntheticStageOperator):
    """Publishes the gated release atomically and moves the ``champion`` alias. Give it an
    ``Asset`` outlet so downstream DAGs schedule on new releases."""

    stage = "publish"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**IO_RETRIES, **kwargs})
