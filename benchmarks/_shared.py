"""Helpers shared by the benchmark scripts (bench_peers.py, bench_options.py): long series cut into
windows, and the markdown cells of an audited table."""

from __future__ import annotations

from typing import Any


def cell(v: Any, fmt: str = "{:.3f}", missing: str = "—") -> str:
    return missing if v is None else fmt.format(v)


def audit_cells(r: dict[str, Any]) -> str:
    """discriminative | temporal | predictive | DCR share (95% CI) of one audited synthetic table."""
    lo, hi = r["dcr_ci"]
    return (f"{cell(r['discriminative'])} | {cell(r['temporal_discriminative'])} | {cell(r['predictive'])} | "
            f"{cell(r['dcr_share'])} ({lo:.2f}–{hi:.2f})")


def windowed(raw: Any, time_col: str, window: int, name: str) -> tuple[Any, Any]:
    """A long series -> non-overlapping ``window``-step windows, each an entity keyed ``window``
    (repeated timestamps keep the first; a partial last window is dropped). Returns (frame, schema)."""
    import numpy as np

    from synth_pipeline.ingest import coerce
    from synth_pipeline.schema import infer_schema

    s0 = infer_schema(raw, time_index=time_col, name=name)
    s0.drop_duplicate_times = True  # metro_traffic repeats timestamps
    df = coerce(raw, s0).reset_index(drop=True)
    df = df.iloc[: len(df) // window * window].copy()
    df.insert(0, "window", np.char.add("w", (np.arange(len(df)) // window).astype(str)))
    schema = infer_schema(df, time_index=time_col, entity_key="window", name=name)
    return coerce(df, schema), schema
