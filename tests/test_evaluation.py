"""Evaluation: building blocks, bad input (typed errors, nothing written), report privacy, CLI (the browser check: test_report_layout.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _eval_data import nasdaq, pollution

from synth_pipeline.cli import main
from synth_pipeline.errors import ConfigError, SynthPipelineError
from synth_pipeline.evaluation import EvaluationInputError, GateConfig, LeakageError, evaluate
from synth_pipeline.evaluation import baselines as B
from synth_pipeline.evaluation.fidelity._gru import GRUEnsemble
from synth_pipeline.evaluation.privacy import nearest, wilson_interval

# cheap classifier settings for tests that are about plumbing, not calibration
FAST = {"seeds": 1, "classifier": {"min_steps": 8, "max_steps": 8}}


# ------------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------------
def test_gru_backprop_matches_torch_autograd():
    S, T, Bt, n_in, H = 2, 5, 3, 4, 6
    net = GRUEnsemble([1, 2], n_in, H, 2, 1)
    x = np.random.default_rng(0).normal(size=(T, S, Bt, n_in)).astype(np.float32)
    w = np.random.default_rng(1).normal(size=(T, S, Bt, H)).astype(np.float32)
    hs, cache = net.run(x, keep=True)
    grads = net.backprop(cache, w)
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in net.params.items()}
    out = torch.tensor(x, dtype=torch.float64)
    for layer in range(2):
        h, steps = torch.zeros(S, Bt, H, dtype=torch.float64), []
        for t in range(T):
            gi = out[t] @ P[f"wi{layer}"] + P[f"bi{layer}"]
            gh = h @ P[f"wh{layer}"] + P[f"bh{layer}"]
            r = torch.sigmoid(gi[..., :H] + gh[..., :H])
            z = torch.sigmoid(gi[..., H : 2 * H] + gh[..., H : 2 * H])
            n = torch.tanh(gi[..., 2 * H :] + r * gh[..., 2 * H :])
            h = (1 - z) * n + z * h
            steps.append(h)
        out = torch.stack(steps)
    np.testing.assert_allclose(hs, out.detach().numpy(), atol=1e-5)
    (out * torch.tensor(w, dtype=torch.float64)).sum().backward()
    for k, g in grads.items():
        np.testing.assert_allclose(g, P[k].grad.numpy(), rtol=1e-4, atol=1e-4, err_msg=k)


def test_nearest_is_exact_and_blocked():
    rng = np.random.default_rng(0)
    refs = rng.normal(size=(300, 17)).astype(np.float32)
    q = rng.normal(size=(120, 17)).astype(np.float32)
    q[:5] = refs[[3, 50, 77, 299, 0]]  # exact copies -> distance exactly 0
    d, i = nearest(q, refs, k=2, block_q=32, block_r=64)
    full = np.sqrt(((q[:, None, :].astype(np.float64) - refs[None].astype(np.float64)) ** 2).sum(-1))
    np.testing.assert_allclose(d, np.sort(full, 1)[:, :2], rtol=1e-9, atol=1e-9)
    assert (d[:5, 0] == 0).all() and i[:5, 0].tolist() == [3, 50, 77, 299, 0]


def test_wilson_interval():
    lo, hi = wilson_interval(50, 100)
    assert lo < 0.5 < hi and 0.39 < lo and hi < 0.61
    assert wilson_interval(0, 40)[0] == 0.0 and wilson_interval(40, 40)[1] == 1.0


def test_gate_config_yaml(tmp_path):
    p = tmp_path / "gate.yaml"
    p.write_text("dcr_share_max: 0.55\nmarginals_max: null\nclassifier: {hidden: 8}\n")
    cfg = GateConfig.from_yaml(p)
    assert cfg.dcr_share_max == 0.55 and cfg.marginals_max is None and cfg.classifier == {"hidden": 8}
    assert GateConfig.from_yaml(cfg.to_yaml()) == cfg
    with pytest.raises(ConfigError, match="unknown gate setting"):
        GateConfig.from_dict({"dcr_max": 0.5})
    with pytest.raises(ConfigError, match="classifier"):
        GateConfig.from_dict({"classifier": {"layers_": 3}})
    with pytest.raises(ConfigError, match="does not exist"):
        GateConfig.from_yaml(tmp_path / "missing.yaml")


# ------------------------------------------------------------------------------------------------
# bad input: a typed error naming the problem, nothing written
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def panel(shared_data):
    return nasdaq(shared_data)


def _bad(train, hold, syn, schema, tmp_path, match, exc=EvaluationInputError):
    out = tmp_path / "out"
    with pytest.raises(exc, match=match) as info:
        evaluate(train, hold, syn, schema, out_dir=out)
    assert isinstance(info.value, SynthPipelineError) and info.value.exit_code == 2
    assert not out.exists() or not any(out.iterdir())


def test_synthetic_with_different_columns(panel, tmp_path):
    _, train, hold, schema = panel
    syn = hold.drop(columns=["Volume"]).assign(Extra=1.0)
    _bad(train, hold, syn, schema, tmp_path, r"missing column\(s\) \['Volume'\].*unexpected column\(s\) \['Extra'\]")


def test_synthetic_with_different_dtypes(panel, tmp_path):
    _, train, hold, schema = panel
    syn = hold.assign(Sector=pd.factorize(hold["Sector"])[0])  # categories as integers
    _bad(train, hold, syn, schema, tmp_path, r"'Sector' is int64")
    syn = hold.assign(Open=hold["Open"].astype(str) + "$")  # numbers as text
    _bad(train, hold, syn, schema, tmp_path, r"'Open'")


def test_holdout_sharing_entities_with_train_is_leakage(panel, tmp_path):
    _, train, hold, schema = panel
    leaky = pd.concat([hold, train[train["Symbol"] == train["Symbol"].iloc[0]]])
    _bad(train, leaky, hold, schema, tmp_path, "shares 1 of its", exc=LeakageError)


def test_single_series_holdout_overlapping_train_is_leakage(shared_data, tmp_path):
    _, train, hold, schema = pollution(shared_data)
    _bad(train, pd.concat([hold, train.iloc[:24]]), hold, schema, tmp_path, "shares 24 timestamps", exc=LeakageError)


def test_empty_synthetic(panel, tmp_path):
    _, train, hold, schema = panel
    _bad(train, hold, hold.iloc[:0], schema, tmp_path, "synthetic table is empty")


def test_train_and_holdout_of_very_different_sizes(panel, tmp_path):
    _, train, hold, schema = panel
    tiny = hold[hold["Symbol"] == hold["Symbol"].iloc[0]]  # 7 windows against 357
    _bad(train, tiny, hold, schema, tmp_path, r"ratio of 51.0 > max_size_ratio=20.*subsampled")


def test_nan_only_synthetic_column(panel, tmp_path):
    _, train, hold, schema = panel
    _bad(train, hold, hold.assign(Close=np.nan), schema, tmp_path, r"\['Close'\] contain only missing values")


def test_too_few_sequences_fail_with_insufficient_evidence(panel):
    _, train, hold, schema = panel
    syn = hold[hold["Symbol"].isin(hold["Symbol"].unique()[:4])]  # 28 synthetic windows
    res = evaluate(train, hold, syn, schema, gate_config=FAST)
    assert not res.passed
    assert res.gate.reason.startswith("insufficient evidence")
    assert not res.gate.checks[0].passed and "synthetic has 28" in res.gate.checks[0].explanation


# ------------------------------------------------------------------------------------------------
# outputs, report privacy, browser
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def written(shared_data, tmp_path_factory):
    raw, train, hold, schema = nasdaq(shared_data)
    out = tmp_path_factory.mktemp("eval") / "out"
    res = evaluate(train, hold, B.holdout_as_synthetic(hold, schema), schema, gate_config=FAST, out_dir=out)
    return raw, train, hold, schema, res, out


def test_outputs_are_written_and_json(written):
    *_, res, out = written
    assert sorted(p.name for p in out.iterdir()) == ["gate.json", "metrics.json", "report.html"]
    gate = json.loads((out / "gate.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert gate["passed"] is res.passed and len(gate["checks"]) == len(res.gate.checks)
    for c in gate["checks"]:
        assert set(c) >= {"name", "value", "threshold", "direction", "passed", "explanation"}
        assert c["explanation"]
    assert set(metrics["fidelity"]) == {
        "discriminative", "temporal_discriminative", "predictive", "correlation", "marginals", "autocorrelation",
        "static_consistency",
    }
    for m in metrics["fidelity"].values():
        assert m["goal"] in ("lower", "higher") and len(m["range"]) == 2
    assert metrics["privacy"]["dcr"]["ci_high"] >= metrics["privacy"]["dcr"]["share"]


def _distinctive_values(raw: pd.DataFrame, train: pd.DataFrame, hold: pd.DataFrame) -> list[str]:
    rng = np.random.default_rng(0)
    values: set[str] = set()
    real = pd.concat([train, hold])
    for col in ("Open", "Close", "MarketCap"):  # full-precision continuous values, as written and as parsed
        for v in rng.choice(raw[col].dropna().to_numpy(), 60, replace=False):
            values.add(repr(float(v)))
        for v in rng.choice(real[col].dropna().to_numpy(), 30, replace=False):
            values.add(f"{float(v):.8g}")
    values.update(str(v) for v in rng.choice(raw["Volume"].to_numpy(), 60, replace=False))
    symbols = raw["Symbol"].unique()
    values.update(s for s in symbols if len(s) >= 4)  # identifiers
    per_level = real.groupby("Industry")["Symbol"].nunique()
    rare = [lv for lv, n in per_level.items() if n < 5]  # rare categories (fewer than 5 entities)
    common = [lv for lv, n in per_level.items() if n >= 5]
    values.update(lv for lv in rare if not any(lv in c for c in common))
    return sorted(v for v in values if len(v) >= 4)


def _strip_images(text: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,", text)


def test_report_holds_aggregates_only(written):
    raw, train, hold, schema, res, out = written
    html = (out / "report.html").read_text()
    assert html.index("Release gate") < html.index("id='checks'") < html.index("Marginal distributions")
    assert html.count("data:image/png;base64,") >= 4  # marginals, correlation, autocorrelation, DCR
    assert "<script" not in html and "http://" not in html and "https://" not in html  # offline, no CDN
    text = _strip_images(html)
    jsons = (out / "metrics.json").read_text() + (out / "gate.json").read_text()
    values = _distinctive_values(raw, train, hold)
    assert len(values) > 150
    # whole tokens only: a real volume 932300 must not match inside a timing such as 12.9323005
    leaked = [v for v in values if re.search(rf"(?<![\w.]){re.escape(v)}(?![\w])", text + "\n" + jsons)]
    assert not leaked, f"real values in the outputs: {leaked[:10]}"


# the report in headless Chromium (layout, fonts, plot sizes, privacy): tests/test_report_layout.py


# ------------------------------------------------------------------------------------------------
# CLI: exit 0 pass, 3 gate failed, 2 bad input (nothing written)
# ------------------------------------------------------------------------------------------------
def test_cli_evaluate_exit_codes(panel, tmp_path, capsys):
    raw, train, hold, schema = panel
    schema.to_yaml(tmp_path / "schema.yaml")
    # real tables exactly as in the source file (M/D/YYYY dates); synthetic ones from typed frames (ISO dates)
    raw[raw["Symbol"].isin(set(train["Symbol"]))].to_csv(tmp_path / "train.csv", index=False)
    raw[raw["Symbol"].isin(set(hold["Symbol"]))].to_parquet(tmp_path / "holdout.parquet", index=False)
    B.holdout_as_synthetic(hold, schema).to_csv(tmp_path / "good.csv", index=False)
    B.train_copy(train, schema).to_parquet(tmp_path / "copy.parquet", index=False)
    hold.drop(columns=["Close"]).to_csv(tmp_path / "bad.csv", index=False)
    (tmp_path / "gate.yaml").write_text(json.dumps(FAST))

    def run(syn: str, out: str, gate: str = "gate.yaml") -> int:
        return main([
            "evaluate", "--train", str(tmp_path / "train.csv"), "--holdout", str(tmp_path / "holdout.parquet"),
            "--synthetic", str(tmp_path / syn), "--schema", str(tmp_path / "schema.yaml"), "--out",
            str(tmp_path / out), "--gate", str(tmp_path / gate),
        ])

    assert run("good.csv", "good") == 0
    captured = capsys.readouterr()
    assert "gate PASSED" in captured.out and "DCR to holdout" in captured.err  # progress on stderr
    assert (tmp_path / "good" / "report.html").is_file()
    assert run("copy.parquet", "copy") == 3
    assert "exact_copies" in capsys.readouterr().out
    assert json.loads((tmp_path / "copy" / "gate.json").read_text())["passed"] is False
    assert run("bad.csv", "bad") == 2
    assert "missing column(s) ['Close']" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    (tmp_path / "typo.yaml").write_text("dcr_shar_max: 0.5\n")
    assert run("good.csv", "typo", gate="typo.yaml") == 2
    assert not (tmp_path / "typo").exists()


def test_shipped_gate_yaml_is_the_defaults():
    from synth_pipeline.evaluation.gate import GateConfig as GC

    path = Path(__file__).resolve().parents[1] / "synth_pipeline" / "configs" / "gate.default.yaml"
    assert GC.from_yaml(path) == GC()


def test_audit_cap_subsamples_distances_but_not_exact_copies(panel):
    _, train, hold, schema = panel
    syn = pd.concat([B.holdout_as_synthetic(hold, schema), train[train["Symbol"] == train["Symbol"].iloc[0]]])
    res = evaluate(train, hold, syn, schema, gate_config={**FAST, "audit_max_synthetic": 100})
    assert res.privacy["dcr"]["n_synthetic"] == 100
    assert res.privacy["dcr"]["synthetic_sequences_total"] == 371
    assert res.privacy["exact_copies"]["count"] == 7  # the copied symbol's 7 windows, found among all 371
    assert "exact_copies" in {c.name for c in res.gate.failed}
