"""Stable-Baselines3 on the batched dream: an SB3 ``VecEnv`` over ``WorldModelVectorEnv``.

SB3's ``VecEnv`` is not the Gymnasium vector API: ``step`` returns 4 values (``dones`` = terminated
or truncated) and resets a finished env in the *same* step, handing back the reset observation and
the last one in ``infos[i]["terminal_observation"]`` (``infos[i]["TimeLimit.truncated"]`` tells
truncation from termination, for bootstrapping). This adapter does that with the vector env's
partial reset (``reset_mask``), so the NEXT_STEP autoreset of the underlying env is never used and
every env step is a real transition.

    >>> from stable_baselines3 import PPO
    >>> from neuralsim.agents.sb3 import make_sb3_env
    >>> venv = make_sb3_env(model="default", num_envs=16)
    >>> model = PPO("CnnPolicy", venv, n_steps=128).learn(10_000)

Latent observations (``obs_type="latent"``: nothing is decoded) with a small conv net over ``[C, h, w]``:

    >>> venv = make_sb3_env(model="default", num_envs=16, obs_type="latent")
    >>> model = PPO("MlpPolicy", venv, policy_kwargs=latent_policy_kwargs()).learn(10_000)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from neuralsim.envs.latent import FrameEncoder, check_pixel_space, frame_encoder_for
from neuralsim.envs.vector import WorldModelVectorEnv
from neuralsim.policy import ImpalaCNN, LatentCellCNN, LatentCNN

#: the latent policies' features extractors by name (:func:`latent_policy_kwargs`)
LATENT_EXTRACTORS = {"cnn": LatentCNN, "cells": LatentCellCNN}


class SB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` (SAME_STEP autoreset) over a :class:`~neuralsim.envs.vector.WorldModelVectorEnv`.

    The N envs share one batched model, one seed and one RNG: ``seed(s)`` seeds the next
    ``reset()`` of the whole batch (SB3 gets back ``[s, s+1, ...]`` as usual, only ``s`` is used);
    ``get_attr``/``set_attr``/``env_method`` act on the one vector env and return one entry per
    requested index.

    Args:
        vector_env: the batched dream to adapt.
    """

    def __init__(self, vector_env: WorldModelVectorEnv) -> None:
        if not isinstance(vector_env, WorldModelVectorEnv):
            raise TypeError(f"vector_env must be a neuralsim WorldModelVectorEnv, got {type(vector_env).__name__}")
        self.venv = vector_env
        self._actions: np.ndarray | None = None
        super().__init__(vector_env.num_envs, vector_env.single_observation_space, vector_env.single_action_space)

    # -------------------------------------------------------------------- core API

    def reset(self) -> VecEnvObs:
        seed = self._seeds[0]
        options = dict(self._options[0]) if self._options[0] else None
        obs, info = self.venv.reset(seed=seed, options=options)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = self._split_info(info, np.ones(self.num_envs, dtype=bool))
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions)")
        actions, self._actions = self._actions, None
        if self.venv.session.action_spec["type"] == "discrete":
            actions = np.asarray(actions).reshape(self.num_envs)
        obs, rewards, terminated, truncated, info = self.venv.step(actions)
        dones = terminated | truncated
        infos = self._split_info(info, np.ones(self.num_envs, dtype=bool))
        for i in range(self.num_envs):
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        if dones.any():
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = obs[i]
            obs, reset_info = self.venv.reset(options={"reset_mask": dones.copy()})
            for i, extra in enumerate(self._split_info(reset_info, dones)):
                if dones[i]:
                    self.reset_infos[i] = extra
        return obs, rewards.astype(np.float32), dones, infos

    @staticmethod
    def _split_info(info: dict, rows: np.ndarray) -> list[dict]:
        """Gymnasium's batched info dict (arrays + ``_key`` masks) -> one dict per env."""
        out: list[dict] = [{} for _ in range(len(rows))]
        for key, value in info.items():
            if key.startswith("_"):
                continue
            present = info.get(f"_{key}", rows)
            for i in range(len(rows)):
                if present[i]:
                    out[i][key] = value[i]
        return out

    def close(self) -> None:
        self.venv.close()

    # -------------------------------------------------------------------- attributes and methods

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)  # type: ignore[arg-type]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        frames = self.venv._frames
        if frames is None:
            return [None] * self.num_envs
        return [frame.copy() for frame in frames]


def make_sb3_env(model: Any = "default", num_envs: int = 16, *, monitor: bool = True, seed: int | None = None,
                 **env_kwargs: Any) -> VecEnv:
    """A ready-to-train SB3 ``VecEnv`` over the batched dream.

    Args:
        model: as :class:`~neuralsim.envs.WorldModelEnv` (name, checkpoint directory or instance).
        num_envs: batch size.
        monitor: wrap in ``VecMonitor`` so SB3 logs episode returns and lengths.
        seed: seed of the first ``reset()``.
        **env_kwargs: other ``WorldModelVectorEnv`` arguments (``denoise_steps``, ``max_episode_steps``,
            ``obs_type="latent"``: latent observations, nothing decoded, use :func:`latent_policy_kwargs`;
            with ``latent_source="frames"`` the decoded frames encoded again, as a real env's through
            :class:`VecLatentObservation`).

    Returns:
        ``SB3VecEnv`` (inside ``VecMonitor`` when ``monitor``).
    """
    env_kwargs.setdefault("return_frames", False)  # SB3 never reads the decoded chunks
    venv: VecEnv = SB3VecEnv(WorldModelVectorEnv(num_envs, model=model, **env_kwargs))
    if seed is not None:
        venv.seed(seed)
    return VecMonitor(venv) if monitor else venv


