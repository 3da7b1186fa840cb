"""The release stages as separate calls (what the Airflow operators do, one task each), without
training: the private staging folder, what later stages check before touching it (order, config,
owner), reruns of a single stage, and that staged state carries no real value."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _release_setup import DATA, PASS_GATE, write_config

from synth_pipeline import stages
from synth_pipeline.errors import ReleaseError

DATE = "2024-05-17"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def staged(tmp_path, mlflow_server):
    """A config and the result of its ingest by attempt 'A' (cheap: no training)."""
    cfg = write_config(tmp_path, mlflow_server, PASS_GATE)
    return cfg, stages.ingest(cfg, DATE, attempt="A")


def test_ingest_stages_real_data_in_a_private_folder_and_returns_small_json(staged, tmp_path):
    cfg, out = staged
    staging = Path(out["staging"])
    assert staging == tmp_path / "releases" / stages.STAGING / "nasdaq100" / DATE
    for folder in (staging, staging.parent, staging.parent.parent):
        assert _mode(folder) == 0o700, folder
    assert sorted(p.name for p in staging.iterdir()) == ["source.parquet", "state.json"]
    assert all(_mode(p) == 0o600 for p in staging.iterdir())
    assert out["status"] == "ingested" and out["rows"] == len(pd.read_csv(DATA))
    assert len(json.dumps(out)) < 1000  # fit for an XCom
    # the state handed to later stages holds digests, counts and names, never a source value
    state = (staging / "state.json").read_text()
    symbols = pd.read_csv(DATA)["Symbol"].unique()
    assert not [s for s in symbols if f'"{s}"' in state]
    assert json.loads(state)["attempt"] == "A"


def test_later_stages_check_order_config_and_owner_before_touching_the_folder(staged, tmp_path):
    cfg, out = staged
    with pytest.raises(ReleaseError, match="found no staged state .* run the earlier stages"):
        stages.validate(cfg, "2024-05-18", attempt="A")
    with pytest.raises(ReleaseError, match="belongs to another attempt \\('A', this is 'B'\\)"):
        stages.validate(cfg, DATE, attempt="B")
    with pytest.raises(ReleaseError, match="gate of nasdaq100 2024-05-17 has not passed"):
        stages.publish(cfg, DATE, attempt="A")
    changed = yaml.safe_load(cfg.read_text())
    changed["seed"] = 1
    cfg.write_text(yaml.safe_dump(changed))
    with pytest.raises(ReleaseError, match="config of nasdaq100 changed since ingest .* rerun from ingest"):
        stages.validate(cfg, DATE, attempt="A")
    assert Path(out["staging"], "source.parquet").exists()  # refusals leave the folder alone


def test_a_stage_can_be_rerun_on_its_own(staged):
    cfg, out = staged
    first = stages.validate(cfg, DATE, attempt="A")
    again = stages.validate(cfg, DATE, attempt="A")  # a cleared Airflow task runs again
    assert first["counts"] == again["counts"] and first["counts"]["train_sequences"] > 0
    names = sorted(p.name for p in Path(out["staging"]).iterdir())
    assert names == ["expectation_suite.json", "holdout.parquet", "source.parquet", "state.json", "train.parquet",
                     "validation_result.json"]


def test_cleanup_of_one_attempt_spares_a_folder_another_attempt_took_over(staged, mlflow_server):
    cfg, out = staged
    mine = stages.Stage(cfg, DATE, None, None, False, attempt="B")
    mine.cleanup(owned_only=True)  # run_release's final cleanup after losing the folder to 'A'
    assert Path(out["staging"], "state.json").exists()
    stages.Stage(cfg, DATE, None, None, False, attempt="A").cleanup(owned_only=True)
    assert not Path(out["staging"]).exists()
