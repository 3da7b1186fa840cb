"""The DCR share's interval accounts for the finite reference sets (issue 15, deliverable 1)."""

from __future__ import annotations

import numpy as np

from synth_pipeline.evaluation.gate import INSUFFICIENT, GateConfig, decide
from synth_pipeline.evaluation.privacy import dcr_audit, wilson_interval


def _draw(n_ref: int, n_syn: int, seed: int, d: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_syn, d)), rng.normal(size=(n_ref, d)), rng.normal(size=(n_ref, d))


def _gate(dcr_summary: dict, n: int, **cfg):
    sizes = {"train": n, "holdout": n, "synthetic": dcr_summary["n_synthetic"]}
    privacy = {"dcr": dcr_summary, "exact_copies": {"count": 0, "n_synthetic": sizes["synthetic"]},
               "row_matches": {"excess": 0.0, "synthetic_rate": 0.0, "holdout_rate": 0.0}}
    return decide(GateConfig(min_sequences=2, **cfg), sizes, {}, privacy)


def test_few_reference_entities_widen_the_interval_beyond_wilson():
    """2,000 synthetic sequences against 25 references per side: Wilson treats the comparisons as
    independent; the reference draw is what decides them."""
    syn, tr, ho = _draw(25, 2000, seed=0)
    res = dcr_audit(syn, tr, ho)
    wl, wh = wilson_interval(res.share * res.n_synthetic, res.n_synthetic)
    assert (res.ci_high - res.ci_low) > 3 * (wh - wl)
    assert res.ci_low <= res.share <= res.ci_high


def test_a_perfect_generator_is_covered_across_reference_draws():
    """Synthetic, train and holdout from one distribution: the 95% interval contains 0.5 in
    (nearly) every draw, while the Wilson interval misses it often."""
    boot_cover, wilson_cover = 0, 0
    for seed in range(20):
        syn, tr, ho = _draw(40, 1000, seed=seed)
        res = dcr_audit(syn, tr, ho)
        boot_cover += res.ci_low <= 0.5 <= res.ci_high
        lo, hi = wilson_interval(res.share * res.n_synthetic, res.n_synthetic)
        wilson_cover += lo <= 0.5 <= hi
    assert boot_cover >= 18, boot_cover
    assert wilson_cover < boot_cover


def test_near_copies_stay_confidently_above_the_threshold():
    syn, tr, ho = _draw(200, 200, seed=1)
    copies = tr + np.random.default_rng(2).normal(scale=0.01, size=tr.shape)
    res = dcr_audit(copies, tr, ho)
    assert res.ci_low > 0.9
    gate = _gate(res.summary(), 200)
    check = next(c for c in gate.checks if c.name == "dcr_share")
    assert not check.passed and "memorization" in check.explanation


def test_too_small_a_holdout_is_insufficient_evidence_naming_the_size_needed():
    syn, tr, ho = _draw(12, 300, seed=3)
    res = dcr_audit(syn, tr, ho)
    gate = _gate(res.summary(), 12)
    check = next(c for c in gate.checks if c.name == "dcr_share")
    assert not check.passed
    assert check.explanation.startswith(INSUFFICIENT)
    need = int(check.explanation.split("about ")[1].split(" holdout")[0])
    assert need > 12
    # with that many references a perfect generator's bound falls under the threshold
    syn, tr, ho = _draw(need * 2, 1000, seed=4)
    big = dcr_audit(syn, tr, ho)
    assert 0.5 + 1.96 * big.se < 0.6 + 0.03
