"""Latent observations end to end: the dream's latents (nothing decoded), the encoder wrapper over a real env,
a latent policy (LatentCNN) trained in the dream and run in the real room, its save/load, ``eval transfer --obs latent``."""

from __future__ import annotations

import json
import re

import gymnasium as gym
import numpy as np
import pytest
import torch

import neuralsim  # noqa: F401
from neuralsim.data import resize_frame
from neuralsim.envs.latent import FrameEncoder, LatentObservation, VectorLatentObservation, latent_observation_space
from neuralsim.envs.world_model_env import LATENT_BOUND, WorldModelEnv

mujoco = pytest.importorskip("mujoco")


@pytest.fixture(scope="module")
def encoder(tiny_checkpoint) -> FrameEncoder:
    return FrameEncoder(str(tiny_checkpoint), dtype="float32")


def test_wrapper_space_is_the_dreams_and_values_are_model_encode(tiny_checkpoint, encoder):
    room = gym.make("NeuralSimRoom-v0", max_episode_steps=5)
    env = LatentObservation(room, encoder=encoder)
    dream = WorldModelEnv(str(tiny_checkpoint), obs_type="latent", dtype="float32")
    assert env.observation_space == dream.observation_space == latent_observation_space(encoder.model.latent_shape)
    assert env.observation_space.shape == tuple(encoder.model.latent_shape)  # never assume a shape: the checkpoint's
    assert env.action_space == room.action_space

    obs, _ = env.reset(seed=3)
    raw = gym.make("NeuralSimRoom-v0").reset(seed=3)[0]
    assert raw.shape[:2] != encoder.image_size  # the room's 64x64 frames are resized to the tiny model's 32x32
    frame = resize_frame(raw, encoder.image_size, mode=encoder.resize)
    expected = encoder.model.encode(torch.from_numpy(frame[None, None]))[:, 0]  # [1, 1, H, W, 3] -> [1, C, h, w]
    assert obs.dtype == np.float32 and np.array_equal(obs, expected[0].clamp(-LATENT_BOUND, LATENT_BOUND).numpy())
    assert np.array_equal(env.frame, frame)
    # The dream started from the same real frame observes the same latent.
    dream_obs, _ = dream.reset(seed=0, options={"image": raw, "resize": True})
    assert np.array_equal(dream_obs, obs)

    obs, *_ = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert np.array_equal(obs, encoder(env.frame[None])[0])


def test_check_env_passes_on_the_wrapped_room(encoder):
    from gymnasium.utils.env_checker import check_env

    with pytest.warns(UserWarning, match="different from the unwrapped"):  # check_env's note about any wrapper
        check_env(LatentObservation(gym.make("NeuralSimRoom-v0", max_episode_steps=10), encoder=encoder),
                  skip_render_check=True)


def test_vector_wrapper_encodes_the_batch_as_single_envs(encoder):
    envs = VectorLatentObservation(gym.make_vec("NeuralSimRoom-v0", num_envs=2, vectorization_mode="sync"), encoder=encoder)
    assert envs.single_observation_space == encoder.observation_space
    assert envs.observation_space.shape == (2, *encoder.latent_shape)
    obs, _ = envs.reset(seed=10)
    single = LatentObservation(gym.make("NeuralSimRoom-v0"), encoder=encoder)
    for i in range(2):
        np.testing.assert_allclose(obs[i], single.reset(seed=10 + i)[0], rtol=0, atol=1e-5)  # batch 2 vs 1: float sums
    obs, *_ = envs.step(envs.action_space.sample())
    assert envs.observation_space.contains(obs)
    envs.close()


def test_wrapper_rejects_bad_inputs(tiny_checkpoint, encoder):
    with pytest.raises(ValueError, match="AddRenderObservation"):
        LatentObservation(gym.make("CartPole-v1"), encoder=encoder)
    with pytest.raises(ValueError, match="either encoder= or model="):
        LatentObservation(gym.make("NeuralSimRoom-v0"), model=str(tiny_checkpoint), encoder=encoder)
    with pytest.raises(ValueError, match="resize must be None"):
        FrameEncoder(str(tiny_checkpoint), resize="stretch")
    with pytest.raises(ValueError, match=r"frames must be uint8 \[B, H, W, 3\]"):
        encoder(np.zeros((1, 32, 32, 3), np.float32))
    assert FrameEncoder(str(tiny_checkpoint), resize="crop").resize == "crop"


