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

Each stage builds one :class:`~synth_pipeline.release_context.ReleaseContext` from its arguments
(parsed config, staging paths and state, staged tables, the MLflow run, progress, timings) and does
only its own work here; the manifest is built by ``release.build_manifest``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synth_pipeline import __version__
from synth_pipeline import release as rel
from synth_pipeline import tracking as trk
from synth_pipeline.dataset_config import DatasetConfig
from synth_pipeline.errors import GateFailedError, ReleaseError
from synth_pipeline.io_utils import atomic_write_json
from synth_pipeline.privacy import redact
from synth_pipeline.release_context import (  # noqa: F401 - re-exported: the stages' public names
    AUDIT_DIR,
    REPORT_FILES,
    SHARDS_DIR,
    STAGING,
    ProgressSink,
    ReleaseContext,
    ReleaseResult,
    config_digest,
    say_fn,
)

STAGES = ("ingest", "validate", "train", "generate", "evaluate", "publish")
DEPENDENCY_FILE = "dependency.json"  # aggregates over generated sequences only
DEPENDENCY_SEQUENCES, DEPENDENCY_MAX_STEPS = 32, 128
Stage = ReleaseContext  # the name callers used before the context had its own module


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


# ------------------------------------------------------------------------------------------------
# ingest, validate
# ------------------------------------------------------------------------------------------------
def ingest(config: Any, logical_date: Any, *, release_root: str | Path | None = None,
           tracking_uri: str | None = None, overwrite: bool = False, attempt: str | None = None,
           progress: ProgressSink = False, **_: Any) -> dict[str, Any]:
    """Check everything cheap, read the sources, and stage the typed table. A release already on
    disk for the date with the same inputs marks the attempt ``unchanged``; one with different
    inputs is refused (before any training) unless ``overwrite``."""
    from synth_pipeline.ingest import load_dataset

    ctx = ReleaseContext(config, logical_date, release_root, tracking_uri, progress, attempt)
    cfg = ctx.cfg
    t0 = time.perf_counter()
    _check_before_reading(ctx)
    df = load_dataset(cfg.events, cfg.schema, cfg.entities)
    data_fp = frame_digest(df)
    inputs_fp = inputs_fingerprint(cfg, data_fp)
    ctx.fresh()
    ctx.state = {"dataset": cfg.name, "release_id": ctx.release_id, "config_digest": config_digest(cfg),
                 "data_fingerprint": data_fp, "inputs_fingerprint": inputs_fp, "overwrite": bool(overwrite),
                 "counts": {"source_rows": int(len(df))}, "status": "ingested", "attempt": attempt}
    existing = rel.existing_release(ctx.root, cfg.name, ctx.release_id)
    if existing is not None:
        if existing.get("inputs_fingerprint") == inputs_fp:
            return _reuse_release(ctx, existing)
        if not overwrite:
            ctx.cleanup()
            raise ReleaseError(
                f"release {cfg.name}/{ctx.release_id} already exists with different inputs (fingerprint "
                f"{existing.get('inputs_fingerprint')}, now {inputs_fp}); pass overwrite=True (CLI: --overwrite) "
                f"to replace it. Nothing was trained.")
    ctx.write_frame("source.parquet", df)
    ctx.timed("ingest", t0)
    ctx.save()
    ctx.say(f"ingested {len(df)} rows (data {data_fp}) into {ctx.dir}")
    return ctx.reply("ingest", "ingested", rows=int(len(df)), data_fingerprint=data_fp,
                     inputs_fingerprint=inputs_fp, staging=str(ctx.dir))


def _check_before_reading(ctx: ReleaseContext) -> None:
    """Options, release root and tracking server, before any data is read."""
    ctx.gate_cfg, ctx.model_cfg  # invalid options fail here  # noqa: B018
    rel.check_release_root(ctx.root, ctx.name)  # creates + checks writability (ReleaseError)
    trk.check_reachable(ctx.uri)  # TrackingError before any work
    ctx.say(f"dataset {ctx.name}, release {ctx.release_id}, release root {ctx.root}, "
            f"MLflow {trk.redact_uri(ctx.uri)}")


