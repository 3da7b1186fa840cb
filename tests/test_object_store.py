"""Releases on an object store: a real S3-compatible server (moto in server mode, started here on
127.0.0.1, a free port) reached through pyarrow's S3 filesystem with the standard AWS_* variables.

Publish order without atomic rename (parts, report, manifest.json, _SUCCESS, LATEST last), readers
that trust only a _SUCCESS matching the manifest, reruns / overwrite / backfill as on disk, a
half-published release refused, quarantine records, URI validation, and local roots unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import pick_free_port

from synth_pipeline import release as rel
from synth_pipeline import release_store as rs
from synth_pipeline.errors import ReleaseError, ReleaseStoreError
from synth_pipeline.shards import plan_shards, write_part

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
           "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE",
           "AWS_SHARED_CREDENTIALS_FILE", "AWS_EC2_METADATA_DISABLED")



@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """moto's S3 on 127.0.0.1 and the AWS_* environment pointing at it (restored afterwards)."""
    port = pick_free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    empty = tmp_path_factory.mktemp("aws") / "none"
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_CONFIG_FILE": str(empty), "AWS_SHARED_CREDENTIALS_FILE": str(empty), "AWS_EC2_METADATA_DISABLED": "true",
    })
    for k in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(k, None)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3(s3_endpoint):
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3) -> str:
    name = f"rel-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def uploads(monkeypatch) -> list[str]:
    """Every object key written by release_store, in order (all writes go through ``_upload``)."""
    seen: list[str] = []
    real = rs._upload

    def record(store, key, src):
        real(store, key, src)
        seen.append(key)

    monkeypatch.setattr(rs, "_upload", record)
    return seen


def _parts(folder: Path, n_seq: int = 10, shards: int = 3, seed: int = 3) -> list[dict]:
    """Staged shard parts as generate writes them (no model: a deterministic frame per shard)."""
    out = []
    for spec in plan_shards(n_seq, seed=seed, shards=shards):
        rng = np.random.default_rng(spec.seed)
        ids = np.repeat(np.arange(spec.start, spec.start + spec.count), 3)
        df = pd.DataFrame({"sequence_id": [f"syn-{i + 1:06d}" for i in ids], "x": rng.normal(size=3 * spec.count)})
        out.append(write_part(df, spec, folder))
    return out


def _report(tmp_path: Path) -> dict[str, Path]:
    p = tmp_path / "report.html"
    p.write_text("<html>aggregates only</html>")
    g = tmp_path / "gate.json"
    g.write_text('{"passed": true}')
    return {"report/report.html": p, "report/gate.json": g}


def _manifest(fp: str = "fp-1") -> dict:
    return {"inputs_fingerprint": fp, "logical_date": "2024-05-17", "counts": {"sequences": 10},
            "gate": {"passed": True}}


