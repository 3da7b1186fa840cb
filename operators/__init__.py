"""Airflow 3 front-end of synth-pipeline, shipped as ``synth_pipeline.operators``.

Importing this package must stay cheap and must not import Airflow: the provider entry point
below is read by every Airflow command on the machine.
"""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    """Provider metadata for ``apache_airflow_provider`` (package-name must equal the dist name)."""
    from synth_pipeline import __version__

    return {
        "package-name": "synth-pipeline",
        "name": "Synth Pipeline",
        "description": "Privacy-safe synthetic releases of time-series and panel tables, tracked in MLflow.",
        "versions": [__version__],
    }


_EXPORTS = {
    "SyntheticStageOperator": "stages", "SyntheticIngestOperator": "stages", "SyntheticValidateOperator": "stages",
    "SyntheticTrainOperator": "stages", "SyntheticGenerateOperator": "stages",
    "SyntheticPlanGenerationOperator": "stages", "SyntheticGenerateShardOperator": "stages",
    "SyntheticPrepareAuditOperator": "stages", "SyntheticAuditShardOperator": "stages", "SyntheticEvaluateOperator": "stages",
    "SyntheticPublishOperator": "stages", "synthetic_release": "factory", "release_dag": "factory",
    "release_dags": "factory", "release_asset": "factory", "read_settings": "factory",
    "check_configs": "factory",
}


def __getattr__(name: str) -> Any:
    """Lazy exports: ``from synth_pipeline.operators import synthetic_release`` imports Airflow
    only then, never when Airflow reads the provider info."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'synth_pipeline.operators' has no attribute '{name}'")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = ["get_provider_info", *_EXPORTS]
