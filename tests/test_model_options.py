"""Issue 16 item 3's model options: the MLP + GRU decoder (``model.decoder``), the prior's
step-to-step loss term (``model.difference_loss``) and the latent-noise spread over real steps only.
Exact checks on toy tensors; one tiny end-to-end fit that saves and loads the GRU decoder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from synth_pipeline.config import ModelConfig
from synth_pipeline.errors import ConfigError, ModelFileError
from synth_pipeline.models.batch import masked_mean
from synth_pipeline.models.timeautodiff import step_weighted_loss
from synth_pipeline.models.vae import MixedVAE, latent_spread
from synth_pipeline.schema import infer_schema
from synth_pipeline.synthesizer import Synthesizer


def _vae(decoder: str) -> MixedVAE:
    torch.manual_seed(0)
    return MixedVAE(2, [False, True], [3], [4], 5, latent_dim=4, hidden=16, embed_dim=4, n_fourier=2, decoder=decoder)


def test_decoder_option_is_checked_and_old_models_decode_with_the_mlp() -> None:
    with pytest.raises(ConfigError, match="valid: mlp, gru"):
        ModelConfig.from_preset("fast", {"decoder": "lstm"})
    assert _vae("mlp").dec_rnn is None and _vae("gru").dec_rnn is not None
    assert ModelConfig.from_preset("fast").decoder == "mlp"


@pytest.mark.parametrize("decoder", ["mlp", "gru"])
def test_padded_steps_do_not_reach_the_real_steps(decoder: str) -> None:
    """What a padded step holds (the prior's output there is arbitrary) must not change the decoded
    real steps: the GRU's backward direction reads the padding, so it is zeroed first."""
    vae = _vae(decoder)
    B, T = 3, 8
    z, cal, static = torch.randn(B, T, 4), torch.randn(B, T, 5), torch.randint(0, 4, (B, 1))
    present = torch.ones(B, T)
    present[:, 5:] = 0
    z2, cal2 = z.clone(), cal.clone()
    z2[:, 5:] += 10 * torch.randn(B, 3, 4)
    cal2[:, 5:] += 10
    with torch.no_grad():
        a = vae.decode(z, cal, static, present)
        b = vae.decode(z2, cal2, static, present)
    for k in ("num", "miss", "cat"):
        assert torch.allclose(a[k][:, :5], b[k][:, :5], atol=1e-6), k
    if decoder == "gru":  # and the GRU does use the neighbours: changing a real step moves the others
        z3 = z.clone()
        z3[:, 4] += 3.0
        with torch.no_grad():
            c = vae.decode(z3, cal, static, present)
        assert not torch.allclose(a["num"][:, :4], c["num"][:, :4], atol=1e-4)


def test_latent_spread_ignores_padding() -> None:
    torch.manual_seed(1)
    mu = torch.randn(4, 10, 3) * torch.tensor([1.0, 2.0, 0.5]) + 5.0
    present = torch.ones(4, 10)
    present[:2, 6:] = 0
    padded = mu.clone()
    padded[:2, 6:] = 0.0  # what an encoder may put there
    real = mu[present.bool()]
    want = real.std(0)
    assert torch.allclose(latent_spread(padded, present).flatten(), want, atol=1e-5)
    assert not torch.allclose(padded.flatten(0, 1).std(0), want, atol=1e-2)  # the old spread was off
    per_seq = latent_spread(padded, present, per_sample=True)
    assert per_seq.shape == (4, 1, 3)
    assert torch.allclose(per_seq[0, 0], mu[0, :6].std(0), atol=1e-5)


def test_step_weighted_loss() -> None:
    """difference=0 is the plain masked MSE; the term adds the mean squared step-to-step change of
    the error over pairs of real steps, so a jittery error costs more than a constant one of the
    same size; the DP form is the sum of each sequence's own loss."""
    torch.manual_seed(2)
    B, T, L = 3, 6, 2
    present = torch.ones(B, T)
    present[2, 4:] = 0
    err = torch.randn(B, T, L)
    w = present[..., None]
    plain = (err**2 * w).sum() / (w.sum() * L)
    assert torch.allclose(step_weighted_loss(err, present), plain)
    d = err[:, 1:] - err[:, :-1]
    pair = (present[:, 1:] * present[:, :-1])[..., None]
    want = plain + 0.5 * (d**2 * pair).sum() / (pair.sum() * L)
    assert torch.allclose(step_weighted_loss(err, present, 0.5), want)
    const = torch.ones(1, T, 1)
    flip = torch.tensor([1.0, -1.0] * (T // 2)).view(1, T, 1)
    one = torch.ones(1, T)
    assert step_weighted_loss(const, one, 1.0) == pytest.approx(1.0)  # MSE 1, no change
    assert step_weighted_loss(flip, one, 1.0) == pytest.approx(5.0)  # MSE 1 + 4 per flip
    per = step_weighted_loss(err, present, 0.5, per_sample=True)
    each = sum(step_weighted_loss(err[i:i + 1, : int(present[i].sum())], present[i:i + 1, : int(present[i].sum())], 0.5)
               for i in range(B))
    assert torch.allclose(per, each)
    assert torch.allclose(step_weighted_loss(err, present, per_sample=True), masked_mean(err**2, w, per_sample=True))


def _panel() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n, T = 30, 12
    walk = rng.normal(size=(n, T)).cumsum(1)
    return pd.DataFrame({
        "id": np.repeat([f"e{i}" for i in range(n)], T),
        "t": np.tile(pd.date_range("2024-01-01", periods=T, freq="D"), n),
        "x": walk.ravel(),
        "y": np.where(rng.random(n * T) < 0.1, np.nan, rng.normal(size=n * T)),
        "c": np.where(walk.ravel() > 0, "up", "down"),
        "s": np.repeat(rng.choice(["a", "b"], n), T),
    })


def test_gru_decoder_and_difference_loss_fit_save_and_load(tmp_path) -> None:
    df = _panel()
    schema = infer_schema(df, time_index="t", entity_key="id", name="toy")
    cfg = ModelConfig.from_preset("fast", {"vae_steps": 20, "diffusion_steps": 20, "static_steps": 5, "min_steps": 1,
                                           "progress": False, "refine": "none", "decoder": "gru",
                                           "difference_loss": 1.0, "hidden_dim": 16})
    syn = Synthesizer(schema, cfg).fit(df)
    assert syn.model.vae.dec_rnn is not None
    syn.save(tmp_path / "m")
    loaded = Synthesizer.load(tmp_path / "m", device="cpu")
    assert loaded.model.config.decoder == "gru" and loaded.model.config.difference_loss == 1.0
    pd.testing.assert_frame_equal(syn.sample(5, seed=3), loaded.sample(5, seed=3))
    # a model saved before model.decoder existed has no such key and decodes with the MLP: here the
    # GRU weights then do not fit, which shows the missing key is read as "mlp"
    cfg_file = next((tmp_path / "m").rglob("model_config.json"))
    meta = json.loads(cfg_file.read_text())
    del meta["config"]["decoder"]
    cfg_file.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError):
        Synthesizer.load(tmp_path / "m", device="cpu")
