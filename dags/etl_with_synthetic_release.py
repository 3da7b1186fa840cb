"""Example: adding synthetic releases to an ETL DAG you already run, in the two supported ways.

(a) ``etl_prices`` gets the whole release chain as a TaskGroup right after its load task: the
    synthetic release is part of the ETL run and fails the run if its gate fails.
(b) ``synthetic_release_after_etl`` is a separate DAG scheduled on the Asset the ETL's load task
    updates: the ETL stays independent, the release follows every new load. Asset-triggered runs
    have no logical date in Airflow 3; the release is then dated by the run's ``run_after`` day.

Pick one style per dataset in a real deployment: both here release the same data, so (b) uses its
own config (dataset ``prices_on_asset``) to keep the two from releasing one dataset and date at once.

The "ETL" here copies the shipped NASDAQ-100 CSV into a landing folder (``$SYNTH_ETL_LANDING``,
default ``/tmp/synth-etl``); replace it with your own extract/load.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Asset, BaseOperator
from synth_pipeline.operators.factory import synthetic_release

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "etl" / "prices.yaml"
CONFIG_ON_ASSET = HERE / "configs" / "etl" / "prices_on_asset.yaml"
LANDING_ENV = "SYNTH_ETL_LANDING"
PRICES = Asset("file:///synth-etl/prices.csv", extra={"env": LANDING_ENV})


class LoadPricesOperator(BaseOperator):
    """Stand-in for an existing load task: lands the day's table where the release config reads it."""

    template_fields = ("logical_date",)

    def __init__(self, *, logical_date: str = "{{ ds }}", **kwargs) -> None:
        super().__init__(**kwargs)
        self.logical_date = logical_date

    def execute(self, context) -> dict:
        import shutil

        from synth_pipeline.demo import shipped_path

        landing = Path(os.environ.get(LANDING_ENV) or "/tmp/synth-etl")  # the config's default too
        landing.mkdir(parents=True, exist_ok=True)
        tmp = landing / ".prices.csv.tmp"
        shutil.copyfile(shipped_path("data", "nasdaq100_2019.csv"), tmp)
        os.replace(tmp, landing / "prices.csv")
        return {"path": str(landing / "prices.csv"), "logical_date": self.logical_date}


with DAG(dag_id="etl_prices", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         catchup=False, max_active_runs=1, tags=["etl", "example"]) as etl_prices:
    load = LoadPricesOperator(task_id="load_prices", outlets=[PRICES])
    synthetic_release(CONFIG, upstream=load)  # (a)

with DAG(dag_id="synthetic_release_after_etl", schedule=[PRICES], start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         catchup=False, max_active_runs=1, tags=["synthetic-release", "example"]) as synthetic_release_after_etl:
    synthetic_release(CONFIG_ON_ASSET, group_id="release")  # (b)