def _reuse_release(ctx: ReleaseContext, existing: Mapping[str, Any]) -> dict[str, Any]:
    """The release on disk has the same inputs: the attempt is ``unchanged`` (later stages are no-ops)."""
    model = existing.get("model") or {}
    ctx.state.update(status="unchanged", model_name=model.get("name"), model_version=model.get("version"),
                     model_uri=model.get("uri"), run_id=model.get("run_id"),
                     experiment_id=model.get("experiment_id"), report_uri=model.get("report_uri"),
                     gate=existing.get("gate") or {}, counts=existing.get("counts") or {})
    ctx.save()
    return ctx.nothing_to_do("ingest")


def validate(config: Any, logical_date: Any, *, release_root: str | Path | None = None,
             tracking_uri: str | None = None, attempt: str | None = None, progress: ProgressSink = False,
             **_: Any) -> dict[str, Any]:
    """Great Expectations validation of the staged table (raises DataValidationError listing every
    failure), then the entity-level train / holdout split."""
    from synth_pipeline.split import split_sequences
    from synth_pipeline.validate import validate as gx_validate

    ctx = ReleaseContext(config, logical_date, release_root, tracking_uri, progress, attempt)
    s = ctx.load("validate")
    if ctx.unchanged:
        return ctx.nothing_to_do("validate")
    t0 = time.perf_counter()
    ctx.say(f"validating the staged table ({s['counts']['source_rows']} rows, Great Expectations) and "
            f"splitting train / holdout by entity")
    df = ctx.read_frame("source.parquet")
    report = gx_validate(df, ctx.schema)
    train, holdout = split_sequences(df, ctx.schema, ctx.cfg.holdout_fraction, ctx.cfg.seed)
    ctx.write_frame("train.parquet", train)
    ctx.write_frame("holdout.parquet", holdout)
    atomic_write_json(ctx.path("expectation_suite.json"), report.suite_json)
    atomic_write_json(ctx.path("validation_result.json"), report.result_json)
    c = s["counts"]
    c.update(train_rows=int(len(train)), holdout_rows=int(len(holdout)),
             train_sequences=n_sequences_of(train, ctx.schema), holdout_sequences=n_sequences_of(holdout, ctx.schema))
    s.update(train_fingerprint=frame_digest(train), holdout_fingerprint=frame_digest(holdout),
             validation=report.summary(), columns=[str(col) for col in df.columns])
    dt = ctx.timed("validate", t0)
    ctx.save()
    ctx.say(f"validation {report.summary()}; split {c['train_sequences']} train / {c['holdout_sequences']} holdout "
            f"sequences in {dt:.1f}s")
    return ctx.reply("validate", "validated", validation=report.summary(), counts=dict(c))


# ------------------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------------------
def train(config: Any, logical_date: Any, *, release_root: str | Path | None = None,
          tracking_uri: str | None = None, airflow_context: Mapping[str, Any] | None = None,
          attempt: str | None = None, progress: ProgressSink = False, **_: Any) -> dict[str, Any]:
    """Open the attempt's MLflow run (params, validation artifacts, lineage), fit the synthesizer,
    log its losses, register it as the ``candidate`` version, and stage it for generation."""
    ctx = ReleaseContext(config, logical_date, release_root, tracking_uri, progress, attempt)
    s = ctx.load("train")
    if ctx.unchanged:
        return ctx.nothing_to_do("train")
    s["n_synthetic"] = int(ctx.cfg.n_sequences or s["counts"]["train_sequences"])
    ctx.read_frame("train.parquet")  # a bad staged table fails before the run is opened
    t0 = time.perf_counter()
    ctx.say(f"MLflow: opening the run in experiment '{ctx.cfg.experiment_name}' (params, validation artifacts)")
    with ctx.start_run(_run_tags(ctx, airflow_context)) as (client, exp):
        _log_inputs(ctx)
        ctx.say(f"MLflow run {s['run_id']} opened in {time.perf_counter() - t0:.1f}s")
        syn, train_s = _fit(ctx)
        t_reg = time.perf_counter()
        model_uri = _register(ctx, client, exp, syn, train_s)
    s.update(differential_privacy=syn.model.dp_report)
    ctx.save()
    ctx.say(f"registered {model_uri} in {time.perf_counter() - t_reg:.1f}s (gate=pending until evaluated)")
    return ctx.reply("train", "trained", run_id=s["run_id"], model_uri=model_uri, model_version=s["model_version"],
                     train_seconds=round(train_s, 1))


