"""Sharded generation (issue 18 item 1): plan, determinism, unique keys, manifest entries."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from synth_pipeline.errors import ConfigError
from synth_pipeline.release import ReleaseError
from synth_pipeline.shards import ShardSpec, part_entries, plan_shards, shard_count, write_shard, write_shards


class FakeSynth:
    """Deterministic sampler: k sequences of 3 rows each, values from the seed."""

    schema = SimpleNamespace(entity_key="sequence_id", columns=[])
    encoder = SimpleNamespace(max_len=3)

    def sample(self, k: int, seed: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        ids = np.repeat(np.arange(k), 3)
        return pd.DataFrame({"sequence_id": [f"syn-{i + 1:06d}" for i in ids], "x": rng.normal(size=3 * k)})


def test_plan_covers_all_sequences_contiguously():
    specs = plan_shards(10, seed=7, shards=3)
    assert [s.count for s in specs] == [4, 3, 3]
    assert [s.start for s in specs] == [0, 4, 7]
    assert len({s.seed for s in specs}) == 3 and specs[0].seed == 7
    assert shard_count(250_000) == 3 and shard_count(2, shards=5) == 2
    with pytest.raises(ConfigError, match="generate.shards"):
        plan_shards(10, 0, shards=0)
    assert ShardSpec.from_dict(specs[1].to_dict()) == specs[1]
    with pytest.raises(ConfigError, match="plan_shards"):
        ShardSpec.from_dict({"index": 0, "count": 5, "start": 8, "n_total": 10, "seed": 1})


def test_shards_deterministic_unique_keys_and_manifest(tmp_path):
    syn = FakeSynth()
    specs = plan_shards(10, seed=3, shards=3)
    a = [write_shard(syn, s, tmp_path / "a") for s in specs]
    b = [write_shard(syn, s, tmp_path / "b") for s in reversed(specs)][::-1]  # order of tasks does not matter
    assert [e["sha256"] for e in a] == [e["sha256"] for e in b]
    df = pd.read_parquet(tmp_path / "a")
    assert len(df) == 30 and df["sequence_id"].nunique() == 10
    entries = part_entries(tmp_path / "a", specs)
    assert entries == a and sum(e["rows"] for e in entries) == 30
    (tmp_path / "a" / specs[1].part_name).unlink()
    with pytest.raises(ReleaseError, match="part-00001"):
        part_entries(tmp_path / "a", specs)


def test_one_sampling_loop_for_streamed_files_and_shards(monkeypatch):
    """A one-shard plan samples exactly what the streamed file does (same chunks, seeds and keys);
    several shards in several chunks each still number the release's sequences 1..n once."""
    from synth_pipeline import streaming
    from synth_pipeline.shards import sample_shard

    monkeypatch.setattr(streaming, "CHUNK_ROWS", 6)  # 2 sequences of 3 rows per chunk
    syn = FakeSynth()
    whole = pd.concat(list(streaming.iter_samples(syn, 7, seed=5)), ignore_index=True)
    pd.testing.assert_frame_equal(sample_shard(syn, plan_shards(7, seed=5, shards=1)[0]), whole)
    parts = pd.concat([sample_shard(syn, s) for s in plan_shards(7, seed=5, shards=3)], ignore_index=True)
    assert sorted(parts["sequence_id"].unique()) == [f"syn-{i:06d}" for i in range(1, 8)]
    assert len(parts) == 21


def test_part_is_written_whole_and_readable(tmp_path):
    """A part appears whole under its final name (0644: a release is read by others) or not at all."""
    import stat

    from synth_pipeline.shards import write_part

    spec = plan_shards(3, seed=1, shards=1)[0]
    entry = write_part(FakeSynth().sample(3, 1), spec, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [spec.part_name] == [entry["path"]]
    assert stat.S_IMODE((tmp_path / spec.part_name).stat().st_mode) == 0o644

    class Broken(pd.DataFrame):
        def to_parquet(self, *a, **k):  # noqa: ANN002, ANN003
            Path(a[0]).write_bytes(b"half")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_part(Broken({"x": [1]}), plan_shards(6, seed=1, shards=2)[1], tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [spec.part_name]  # no temp file, no half part


def test_publish_parts_one_release_with_manifest(tmp_path):
    from synth_pipeline.release import publish_release, read_release, release_path, verify_release

    syn = FakeSynth()
    specs = plan_shards(10, seed=3, shards=3)
    entries = [write_shard(syn, s, tmp_path / "staging") for s in specs]
    root = tmp_path / "releases"
    res = publish_release(root, "demo", "20240517", None, {"inputs_fingerprint": "x"}, parts=tmp_path / "staging")
    m = verify_release(res.path)
    listed = {f["path"]: f for f in m["files"]}
    for e in entries:
        assert listed[f"data/{e['path']}"]["sha256"] == e["sha256"]
        assert listed[f"data/{e['path']}"]["rows"] == e["rows"]
    assert m["counts"]["rows"] == 30
    df = read_release(res.path)
    assert len(df) == 30 and df["sequence_id"].nunique() == 10
    import pyarrow.dataset as ds

    assert ds.dataset(res.path / "data", format="parquet").count_rows() == 30
    # nothing partial: an empty staging folder publishes nothing
    with pytest.raises(ReleaseError, match="no part-"):
        publish_release(root, "demo", "20240518", None, {}, parts=tmp_path / "empty")
    assert not release_path(root, "demo", "20240518").exists()


def test_in_process_equals_mapped(tmp_path):
    syn = FakeSynth()
    mapped = [write_shard(syn, ShardSpec.from_dict(s.to_dict()), tmp_path / "m") for s in plan_shards(9, 5, 2)]
    assert write_shards(syn, 9, 5, tmp_path / "p", shards=2) == mapped