def _get(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _keys(s3, bucket: str, prefix: str = "") -> dict[str, object]:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.update({o["Key"]: o["LastModified"] for o in page.get("Contents", [])})
    return out


def _files(s3, bucket: str, prefix: str = "") -> set[str]:
    """Object keys, without the empty "folder/" markers pyarrow leaves after deleting a folder's last object."""
    return {k for k in _keys(s3, bucket, prefix) if not k.endswith("/")}


# ------------------------------------------------------------------------------------------------
def test_publish_parts_in_order_and_read_back(tmp_path, s3, bucket, uploads):
    entries = _parts(tmp_path / "staging")
    root = f"s3://{bucket}/releases"
    assert rel.check_release_root(root, "demo") == f"s3://{bucket}/releases/demo"
    assert not [k for k in _keys(s3, bucket) if not k.endswith("/")]  # the write probe is gone
    uploads.clear()
    res = rel.publish_release(root, "demo", "2024-05-17", None, _manifest(), parts=tmp_path / "staging",
                              extra_files=_report(tmp_path))
    uri = f"s3://{bucket}/releases/demo/2024-05-17"
    assert res.status == "published" and res.path == uri
    prefix = f"{bucket}/releases/demo/2024-05-17/"
    # the order: every part, then the report files, then manifest.json, then _SUCCESS, then LATEST
    assert uploads == [prefix + f"data/{e['path']}" for e in entries] + [
        prefix + "report/gate.json", prefix + "report/report.html", prefix + "manifest.json",
        prefix + "_SUCCESS", f"{bucket}/releases/demo/LATEST"]
    stamps = _keys(s3, bucket, "releases/")
    parts = [v for k, v in stamps.items() if "/data/" in k]
    assert max(parts) <= stamps["releases/demo/2024-05-17/manifest.json"] \
        <= stamps["releases/demo/2024-05-17/_SUCCESS"] <= stamps["releases/demo/LATEST"]
    assert not any(".staging" in k for k in stamps)  # staging never goes to the store

    body = _get(s3, bucket, "releases/demo/2024-05-17/manifest.json")
    assert _get(s3, bucket, "releases/demo/2024-05-17/_SUCCESS").decode().strip() == hashlib.sha256(body).hexdigest()
    assert _get(s3, bucket, "releases/demo/LATEST").decode().strip() == "2024-05-17"
    manifest = json.loads(body)
    listed = {f["path"]: f for f in manifest["files"]}
    for e in entries:
        f = listed[f"data/{e['path']}"]
        assert (f["sha256"], f["rows"], f["bytes"]) == (e["sha256"], e["rows"], e["size"])
    assert set(listed) == {f"data/{e['path']}" for e in entries} | {"report/report.html", "report/gate.json"}
    assert manifest["counts"] == {"sequences": 10, "rows": 30, "columns": 2}
    assert manifest["dataset"] == "demo" and manifest["status"] == "published"

    # readers: the package's (verified), plain pyarrow on the URI, pandas through the store's filesystem
    assert rel.verify_release(uri)["release_id"] == "2024-05-17"
    df = rel.read_release(uri)
    assert len(df) == 30 and df["sequence_id"].nunique() == 10
    import pyarrow.dataset as pads

    assert pads.dataset(f"{uri}/data", format="parquet").count_rows() == 30
    m, dataset = rs.open_release(uri)
    assert dataset.count_rows() == 30 and m == manifest
    store = rs.resolve(uri)
    one = pd.read_parquet(store.key("data", entries[0]["path"]), filesystem=store.fs)
    assert len(one) == entries[0]["rows"]
    local = pd.concat([pd.read_parquet(tmp_path / "staging" / e["path"]) for e in entries], ignore_index=True)
    pd.testing.assert_frame_equal(df, local)
    assert rel.latest_release(root, "demo") == uri
    assert rel.existing_release(root, "demo", "2024-05-17") == manifest
    assert rel.release_path(root, "demo", "2024-05-17") == uri


def test_rerun_refusal_overwrite_and_latest_never_moves_back(tmp_path, s3, bucket, uploads):
    root = f"s3://{bucket}/r"
    data = pd.DataFrame({"sequence_id": np.repeat(np.arange(4), 2), "x": np.arange(8.0)})
    first = rel.publish_release(root, "ds", "2024-05-17", data, _manifest())
    assert first.status == "published"
    uploads.clear()
    again = rel.publish_release(root, "ds", "2024-05-17", data, _manifest())
    assert again.status == "unchanged" and uploads == []  # nothing rewritten
    with pytest.raises(ReleaseError, match="already exists with different content.*overwrite=True"):
        rel.publish_release(root, "ds", "2024-05-17", data.assign(x=1.0), _manifest("fp-2"))
    assert rel.read_release(first.path)["x"].tolist() == list(np.arange(8.0))  # untouched
    uploads.clear()
    replaced = rel.publish_release(root, "ds", "2024-05-17", data.assign(x=1.0), _manifest("fp-2"), overwrite=True)
    assert replaced.status == "replaced" and uploads[-2:] == [f"{bucket}/r/ds/2024-05-17/_SUCCESS", f"{bucket}/r/ds/LATEST"]
    assert rel.read_release(replaced.path)["x"].tolist() == [1.0] * 8
    assert rel.existing_release(root, "ds", "2024-05-17")["inputs_fingerprint"] == "fp-2"
    rel.publish_release(root, "ds", "2024-05-10", data, _manifest())  # backfill: LATEST stays
    assert _get(s3, bucket, "r/ds/LATEST").decode().strip() == "2024-05-17"
    rel.publish_release(root, "ds", "2024-05-18", data, _manifest())
    assert rel.latest_release(root, "ds") == f"s3://{bucket}/r/ds/2024-05-18"


def test_half_published_release_is_refused_and_republished(tmp_path, s3, bucket, monkeypatch):
    root = f"s3://{bucket}/r"
    _parts(tmp_path / "staging")
    good = rel.publish_release(root, "ds", "2024-05-16", None, _manifest(), parts=tmp_path / "staging")
    real = rs._upload

    def killed_before_success(store, key, src):
        if key.endswith("/_SUCCESS"):
            raise KeyboardInterrupt("publisher killed")
        real(store, key, src)

    monkeypatch.setattr(rs, "_upload", killed_before_success)
    with pytest.raises(KeyboardInterrupt):
        rel.publish_release(root, "ds", "2024-05-17", None, _manifest(), parts=tmp_path / "staging")
    monkeypatch.setattr(rs, "_upload", real)
    half = f"s3://{bucket}/r/ds/2024-05-17"
    keys = _keys(s3, bucket, "r/ds/2024-05-17/")
    assert "r/ds/2024-05-17/manifest.json" in keys and "r/ds/2024-05-17/_SUCCESS" not in keys
    for read in (rel.verify_release, rel.read_release, rs.open_release):
        with pytest.raises(ReleaseError, match="not a complete release \\(no _SUCCESS\\)"):
            read(half)
    assert rel.existing_release(root, "ds", "2024-05-17") is None
    assert rel.latest_release(root, "ds") == good.path  # LATEST still names the complete one
    # the next publish of that id removes the leftovers and publishes it whole
    res = rel.publish_release(root, "ds", "2024-05-17", None, _manifest(), parts=tmp_path / "staging")
    assert res.status == "published" and len(rel.read_release(half)) == 30
    assert rel.latest_release(root, "ds") == half


def test_overwrite_removes_objects_the_new_release_does_not_have(tmp_path, s3, bucket):
    root = f"s3://{bucket}/r"
    _parts(tmp_path / "three", shards=3)
    _parts(tmp_path / "two", shards=2, seed=4)
    rel.publish_release(root, "ds", "2024-05-17", None, _manifest(), parts=tmp_path / "three",
                        extra_files=_report(tmp_path))
    res = rel.publish_release(root, "ds", "2024-05-17", None, _manifest("fp-2"), parts=tmp_path / "two", overwrite=True)
    assert res.status == "replaced"
    assert _files(s3, bucket, "r/ds/2024-05-17/") == {
        "r/ds/2024-05-17/data/part-00000.parquet", "r/ds/2024-05-17/data/part-00001.parquet",
        "r/ds/2024-05-17/manifest.json", "r/ds/2024-05-17/_SUCCESS"}
    assert len(rel.read_release(res.path)) == 30


def test_tampered_manifest_or_part_is_refused(tmp_path, s3, bucket):
    root = f"s3://{bucket}/r"
    _parts(tmp_path / "staging")
    uri = rel.publish_release(root, "ds", "2024-05-17", None, _manifest(), parts=tmp_path / "staging").path
    key = "r/ds/2024-05-17/manifest.json"
    body = json.loads(_get(s3, bucket, key))
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({**body, "counts": {"rows": 1}}).encode())
    with pytest.raises(ReleaseError, match="does not match the sha256 in _SUCCESS"):
        rel.read_release(uri)
    assert rel.existing_release(root, "ds", "2024-05-17") is None
    uri = rel.publish_release(root, "ds", "2024-05-17", None, _manifest(), parts=tmp_path / "staging").path
    s3.put_object(Bucket=bucket, Key="r/ds/2024-05-17/data/part-00001.parquet", Body=b"not parquet")
    with pytest.raises(ReleaseError, match="part-00001.parquet' does not match its manifest sha256"):
        rel.verify_release(uri)