def _run_tags(ctx: ReleaseContext, airflow_context: Mapping[str, Any] | None) -> dict[str, str]:
    s = ctx.state
    return {
        "dataset": ctx.name, "logical_date": ctx.release_id, "release_id": ctx.release_id,
        "schema_fingerprint": ctx.schema.fingerprint(), "data_fingerprint": s["data_fingerprint"],
        "train_fingerprint": s["train_fingerprint"], "holdout_fingerprint": s["holdout_fingerprint"],
        "inputs_fingerprint": s["inputs_fingerprint"], "package_version": __version__, "gate": "pending",
        **trk.airflow_tags(airflow_context),
    }


def _log_inputs(ctx: ReleaseContext) -> None:
    """Params (model, split, gate), redacted validation artifacts, the config and the lineage."""
    import mlflow

    cfg, s = ctx.cfg, ctx.state
    with trk.mlflow_errors("logging params and validation artifacts"):
        mlflow.log_params(trk.flat_params({
            "model": ctx.model_cfg.to_dict(), "holdout_fraction": cfg.holdout_fraction,
            "n_sequences": s["n_synthetic"], "seed": cfg.seed,
        }))
        mlflow.log_params(trk.flat_params({"gate": ctx.gate_cfg.to_dict()}))
        # redacted copies: GX artifacts hold real values (unexpected lists, pinned value sets)
        for name in ("expectation_suite.json", "validation_result.json"):
            raw = json.loads(ctx.path(name).read_text(encoding="utf-8"))
            trk.log_json(redact(raw), f"validation/{name}")
        trk.log_json(cfg.to_dict(), "config.json")
        trk.log_json({"data_fingerprint": s["data_fingerprint"], "train_fingerprint": s["train_fingerprint"],
                      "holdout_fingerprint": s["holdout_fingerprint"], "counts": s["counts"],
                      "columns": s["columns"], "sources": cfg.to_dict()["sources"]}, "lineage.json")


def _fit(ctx: ReleaseContext) -> tuple[Any, float]:
    """Fit the synthesizer on the staged train table (data-parallel ranks when configured)."""
    from synth_pipeline.synthesizer import Synthesizer

    model_cfg, t0 = ctx.model_cfg, time.perf_counter()
    ctx.say(f"training ({model_cfg.preset} preset) on {ctx.state['counts']['train_sequences']} sequences")
    if model_cfg.distributed and model_cfg.processes > 1:  # data-parallel ranks under torchrun
        from synth_pipeline.models.launch import fit_with_torchrun

        ctx.say(f"training in {model_cfg.processes} data-parallel ranks under torch.distributed.run")
        syn = fit_with_torchrun(ctx.schema, ctx.path("train.parquet"), model_cfg, model_cfg.processes)
    else:
        syn = Synthesizer(ctx.schema, model_cfg).fit(ctx.read_frame("train.parquet"))
    train_s = ctx.timed("train", t0)
    ctx.say(f"trained in {train_s:.1f}s")
    return syn, train_s


def _register(ctx: ReleaseContext, client: Any, exp: Any, syn: Any, train_s: float) -> str:
    """Stage the model, log schema and losses, register a ``gate=pending`` version (DP guarantee on
    run and version), close earlier attempts' runs; the model's ids go into the state. Returns its URI."""
    import mlflow

    cfg, s = ctx.cfg, ctx.state
    ctx.say(f"registering: saving the model, logging it to MLflow as a version of {cfg.model_name}")
    syn.save(ctx.path("model"))
    with trk.mlflow_errors("logging the protected schema"):
        mlflow.log_text(syn.encoder.public_schema().to_yaml(), "schema.yaml")  # no rare level, no range
    with trk.mlflow_errors("logging training losses and registering the model"):
        trk.log_history(syn.model.history)
        mlflow.log_metric("train_seconds", train_s)
        t0 = time.perf_counter()
        info = trk.log_model(syn, name="synthesizer", registered_model_name=cfg.model_name,
                             metadata={"dataset": cfg.name, "logical_date": ctx.release_id})
        version = str(info.registered_model_version)
        model_uri = f"models:/{cfg.model_name}/{version}"
        dp_tags = trk.privacy_tags(syn.model.dp_report)
        if dp_tags:  # the guarantee on the run (params + tags) and on the registered version
            mlflow.log_params({f"dp.{k}": v for k, v in syn.model.dp_report.items() if not isinstance(v, dict)})
            mlflow.set_tags(dp_tags)
        trk.tag_version(client, cfg.model_name, version, {  # alias 'candidate' once evaluated
            "dataset": cfg.name, "logical_date": ctx.release_id, "run_id": s["run_id"],
            "inputs_fingerprint": s["inputs_fingerprint"], "gate": "pending", **dp_tags,
        })
        stale = trk.mark_stale_attempts(client, exp.experiment_id, cfg.model_name, ctx.release_id, s["run_id"])
        if stale:
            ctx.say(f"closed {len(stale)} run(s) of earlier, unfinished attempts for {ctx.release_id} "
                    f"(status FAILED, gate=stale)")
        mlflow.set_tags({"model_name": cfg.model_name, "model_version": version, "model_uri": model_uri})
        ctx.timed("register", t0)
    s.update(model_name=cfg.model_name, model_version=version, model_uri=model_uri)
    return model_uri


