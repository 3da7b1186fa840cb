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
# Over-trained: twice the fast preset's step caps as a fixed budget, no early stopping (memorizing_config)
MEMORIZE_OVERRIDES = {"budget": "fixed", "vae_steps": 3000, "diffusion_steps": 4800, "patience": 1000}


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


def pollution_config(workspace: Path, uri: str, name: str, *, gate: dict | None = None,
                     overrides: dict | None = None, file: str = "pollution.yaml") -> Path:
    """The shipped pollution config (the whole series in 24-hour windows: enough windows for the
    default gate to decide) with absolute source/schema paths and this test's server, name and root;
    ``gate=None`` keeps the shipped ``gate: {}`` (every default threshold on)."""
    shipped = shipped_config("pollution")
    cfg = yaml.safe_load(shipped.read_text())
    cfg.update(name=name, sources={"events": str((shipped.parent / cfg["sources"]["events"]).resolve())},
               schema=str((shipped.parent / cfg["schema"]).resolve()),
               release={"root": "releases"}, mlflow={"tracking_uri": uri})
    if gate is not None:
        cfg["gate"] = gate
    if overrides is not None:
        cfg["model"] = {"preset": "fast", "overrides": overrides}
    p = workspace / file
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


def memorizing_config(workspace: Path, uri: str, name: str, *, file: str = "memorizing.yaml") -> Path:
    """A model that stays too close to its training entities, with enough held-out evidence for the
    default gate to say so (issue 15 item 4): the packaged nasdaq100 panel cut into 24-day windows
    (7 per stock), split 50/50 by stock (~357 train / 364 held-out windows, 51-52 stocks a side),
    MEMORIZE_OVERRIDES; the audit's bootstrap resamples stocks, not windows."""
    schema = yaml.safe_load((shipped_config("nasdaq100").parent / "nasdaq100.schema.yaml").read_text())
    schema["sequence_length"] = 24
    (workspace / f"{name}.schema.yaml").write_text(yaml.safe_dump(schema, sort_keys=False))
    return write_config(workspace, uri, {}, name=file, dataset=name, schema=f"{name}.schema.yaml",
                        model={"preset": "fast", "overrides": {"progress": False, **MEMORIZE_OVERRIDES}},
                        split={"holdout_fraction": 0.5}, generate={"n_sequences": 600})


def assert_refused_as_memorization(manifest: dict) -> None:
    """The default gate's verdict on memorizing_config's model: enough evidence, and the DCR share and
    the membership attack both decided against it (not 'insufficient evidence')."""
    from synth_pipeline.evaluation.gate import INSUFFICIENT

    checks = {c["name"]: c for c in manifest["gate"]["checks"]}
    assert checks["evidence"]["passed"], checks["evidence"]
    for name, says in (("dcr_share", "(memorization)"), ("membership", "membership can be inferred")):
        c = checks[name]
        assert not c["passed"] and c["threshold"] == 0.6 and says in c["explanation"], c
        assert not c["explanation"].startswith(INSUFFICIENT), c


def assert_passed_every_default_check(manifest: dict) -> None:
    """The default gate's verdict on a model that earns it: every default check ran with a threshold
    (none disabled) and passed."""
    checks = {c["name"]: c for c in manifest["gate"]["checks"]}
    for name in ("evidence", "dcr_share", "membership", "exact_copies", "discriminative", "temporal_discriminative",
                 "predictive", "correlation", "marginals"):
        assert checks[name]["threshold"] is not None and checks[name]["passed"], checks[name]
