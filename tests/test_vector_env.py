"""WorldModelVectorEnv: make_vec, batched spaces, NEXT_STEP autoreset, partial resets, determinism, error isolation."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import neuralsim  # noqa: F401
from neuralsim.envs import WorldModelEnv, WorldModelVectorEnv

from conftest import TINY_FRAMES_PER_STEP, make_tiny_model

K = TINY_FRAMES_PER_STEP
N = 4


@pytest.fixture()
def ckpt(tiny_checkpoint) -> Path:
    """conftest's session-wide tiny checkpoint (read-only)."""
    return tiny_checkpoint


@pytest.fixture()
def envs(ckpt):
    e = WorldModelVectorEnv(N, model=str(ckpt), max_episode_steps=3, render_mode="rgb_array")
    yield e
    e.close()


def actions_for(envs, seed: int, steps: int) -> list[np.ndarray]:
    envs.action_space.seed(seed)
    return [envs.action_space.sample() for _ in range(steps)]


def replay(envs, seed: int, actions) -> list:
    obs, _ = envs.reset(seed=seed)
    out = [obs]
    for a in actions:
        obs, reward, terminated, truncated, info = envs.step(a)
        out += [obs, reward, terminated, truncated]
    return out


# ------------------------------------------------------------------------------------ construction


def test_make_vec_returns_the_native_vector_env(ckpt):
    envs = gym.make_vec("SanaWM-v0", num_envs=5, vectorization_mode="vector_entry_point", model=str(ckpt),
                        denoise_steps=1, obs_type="latent", return_frames=False)
    assert isinstance(envs, WorldModelVectorEnv) and envs.num_envs == 5
    assert envs.session.denoise_steps == 1 and envs.obs_type == "latent" and not envs.return_frames
    assert envs.max_episode_steps == gym.spec("SanaWM-v0").max_episode_steps == 200  # the spec's limit flows in
    assert envs.spec.id == "SanaWM-v0" and envs.spec.kwargs["num_envs"] == 5
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (5, *envs.single_observation_space.shape) and obs.dtype == np.float32
    obs, *_, info = envs.step(envs.action_space.sample())
    assert "frames" not in info
    short = gym.make_vec("SanaWM-v0", num_envs=2, vectorization_mode="vector_entry_point", model=str(ckpt),
                         max_episode_steps=7)
    assert short.max_episode_steps == 7


def test_batched_spaces(envs, ckpt):
    h, w = envs.config.image_size
    assert envs.single_observation_space == gym.spaces.Box(0, 255, (h, w, 3), np.uint8)
    assert envs.observation_space == gym.spaces.Box(0, 255, (N, h, w, 3), np.uint8)
    assert envs.single_action_space == gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    assert envs.action_space.shape == (N, 4)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, info = envs.reset(seed=0)
    assert obs in envs.observation_space and info["step"].tolist() == [0] * N
    assert set(info["start_index"].tolist()) <= {0, 1, 2}
    frames = envs.render()
    assert len(frames) == N and np.array_equal(np.stack(frames), obs)


def test_invalid_construction(ckpt):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_envs"):
            WorldModelVectorEnv(bad, model=str(ckpt))
    with pytest.raises(ValueError, match="render_mode"):
        WorldModelVectorEnv(2, model=str(ckpt), render_mode="human")
    with pytest.raises(gym.error.ResetNeeded, match="before reset"):
        WorldModelVectorEnv(2, model=str(ckpt)).step(np.zeros((2, 4), np.float32))


# ------------------------------------------------------------------------------------ stepping and autoreset


def test_next_step_autoreset_after_truncation(envs):
    envs.reset(seed=0)
    acts = actions_for(envs, 0, 4)
    for t in range(3):
        obs, reward, terminated, truncated, info = envs.step(acts[t])
        assert reward.dtype == np.float64 and terminated.dtype == np.bool_ and truncated.dtype == np.bool_
        assert info["step"].tolist() == [t + 1] * N and info["frames"].shape == (N, K, *obs.shape[1:])
        assert np.array_equal(info["frames"][:, -1], obs)
        assert truncated.tolist() == [t == 2] * N and not terminated.any()
    obs, reward, terminated, truncated, info = envs.step(acts[3])  # the step after a done: reset, reward 0
    starts = envs.session.start_frames
    assert all(any(np.array_equal(o, s) for s in starts) for o in obs)
    assert reward.tolist() == [0.0] * N and not terminated.any() and not truncated.any()
    assert info["step"].tolist() == [0] * N and not info["_predicted_reward"].any() and not info["_frames"].any()
    obs, reward, terminated, truncated, info = envs.step(acts[0])
    assert info["step"].tolist() == [1] * N and info["_predicted_reward"].all()


