"""Issue 7's seed methods: PSLD (objective), the dependency diagnostic, L2D-Diff refinement and
Stage-Diff long sequences. Exact checks where the math allows (Algorithm 2 against an exact Gaussian
denoiser, integrated gradients against a linear decoder, stage causality), end to end on small
slices of the sample data (tests/data) with tiny budgets otherwise."""

from __future__ import annotations

import base64
import copy
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from synth_pipeline.config import PRESETS, ModelConfig
from synth_pipeline.errors import ConfigError
from synth_pipeline.evaluation.dependency import COLLAPSE_THRESHOLD, dependency_measures
from synth_pipeline.ingest import coerce, read_source
from synth_pipeline.models import refine as l2d
from synth_pipeline.models.psld import PSLD
from synth_pipeline.models.scheduler import make_scheduler
from synth_pipeline.models.stagediff import StageDiffDenoiser, trend_kernels
from synth_pipeline.models.timeautodiff import TimeAutoDiff
from synth_pipeline.models.vae import Batch, MixedVAE
from synth_pipeline.schema import infer_schema
from synth_pipeline.synthesizer import Synthesizer

TINY = {"vae_steps": 150, "diffusion_steps": 120, "static_steps": 30, "progress": False, "eval_every": 50,
        "refine": "none"}  # each test turns on the option it is about


def tiny(**kw) -> ModelConfig:
    return ModelConfig.from_preset("fast", {**TINY, **kw})


# ------------------------------------------------------------------------------------------------
# configuration: off by default, unknown values list the valid ones, impossible settings fail early
# ------------------------------------------------------------------------------------------------
def test_options_default_off() -> None:
    # the fast preset refined with L2D (refine=auto) until issue 16 item 3: with its deeper prior the
    # refiner no longer paid for its steps (benchmarks/README.md "Fidelity of the fast preset")
    for preset in PRESETS:
        cfg = ModelConfig.from_preset(preset)
        assert (cfg.objective, cfg.long, cfg.refine) == ("vae", "none", "none")
    assert ModelConfig().refine == "none"


def test_refine_auto_is_l2d_with_numerics_and_off_without() -> None:
    dims = {"n_num": 2, "num_missing": [False, False], "cat_cards": [3], "static_cards": [], "n_calendar": 4,
            "max_len": 24}
    cat_only = {**dims, "n_num": 0, "num_missing": []}
    cfg = tiny(refine="auto")
    assert TimeAutoDiff(cfg, dims).refine == "l2d"
    m = TimeAutoDiff(cfg, cat_only)
    assert m.refine == "none" and m.refiner is None
    with pytest.raises(ConfigError, match="refine=l2d refines numeric columns"):
        TimeAutoDiff(tiny(refine="l2d"), cat_only)


@pytest.mark.parametrize(("key", "valid"), [("objective", "vae, psld"), ("refine", "none, l2d, auto"),
                                            ("long", "none, stagediff")])
def test_unknown_option_values_list_the_valid_ones(key: str, valid: str) -> None:
    with pytest.raises(ConfigError, match=f"{key} must be one of: {valid}"):
        ModelConfig.from_preset("fast", {key: "bogus"})


