"""Shared by the peer runners (each runs in its own virtual environment, so this file imports only
the standard library, pandas and numpy): the job spec, peak-RSS reading and the atomic result."""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import pandas as pd


def parse_args(extra: dict[str, Any] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, help="folder with train.parquet and meta.json")
    ap.add_argument("--out", required=True, help="folder for synthetic.parquet and result.json")
    for name, default in (extra or {}).items():
        ap.add_argument(f"--{name}", type=type(default), default=default)
    return ap.parse_args()


def load_job(work: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    meta = json.loads((Path(work) / "meta.json").read_text())
    return pd.read_parquet(Path(work) / "train.parquet"), meta


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Clock:
    def __init__(self) -> None:
        self.t = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        return dt


def write_result(out: str, synthetic: pd.DataFrame, result: dict[str, Any]) -> None:
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    synthetic.to_parquet(o / "synthetic.parquet.tmp", index=False)
    os.replace(o / "synthetic.parquet.tmp", o / "synthetic.parquet")
    (o / "result.json.tmp").write_text(json.dumps(result, indent=2))
    os.replace(o / "result.json.tmp", o / "result.json")
