"""Saved policies: a Stable-Baselines3 policy as ``policy.json`` + ``model.safetensors``, never a pickle.

SB3's own ``.zip`` format pickles the policy's constructor arguments and optimizer, so loading one
runs arbitrary code. neuralsim stores what rebuilds the network instead: the policy class name,
its observation and action spaces and its (JSON-able) ``policy_kwargs`` in ``policy.json``, and the
weights with ``safetensors.torch.save_model``. ``neuralsim collect --policy DIR`` and
``neuralsim eval transfer`` read this format.

    >>> from stable_baselines3 import PPO
    >>> from neuralsim.policy import save_policy, load_policy
    >>> save_policy(PPO("CnnPolicy", env).learn(10_000), "runs/ppo")      # doctest: +SKIP
    >>> policy = load_policy("runs/ppo")                                     # doctest: +SKIP
    >>> action = policy.act(obs, deterministic=True)                         # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

FORMAT = "neuralsim-policy"
VERSION = 1
CONFIG_NAME = "policy.json"
WEIGHTS_NAME = "model.safetensors"

# Everything a policy.json may name; nothing else is ever imported or constructed from a file.
_POLICY_CLASSES = {
    "ActorCriticPolicy": "stable_baselines3.common.policies",
    "ActorCriticCnnPolicy": "stable_baselines3.common.policies",
}
_FEATURE_EXTRACTORS = ("NatureCNN", "FlattenExtractor")
_ACTIVATIONS = ("Tanh", "ReLU", "ELU", "LeakyReLU", "GELU", "SiLU")


def space_to_json(space: spaces.Space, name: str = "space") -> dict[str, Any]:
    """``Box``/``Discrete`` -> JSON; uniform bounds are stored once (an image space is a few bytes, not 12,288 numbers)."""
    if isinstance(space, spaces.Discrete):
        return {"type": "discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.Box):
        low, high = np.asarray(space.low), np.asarray(space.high)
        uniform = bool((low == low.flat[0]).all() and (high == high.flat[0]).all())
        return {"type": "box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": float(low.flat[0]) if uniform else low.reshape(-1).tolist(),
                "high": float(high.flat[0]) if uniform else high.reshape(-1).tolist()}
    raise ValueError(f"{name} must be a gymnasium Box or Discrete space, got {space!r}")


def space_from_json(spec: Any, name: str = "space") -> spaces.Space:
    """Inverse of :func:`space_to_json`."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "discrete":
        return spaces.Discrete(int(spec["n"]), start=int(spec.get("start", 0)))
    if kind == "box":
        shape, dtype = tuple(int(s) for s in spec["shape"]), np.dtype(spec["dtype"])

        def bound(value: Any) -> np.ndarray:
            array = np.asarray(value, dtype=np.float64)
            return (np.full(shape, float(array)) if array.ndim == 0 else array.reshape(shape)).astype(dtype)

        return spaces.Box(low=bound(spec["low"]), high=bound(spec["high"]), shape=shape, dtype=dtype)
    raise ValueError(f"{name} must be {{'type': 'box'|'discrete', ...}}, got {spec!r}")


