"""Reports the broken dataset configs in ``configs/`` as this file's Airflow DAG import error.

It defines no DAG. ``synthetic_releases.py`` builds the DAGs of the healthy configs and skips the
broken ones; their errors are raised here, one line per config naming the file and the key,
because Airflow marks every DAG of a file with an import error as stale (unscheduled).
"""

from __future__ import annotations

from pathlib import Path

from synth_pipeline.operators.factory import check_configs

check_configs(Path(__file__).resolve().parent / "configs")