# ------------------------------------------------------------------------------------------------
# generate (planned shards)
# ------------------------------------------------------------------------------------------------
def plan_generation(config: Any, logical_date: Any, *, release_root: str | Path | None = None,
                    tracking_uri: str | None = None, attempt: str | None = None, progress: ProgressSink = False,
                    **_: Any) -> list[dict[str, Any]]:
    """The generate shards (small dicts for XCom / ``.expand``): count from ``generate.shards`` or n."""
    ctx = ReleaseContext(config, logical_date, release_root, tracking_uri, progress, attempt)
    s = ctx.load("plan_generation")
    if ctx.unchanged:
        return []
    plan = ctx.shard_plan()
    ctx.say(f"{s['n_synthetic']} synthetic sequences in {len(plan)} shard(s)")
    return [p.to_dict() for p in plan]


def generate_shard(config: Any, logical_date: Any, *, shard: Mapping[str, Any],
                   release_root: str | Path | None = None, tracking_uri: str | None = None,
                   attempt: str | None = None, progress: ProgressSink = False, **_: Any) -> dict[str, Any]:
    """Sample one shard into ``<staging>/shards/part-NNNNN.parquet`` (reads state, never writes it:
    shards run concurrently)."""
    from synth_pipeline.shards import write_shard

    ctx = ReleaseContext(config, logical_date, release_root, tracking_uri, progress, attempt)
    ctx.load("generate_shard")
    spec, _plan = ctx.planned_shard(shard)
    t0 = time.perf_counter()
    entry = write_shard(ctx.load_model(), spec, ctx.path(SHARDS_DIR))
    ctx.say(f"shard {spec.index}: {spec.count} sequences, {entry['rows']} rows in {time.perf_counter() - t0:.1f}s")
    return {**entry, "stage": "generate_shard", "dataset": ctx.name, "release_id": ctx.release_id}


def generate(config: Any, logical_date: Any, *, release_root: str | Path | None = None,
             tracking_uri: str | None = None, attempt: str | None = None, progress: ProgressSink = False,
             **_: Any) -> dict[str, Any]:
    """Sample the synthetic table from the staged model as seeded shards (any shard a mapped task has
    not staged is sampled here), check the parts, run the dependency diagnostic."""
    ctx = ReleaseContext(config, logical_date, release_root, tracking_uri, progress, attempt)
    s = ctx.load("generate")
    if ctx.unchanged:
        return ctx.nothing_to_do("generate")
    t0 = time.perf_counter()
    syn = ctx.load_model()
    entries = _sample_missing_shards(ctx, syn)
    rows = sum(e["rows"] for e in entries)
    dt = ctx.timed("generate", t0)
    ctx.say(f"generated {s['n_synthetic']} synthetic sequences ({rows} rows, {len(entries)} part(s)) in {dt:.1f}s")
    _dependency_diagnostic(ctx, syn)
    s["counts"].update(synthetic_sequences=int(s["n_synthetic"]), synthetic_rows=int(rows))
    s["parts"] = entries
    ctx.save()
    return ctx.reply("generate", "generated", sequences=int(s["n_synthetic"]), rows=int(rows), parts=len(entries),
                     seconds=round(dt, 2))


def _sample_missing_shards(ctx: ReleaseContext, syn: Any) -> list[dict[str, Any]]:
    """Sample the planned shards no ``generate_shard`` task staged; the checked entries of all parts."""
    from synth_pipeline.shards import part_entries, write_shard

    plan, parts = ctx.shard_plan(), ctx.path(SHARDS_DIR)
    todo = [p for p in plan if not (parts / p.part_name).exists()]
    if todo:
        ctx.say(f"sampling {sum(p.count for p in todo)} synthetic sequences in {len(todo)} shard(s)")
    for p in todo:
        write_shard(syn, p, parts)
    return part_entries(parts, plan)


