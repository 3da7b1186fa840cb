"""The release stages, one function each, so an orchestrator can run them as separate tasks:

    ingest -> validate -> train -> generate -> evaluate -> publish

Generation and the audit fan out over the same shards (``plan_generation`` -> ``generate_shard``
per shard, then ``prepare_audit`` -> ``audit_shard`` per shard: Airflow mapped tasks); ``generate``
and ``evaluate`` run any shard a mapped task did not stage, so one process runs the same functions.
``pipeline.run_release`` chains them in one process; the Airflow operators call them one per
task (retries and GPU routing per stage). Every stage takes the same arguments (the dataset
config, the logical date, optional release-root / tracking-URI overrides) and returns small JSON
(paths, URIs, counts, verdict). Data moves by path through a private staging folder per release
attempt, ``<release root>/.staging/<dataset>/<release id>/`` (mode 0700, files 0600): the real
tables live only there, the ``state.json`` beside them carries what later stages need (run id,
model version, fingerprints, timings), and publish / quarantine removes the folder. A new ingest
of the same dataset and date starts from an empty folder. ``attempt`` (the Airflow DAG run; one id
per ``run_release`` call) is recorded at ingest, and a later stage of another attempt refuses the
folder: two pipelines releasing the same dataset and date at once fail loudly instead of reading
each other's files. Stages read their inputs without consuming them, so a cleared task can be
rerun on its own.

Order of checks (cheap and fatal first): ingest checks the config (unknown keys, missing files,
model and gate options), the release root (writable) and the tracking server (reachable) before
reading data. It then compares the release already on disk for the date: the same inputs (data
digest, schema, model/gate settings) make every later stage a no-op ("unchanged"); different
inputs are refused before training unless ``overwrite=True``.

MLflow: one run per attempt, created by train and resumed by each later stage (params = model
config, step metrics = training losses, final metrics = fidelity + privacy, tags = dataset,
logical date, fingerprints, gate verdict, Airflow ids; artifacts = schema.yaml, expectation suite
+ validation result, config, lineage, report/report.html, metrics.json, gate.json). The model is
registered as a version of ``<dataset>-synthesizer`` tagged ``gate=pending`` (runs and versions of
earlier, killed attempts at the same date are closed: FAILED, ``gate=stale``); once evaluated it
gets the alias ``candidate``. Gate pass: publish writes the release, then ``champion`` moves
(unless a newer logical date already holds it: backfills never move it back) and the version is
tagged ``gate=passed``. Gate fail:
evaluate writes a quarantine record (manifest + report, no data), tags the version
``gate=failed``, leaves ``champion``, and raises :class:`~synth_pipeline.errors.GateFailedError`.

Privacy: real rows exist only in memory and in the staging folder. Artifacts, tags, params,
manifests and logs carry digests, counts, column names and aggregates, never a source row.
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
from pathlib import Path
from typing import Any

from synth_pipeline import __version__
from synth_pipeline import release as rel
from synth_pipeline import tracking as trk
from synth_pipeline.dataset_config import DatasetConfig, load_config
from synth_pipeline.errors import GateFailedError, ReleaseError
from synth_pipeline.io_utils import atomic_write, atomic_write_json
from synth_pipeline.privacy import redact

STAGING = ".staging"
STAGES = ("ingest", "validate", "train", "generate", "evaluate", "publish")
SHARDS_DIR = "shards"  # generate parts: part-NNNNN.parquet, one per shard (see shards.py)
AUDIT_DIR = "audit"  # prepared.pkl + audit-NNNNN.npz, one per shard (see evaluation/sharded.py)
DEPENDENCY_FILE = "dependency.json"  # aggregates over generated sequences only
DEPENDENCY_SEQUENCES, DEPENDENCY_MAX_STEPS = 32, 128
REPORT_FILES = {"report/report.html": "report.html", "report/metrics.json": "metrics.json",
                "report/gate.json": "gate.json"}
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


# ------------------------------------------------------------------------------------------------
# data helpers (digests, split)
# ------------------------------------------------------------------------------------------------
def frame_digest(df) -> str:  # noqa: ANN001 - pandas DataFrame
    """Digest of a table's content, columns and dtypes (lineage by digest: no row is stored)."""
    import pandas as pd

    h = hashlib.sha256()
    h.update(json.dumps([[str(c), str(t)] for c, t in df.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def split_sequences(df, schema, holdout_fraction: float, seed: int):  # noqa: ANN001, ANN201 - frames
    """Train / holdout by entity (panels) or by non-overlapping window (one long series): the
    holdout shares no entity and no timestamp with train."""
    from synth_pipeline.encoding import sequence_ids
    from synth_pipeline.split import split_entities

    keys = df[schema.entity_key].to_numpy() if schema.entity_key is not None else sequence_ids(df, schema)
    tr, ho = split_entities(keys, holdout_fraction, seed)
    return df[tr].reset_index(drop=True), df[ho].reset_index(drop=True)


def n_sequences_of(df, schema) -> int:  # noqa: ANN001
    from synth_pipeline.encoding import sequence_index

    if df.empty:
        return 0
    return int(sequence_index(df, schema)[0].shape[0])


def inputs_fingerprint(cfg: DatasetConfig, data_fingerprint: str) -> str:
    """Everything a release depends on: a rerun with the same fingerprint is the same release."""
    blob = {
        "data": data_fingerprint, "schema": cfg.schema.fingerprint(), "model": cfg.model_config().to_dict(),
        "holdout_fraction": cfg.holdout_fraction, "n_sequences": cfg.n_sequences, "seed": cfg.seed,
        "gate": cfg.gate_config().to_dict(), "package_version": __version__,
    }
    for k in ("progress", "device"):  # do not change the output
        blob["model"].pop(k, None)
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _say_fn(progress: ProgressSink, dataset: str = "") -> Callable[[str], None]:
    if callable(progress):
        return progress
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        if progress:
            print(f"[release {time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    return say


# ------------------------------------------------------------------------------------------------
# the staging folder and the state that travels between stages
# ------------------------------------------------------------------------------------------------
class Stage:
    """One stage's view of a release attempt: the config, ids, resolved locations, the staging
    folder and its ``state.json``."""

    def __init__(self, config: Any, logical_date: Any, release_root: str | Path | None,
                 tracking_uri: str | None, progress: ProgressSink, attempt: str | None = None) -> None:
        self.attempt = attempt
        self.cfg = load_config(dict(config) if isinstance(config, Mapping) else config)
        self.release_id = rel.release_id_for(logical_date)
        rel.validate_dataset_name(self.cfg.name)
        self.root = self.cfg.resolved_release_root(release_root)
        self.uri = self.cfg.resolved_tracking_uri(tracking_uri)
        self.dir = rel.staging_root(self.root) / STAGING / self.cfg.name / self.release_id  # local, also for s3://
        self.say = _say_fn(progress)
        self.state: dict[str, Any] = {}

    # -- files -----------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.dir / name

    def fresh(self) -> None:
        """Start an attempt from an empty, private folder."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        for parent in (self.dir.parent, self.dir.parent.parent):
            os.chmod(parent, 0o700)

    def load(self, stage: str) -> dict[str, Any]:
        """Read ``state.json``; a missing folder means an earlier stage did not run for this date."""
        p = self.path("state.json")
        if not p.exists():
            raise ReleaseError(
                f"stage '{stage}' found no staged state for {self.cfg.name} {self.release_id} at {self.dir}: run "
                f"the earlier stages for this logical date first (ingest -> validate -> train -> generate -> "
                f"evaluate -> publish)")
        self.state = json.loads(p.read_text())
        digest = _config_digest(self.cfg)
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

    def write_frame(self, name: str, df) -> None:  # noqa: ANN001
        atomic_write(self.path(name), lambda p: df.to_parquet(p, index=False))
        os.chmod(self.path(name), 0o600)

    def read_frame(self, name: str):  # noqa: ANN201
        import pandas as pd

        from synth_pipeline.ingest import coerce

        return coerce(pd.read_parquet(self.path(name)), self.cfg.schema, source=f"staged {name}")

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

    @property
    def unchanged(self) -> bool:
        return self.state.get("status") == "unchanged"

    def timed(self, key: str, t0: float) -> float:
        dt = time.perf_counter() - t0
        self.state.setdefault("timings", {})[key] = dt
        return dt

    # -- MLflow ----------------------------------------------------------------------------------
    @contextmanager
    def run(self, what: str) -> Iterator[Any]:
        """Resume this attempt's MLflow run for the block; yields the client. The run's status is
        left FINISHED at each exit: the last stage (publish, or evaluate on a failed gate) sets the
        final one; an exception marks it FAILED."""
        import mlflow

        with trk.connect(self.uri) as client:
            with trk.mlflow_errors(f"resuming the run ({what})"):
                mlflow.start_run(run_id=self.state["run_id"])
            with _ending_run():
                yield client

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


@contextmanager
def _ending_run() -> Iterator[None]:
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


def _config_digest(cfg: DatasetConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _unchanged(st: Stage, stage: str) -> dict[str, Any]:
    st.say(f"{stage}: release {st.release_id} already published with the same inputs: nothing to do")
    return {"stage": stage, "status": "unchanged", "dataset": st.cfg.name, "release_id": st.release_id}


# ------------------------------------------------------------------------------------------------
# stages
# ------------------------------------------------------------------------------------------------
def ingest(config: Any, logical_date: Any, *, release_root: str | Path | None = None,
           tracking_uri: str | None = None, overwrite: bool = False, attempt: str | None = None,
           progress: ProgressSink = False, **_: Any) -> dict[str, Any]:
    """Check everything cheap, read the sources, and stage the typed table. A release already on
    disk for the date with the same inputs marks the attempt ``unchanged``; one with different
    inputs is refused (before any training) unless ``overwrite``."""
    st = Stage(config, logical_date, release_root, tracking_uri, progress, attempt)
    cfg = st.cfg
    t0 = time.perf_counter()
    cfg.gate_config(), cfg.model_config()  # invalid options fail here, before data is read
    rel.check_release_root(st.root, cfg.name)  # creates + checks writability (ReleaseError)
    trk.check_reachable(st.uri)  # TrackingError before any work
    st.say(f"dataset {cfg.name}, release {st.release_id}, release root {st.root}, MLflow {trk.redact_uri(st.uri)}")

    from synth_pipeline.ingest import load_dataset

    df = load_dataset(cfg.events, cfg.schema, cfg.entities)
    data_fp = frame_digest(df)
    inputs_fp = inputs_fingerprint(cfg, data_fp)
    st.fresh()
    st.state = {"dataset": cfg.name, "release_id": st.release_id, "config_digest": _config_digest(cfg),
                "data_fingerprint": data_fp, "inputs_fingerprint": inputs_fp, "overwrite": bool(overwrite),
                "counts": {"source_rows": int(len(df))}, "status": "ingested", "attempt": attempt}
    existing = rel.existing_release(st.root, cfg.name, st.release_id)
    if existing is not None:
        if existing.get("inputs_fingerprint") == inputs_fp:
            model = existing.get("model") or {}
            st.state.update(status="unchanged", model_name=model.get("name"), model_version=model.get("version"),
                            model_uri=model.get("uri"), run_id=model.get("run_id"),
                            experiment_id=model.get("experiment_id"), report_uri=model.get("report_uri"),
                            gate=existing.get("gate") or {}, counts=existing.get("counts") or {})
            st.save()
            return _unchanged(st, "ingest")
        if not overwrite:
            st.cleanup()
            raise ReleaseError(
                f"release {cfg.name}/{st.release_id} already exists with different inputs (fingerprint "
                f"{existing.get('inputs_fingerprint')}, now {inputs_fp}); pass overwrite=True (CLI: --overwrite) "
                f"to replace it. Nothing was trained.")
    st.write_frame("source.parquet", df)
    st.timed("ingest", t0)
    st.save()
    st.say(f"ingested {len(df)} rows (data {data_fp}) into {st.dir}")
    return {"stage": "ingest", "status": "ingested", "dataset": cfg.name, "release_id": st.release_id,
            "rows": int(len(df)), "data_fingerprint": data_fp, "inputs_fingerprint": inputs_fp, "staging": str(st.dir)}


def validate(config: Any, logical_date: Any, *, release_root: str | Path | None = None,
             tracking_uri: str | None = None, attempt: str | None = None, progress: ProgressSink = False,
             **_: Any) -> dict[str, Any]:
    """Great Expectations validation of the staged table (raises DataValidationError listing every
    failure), then the entity-level train / holdout split."""
    from synth_pipeline.validate import validate as gx_validate

    st = Stage(config, logical_date, release_root, tracking_uri, progress, attempt)
    st.load("validate")
    if st.unchanged:
        return _unchanged(st, "validate")
    t0 = time.perf_counter()
    st.say(f"validating the staged table ({st.state['counts']['source_rows']} rows, Great Expectations) and "
           f"splitting train / holdout by entity")
    schema = st.cfg.schema
    df = st.read_frame("source.parquet")
    report = gx_validate(df, schema)
    train, holdout = split_sequences(df, schema, st.cfg.holdout_fraction, st.cfg.seed)
    st.write_frame("train.parquet", train)
    st.write_frame("holdout.parquet", holdout)
    atomic_write_json(st.path("expectation_suite.json"), report.suite_json)
    atomic_write_json(st.path("validation_result.json"), report.result_json)
    st.state["counts"].update({
        "train_rows": int(len(train)), "holdout_rows": int(len(holdout)),
        "train_sequences": n_sequences_of(train, schema), "holdout_sequences": n_sequences_of(holdout, schema),
    })
    st.state.update(train_fingerprint=frame_digest(train), holdout_fingerprint=frame_digest(holdout),
                    validation=report.summary(), columns=[str(c) for c in df.columns])
    dt = st.timed("validate", t0)
    st.save()
    c = st.state["counts"]
    st.say(f"validation {report.summary()}; split {c['train_sequences']} train / {c['holdout_sequences']} holdout "
           f"sequences in {dt:.1f}s")
    return {"stage": "validate", "status": "validated", "validation": report.summary(),
            "counts": dict(c), "dataset": st.cfg.name, "release_id": st.release_id}


def train(config: Any, logical_date: Any, *, release_root: str | Path | None = None,
          tracking_uri: str | None = None, airflow_context: Mapping[str, Any] | None = None,
          attempt: str | None = None, progress: ProgressSink = False, **_: Any) -> dict[str, Any]:
    """Open the attempt's MLflow run (params, validation artifacts, lineage), fit the synthesizer,
    log its losses, register it as the ``candidate`` version, and stage it for generation."""
    import mlflow
    from synth_pipeline.synthesizer import Synthesizer

    st = Stage(config, logical_date, release_root, tracking_uri, progress, attempt)
    s = st.load("train")
    if st.unchanged:
        return _unchanged(st, "train")
    cfg, schema = st.cfg, st.cfg.schema
    model_cfg, gate_cfg = cfg.model_config(), cfg.gate_config()
    n_syn = cfg.n_sequences or s["counts"]["train_sequences"]
    tags = {
        "dataset": cfg.name, "logical_date": st.release_id, "release_id": st.release_id,
        "schema_fingerprint": schema.fingerprint(), "data_fingerprint": s["data_fingerprint"],
        "train_fingerprint": s["train_fingerprint"], "holdout_fingerprint": s["holdout_fingerprint"],
        "inputs_fingerprint": s["inputs_fingerprint"], "package_version": __version__, "gate": "pending",
        **trk.airflow_tags(airflow_context),
    }
    train_df = st.read_frame("train.parquet")
    t0 = time.perf_counter()
    st.say(f"MLflow: opening the run in experiment '{cfg.experiment_name}' (params, validation artifacts)")
    with trk.connect(st.uri) as client:
        with trk.mlflow_errors("creating the experiment and run"):
            exp = trk.ensure_experiment(client, cfg.experiment_name, st.uri)
            mlflow.set_experiment(experiment_id=exp.experiment_id)
            run = mlflow.start_run(run_name=f"{cfg.name}-{st.release_id}", tags=tags)
        s.update(run_id=run.info.run_id, experiment_id=exp.experiment_id, n_synthetic=int(n_syn))
        st.save()
        with _ending_run():
            with trk.mlflow_errors("logging params and validation artifacts"):
                mlflow.log_params(trk.flat_params({
                    "model": model_cfg.to_dict(), "holdout_fraction": cfg.holdout_fraction,
                    "n_sequences": n_syn, "seed": cfg.seed,
                }))
                mlflow.log_params(trk.flat_params({"gate": gate_cfg.to_dict()}))
                # redacted copies: GX artifacts hold real values (unexpected lists, pinned value sets)
                for name in ("expectation_suite.json", "validation_result.json"):
                    raw = json.loads(st.path(name).read_text(encoding="utf-8"))
                    trk.log_json(redact(raw), f"validation/{name}")
                trk.log_json(cfg.to_dict(), "config.json")
                trk.log_json({"data_fingerprint": s["data_fingerprint"], "train_fingerprint": s["train_fingerprint"],
                              "holdout_fingerprint": s["holdout_fingerprint"], "counts": s["counts"],
                              "columns": s["columns"], "sources": cfg.to_dict()["sources"]}, "lineage.json")
            st.say(f"MLflow run {s['run_id']} opened in {time.perf_counter() - t0:.1f}s")
            t0 = time.perf_counter()
            st.say(f"training ({model_cfg.preset} preset) on {s['counts']['train_sequences']} sequences")
            if model_cfg.distributed and model_cfg.processes > 1:  # data-parallel ranks under torchrun
                from synth_pipeline.models.launch import fit_with_torchrun

                st.say(f"training in {model_cfg.processes} data-parallel ranks under torch.distributed.run")
                syn = fit_with_torchrun(schema, st.path("train.parquet"), model_cfg, model_cfg.processes)
            else:
                syn = Synthesizer(schema, model_cfg).fit(train_df)
            train_s = st.timed("train", t0)
            st.say(f"trained in {train_s:.1f}s")
            t_reg = time.perf_counter()
            st.say(f"registering: saving the model, logging it to MLflow as a version of {cfg.model_name}")
            syn.save(st.path("model"))
            with trk.mlflow_errors("logging the protected schema"):
                mlflow.log_text(syn.encoder.public_schema().to_yaml(), "schema.yaml")  # no rare level, no range
            with trk.mlflow_errors("logging training losses and registering the model"):
                trk.log_history(syn.model.history)
                mlflow.log_metric("train_seconds", train_s)
                t0 = time.perf_counter()
                info = trk.log_model(syn, name="synthesizer", registered_model_name=cfg.model_name,
                                     metadata={"dataset": cfg.name, "logical_date": st.release_id})
                version = str(info.registered_model_version)
                model_uri = f"models:/{cfg.model_name}/{version}"
                dp_tags = trk.privacy_tags(syn.model.dp_report)
                if dp_tags:  # the guarantee on the run (params + tags) and on the registered version
                    mlflow.log_params({f"dp.{k}": v for k, v in syn.model.dp_report.items()
                                       if not isinstance(v, dict)})
                    mlflow.set_tags(dp_tags)
                trk.tag_version(client, cfg.model_name, version, {  # alias 'candidate' once evaluated
                    "dataset": cfg.name, "logical_date": st.release_id, "run_id": s["run_id"],
                    "inputs_fingerprint": s["inputs_fingerprint"], "gate": "pending", **dp_tags,
                })
                stale = trk.mark_stale_attempts(client, exp.experiment_id, cfg.model_name, st.release_id,
                                                s["run_id"])
                if stale:
                    st.say(f"closed {len(stale)} run(s) of earlier, unfinished attempts for {st.release_id} "
                           f"(status FAILED, gate=stale)")
                mlflow.set_tags({"model_name": cfg.model_name, "model_version": version, "model_uri": model_uri})
                st.timed("register", t0)
    s.update(model_name=cfg.model_name, model_version=version, model_uri=model_uri,
             differential_privacy=syn.model.dp_report)
    st.save()
    st.say(f"registered {model_uri} in {time.perf_counter() - t_reg:.1f}s (gate=pending until evaluated)")
    return {"stage": "train", "status": "trained", "run_id": s["run_id"], "model_uri": model_uri,
            "model_version": version, "train_seconds": round(train_s, 1), "dataset": cfg.name,
            "release_id": st.release_id}


def _shard_plan(st: Stage, s: dict[str, Any]) -> list[Any]:
    from synth_pipeline.shards import plan_shards

    return plan_shards(int(s["n_synthetic"]), st.cfg.seed, st.cfg.shards)


def plan_generation(config: Any, logical_date: Any, *, release_root: str | Path | None = None,
                    tracking_uri: str | None = None, attempt: str | None = None, progress: ProgressSink = False,
                    **_: Any) -> list[dict[str, Any]]:
    """The generate shards (small dicts for XCom / ``.expand``): count from ``generate.shards`` or n."""
    st = Stage(config, logical_date, release_root, tracking_uri, progress, attempt)
    s = st.load("plan_generation")
    if st.unchanged:
        return []
    plan = _shard_plan(st, s)
    st.say(f"{s['n_synthetic']} synthetic sequences in {len(plan)} shard(s)")
    return [p.to_dict() for p in plan]


def generate_shard(config: Any, logical_date: Any, *, shard: Mapping[str, Any],
                   release_root: str | Path | None = None, tracking_uri: str | None = None,
                   attempt: str | None = None, progress: ProgressSink = False, **_: Any) -> dict[str, Any]:
    """Sample one shard into ``<staging>/shards/part-NNNNN.parquet`` (reads state, never writes it:
    shards run concurrently)."""
    from synth_pipeline.shards import ShardSpec, write_shard
    from synth_pipeline.synthesizer import Synthesizer

    st = Stage(config, logical_date, release_root, tracking_uri, progress, attempt)
    s = st.load("generate_shard")
    spec = ShardSpec.from_dict(dict(shard))
    if spec not in _shard_plan(st, s):
        raise ReleaseError(f"shard {dict(shard)!r} is not in the plan of {st.cfg.name} {st.release_id}; "
                           "rerun plan_generation")
    t0 = time.perf_counter()
    entry = write_shard(Synthesizer.load(st.path("model")), spec, st.path(SHARDS_DIR))
    st.say(f"shard {spec.index}: {spec.count} sequences, {entry['rows']} rows in {time.perf_counter() - t0:.1f}s")
    return {**entry, "stage": "generate_shard", "dataset": st.cfg.name, "release_id": st.release_id}


def generate(config: Any, logical_date: Any, *, release_root: str | Path | None = None,
             tracking_uri: str | None = None, attempt: str | None = None, progress: ProgressSink = False,
             **_: Any) -> dict[str, Any]:
    """Sample the synthetic table from the staged model as seeded shards (any shard a mapped task has
    not staged is sampled here), check the parts, run the dependency diagnostic."""
    from synth_pipeline.shards import part_entries, write_shard
    from synth_pipeline.synthesizer import Synthesizer

    st = Stage(config, logical_date, release_root, tracking_uri, progress, attempt)
    s = st.load("generate")
    if st.unchanged:
        return _unchanged(st, "generate")
    t0 = time.perf_counter()
    plan, parts = _shard_plan(st, s), st.path(SHARDS_DIR)
    todo = [p for p in plan if not (parts / p.part_name).exists()]
    syn = Synthesizer.load(st.path("model"))
    if todo:
        st.say(f"sampling {sum(p.count for p in todo)} synthetic sequences in {len(todo)} shard(s)")
    for p in todo:
        write_shard(syn, p, parts)
    entries = part_entries(parts, plan)
    rows = sum(e["rows"] for e in entries)
    dt = st.timed("generate", t0)
    st.say(f"generated {s['n_synthetic']} synthetic sequences ({rows} rows, {len(plan)} part(s)) in {dt:.1f}s")
    t1 = time.perf_counter()  # the decoder's dependency on its latent (PSLD's collapse diagnostic)
    st.say("dependency diagnostic (decoder's dependency on its latent, integrated gradients) on "
           f"{min(DEPENDENCY_SEQUENCES, int(s['n_synthetic']))} generated sequences")
    dep = syn.dependency(n=min(DEPENDENCY_SEQUENCES, int(s["n_synthetic"])), seed=st.cfg.seed + 2,
                         max_steps=DEPENDENCY_MAX_STEPS, progress=st.say)
    atomic_write_json(st.path(DEPENDENCY_FILE), dep.to_state())
    st.say(f"dependency diagnostic done in {st.timed('dependency', t1):.1f}s: latent dependency "
           f"{dep.summary()['latent_dependency']:.3f}")
    s["counts"].update(synthetic_sequences=int(s["n_synthetic"]), synthetic_rows=int(rows))
    s["parts"] = entries
    st.save()
    return {"stage": "generate", "status": "generated", "sequences": int(s["n_synthetic"]), "rows": int(rows),
            "parts": len(entries), "seconds": round(dt, 2), "dataset": st.cfg.name, "release_id": st.release_id}


def _prepare_audit(st: Stage, progress: ProgressSink) -> Any:
    """Fit the audit's representation on the staged train table and draw its references; stage them."""
    from synth_pipeline.evaluation.sharded import SHARD_FILE, prepare_audit, save_prep

    cfg = st.cfg
    prep = prepare_audit(st.read_frame("train.parquet"), st.read_frame("holdout.parquet"), cfg.schema,
                         cfg.gate_config(), cfg.seed, rare_tokens=(cfg.model_config().rare_token,),
                         protection=cfg.model_config().protection(), progress=st.say if progress else None)
    folder = st.path(AUDIT_DIR)
    for old in folder.glob(SHARD_FILE.replace("{:05d}", "*")) if folder.is_dir() else []:
        old.unlink()  # audited against an earlier preparation
    save_prep(prep, folder)
    return prep


def _audit_part(st: Stage, prep: Any, spec: Any, n_parts: int, progress: ProgressSink) -> dict[str, Any]:
    """Audit one generated part against the prepared references; stage its npz."""
    from synth_pipeline.evaluation.sharded import audit_shard, save_shard

    part = st.read_frame(f"{SHARDS_DIR}/{spec.part_name}")
    out = audit_shard(prep, part, index=spec.index, start=spec.start, total=spec.n_total, count=spec.count,
                      whole=n_parts == 1, progress=st.say if progress else None)
    save_shard(out, st.path(AUDIT_DIR))
    return {"shard": spec.index, "sequences": int(len(out["dcr_units"])), "exact_copies": int(
        json.loads(str(out["meta"]))["exact_hits"])}


def prepare_audit(config: Any, logical_date: Any, *, release_root: str | Path | None = None,
                  tracking_uri: str | None = None, attempt: str | None = None, progress: ProgressSink = False,
                  **_: Any) -> dict[str, Any]:
    """Prepare the sharded audit: the representation fitted on train and the equal-size references,
    staged for the ``audit_shard`` tasks (reads state, never writes it)."""
    st = Stage(config, logical_date, release_root, tracking_uri, progress, attempt)
    st.load("prepare_audit")
    if st.unchanged:
        return _unchanged(st, "prepare_audit")
    t0 = time.perf_counter()
    prep = _prepare_audit(st, progress)
    st.say(f"audit prepared in {time.perf_counter() - t0:.1f}s: {len(prep.train_ref)} train-sample and "
           f"{len(prep.holdout_ref)} holdout references")
    return {"stage": "prepare_audit", "status": "prepared", "reference_size": len(prep.train_ref),
            "dataset": st.cfg.name, "release_id": st.release_id}


def audit_shard(config: Any, logical_date: Any, *, shard: Mapping[str, Any],
                release_root: str | Path | None = None, tracking_uri: str | None = None,
                attempt: str | None = None, progress: ProgressSink = False, **_: Any) -> dict[str, Any]:
    """Audit one generated part (nearest references, membership distances, exact copies, fidelity
    candidates) into ``<staging>/audit/audit-NNNNN.npz``; evaluate merges them (reads state, never
    writes it: shards run concurrently)."""
    from synth_pipeline.evaluation.sharded import load_prep
    from synth_pipeline.shards import ShardSpec

    st = Stage(config, logical_date, release_root, tracking_uri, progress, attempt)
    s = st.load("audit_shard")
    if st.unchanged:
        return _unchanged(st, "audit_shard")
    spec = ShardSpec.from_dict(dict(shard))
    plan = _shard_plan(st, s)
    if spec not in plan:
        raise ReleaseError(f"shard {dict(shard)!r} is not in the plan of {st.cfg.name} {st.release_id}; "
                           "rerun plan_generation")
    if not (st.path(AUDIT_DIR) / "prepared.pkl").exists():
        raise ReleaseError(f"audit_shard: the audit of {st.cfg.name} {st.release_id} is not prepared; run "
                           "prepare_audit first")
    t0 = time.perf_counter()
    out = _audit_part(st, load_prep(st.path(AUDIT_DIR)), spec, len(plan), progress)
    st.say(f"audit shard {spec.index}: {out['sequences']} synthetic sequences in {time.perf_counter() - t0:.1f}s")
    return {**out, "stage": "audit_shard", "dataset": st.cfg.name, "release_id": st.release_id}


def evaluate(config: Any, logical_date: Any, *, release_root: str | Path | None = None,
             tracking_uri: str | None = None, attempt: str | None = None, progress: ProgressSink = False,
             **_: Any) -> dict[str, Any]:
    """Merge the audit shards (any step a mapped task has not staged, the preparation or a shard,
    is run here), log the report, apply the gate. On failure: quarantine record, ``gate=failed``
    on the version, GateFailedError."""
    import numpy as np

    import mlflow
    from synth_pipeline.evaluation import write_outputs
    from synth_pipeline.evaluation.dependency import DependencyResult
    from synth_pipeline.evaluation.sharded import load_prep, load_shard, merge_audit, shard_path

    st = Stage(config, logical_date, release_root, tracking_uri, progress, attempt)
    s = st.load("evaluate")
    if st.unchanged:
        return _unchanged(st, "evaluate")
    cfg = st.cfg
    t0 = time.perf_counter()
    st.say(f"auditing {s['n_synthetic']} synthetic sequences against train and holdout (privacy, fidelity, gate)")
    audit = st.path(AUDIT_DIR)
    prep = load_prep(audit) if (audit / "prepared.pkl").exists() else _prepare_audit(st, progress)
    plan = _shard_plan(st, s)
    todo = [p for p in plan if not shard_path(audit, p.index).exists()]
    if todo and len(todo) < len(plan):
        st.say(f"auditing {len(todo)} shard(s) no audit_shard task staged")
    for p in todo:
        _audit_part(st, prep, p, len(plan), progress)
    shards = [load_shard(audit, p.index) for p in plan]
    try:
        ev = merge_audit(prep, shards, progress=st.say if progress else None)
    finally:
        for f in shards:
            f.close()
    dep = None
    if st.path(DEPENDENCY_FILE).exists():  # staged by generate; the report shows its heatmap
        dep = DependencyResult.from_state(json.loads(st.path(DEPENDENCY_FILE).read_text()))
        ev.artifacts["dependency"] = dep
    ev.guarantee = s.get("differential_privacy")  # the report's first screen states it
    write_outputs(ev, st.path("report"), progress=st.say if progress else None)
    st.say(f"audit done in {st.timed('evaluate', t0):.1f}s")
    passed = bool(ev.passed)
    report_files = {dst: st.path("report") / src for dst, src in REPORT_FILES.items()}
    with st.run("evaluate") as client:
        with trk.mlflow_errors("logging the audit"):
            mlflow.log_artifact(str(report_files["report/report.html"]), artifact_path="report")
            mlflow.log_artifact(str(report_files["report/metrics.json"]))
            mlflow.log_artifact(str(report_files["report/gate.json"]))
            doc = ev.metrics_dict()
            final = trk.flat_metrics({"fidelity": doc.get("fidelity", {}), "privacy": doc.get("privacy", {})})
            final.update({f"gate.{c.name}": float(c.value) for c in ev.gate.checks
                          if isinstance(c.value, (int, float)) and np.isfinite(c.value)})
            final["gate.passed"] = float(passed)
            if dep is not None:
                final.update(dep.metrics())
                mlflow.log_artifact(str(st.path(DEPENDENCY_FILE)))
            mlflow.log_metrics(final)
            mlflow.set_tags({"gate": "passed" if passed else "failed", "gate_reason": ev.gate.reason[:5000]})
            trk.set_candidate(client, s["model_name"], s["model_version"])  # evaluated: pass or fail
            s["report_uri"] = mlflow.get_artifact_uri("report/report.html")
        s["gate"] = {"passed": passed, "reason": ev.gate.reason, "failed": [c.name for c in ev.gate.failed],
                     "explanations": [c.explanation for c in ev.gate.failed]}
        s["manifest"] = rel.build_manifest(st.release_id, s, cfg.schema.fingerprint(), ev.gate_dict())
        st.say(f"gate {'PASSED' if passed else 'FAILED'}: {ev.gate.reason}")
        if not passed:
            t0 = time.perf_counter()
            pub = rel.quarantine_release(st.root, cfg.name, st.release_id, s["manifest"], report_files)
            st.timed("quarantine", t0)
            with trk.mlflow_errors("recording the failed gate in the registry"):
                trk.promote(client, s["model_name"], s["model_version"], False)
                mlflow.set_tags({"release_status": pub.status, "release_path": str(pub.path)})
            result = st.result(pub.status, False, pub.path)
    if not passed:
        st.cleanup()
        details = "; ".join(f"{n}: {e}" for n, e in zip(s["gate"]["failed"], s["gate"]["explanations"], strict=True))
        raise GateFailedError(
            f"release gate failed for {cfg.name} {st.release_id}; failed checks: {details or ev.gate.reason}. "
            f"Quarantine record (manifest + report, "
            f"no data): {pub.path}. Report in MLflow: {s['report_uri']} (run {s['run_id']}); model "
            f"{s['model_uri']} tagged gate=failed, alias '{trk.CHAMPION}' not moved.",
            result,
        )
    st.save()
    return {"stage": "evaluate", "status": "passed", "passed": True, "report_uri": s["report_uri"],
            "gate_reason": ev.gate.reason, "dataset": cfg.name, "release_id": st.release_id}


def publish(config: Any, logical_date: Any, *, release_root: str | Path | None = None,
            tracking_uri: str | None = None, overwrite: bool | None = None, attempt: str | None = None,
            progress: ProgressSink = False, **_: Any) -> ReleaseResult:
    """Publish the gated synthetic table atomically, move ``champion``, close the run, and remove
    the staging folder. Refuses to run for an attempt whose gate did not pass."""
    import mlflow

    st = Stage(config, logical_date, release_root, tracking_uri, progress, attempt)
    s = st.load("publish")
    if st.unchanged:
        st.say(f"release {st.release_id} already published with the same inputs: nothing to do")
        result = st.result("unchanged", True, rel.release_path(st.root, st.cfg.name, st.release_id))
        st.cleanup()
        return result
    if not (s.get("gate") or {}).get("passed"):
        raise ReleaseError(f"publish: the gate of {st.cfg.name} {st.release_id} has not passed (evaluate did not "
                           f"run or failed); nothing was published")
    cfg = st.cfg
    t0 = time.perf_counter()
    st.say(f"publishing release {st.release_id} of {cfg.name} under {st.root}")
    report_files = {dst: st.path("report") / src for dst, src in REPORT_FILES.items()}
    ow = s.get("overwrite", False) if overwrite is None else overwrite
    with st.run("publish") as client:
        pub = rel.publish_release(st.root, cfg.name, st.release_id, None, s["manifest"], overwrite=ow,
                                  extra_files=report_files, parts=st.path(SHARDS_DIR))
        st.timed("publish", t0)
        with trk.mlflow_errors("recording the gate verdict in the registry"):
            trk.promote(client, s["model_name"], s["model_version"], True)
            mlflow.set_tags({"release_status": pub.status, "release_path": str(pub.path)})
            s["timings"]["total"] = sum(v for k, v in s["timings"].items() if k != "total")
            mlflow.log_metrics({f"time.{k}": v for k, v in s["timings"].items()})
    st.say(f"{pub.status}: {pub.path} in {time.perf_counter() - t0:.1f}s")
    result = st.result(pub.status, True, pub.path)
    st.cleanup()
    return result
