"""An audit's three files: ``metrics.json``, ``gate.json`` and ``report.html``, rendered in memory
first and then written atomically (``synth_pipeline.evaluation`` re-exports :func:`write_outputs`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from synth_pipeline.evaluation.result import EvaluationResult

METRICS_FILE, GATE_FILE, REPORT_FILE = "metrics.json", "gate.json", "report.html"


def write_outputs(result: EvaluationResult, out_dir: str | Path, progress: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Render everything in memory first, then write the three files atomically."""
    import json

    from synth_pipeline.evaluation.report import render_report
    from synth_pipeline.io_utils import READABLE, atomic_write_text

    if progress:
        progress("rendering report.html")
    t = time.perf_counter()
    html = render_report(result)
    result.timings["report"] = time.perf_counter() - t
    metrics_text = json.dumps(result.metrics_dict(), indent=2, sort_keys=True, allow_nan=False)
    gate_text = json.dumps(result.gate_dict(), indent=2, sort_keys=False, allow_nan=False)
    out = Path(out_dir)
    # a report is meant to be read (MLflow artifact, reviewers): READABLE, not the temp file's 0600
    paths = {
        "metrics": atomic_write_text(out / METRICS_FILE, metrics_text, READABLE),
        "gate": atomic_write_text(out / GATE_FILE, gate_text, READABLE),
        "report": atomic_write_text(out / REPORT_FILE, html, READABLE),
    }
    result.paths = paths
    if progress:
        progress(f"wrote {', '.join(str(p) for p in paths.values())}")
    return paths
