"""Stable-Baselines3 on the dream: SB3's env checker, the SAME_STEP VecEnv adapter, and PPO("CnnPolicy") end to end."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.vec_env import VecEnv, VecMonitor  # noqa: E402

from neuralsim.agents.sb3 import SB3VecEnv, make_sb3_env  # noqa: E402
from neuralsim.envs import WorldModelEnv, WorldModelVectorEnv  # noqa: E402

N = 4



@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """The tiny preset at 64x64 (NatureCNN needs >= 36 px), 2 frames per step, a confident termination head."""
    from safetensors.numpy import save_file

    from neuralsim.config import WorldModelConfig
    from neuralsim.model import WorldModel

    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig.from_preset("tiny", image_size=(64, 64), frames_per_latent=2))
    with torch.no_grad():
        model.termination_head.net[-1].weight.zero_()
        model.termination_head.net[-1].bias.fill_(-6.0)
    path = tmp_path_factory.mktemp("tiny64")
    model.save_pretrained(path)
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    save_file({"frames": frames}, str(path / "start_frames.safetensors"),
              metadata={"descriptions": json.dumps(["a red ball", "a green box", "a yellow room"])})
    return path


def test_sb3_env_checker_on_the_single_env(ckpt):
    from stable_baselines3.common.env_checker import check_env

    env = WorldModelEnv(str(ckpt))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)


def test_vecenv_api(ckpt):
    venv = SB3VecEnv(WorldModelVectorEnv(N, model=str(ckpt), max_episode_steps=5, render_mode="rgb_array"))
    assert isinstance(venv, VecEnv) and venv.num_envs == N
    assert venv.observation_space.shape == (64, 64, 3) and venv.action_space.shape == (4,)
    assert venv.seed(3) == [3, 4, 5, 6]
    obs = venv.reset()
    assert obs.shape == (N, 64, 64, 3) and obs.dtype == np.uint8
    again = (venv.seed(3), venv.reset())[1]
    assert np.array_equal(obs, again)  # seed() applies to the next reset
    venv.step_async(np.stack([venv.action_space.sample() for _ in range(N)]))
    obs, rewards, dones, infos = venv.step_wait()
    assert obs.shape == (N, 64, 64, 3) and rewards.shape == (N,) and rewards.dtype == np.float32
    assert dones.dtype == np.bool_ and len(infos) == N and infos[0]["step"] == 1
    assert venv.get_attr("max_episode_steps") == [5] * N and venv.get_attr("num_envs", indices=[0, 2]) == [N, N]
    venv.set_attr("max_episode_steps", 6)
    assert venv.venv.max_episode_steps == 6
    frames = venv.env_method("render", indices=[1])
    assert len(frames) == 1 and len(frames[0]) == N
    assert venv.env_is_wrapped(VecMonitor) == [False] * N
    assert venv.get_images()[0].shape == (64, 64, 3) and venv.render().shape[-1] == 3
    with pytest.raises(RuntimeError, match="step_async"):
        venv.step_wait()
    venv.close()


def test_same_step_autoreset_with_terminal_observation(ckpt):
    inner = WorldModelVectorEnv(N, model=str(ckpt), max_episode_steps=2)
    venv = SB3VecEnv(inner)
    venv.seed(0)
    venv.reset()
    acts = np.zeros((N, 4), np.float32)
    _, _, dones, _ = venv.step(acts)
    assert not dones.any()
    obs, rewards, dones, infos = venv.step(acts)
    assert dones.all()
    starts = inner.session.start_frames
    for i in range(N):
        assert infos[i]["TimeLimit.truncated"] is True
        terminal = infos[i]["terminal_observation"]
        assert terminal.shape == (64, 64, 3) and not np.array_equal(terminal, obs[i])
        assert any(np.array_equal(obs[i], s) for s in starts)  # the returned obs is the reset obs
        assert venv.reset_infos[i]["step"] == 0
    obs, rewards, dones, infos = venv.step(acts)  # no NEXT_STEP autoreset underneath: a real transition
    assert not dones.any() and [info["step"] for info in infos] == [1] * N and np.all(rewards != 0.0)


def test_ppo_cnn_policy_trains_on_the_batched_dream(ckpt):
    venv = make_sb3_env(model=str(ckpt), num_envs=N, seed=0, max_episode_steps=16)
    assert isinstance(venv, VecMonitor) and isinstance(venv.venv, SB3VecEnv)
    model = PPO("CnnPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"features_extractor_kwargs": {"features_dim": 64}})
    model.learn(total_timesteps=384)
    assert model.num_timesteps >= 384
    assert model.observation_space.shape == (3, 64, 64)  # SB3 transposed the channels-last images
    obs = venv.reset()
    action, _ = model.predict(obs, deterministic=True)
    assert obs.shape == (N, 64, 64, 3) and action.shape == (N, 4)
    assert len(model.ep_info_buffer) > 0  # episodes truncated at 16 steps were logged through VecMonitor
    venv.close()


def test_adapter_rejects_other_envs():
    with pytest.raises(TypeError, match="WorldModelVectorEnv"):
        SB3VecEnv(object())