def test_predicted_termination_ends_episodes(ckpt):
    envs = WorldModelVectorEnv(3, model=make_tiny_model(termination_bias=6.0))
    envs.reset(seed=0)
    _, _, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert terminated.all() and not truncated.any() and (info["termination_prob"] > 0.5).all()
    _, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert not terminated.any() and reward.tolist() == [0.0] * 3 and info["step"].tolist() == [0] * 3


def test_reset_mask_resets_only_those_envs_and_truncation_is_per_env(envs):
    envs.reset(seed=1)
    envs.step(envs.action_space.sample())
    before = envs._obs.copy()
    mask = np.array([True, False, True, False])
    image = np.full((*envs.config.image_size, 3), 9, np.uint8)
    obs, info = envs.reset(options={"reset_mask": mask, "image": image})
    assert np.array_equal(obs[~mask], before[~mask]) and (obs[mask] == 9).all()
    assert info["step"].tolist() == [0, 1, 0, 1] and info["_step"].tolist() == mask.tolist()
    truncated = [envs.step(envs.action_space.sample())[3].tolist() for _ in range(2)]
    assert truncated == [[False, False, False, False], [False, True, False, True]]  # limit 3 reached per env
    with pytest.raises(TypeError, match="reset_mask"):
        envs.reset(options={"reset_mask": [True] * N})
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        envs.reset(options={"reset_mask": np.ones(3, bool)})
    with pytest.raises(TypeError, match="dtype=np.bool_"):
        envs.reset(options={"reset_mask": np.ones(N, int)})
    with pytest.raises(ValueError, match="at least one True"):
        envs.reset(options={"reset_mask": np.zeros(N, bool)})


def test_partial_reset_leaves_other_envs_untouched(ckpt):
    """Rows that are not reset evolve exactly as in a run without the partial reset (same noise stream).

    Exactly in fp32; under bf16 autocast (dtype "auto" on a CPU with native bf16) oneDNN's kernels may round a row
    differently when the other rows change, so the bit-exact check pins fp32."""
    a = WorldModelVectorEnv(N, model=str(ckpt), max_episode_steps=None, dtype="float32")
    b = WorldModelVectorEnv(N, model=str(ckpt), max_episode_steps=None, dtype="float32")
    acts = actions_for(a, 2, 3)
    a.reset(seed=3), b.reset(seed=3)
    a.step(acts[0]), b.step(acts[0])
    mask = np.array([False, False, False, True])
    b.reset(options={"reset_mask": mask, "image": np.zeros((*a.config.image_size, 3), np.uint8)})
    for act in acts[1:]:
        oa, ob = a.step(act)[0], b.step(act)[0]
    # Same generator, same draws: only the model inputs of row 3 differ, and rows do not interact.
    np.testing.assert_array_equal(oa[:3], ob[:3])


def test_same_seed_same_actions_identical(ckpt, envs):
    acts = actions_for(envs, 0, 5)  # crosses the limit of 3: autoreset included
    first = replay(envs, 11, acts)
    second = replay(WorldModelVectorEnv(N, model=str(ckpt), max_episode_steps=3), 11, acts)
    assert all(np.array_equal(x, y) for x, y in zip(first, second))
    other = replay(envs, 12, acts)
    assert not np.array_equal(first[-4], other[-4])


def test_one_env_vector_equals_the_single_env(ckpt):
    single = WorldModelEnv(str(ckpt))
    vector = WorldModelVectorEnv(1, model=str(ckpt))
    single.action_space.seed(0)
    acts = [single.action_space.sample() for _ in range(3)]
    s_obs, s_info = single.reset(seed=7)
    v_obs, v_info = vector.reset(seed=7)
    assert np.array_equal(s_obs, v_obs[0]) and s_info["start_index"] == v_info["start_index"][0]
    for a in acts:
        s = single.step(a)
        v = vector.step(a[None])
        assert np.array_equal(s[0], v[0][0]) and s[1] == v[1][0]


def test_bad_action_batch_changes_nothing(ckpt, envs):
    acts = actions_for(envs, 3, 4)
    reference = replay(WorldModelVectorEnv(N, model=str(ckpt), max_episode_steps=3), 5, acts)
    envs.reset(seed=5)
    out = [reference[0]]
    bad = [np.zeros((N - 1, 4), np.float32), np.full((N, 4), np.nan, np.float32), np.full((N, 4), 3.0, np.float32),
           np.zeros(4, np.float32), "w-8"]
    for a, b in zip(acts, bad):
        with pytest.raises((ValueError, TypeError), match="actions"):
            envs.step(b)
        out += list(envs.step(a)[:4])
    assert all(np.array_equal(x, y) for x, y in zip(reference, out))


