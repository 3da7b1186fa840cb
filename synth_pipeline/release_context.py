"""What one release stage works with, built once per stage call: :class:`ReleaseContext`.

A stage function (``stages.py``) builds one context from its arguments (dataset config, logical
date, optional release-root / tracking-URI overrides, progress sink, attempt) and asks it for
everything that is not the stage's own work: the dataset config (parsed once, its model and gate
options cached), the resolved locations, the private staging folder and its ``state.json`` (load
with the config and attempt checks, save), the staged tables read back coerced to the schema (one
cached helper), the attempt's MLflow run (created by train, resumed by later stages), progress
messages, timings, and the small replies a stage returns. The manifest is built in ``release.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from synth_pipeline import release as rel
from synth_pipeline import tracking as trk
from synth_pipeline.dataset_config import DatasetConfig, load_config
from synth_pipeline.errors import ReleaseError
from synth_pipeline.io_utils import atomic_write, atomic_write_json

STAGING = ".staging"
SHARDS_DIR = "shards"  # generate parts: part-NNNNN.parquet, one per shard (see shards.py)
AUDIT_DIR = "audit"  # prepared.pkl + audit-NNNNN.npz, one per shard (see evaluation/sharded.py)
REPORT_FILES = {"report/report.html": "report.html", "report/metrics.json": "metrics.json",
                "report/gate.json": "gate.json"}
CACHED_TABLES = ("source.parquet", "train.parquet", "holdout.parquet")  # read once per stage call
ProgressSink = bool | Callable[[str], None]


@dataclass
class ReleaseResult:
    """What a release did; ``to_dict()`` is small JSON (fit for an Airflow XCom)."""

    dataset: str
    release_id: str
    status: str  # published | replaced | unchanged | quarantined
    passed: bool | None
    release_path: Path | None = None
    quarantine_path: Path | None = None
    model_name: str | None = None
    model_version: str | None = None
    model_uri: str | None = None
    run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    report_uri: str | None = None
    gate_reason: str | None = None
    failed_checks: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def champion_uri(self) -> str | None:
        return f"models:/{self.model_name}@{trk.CHAMPION}" if self.model_name else None

    @property
    def ui_command(self) -> str | None:
        return trk.ui_command(self.tracking_uri) if self.tracking_uri else None

    def to_dict(self) -> dict[str, Any]:
        out = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}
        if out.get("tracking_uri"):
            out["tracking_uri"] = trk.redact_uri(out["tracking_uri"])
        return out


def say_fn(progress: ProgressSink) -> Callable[[str], None]:
    """A progress callable: the sink itself, or stderr lines with elapsed seconds (``True``), or silence."""
    if callable(progress):
        return progress
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        if progress:
            print(f"[release {time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    return say


def config_digest(cfg: DatasetConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextmanager
def ending_run() -> Iterator[None]:
    """End the active MLflow run with the block: FINISHED, or FAILED when it raised."""
    import mlflow

    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    finally:
        try:
            mlflow.end_run(status=status)
        except Exception:  # noqa: BLE001 - keep the original error; the server may be gone
            pass


class ReleaseContext:
    """One stage's view of a release attempt: the config, ids, resolved locations, the staging
    folder and its ``state.json``, the staged tables, the MLflow run, progress and timings."""

    def __init__(self, config: Any, logical_date: Any, release_root: str | Path | None,
                 tracking_uri: str | None, progress: ProgressSink, attempt: str | None = None) -> None:
        self.attempt = attempt
        self.cfg = load_config(dict(config) if isinstance(config, Mapping) else config)
        self.release_id = rel.release_id_for(logical_date)
        rel.validate_dataset_name(self.cfg.name)
        self.root = self.cfg.resolved_release_root(release_root)
        self.uri = self.cfg.resolved_tracking_uri(tracking_uri)
        self.dir = rel.staging_root(self.root) / STAGING / self.cfg.name / self.release_id  # local, also for s3://
        self.say = say_fn(progress)
        self.detail = self.say if progress else None  # for the library's own progress= arguments
        self.state: dict[str, Any] = {}
        self._tables: dict[str, Any] = {}

    # -- the config ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def schema(self) -> Any:
        return self.cfg.schema

    @cached_property
    def model_cfg(self) -> Any:
        return self.cfg.model_config()

    @cached_property
    def gate_cfg(self) -> Any:
        return self.cfg.gate_config()

    # -- the staging folder ----------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def report_files(self) -> dict[str, Path]:
        """The staged report files by their artifact path."""
        return {dst: self.path("report") / src for dst, src in REPORT_FILES.items()}

    def fresh(self) -> None:
        """Start an attempt from an empty, private folder."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self._tables.clear()
        self.dir.mkdir(parents=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        for parent in (self.dir.parent, self.dir.parent.parent):
            os.chmod(parent, 0o700)

    def cleanup(self, owned_only: bool = False) -> None:
        """Remove the folder (real data); with ``owned_only``, not if another attempt has taken it."""
        if owned_only and self.attempt is not None:
            try:
                owner = json.loads(self.path("state.json").read_text()).get("attempt")
            except (OSError, ValueError):
                owner = None
            if owner not in (None, self.attempt):
                return
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the state -------------------------------------------------------------------------------
    def load(self, stage: str) -> dict[str, Any]:
        """Read ``state.json``; a missing folder means an earlier stage did not run for this date."""
        p = self.path("state.json")
        if not p.exists():
            raise ReleaseError(
                f"stage '{stage}' found no staged state for {self.cfg.name} {self.release_id} at {self.dir}: run "
                f"the earlier stages for this logical date first (ingest -> validate -> train -> generate -> "
                f"evaluate -> publish)")
        self.state = json.loads(p.read_text())
        digest = config_digest(self.cfg)
        if self.state.get("config_digest") != digest:
            raise ReleaseError(
                f"stage '{stage}': the config of {self.cfg.name} changed since ingest of {self.release_id} "
                f"({self.state.get('config_digest')} -> {digest}); rerun from ingest")
        owner = self.state.get("attempt")
        if self.attempt is not None and owner is not None and owner != self.attempt:
            raise ReleaseError(
                f"stage '{stage}': the staging folder of {self.cfg.name} {self.release_id} now belongs to another "
                f"attempt ({owner!r}, this is {self.attempt!r}): two pipelines are releasing the same dataset and "
                f"date at once. Let one finish, then rerun the other from ingest (or give them different dataset "
                f"names)")
        return self.state

    def save(self) -> None:
        atomic_write_json(self.path("state.json"), self.state)
        os.chmod(self.path("state.json"), 0o600)

    @property
    def unchanged(self) -> bool:
        return self.state.get("status") == "unchanged"

    def timed(self, key: str, t0: float) -> float:
        """Record the seconds since ``t0`` as the state's timing ``key``; returns them."""
        dt = time.perf_counter() - t0
        self.state.setdefault("timings", {})[key] = dt
        return dt

    # -- staged tables ---------------------------------------------------------------------------
    def write_frame(self, name: str, df) -> None:  # noqa: ANN001
        atomic_write(self.path(name), lambda p: df.to_parquet(p, index=False))
        os.chmod(self.path(name), 0o600)
        self._tables.pop(name, None)

    def read_frame(self, name: str, cache: bool = True):  # noqa: ANN201
        """A staged Parquet table coerced to the schema; source / train / holdout are read once per
        context unless ``cache=False`` (shard parts are never kept: evaluate reads them one at a time)."""
        if name in self._tables:
            return self._tables[name]
        import pandas as pd

        from synth_pipeline.evaluation.inputs import sequence_layout
        from synth_pipeline.ingest import coerce

        df = pd.read_parquet(self.path(name))
        # generated parts of a single long series carry their windows' key (sequence_id)
        df = coerce(df, sequence_layout(self.cfg.schema, df), source=f"staged {name}")
        if cache and name in CACHED_TABLES:
            self._tables[name] = df
        return df

    # -- generation shards -----------------------------------------------------------------------
    def shard_plan(self) -> list[Any]:
        from synth_pipeline.shards import plan_shards

        return plan_shards(int(self.state["n_synthetic"]), self.cfg.seed, self.cfg.shards)

    def planned_shard(self, shard: Mapping[str, Any]) -> tuple[Any, list[Any]]:
        """The shard's spec and the whole plan; a shard not in the plan is refused."""
        from synth_pipeline.shards import ShardSpec

        spec, plan = ShardSpec.from_dict(dict(shard)), self.shard_plan()
        if spec not in plan:
            raise ReleaseError(f"shard {dict(shard)!r} is not in the plan of {self.cfg.name} {self.release_id}; "
                               "rerun plan_generation")
        return spec, plan

    def load_model(self) -> Any:
        from synth_pipeline.synthesizer import Synthesizer

        return Synthesizer.load(self.path("model"))

    # -- MLflow ----------------------------------------------------------------------------------
    @contextmanager
    def start_run(self, tags: Mapping[str, str]) -> Iterator[tuple[Any, Any]]:
        """Create the attempt's run in the dataset's experiment (run and experiment ids go into the
        state, saved at once); yields ``(client, experiment)`` with the run active, ended FINISHED
        at the block's exit (FAILED when it raised)."""
        import mlflow

        with trk.connect(self.uri) as client:
            with trk.mlflow_errors("creating the experiment and run"):
                exp = trk.ensure_experiment(client, self.cfg.experiment_name, self.uri)
                mlflow.set_experiment(experiment_id=exp.experiment_id)
                run = mlflow.start_run(run_name=f"{self.cfg.name}-{self.release_id}", tags=dict(tags))
            self.state.update(run_id=run.info.run_id, experiment_id=exp.experiment_id)
            self.save()
            with ending_run():
                yield client, exp

    @contextmanager
    def run(self, what: str) -> Iterator[Any]:
        """Resume this attempt's MLflow run for the block; yields the client. The run's status is
        left FINISHED at each exit: the last stage (publish, or evaluate on a failed gate) sets the
        final one; an exception marks it FAILED."""
        import mlflow

        with trk.connect(self.uri) as client:
            with trk.mlflow_errors(f"resuming the run ({what})"):
                mlflow.start_run(run_id=self.state["run_id"])
            with ending_run():
                yield client

    # -- what a stage returns --------------------------------------------------------------------
    def reply(self, stage: str, status: str, **extra: Any) -> dict[str, Any]:
        """A stage's small JSON reply: stage, status, the stage's own fields, dataset, release id."""
        return {"stage": stage, "status": status, **extra, "dataset": self.cfg.name, "release_id": self.release_id}

    def nothing_to_do(self, stage: str) -> dict[str, Any]:
        """The reply of a stage of an ``unchanged`` attempt (same inputs as the release on disk)."""
        self.say(f"{stage}: release {self.release_id} already published with the same inputs: nothing to do")
        return self.reply(stage, "unchanged")

    def result(self, status: str, passed: bool | None, path: Path | None) -> ReleaseResult:
        s = self.state
        gate = s.get("gate") or {}
        return ReleaseResult(
            dataset=self.cfg.name, release_id=self.release_id, status=status, passed=passed,
            release_path=path if passed else None, quarantine_path=None if passed else path,
            model_name=s.get("model_name"), model_version=s.get("model_version"), model_uri=s.get("model_uri"),
            run_id=s.get("run_id"), experiment_id=s.get("experiment_id"), tracking_uri=self.uri,
            report_uri=s.get("report_uri"), gate_reason=gate.get("reason"), failed_checks=gate.get("failed", []),
            counts=s.get("counts", {}), timings=s.get("timings", {}),
        )