def test_quarantine_record_on_the_store(tmp_path, s3, bucket):
    root = f"s3://{bucket}/r"
    res = rel.quarantine_release(root, "ds", "2024-05-17", _manifest(), _report(tmp_path))
    assert res.status == "quarantined" and res.path == f"s3://{bucket}/r/ds/_quarantine/2024-05-17"
    keys = _files(s3, bucket)
    assert keys == {"r/ds/_quarantine/2024-05-17/report/report.html", "r/ds/_quarantine/2024-05-17/report/gate.json",
                    "r/ds/_quarantine/2024-05-17/manifest.json"}
    with pytest.raises(ReleaseError, match="hold no data"):
        rel.quarantine_release(root, "ds", "2024-05-18", _manifest(), {"data/part-00000.parquet": tmp_path / "report.html"})
    assert rel.latest_release(root, "ds") is None


def test_missing_bucket_unreachable_endpoint_and_bad_uris(s3_endpoint, free_port):
    with pytest.raises(ReleaseStoreError, match="bucket 'no-such-bucket-x' .* does not exist.*AWS_ENDPOINT_URL"):
        rel.check_release_root("s3://no-such-bucket-x/releases", "ds")
    down = f"s3://somebucket/r?endpoint_override=127.0.0.1:{free_port}&scheme=http"
    with pytest.raises(ReleaseStoreError, match="AWS_ENDPOINT_URL"):
        rel.check_release_root(down, "ds")
    bad = {
        "s3://AKIAXXXX:secret@bucket/r": "carries credentials",
        "s3://bucket/r?region=us-east-1&secret_key=abc": "credentials in its options \\(secret_key\\)",
        "s3:///releases": "names no bucket",
        "s3://bucket/a/../b": "'\\.\\.' segments",
        "nosuchscheme://bucket/r": "unknown scheme 'nosuchscheme://'",
        "memory://x/r?endpoint_override=1": "URI options",
    }
    for uri, msg in bad.items():
        with pytest.raises(ReleaseStoreError, match=msg):
            rel.check_release_root(uri, "ds")
    with pytest.raises(ReleaseStoreError) as e:
        rel.check_release_root("s3://AKIAXXXX:secret@bucket/r", "ds")
    assert "secret" not in str(e.value)
    with pytest.raises(ReleaseError, match="dataset name"):
        rel.publish_release(f"s3://b-{uuid.uuid4().hex[:6]}/r", "../x", "2024-05-17", pd.DataFrame({"a": [1]}), {})


