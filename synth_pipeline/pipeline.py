"""``run_release(config, logical_date)``: one synthetic release end to end.

ingest -> validate -> split -> train -> register -> generate -> evaluate -> gate -> publish

Order of checks (cheap and fatal first): the config (unknown keys, missing files, model and gate
options), the release root (writable), the tracking server (reachable) -- all before any data is
read. Then ingest + validate, and the release already on disk for the logical date: the same
inputs (data digest, schema, model/gate settings) make the rerun a no-op before training;
different inputs are refused before training unless ``overwrite=True``.

MLflow: experiment per dataset, one run per attempt (params = model config, step metrics =
training losses, final metrics = fidelity + privacy, tags = dataset, logical date, fingerprints,
gate verdict, Airflow ids; artifacts = schema.yaml, expectation suite + validation result,
report/report.html, metrics.json, gate.json, lineage.json). The model is registered as a version
of ``<dataset>-synthesizer`` with alias ``candidate``. Gate pass: the release is published, then
``champion`` moves and the version is tagged ``gate=passed``. Gate fail: a quarantine record
(manifest + report, no data) is written, the version is tagged ``gate=failed``, ``champion`` stays,
and :class:`~synth_pipeline.errors.GateFailedError` is raised after everything is recorded.

Privacy: real rows exist only in memory. Artifacts, tags, params, manifests and logs carry
digests, counts, column names and aggregates, never a source row.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synth_pipeline import __version__
from synth_pipeline import release as rel
from synth_pipeline import tracking as trk
from synth_pipeline.dataset_config import DatasetConfig, load_config
from synth_pipeline.errors import GateFailedError, ReleaseError
from synth_pipeline.schema import DatasetSchema

REPORT_FILES = {"report/report.html": "report.html", "report/metrics.json": "metrics.json",
                "report/gate.json": "gate.json"}


@dataclass
class ReleaseResult:
    """What one ``run_release`` did; ``to_dict()`` is small JSON (fit for an Airflow XCom)."""

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


@dataclass
class PreparedData:
    """Ingested, validated and split data (in memory only) plus its digests."""

    schema: DatasetSchema
    frame: pd.DataFrame
    train: pd.DataFrame
    holdout: pd.DataFrame
    validation: Any  # ValidationReport
    data_fingerprint: str
    counts: dict[str, int]


# ------------------------------------------------------------------------------------------------
# stages (plain functions; run_release chains them, Airflow operators can call them one by one)
# ------------------------------------------------------------------------------------------------
def frame_digest(df: pd.DataFrame) -> str:
    """Digest of a table's content, columns and dtypes (lineage by digest: no row is stored)."""
    h = hashlib.sha256()
    h.update(json.dumps([[str(c), str(t)] for c, t in df.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def split_sequences(df: pd.DataFrame, schema: DatasetSchema, holdout_fraction: float, seed: int
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train / holdout by entity (panels) or by non-overlapping window (one long series): the
    holdout shares no entity and no timestamp with train."""
    from synth_pipeline.encoding import sequence_ids
    from synth_pipeline.split import split_entities

    keys = df[schema.entity_key].to_numpy() if schema.entity_key is not None else sequence_ids(df, schema)
    tr, ho = split_entities(keys, holdout_fraction, seed)
    return df[tr].reset_index(drop=True), df[ho].reset_index(drop=True)


def n_sequences_of(df: pd.DataFrame, schema: DatasetSchema) -> int:
    from synth_pipeline.encoding import sequence_index

    if df.empty:
        return 0
    return int(sequence_index(df, schema)[0].shape[0])


def prepare_data(cfg: DatasetConfig) -> PreparedData:
    """ingest -> validate -> split (raises typed errors; nothing is written)."""
    from synth_pipeline.ingest import load_dataset
    from synth_pipeline.validate import validate

    schema = cfg.schema
    df = load_dataset(cfg.events, schema, cfg.entities)
    report = validate(df, schema)
    train, holdout = split_sequences(df, schema, cfg.holdout_fraction, cfg.seed)
    counts = {
        "source_rows": int(len(df)), "train_rows": int(len(train)), "holdout_rows": int(len(holdout)),
        "train_sequences": n_sequences_of(train, schema), "holdout_sequences": n_sequences_of(holdout, schema),
    }
    return PreparedData(schema, df, train, holdout, report, frame_digest(df), counts)


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


def _say_fn(progress: bool | Callable[[str], None]) -> Callable[[str], None]:
    if callable(progress):
        return progress
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        if progress:
            print(f"[release {time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    return say


# ------------------------------------------------------------------------------------------------
# the chain
# ------------------------------------------------------------------------------------------------
def run_release(
    config: str | Path | Mapping[str, Any] | DatasetConfig,
    logical_date: Any,
    *,
    overwrite: bool = False,
    release_root: str | Path | None = None,
    tracking_uri: str | None = None,
    airflow_context: Mapping[str, Any] | None = None,
    progress: bool | Callable[[str], None] = True,
) -> ReleaseResult:
    """Run one release for ``logical_date`` (``YYYY-MM-DD``). Returns a :class:`ReleaseResult`;
    raises :class:`GateFailedError` (``.result`` set) after recording a failed gate, and typed
    ``SynthPipelineError`` subclasses for bad input, an unwritable release root or an unreachable
    tracking server (then nothing is trained or published)."""
    say = _say_fn(progress)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    # -- cheap, fatal checks before reading any data -----------------------------------------------
    cfg = load_config(dict(config) if isinstance(config, Mapping) else config)
    release_id = rel.release_id_for(logical_date)
    rel.validate_dataset_name(cfg.name)
    gate_cfg = cfg.gate_config()
    model_cfg = cfg.model_config()
    root = cfg.resolved_release_root(release_root)
    uri = cfg.resolved_tracking_uri(tracking_uri)
    rel.check_release_root(root, cfg.name)  # creates + checks writability (ReleaseError)
    trk.check_reachable(uri)  # TrackingError before any work
    say(f"dataset {cfg.name}, release {release_id}, release root {root}, MLflow {trk.redact_uri(uri)}")

    # -- ingest, validate, split ---------------------------------------------------------------------
    t = time.perf_counter()
    prep = prepare_data(cfg)
    schema = prep.schema
    inputs_fp = inputs_fingerprint(cfg, prep.data_fingerprint)
    timings["ingest_validate_split"] = time.perf_counter() - t
    say(f"ingested {prep.counts['source_rows']} rows; validation {prep.validation.summary()}; split "
        f"{prep.counts['train_sequences']} train / {prep.counts['holdout_sequences']} holdout sequences")

    existing = rel.existing_release(root, cfg.name, release_id)
    if existing is not None:
        if existing.get("inputs_fingerprint") == inputs_fp:
            say(f"release {release_id} already published with the same inputs: nothing to do")
            model = existing.get("model") or {}
            return ReleaseResult(
                dataset=cfg.name, release_id=release_id, status="unchanged", passed=True,
                release_path=rel.release_path(root, cfg.name, release_id), model_name=model.get("name"),
                model_version=model.get("version"), model_uri=model.get("uri"), run_id=model.get("run_id"),
                experiment_id=model.get("experiment_id"), tracking_uri=uri,
                gate_reason=(existing.get("gate") or {}).get("reason"), counts=existing.get("counts") or {},
                timings={"total": time.perf_counter() - t_all},
            )
        if not overwrite:
            raise ReleaseError(
                f"release {cfg.name}/{release_id} already exists with different inputs (fingerprint "
                f"{existing.get('inputs_fingerprint')}, now {inputs_fp}); pass overwrite=True (CLI: --overwrite) "
                f"to replace it. Nothing was trained."
            )

    n_syn = cfg.n_sequences or prep.counts["train_sequences"]
    tags = {
        "dataset": cfg.name, "logical_date": release_id, "release_id": release_id,
        "schema_fingerprint": schema.fingerprint(), "data_fingerprint": prep.data_fingerprint,
        "train_fingerprint": frame_digest(prep.train), "holdout_fingerprint": frame_digest(prep.holdout),
        "inputs_fingerprint": inputs_fp, "package_version": __version__, "gate": "pending",
        **trk.airflow_tags(airflow_context),
    }
    with tempfile.TemporaryDirectory(prefix="synth-release-") as tmp_s, trk.connect(uri) as client:
        tmp = Path(tmp_s)
        import mlflow

        with trk.mlflow_errors("creating the experiment and run"):
            exp = trk.ensure_experiment(client, cfg.experiment_name, uri)
            mlflow.set_experiment(experiment_id=exp.experiment_id)
            run = mlflow.start_run(run_name=f"{cfg.name}-{release_id}", tags=tags)
        run_id = run.info.run_id
        status = "FAILED"
        try:
            with trk.mlflow_errors("logging params and validation artifacts"):
                mlflow.log_params(trk.flat_params({
                    "model": model_cfg.to_dict(), "holdout_fraction": cfg.holdout_fraction,
                    "n_sequences": n_syn, "seed": cfg.seed,
                }))
                mlflow.log_params(trk.flat_params({"gate": gate_cfg.to_dict()}))
                mlflow.log_text(schema.to_yaml(), "schema.yaml")
                trk.log_json(prep.validation.suite_json, "validation/expectation_suite.json")
                trk.log_json(prep.validation.result_json, "validation/validation_result.json")
                trk.log_json(cfg.to_dict(), "config.json")
                trk.log_json({"data_fingerprint": prep.data_fingerprint, "train_fingerprint": tags["train_fingerprint"],
                              "holdout_fingerprint": tags["holdout_fingerprint"], "counts": prep.counts,
                              "columns": list(prep.frame.columns), "sources": cfg.to_dict()["sources"]},
                             "lineage.json")

            # -- train + register ------------------------------------------------------------------
            from synth_pipeline.synthesizer import Synthesizer

            t = time.perf_counter()
            say(f"training ({model_cfg.preset} preset) on {prep.counts['train_sequences']} sequences")
            syn = Synthesizer(schema, model_cfg).fit(prep.train)
            timings["train"] = time.perf_counter() - t
            with trk.mlflow_errors("logging training losses and registering the model"):
                trk.log_history(syn.model.history)
                mlflow.log_metric("train_seconds", timings["train"])
                t = time.perf_counter()
                info = trk.log_model(syn, name="synthesizer", registered_model_name=cfg.model_name,
                                     metadata={"dataset": cfg.name, "logical_date": release_id})
                version = str(info.registered_model_version)
                model_uri = f"models:/{cfg.model_name}/{version}"
                trk.set_candidate(client, cfg.model_name, version, {
                    "dataset": cfg.name, "logical_date": release_id, "run_id": run_id,
                    "inputs_fingerprint": inputs_fp, "gate": "pending",
                })
                mlflow.set_tags({"model_name": cfg.model_name, "model_version": version, "model_uri": model_uri})
                timings["register"] = time.perf_counter() - t
            say(f"trained in {timings['train']:.0f}s; registered {model_uri} (alias {trk.CANDIDATE})")

            # -- generate + evaluate + gate ----------------------------------------------------------
            from synth_pipeline.evaluation import evaluate

            t = time.perf_counter()
            synthetic = syn.sample(n_syn, seed=cfg.seed)
            timings["generate"] = time.perf_counter() - t
            say(f"generated {n_syn} synthetic sequences ({len(synthetic)} rows) in {timings['generate']:.1f}s")
            t = time.perf_counter()
            ev = evaluate(prep.train, prep.holdout, synthetic, schema, gate_cfg, out_dir=tmp / "report",
                          seed=cfg.seed, progress=say if progress else False)
            timings["evaluate"] = time.perf_counter() - t
            report_files = {dst: tmp / "report" / src for dst, src in REPORT_FILES.items()}
            passed = bool(ev.passed)
            failed = [c.name for c in ev.gate.failed]
            with trk.mlflow_errors("logging the audit"):
                mlflow.log_artifact(str(report_files["report/report.html"]), artifact_path="report")
                mlflow.log_artifact(str(report_files["report/metrics.json"]))
                mlflow.log_artifact(str(report_files["report/gate.json"]))
                metrics_doc = ev.metrics_dict()
                final = trk.flat_metrics({"fidelity": metrics_doc.get("fidelity", {}),
                                          "privacy": metrics_doc.get("privacy", {})})
                final.update({f"gate.{c.name}": float(c.value) for c in ev.gate.checks
                              if isinstance(c.value, (int, float)) and np.isfinite(c.value)})
                final["gate.passed"] = float(passed)
                mlflow.log_metrics(final)
                mlflow.set_tags({"gate": "passed" if passed else "failed", "gate_reason": ev.gate.reason[:5000]})
                report_uri = mlflow.get_artifact_uri("report/report.html")
            say(f"gate {'PASSED' if passed else 'FAILED'}: {ev.gate.reason}")

            manifest = {
                "logical_date": release_id,
                "inputs_fingerprint": inputs_fp,
                "schema_fingerprint": schema.fingerprint(),
                "data_fingerprint": prep.data_fingerprint,
                "model": {"name": cfg.model_name, "version": version, "uri": model_uri, "run_id": run_id,
                          "experiment_id": exp.experiment_id, "report_uri": report_uri},
                "counts": {"sequences": int(n_syn), "train_sequences": prep.counts["train_sequences"],
                           "holdout_sequences": prep.counts["holdout_sequences"]},
                "gate": ev.gate_dict(),
            }
            # -- publish / quarantine -----------------------------------------------------------------
            t = time.perf_counter()
            if passed:
                pub = rel.publish_release(root, cfg.name, release_id, synthetic, manifest, overwrite=overwrite,
                                          extra_files=report_files)
            else:
                pub = rel.quarantine_release(root, cfg.name, release_id, manifest, report_files)
            timings["publish"] = time.perf_counter() - t
            with trk.mlflow_errors("recording the gate verdict in the registry"):
                trk.promote(client, cfg.model_name, version, passed)
                mlflow.set_tags({"release_status": pub.status, "release_path": str(pub.path)})
            say(f"{pub.status}: {pub.path}")
            timings["total"] = time.perf_counter() - t_all
            mlflow.log_metrics({f"time.{k}": v for k, v in timings.items()})
            status = "FINISHED"
        finally:
            try:
                mlflow.end_run(status=status)
            except Exception:  # noqa: BLE001 - keep the original error; the server may be gone
                pass

    result = ReleaseResult(
        dataset=cfg.name, release_id=release_id, status=pub.status, passed=passed,
        release_path=pub.path if passed else None, quarantine_path=None if passed else pub.path,
        model_name=cfg.model_name, model_version=version, model_uri=model_uri, run_id=run_id,
        experiment_id=exp.experiment_id, tracking_uri=uri, report_uri=report_uri, gate_reason=ev.gate.reason,
        failed_checks=failed, counts={**prep.counts, "synthetic_sequences": int(n_syn),
                                      "synthetic_rows": int(len(synthetic))},
        timings=timings,
    )
    if not passed:
        details = "; ".join(c.explanation for c in ev.gate.failed) or ev.gate.reason
        raise GateFailedError(
            f"release gate failed for {cfg.name} {release_id}: {details}. Quarantine record (manifest + report, "
            f"no data): {pub.path}. Report in MLflow: {report_uri} (run {run_id}); model {model_uri} tagged "
            f"gate=failed, alias '{trk.CHAMPION}' not moved.",
            result,
        )
    return result
