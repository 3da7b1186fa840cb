"""What the release tests share: the shipped panel, a tiny model budget, gates that pass or fail
by construction, and a config writer."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from synth_pipeline.dataset_config import shipped_config

DATA = Path(__file__).resolve().parents[1] / "synth_pipeline" / "data" / "nasdaq100_2019.csv"
TINY = {"vae_steps": 30, "diffusion_steps": 30, "static_steps": 10, "progress": False}
# Fidelity and DCR-share thresholds off (a 30-step model is neither faithful nor calibrated);
# evidence, exact-copy and row-match checks stay on.
PASS_GATE = {"min_sequences": 10, "seeds": 1, "classifier": {"min_steps": 5, "max_steps": 20}, "dcr_share_max": None,
             "dcr_parts_share_max": None, "membership_auc_max": None,
             "discriminative_max": None, "temporal_discriminative_max": None, "predictive_ratio_max": None,
             "correlation_max": None, "marginals_max": None, "autocorrelation_max": None}
FAIL_GATE = {**PASS_GATE, "min_sequences": 10_000}  # impossible evidence requirement


def write_config(workspace: Path, uri: str, gate: dict, name: str = "release.yaml", dataset: str = "nasdaq100",
                 **extra) -> Path:
    """A config file next to copies of the shipped schema (relative paths resolved from it)."""
    shutil.copy(shipped_config("nasdaq100").parent / "nasdaq100.schema.yaml", workspace / "nasdaq100.schema.yaml")
    cfg = {
        "name": dataset,
        "sources": {"events": str(DATA)},
        "schema": "nasdaq100.schema.yaml",
        "model": {"preset": "fast", "overrides": TINY},
        "split": {"holdout_fraction": 0.25},
        "generate": {"n_sequences": 60},
        "seed": 0,
        "gate": gate,
        "release": {"root": "releases"},
        "mlflow": {"tracking_uri": uri},
        **extra,
    }
    p = workspace / name
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p
