"""No silent phase (issue 19 item 3): a release announces every phase that can take more than a few
seconds before it starts and reports how long it took when it ends; training shows its progress bar."""

from __future__ import annotations

import re
import time

import pytest
from _release_setup import PASS_GATE, TINY, write_config

from synth_pipeline import stages
from synth_pipeline.pipeline import run_release

SECONDS = r"in (\d+\.\d)s"
# phase -> (start line, done line with its duration)
PHASES = {
    "validation": (r"^validating the staged table \(\d+ rows", rf"^validation .* {SECONDS}$"),
    "MLflow run": (r"^MLflow: opening the run", rf"^MLflow run [0-9a-f]+ opened {SECONDS}$"),
    "training": (r"^training \(fast preset\) on \d+ sequences", rf"^trained {SECONDS}$"),
    "registration": (r"^registering: ", rf"^registered models:/\S+ {SECONDS}"),
    "sampling": (r"^sampling \d+ synthetic sequences", rf"^generated \d+ synthetic sequences \(\d+ rows, \d+ part\(s\)\) {SECONDS}$"),
    "dependency diagnostic": (r"^dependency diagnostic \(", rf"^dependency diagnostic done {SECONDS}"),
    "audit": (r"^auditing \d+ synthetic sequences", rf"^audit done {SECONDS}$"),
    "publish": (r"^publishing release ", rf"^published: \S+ {SECONDS}$"),
}


def _find(lines: list[tuple[float, str]], pattern: str) -> tuple[int, re.Match]:
    for i, (_, text) in enumerate(lines):
        m = re.search(pattern, text)
        if m:
            return i, m
    raise AssertionError(f"no progress line matches {pattern!r}; lines:\n" + "\n".join(t for _, t in lines))


@pytest.mark.slow
def test_release_announces_every_phase_with_its_duration(mlflow_server, tmp_path, one_thread, capfd, monkeypatch):
    monkeypatch.setattr(stages, "DEPENDENCY_SEQUENCES", 4)  # the diagnostic's cost, not its lines, scales with it
    cfg = write_config(tmp_path, mlflow_server, PASS_GATE,
                       model={"preset": "fast", "overrides": {**TINY, "progress": True}})
    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    res = run_release(cfg, "2024-03-01", progress=lambda msg: lines.append((time.perf_counter() - t0, msg)))
    assert res.status == "published"
    for phase, (start, done) in PHASES.items():
        i, _ = _find(lines, start)
        j, m = _find(lines, done)
        assert i < j, f"{phase}: the done line comes before the start line"
        reported, measured = float(m.group(1)), lines[j][0] - lines[i][0]
        assert reported <= measured + 0.5, f"{phase}: reports {reported}s, {measured:.1f}s passed between its lines"
    # the dependency diagnostic reports its progress in quarters; the audit its own steps
    assert any("quadrature points (100%" in t for _, t in lines)
    assert any(t.startswith("fidelity: ") for _, t in lines)
    # training: the model's progress bars (model.progress, on in the presets) go to stderr
    err = capfd.readouterr().err
    assert re.search(r"vae: +\d+%", err) and re.search(r"diffusion: +\d+%", err), err[-2000:]