def test_policy_trained_in_the_latent_dream_runs_in_the_real_room(tiny_checkpoint, encoder, tmp_path, monkeypatch):
    from stable_baselines3 import PPO

    from neuralsim.agents.sb3 import latent_policy_kwargs, make_sb3_env
    from neuralsim.model import WorldModel
    from neuralsim.policy import LatentCNN, load_policy, save_policy

    def no_decode(*args, **kwargs):
        raise AssertionError("a frame was decoded on the latent-observation path")

    with monkeypatch.context() as m:
        m.setattr(WorldModel, "decode", no_decode)
        venv = make_sb3_env(model=str(tiny_checkpoint), num_envs=4, seed=0, obs_type="latent", max_episode_steps=20)
        assert venv.observation_space == encoder.observation_space
        algo = PPO("MlpPolicy", venv, policy_kwargs=latent_policy_kwargs(features_dim=32), n_steps=32, batch_size=64,
                   n_epochs=1, seed=0, device="cpu")
        algo.learn(256)
        venv.close()
    assert isinstance(algo.policy.features_extractor, LatentCNN) and algo.num_timesteps >= 256

    path = save_policy(algo, tmp_path / "latent-policy")
    config = json.loads((path / "policy.json").read_text())
    assert config["policy_kwargs"]["features_extractor_class"] == "LatentCNN"
    policy = load_policy(path)
    assert isinstance(policy.policy.features_extractor, LatentCNN)
    assert policy.observation_space == encoder.observation_space

    # The very same policy in the real room, observed through the encoder.
    env = LatentObservation(gym.make("NeuralSimRoom-v0", max_episode_steps=8), encoder=encoder)
    policy.check_env_spaces(env.observation_space, env.action_space)
    obs, _ = env.reset(seed=1)
    batch = []
    for _ in range(8):
        action = policy.act(obs)
        expected, _ = algo.predict(obs, deterministic=True)
        np.testing.assert_allclose(action, np.clip(expected, -1, 1), atol=1e-6)  # the loaded policy acts as trained
        assert env.action_space.contains(action)
        batch.append(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    with torch.no_grad():  # the saved weights and network round-trip exactly
        before = algo.policy.get_distribution(algo.policy.obs_to_tensor(np.stack(batch))[0]).distribution.mean
        after = policy.policy.get_distribution(policy.policy.obs_to_tensor(np.stack(batch))[0]).distribution.mean
    assert torch.equal(before, after)


def test_only_the_allow_listed_latent_extractor_is_saved(tiny_checkpoint, tmp_path):
    from stable_baselines3 import PPO

    from neuralsim.agents.sb3 import make_sb3_env
    from neuralsim.policy import LatentCNN, save_policy

    class LatentCNN2(LatentCNN):  # same base, another class: never restorable by name
        pass

    LatentCNN2.__name__ = "LatentCNN"
    venv = make_sb3_env(model=str(tiny_checkpoint), num_envs=2, seed=0, obs_type="latent")
    algo = PPO("MlpPolicy", venv, policy_kwargs={"features_extractor_class": LatentCNN2}, n_steps=8, batch_size=16,
               device="cpu")
    with pytest.raises(ValueError, match="features_extractor_class"):
        save_policy(algo, tmp_path / "p")
    with pytest.raises(ValueError, match=r"observation_space must be a Box of latent frames \(C, h, w\)"):
        LatentCNN(gym.spaces.Box(-1, 1, (8,), np.float32))


def test_eval_transfer_obs_latent_quick(tiny_checkpoint, tmp_path, capsys):
    from neuralsim.cli import main

    argv = ["eval", "transfer", "--quick", "--obs", "latent", "--model", str(tiny_checkpoint), "--workdir",
            str(tmp_path / "work"), "--timesteps", "128", "--episodes", "2", "--max-episode-steps", "10"]
    assert main(argv) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["obs"] == "latent" and results["config"]["obs"] == "latent"
    assert [r["method"] for r in results["rows"]][:2] == ["PPO in dream", "PPO in real"]
    for world in ("dream", "real"):
        config = json.loads((tmp_path / "work" / f"{world}-seed0" / "final" / "policy.json").read_text())
        assert config["policy_kwargs"]["features_extractor_class"] == "LatentCNN"
        assert config["observation_space"]["shape"] == list(FrameEncoder(str(tiny_checkpoint)).latent_shape)
    assert (tmp_path / "work" / "disagreement.gif").stat().st_size > 0


def test_eval_transfer_obs_defaults_to_rgb(capsys):
    import argparse

    from neuralsim.agents.transfer import TransferConfig
    from neuralsim.cli.evaluate import add_transfer_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_transfer_arguments(parser)
    assert config_from_args(parser.parse_args(["--workdir", "w"])).obs == "rgb"
    latent = config_from_args(parser.parse_args(["--workdir", "w", "--obs", "latent"]))
    assert latent.obs == "latent" and latent.latent_source == "dynamics"
    assert config_from_args(parser.parse_args(["--workdir", "w", "--obs", "latent", "--latent-source", "frames"])
                            ).latent_source == "frames"
    with pytest.raises(SystemExit):
        parser.parse_args(["--obs", "pixels"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="obs must be 'rgb' or 'latent', got 'pixels'"):
        TransferConfig(obs="pixels").validate()


def test_docstring_documents_the_latent_space(encoder):
    doc = LatentObservation.__doc__
    assert re.search(r"Box\(-1e4, 1e4, \(C, h, w\), float32\)", doc) and LATENT_BOUND == 1e4
    space = encoder.observation_space
    assert (space.low == -LATENT_BOUND).all() and (space.high == LATENT_BOUND).all() and space.dtype == np.float32


def test_sb3_vec_wrapper_encodes_the_batch_and_the_terminal_observations(encoder):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    from neuralsim.agents.sb3 import VecLatentObservation

    venv = VecLatentObservation(make_vec_env("NeuralSimRoom-v0", n_envs=2, seed=10, vec_env_cls=DummyVecEnv,
                                             env_kwargs={"max_episode_steps": 2}), encoder=encoder)
    assert venv.observation_space == encoder.observation_space
    obs = venv.reset()
    single = LatentObservation(gym.make("NeuralSimRoom-v0"), encoder=encoder)
    for i in range(2):
        np.testing.assert_allclose(obs[i], single.reset(seed=10 + i)[0], rtol=0, atol=1e-5)  # batch 2 vs 1: float sums
    actions = np.stack([venv.action_space.sample() for _ in range(2)])
    for _ in range(2):  # the second step ends both episodes (max_episode_steps=2): SB3 resets and keeps the last frame
        obs, _, dones, infos = venv.step(actions)
    assert dones.all() and obs.shape == (2, *encoder.latent_shape)
    assert all(info["terminal_observation"].shape == encoder.latent_shape for info in infos)
    assert all(venv.observation_space.contains(o) for o in obs)
    with pytest.raises(TypeError, match="encoder must be a FrameEncoder"):
        VecLatentObservation(venv.venv, encoder="default")
    by_name = VecLatentObservation(venv.venv, model="default")  # model= builds its own encoder, as LatentObservation
    assert by_name.observation_space == by_name.encoder.observation_space and by_name.encoder is not encoder
    venv.close()


# ---------------------------------------------------------------------------------------------- latent_source="frames"


def test_frames_source_observes_the_decoded_frames_encoded(tiny_checkpoint):
    """latent_source="frames": every observation (reset, step, autoreset) is the env's own decoded frame encoded, exactly
    what LatentObservation makes of a real frame; the space is the dynamics latents'."""
    from neuralsim.envs.vector import WorldModelVectorEnv

    encoder = FrameEncoder(str(tiny_checkpoint), dtype="float32")
    envs = WorldModelVectorEnv(3, str(tiny_checkpoint), obs_type="latent", latent_source="frames", dtype="float32",
                               max_episode_steps=2, return_frames=False)
    dynamics = WorldModelVectorEnv(3, str(tiny_checkpoint), obs_type="latent", dtype="float32", max_episode_steps=2,
                                   return_frames=False)
    assert envs.single_observation_space == dynamics.single_observation_space == encoder.observation_space
    obs, _ = envs.reset(seed=4)
    assert np.array_equal(obs, encoder(envs._frames))
    assert np.array_equal(obs, dynamics.reset(seed=4)[0])  # a start frame is encoded by both
    for t in range(3):  # the third step autoresets every env (NEXT_STEP): the new start frames, encoded
        actions = envs.action_space.sample()
        obs, *_ = envs.step(actions)
        assert np.array_equal(obs, encoder(envs._frames))
        if t == 0:  # a dreamed frame encoded again is not the latent the dynamics committed
            assert not np.array_equal(obs, dynamics.step(actions)[0])

    env = WorldModelEnv(str(tiny_checkpoint), obs_type="latent", latent_source="frames", dtype="float32")
    obs, _ = env.reset(seed=2)
    assert np.array_equal(obs, encoder(env._frame[None])[0])
    obs, _, _, _, info = env.step(env.action_space.sample())
    assert np.array_equal(obs, encoder(info["frames"][-1:])[0])  # a step decodes (info["frames"]) for its observation


def test_frames_source_bad_input(tiny_checkpoint):
    for bad in ("pixels", None, "Frames"):
        with pytest.raises(ValueError, match=r"latent_source must be one of 'dynamics', 'frames', got"):
            WorldModelEnv(str(tiny_checkpoint), obs_type="latent", latent_source=bad)
    from neuralsim.agents.transfer import TransferConfig

    with pytest.raises(ValueError, match="--latent-source must be one of dynamics, frames, got 'decoded'"):
        TransferConfig(obs="latent", latent_source="decoded").validate(cli=True)


def test_frames_source_on_the_default_model_through_sb3():
    """The shipped model (a frame memory corrects its decoded frames) through SB3's same-step resets."""
    from neuralsim.agents.sb3 import make_sb3_env

    venv = make_sb3_env(model="default", num_envs=2, seed=0, obs_type="latent", latent_source="frames",
                        max_episode_steps=4, num_threads=1)
    dream = venv.venv.venv  # VecMonitor -> SB3VecEnv -> WorldModelVectorEnv
    assert dream.model.frame_memory is not None
    encoder = FrameEncoder(dream.model, dtype=dream.session.dtype)
    venv.reset()
    ended = 0
    for _ in range(5):  # the 4th step truncates both: SB3 hands back the new start and the terminal observation
        obs, _, dones, infos = venv.step(np.stack([venv.action_space.sample() for _ in range(2)]))
        assert np.array_equal(obs, encoder(dream._frames))
        for i in np.flatnonzero(dones):
            assert infos[i]["terminal_observation"].shape == obs.shape[1:]
            ended += 1
    assert ended == 2
