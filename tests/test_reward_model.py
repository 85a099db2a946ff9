"""The recurrent reward/termination model (neuralsim.reward; config.reward_model_channels) and `train reward`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, train_config
from neuralsim.config import WorldModelConfig
from neuralsim.reward import RewardModel
from neuralsim.train import TrainingError, train


def _with_reward_model(model, channels: int = 8, hidden: int = 16):
    """``model`` with a reward model added, every other weight kept (as ``train reward`` does)."""
    from neuralsim.model import WorldModel

    torch.manual_seed(1)
    rebuilt = WorldModel(model.config.replace(reward_model_channels=channels, reward_model_hidden=hidden))
    missing, unexpected = rebuilt.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("reward_model.") for k in missing)
    with torch.no_grad():  # a random, non-zero bonus and heads: the tests must see the numbers move
        rebuilt.reward_model.bonus.fill_(2.0)
    return rebuilt.eval()


def test_a_sequence_equals_its_steps():
    torch.manual_seed(0)
    rm = RewardModel(4, 3, channels=8, hidden=16)
    with torch.no_grad():
        rm.bonus.fill_(2.0)
    latents, actions = torch.randn(2, 5, 4, 8, 8), torch.randn(2, 4, 3)
    rewards, logits, memory = rm(latents, actions)
    assert rewards.shape == logits.shape == (2, 4) and memory.shape == (2, 16)
    progress = rewards - 2.0 * torch.sigmoid(logits)
    _, _, mem = rm(latents[:, :1], actions[:, :0])  # the first frame opens the memory
    for t in range(4):
        r, lg, mem = rm.step(latents[:, t], latents[:, t + 1], actions[:, t], mem)
        torch.testing.assert_close(lg, logits[:, t])
        # a step pays the whole bonus when it ends the dream (logit > 0) and none of it otherwise; training's
        # sequence pays bonus * P
        torch.testing.assert_close(r, progress[:, t] + 2.0 * (logits[:, t] > 0).float())
    torch.testing.assert_close(mem, memory)
    # Continuing from a memory: the same as one long sequence.
    r2, _, _ = rm(latents[:, 2:], actions[:, 2:], memory=rm(latents[:, :3], actions[:, :2])[2])
    torch.testing.assert_close(r2, rewards[:, 2:])


def test_the_dream_reports_the_reward_model_not_the_heads():
    model = _with_reward_model(make_tiny_model())
    g = torch.Generator().manual_seed(0)
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32, 3), dtype=np.uint8)  # 2 latent frames (k=2)
    actions = np.tile(np.array([[[0.5, 0.0, 0.8, -0.3]]], np.float32), (2, 1, 1))
    state = model.init_state(2, frames=frames, actions=actions, generator=g)
    latents = [model.encode(frames)]
    with torch.no_grad():
        ref, ref_logit, _ = model.reward_model(latents[0], torch.as_tensor(actions))
    torch.testing.assert_close(state.reward, ref[:, -1])
    torch.testing.assert_close(state.termination_prob, torch.sigmoid(ref_logit[:, -1]))
    rewards, probs = model.reward_model_sequence(latents[0], actions)  # the same along a whole sequence
    torch.testing.assert_close(rewards, ref)
    torch.testing.assert_close(probs, torch.sigmoid(ref_logit))
    memory = state.reward_memory
    for _ in range(3):
        prev = state.latent
        latent, state = model.step(state, actions[:, 0], generator=g)
        with torch.no_grad():
            r, lg, memory = model.reward_model.step(prev, latent, torch.as_tensor(actions[:, 0]), memory)
        torch.testing.assert_close(state.reward, r)
        torch.testing.assert_close(state.termination_prob, torch.sigmoid(lg))
    # Rows reset separately keep their own memories.
    fresh = model.init_state(2, frames=frames[::-1].copy(), generator=g)
    merged = state.merge(np.array([True, False]), fresh)
    torch.testing.assert_close(merged.reward_memory[0], fresh.reward_memory[0])
    torch.testing.assert_close(merged.reward_memory[1], state.reward_memory[1])


def test_a_generated_first_frame_opens_the_memory_with_reward_zero():
    model = _with_reward_model(make_tiny_model())
    state = model.init_state(2, prompt="a room", generator=torch.Generator().manual_seed(0))
    assert state.reward_memory is not None and state.reward_memory.shape == (2, 16)
    assert torch.equal(state.reward, torch.zeros(2)) and torch.equal(state.termination_prob, torch.zeros(2))


def test_reward_loss_learns_a_reward_that_depends_on_action_and_frame():
    model = _with_reward_model(make_tiny_model()).train()
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(16, 5, *model.latent_shape, generator=g)
    actions = torch.rand(16, 4, 4, generator=g) * 2 - 1
    rewards = actions[..., 0] * latents[:, 1:, 0].mean(dim=(-1, -2)).sign()  # forward, signed by what is seen
    terminated = torch.zeros(16, 4, dtype=torch.bool)
    terminated[:4, -1] = True
    opt = torch.optim.Adam(model.reward_model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss, logs = model.reward_loss(latents, actions.numpy(), rewards, terminated)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first and set(logs) >= {"reward_mse", "termination_bce", "termination_acc"}


def test_a_memory_opened_later_ignores_what_came_before():
    """``opens``: each row's memory restarts at that frame; the frames before the one preceding it and the
    transitions before it change nothing."""
    model = _with_reward_model(make_tiny_model())
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 7, *model.latent_shape, generator=g)
    actions = (torch.rand(2, 6, 4, generator=g) * 2 - 1).numpy()
    rewards, terminated = torch.randn(2, 6, generator=g), torch.zeros(2, 6, dtype=torch.bool)
    terminated[:, -1] = True
    opens = torch.tensor([3, 3])
    loss, _ = model.reward_loss(latents, actions, rewards, terminated, opens)
    other = latents.clone()
    other[:, :2] = torch.randn(2, 2, *model.latent_shape, generator=g)  # frames before frame 2 (frame 3's previous)
    changed = rewards.clone()
    changed[:, :3] = 5.0  # the transitions into frames 1..3
    again, _ = model.reward_loss(other, actions, changed, terminated, opens)
    torch.testing.assert_close(again, loss)
    assert not torch.allclose(model.reward_loss(latents, actions, rewards, terminated)[0], loss)
    with pytest.raises(ValueError, match=r"opens must be 2 frame indices in \[0, 5\]"):
        model.reward_loss(latents, actions, rewards, terminated, torch.tensor([0, 6]))


def test_reward_loss_without_a_reward_model_and_bad_shapes_are_refused():
    from neuralsim.model import InputError

    model = make_tiny_model()
    latents = torch.randn(2, 3, *model.latent_shape)
    with pytest.raises(InputError, match="no reward model"):
        model.reward_loss(latents, np.zeros((2, 2, 4), np.float32), np.zeros((2, 2)), np.zeros((2, 2), bool))
    model = _with_reward_model(model)
    with pytest.raises(InputError, match=r"rewards must have shape \(2, 2\)"):
        model.reward_loss(latents, np.zeros((2, 2, 4), np.float32), np.zeros((2, 3)), np.zeros((2, 2), bool))


@pytest.mark.parametrize("field, value", [("reward_model_channels", 12), ("reward_model_channels", -8),
                                          ("reward_model_hidden", 0), ("reward_model_channels", True)])
def test_bad_reward_model_sizes_are_refused(field, value):
    with pytest.raises((ValueError, TypeError), match=field):
        WorldModelConfig.from_preset("tiny", **{field: value})


def test_train_reward_adds_a_reward_model_trains_only_it_and_resumes(dataset, tmp_path):
    from neuralsim.model import WorldModel

    base = train(train_config(dataset, tmp_path / "base"))
    before = WorldModel.from_pretrained(base)
    assert before.reward_model is None
    out = train(train_config(dataset, tmp_path / "rw", stage="reward", init=str(base), steps=4, self_forcing=0.5))
    after = WorldModel.from_pretrained(out)
    assert after.reward_model is not None and after.config.reward_model_channels == 64
    kept = before.state_dict()
    for k, v in after.state_dict().items():
        if not k.startswith("reward_model."):
            assert torch.equal(v, kept[k]), k  # nothing else moved
    rows = (out / "logs" / "reward.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and "reward_mse" in rows[0] and len(rows) == 5
    # Interrupted after step 2 and resumed: the same weights as the uninterrupted run.
    from neuralsim.train import StopTraining

    with pytest.raises(StopTraining):
        train(train_config(dataset, tmp_path / "rw2", stage="reward", init=str(base), steps=4, self_forcing=0.5,
                           stop_after=2))
    again = train(train_config(dataset, tmp_path / "rw2", stage="reward", init=str(base), steps=4, self_forcing=0.5,
                               resume=True))
    a, b = WorldModel.from_pretrained(again).state_dict(), after.state_dict()
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert json.loads((out / "config.json").read_text())["reward_model_channels"] == 64


def test_train_reward_without_a_model_is_refused(dataset, tmp_path):
    with pytest.raises(TrainingError, match="reward needs a trained world model: pass --init"):
        train(train_config(dataset, tmp_path / "none", stage="reward"))


def test_a_new_reward_model_starts_with_the_datas_success_bonus(dataset):
    from neuralsim.data import Dataset
    from neuralsim.train import init_reward_bonus

    data = Dataset(dataset)
    episodes = [data.episode(i) for i in range(data.num_episodes)]
    for name in ("rewards", "terminated", "actions"):
        np.testing.assert_array_equal(data.step_column(name), np.concatenate([e[name] for e in episodes]))
    with pytest.raises(ValueError, match="name must be 'actions', 'rewards'"):
        data.step_column("frames")
    rewards, ended = data.step_column("rewards"), data.step_column("terminated")
    expected = float(rewards[ended].mean() - rewards[~ended].mean()) if ended.any() else 0.0
    model = _with_reward_model(make_tiny_model())
    assert init_reward_bonus(model, data) == pytest.approx(expected)
    assert model.reward_model.bonus.item() == pytest.approx(expected)


# ------------------------------------------------------------------- --terminal-windows: the rare endings, oversampled


def _ending_dataset(path):
    """Four 12-step episodes; episodes 1 and 3 end (terminated) at their steps 5 and 9."""
    import gymnasium as gym

    from neuralsim.actions import space_to_spec
    from neuralsim.data import ShardWriter

    spec = space_to_spec(gym.spaces.Box(-1, 1, (4,), np.float32))
    with ShardWriter(path, {"env_id": "synthetic", "image_size": [32, 32], "action_spec": spec,
                            "frames_per_step": 1}) as writer:
        for e, end in enumerate((None, 5, None, 9)):
            steps = 12 if end is None else end + 1
            rng = np.random.default_rng(e)
            terminated, truncated = np.zeros(steps, bool), np.zeros(steps, bool)
            if end is None:
                truncated[-1] = True
            else:
                terminated[-1] = True
            writer.add_episode(rng.integers(0, 255, (steps + 1, 32, 32, 3), np.uint8),
                               rng.uniform(-1, 1, (steps, 4)).astype(np.float32), terminated * 10.0, terminated,
                               truncated, "a grey room")
    return path


def test_terminal_windows_hold_an_ending(tmp_path):
    from neuralsim.data import Dataset
    from neuralsim.train import TrainConfig, data_stream

    ds = Dataset(_ending_dataset(tmp_path / "d"))
    cfg = lambda fraction: TrainConfig(stage="reward", data=str(tmp_path / "d"), out=str(tmp_path / "o"),  # noqa: E731
                                       window=4, batch_size=256, terminal_windows=fraction)
    every = next(data_stream(ds, cfg(1.0), "reward", 0))
    assert every["terminated"].any(axis=1).all()  # each window holds a step that ends its episode
    plain = next(data_stream(ds, cfg(0.0), "reward", 0))
    half = next(data_stream(ds, cfg(0.5), "reward", 0))
    assert plain["terminated"].any(axis=1).mean() < 0.3 < half["terminated"].any(axis=1).mean()


@pytest.mark.parametrize("value", [-0.1, 1.5, True])
def test_bad_terminal_windows_is_refused_naming_the_flag(tmp_path, value):
    from neuralsim.train import TrainConfig

    with pytest.raises(TrainingError, match="--terminal-windows must be a fraction"):
        train(TrainConfig(stage="reward", data=str(tmp_path), out=str(tmp_path / "out"), terminal_windows=value))


def test_terminal_windows_on_data_without_endings_is_refused(dataset, tmp_path):
    base = train(train_config(dataset, tmp_path / "base"))
    with pytest.raises(TrainingError, match="--terminal-windows: .* no step that ends an episode"):
        train(train_config(dataset, tmp_path / "rw", stage="reward", init=str(base), terminal_windows=0.5))
