"""Registry consistency (a real ``mlflow server``): champion follows the newest passing logical date,
killed attempts are closed as stale, and a version that did not pass its gate is not servable."""

from __future__ import annotations

import uuid

import pytest

from synth_pipeline import tracking as trk


@pytest.fixture
def client(mlflow_server):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)


def _version(client, name: str, logical_date: str, tmp_path) -> str:
    run = client.create_run(client.create_experiment(f"exp-{uuid.uuid4().hex[:8]}"),
                            tags={"release_id": logical_date, "gate": "pending"})
    mv = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    trk.tag_version(client, name, mv.version, {"logical_date": logical_date, "gate": "pending"})
    return str(mv.version)


def test_champion_follows_the_newest_passing_logical_date(client, tmp_path):
    name = f"reg-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    v_may17 = _version(client, name, "2024-05-17", tmp_path)
    v_may20 = _version(client, name, "2024-05-20", tmp_path)
    assert trk.promote(client, name, v_may17, True) is True
    assert trk.promote(client, name, v_may20, True) is True
    assert trk.champion_version(client, name) == v_may20
    backfill = _version(client, name, "2024-05-17", tmp_path)  # --overwrite of the older date
    assert trk.promote(client, name, backfill, True) is False
    assert trk.champion_version(client, name) == v_may20  # never moved back
    assert client.get_model_version(name, backfill).tags["gate"] == "passed"
    failed = _version(client, name, "2024-06-01", tmp_path)
    assert trk.promote(client, name, failed, False) is False
    assert trk.champion_version(client, name) == v_may20


def test_killed_attempts_are_closed_as_stale_on_the_next_attempt(client, tmp_path):
    name = f"reg-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    exp = client.create_experiment(f"exp-{uuid.uuid4().hex[:8]}")
    killed = client.create_run(exp, tags={"release_id": "2024-05-17", "gate": "pending"})  # left RUNNING
    finished = client.create_run(exp, tags={"release_id": "2024-05-17", "gate": "pending"})
    client.set_terminated(finished.info.run_id, "FINISHED")
    other_date = client.create_run(exp, tags={"release_id": "2024-05-18", "gate": "pending"})
    done = client.create_run(exp, tags={"release_id": "2024-05-17", "gate": "passed"})
    mv = client.create_model_version(name, f"{killed.info.artifact_uri}/model", run_id=killed.info.run_id)
    client.set_model_version_tag(name, mv.version, "gate", "pending")
    current = client.create_run(exp, tags={"release_id": "2024-05-17", "gate": "pending"})

    closed = trk.mark_stale_attempts(client, exp, name, "2024-05-17", current.info.run_id)
    assert set(closed) == {killed.info.run_id, finished.info.run_id}
    for rid in closed:
        r = client.get_run(rid)
        assert r.info.status == "FAILED" and r.data.tags["gate"] == "stale"
    assert client.get_run(other_date.info.run_id).data.tags["gate"] == "pending"  # another date: untouched
    assert client.get_run(done.info.run_id).data.tags["gate"] == "passed"
    assert client.get_run(current.info.run_id).info.status == "RUNNING"
    assert client.get_model_version(name, mv.version).tags["gate"] == "stale"
