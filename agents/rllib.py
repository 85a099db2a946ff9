"""RLlib on the dream: an env creator for ``ray.tune.registry.register_env``.

Ray is an optional extra (``pip install "neuralsim[rllib]"``) and is imported only when
:func:`register_rllib_env` is called.

    >>> from neuralsim.agents.rllib import register_rllib_env
    >>> name = register_rllib_env()                 # "SanaWM-v0" for RLlib
    >>> from ray.rllib.algorithms.ppo import PPOConfig
    >>> config = PPOConfig().environment(name, env_config={"model": "default", "max_episode_steps": 200})
"""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import numpy as np

from neuralsim.envs.world_model_env import WorldModelEnv

_INSTALL_HINT = 'RLlib support needs Ray: pip install "neuralsim[rllib]"'


def env_creator(env_config: Mapping[str, Any] | None = None) -> gym.Env:
    """Build a :class:`~neuralsim.envs.WorldModelEnv` from an RLlib ``env_config``.

    RLlib's default torch encoders feed observations to their conv layers as they come, so rgb
    frames are given to RLlib as float32 in ``[0, 1]`` (``Box(0, 1, (H, W, 3), float32)``) unless
    ``env_config["float_obs"]`` is False.

    Args:
        env_config: ``WorldModelEnv`` keyword arguments (``model``, ``obs_type``, ``denoise_steps``,
            ``max_episode_steps``, ``device``...) and ``float_obs`` (default True). RLlib's
            ``EnvContext`` extras (worker index...) are attributes, not keys.
    """
    kwargs = dict(env_config or {})
    float_obs = bool(kwargs.pop("float_obs", True))
    env: gym.Env = WorldModelEnv(**kwargs)
    space = env.observation_space
    if float_obs and isinstance(space, gym.spaces.Box) and space.dtype == np.uint8:
        env = gym.wrappers.TransformObservation(
            env, lambda obs: obs.astype(np.float32) / np.float32(255.0),
            gym.spaces.Box(0.0, 1.0, space.shape, np.float32))
    return env


def register_rllib_env(name: str = "SanaWM-v0") -> str:
    """Register :func:`env_creator` with RLlib under ``name``; returns ``name``.

    Raises:
        ImportError: Ray is not installed (with the pip command that installs it).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    try:
        from ray.tune.registry import register_env
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    register_env(name, env_creator)
    return name