def _dependency_diagnostic(ctx: ReleaseContext, syn: Any) -> None:
    """The decoder's dependency on its latent (PSLD's collapse diagnostic), staged for evaluate."""
    t0, n = time.perf_counter(), min(DEPENDENCY_SEQUENCES, int(ctx.state["n_synthetic"]))
    ctx.say(f"dependency diagnostic (decoder's dependency on its latent, integrated gradients) on {n} generated "
            "sequences")
    dep = syn.dependency(n=n, seed=ctx.cfg.seed + 2, max_steps=DEPENDENCY_MAX_STEPS, progress=ctx.say)
    atomic_write_json(ctx.path(DEPENDENCY_FILE), dep.to_state())
    ctx.say(f"dependency diagnostic done in {ctx.timed('dependency', t0):.1f}s: latent dependency "
            f"{dep.summary()['latent_dependency']:.3f}")


# ------------------------------------------------------------------------------------------------
# the audit (planned shards) and the gate
# ------------------------------------------------------------------------------------------------
def prepare_audit(config: Any, logical_date: Any, *, release_root: str | Path | None = None,
                  tracking_uri: str | None = None, attempt: str | None = None, progress: ProgressSink = False,
                  **_: Any) -> dict[str, Any]:
    """Prepare the sharded audit: the representation fitted on train and the equal-size references,
    staged for the ``audit_shard`` tasks (reads state, never writes it)."""
    ctx = ReleaseContext(config, logical_date, release_root, tracking_uri, progress, attempt)
    ctx.load("prepare_audit")
    if ctx.unchanged:
        return ctx.nothing_to_do("prepare_audit")
    t0 = time.perf_counter()
    prep = _prepare_audit(ctx)
    ctx.say(f"audit prepared in {time.perf_counter() - t0:.1f}s: {len(prep.train_ref)} train-sample and "
            f"{len(prep.holdout_ref)} holdout references")
    return ctx.reply("prepare_audit", "prepared", reference_size=len(prep.train_ref))


def audit_shard(config: Any, logical_date: Any, *, shard: Mapping[str, Any],
                release_root: str | Path | None = None, tracking_uri: str | None = None,
                attempt: str | None = None, progress: ProgressSink = False, **_: Any) -> dict[str, Any]:
    """Audit one generated part (nearest references, membership distances, exact copies, fidelity
    candidates) into ``<staging>/audit/audit-NNNNN.npz``; evaluate merges them (reads state, never
    writes it: shards run concurrently)."""
    from synth_pipeline.evaluation.sharded import load_prep

    ctx = ReleaseContext(config, logical_date, release_root, tracking_uri, progress, attempt)
    ctx.load("audit_shard")
    if ctx.unchanged:
        return ctx.nothing_to_do("audit_shard")
    spec, plan = ctx.planned_shard(shard)
    if not (ctx.path(AUDIT_DIR) / "prepared.pkl").exists():
        raise ReleaseError(f"audit_shard: the audit of {ctx.name} {ctx.release_id} is not prepared; run "
                           "prepare_audit first")
    t0 = time.perf_counter()
    out = _audit_part(ctx, load_prep(ctx.path(AUDIT_DIR)), spec, len(plan))
    ctx.say(f"audit shard {spec.index}: {out['sequences']} synthetic sequences in {time.perf_counter() - t0:.1f}s")
    return {**out, "stage": "audit_shard", "dataset": ctx.name, "release_id": ctx.release_id}


def _prepare_audit(ctx: ReleaseContext) -> Any:
    """Fit the audit's representation on the staged train table and draw its references; stage them."""
    from synth_pipeline.evaluation.sharded import SHARD_FILE, prepare_audit, save_prep

    cfg, model_cfg = ctx.cfg, ctx.model_cfg
    # not cached: evaluate should not hold the real tables while it merges the shards
    prep = prepare_audit(ctx.read_frame("train.parquet", cache=False), ctx.read_frame("holdout.parquet", cache=False),
                         cfg.schema,
                         ctx.gate_cfg, cfg.seed, rare_tokens=(model_cfg.rare_token,),
                         protection=model_cfg.protection(), progress=ctx.detail)
    folder = ctx.path(AUDIT_DIR)
    for old in folder.glob(SHARD_FILE.replace("{:05d}", "*")) if folder.is_dir() else []:
        old.unlink()  # audited against an earlier preparation
    save_prep(prep, folder)
    return prep


