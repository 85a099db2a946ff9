"""The termination detector (neuralsim.reward.TerminationDetector; config.termination_detector_channels) and
`neuralsim train termination`: the dream's ending judged from the frame it draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, model_weights, train_config
from neuralsim.config import WorldModelConfig
from neuralsim.reward import TerminationDetector
from neuralsim.session import DreamSession
from neuralsim.train import TerminationPool, TrainingError, train


def square_frames(n: int, with_square: np.ndarray, size: int = 32, seed: int = 0) -> np.ndarray:
    """``[n, size, size, 3]`` uint8 grey frames, a red square low in the frame where ``with_square``."""
    rng = np.random.default_rng(seed)
    frames = np.full((n, size, size, 3), 90, np.uint8) + rng.integers(0, 30, (n, 1, 1, 1), dtype=np.uint8)
    for i in np.flatnonzero(with_square):
        x = int(rng.integers(0, size - 10))
        frames[i, size - 12 : size - 2, x : x + 10] = (220, 40, 40)
    return frames


def test_the_detector_learns_which_frames_end_an_episode():
    torch.manual_seed(0)
    detector = TerminationDetector(8, (32, 32))
    labels = np.arange(64) % 4 == 0
    frames = torch.from_numpy(square_frames(64, labels))
    assert detector(frames).shape == (64,)
    opt = torch.optim.Adam(detector.parameters(), 3e-3)
    for _ in range(150):
        loss, logs = detector.loss(frames, torch.from_numpy(labels), pos_weight=2.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    held_out_labels = np.arange(32) % 3 == 0
    with torch.no_grad():
        fired = detector(torch.from_numpy(square_frames(32, held_out_labels, seed=1))).numpy() > 0
    assert (fired == held_out_labels).all()
    assert logs["recall"] == 1.0 and logs["precision"] == 1.0


def test_the_threshold_is_fitted_on_held_out_dreams_and_names_the_logits_bias():
    pool = TerminationPool.__new__(TerminationPool)  # only the held-out frames matter here
    pool.held_dream = torch.zeros(6, 32, 32, 3, dtype=torch.uint8)
    pool.held_labels = torch.tensor([True, True, False, False, False, False])
    logits = torch.tensor([1.0, 0.6, 0.7, -2.0, -3.0, 0.2])
    shift, before, after = pool.fit_threshold(lambda frames: logits[: len(frames)], batch_size=64)
    # at 0 it fires 4 times for 2 endings (F1 2/3); shifted by -0.25 to -0.5 once too often (F1 0.8: the smallest
    # shift is taken); by -0.75 it misses one
    assert shift == -0.25 and before == pytest.approx(2 / 3) and after == pytest.approx(0.8)
    detector = TerminationDetector(8, (32, 32))
    assert dict(detector.named_parameters())[TerminationDetector.OUTPUT_BIAS] is detector.net[-1].bias


def test_an_image_size_the_strides_cannot_divide_is_refused():
    with pytest.raises(ValueError, match="multiple of 16"):
        TerminationDetector(8, (40, 40))


@pytest.mark.parametrize("fields, match", [
    ({"termination_detector_channels": 16}, "termination_detector_channels"),  # no reward model
    ({"reward_model_channels": 8, "termination_detector_channels": 12}, "termination_detector_channels"),
    ({"reward_model_channels": 8, "termination_detector_channels": True}, "termination_detector_channels"),
])
def test_bad_detector_configs_are_refused(fields, match):
    with pytest.raises((ValueError, TypeError), match=match):
        WorldModelConfig.from_preset("tiny", **fields)


def _model_with_detector(bias: float):
    model = make_tiny_model(reward_model_channels=8, termination_detector_channels=8).eval()
    with torch.no_grad():
        model.reward_model.bonus.fill_(10.0)
        last = model.termination_detector.net[-1]
        last.weight.zero_()
        last.bias.fill_(bias)
    return model


@pytest.mark.parametrize("bias", [20.0, -20.0])
def test_the_detector_replaces_the_reward_models_ending_and_bonus(bias):
    model = _model_with_detector(bias)
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32, 3), dtype=np.uint8)
    state = model.init_state(2, frames=frames, generator=torch.Generator().manual_seed(0))
    latent, new = model.step(state, np.zeros((2, 4), np.float32), torch.Generator().manual_seed(1))
    progress = new.reward - 10.0 * (new.termination_prob > 0.5).float()
    judged = model.judge_termination(new, model.decode(latent[:, None], first_frame=False, context=new))
    fires = bias > 0
    torch.testing.assert_close(judged.termination_prob, torch.full((2,), 1.0 if fires else 0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(judged.reward, progress + (10.0 if fires else 0.0))
    assert judged.latent is new.latent and judged.reward_memory is new.reward_memory  # the rest of the state as it was
    plain = make_tiny_model(reward_model_channels=8)
    assert plain.judge_termination(new, frames) is new  # no detector: nothing changes
    with pytest.raises(ValueError, match="frames must be uint8"):
        model.judge_termination(new, frames[0])


def test_a_session_decodes_for_the_detector_even_without_frames_asked():
    session = DreamSession(_model_with_detector(20.0), dtype="float32")
    assert session.judges_frames
    g = session.generator(0)
    state, _, _ = session.start(2, g, image=np.zeros((2, 1, 32, 32, 3), np.uint8))
    out = session.step(state, np.zeros((2, 4), np.float32), g, decode=False)
    np.testing.assert_allclose(out.termination_prob, 1.0, atol=1e-6)
    session.judge_frames = False  # opted out: the reward model's own ending, nothing decoded
    assert not session.judges_frames
    out = session.step(state, np.zeros((2, 4), np.float32), g, decode=False)
    assert out.frames is None and not np.allclose(out.termination_prob, 1.0)  # the untrained reward model's
    assert not DreamSession(make_tiny_model(reward_model_channels=8), dtype="float32").judges_frames


def test_envs_judge_the_frames_they_decode_and_latent_observations_keep_the_reward_models_ending(tmp_path):
    from conftest import save_tiny_checkpoint
    from neuralsim.envs import WorldModelEnv, WorldModelVectorEnv

    model_dir = save_tiny_checkpoint(tmp_path / "m", reward_model_channels=8, termination_detector_channels=8)
    for obs, judged in (("rgb", True), ("latent", False)):
        vec = WorldModelVectorEnv(2, model=str(model_dir), obs_type=obs, return_frames=False)
        env = WorldModelEnv(model=str(model_dir), obs_type=obs)
        assert vec.session.judges_frames == judged and env.session.judges_frames == judged
        vec.close()
        env.close()
    env = WorldModelEnv(model=str(model_dir), obs_type="latent", render_mode="rgb_array")  # it decodes: it judges
    vec = WorldModelVectorEnv(2, model=str(model_dir), obs_type="latent")  # returns the frames: decodes them anyway
    assert env.session.judges_frames and vec.session.judges_frames
    env.close()
    vec.close()


def ending_dataset(path: Path, episodes: int = 8, size: int = 32, seed: int = 0) -> Path:
    """A camera world whose episodes end (terminated) when the red square reaches the bottom rows, which the last
    frame shows; the others run out of time."""
    import gymnasium as gym

    from neuralsim.actions import space_to_spec
    from neuralsim.data import ShardWriter

    rng = np.random.default_rng(seed)
    spec = space_to_spec(gym.spaces.Box(-1, 1, (4,), np.float32))
    with ShardWriter(path, {"env_id": "synthetic", "image_size": [size, size], "action_spec": spec,
                            "frames_per_step": 1}, episodes_per_shard=4) as writer:
        for e in range(episodes):
            x, y = int(rng.integers(4, size - 12)), 4
            frames, actions = [], []
            ends = e % 2 == 0
            for t in range(14):
                img = np.full((size, size, 3), 60 + 10 * e, np.uint8)
                img[y : y + 6, x : x + 6] = (230, 60, 60)
                frames.append(img)
                if y >= size - 8 or t == 13:
                    break
                a = np.array([-1.0 if ends else 0.2, 0.0, 0.0, 0.0], np.float32)
                actions.append(a)
                y = int(np.clip(y + (3 if ends else -1), 0, size - 6))
            n = len(actions)
            terminated = np.zeros(n, bool)
            terminated[-1] = ends
            truncated = ~terminated & (np.arange(n) == n - 1)
            writer.add_episode(np.stack(frames), np.stack(actions), np.zeros(n, np.float32), terminated, truncated,
                               f"a red square, episode {e}")
    return path


def test_train_termination_adds_a_detector_and_trains_only_it(dataset, tmp_path):
    from neuralsim.model import WorldModel

    data = ending_dataset(tmp_path / "ends")
    base = train(train_config(data, tmp_path / "base"))
    with pytest.raises(TrainingError, match="needs a model with a reward model"):
        train(train_config(data, tmp_path / "no_rm", stage="termination", init=str(base)))
    rewarded = train(train_config(data, tmp_path / "rm", stage="reward", init=str(base), steps=2))
    with pytest.raises(TrainingError, match="has no episode that terminates"):
        train(train_config(dataset, tmp_path / "no_ends", stage="termination", init=str(rewarded)))
    with pytest.raises(TrainingError, match="--termination-windows must be an int >= 1"):
        train(train_config(data, tmp_path / "bad", stage="termination", init=str(rewarded), termination_windows=0))
    with pytest.raises(TrainingError, match=r"--termination-reset-share must be a number in \[0, 1\]"):
        train(train_config(data, tmp_path / "bad", stage="termination", init=str(rewarded), termination_reset_share=1.5))
    with pytest.raises(TrainingError, match="--termination-reset-horizon must be an int >= 1"):
        train(train_config(data, tmp_path / "bad", stage="termination", init=str(rewarded), termination_reset_horizon=0))
    out = train(train_config(data, tmp_path / "det", stage="termination", init=str(rewarded), steps=3,
                             termination_windows=8, window=6))
    model = WorldModel.from_pretrained(out)
    assert model.termination_detector is not None and model.config.termination_detector_channels == 32
    before, after = model_weights(rewarded), model_weights(out)
    assert set(after) - set(before) == {k for k in after if k.startswith("termination_detector.")}
    for name, value in before.items():  # every other weight as it was
        torch.testing.assert_close(after[name], value)
    # the detector is what the dream's envs now end episodes by: a session of it judges every step's frame
    assert DreamSession(model, dtype="float32").judges_frames


def test_reset_windows_dream_from_an_episodes_first_frame(tmp_path):
    """A dream env's episode starts from one real reset frame: the pool's reset windows dream from each episode's first
    frame for up to ``reset_horizon`` steps, each dreamed frame beside the real frame and the label of the same step;
    every 5th window held out."""
    from neuralsim.data import Dataset
    from neuralsim.model import WorldModel

    data = ending_dataset(tmp_path / "ends")
    base = train(train_config(data, tmp_path / "base"))
    model = WorldModel.from_pretrained(train(train_config(data, tmp_path / "rm", stage="reward", init=str(base),
                                                          steps=1))).float()
    dataset = Dataset(data)
    rng = np.random.default_rng([0, 9])  # the pool's generator: the reset windows draw their episodes first
    drawn = [int(rng.integers(0, dataset.num_episodes)) for _ in range(10)]
    for reset_horizon in (100, 8):  # past every episode's end (whole episodes), and cutting the longer ones short
        pool = TerminationPool(model, dataset, windows=10, horizon=2, seed=0, reset_share=1.0,
                               reset_horizon=reset_horizon)
        eps = [dataset.episode(e) for e in drawn]
        lengths = [min(reset_horizon, len(ep["actions"])) for ep in eps]
        real, labels, held = [], [], []
        for t in range(max(lengths)):  # one batch, step by step, the windows still running
            for w, ep in enumerate(eps):
                if t < lengths[w]:
                    real.append(ep["frames"][1 + t])
                    labels.append(bool(ep["terminated"][t]))
                    held.append(w % 5 == 4)
        held = np.array(held)
        np.testing.assert_array_equal(pool.real.numpy(), np.stack(real)[~held])
        np.testing.assert_array_equal(pool.labels.numpy(), np.array(labels)[~held])
        np.testing.assert_array_equal(pool.held_labels.numpy(), np.array(labels)[held])
        assert pool.dream.shape == pool.real.shape


def test_real_data_adds_every_real_frame_with_its_steps_ending_and_a_quarter_of_each_batch(tmp_path):
    """``--termination-real-data``: every frame after a step of another dataset of the env, labelled by whether that
    step ended its episode; a quarter of each batch (half the real frames) is drawn from it; bad data is refused."""
    from neuralsim.data import Dataset

    data = ending_dataset(tmp_path / "ends")
    extra = ending_dataset(tmp_path / "more_ends", seed=5)
    real = Dataset(extra)
    frames, labels = TerminationPool.real_frames(real)
    eps = [real.episode(e) for e in range(real.num_episodes)]
    np.testing.assert_array_equal(frames.numpy(), np.concatenate([ep["frames"][1:] for ep in eps]))
    np.testing.assert_array_equal(labels.numpy(), np.concatenate([ep["terminated"] for ep in eps]))
    assert labels.any() and not labels.all()

    pool = TerminationPool.__new__(TerminationPool)  # the batch's draw alone: dreams black, the pool's real frames grey
    n = 64
    pool.dream, pool.real = torch.zeros(n, 32, 32, 3, dtype=torch.uint8), torch.full((n, 32, 32, 3), 1, dtype=torch.uint8)
    pool.labels, pool.pos_weight = torch.zeros(n, dtype=torch.bool), 1.0
    pool.extra, pool.extra_labels = torch.full((n, 32, 32, 3), 2, dtype=torch.uint8), torch.ones(n, dtype=torch.bool)
    seen = {}

    class Spy(torch.nn.Module):
        def loss(self, frames, labels, pos_weight):
            seen["frames"], seen["labels"] = frames[:, 0, 0, 0], labels
            return torch.zeros(()), {}

    pool.loss(Spy(), 4096, torch.Generator().manual_seed(0))
    share = torch.bincount(seen["frames"].long(), minlength=3).float() / 4096
    torch.testing.assert_close(share, torch.tensor([0.5, 0.25, 0.25]), atol=0.03, rtol=0)
    assert torch.equal(seen["labels"], seen["frames"] == 2)  # each frame keeps its own label

    base = train(train_config(data, tmp_path / "base"))
    rewarded = train(train_config(data, tmp_path / "rm", stage="reward", init=str(base), steps=1))
    with pytest.raises(TrainingError, match="--termination-real-data trains the termination detector"):
        train(train_config(data, tmp_path / "bad", stage="reward", init=str(base), termination_real_data=str(extra)))
    with pytest.raises(TrainingError, match="--termination-real-data .*missing"):
        train(train_config(data, tmp_path / "bad", stage="termination", init=str(rewarded),
                           termination_real_data=str(tmp_path / "missing")))
    import json
    import shutil

    other = Path(shutil.copytree(extra, tmp_path / "other_env"))
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "env_id": "AnotherEnv-v0"}))
    with pytest.raises(TrainingError, match="was collected in 'AnotherEnv-v0'"):
        train(train_config(data, tmp_path / "bad", stage="termination", init=str(rewarded), termination_real_data=str(other)))
    from neuralsim.data import ShardWriter

    with ShardWriter(tmp_path / "two_frames", {**{k: manifest[k] for k in ("env_id", "image_size", "action_spec")},
                                               "frames_per_step": 2}) as writer:  # two frames recorded per action
        n = 3
        writer.add_episode(np.zeros((1 + 2 * n, 32, 32, 3), np.uint8), np.zeros((n, 4), np.float32),
                           np.zeros(n, np.float32), np.arange(n) == n - 1, np.zeros(n, bool), "")
    with pytest.raises(TrainingError, match="records 2 frames per step, --data .* 1: collect it with the same"):
        train(train_config(data, tmp_path / "bad", stage="termination", init=str(rewarded),
                           termination_real_data=str(tmp_path / "two_frames")))
    out = train(train_config(data, tmp_path / "det", stage="termination", init=str(rewarded), steps=2,
                             termination_windows=8, window=6, termination_real_data=str(extra)))
    with pytest.raises(TrainingError, match="--termination-real-pretrain-steps trains on the real frames"):
        train(train_config(data, tmp_path / "bad", stage="termination", init=str(rewarded), steps=2,
                           termination_real_pretrain_steps=1))
    for bad in (-1, 3, 1.5, True):
        with pytest.raises(TrainingError, match=r"--termination-real-pretrain-steps must be an int in \[0, --steps 2\]"):
            train(train_config(data, tmp_path / "bad", stage="termination", init=str(rewarded), steps=2,
                               termination_real_data=str(extra), termination_real_pretrain_steps=bad))
    train(train_config(data, tmp_path / "pre", stage="termination", init=str(rewarded), steps=2, termination_windows=8,
                       window=6, termination_real_data=str(extra), termination_real_pretrain_steps=1))
    from neuralsim.model import WorldModel

    assert WorldModel.from_pretrained(out).termination_detector is not None


def test_real_pretraining_draws_only_real_frames_half_of_them_mirrored():
    """``--termination-real-pretrain-steps``: while it lasts every frame of a batch is one of ``real_data``'s, with
    its own label, and about half are mirrored left to right."""
    pool = TerminationPool.__new__(TerminationPool)
    n = 64
    pool.dream, pool.real = torch.zeros(n, 8, 8, 3, dtype=torch.uint8), torch.zeros(n, 8, 8, 3, dtype=torch.uint8)
    pool.labels, pool.pos_weight = torch.zeros(n, dtype=torch.bool), 1.0
    extra = torch.zeros(n, 8, 8, 3, dtype=torch.uint8)
    extra[:, :, 0] = 100 + torch.arange(n, dtype=torch.uint8)[:, None, None]  # the left column names the frame
    pool.extra, pool.extra_labels = extra, torch.arange(n) % 3 == 0
    seen = {}

    class Spy(torch.nn.Module):
        def loss(self, frames, labels, pos_weight):
            seen["frames"], seen["labels"] = frames, labels
            return torch.zeros(()), {}

    pool.loss(Spy(), 4096, torch.Generator().manual_seed(0), real_only=True)
    frames = seen["frames"]
    left, right = frames[:, 0, 0, 0], frames[:, 0, -1, 0]
    mirrored = right >= 100
    assert torch.all((left >= 100) ^ mirrored)  # every frame a real one, as it is or mirrored
    assert 0.45 < float(mirrored.float().mean()) < 0.55
    index = torch.where(mirrored, right, left).long() - 100
    assert torch.equal(seen["labels"], index % 3 == 0)  # each keeps its own label
