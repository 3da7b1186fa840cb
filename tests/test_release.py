"""Releases on disk: layout, manifest hashes, _SUCCESS, LATEST, reruns, quarantine, bad names,
an unwritable root, and a publish killed with SIGKILL midway (real subprocess, real kill -9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synth_pipeline import release as rel
from synth_pipeline.errors import ReleaseError


def _table(seed: int = 0, n: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "sequence_id": np.repeat(np.arange(n // 5), 5),
        "t": pd.date_range("2024-01-01", periods=n, freq="h"),
        "x": rng.normal(size=n),
        "c": rng.choice(["a", "b"], size=n),
    })


def _manifest(fp: str = "fp-1") -> dict:
    return {"inputs_fingerprint": fp, "logical_date": "2024-05-17", "model": {"name": "d-synthesizer", "version": "1"},
            "counts": {"sequences": 10}, "gate": {"passed": True, "checks": []}}


def _visible(ds_dir: Path) -> list[str]:
    return sorted(p.name for p in ds_dir.iterdir() if not p.name.startswith("."))


def test_publish_layout_manifest_hashes_and_latest(tmp_path):
    report = tmp_path / "report.html"
    report.write_text("<html>aggregates only</html>")
    res = rel.publish_release(tmp_path / "rel", "demo_ds", "2024-05-17", _table(), _manifest(),
                              extra_files={"report/report.html": report})
    assert res.status == "published"
    d = tmp_path / "rel" / "demo_ds" / "2024-05-17"
    assert res.path == d
    assert (d / "data" / "part-00000.parquet").is_file() and (d / "_SUCCESS").is_file()
    manifest = json.loads((d / "manifest.json").read_text())
    for key in ("dataset", "release_id", "logical_date", "model", "counts", "gate", "files", "created_at",
                "package_version", "inputs_fingerprint"):
        assert key in manifest, key
    assert manifest["counts"]["rows"] == 50 and manifest["counts"]["sequences"] == 10
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == {"data/part-00000.parquet", "report/report.html"}
    for path, f in listed.items():  # contents match the manifest hashes
        assert rel.sha256_file(d / path) == f["sha256"]
        assert (d / path).stat().st_size == f["bytes"]
    assert rel.verify_release(d)["release_id"] == "2024-05-17"
    pd.testing.assert_frame_equal(rel.read_release(d), _table(), check_dtype=False)
    assert (tmp_path / "rel" / "demo_ds" / "LATEST").read_text().strip() == "2024-05-17"
    assert rel.latest_release(tmp_path / "rel", "demo_ds") == d
    assert _visible(tmp_path / "rel" / "demo_ds") == ["2024-05-17", "LATEST"]  # no staging left behind

    # tampering is detected
    (d / "report" / "report.html").write_text("changed")
    with pytest.raises(ReleaseError, match="does not match"):
        rel.verify_release(d)


def test_rerun_is_noop_and_changed_release_is_refused_without_overwrite(tmp_path):
    root = tmp_path / "rel"
    first = rel.publish_release(root, "ds", "2024-05-17", _table(), _manifest())
    data = first.path / "data" / "part-00000.parquet"
    mtime = data.stat().st_mtime_ns
    again = rel.publish_release(root, "ds", "2024-05-17", _table(), _manifest())
    assert again.status == "unchanged"
    assert data.stat().st_mtime_ns == mtime
    assert again.manifest["created_at"] == first.manifest["created_at"]

    with pytest.raises(ReleaseError, match="already exists with different content.*overwrite"):
        rel.publish_release(root, "ds", "2024-05-17", _table(seed=1), _manifest("fp-2"))
    assert rel.verify_release(first.path)["inputs_fingerprint"] == "fp-1"  # untouched

    replaced = rel.publish_release(root, "ds", "2024-05-17", _table(seed=1), _manifest("fp-2"), overwrite=True)
    assert replaced.status == "replaced"
    assert rel.verify_release(replaced.path)["inputs_fingerprint"] == "fp-2"
    assert _visible(root / "ds") == ["2024-05-17", "LATEST"]


def test_latest_never_moves_backwards(tmp_path):
    root = tmp_path / "rel"
    rel.publish_release(root, "ds", "2024-05-17", _table(), _manifest())
    rel.publish_release(root, "ds", "2024-05-10", _table(), _manifest())  # backfill
    assert rel.read_latest_id(root / "ds") == "2024-05-17"
    rel.publish_release(root, "ds", "2024-05-18", _table(), _manifest())
    assert rel.read_latest_id(root / "ds") == "2024-05-18"


def test_quarantine_holds_manifest_and_report_but_no_data(tmp_path):
    report = tmp_path / "report.html"
    report.write_text("<html>verdict: failed</html>")
    res = rel.quarantine_release(tmp_path / "rel", "ds", "2024-05-17", _manifest(), {"report/report.html": report})
    q = tmp_path / "rel" / "ds" / "_quarantine" / "2024-05-17"
    assert res.status == "quarantined" and res.path == q
    assert sorted(p.relative_to(q).as_posix() for p in q.rglob("*") if p.is_file()) == [
        "manifest.json", "report/report.html"]
    assert json.loads((q / "manifest.json").read_text())["status"] == "quarantined"
    assert not (tmp_path / "rel" / "ds" / "LATEST").exists()
    assert not (tmp_path / "rel" / "ds" / "2024-05-17").exists()
    with pytest.raises(ReleaseError, match="no data"):
        rel.quarantine_release(tmp_path / "rel", "ds", "2024-05-18", _manifest(), {"data/part-00000.parquet": report})


@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", ".hidden", "", "x" * 101, "a\\b", "_quarantine"])
def test_bad_dataset_names_and_release_ids_are_refused(tmp_path, bad):
    with pytest.raises(ReleaseError):
        rel.publish_release(tmp_path, bad, "2024-05-17", _table(), _manifest())
    with pytest.raises(ReleaseError):
        rel.publish_release(tmp_path, "ds", bad, _table(), _manifest())
    assert not any(p.name != "ds" for p in tmp_path.iterdir())


def test_release_id_for_dates():
    import datetime as dt

    assert rel.release_id_for("2024-05-17") == "2024-05-17"
    assert rel.release_id_for("2024-05-17T00:00:00+00:00") == "2024-05-17"
    assert rel.release_id_for(dt.date(2024, 5, 17)) == "2024-05-17"
    for bad in ("17/05/2024", "2024-13-01", "../2024-05-17", "2024-05-17/../../x"):
        with pytest.raises(ReleaseError):
            rel.release_id_for(bad)


def test_unwritable_release_root_gives_clear_error(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the release root should be")
    with pytest.raises(ReleaseError, match="cannot be created.*writable release root"):
        rel.publish_release(blocker / "releases", "ds", "2024-05-17", _table(), _manifest())


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_release_root_gives_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ReleaseError, match="not writable|cannot be created"):
            rel.publish_release(ro, "ds", "2024-05-17", _table(), _manifest())
    finally:
        ro.chmod(0o700)


def test_sigkill_midway_leaves_no_visible_release_and_rerun_succeeds(tmp_path):
    root = tmp_path / "rel"
    script = textwrap.dedent(f"""
        import numpy as np, pandas as pd
        from synth_pipeline import release as rel
        df = pd.DataFrame({{"x": np.arange(1000.0)}})
        rel.publish_release({str(root)!r}, "ds", "2024-05-17", df, {{"inputs_fingerprint": "fp"}})
        print("FINISHED", flush=True)
    """)
    env = {**os.environ, rel.PAUSE_ENV: "60"}  # sleep after each file written while staging
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ds = root / "ds"
    deadline = time.monotonic() + 60
    staged = []
    while time.monotonic() < deadline and proc.poll() is None:
        staged = list(ds.glob(".tmp-2024-05-17-*/data/part-00000.parquet")) if ds.is_dir() else []
        if staged:
            break
        time.sleep(0.1)
    assert staged, f"publish never reached the data file: {proc.communicate()[1].decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)  # kill -9 midway: data written, manifest and _SUCCESS not yet
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert _visible(ds) == []  # no release folder, no LATEST: nothing a reader could pick up
    assert rel.latest_release(root, "ds") is None
    assert rel.existing_release(root, "ds", "2024-05-17") is None

    res = rel.publish_release(root, "ds", "2024-05-17", pd.DataFrame({"x": np.arange(1000.0)}), {"inputs_fingerprint": "fp"})
    assert res.status == "published"
    assert rel.verify_release(res.path)
    assert sorted(p.name for p in ds.iterdir()) == ["2024-05-17", "LATEST"]  # the stale staging dir is gone
