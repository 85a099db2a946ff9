"""The latent refiner (config.refiner_channels): a conv net at full latent resolution that corrects x0."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, model_weights, train_config
from neuralsim.config import WorldModelConfig
from neuralsim.train import TrainingError, train


def _with_refiner(model, channels: int = 8, reads_changes: bool = False):
    """``model`` rebuilt with a refiner, its other weights kept (as ``train --init ... --set refiner_channels=N``)."""
    from neuralsim.model import WorldModel

    torch.manual_seed(1)
    rebuilt = WorldModel(model.config.replace(refiner_channels=channels, refiner_reads_changes=reads_changes))
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


@pytest.mark.parametrize("reads_changes", [False, True])
def test_an_added_refiner_changes_nothing_until_trained(reads_changes):
    model = make_tiny_model().eval()
    refined = _with_refiner(model, reads_changes=reads_changes)
    torch.testing.assert_close(_rollout(refined), _rollout(model), rtol=0, atol=0)
    latents = torch.randn(2, 4, *model.latent_shape)
    actions = np.zeros((2, 3, 4), np.float32)
    for loss in ("dynamics_loss", "streaming_loss"):
        a, _ = getattr(model, loss)(latents, actions, generator=torch.Generator().manual_seed(0))
        b, _ = getattr(refined, loss)(latents, actions, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("reads_changes", [False, True])
@pytest.mark.parametrize("loss", ["dynamics_loss", "streaming_loss"])
def test_the_refiner_learns_and_changes_the_dream(loss, reads_changes):
    model = _with_refiner(make_tiny_model(), reads_changes=reads_changes).train()
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
    base = _with_refiner(make_tiny_model(), reads_changes=reads_changes)
    assert not torch.equal(_rollout(model.eval()), _rollout(base))
    torch.testing.assert_close(_rollout(model), _rollout(model), rtol=0, atol=0)  # still deterministic per seed


def test_the_changes_only_refiner_leaves_a_still_frame_alone():
    """Whatever its weights, it corrects nothing where nothing changes (no turn, the estimate is the previous
    latent), and it does correct a frame that changes: the first form, at the same random weights, does not keep
    the still frame."""
    from neuralsim.model import LatentRefiner

    torch.manual_seed(0)
    prev = torch.randn(3, 16, 8, 8)
    cond = torch.randn(3, 6)
    for reads_changes, still_is_kept in ((True, True), (False, False)):
        refiner = LatentRefiner(16, 4, 16, reads_changes=reads_changes)
        for p in refiner.parameters():  # random, not the zero start: a trained refiner
            torch.nn.init.normal_(p, std=0.2)
        still = refiner(prev, prev.clone(), None, cond)
        assert bool(still.abs().max() == 0) == still_is_kept
        assert refiner(prev, prev + 0.1 * torch.randn_like(prev), None, cond).abs().max() > 0


def test_refiner_config_is_validated():
    with pytest.raises(ValueError, match=r"refiner_channels=12 is invalid: expected 0 \(off\) or a positive multiple of 8"):
        WorldModelConfig.from_preset("tiny", refiner_channels=12)
    with pytest.raises(ValueError, match="refiner_channels=8 is invalid: expected 0 unless prediction='x0_residual'"):
        WorldModelConfig.from_preset("tiny", refiner_channels=8, prediction="velocity", prev_frame_input=False)
    with pytest.raises(ValueError, match=r"refiner_reads_changes=True is invalid: expected False unless refiner_channels > 0"):
        WorldModelConfig.from_preset("tiny", refiner_reads_changes=True)


def test_train_init_adds_a_refiner_and_saves_it(dataset, tmp_path):
    base = train(train_config(dataset, tmp_path / "base"))
    out = train(train_config(dataset, tmp_path / "refined", stage="dynamics", init=str(base), steps=2,
                             config_overrides={"refiner_channels": 8, "refiner_reads_changes": True}))
    config = json.loads((out / "config.json").read_text())
    assert config["refiner_channels"] == 8 and config["refiner_reads_changes"] is True
    weights = model_weights(out)
    assert any(k.startswith("refiner.") for k in weights)
    assert weights["refiner.conv_out.weight"].abs().sum() > 0  # trained from its zero start
    # other shape changes are still refused
    with pytest.raises(TrainingError, match="changes the model's weights"):
        train(train_config(dataset, tmp_path / "wider", stage="dynamics", init=str(base), steps=2,
                           config_overrides={"width": 64}))
