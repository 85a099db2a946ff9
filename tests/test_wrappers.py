"""neuralsim.agents.wrappers.KeySetActions: discrete key sets over camera worlds (real and dream)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import neuralsim  # noqa: F401
from neuralsim.agents.wrappers import WALK_AND_TURN, KeySetActions
from neuralsim.envs import WorldModelEnv


def test_maps_keys_to_camera_vectors(tiny_checkpoint):
    env = KeySetActions(WorldModelEnv(model=str(tiny_checkpoint)), ("w", "wl", "i", ""))
    assert env.action_space == gym.spaces.Discrete(4)
    np.testing.assert_array_equal(env.action(1), [1, 0, 1, 0])
    np.testing.assert_array_equal(env.action(np.int64(2)), [0, 0, 0, 1])
    np.testing.assert_array_equal(env.action(3), [0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"action must be an integer in \[0, 4\)"):
        env.action(4)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(0)
    assert obs.shape == (32, 32, 3)


@pytest.mark.mujoco
@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version:UserWarning")  # the wrapper is what is checked
def test_same_as_the_continuous_action_in_the_room():
    a = KeySetActions(gym.make("NeuralSimRoom-v0"), WALK_AND_TURN)
    b = gym.make("NeuralSimRoom-v0")
    a.reset(seed=2)
    b.reset(seed=2)
    for i in (0, 4, 4, 1, 2):
        oa, ra, *_ = a.step(i)
        ob, rb, *_ = b.step(np.array([1.0 if "w" in WALK_AND_TURN[i] else 0.0, 0.0,
                                      float("l" in WALK_AND_TURN[i]) - float("j" in WALK_AND_TURN[i]), 0.0], np.float32))
        assert np.array_equal(oa, ob) and ra == rb
    check_env(KeySetActions(gym.make("NeuralSimRoom-v0").unwrapped), skip_render_check=True)


@pytest.mark.mujoco
@pytest.mark.parametrize("keysets,message", [((), "keysets must be non-empty"), (("w", "x"), "keysets must be non-empty")])
def test_bad_keysets(keysets, message):
    with pytest.raises(ValueError, match=message):
        KeySetActions(gym.make("NeuralSimRoom-v0"), keysets)


def test_refuses_non_camera_worlds():
    with pytest.raises(ValueError, match=r"env must have the camera action space Box\(-1, 1, \(4,\)\)"):
        KeySetActions(gym.make("CartPole-v1"))
