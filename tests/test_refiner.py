"""The latent refiner (config.refiner_channels): a conv net at full latent resolution that corrects x0."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, model_weights, train_config
from neuralsim.config import WorldModelConfig
from neuralsim.train import TrainingError, train


def _with_refiner(model, channels: int = 8):
    """``model`` rebuilt with a refiner, its other weights kept (as ``train --init ... --set refiner_channels=N``)."""
    from neuralsim.model import WorldModel

    torch.manual_seed(1)
    rebuilt = WorldModel(model.config.replace(refiner_channels=channels))
    missing, unexpected = rebuilt.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("refiner.") for k in missing)
    return rebuilt.eval()


def _rollout(model, seed: int = 0, steps: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    frames = np.random.default_rng(0).integers(0, 256, (2, 1, 32, 32, 3), dtype=np.uint8)
    state = model.init_state(2, frames=frames, generator=g)
    latents = []
    for t in range(steps):
        action = np.tile(np.array([[0.5, 0.0, 0.8, -0.3]], np.float32), (2, 1))  # forward while turning
        latent, state = model.step(state, action, generator=g)
        latents.append(latent)
    return torch.stack(latents, 1)


def test_an_added_refiner_changes_nothing_until_trained():
    model = make_tiny_model().eval()
    refined = _with_refiner(model)
    torch.testing.assert_close(_rollout(refined), _rollout(model), rtol=0, atol=0)
    latents = torch.randn(2, 4, *model.latent_shape)
    actions = np.zeros((2, 3, 4), np.float32)
    for loss in ("dynamics_loss", "streaming_loss"):
        a, _ = getattr(model, loss)(latents, actions, generator=torch.Generator().manual_seed(0))
        b, _ = getattr(refined, loss)(latents, actions, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("loss", ["dynamics_loss", "streaming_loss"])
def test_the_refiner_learns_and_changes_the_dream(loss):
    model = _with_refiner(make_tiny_model()).train()
    latents = torch.randn(2, 4, *model.latent_shape)
    actions = np.tile(np.array([0.5, 0.0, 0.8, -0.3], np.float32), (2, 3, 1))
    opt = torch.optim.Adam(model.refiner.parameters(), lr=1e-2)
    first = None
    for _ in range(20):
        value, _ = getattr(model, loss)(latents, actions, generator=torch.Generator().manual_seed(0))
        first = value.item() if first is None else first
        opt.zero_grad()
        value.backward()
        opt.step()
    assert value.item() < first  # the same batch and noise: only the refiner moved
    assert model.refiner.conv_out.weight.abs().sum() > 0 and model.refiner.film.weight.abs().sum() > 0
    base = _with_refiner(make_tiny_model())
    assert not torch.equal(_rollout(model.eval()), _rollout(base))
    torch.testing.assert_close(_rollout(model), _rollout(model), rtol=0, atol=0)  # still deterministic per seed


def test_refiner_config_is_validated():
    with pytest.raises(ValueError, match=r"refiner_channels=12 is invalid: expected 0 \(off\) or a positive multiple of 8"):
        WorldModelConfig.from_preset("tiny", refiner_channels=12)
    with pytest.raises(ValueError, match="refiner_channels=8 is invalid: expected 0 unless prediction='x0_residual'"):
        WorldModelConfig.from_preset("tiny", refiner_channels=8, prediction="velocity", prev_frame_input=False)


def test_train_init_adds_a_refiner_and_saves_it(dataset, tmp_path):
    base = train(train_config(dataset, tmp_path / "base"))
    out = train(train_config(dataset, tmp_path / "refined", stage="dynamics", init=str(base), steps=2,
                             config_overrides={"refiner_channels": 8}))
    assert json.loads((out / "config.json").read_text())["refiner_channels"] == 8
    weights = model_weights(out)
    assert any(k.startswith("refiner.") for k in weights)
    assert weights["refiner.conv_out.weight"].abs().sum() > 0  # trained from its zero start
    # other shape changes are still refused
    with pytest.raises(TrainingError, match="changes the model's weights"):
        train(train_config(dataset, tmp_path / "wider", stage="dynamics", init=str(base), steps=2,
                           config_overrides={"width": 64}))
