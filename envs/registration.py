"""Gymnasium registration of neuralsim's environments (run on ``import neuralsim``).

Ids:
    ``SanaWM-v0``: the dream of the default (shipped) world model; ``gym.make_vec(...,
    vectorization_mode="vector_entry_point")`` returns the batched ``WorldModelVectorEnv``.
    ``NeuralSimRoom-v0``: the real MuJoCo room the default model learned (``[mujoco]`` extra).

``register_checkpoint(env_id, checkpoint)`` registers a user's own checkpoint under an id.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

DEFAULT_MAX_EPISODE_STEPS = 200


def _registered(env_id: str) -> bool:
    return env_id in gym.registry


def register_checkpoint(env_id: str, checkpoint: str, **kwargs: Any) -> None:
    """Register a world-model checkpoint (directory or shipped name) as a Gymnasium id.

    Args:
        env_id: e.g. ``"MyRobotDream-v0"``.
        checkpoint: path of a checkpoint directory (``config.json`` + ``model.safetensors``) or a shipped name.
        **kwargs: default keyword arguments of ``WorldModelEnv`` (``denoise_steps``, ``obs_type``...);
            ``max_episode_steps`` (default 200) becomes the spec's limit, as for ``SanaWM-v0``.
    """
    if not isinstance(env_id, str) or "-v" not in env_id:
        raise ValueError(f"env_id must look like 'Name-v0', got {env_id!r}")
    max_episode_steps = kwargs.pop("max_episode_steps", DEFAULT_MAX_EPISODE_STEPS)
    gym.register(
        id=env_id,
        entry_point="neuralsim.envs.world_model_env:WorldModelEnv",
        vector_entry_point="neuralsim.envs.vector:WorldModelVectorEnv",
        max_episode_steps=max_episode_steps,
        kwargs={"model": checkpoint, **kwargs},
        disable_env_checker=True,
    )


def register_envs() -> None:
    if not _registered("SanaWM-v0"):
        # The spec's limit: gym.make wraps TimeLimit(200 or its max_episode_steps=N) and the env leaves truncation
        # to it; gym.make_vec passes it to WorldModelVectorEnv, which truncates each env itself.
        gym.register(
            id="SanaWM-v0",
            entry_point="neuralsim.envs.world_model_env:WorldModelEnv",
            vector_entry_point="neuralsim.envs.vector:WorldModelVectorEnv",
            max_episode_steps=DEFAULT_MAX_EPISODE_STEPS,
        )
    if not _registered("NeuralSimRoom-v0"):
        # Truncation by gymnasium's TimeLimit (so gym.make(..., max_episode_steps=N) works); the env's own limit is off.
        gym.register(id="NeuralSimRoom-v0", entry_point="neuralsim.envs.room:NeuralSimRoomEnv",
                     max_episode_steps=DEFAULT_MAX_EPISODE_STEPS, kwargs={"max_episode_steps": None})
