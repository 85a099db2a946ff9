"""--still-windows: a fraction of training windows becomes the first frame held under the zero action."""

import numpy as np
import pytest
import torch

from neuralsim.config import WorldModelConfig
from neuralsim.model import WorldModel
from neuralsim.train import StageLoss, TrainConfig, TrainingError, train


def _batch(B: int = 64, T: int = 5):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(B, T, 8, 4, 4, generator=g)
    batch = {"actions": torch.rand(B, T - 1, 4, generator=g) * 2 - 1, "rewards": torch.rand(B, T - 1, generator=g),
             "terminated": torch.zeros(B, T - 1, dtype=torch.bool)}
    batch["terminated"][:, -1] = True
    return latents, batch


def test_held_windows_repeat_their_first_frame_under_the_zero_action():
    model = WorldModel(WorldModelConfig.from_preset("tiny"))
    loss = StageLoss(model, "dynamics", still_windows=0.5)
    latents, batch = _batch()
    held, new = loss.hold_still(latents, batch, torch.Generator().manual_seed(1))
    still = (new["actions"] == 0).all(dim=(1, 2))
    assert 16 < int(still.sum()) < 48  # about half the rows
    for i in range(len(latents)):
        if still[i]:
            assert torch.equal(held[i], latents[i, :1].expand_as(latents[i]))
            assert float(new["rewards"][i].abs().sum()) == 0 and not bool(new["terminated"][i].any())
        else:
            assert torch.equal(held[i], latents[i]) and torch.equal(new["actions"][i], batch["actions"][i])
    assert not torch.equal(held, latents) and (batch["actions"] != 0).all()  # the caller's batch is untouched


def test_still_windows_off_changes_nothing():
    model = WorldModel(WorldModelConfig.from_preset("tiny"))
    latents, batch = _batch()
    held, new = StageLoss(model, "dynamics", still_windows=1e-9).hold_still(latents, batch, torch.Generator().manual_seed(1))
    assert held is latents and new is batch


@pytest.mark.parametrize("value", [-0.1, 1.0, True, "0.2"])
def test_bad_still_windows_is_refused_naming_the_flag(tmp_path, value):
    with pytest.raises(TrainingError, match="--still-windows"):
        train(TrainConfig(stage="dynamics", data=str(tmp_path), out=str(tmp_path / "out"), still_windows=value))


def test_stop_windows_move_then_hold_their_last_real_frame_under_the_zero_action():
    model = WorldModel(WorldModelConfig.from_preset("tiny"))
    loss = StageLoss(model, "dynamics", stop_windows=0.5, burn_in=2)
    latents, batch = _batch(T=8)
    held, new = loss.stop_partway(latents, batch, torch.Generator().manual_seed(1))
    stopped = [i for i in range(len(latents)) if not torch.equal(held[i], latents[i])]
    assert 16 < len(stopped) < 48  # about half the rows
    for i in range(len(latents)):
        zero = (new["actions"][i] == 0).all(dim=1)
        if i not in stopped:
            assert not bool(zero.any()) and torch.equal(new["rewards"][i], batch["rewards"][i])
            continue
        c = int(zero.float().argmax()) + 1  # first held frame
        assert 2 <= c < 8  # after the burn-in, inside the window
        assert bool(zero[c - 1 :].all()) and not bool(zero[: c - 1].any())  # moving, then the keys let go
        assert torch.equal(held[i, :c], latents[i, :c])  # real frames up to the cut
        assert torch.equal(held[i, c:], latents[i, c - 1 : c].expand_as(held[i, c:]))  # then the last one held
        assert float(new["rewards"][i, c - 1 :].abs().sum()) == 0 and not bool(new["terminated"][i, c - 1 :].any())
    assert (batch["actions"] != 0).all()  # the caller's batch is untouched


@pytest.mark.parametrize("value", [-0.1, 1.0, True, "0.3"])
def test_bad_stop_windows_is_refused_naming_the_flag(tmp_path, value):
    with pytest.raises(TrainingError, match="--stop-windows"):
        train(TrainConfig(stage="dynamics", data=str(tmp_path), out=str(tmp_path / "out"), stop_windows=value))


def test_coasting_stops_show_part_of_the_last_translation_and_turns_stop_at_once():
    model = WorldModel(WorldModelConfig.from_preset("tiny"))
    loss = StageLoss(model, "dynamics", stop_windows=0.999, stop_coast=0.375, burn_in=2)
    latents, batch = _batch(T=8)
    batch["actions"][:32, :, 2:] = 0  # the first half only translates; the second half also turns
    held, new = loss.stop_partway(latents, batch, torch.Generator().manual_seed(1))
    for i in range(len(latents)):
        c = int((new["actions"][i] == 0).all(dim=1).float().argmax()) + 1  # first held frame
        assert torch.equal(held[i, :c], latents[i, :c])
        expected = latents[i, c - 1] + (0.375 if i < 32 else 0.0) * (latents[i, c] - latents[i, c - 1])
        torch.testing.assert_close(held[i, c:], expected.expand_as(held[i, c:]))


@pytest.mark.parametrize("value", [-0.1, 1.0, True])
def test_bad_stop_coast_is_refused_naming_the_flag(tmp_path, value):
    with pytest.raises(TrainingError, match="--stop-coast"):
        train(TrainConfig(stage="dynamics", data=str(tmp_path), out=str(tmp_path / "out"), stop_windows=0.3,
                          stop_coast=value))


def test_stop_coast_without_stop_windows_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="--stop-coast .* needs --stop-windows"):
        train(TrainConfig(stage="dynamics", data=str(tmp_path), out=str(tmp_path / "out"), stop_coast=0.3))