def test_fsspec_protocol_root(tmp_path):
    """A non-pyarrow protocol goes through fsspec (here its in-memory filesystem), same contract."""
    root = f"memory://synth-{uuid.uuid4().hex[:8]}/releases"
    _parts(tmp_path / "staging")
    res = rel.publish_release(root, "ds", "2024-05-17", None, _manifest(), parts=tmp_path / "staging")
    assert res.status == "published" and res.path == f"{root}/ds/2024-05-17"
    assert len(rel.read_release(res.path)) == 30
    assert rel.latest_release(root, "ds") == res.path


def test_local_roots_unchanged_and_staging_stays_local(tmp_path, monkeypatch):
    data = pd.DataFrame({"sequence_id": [0, 0, 1], "x": [1.0, 2.0, 3.0]})
    for root in (tmp_path / "plain", f"file://{tmp_path / 'uri'}"):
        res = rel.publish_release(root, "ds", "2024-05-17", data, _manifest())
        d = rs.local_path(root) / "ds" / "2024-05-17"
        assert res.status == "published" and res.path == d and isinstance(res.path, Path)
        assert (d / "_SUCCESS").read_text() == ""  # local: empty _SUCCESS, atomic rename as before
        assert sorted(p.name for p in d.iterdir()) == ["_SUCCESS", "data", "manifest.json"]
        assert (rs.local_path(root) / "ds" / "LATEST").read_text() == "2024-05-17\n"
        assert rel.read_release(d)["x"].tolist() == [1.0, 2.0, 3.0]
        assert rel.staging_root(root) == rs.local_path(root)
    assert not rs.is_remote(tmp_path) and not rs.is_remote("file:///x") and not rs.is_remote("rel/x")
    assert rs.is_remote("s3://b/x") and rs.is_remote("gs://b/x")
    monkeypatch.setenv(rel.STAGING_ROOT_ENV, str(tmp_path / "stage"))
    assert rel.staging_root("s3://b/x") == tmp_path / "stage"