def _kwargs_to_json(policy_kwargs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in policy_kwargs.items():
        if key == "features_extractor_class":
            if value.__name__ not in _FEATURE_EXTRACTORS:
                raise ValueError(f"policy_kwargs['features_extractor_class'] must be one of {_FEATURE_EXTRACTORS}, got {value.__name__}")
            out[key] = value.__name__
        elif key == "activation_fn":
            if value.__name__ not in _ACTIVATIONS:
                raise ValueError(f"policy_kwargs['activation_fn'] must be one of torch.nn.{_ACTIVATIONS}, got {value.__name__}")
            out[key] = value.__name__
        elif key in ("optimizer_class", "optimizer_kwargs"):
            continue  # inference only: the optimizer is not part of a saved policy
        else:
            try:
                json.dumps(value)
            except TypeError:
                raise ValueError(f"policy_kwargs[{key!r}] = {value!r} cannot be stored as JSON") from None
            out[key] = value
    return out


def _kwargs_from_json(policy_kwargs: dict[str, Any]) -> dict[str, Any]:
    from stable_baselines3.common import torch_layers

    out = dict(policy_kwargs)
    if "features_extractor_class" in out:
        name = out["features_extractor_class"]
        if name not in _FEATURE_EXTRACTORS:
            raise ValueError(f"policy.json: features_extractor_class must be one of {_FEATURE_EXTRACTORS}, got {name!r}")
        out["features_extractor_class"] = getattr(torch_layers, name)
    if "activation_fn" in out:
        name = out["activation_fn"]
        if name not in _ACTIVATIONS:
            raise ValueError(f"policy.json: activation_fn must be one of {_ACTIVATIONS}, got {name!r}")
        out["activation_fn"] = getattr(torch.nn, name)
    return out


def save_policy(algo_or_policy: Any, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None) -> Path:
    """Save an SB3 algorithm's policy (or the policy itself) as ``policy.json`` + ``model.safetensors``.

    Args:
        algo_or_policy: e.g. a ``PPO`` instance, or its ``.policy`` (an ``ActorCriticPolicy``).
        path: directory to write (created; both files are written atomically).
        metadata: extra JSON fields kept in ``policy.json`` (training steps, world, seed...).

    Returns:
        the directory.
    """
    from safetensors.torch import save_model

    from neuralsim.checkpoints import atomic_write, atomic_write_json

    policy = getattr(algo_or_policy, "policy", algo_or_policy)
    name = type(policy).__name__
    if name not in _POLICY_CLASSES:
        raise ValueError(f"algo_or_policy must hold one of {sorted(_POLICY_CLASSES)} (SB3 PPO/A2C policies), got {name}")
    kwargs = dict(getattr(algo_or_policy, "policy_kwargs", {}) or {})
    kwargs["use_sde"] = bool(getattr(policy, "use_sde", False))
    config = {
        "format": FORMAT, "version": VERSION, "policy_class": name,
        "observation_space": space_to_json(policy.observation_space, "observation_space"),
        "action_space": space_to_json(policy.action_space, "action_space"),
        "policy_kwargs": _kwargs_to_json(kwargs),
        "metadata": dict(metadata or {}),
    }
    json.dumps(config["metadata"])  # fail before writing anything
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / WEIGHTS_NAME, lambda tmp: save_model(policy, tmp))
    atomic_write_json(out / CONFIG_NAME, config)  # last: a directory with policy.json is complete
    return out