def test_failing_reward_fn_changes_nothing(ckpt):
    calls = {"n": 0}

    def reward_fn(obs, action, next_obs, info):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("user bug")
        return float(info["predicted_reward"]) + 1.0

    envs = WorldModelVectorEnv(1, model=str(ckpt), reward_fn=reward_fn)
    ref = WorldModelVectorEnv(1, model=str(ckpt))
    acts = actions_for(envs, 0, 2)
    envs.reset(seed=0), ref.reset(seed=0)
    assert envs.step(acts[0])[1][0] == ref.step(acts[0])[1][0] + 1.0
    with pytest.raises(RuntimeError, match="user bug"):
        envs.step(acts[1])
    obs, reward, *_ = envs.step(acts[1])
    ref_obs, ref_reward, *_ = ref.step(acts[1])
    assert np.array_equal(obs, ref_obs) and reward[0] == ref_reward[0] + 1.0


def test_reset_options_per_env(envs):
    h, w = envs.config.image_size
    images = np.stack([np.full((h, w, 3), i * 10, np.uint8) for i in range(N)])
    obs, info = envs.reset(seed=0, options={"image": images, "prompt": [f"room {i}" for i in range(N)]})
    assert np.array_equal(obs, images) and info["prompt"].tolist() == [f"room {i}" for i in range(N)]
    obs, _ = envs.reset(seed=0, options={"prompt": "a red ball"})
    assert obs.shape == (N, h, w, 3)
    with pytest.raises(ValueError, match=r"options\['image'\] must be \(H, W, 3\) for every env"):
        envs.reset(options={"image": images[:2]})
    with pytest.raises(ValueError, match=r"options\['prompt'\] has 2 prompts"):
        envs.reset(options={"prompt": ["a", "b"]})
    with pytest.raises(TypeError, match="seed must be an int"):
        envs.reset(seed=[1, 2, 3, 4])


def test_record_episode_statistics_wrapper(envs):
    """gymnasium's vector wrappers understand the declared NEXT_STEP autoreset."""
    wrapped = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    wrapped.reset(seed=0)
    for _ in range(3):
        *_, info = wrapped.step(wrapped.action_space.sample())
    assert info["_episode"].all() and info["episode"]["l"].tolist() == [3] * N


def test_start_frames_replace_the_checkpoints_start_set(ckpt):
    """start_frames / start_descriptions: the set resets draw from (e.g. the user's task's first frames), in both envs
    and in autoresets; resized to the model's size; bad ones rejected with the argument's name."""
    size = WorldModelEnv(model=str(ckpt)).session.image_size
    frames = np.zeros((3, 48, 48, 3), np.uint8)  # another size: resized
    frames[1], frames[2] = 255, 128
    envs = WorldModelVectorEnv(N, model=str(ckpt), start_frames=frames, start_descriptions=["a", "b", "c"],
                               max_episode_steps=1)
    obs, info = envs.reset(seed=0)
    assert obs.shape[1:3] == size and set(info["start_index"].tolist()) <= {0, 1, 2}
    assert [int(o.mean()) for o in obs] == [(0, 255, 128)[i] for i in info["start_index"]]
    assert envs.session.start_descriptions == ["a", "b", "c"]
    envs.step(envs.action_space.sample())  # truncated: the next step restarts from the given set
    obs, *_ , info = envs.step(envs.action_space.sample())
    assert all(int(o.mean()) in (0, 255, 128) for o in obs)
    single = gym.make("SanaWM-v0", model=str(ckpt), start_frames=frames[1:2])
    assert single.reset(seed=1)[0].min() == 255
    for kwargs, error, message in (
            ({"start_frames": frames.astype(np.float32)}, TypeError, "start_frames must be a uint8 numpy array"),
            ({"start_frames": frames[0]}, ValueError, r"start_frames must be .* got shape \(48, 48, 3\)"),
            ({"start_frames": frames[:0]}, ValueError, r"got shape \(0, 48, 48, 3\)"),
            ({"start_frames": frames, "start_descriptions": ["a"]}, ValueError, "start_descriptions must be a list of 3 str"),
            ({"start_descriptions": ["a"]}, ValueError, "pass start_frames too")):
        with pytest.raises(error, match=message):
            WorldModelVectorEnv(2, model=str(ckpt), **kwargs)
