"""The projected nearest-neighbour search used by huge DCR audits: same answers as the brute force
where the data has low-dimensional structure (proven per query), honest flags where it does not."""

from __future__ import annotations

import numpy as np

from synth_pipeline.evaluation.privacy import dcr_audit, nearest, search


def _structured(n: int, d: int = 120, rank: int = 6, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """Vectors near a rank-``rank`` subspace, like encoded sequences of a few smooth factors."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).normal(size=(rank, d))
    return (rng.normal(size=(n, rank)) @ basis + noise * rng.normal(size=(n, d))).astype(np.float32)


def test_small_work_is_the_exact_brute_force():
    q, r = _structured(50), _structured(80, seed=1)
    d, i, info = search(q, r, 2)
    assert info.mode == "exact" and info.exact
    d0, i0 = nearest(q, r, 2)
    assert np.array_equal(d, d0) and np.array_equal(i, i0)


def test_projected_search_matches_brute_force_and_is_certified_on_structured_data():
    q, r = _structured(600), _structured(900, seed=1)
    q[:4] = r[[5, 17, 400, 899]]  # exact copies must stay at distance 0.0
    d, i, info = search(q, r, 2, exact_work=0, block_q=128, block_r=256)
    d0, i0 = nearest(q, r, 2)
    assert info.mode == "projected" and info.projected_dims < 20 and info.explained_variance > 0.99
    assert info.certified + info.recomputed == len(q) and info.exact
    np.testing.assert_allclose(d, d0, rtol=1e-9, atol=1e-9)
    assert np.array_equal(i[:, 0], i0[:, 0])
    assert (d[:4, 0] == 0).all() and i[:4, 0].tolist() == [5, 17, 400, 899]


def test_unstructured_data_is_not_certified_and_the_check_measures_it():
    """Isotropic noise has no subspace: the lower bound proves little. The search must then say so
    (few certified, no silent recomputation beyond the budget) and measure its agreement."""
    rng = np.random.default_rng(3)
    q = rng.normal(size=(400, 60)).astype(np.float32)
    r = rng.normal(size=(500, 60)).astype(np.float32)
    d, i, info = search(q, r, 2, exact_work=0, max_dims=8, candidates=4, recompute_share=0.0, check_queries=200)
    d0, i0 = nearest(q, r, 2)
    assert info.mode == "projected" and not info.exact and info.certified < len(q) // 2
    assert info.check_queries == 200 and 0 <= info.check_agreement <= 1
    true_agree = float(np.mean(i[:, 0] == i0[:, 0]))
    assert true_agree < 1.0  # 4 candidates from 8 of 60 noise dimensions do miss neighbours
    assert abs(info.check_agreement - true_agree) < 0.15  # the check is an honest estimate
    assert (d[:, 0] >= d0[:, 0] - 1e-9).all()  # a missed neighbour can only make a distance larger


def test_uncertified_queries_are_recomputed_within_budget():
    rng = np.random.default_rng(4)
    q = rng.normal(size=(300, 40)).astype(np.float32)
    r = rng.normal(size=(400, 40)).astype(np.float32)
    d, i, info = search(q, r, 2, exact_work=0, max_dims=6, candidates=4, recompute_share=1.0)
    d0, i0 = nearest(q, r, 2)
    assert info.exact and info.recomputed > 0 and info.check_queries is None
    np.testing.assert_allclose(d, d0, rtol=1e-9, atol=1e-9)


def test_dcr_audit_reports_how_each_pass_was_searched():
    q, tr, ho = _structured(200), _structured(150, seed=1), _structured(150, seed=2)
    res = dcr_audit(q, tr, ho)
    s = res.summary()["search"]
    assert set(s) == {"train_sample", "holdout"} and all(v["mode"] == "exact" for v in s.values())
