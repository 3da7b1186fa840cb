"""``make demo``: one synthetic release of a shipped dataset (pollution windows by default; nasdaq100 is
the second example, where the gate refuses the fast model), end to end
(ingest -> validate -> split -> train -> register -> generate -> evaluate -> gate -> publish),
through ``pipeline.run_release`` with a local SQLite MLflow store. Everything is written under one
work directory: ``releases/``, ``mlflow.db`` and ``mlartifacts/``. Needs nothing outside the package."""

from __future__ import annotations

import datetime as dt
import time
from importlib import resources
from pathlib import Path

from synth_pipeline.dataset_config import DatasetConfig, shipped_config


def shipped_path(kind: str, name: str) -> Path:
    """Path of a file shipped inside the package (``data/`` or ``configs/``)."""
    return Path(str(resources.files("synth_pipeline") / kind / name))


def _limit_threads() -> None:
    """One torch thread unless OMP_NUM_THREADS says otherwise. The fast preset's small GRUs gain
    little from a second thread, and on a busy 2-core machine OpenMP threads spin-wait on each
    other: measured 36x slower training with 2 threads than with 1 while other jobs ran."""
    import os

    if os.environ.get("OMP_NUM_THREADS"):
        return
    import torch

    torch.set_num_threads(1)


DATASETS = ("pollution", "nasdaq100")


def run_demo(workdir: str | Path = ".demo", preset: str = "fast", seed: int = 0,
             logical_date: str | None = None, dataset: str = "pollution") -> int:
    from synth_pipeline import tracking
    from synth_pipeline.errors import GateFailedError
    from synth_pipeline.pipeline import run_release

    t0 = time.perf_counter()
    workdir = Path(workdir).resolve()
    date = logical_date or dt.date.today().isoformat()
    from synth_pipeline.errors import ConfigError

    if dataset not in DATASETS:
        raise ConfigError(f"unknown demo dataset '{dataset}'; valid: {', '.join(DATASETS)}")
    print(f"[demo] {dataset} release {date} ({preset} preset) -> {workdir}; each phase prints a line when it starts "
          f"and when it ends (training shows progress bars)", flush=True)
    _limit_threads()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = DatasetConfig.from_yaml(shipped_config(dataset))
    cfg.model_preset, cfg.seed = preset, seed
    cfg.release_root = workdir / "releases"
    cfg.tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    try:
        res = run_release(cfg, date)
        verdict = "PASSED" if res.passed else "FAILED"
    except GateFailedError as e:  # the pipeline worked; the audit refused the model
        res = e.result
        verdict = "FAILED"
        print(f"[demo] {e}", flush=True)
    print()
    if res.status == "unchanged":
        print(f"release {date} was already published with the same inputs: nothing retrained (rerun no-op)")
    if res.passed:
        print(f"release path:  {res.release_path}")
    else:
        print(f"quarantined:   {res.quarantine_path} (manifest + report, no data)")
    print(f"model URI:     {res.model_uri}" + (f"   (champion: {res.champion_uri})" if res.passed else ""))
    print(f"gate verdict:  {verdict}" + (f" ({res.gate_reason})" if res.gate_reason else ""))
    if res.report_uri:
        print(f"audit report:  {res.report_uri}")
    print(f"MLflow UI:     {tracking.ui_command(cfg.tracking_uri)}")
    if res.experiment_id and res.run_id:
        print(f"               then open {tracking.run_url(res.experiment_id, res.run_id)} (report/report.html)")
    if not res.passed:
        print("               (`synth-pipeline release` exits 3 here; the demo reports the verdict and exits 0)")
    print(f"[demo] done in {time.perf_counter() - t0:.0f}s")
    return 0
