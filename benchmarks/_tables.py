"""Markdown cells shared by the benchmark tables (bench_peers.py, bench_options.py)."""

from __future__ import annotations

from typing import Any


def cell(v: Any, fmt: str = "{:.3f}", missing: str = "—") -> str:
    return missing if v is None else fmt.format(v)


def audit_cells(r: dict[str, Any]) -> str:
    """discriminative | temporal | predictive | DCR share (95% CI) of one audited synthetic table."""
    lo, hi = r["dcr_ci"]
    return (f"{cell(r['discriminative'])} | {cell(r['temporal_discriminative'])} | {cell(r['predictive'])} | "
            f"{cell(r['dcr_share'])} ({lo:.2f}–{hi:.2f})")