class SavedPolicy:
    """A policy loaded by :func:`load_policy`: ``act(obs)`` for one observation, ``act_batch(obs)`` for many.

    Sampling (``deterministic=False``) draws from the policy's distribution with a numpy
    ``Generator`` you pass, so collections and evaluations are reproducible per seed without touching
    torch's global RNG.

    Attributes:
        observation_space / action_space: the spaces of the env the policy acts in (images channel-last,
            as the env returns them).
        policy: the SB3 ``ActorCriticPolicy`` (eval mode).
        metadata: the ``metadata`` saved with it.
    """

    def __init__(self, policy: Any, config: dict[str, Any], path: Path) -> None:
        from stable_baselines3.common.preprocessing import is_image_space

        self.policy, self.config, self.path = policy, config, path
        self.metadata: dict[str, Any] = config.get("metadata", {})
        self.action_space = policy.action_space
        obs_space = policy.observation_space
        # SB3 trains image policies channel-first (VecTransposeImage); envs give channel-last frames.
        if is_image_space(obs_space) and obs_space.shape[0] in (1, 3, 4) and obs_space.shape[-1] not in (1, 3, 4):
            c, h, w = obs_space.shape
            obs_space = spaces.Box(0, 255, (h, w, c), np.uint8)
        self.observation_space = obs_space

    def __repr__(self) -> str:
        return f"SavedPolicy({str(self.path)!r}, {self.config['policy_class']}, obs={self.observation_space.shape}, action={self.action_space})"

    def check_env_spaces(self, observation_space: spaces.Space, action_space: spaces.Space, name: str = "policy") -> None:
        """Raise ``ValueError`` unless an env with these spaces can be driven by this policy."""
        if getattr(observation_space, "shape", None) != self.observation_space.shape:
            raise ValueError(f"{name} {str(self.path)!r} expects observations of shape {self.observation_space.shape}, "
                             f"the env gives {getattr(observation_space, 'shape', observation_space)}")
        if space_to_json(action_space) != space_to_json(self.action_space):
            raise ValueError(f"{name} {str(self.path)!r} acts in {self.action_space}, the env's action space is {action_space}")

    @torch.no_grad()
    def act_batch(self, obs: np.ndarray, *, deterministic: bool = True, rng: np.random.Generator | None = None) -> np.ndarray:
        """Actions for a batch of observations ``[N, *obs_shape]`` (clipped into a Box action space)."""
        obs_tensor, _ = self.policy.obs_to_tensor(np.asarray(obs))
        dist = self.policy.get_distribution(obs_tensor)
        if deterministic:
            actions = dist.mode().cpu().numpy()
        else:
            if rng is None:
                raise ValueError("rng must be a numpy Generator when deterministic=False (sampling is seeded by it)")
            d = dist.distribution
            if isinstance(self.action_space, spaces.Discrete):
                probs = d.probs.cpu().numpy().astype(np.float64)
                actions = np.array([rng.choice(len(p), p=p / p.sum()) for p in probs])
            else:
                mean, std = d.mean.cpu().numpy(), d.stddev.cpu().numpy()
                actions = (mean + std * rng.standard_normal(mean.shape)).astype(np.float32)
        if isinstance(self.action_space, spaces.Box):
            actions = np.clip(actions, self.action_space.low, self.action_space.high).astype(self.action_space.dtype)
        elif isinstance(self.action_space, spaces.Discrete):
            actions = actions.astype(np.int64) + int(self.action_space.start)
        return actions

    def act(self, obs: Any, *, deterministic: bool = True, rng: np.random.Generator | None = None) -> Any:
        """The action for one observation."""
        action = self.act_batch(np.asarray(obs)[None], deterministic=deterministic, rng=rng)[0]
        return action


def is_saved_policy(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory holding a ``policy.json``."""
    return (Path(path) / CONFIG_NAME).is_file()


def load_policy(path: str | os.PathLike, device: str | torch.device = "cpu") -> SavedPolicy:
    """Load a policy saved by :func:`save_policy` (JSON + safetensors only; nothing is unpickled).

    Raises:
        FileNotFoundError: no ``policy.json`` / ``model.safetensors`` in ``path``.
        ValueError: the files are not a neuralsim policy, or the weights do not fit the network.
    """
    import importlib

    from safetensors.torch import load_model

    root = Path(path)
    config_path, weights_path = root / CONFIG_NAME, root / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"policy {str(root)!r} must be a directory with {CONFIG_NAME} and {WEIGHTS_NAME} "
                                "(written by neuralsim.policy.save_policy)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"policy {str(root)!r}: {CONFIG_NAME} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"policy {str(root)!r}: {CONFIG_NAME} is not a {FORMAT!r} file")
    name = config.get("policy_class")
    if name not in _POLICY_CLASSES:
        raise ValueError(f"policy {str(root)!r}: policy_class must be one of {sorted(_POLICY_CLASSES)}, got {name!r}")
    policy_cls = getattr(importlib.import_module(_POLICY_CLASSES[name]), name)
    policy = policy_cls(
        space_from_json(config["observation_space"], "observation_space"),
        space_from_json(config["action_space"], "action_space"),
        lambda _progress: 0.0,
        **_kwargs_from_json(config.get("policy_kwargs", {})),
    )
    try:
        load_model(policy, str(weights_path), strict=True, device=str(device))
    except Exception as exc:  # missing/unexpected keys, wrong shapes, torn file
        raise ValueError(f"policy {str(root)!r}: {WEIGHTS_NAME} does not fit a {name} for these spaces ({exc})") from None
    policy.set_training_mode(False)
    return SavedPolicy(policy.to(device), config, root)


__all__ = ["SavedPolicy", "save_policy", "load_policy", "is_saved_policy", "space_to_json", "space_from_json"]
