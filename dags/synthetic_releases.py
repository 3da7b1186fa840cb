"""Nightly synthetic releases: one ``synthetic_release_<dataset>`` DAG per YAML in ``configs/``.

Add a dataset by dropping its config into ``dags/configs/`` (its ``*.schema.yaml`` may sit beside it;
see synth_pipeline/dataset_config.py
for the format; relative paths resolve against the config file). A broken config shows up as one
import error for this file naming that config, and the other datasets' DAGs still load.
Parsing imports Airflow and the operators only (no torch, pandas, MLflow or Great Expectations).
"""

from __future__ import annotations

from pathlib import Path

from synth_pipeline.operators.factory import release_dags

globals().update(release_dags(Path(__file__).resolve().parent / "configs"))