def _audit_part(ctx: ReleaseContext, prep: Any, spec: Any, n_parts: int) -> dict[str, Any]:
    """Audit one generated part against the prepared references; stage its npz."""
    from synth_pipeline.evaluation.sharded import audit_shard, save_shard

    part = ctx.read_frame(f"{SHARDS_DIR}/{spec.part_name}")
    out = audit_shard(prep, part, index=spec.index, start=spec.start, total=spec.n_total, count=spec.count,
                      whole=n_parts == 1, progress=ctx.detail)
    save_shard(out, ctx.path(AUDIT_DIR))
    return {"shard": spec.index, "sequences": int(len(out["dcr_units"])), "exact_copies": int(
        json.loads(str(out["meta"]))["exact_hits"])}


def evaluate(config: Any, logical_date: Any, *, release_root: str | Path | None = None,
             tracking_uri: str | None = None, attempt: str | None = None, progress: ProgressSink = False,
             **_: Any) -> dict[str, Any]:
    """Merge the audit shards (any step a mapped task has not staged, the preparation or a shard,
    is run here), log the report, apply the gate. On failure: quarantine record, ``gate=failed``
    on the version, GateFailedError."""
    from synth_pipeline.evaluation import write_outputs

    ctx = ReleaseContext(config, logical_date, release_root, tracking_uri, progress, attempt)
    s = ctx.load("evaluate")
    if ctx.unchanged:
        return ctx.nothing_to_do("evaluate")
    t0 = time.perf_counter()
    ctx.say(f"auditing {s['n_synthetic']} synthetic sequences against train and holdout (privacy, fidelity, gate)")
    ev, dep = _merged_audit(ctx)
    write_outputs(ev, ctx.path("report"), progress=ctx.detail)
    ctx.say(f"audit done in {ctx.timed('evaluate', t0):.1f}s")
    passed = bool(ev.passed)
    with ctx.run("evaluate") as client:
        _log_audit(ctx, client, ev, dep)
        s["gate"] = {"passed": passed, "reason": ev.gate.reason, "failed": [c.name for c in ev.gate.failed],
                     "explanations": [c.explanation for c in ev.gate.failed]}
        s["manifest"] = rel.build_manifest(ctx.release_id, s, ctx.schema.fingerprint(), ev.gate_dict())
        ctx.say(f"gate {'PASSED' if passed else 'FAILED'}: {ev.gate.reason}")
        if not passed:
            result = _quarantine(ctx, client)
    if not passed:
        ctx.cleanup()
        raise _gate_failed(ctx, result)
    ctx.save()
    return ctx.reply("evaluate", "passed", passed=True, report_uri=s["report_uri"], gate_reason=ev.gate.reason)


def _merged_audit(ctx: ReleaseContext) -> tuple[Any, Any]:
    """The evaluation from the staged audit shards (preparing and auditing what no task staged),
    with generate's dependency diagnostic and the DP guarantee; ``(evaluation, dependency or None)``."""
    from synth_pipeline.evaluation.dependency import DependencyResult
    from synth_pipeline.evaluation.sharded import load_prep, load_shard, merge_audit, shard_path

    audit = ctx.path(AUDIT_DIR)
    prep = load_prep(audit) if (audit / "prepared.pkl").exists() else _prepare_audit(ctx)
    plan = ctx.shard_plan()
    todo = [p for p in plan if not shard_path(audit, p.index).exists()]
    if todo and len(todo) < len(plan):
        ctx.say(f"auditing {len(todo)} shard(s) no audit_shard task staged")
    for p in todo:
        _audit_part(ctx, prep, p, len(plan))
    shards = [load_shard(audit, p.index) for p in plan]
    try:
        ev = merge_audit(prep, shards, progress=ctx.detail)
    finally:
        for f in shards:
            f.close()
    dep = None
    if ctx.path(DEPENDENCY_FILE).exists():  # staged by generate; the report shows its heatmap
        dep = DependencyResult.from_state(json.loads(ctx.path(DEPENDENCY_FILE).read_text()))
        ev.artifacts["dependency"] = dep
    ev.guarantee = ctx.state.get("differential_privacy")  # the report's first screen states it
    return ev, dep