@pytest.mark.parametrize(("over", "msg"), [
    ({"psld_N": 1001}, r"psld_N=1001 must be in \[0, psld_L=1000\]"),
    ({"psld_L": 40, "psld_N": 50}, r"psld_N=50 must be in \[0, psld_L=40\]"),
    ({"psld_M": 1001}, r"psld_M=1001 must be in \[1, psld_L=1000\]"),
    ({"psld_gamma": 30}, r"psld_gamma \* psld_N <= psld_L \(valid here: 1..20\)"),
    ({"psld_eta": 0.5}, "psld_eta=0.5 must be >= 1"),
    ({"stage_length": 60}, "stage_length=60 must be a positive multiple of model.stage_patch=8"),
])
def test_impossible_settings_are_config_errors(over: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        ModelConfig.from_preset("fast", over)


def test_long_stage_is_a_deprecated_alias_of_stagediff() -> None:
    """``model.long=stage`` (before the rename: "stage" now means release stages only) is still
    accepted, with a DeprecationWarning, and is the same configuration as ``stagediff``."""
    with pytest.warns(DeprecationWarning, match="use model.long=stagediff"):
        old = ModelConfig.from_preset("fast", {"long": "stage"})
    new = ModelConfig.from_preset("fast", {"long": "stagediff"})
    assert old.long == "stagediff" and old.to_dict() == new.to_dict()
    with pytest.warns(DeprecationWarning):
        assert ModelConfig.from_dict({**new.to_dict(), "long": "stage"}).to_dict() == new.to_dict()


# ------------------------------------------------------------------------------------------------
# PSLD
# ------------------------------------------------------------------------------------------------
MU, SD = 1.5, 0.5


def exact_output(sch, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A perfect denoiser for latents ~ N(MU, SD^2), per-sequence steps ``t``, v-parameterised."""
    a = sch.alphas_cumprod[t].double().view(-1, 1)
    x0 = MU + (a.sqrt() * SD**2 / (a * SD**2 + 1 - a)) * (z.double() - a.sqrt() * MU)
    eps = (z.double() - a.sqrt() * x0) / (1 - a).sqrt()
    return (a.sqrt() * eps - (1 - a).sqrt() * x0).float()


def run_algorithm_2(psld: PSLD, steps: int, n: int = 40_000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, 1, generator=g)
    return psld.reverse(z, lambda zz, tt: exact_output(psld.sch, zz, tt), steps, 1.0, g)


@pytest.mark.parametrize("solver", ["dpm++2m-sde", "ddpm"])
def test_psld_sampling_decodes_z_i_as_algorithm_2(solver: str) -> None:
    """Stopping each chain at its own i ~ U{0..N} must give the forward marginal of z_i (a mixture
    over i of N(sqrt(a_i) MU, a_i SD^2 + 1 - a_i)), not the clean latent: a short chain with a large
    N makes the two clearly different."""
    L, N = 200, 60
    sch = make_scheduler(solver, num_train_timesteps=L, prediction_type="v_prediction")
    psld = PSLD(sch, 1, N=N, M=100, gamma=2, eta=1.0)
    stops = torch.tensor([0, 1, N])
    grid = psld.grid(stops, 20)
    assert grid.shape == (3, 21) and (grid[:, 0] == L - 1).all()
    assert grid[:, -1].tolist() == [-1, 0, N - 1]  # i = 0: the clean estimate; else scheduler index i - 1
    steps = 100 if solver == "ddpm" else 25
    z = run_algorithm_2(psld, steps)
    a = psld.abar[: N + 1].double()
    mean = float(MU * a.sqrt().mean())
    var = float((a * SD**2 + 1 - a).mean() + (MU * a.sqrt()).var(unbiased=False))
    assert abs(z.mean().item() - mean) < 0.02, (z.mean().item(), mean)
    assert abs(z.std().item() / var**0.5 - 1) < 0.05, (z.std().item(), var**0.5)
    clean = run_algorithm_2(PSLD(sch, 1, N=0, M=100, gamma=2, eta=1.0), steps)  # N = 0: the clean latent
    assert abs(clean.mean().item() - MU) < 0.02 and abs(clean.std().item() / SD - 1) < 0.1
    assert z.std().item() > 1.2 * clean.std().item()


def _toy_vae_batch(B: int = 6, T: int = 10) -> tuple[MixedVAE, Batch]:
    torch.manual_seed(0)
    vae = MixedVAE(2, [False, True], [3], [4], 8, latent_dim=4, hidden=16, embed_dim=4, n_fourier=2)
    b = Batch(num=torch.randn(B, T, 2), num_miss=(torch.rand(B, T, 2) < 0.2).float() * torch.tensor([0.0, 1.0]),
              cat=torch.randint(0, 3, (B, T, 1)), present=torch.ones(B, T), calendar=torch.randn(B, T, 8),
              static=torch.randint(0, 4, (B, 1)))
    return vae, b


def test_psld_collapse_penalty_is_a_hinge_at_the_information_free_loss() -> None:
    """No reward for reconstructing worse than the marginal from a collapsed latent (tau = 0: the
    loss is the VI term alone), a positive penalty while it reconstructs better (tau large)."""
    vae, b = _toy_vae_batch()
    sch = make_scheduler("ddpm", num_train_timesteps=1000)
    psld = PSLD(sch, 4, N=50, M=100, gamma=2, eta=1.0)
    psld.set_reference(0.0)
    loss0, parts0 = psld.loss(vae, b, torch.Generator().manual_seed(1))
    assert parts0["cs"] == 0.0 and loss0.item() == pytest.approx(parts0["vi"])
    psld.set_reference(1e3)
    loss1, parts1 = psld.loss(vae, b, torch.Generator().manual_seed(1))
    assert parts1["vi"] == pytest.approx(parts0["vi"]) and parts1["cs"] > 100
    loss1.backward()
    assert all(torch.isfinite(p.grad).all() for p in vae.parameters() if p.grad is not None)
    # the VI weights alpha_bar[gamma * j] sit in (0, 1]; the collapse weights 1 - alpha_bar[k] at k >= M
    assert 0 < psld.abar[2 * 50] < 1 and psld.abar[0] == 1 and 1 - psld.abar[100] > 0.05


# ------------------------------------------------------------------------------------------------
# dependency diagnostic
# ------------------------------------------------------------------------------------------------
def test_dependency_measures_match_a_linear_decoder_exactly() -> None:
    """For h_t = A z_t + B z_{t-1} + C c_t integrated gradients are exact: m_{t,j} is the inner
    product of each term with h_t - h~_t over ||h_t - h~_t||^2."""
    g = torch.Generator().manual_seed(0)
    A, Bm, Cm = (torch.randn(3, 5, generator=g) for _ in range(3))

    def dec(z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        prev = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], 1)
        return z @ A + prev @ Bm + c @ Cm

    z, c = torch.randn(4, 7, 3, generator=g), torch.randn(4, 7, 3, generator=g)
    res = dependency_measures(dec, z, c, n_points=8)
    h = dec(z, c)
    own, prev, ctx = z @ A, torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], 1) @ Bm, c @ Cm
    n2 = (h**2).sum(-1)
    exp_own = ((own * h).sum(-1) / n2).mean(0)
    exp_prev = ((prev * h).sum(-1) / n2).mean(0)
    exp_ctx = ((ctx * h).sum(-1) / n2).mean(0)
    t = np.arange(7)
    np.testing.assert_allclose(res.latent[t, t], exp_own.numpy(), atol=1e-5)
    np.testing.assert_allclose(res.latent[t[1:], t[:-1]], exp_prev[1:].numpy(), atol=1e-5)
    np.testing.assert_allclose(res.context, exp_ctx.numpy(), atol=1e-5)
    mask = np.abs(t[:, None] - t[None, :] - 0.5) > 0.6  # neither the own nor the previous step
    assert np.abs(res.latent[mask]).max() < 1e-6


@pytest.fixture(scope="module")
def pollution(shared_data):
    raw = read_source(shared_data / "pollution_data.csv").iloc[:2400].reset_index(drop=True)
    schema = infer_schema(raw, time_index="date", sequence_length=24, name="pollution")
    return coerce(raw, schema), schema


@pytest.fixture(scope="module")
def trained(pollution):
    df, schema = pollution
    return {obj: Synthesizer(schema, tiny(seed=1, objective=obj)).fit(df) for obj in ("vae", "psld")}


@pytest.mark.parametrize("objective", ["vae", "psld"])
def test_trained_decoder_depends_on_its_latent_and_rows_sum_to_one(trained, objective: str) -> None:
    res = trained[objective].dependency(n=24, seed=2)
    s = res.summary()
    assert res.completeness_gap < 1e-3  # every (sequence, step) row sums to 1
    np.testing.assert_allclose(res.latent.sum(1) + res.context, 1.0, atol=1e-3)
    assert not s["collapsed"] and s["latent_dependency"] > 0.5, s
    m = res.metrics()
    assert m["dependency.collapsed"] == 0.0 and all(np.isfinite(v) for v in m.values())
    assert res.to_dict()["objective"] == objective


def test_a_decoder_that_ignores_its_latent_scores_as_collapsed(trained) -> None:
    syn = copy.deepcopy(trained["vae"])
    with torch.no_grad():
        syn.model.vae.dec_mlp[0].weight[:, : syn.model.latent_dim] = 0.0  # the latent no longer enters
    res = syn.dependency(n=16, seed=2)
    s = res.summary()
    assert s["collapsed"] and abs(s["latent_dependency"]) < 1e-6 and s["latent_dependency"] < COLLAPSE_THRESHOLD
    assert s["context_dependency"] == pytest.approx(1.0, abs=1e-3)


def test_dependency_heatmap_goes_into_the_report(trained) -> None:
    from synth_pipeline.evaluation.report import _dependency_section

    res = trained["psld"].dependency(n=8, seed=3)
    png = base64.b64decode(res.heatmap_png())
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    page = _dependency_section(SimpleNamespace(artifacts={"dependency": res}))
    assert "Decoder dependency on the latent" in page and "data:image/png;base64," in page
    assert "not collapsed" in page
    assert _dependency_section(SimpleNamespace(artifacts={})) == ""


# ------------------------------------------------------------------------------------------------
# L2D-Diff refinement
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def refined(pollution):
    df, schema = pollution
    return Synthesizer(schema, tiny(seed=4, refine="l2d")).fit(df)


def test_l2d_refiner_is_an_x0_diffusion_conditioned_on_the_latent(refined) -> None:
    model = refined.model
    assert model.refine_scheduler.prediction_type == "sample"
    assert any(h.get("refine/loss") is not None for h in model.history)
    cond = refined._layout_conditions(np.full(6, 24), refined._draw_layout(6, np.random.default_rng(0))[1])
    lat = model.sample_latents(6, cond, seed=5)
    z, cal, pres, st = lat["z"], lat["calendar"], lat["present"], lat["static"]
    with torch.inference_mode():
        dec = model.vae.decode(z, cal, st)["num"]
    a = l2d.refine(model, z, dec, cal, pres, st, torch.Generator().manual_seed(0))
    b = l2d.refine(model, z, dec, cal, pres, st, torch.Generator().manual_seed(0))
    c = l2d.refine(model, z.flip(0), dec.flip(0), cal, pres, st, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert (a - dec).abs().mean() > 1e-3  # it refines: not the decoder's output
    assert (a - c).abs().mean() > 1e-2  # it is conditioned on the latent


def test_l2d_refiner_reads_the_known_cells(refined) -> None:
    """Imputation and forecasting condition the refiner too (issue 17 item 4): the same chain given
    known cells gives other values than given none; a model saved before that (``refiner_known``
    False in its dims) builds the former, narrower refiner and still loads."""
    model = refined.model
    assert model.dims["refiner_known"] and model.refiner.known
    cond = refined._layout_conditions(np.full(6, 24), refined._draw_layout(6, np.random.default_rng(0))[1])
    lat = model.sample_latents(6, cond, seed=5)
    z, cal, pres, st = lat["z"], lat["calendar"], lat["present"], lat["static"]
    with torch.inference_mode():
        dec = model.vae.decode(z, cal, st)["num"]
    mask = torch.zeros_like(dec)
    mask[:, :12] = 1.0  # forecasting: the first half known
    known = torch.randn(dec.shape, generator=torch.Generator().manual_seed(1)) * mask
    a = l2d.refine(model, z, dec, cal, pres, st, torch.Generator().manual_seed(0))
    b = l2d.refine(model, z, dec, cal, pres, st, torch.Generator().manual_seed(0), known, mask)
    assert (a - b).abs().mean() > 1e-3
    old = TimeAutoDiff(tiny(refine="l2d"), {**model.dims, "refiner_known": False})
    assert not old.refiner.known
    assert old.refiner.inp.in_features == model.refiner.inp.in_features - 2 * model.dims["n_num"]


def test_l2d_samples_keep_the_contract_and_survive_save_load(refined, pollution, tmp_path) -> None:
    df, schema = pollution
    out = refined.sample(20, seed=6)
    assert out["sequence_id"].nunique() == 20 and len(out) == 20 * 24
    assert list(out.columns) == ["sequence_id", *schema.output_columns]
    refined.save(tmp_path / "m")
    again = Synthesizer.load(tmp_path / "m", device="cpu")
    pd.testing.assert_frame_equal(again.sample(20, seed=6), out)


def test_l2d_needs_a_numeric_column() -> None:
    dims = {"n_num": 0, "num_missing": [], "cat_cards": [3], "static_cards": [], "n_static_columns": 0,
            "n_calendar": 8, "max_len": 24}
    with pytest.raises(ConfigError, match="refine=l2d refines numeric columns"):
        TimeAutoDiff(tiny(refine="l2d"), dims)


# ------------------------------------------------------------------------------------------------
# Stage-Diff
# ------------------------------------------------------------------------------------------------
def test_stagediff_network_is_causal_across_stages_and_fuses_history() -> None:
    """Stage m reads stage m-1's trends (its history) and nothing later; lengths that are not a
    multiple of the stage are padded and cut back."""
    torch.manual_seed(0)
    C, Ls, T, B = 3, 16, 40, 2  # 2.5 stages
    net = StageDiffDenoiser(C, 2, [3], [4], 8, hidden=16, stage_length=Ls, patch=4, scales=3).eval()
    args = (torch.randint(0, 10, (B,)), torch.randn(B, T, 8), torch.ones(B, T), torch.randint(0, 4, (B, 1)),
            torch.zeros(B, T, 2), torch.zeros(B, T, 2), torch.full((B, T, 1), 3))
    z = torch.randn(B, T, C)
    with torch.no_grad():
        base = net(z, *args)
        late = z.clone()
        late[:, 2 * Ls:] += 1.0
        early = z.clone()
        early[:, :Ls] += 1.0
        out_late, out_early = net(late, *args), net(early, *args)
    assert base.shape == (B, T, C)
    assert torch.equal(out_late[:, : 2 * Ls], base[:, : 2 * Ls])  # later stages never reach back
    assert (out_early[:, Ls: 2 * Ls] - base[:, Ls: 2 * Ls]).abs().max() > 1e-4  # history flows forward
    assert trend_kernels(64, 3) == [17, 9, 1]


def test_stagediff_alignment_starts_each_stage_where_the_previous_ended() -> None:
    """With a full alignment weight at a stage's first step, stage m begins exactly at stage m-1's
    last value (no seam); the weights start at zero (the stages' own estimates)."""
    torch.manual_seed(0)
    C, Ls, T, B = 2, 16, 48, 2
    net = StageDiffDenoiser(C, 2, [3], [4], 8, hidden=16, stage_length=Ls, patch=4, scales=2).eval()
    args = (torch.randint(0, 10, (B,)), torch.randn(B, T, 8), torch.ones(B, T), torch.randint(0, 4, (B, 1)),
            torch.zeros(B, T, 2), torch.zeros(B, T, 2), torch.full((B, T, 1), 3))
    z = torch.randn(B, T, C)
    assert torch.count_nonzero(net.align) == 0
    with torch.no_grad():
        free = net(z, *args)
        net.align[0] = 1.0
        aligned = net(z, *args)
    for m in (1, 2):
        assert (free[:, m * Ls] - free[:, m * Ls - 1]).abs().max() > 1e-3  # untrained stages jump
        torch.testing.assert_close(aligned[:, m * Ls], aligned[:, m * Ls - 1])
    torch.testing.assert_close(aligned[:, :Ls], free[:, :Ls])  # the first stage has nothing to align to


@pytest.fixture(scope="module")
def etth1(shared_data):
    return read_source(shared_data / "etth1.csv").iloc[:4096].reset_index(drop=True)


@pytest.mark.parametrize("window", [256, 512])
def test_stagediff_generates_long_windows_as_one_sequence(etth1, window: int, tmp_path) -> None:
    schema = infer_schema(etth1, time_index="date", sequence_length=window, name="etth1")
    df = coerce(etth1, schema)
    cfg = tiny(seed=7, long="stagediff", vae_steps=60, diffusion_steps=40, static_steps=10, stage_length=64)
    syn = Synthesizer(schema, cfg).fit(df)
    assert isinstance(syn.model.denoiser, StageDiffDenoiser) and syn.model.scheduler.prediction_type == "sample"
    out = syn.sample(3, seed=1)
    assert out.groupby("sequence_id").size().tolist() == [window] * 3
    steps = out.groupby("sequence_id")["date"].diff().dropna()
    assert (steps == pd.Timedelta(hours=1)).all()  # one coherent hourly sequence per entity
    assert np.isfinite(out.drop(columns=["sequence_id", "date"]).to_numpy(dtype=float)).all()
    syn.save(tmp_path / "m")
    pd.testing.assert_frame_equal(Synthesizer.load(tmp_path / "m", device="cpu").sample(3, seed=1), out)
    if window == 256:  # a model saved before the rename recorded model.long=stage: it still loads, the same
        meta_path = tmp_path / "m" / "model_config.json"
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["config"]["long"] = "stage"
        meta_path.write_text(json.dumps(meta), encoding="utf-8")
        with pytest.warns(DeprecationWarning, match="model.long=stage is deprecated"):
            old = Synthesizer.load(tmp_path / "m", device="cpu")
        assert old.model.config.long == "stagediff" and isinstance(old.model.denoiser, StageDiffDenoiser)
        pd.testing.assert_frame_equal(old.sample(3, seed=1), out)


def test_stagediff_shorter_than_one_stage_fails_before_training(pollution, monkeypatch) -> None:
    df, schema = pollution

    def boom(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(TimeAutoDiff, "_fit_vae", boom)
    with pytest.raises(ConfigError, match=r"stage_length=64 but the data's sequences have 24 steps.*\[8, 24\]"):
        Synthesizer(schema, tiny(long="stagediff")).fit(df)