def test_config_keeps_uri_roots_and_stages_stage_locally(tmp_path, monkeypatch):
    from synth_pipeline.dataset_config import load_config, shipped_config
    from synth_pipeline.stages import STAGING, Stage

    cfg = load_config(shipped_config("nasdaq100"))
    assert cfg.resolved_release_root("s3://bucket/releases/") == "s3://bucket/releases"
    with pytest.raises(ReleaseStoreError, match="carries credentials"):
        cfg.resolved_release_root("s3://k:s@bucket/releases")
    monkeypatch.setenv(rel.STAGING_ROOT_ENV, str(tmp_path / "stage"))
    st = Stage(shipped_config("nasdaq100"), "2024-05-17", "s3://bucket/releases", "sqlite:///x.db", False)
    assert st.root == "s3://bucket/releases"
    assert st.dir == tmp_path / "stage" / STAGING / cfg.name / "2024-05-17"
    assert Stage(shipped_config("nasdaq100"), "2024-05-17", tmp_path / "r", "sqlite:///x.db", False).dir \
        == tmp_path / "r" / STAGING / cfg.name / "2024-05-17"


@pytest.mark.slow
def test_run_release_publishes_to_the_store_and_reruns_are_noops(tmp_path, s3, bucket, one_thread, monkeypatch):
    """The whole chain with ``release.root: s3://...``: staging stays on local disk (and is removed),
    the release lands on the store, and a rerun is decided 'unchanged' from the store's manifest."""
    from dataclasses import fields

    from _release_setup import PASS_GATE, write_config

    from synth_pipeline.evaluation.gate import GateConfig
    from synth_pipeline.pipeline import run_release

    monkeypatch.setenv(rel.STAGING_ROOT_ENV, str(tmp_path / "stage"))
    root = f"s3://{bucket}/releases"
    # this test is about where the release goes, not the verdict: every share / AUC bound off too
    gate = {**PASS_GATE, **{f.name: None for f in fields(GateConfig) if f.name.endswith(("_share_max", "_auc_max"))}}
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", gate, release={"root": root})
    res = run_release(cfg, "2024-05-17", progress=False)
    uri = f"{root}/nasdaq100/2024-05-17"
    assert res.status == "published" and res.passed and res.release_path == uri
    manifest = rel.verify_release(uri)
    assert manifest["model"]["uri"] == res.model_uri and manifest["gate"]["passed"] is True
    assert {f["path"] for f in manifest["files"]} >= {"data/part-00000.parquet", "report/report.html"}
    assert rel.read_release(uri)["Symbol"].nunique() == 60
    assert rel.latest_release(root, "nasdaq100") == uri
    keys = _files(s3, bucket)
    assert not any(".staging" in k or k.endswith(("source.parquet", "train.parquet", "holdout.parquet")) for k in keys)
    assert not list((tmp_path / "stage" / ".staging" / "nasdaq100").glob("*"))  # local staging removed
    again = run_release(cfg, "2024-05-17", progress=False)
    assert again.status == "unchanged" and again.release_path == uri