class VecLatentObservation(VecEnvWrapper):
    """A pixel SB3 ``VecEnv`` observed through a world model's encoder, every env's frame in one forward per step:
    the SB3 counterpart of :class:`~neuralsim.envs.latent.VectorLatentObservation` (a per-env
    :class:`~neuralsim.envs.latent.LatentObservation` encodes one frame per forward, which made a 16-env real room
    with latent observations train at a third of its rgb speed). An ended env's ``terminal_observation`` is encoded
    in the same forward.

    Args:
        venv: an SB3 VecEnv of rgb frames ``Box(0, 255, (H, W, 3), uint8)``.
        model, resize, device, dtype, encoder: as :class:`~neuralsim.envs.latent.LatentObservation` (the world model
            whose latents the agent sees, or its shared :class:`~neuralsim.envs.latent.FrameEncoder`).
    """

    def __init__(self, venv: VecEnv, model: Any = None, *, resize: str | None = None, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "auto", encoder: FrameEncoder | None = None) -> None:
        check_pixel_space(venv.observation_space, "venv")
        self.encoder = frame_encoder_for(model, encoder, resize, device, dtype)
        super().__init__(venv, observation_space=self.encoder.observation_space)

    def reset(self) -> VecEnvObs:
        return self.encoder(self.venv.reset())

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        ended = [i for i, info in enumerate(infos) if "terminal_observation" in info]
        latents = self.encoder(np.concatenate([obs, *(infos[i]["terminal_observation"][None] for i in ended)]))
        for j, i in enumerate(ended):
            infos[i]["terminal_observation"] = latents[self.num_envs + j]
        return latents[: self.num_envs], rewards, dones, infos


def latent_policy_kwargs(features_dim: int = 256, net_arch: list[int] | dict[str, list[int]] | None = None, *,
                         extractor: str = "cnn") -> dict[str, Any]:
    """``policy_kwargs`` of an SB3 ``"MlpPolicy"`` over latent observations ``[C, h, w]``.

    The same policy acts in the dream (``obs_type="latent"``) and in a real env observed through
    :class:`~neuralsim.envs.latent.LatentObservation`; :func:`neuralsim.policy.save_policy` stores it.

    Args:
        features_dim: width of the extractor's output.
        net_arch: SB3's ``net_arch`` after the extractor (default: SB3's, ``[64, 64]`` for actor and critic).
        extractor: ``"cnn"`` (:class:`~neuralsim.policy.LatentCNN`) or ``"cells"``
            (:class:`~neuralsim.policy.LatentCellCNN`, every latent cell kept: with
            :func:`neuralsim.agents.pretrain.pretrain_latent_extractor` it learns the room's task, which neither
            learns from PPO alone).

    Returns:
        ``{"features_extractor_class": ..., "features_extractor_kwargs": {"features_dim": ...}[, "net_arch": ...]}``.
    """
    if isinstance(features_dim, bool) or not isinstance(features_dim, int) or features_dim <= 0:
        raise ValueError(f"features_dim must be a positive int, got {features_dim!r}")
    if extractor not in LATENT_EXTRACTORS:
        raise ValueError(f"extractor must be one of {sorted(LATENT_EXTRACTORS)}, got {extractor!r}")
    kwargs: dict[str, Any] = {"features_extractor_class": LATENT_EXTRACTORS[extractor],
                              "features_extractor_kwargs": {"features_dim": features_dim}}
    if net_arch is not None:
        kwargs["net_arch"] = net_arch
    return kwargs


def rgb_policy_kwargs(features_dim: int = 256, net_arch: list[int] | dict[str, list[int]] | None = None) -> dict[str, Any]:
    """``policy_kwargs`` of an SB3 ``"CnnPolicy"`` over rgb frames with :class:`~neuralsim.policy.ImpalaCNN`, which
    sees a target a few pixels across (SB3's default ``NatureCNN`` does not learn the room's task:
    ``benchmarks/ppo_observation.py``); :func:`neuralsim.policy.save_policy` stores it.

    Args:
        features_dim: width of the extractor's output.
        net_arch: SB3's ``net_arch`` after the extractor (default: SB3's, ``[64, 64]`` for actor and critic).
    """
    kwargs = latent_policy_kwargs(features_dim, net_arch)
    kwargs["features_extractor_class"] = ImpalaCNN
    return kwargs


__all__ = ["ImpalaCNN", "LATENT_EXTRACTORS", "LatentCNN", "LatentCellCNN", "SB3VecEnv", "VecLatentObservation", "latent_policy_kwargs", "make_sb3_env",
           "rgb_policy_kwargs"]
