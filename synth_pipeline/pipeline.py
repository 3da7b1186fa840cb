"""``run_release(config, logical_date)``: one synthetic release end to end, in one process.

ingest -> validate -> train (+ register) -> generate -> evaluate (+ gate) -> publish

It is the chain of the stage functions in :mod:`synth_pipeline.stages` (the same code the Airflow
operators run one task at a time), with the staging folder removed however the chain ends. See
that module for the order of checks, the MLflow conventions and the privacy rules.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth_pipeline import stages
from synth_pipeline.dataset_config import DatasetConfig
from synth_pipeline.release_context import ReleaseContext, say_fn
from synth_pipeline.schema import DatasetSchema
from synth_pipeline.split import split_sequences  # noqa: F401 - re-exported
from synth_pipeline.stages import (  # noqa: F401 - re-exported: the pipeline's public names
    REPORT_FILES,
    ReleaseResult,
    frame_digest,
    inputs_fingerprint,
    n_sequences_of,
)


@dataclass
class PreparedData:
    """Ingested, validated and split data (in memory only) plus its digests."""

    schema: DatasetSchema
    frame: Any
    train: Any
    holdout: Any
    validation: Any  # ValidationReport
    data_fingerprint: str
    counts: dict[str, int]


def prepare_data(cfg: DatasetConfig) -> PreparedData:
    """ingest -> validate -> split in memory (raises typed errors; nothing is written): the same
    split a release makes, for experiments and notebooks."""
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
    attempt = f"run_release:{uuid.uuid4().hex[:12]}"  # this call owns the staging folder
    kw = dict(release_root=release_root, tracking_uri=tracking_uri, attempt=attempt,
              progress=say_fn(progress))
    if isinstance(config, Mapping):
        config = dict(config)
    staging = ReleaseContext(config, logical_date, release_root, tracking_uri, False, attempt)  # bad config: fails here
    try:
        if stages.ingest(config, logical_date, overwrite=overwrite, **kw)["status"] == "unchanged":
            return stages.publish(config, logical_date, **kw)
        stages.validate(config, logical_date, **kw)
        stages.train(config, logical_date, airflow_context=airflow_context, **kw)
        stages.generate(config, logical_date, **kw)
        stages.evaluate(config, logical_date, **kw)
        return stages.publish(config, logical_date, overwrite=overwrite, **kw)
    finally:
        staging.cleanup(owned_only=True)
