"""Sharded audit (issue 18 item 2): prepare once, audit each synthetic shard, merge — the same
privacy numbers and gate verdict as the unsharded audit, on real slices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _eval_data import nasdaq, pollution

from synth_pipeline.evaluation import GateConfig, evaluate
from synth_pipeline.evaluation import baselines as B
from synth_pipeline.evaluation.inputs import EvaluationInputError
from synth_pipeline.evaluation.sharded import (
    audit_shard,
    load_prep,
    load_shard,
    merge_audit,
    prepare_audit,
    save_prep,
    save_shard,
)

FAST = {"seeds": 1, "classifier": {"min_steps": 8, "max_steps": 8}}


def _split(df: pd.DataFrame, key: str, k: int = 3) -> list[pd.DataFrame]:
    """``k`` shards of whole sequences, in key order (as generate's parts are)."""
    keys = np.array(sorted(df[key].unique()))
    return [df[df[key].isin(part)].reset_index(drop=True) for part in np.array_split(keys, k)]


def _sharded(train, hold, parts, schema, gate, tmp_path, *, positions=None, metrics=None):
    """prepare -> save/load -> one audit per shard -> npz -> merge (the staged path)."""
    save_prep(prepare_audit(train, hold, schema, gate, seed=0), tmp_path)
    prep = load_prep(tmp_path)
    for i, part in enumerate(parts):
        save_shard(audit_shard(prep, part, index=i, whole=False, **(positions[i] if positions else {})), tmp_path)
    return merge_audit(prep, [load_shard(tmp_path, i) for i in range(len(parts))], metrics=metrics)


def _privacy(res) -> dict:
    p = {k: dict(v) for k, v in res.privacy.items()}
    p["dcr"].pop("search")  # how the search ran (per-shard counts summed), not a result
    return p


def _same(a, b) -> None:
    pa, pb = _privacy(a), _privacy(b)
    assert pa == pb
    assert a.privacy["dcr"]["share"] == b.privacy["dcr"]["share"]
    assert (a.privacy["dcr"]["ci_low"], a.privacy["dcr"]["ci_high"]) == (b.privacy["dcr"]["ci_low"],
                                                                        b.privacy["dcr"]["ci_high"])
    assert a.privacy["membership"]["auc"] == b.privacy["membership"]["auc"]
    np.testing.assert_array_equal(a.artifacts["dcr"].d_train, b.artifacts["dcr"].d_train)
    assert a.passed == b.passed and a.gate.reason == b.gate.reason
    assert a.values() == b.values()
    assert a.sizes == b.sizes


@pytest.fixture(scope="module")
def panel(shared_data):
    return nasdaq(shared_data)


def test_three_shards_equal_unsharded_on_a_panel(panel, tmp_path):
    """nasdaq100 windows (Symbol entities, clustered intervals) with one copied train symbol: DCR share,
    interval, parts, membership, exact copies, row matches, fidelity and the gate verdict all equal."""
    _, train, hold, schema = panel
    syn = pd.concat([B.holdout_as_synthetic(hold, schema), train[train["Symbol"] == train["Symbol"].iloc[0]]])
    whole = evaluate(train, hold, syn, schema, gate_config=FAST)
    parts = _split(syn, "Symbol")
    assert len(parts) == 3 and all(len(p) for p in parts)
    sharded = _sharded(train, hold, parts, schema, FAST, tmp_path)
    _same(whole, sharded)
    assert sharded.privacy["exact_copies"]["count"] == 7 and not sharded.passed
    assert set(whole.privacy) >= {"dcr", "dcr_parts", "membership", "exact_copies", "row_matches"}
    assert sharded.privacy["dcr"]["n_reference_units"] == whole.privacy["dcr"]["n_reference_units"]
    assert sharded.privacy["dcr"]["search"]["train_sample"]["queries"] == whole.privacy["dcr"]["n_synthetic"]
    # the fidelity metrics saw the same synthetic sequences (all of them: fewer than max_sequences)
    for name, m in whole.metrics.items():
        assert m.to_dict() == sharded.metrics[name].to_dict(), name


def test_three_shards_equal_unsharded_on_windows_with_a_cap(shared_data, tmp_path):
    """pollution (one series, sequence_id windows), train + 1 % noise, and audit_max_synthetic: the
    subset is drawn by position over all shards, so the audited sequences are the same."""
    _, train, hold, schema = pollution(shared_data)
    syn = B.train_plus_noise(train, schema)
    gate = {**FAST, "audit_max_synthetic": 150, "max_sequences": 120}
    whole = evaluate(train, hold, syn, schema, gate_config=gate, metrics=[])
    parts = _split(syn, "sequence_id")
    counts = [p["sequence_id"].nunique() for p in parts]
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    positions = [{"start": int(s), "total": int(sum(counts)), "count": c} for s, c in zip(starts, counts, strict=True)]
    sharded = _sharded(train, hold, parts, schema, gate, tmp_path, positions=positions, metrics=[])
    _same(whole, sharded)
    assert whole.privacy["dcr"]["n_synthetic"] == 150 and not whole.passed
    # the fidelity sample: the same 120 sequences, in order, whatever the shard count
    a, b = whole.artifacts["synthetic"], sharded.artifacts["synthetic"]
    assert len(a) == len(b) == 120
    np.testing.assert_array_equal(a.seq_hash, b.seq_hash)
    np.testing.assert_array_equal(a.dyn, b.dyn)


def test_a_shard_holds_only_its_sequences_and_a_bounded_sample(panel, tmp_path):
    _, train, hold, schema = panel
    syn = B.holdout_as_synthetic(hold, schema)
    prep = prepare_audit(train, hold, schema, {**FAST, "max_sequences": 20}, seed=0)
    part = _split(syn, "Symbol")[0]
    out = audit_shard(prep, part, index=0, whole=False)
    n = len(out["d_train"])
    assert 0 < n < len(syn) and len(out["sample_key"]) == 20 and out["sample_dyn"].shape[0] == 20
    assert out["mem_train"].shape == (len(prep.train_ref),)  # per real reference: nearest in this shard


def test_a_cap_needs_the_planned_positions(shared_data):
    _, train, hold, schema = pollution(shared_data)
    syn = B.holdout_as_synthetic(hold, schema)
    prep = prepare_audit(train, hold, schema, GateConfig(**{**FAST, "audit_max_synthetic": 100}), seed=0)
    part = _split(syn, "sequence_id")[0]
    with pytest.raises(EvaluationInputError, match="audit_max_synthetic"):
        audit_shard(prep, part, index=0, start=0, total=len(syn), count=part["sequence_id"].nunique() + 1)


def test_a_shard_without_values_in_a_column_is_refused(panel):
    _, train, hold, schema = panel
    syn = B.holdout_as_synthetic(hold, schema)
    part = _split(syn, "Symbol", 2)[1].assign(Close=np.nan)
    prep = prepare_audit(train, hold, schema, FAST, seed=0)
    with pytest.raises(EvaluationInputError, match=r"this shard of the synthetic column\(s\) \['Close'\] contain only"):
        audit_shard(prep, part, index=1, whole=False)