def _log_audit(ctx: ReleaseContext, client: Any, ev: Any, dep: Any) -> None:
    """Report, metrics, gate verdict and the dependency diagnostic on the run; alias ``candidate``
    on the version; the report's URI into the state."""
    import numpy as np

    import mlflow

    s, report_files, passed = ctx.state, ctx.report_files, bool(ev.passed)
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
            mlflow.log_artifact(str(ctx.path(DEPENDENCY_FILE)))
        mlflow.log_metrics(final)
        mlflow.set_tags({"gate": "passed" if passed else "failed", "gate_reason": ev.gate.reason[:5000]})
        trk.set_candidate(client, s["model_name"], s["model_version"])  # evaluated: pass or fail
        s["report_uri"] = mlflow.get_artifact_uri("report/report.html")


def _quarantine(ctx: ReleaseContext, client: Any) -> ReleaseResult:
    """A failed gate: the quarantine record (manifest + report, no data), ``gate=failed`` on the version."""
    import mlflow

    s, t0 = ctx.state, time.perf_counter()
    pub = rel.quarantine_release(ctx.root, ctx.name, ctx.release_id, s["manifest"], ctx.report_files)
    ctx.timed("quarantine", t0)
    with trk.mlflow_errors("recording the failed gate in the registry"):
        trk.promote(client, s["model_name"], s["model_version"], False)
        mlflow.set_tags({"release_status": pub.status, "release_path": str(pub.path)})
    return ctx.result(pub.status, False, pub.path)


def _gate_failed(ctx: ReleaseContext, result: ReleaseResult) -> GateFailedError:
    s = ctx.state
    details = "; ".join(f"{n}: {e}" for n, e in zip(s["gate"]["failed"], s["gate"]["explanations"], strict=True))
    return GateFailedError(
        f"release gate failed for {ctx.name} {ctx.release_id}; failed checks: {details or s['gate']['reason']}. "
        f"Quarantine record (manifest + report, "
        f"no data): {result.quarantine_path}. Report in MLflow: {s['report_uri']} (run {s['run_id']}); model "
        f"{s['model_uri']} tagged gate=failed, alias '{trk.CHAMPION}' not moved.",
        result,
    )


# ------------------------------------------------------------------------------------------------
# publish
# ------------------------------------------------------------------------------------------------
def publish(config: Any, logical_date: Any, *, release_root: str | Path | None = None,
            tracking_uri: str | None = None, overwrite: bool | None = None, attempt: str | None = None,
            progress: ProgressSink = False, **_: Any) -> ReleaseResult:
    """Publish the gated synthetic table atomically, move ``champion``, close the run, and remove
    the staging folder. Refuses to run for an attempt whose gate did not pass."""
    import mlflow

    ctx = ReleaseContext(config, logical_date, release_root, tracking_uri, progress, attempt)
    s = ctx.load("publish")
    if ctx.unchanged:
        ctx.say(f"release {ctx.release_id} already published with the same inputs: nothing to do")
        result = ctx.result("unchanged", True, rel.release_path(ctx.root, ctx.name, ctx.release_id))
        ctx.cleanup()
        return result
    if not (s.get("gate") or {}).get("passed"):
        raise ReleaseError(f"publish: the gate of {ctx.name} {ctx.release_id} has not passed (evaluate did not "
                           f"run or failed); nothing was published")
    t0 = time.perf_counter()
    ctx.say(f"publishing release {ctx.release_id} of {ctx.name} under {ctx.root}")
    with ctx.run("publish") as client:
        pub = rel.publish_release(ctx.root, ctx.name, ctx.release_id, None, s["manifest"],
                                  overwrite=s.get("overwrite", False) if overwrite is None else overwrite,
                                  extra_files=ctx.report_files, parts=ctx.path(SHARDS_DIR))
        ctx.timed("publish", t0)
        with trk.mlflow_errors("recording the gate verdict in the registry"):
            trk.promote(client, s["model_name"], s["model_version"], True)
            mlflow.set_tags({"release_status": pub.status, "release_path": str(pub.path)})
            s["timings"]["total"] = sum(v for k, v in s["timings"].items() if k != "total")
            mlflow.log_metrics({f"time.{k}": v for k, v in s["timings"].items()})
    ctx.say(f"{pub.status}: {pub.path} in {time.perf_counter() - t0:.1f}s")
    result = ctx.result(pub.status, True, pub.path)
    ctx.cleanup()
    return result
