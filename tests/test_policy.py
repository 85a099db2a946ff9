"""Saved policies (neuralsim.policy): safetensors + JSON round trip, collection with a saved policy, bad files."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO

from neuralsim.data import Dataset, collect
from neuralsim.policy import load_policy, save_policy, space_from_json, space_to_json

@pytest.fixture(scope="module")
def cartpole_policy(tmp_path_factory):
    """A PPO MlpPolicy on CartPole (discrete) saved after a few updates."""
    env = gym.make("CartPole-v1")
    algo = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, policy_kwargs={"net_arch": [16]})
    algo.learn(64)
    path = save_policy(algo, tmp_path_factory.mktemp("p") / "cartpole", metadata={"steps": 64})
    return algo, path


def test_round_trip_matches_sb3(cartpole_policy):
    algo, path = cartpole_policy
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "policy.json"]
    policy = load_policy(path)
    obs = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    expected, _ = algo.predict(obs, deterministic=True)
    assert np.array_equal(policy.act_batch(obs), expected)
    assert policy.metadata == {"steps": 64}
    assert policy.action_space == gym.spaces.Discrete(2)


def test_sampling_is_seeded(cartpole_policy):
    policy = load_policy(cartpole_policy[1])
    obs = np.zeros((64, 4), np.float32)
    a = policy.act_batch(obs, deterministic=False, rng=np.random.default_rng(1))
    b = policy.act_batch(obs, deterministic=False, rng=np.random.default_rng(1))
    assert np.array_equal(a, b) and set(np.unique(a)) <= {0, 1}
    with pytest.raises(ValueError, match="rng must be a numpy Generator"):
        policy.act_batch(obs, deterministic=False)


@pytest.mark.mujoco
def test_cnn_policy_on_room_images(tmp_path):
    env = gym.make("NeuralSimRoom-v0")
    algo = PPO("CnnPolicy", env, n_steps=32, batch_size=16, n_epochs=1, seed=0)
    algo.learn(32)
    policy = load_policy(save_policy(algo, tmp_path / "room"))
    assert policy.observation_space.shape == (64, 64, 3)  # channel-last, as the env gives frames
    obs, _ = env.reset(seed=3)
    expected, _ = algo.predict(obs, deterministic=True)
    np.testing.assert_allclose(policy.act(obs), expected, rtol=0, atol=1e-6)
    assert policy.action_space.contains(policy.act(obs, deterministic=False, rng=np.random.default_rng(0)))
    config = json.loads((tmp_path / "room" / "policy.json").read_text())
    assert len(json.dumps(config)) < 2000  # uniform image bounds are stored once


@pytest.mark.mujoco
def test_impala_cnn_policy_round_trip_on_room_images(tmp_path):
    """rgb_policy_kwargs (ImpalaCNN) trains, saves by name and acts after loading exactly as SB3 does."""
    from neuralsim.agents.sb3 import rgb_policy_kwargs
    from neuralsim.agents.wrappers import KeySetActions
    from neuralsim.policy import ImpalaCNN

    env = KeySetActions(gym.make("NeuralSimRoom-v0"), ("w", "j", "l"))
    algo = PPO("CnnPolicy", env, n_steps=32, batch_size=16, n_epochs=1, seed=0, policy_kwargs=rgb_policy_kwargs(64))
    algo.learn(32)
    policy = load_policy(save_policy(algo, tmp_path / "impala"))
    assert isinstance(policy.policy.features_extractor, ImpalaCNN)
    config = json.loads((tmp_path / "impala" / "policy.json").read_text())
    assert config["policy_kwargs"]["features_extractor_class"] == "ImpalaCNN"
    obs = np.stack([env.reset(seed=s)[0] for s in range(4)])
    np.testing.assert_array_equal(policy.act_batch(obs), algo.predict(obs, deterministic=True)[0])
    with pytest.raises(ValueError, match="observation_space must be a Box of channel-first images"):
        ImpalaCNN(gym.spaces.Box(-1, 1, (8,), np.float32))
    config["policy_kwargs"]["features_extractor_kwargs"] = {"features_dim": 4096}  # more weights than the file holds
    (tmp_path / "impala" / "policy.json").write_text(json.dumps(config))
    with pytest.raises(ValueError):
        load_policy(tmp_path / "impala")


def test_collect_with_saved_policy_is_deterministic(cartpole_policy, tmp_path):
    path = str(cartpole_policy[1])
    kw = dict(episodes=2, image_size=16, max_steps=20, progress=False)
    collect("CartPole-v1", tmp_path / "a", policy=path, **kw)
    collect("CartPole-v1", tmp_path / "b", policy=path, **kw)
    a, b = Dataset(tmp_path / "a").episode(1), Dataset(tmp_path / "b").episode(1)
    assert np.array_equal(a["actions"], b["actions"]) and np.array_equal(a["frames"], b["frames"])
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["policy"] == path


def test_collect_refuses_policy_of_other_spaces(cartpole_policy, tmp_path):
    with pytest.raises(ValueError, match=r"expects observations of shape \(4,\)"):
        collect("MountainCar-v0", tmp_path / "d", episodes=1, policy=str(cartpole_policy[1]), progress=False)


def test_bad_policy_files(cartpole_policy, tmp_path):
    with pytest.raises(FileNotFoundError, match="must be a directory with policy.json and model.safetensors"):
        load_policy(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((cartpole_policy[1] / "model.safetensors").read_bytes())
    (bad / "policy.json").write_text("{not json")
    with pytest.raises(ValueError, match="policy.json is not valid JSON"):
        load_policy(bad)
    config = json.loads((cartpole_policy[1] / "policy.json").read_text())
    (bad / "policy.json").write_text(json.dumps({**config, "policy_class": "os.system"}))
    with pytest.raises(ValueError, match="policy_class must be one of"):
        load_policy(bad)
    (bad / "policy.json").write_text(json.dumps({**config, "action_space": {"type": "discrete", "n": 5}}))
    with pytest.raises(ValueError, match="does not fit a ActorCriticPolicy|at least 224 weights .* holds 211"):
        load_policy(bad)
    (bad / "policy.json").write_text(json.dumps(config))
    (bad / "model.safetensors").write_bytes(b"torn")
    with pytest.raises(ValueError, match="model.safetensors (does not fit|is not a valid safetensors file)"):
        load_policy(bad)


@pytest.mark.parametrize("change, match", [
    ({"observation_space": {"type": "box", "shape": [2000, 2000, 3], "dtype": "uint8", "low": 0, "high": 255}},
     r"observation_space\.shape \[2000, 2000, 3\] has 12000000 elements; at most MAX_SPACE_ELEMENTS"),
    ({"observation_space": {"type": "box", "shape": [1024, 1024, 3], "dtype": "float32", "low": -1, "high": 1}},
     r"at least \d{9} weights \(observation_space \(1024, 1024, 3\).* holds 211; the files do not belong"),
    ({"policy_kwargs": {"net_arch": [65536, 65536, 65536]}}, r"at least \d+ weights .*net_arch \[65536"),
    ({"policy_kwargs": {"net_arch": [10**9]}}, r"net_arch'\] must hold at most 64 layer widths in \[1, 65536\]"),
    ({"policy_kwargs": {"net_arch": [16], "optimizer_class": "os.system"}}, r"policy_kwargs\['optimizer_class'\] is not an option"),
    ({"policy_kwargs": {"net_arch": "16"}}, r"policy_kwargs\['net_arch'\]='16' has the wrong type str"),
    ({"policy_kwargs": {"ortho_init": "false"}}, r"policy_kwargs\['ortho_init'\]='false' has the wrong type str"),
    ({"action_space": {"type": "discrete", "n": 10**12}}, r"action_space\.n must be an int in \[1, 4194304\]"),
    ({"action_space": {"type": "box", "shape": [2], "dtype": "object", "low": 0, "high": 1}}, r"action_space\.dtype must be"),
    ({"observation_space": {"type": "box", "shape": [4], "dtype": "float32", "low": [0, 1], "high": 1}},
     r"observation_space\.low must be a number or a list of 4 numbers"),
    ({"observation_space": {"type": "box", "shape": [4], "dtype": "float32", "low": "nan", "high": 1}},
     r"observation_space\.low must be a number"),
    ({"observation_space": None}, r"policy\.json: observation_space must be \{'type'"),
], ids=["obs-2000x2000x3", "obs-1024x1024x3-mlp", "net-arch-65536", "net-arch-1e9", "optimizer-class", "net-arch-str",
        "ortho-init-str", "discrete-1e12", "dtype-object", "low-length", "low-str", "obs-null"])
def test_policy_json_is_checked_before_building(cartpole_policy, tmp_path, change, match):
    """Issue 24 #9: a 500-byte policy.json with observation_space [2000, 2000, 3] built a > 9 GB network before
    anything was checked; other tampered fields gave raw errors naming neither the file nor the field."""
    import time
    import tracemalloc

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((cartpole_policy[1] / "model.safetensors").read_bytes())
    config = json.loads((cartpole_policy[1] / "policy.json").read_text())
    (bad / "policy.json").write_text(json.dumps({**config, **change}))
    assert len((bad / "policy.json").read_bytes()) < 1000
    tracemalloc.start()
    t = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=match) as info:
            load_policy(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "policy.json" in str(info.value) and time.perf_counter() - t < 2.0 and peak < 64 * 2**20


def test_save_refuses_unstorable(tmp_path):
    with pytest.raises(ValueError, match="algo_or_policy must hold one of"):
        save_policy(object(), tmp_path / "x")
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3, start=1), gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
                                   gym.spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, 2.0], np.float32), dtype=np.float32)])
def test_space_json_round_trip(space):
    assert space_from_json(json.loads(json.dumps(space_to_json(space)))) == space
