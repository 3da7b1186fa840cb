"""Nightly synthetic releases: one ``synthetic_release_<dataset>`` DAG per YAML in ``configs/``.

Add a dataset by dropping its config into ``dags/configs/`` (its ``*.schema.yaml`` may sit beside it;
see synth_pipeline/dataset_config.py for the format; relative paths resolve against the config
file). A broken config gets no DAG here and is reported as the import error of
``synthetic_release_config_errors.py``: an import error of this file would make Airflow stop
scheduling every dataset's DAG, not just the broken one's.
Parsing imports Airflow and the operators only (no torch, pandas, MLflow or Great Expectations).
"""

from __future__ import annotations

from pathlib import Path

from synth_pipeline.operators.factory import release_dags

globals().update(release_dags(Path(__file__).resolve().parent / "configs"))
