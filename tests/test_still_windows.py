"""--still-windows: a fraction of training windows becomes the first frame held under the zero action."""

import numpy as np
import pytest
import torch

from neuralsim.config import WorldModelConfig
from neuralsim.model import WorldModel
from neuralsim.train import StageLoss, StopTraining, TrainConfig, TrainingError, train


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


# ------------------------------------------------------------------- --release-windows: the data's own stops, oversampled


def _idling_dataset(path):
    """Two 20-step episodes: moving, then the keys let go at steps 7 (episode 0) and 13 (episode 1), idle after."""
    import gymnasium as gym

    from neuralsim.actions import space_to_spec
    from neuralsim.data import ShardWriter

    spec = space_to_spec(gym.spaces.Box(-1, 1, (4,), np.float32))
    with ShardWriter(path, {"env_id": "synthetic", "image_size": [32, 32], "action_spec": spec,
                            "frames_per_step": 1}) as writer:
        for e, release in enumerate((7, 13)):
            actions = np.zeros((20, 4), np.float32)
            actions[:release, 0] = 1.0
            frames = np.random.default_rng(e).integers(0, 255, (21, 32, 32, 3), np.uint8)
            truncated = np.zeros(20, bool)
            truncated[-1] = True
            writer.add_episode(frames, actions, np.zeros(20, np.float32), np.zeros(20, bool), truncated, "a grey room")
    return path


def test_key_releases_are_the_first_zero_action_after_a_moving_one(tmp_path):
    from neuralsim.data import Dataset
    from neuralsim.train import key_releases

    ds = Dataset(_idling_dataset(tmp_path / "d"))
    assert key_releases(ds).tolist() == [7, 20 + 13]  # not the idle start of an episode, not the idle steps after


def test_release_windows_put_the_release_where_asked_and_leave_the_other_windows_as_they_were(tmp_path):
    from neuralsim.data import Dataset
    from neuralsim.train import key_releases

    ds = Dataset(_idling_dataset(tmp_path / "d"))
    plain = ds.iter_windows(steps=8, batch_size=64, seed=5)
    focused = ds.iter_windows(steps=8, batch_size=64, seed=5, focus=key_releases(ds), focus_fraction=0.5,
                              focus_at=(4, 8))
    for _ in range(3):
        a, b = next(plain), next(focused)
        moved = (a["episode"] != b["episode"]) | (a["start"] != b["start"])
        assert 10 < int(moved.sum()) < 54  # about half the windows, drawn anew
        kept = ~moved
        assert np.array_equal(a["actions"][kept], b["actions"][kept])
        for e, s in zip(b["episode"][moved], b["start"][moved]):
            at = (7, 13)[e] - s  # the window step at which the keys are let go
            assert 4 <= at < 8, (e, s)
    resumed = ds.iter_windows(steps=8, batch_size=64, seed=5, start_index=2, focus=key_releases(ds),
                              focus_fraction=0.5, focus_at=(4, 8))
    assert np.array_equal(next(resumed)["start"], b["start"])  # batch i is a function of (seed, i) still


@pytest.mark.parametrize("kw, match", [(dict(focus_fraction=1.5), "focus_fraction"), (dict(focus_at=(3, 9)), "focus_at"),
                                       (dict(focus=np.array([99])), "focus must be")])
def test_bad_focus_is_refused_naming_the_parameter(tmp_path, kw, match):
    from neuralsim.data import Dataset

    ds = Dataset(_idling_dataset(tmp_path / "d"))
    args = dict(focus=np.array([7]), focus_fraction=0.5, focus_at=(0, 8)) | kw
    with pytest.raises(ValueError, match=match):
        next(ds.iter_windows(steps=8, batch_size=4, seed=0, **args))


@pytest.mark.parametrize("value", [-0.1, 1.5, True])
def test_bad_release_windows_is_refused_naming_the_flag(tmp_path, value):
    with pytest.raises(TrainingError, match="--release-windows"):
        train(TrainConfig(stage="dynamics", data=str(tmp_path), out=str(tmp_path / "out"), release_windows=value))


def test_release_windows_on_data_that_never_lets_go_is_refused(dataset, tmp_path):
    from conftest import train_config

    with pytest.raises(TrainingError, match="--release-windows: .* never lets go"):
        train(train_config(dataset, tmp_path / "out", stage="dynamics", release_windows=0.3))


def test_training_with_release_windows_runs_and_resumes_identically(tmp_path):
    from conftest import model_weights, train_config

    data = _idling_dataset(tmp_path / "d")
    kw = dict(release_windows=0.5, window=6, streaming=False)
    train(train_config(data, tmp_path / "a", **kw))
    with pytest.raises(StopTraining):
        train(train_config(data, tmp_path / "b", stop_after=2, **kw))
    train(train_config(data, tmp_path / "b", resume=True, **kw))
    a, b = model_weights(tmp_path / "a"), model_weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
