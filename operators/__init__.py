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
