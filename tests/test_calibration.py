"""Calibration of the release gate: the evidence that its default thresholds mean something.

On slices of two sample datasets (a panel: nasdaq100 with Symbol entities in 24-day windows, half
of the symbols held out; a single long series: Beijing pollution in 24-hour windows, half of the
windows held out; train and holdout therefore have the same size, so the DCR train sample is all
of train) and with fixed seeds, known answers are run through the full ``evaluate`` with the
default ``GateConfig``:

* real holdout sequences used as "synthetic" pass every check;
* a verbatim copy of train fails (exact copies, DCR share);
* train + noise of 1 % of each column's std fails on the DCR share (no exact copy to catch);
* every column drawn independently with the right marginals fails on fidelity, not on marginals;
* sequences time-shuffled within each entity fail a temporal check (not correlation/marginals);
* one column shifted by one std fails the marginal check.

Do not change thresholds to make these pass: a failure here means the gate lost its meaning.
The measured values are printed (``pytest -s``).
"""

from __future__ import annotations

import pytest
from _eval_data import nasdaq, pollution

from synth_pipeline.evaluation import baselines as B
from synth_pipeline.evaluation import evaluate
from synth_pipeline.evaluation.gate import INSUFFICIENT

TEMPORAL = {"temporal_discriminative", "autocorrelation"}
PRIVACY = {"dcr_share", "dcr_parts", "membership", "exact_copies", "row_matches"}

CASES = {
    "holdout": lambda train, hold, s: B.holdout_as_synthetic(hold, s),
    "train_copy": lambda train, hold, s: B.train_copy(train, s),
    "train_noise_1pct": lambda train, hold, s: B.train_plus_noise(train, s, rel=0.01, seed=1),
    "independent": lambda train, hold, s: B.independent_marginals(hold, s, seed=1),
    "time_shuffled": lambda train, hold, s: B.time_shuffled(hold, s, seed=1),
    "shifted_column": lambda train, hold, s: B.shifted_column(hold, s),
}
LOADERS = {"nasdaq100": nasdaq, "pollution": pollution}


@pytest.fixture(scope="module", params=sorted(LOADERS))
def dataset(request, shared_data):
    _, train, hold, schema = LOADERS[request.param](shared_data)
    return request.param, train, hold, schema


def run_case(dataset, case):
    name, train, hold, schema = dataset
    res = evaluate(train, hold, CASES[case](train, hold, schema), schema, seed=0)
    failed = {c.name for c in res.gate.failed}
    print(f"\n{name}/{case}: passed={res.passed} failed={sorted(failed)} "
          + " ".join(f"{k}={'n/a' if v is None else round(v, 4)}" for k, v in res.values().items()))
    return res, failed


def test_holdout_as_synthetic_passes(dataset):
    res, failed = run_case(dataset, "holdout")
    assert res.passed, failed
    assert res.gate.checks[0].name == "evidence" and res.gate.checks[0].passed


def test_verbatim_train_copy_fails(dataset):
    res, failed = run_case(dataset, "train_copy")
    assert not res.passed
    assert {"exact_copies", "dcr_share", "row_matches"} <= failed


def test_train_plus_small_noise_fails_on_dcr(dataset):
    res, failed = run_case(dataset, "train_noise_1pct")
    assert not res.passed
    assert "dcr_share" in failed
    assert "exact_copies" not in failed  # no verbatim copy: the distance audit is what catches it
    assert res.privacy["dcr"]["ci_low"] > 0.9


def test_independent_noise_with_matching_marginals_fails_on_fidelity(dataset):
    res, failed = run_case(dataset, "independent")
    assert not res.passed
    assert {"discriminative", "correlation"} <= failed
    assert "marginals" not in failed  # the marginals really match: the failure is about dependence
    assert not ({"exact_copies", "row_matches"} & failed)


def test_time_shuffled_sequences_fail_a_temporal_check(dataset):
    res, failed = run_case(dataset, "time_shuffled")
    assert not res.passed
    assert failed & TEMPORAL
    assert not ({"marginals", "correlation"} & failed)  # same rows: only the order is wrong
    assert not (PRIVACY & failed)


def test_shifted_column_fails_the_marginal_check(dataset):
    res, failed = run_case(dataset, "shifted_column")
    assert "marginals" in failed
    # real unseen sequences: never memorization; on nasdaq100 (51 symbols per side, windows resampled
    # by symbol) the DCR intervals are too wide to decide, which the gate must say
    memorized = {c.name for c in res.gate.failed if not c.explanation.startswith(INSUFFICIENT)}
    assert not (PRIVACY & memorized)
