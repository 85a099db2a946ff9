"""Action wrappers for agents: a small discrete key set over a camera world's continuous actions.

PPO explores a handful of discrete choices far better than a 4-dim Gaussian, and a camera world's
pitch keys are a trap for it (a pitched-up camera sees only the ceiling). ``KeySetActions`` exposes
``Discrete(len(keysets))`` and maps each choice to the canonical camera vector of its keys
(``[forward, strafe_right, yaw_right, pitch_up]``, the key DSL of :mod:`neuralsim.actions`), so the same
agent runs in ``NeuralSimRoom-v0`` (continuous) and in ``SanaWM-v0``.

    >>> env = KeySetActions(gym.make("NeuralSimRoom-v0"), ("w", "j", "l", "wj", "wl"))   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from neuralsim import actions as A

#: Walk and turn: no strafing, no pitch, no standing still.
WALK_AND_TURN = A.WALK_AND_TURN  # re-exported: the agents' usual key sets


def keyset_vectors(keysets: Sequence[str], action_space: gym.Space, name: str = "env") -> np.ndarray:
    """Check ``keysets`` and a camera action space; ``[len(keysets), 4]`` canonical camera vectors, one per key set."""
    if not (isinstance(action_space, gym.spaces.Box) and action_space.shape == (A.CAMERA_ACTION_DIM,)):
        raise ValueError(f"{name} must have the camera action space Box(-1, 1, (4,)), got {action_space}")
    keysets = tuple(keysets)
    bad = [k for k in keysets if not isinstance(k, str) or set(k) - set("wsadijkl")]
    if not keysets or bad:
        raise ValueError(f"keysets must be non-empty key strings over 'wsadijkl', got {list(keysets)!r}")
    return A.keysets_to_vectors(keysets).astype(action_space.dtype)


class KeySetActions(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """``Discrete(n)`` actions, each a key combination, over a camera world's ``Box(-1, 1, (4,))`` actions.

    Args:
        env: an env whose action space is the canonical camera ``Box(4)``.
        keysets: one key string per discrete action (``"w"``, ``"wl"``, ``""`` for no key...).
    """

    def __init__(self, env: gym.Env, keysets: Sequence[str] = WALK_AND_TURN) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, keysets=tuple(keysets))
        gym.ActionWrapper.__init__(self, env)
        self.vectors = keyset_vectors(keysets, env.action_space)
        self.keysets = tuple(keysets)
        self.action_space = gym.spaces.Discrete(len(self.keysets))

    def action(self, action: Any) -> np.ndarray:
        index = int(np.asarray(action).reshape(-1)[0])
        if not 0 <= index < len(self.keysets):
            raise ValueError(f"action must be an integer in [0, {len(self.keysets)}), got {action!r}")
        return self.vectors[index]


class KeySetVecActions(VecEnvWrapper):
    """The same mapping for an SB3 ``VecEnv`` (e.g. the batched dream of :func:`neuralsim.agents.sb3.make_sb3_env`)."""

    def __init__(self, venv: VecEnv, keysets: Sequence[str] = WALK_AND_TURN) -> None:
        self.vectors = keyset_vectors(keysets, venv.action_space, name="venv")
        self.keysets = tuple(keysets)
        super().__init__(venv, action_space=gym.spaces.Discrete(len(self.keysets)))

    def step_async(self, actions: np.ndarray) -> None:
        self.venv.step_async(self.vectors[np.asarray(actions, dtype=np.int64).reshape(-1)])

    def step_wait(self) -> Any:
        return self.venv.step_wait()

    def reset(self) -> Any:
        return self.venv.reset()


__all__ = ["KeySetActions", "KeySetVecActions", "WALK_AND_TURN", "keyset_vectors"]
