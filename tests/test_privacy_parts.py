"""Memorization by parts, the membership attack, and the entity-clustered DCR interval."""

from __future__ import annotations

import numpy as np
import pytest
from _eval_data import nasdaq, pollution

from synth_pipeline.evaluation import baselines as B
from synth_pipeline.evaluation import evaluate
from synth_pipeline.evaluation.gate import INSUFFICIENT
from synth_pipeline.evaluation.privacy import dcr_audit
from synth_pipeline.evaluation.privacy.membership import auc_delong, distance_attack

PRIVACY_ONLY = {"discriminative_max": None, "temporal_discriminative_max": None, "predictive_ratio_max": None,
                "correlation_max": None, "marginals_max": None, "autocorrelation_max": None,
                "static_consistency_min": None, "min_sequences": 10}


def test_auc_delong_matches_the_pairwise_definition_and_its_variance_shrinks_with_n():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.3, 1, 60).round(1), rng.normal(0, 1, 80).round(1)  # rounded: ties
    auc, se = auc_delong(pos, neg)
    pairwise = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    assert auc == pytest.approx(pairwise, abs=1e-12)
    _, se_big = auc_delong(rng.normal(0.3, 1, 2400), rng.normal(0, 1, 3200))
    assert se_big < se / 4


def test_auc_clustered_by_unit_is_wider_when_windows_repeat_an_entity():
    rng = np.random.default_rng(1)
    ent_effect = rng.normal(0, 1, 20)
    units = np.repeat(np.arange(20), 10)  # 20 entities, 10 windows each: strongly correlated
    pos = ent_effect[units] + 0.1 * rng.normal(size=200)
    neg = rng.normal(0, 1, 20)[units] + 0.1 * rng.normal(size=200)
    _, se_plain = auc_delong(pos, neg)
    _, se_clustered = auc_delong(pos, neg, units, units)
    assert se_clustered > 2 * se_plain


def test_distance_attack_sees_copies_and_not_fresh_draws():
    rng = np.random.default_rng(2)
    train, hold, fresh = (rng.normal(size=(300, 12)) for _ in range(3))
    fresh_res = distance_attack(fresh, train, hold)
    assert fresh_res["ci_low"] <= 0.5 <= fresh_res["ci_high"]
    copies = distance_attack(train[:150] + 0.01 * rng.normal(size=(150, 12)), train, hold)
    assert copies["auc"] > 0.7 and copies["ci_low"] > 0.6
    assert copies["tpr_at_fpr"] > 0.4  # half of the members were copied: flagged at 5% false positives


def test_entity_clustered_dcr_interval_is_wider_and_names_entities():
    rng = np.random.default_rng(3)
    n_ent, w = 15, 8
    def panel():  # windows of one entity share its level
        return (rng.normal(0, 3, n_ent)[:, None, None] + rng.normal(size=(n_ent, w, 6))).reshape(n_ent * w, 6)
    syn, tr, ho = panel(), panel(), panel()
    units = np.repeat(np.arange(n_ent), w)
    plain = dcr_audit(syn, tr, ho)
    clustered = dcr_audit(syn, tr, ho, units=(units, units, units))
    assert clustered.se > 1.5 * plain.se
    assert clustered.n_reference_units == n_ent and plain.n_reference_units == n_ent * w
    # every vector its own unit: exactly the per-sequence bootstrap
    own = np.arange(n_ent * w)
    same = dcr_audit(syn, tr, ho, units=(own, own, own))
    assert (same.ci_low, same.ci_high) == (plain.ci_low, plain.ci_high)


@pytest.fixture(scope="module")
def nasdaq_split(shared_data):
    _, train, hold, schema = nasdaq(shared_data)
    return train, hold, schema


def test_static_attributes_copied_onto_fresh_dynamics_are_caught_by_parts(nasdaq_split):
    """Holdout dynamics under the static attributes of train entities: the whole-entity DCR share
    moves little, the static part's share jumps towards 1 and the parts check names it."""
    train, hold, schema = nasdaq_split
    static = [c.name for c in schema.modelled if c.static]
    donors = train.groupby("Symbol", sort=False)[static].first()
    keys = hold["Symbol"].unique()
    pick = donors.iloc[np.random.default_rng(0).integers(0, len(donors), len(keys))].set_axis(keys)
    syn = hold.copy()
    for c in static:
        syn[c] = hold["Symbol"].map(pick[c]).astype(hold[c].dtype)
    res = evaluate(train, hold, syn, schema, gate_config=PRIVACY_ONLY, metrics=[])
    parts = res.privacy["dcr_parts"]
    assert set(parts["parts"]) >= {"entity", "static", "dynamics"}
    assert parts["parts"]["static"]["share"] > 0.9
    assert parts["parts"]["static"]["share"] > parts["parts"]["entity"]["share"] + 0.3
    check = next(c for c in res.gate.checks if c.name == "dcr_parts")
    assert not check.passed and ("static" in check.explanation or INSUFFICIENT in check.explanation)


def test_parts_and_membership_on_a_long_series(shared_data):
    """Pollution windows (no static attributes): column-subset parts only; real unseen windows pass
    every privacy check, near-copies fail the parts and membership checks too."""
    _, train, hold, schema = pollution(shared_data)
    n = train["date"].size // 24
    fresh = hold.iloc[: 24 * (n // 2)]
    hold2 = hold.iloc[24 * (n // 2):]
    tr2 = train.iloc[: len(hold2)]
    ok = evaluate(tr2, hold2, B.holdout_as_synthetic(fresh, schema), schema, gate_config=PRIVACY_ONLY, metrics=[])
    # 200 windows per side: the gate may lack evidence, but it must never call real unseen data a copy
    assert all(c.explanation.startswith(INSUFFICIENT) for c in ok.gate.failed), ok.gate.reason
    assert ok.privacy["dcr_parts"]["worst_share"] < 0.65 and ok.privacy["membership"]["auc"] < 0.6
    assert all(k.startswith("columns:") or k == "entity" for k in ok.privacy["dcr_parts"]["parts"])
    bad = evaluate(tr2, hold2, B.train_plus_noise(tr2, schema, rel=0.01, seed=1), schema,
                   gate_config=PRIVACY_ONLY, metrics=[])
    failed = {c.name for c in bad.gate.failed}
    assert {"dcr_share", "membership"} <= failed
    # no static attributes: the only gated part is the whole entity, i.e. dcr_share itself
    assert bad.privacy["dcr_parts"]["k"] == 1 and "dcr_parts" not in {c.name for c in bad.gate.checks}
    assert bad.privacy["membership"]["auc"] > 0.9


def test_report_all_privacy_false_skips_the_extra_searches(nasdaq_split):
    train, hold, schema = nasdaq_split
    cfg = PRIVACY_ONLY | {"dcr_parts_share_max": None, "membership_auc_max": None, "report_all_privacy": False}
    res = evaluate(train, hold, B.holdout_as_synthetic(hold, schema), schema, gate_config=cfg, metrics=[])
    assert "dcr_parts" not in res.privacy and "membership" not in res.privacy
    assert {c.name for c in res.gate.checks}.isdisjoint({"dcr_parts", "membership"})
