"""Helpers shared by the benchmark scripts (bench_peers.py, bench_options.py, bench_speed.py,
bench_budget.py): long series cut into windows, the markdown cells of an audited table, a timed
fit + sample of the fast preset, the steps per training stage, one run in its own process and the
results file it is appended to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def cell(v: Any, fmt: str = "{:.3f}", missing: str = "—") -> str:
    return missing if v is None else fmt.format(v)


def audit_cells(r: dict[str, Any]) -> str:
    """discriminative | temporal | predictive | DCR share (95% CI) of one audited synthetic table."""
    lo, hi = r["dcr_ci"]
    return (f"{cell(r['discriminative'])} | {cell(r['temporal_discriminative'])} | {cell(r['predictive'])} | "
            f"{cell(r['dcr_share'])} ({lo:.2f}–{hi:.2f})")


def windowed(raw: Any, time_col: str, window: int, name: str, every: int = 1) -> tuple[Any, Any]:
    """A long series -> non-overlapping ``window``-step windows, each an entity keyed ``window``
    (repeated timestamps keep the first; a partial last window is dropped; ``every``: keep every
    every-th window only, a smaller panel spread over the whole series). Returns (frame, schema)."""
    import numpy as np

    from synth_pipeline.ingest import coerce
    from synth_pipeline.schema import infer_schema

    s0 = infer_schema(raw, time_index=time_col, name=name)
    s0.drop_duplicate_times = True  # metro_traffic repeats timestamps
    df = coerce(raw, s0).reset_index(drop=True)
    df = df.iloc[: len(df) // window * window].copy()
    k = np.arange(len(df)) // window
    df.insert(0, "window", np.char.add("w", k.astype(str)))
    df = df[k % every == 0].reset_index(drop=True)
    schema = infer_schema(df, time_index=time_col, entity_key="window", name=name)
    return coerce(df, schema), schema


def fit_and_sample(schema: Any, cfg: Any, train: Any, seed: int) -> tuple[Any, Any, float, float]:
    """Fit a ``Synthesizer`` on ``train``, then sample as many sequences as train has entities (seed
    ``seed + 1``). Returns (synthesizer, synthetic, fit seconds, sample seconds)."""
    from synth_pipeline.synthesizer import Synthesizer

    t0 = time.perf_counter()
    syn = Synthesizer(schema, cfg).fit(train)
    fit_s = time.perf_counter() - t0
    n = int(train[schema.entity_key].nunique())
    t0 = time.perf_counter()
    synthetic = syn.sample(n, seed=seed + 1)
    sample_s = time.perf_counter() - t0
    return syn, synthetic, fit_s, sample_s


def stage_steps(history: list[dict[str, Any]]) -> dict[str, int]:
    """Optimisation steps per training stage: the last ``<stage>/loss`` record of each stage carries its step."""
    steps: dict[str, int] = {}
    for rec in history:
        for k in rec:
            if k.endswith("/loss"):
                steps[k.split("/")[0]] = rec["step"]
    return steps


def run_child(script: str, args: list[str], what: str, label: str, overrides: str) -> dict[str, Any] | None:
    """``python script args`` in its own process (cwd: the repository); its last stdout line is a JSON
    row, returned with ``label``, the ``overrides`` (JSON), wall seconds, the 1-minute load averages
    before/after and the UTC time added. A failed child prints ``<what>: FAILED ...`` and gives None."""
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        print(f"{what}: FAILED {res.stderr.strip().splitlines()[-3:]}", flush=True)
        return None
    row = json.loads(res.stdout.strip().splitlines()[-1])
    row.update(label=label, overrides=json.loads(overrides), wall_seconds=round(time.perf_counter() - t0, 1),
               load_avg_1m=[round(load0, 2), round(os.getloadavg()[0], 2)],
               when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    return row


def append_run(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` to ``{"runs": [...]}`` in ``path`` (created if absent), written atomically."""
    doc = json.loads(path.read_text()) if path.exists() else {"runs": []}
    doc["runs"].append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)
