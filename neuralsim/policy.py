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
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from neuralsim.actions import space_to_spec, spec_to_space
from neuralsim.limits import MAX_SPACE_ELEMENTS  # noqa: F401  (re-exported)

FORMAT = "neuralsim-policy"
VERSION = 1
CONFIG_NAME = "policy.json"
WEIGHTS_NAME = "model.safetensors"

# Everything a policy.json may name; nothing else is ever imported or constructed from a file.
_POLICY_CLASSES = {
    "ActorCriticPolicy": "stable_baselines3.common.policies",
    "ActorCriticCnnPolicy": "stable_baselines3.common.policies",
}
_FEATURE_EXTRACTORS = ("NatureCNN", "FlattenExtractor", "LatentCNN", "LatentCellCNN", "ImpalaCNN")
_ACTIVATIONS = ("Tanh", "ReLU", "ELU", "LeakyReLU", "GELU", "SiLU")
# The ActorCriticPolicy keyword arguments a policy.json may set (SB3 2.x), with their JSON types.
_POLICY_KWARGS = {"net_arch": (list, dict), "activation_fn": str, "ortho_init": bool, "use_sde": bool,
                  "log_std_init": (int, float), "full_std": bool, "use_expln": bool, "squash_output": bool,
                  "features_extractor_class": str, "features_extractor_kwargs": dict,
                  "share_features_extractor": bool, "normalize_images": bool}
#: Bounds checked before a network is built from a policy.json: a 500-byte file once asked for a 9 GB network.
#: (The spaces' own bound, ``MAX_SPACE_ELEMENTS``, is checked by ``neuralsim.actions.spec_to_space``.)
MAX_LAYER_WIDTH = 1 << 16


def _latent_cnn_grid(h: int, w: int) -> tuple[int, int, int]:
    """``(stride, h', w')`` of :class:`LatentCNN`'s second convolution: stride 2 on grids of at least 8x8."""
    stride = 2 if min(h, w) >= 8 else 1
    return stride, (h - 1) // stride + 1, (w - 1) // stride + 1


class _LatentExtractor(BaseFeaturesExtractor):
    """What the latent extractors share: the space check, and ``linear(cnn(latents))``."""

    cnn: torch.nn.Module
    linear: torch.nn.Module

    def __init__(self, observation_space: spaces.Box, features_dim: int) -> None:
        if not (isinstance(observation_space, spaces.Box) and len(observation_space.shape) == 3):
            raise ValueError(f"observation_space must be a Box of latent frames (C, h, w), got {observation_space}")
        super().__init__(observation_space, features_dim)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(self.cnn(observations.float()))


class LatentCNN(_LatentExtractor):
    """SB3 features extractor for latent observations ``[C, h, w]`` float32 (``obs_type="latent"``).

    ``conv3x3(C -> 64) -> ReLU -> conv3x3(64 -> 64, stride 2 on grids of at least 8x8) -> ReLU ->
    flatten -> linear(features_dim) -> ReLU``. Latents are normalised (O(1)), so nothing is rescaled.
    Use it through :func:`neuralsim.agents.sb3.latent_policy_kwargs` with ``"MlpPolicy"``;
    :func:`save_policy` / :func:`load_policy` store it by name.

    Args:
        observation_space: ``Box((C, h, w), float32)``, e.g. the dream's latent observation space.
        features_dim: width of the output features.
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 256) -> None:
        super().__init__(observation_space, features_dim)
        c, h, w = (int(d) for d in observation_space.shape)
        stride, gh, gw = _latent_cnn_grid(h, w)
        self.cnn = torch.nn.Sequential(
            torch.nn.Conv2d(c, 64, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(64, 64, 3, stride=stride, padding=1), torch.nn.ReLU(),
            torch.nn.Flatten(),  # (B, 64 * gh * gw)
        )
        self.linear = torch.nn.Sequential(torch.nn.Linear(64 * gh * gw, features_dim), torch.nn.ReLU())


class LatentCellCNN(_LatentExtractor):
    """SB3 features extractor for latent observations ``[C, h, w]`` that keeps every latent cell: a small target
    (the room's ball, a few pixels inside one 8x8-pixel cell) is told apart where :class:`LatentCNN`'s stride-2 layer
    would merge it with its neighbours.

    ``conv1x1(C -> 128) -> ReLU -> conv1x1(128 -> 64) -> ReLU -> conv3x3(64 -> 32) -> ReLU -> conv3x3(32 -> 32) -> ReLU
    -> flatten -> linear(features_dim) -> ReLU`` (the 1x1 layers read each cell, the 3x3 its neighbours; no stride).
    Trained by PPO alone it does not learn the room's task any more than :class:`LatentCNN`; taught first where the
    dream's target is (:func:`neuralsim.agents.pretrain.pretrain_latent_extractor`) it does
    (``benchmarks/ppo_observation.py``). Use it through :func:`neuralsim.agents.sb3.latent_policy_kwargs`
    (``extractor="cells"``) with ``"MlpPolicy"``; :func:`save_policy` / :func:`load_policy` store it by name.

    Args:
        observation_space: ``Box((C, h, w), float32)``, e.g. the dream's latent observation space.
        features_dim: width of the output features.
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 256) -> None:
        super().__init__(observation_space, features_dim)
        c, h, w = (int(d) for d in observation_space.shape)
        relu = torch.nn.ReLU
        self.cnn = torch.nn.Sequential(
            torch.nn.Conv2d(c, 128, 1), relu(), torch.nn.Conv2d(128, 64, 1), relu(),
            torch.nn.Conv2d(64, 32, 3, padding=1), relu(), torch.nn.Conv2d(32, 32, 3, padding=1), relu(),
            torch.nn.Flatten(),  # (B, 32 * h * w)
        )
        self.linear = torch.nn.Sequential(torch.nn.Linear(32 * h * w, features_dim), relu())


class _ResidualBlock(torch.nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


IMPALA_CHANNELS = (8, 16, 16)


def _impala_grid(h: int, w: int) -> tuple[int, int]:
    """The grid :class:`ImpalaCNN` ends on: three stride-2 poolings (padding 1) of an ``h x w`` image."""
    for _ in IMPALA_CHANNELS:
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return h, w


class ImpalaCNN(BaseFeaturesExtractor):
    """SB3 features extractor for small things in rgb frames: a slim IMPALA CNN (Espeholt et al. 2018).

    Three stages of ``conv3x3 -> maxpool3x3 stride 2 -> residual block (two conv3x3)``, 8/16/16 channels, then
    ``linear(features_dim) -> ReLU``. Unlike SB3's ``NatureCNN`` (an 8x8 stride-4 first layer), it looks at every
    pixel with small filters before pooling, so a 3-5 pixel target (the room's ball 2-3 m away in a 64x64 frame)
    reaches the policy with its position: ``benchmarks/ppo_observation.py`` measures PPO learning the room with it
    where NatureCNN does not. Images are ``[C, H, W]`` uint8 scaled to [0, 1] by SB3 (``normalize_images``). Use it
    through :func:`neuralsim.agents.sb3.rgb_policy_kwargs` with ``"CnnPolicy"``; :func:`save_policy` /
    :func:`load_policy` store it by name.

    Args:
        observation_space: ``Box((C, H, W), uint8)`` (SB3's channel-first image space).
        features_dim: width of the output features.
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 256) -> None:
        if not (isinstance(observation_space, spaces.Box) and len(observation_space.shape) == 3):
            raise ValueError(f"observation_space must be a Box of channel-first images (C, H, W), got {observation_space}")
        super().__init__(observation_space, features_dim)
        c, h, w = (int(d) for d in observation_space.shape)
        layers: list[torch.nn.Module] = []
        for channels in IMPALA_CHANNELS:
            layers += [torch.nn.Conv2d(c, channels, 3, padding=1), torch.nn.MaxPool2d(3, stride=2, padding=1),
                       _ResidualBlock(channels)]
            c = channels
        gh, gw = _impala_grid(h, w)
        self.cnn = torch.nn.Sequential(*layers, torch.nn.ReLU(), torch.nn.Flatten())
        self.linear = torch.nn.Sequential(torch.nn.Linear(c * gh * gw, features_dim), torch.nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(self.cnn(observations.float()))


def _extractor_class(name: str) -> type:
    """An allow-listed features extractor by name (SB3's own, :class:`LatentCNN`, :class:`LatentCellCNN` or
    :class:`ImpalaCNN`)."""
    from stable_baselines3.common import torch_layers

    return {"LatentCNN": LatentCNN, "LatentCellCNN": LatentCellCNN, "ImpalaCNN": ImpalaCNN}.get(name) or \
        getattr(torch_layers, name)


def space_to_json(space: spaces.Space, name: str = "space") -> dict[str, Any]:
    """:func:`neuralsim.actions.space_to_spec` with uniform bounds stored once (an image space is a few bytes)."""
    return space_to_spec(space, name, compact=True)


#: Inverse of :func:`space_to_json` (the one reader of stored spaces, every field checked before allocating).
space_from_json = spec_to_space


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _min_weights(obs: spaces.Space, action: spaces.Space, kwargs: dict[str, Any], policy_class: str) -> int:
    """A lower bound on the weights (matrices only, biases not counted) of the network ``policy.json`` describes,
    computed without building it: checked against ``model.safetensors`` before anything is allocated."""
    obs_size = int(np.prod(obs.shape)) if isinstance(obs, spaces.Box) else int(obs.n)
    default_extractor = "NatureCNN" if policy_class == "ActorCriticCnnPolicy" else "FlattenExtractor"
    extractor = kwargs.get("features_extractor_class", default_extractor)
    total = 0
    if extractor == "NatureCNN" and isinstance(obs, spaces.Box) and len(obs.shape) == 3:
        c, h, w = obs.shape  # SB3 image policies are channel-first
        for k, stride in ((8, 4), (4, 2), (3, 1)):
            h, w = (h - k) // stride + 1, (w - k) // stride + 1
        features = int((kwargs.get("features_extractor_kwargs") or {}).get("features_dim", 512))
        total += c * 32 * 64 + 32 * 64 * 16 + 64 * 64 * 9 + max(h, 0) * max(w, 0) * 64 * features
    elif extractor == "LatentCNN" and isinstance(obs, spaces.Box) and len(obs.shape) == 3:
        c, h, w = obs.shape
        _, gh, gw = _latent_cnn_grid(h, w)
        features = int((kwargs.get("features_extractor_kwargs") or {}).get("features_dim", 256))
        total += c * 64 * 9 + 64 * 64 * 9 + 64 * gh * gw * features
    elif extractor == "LatentCellCNN" and isinstance(obs, spaces.Box) and len(obs.shape) == 3:
        c, h, w = obs.shape
        features = int((kwargs.get("features_extractor_kwargs") or {}).get("features_dim", 256))
        total += c * 128 + 128 * 64 + 64 * 32 * 9 + 32 * 32 * 9 + 32 * h * w * features
    elif extractor == "ImpalaCNN" and isinstance(obs, spaces.Box) and len(obs.shape) == 3:
        c, h, w = obs.shape
        gh, gw = _impala_grid(h, w)
        features = int((kwargs.get("features_extractor_kwargs") or {}).get("features_dim", 256))
        for channels in IMPALA_CHANNELS:
            total += c * channels * 9 + 2 * channels * channels * 9
            c = channels
        total += c * gh * gw * features
    else:
        features = obs_size
    arch = kwargs.get("net_arch")
    if arch is None:  # SB3's defaults: no hidden layers after NatureCNN, else [64, 64]
        arch = [] if extractor == "NatureCNN" else [64, 64]
    pi, vf = (arch.get("pi", []), arch.get("vf", [])) if isinstance(arch, dict) else (arch, arch)
    for layers, out in ((pi, int(np.prod(getattr(action, "shape", ()) or (1,))) if isinstance(action, spaces.Box)
                         else int(action.n)), (vf, 1)):
        width = features
        for n in [*layers, out]:
            total += width * int(n)
            width = int(n)
    return total


def _check_kwargs(kwargs: Any, where: str) -> dict[str, Any]:
    """``policy_kwargs`` of a policy.json: known keys, JSON types, bounded layer widths."""
    if not isinstance(kwargs, dict):
        raise ValueError(f"{where}: policy_kwargs must be a JSON object, got {type(kwargs).__name__}")
    for key, value in kwargs.items():
        if key not in _POLICY_KWARGS:
            raise ValueError(f"{where}: policy_kwargs[{key!r}] is not an option neuralsim restores; known: "
                             f"{sorted(_POLICY_KWARGS)}")
        if not isinstance(value, _POLICY_KWARGS[key]) or (_POLICY_KWARGS[key] is not bool and isinstance(value, bool)):
            raise ValueError(f"{where}: policy_kwargs[{key!r}]={repr(value)[:80]} has the wrong type "
                             f"{type(value).__name__}")
    arch = kwargs.get("net_arch")
    layers = [arch] if isinstance(arch, list) else list(arch.values()) if isinstance(arch, dict) else []
    if isinstance(arch, dict) and not set(arch) <= {"pi", "vf"}:
        raise ValueError(f"{where}: policy_kwargs['net_arch'] must be a list of widths or {{'pi': [...], 'vf': [...]}}")
    for widths in layers:
        if not isinstance(widths, list) or len(widths) > 64 or not all(_is_int(n) and 1 <= n <= MAX_LAYER_WIDTH
                                                                      for n in widths):
            raise ValueError(f"{where}: policy_kwargs['net_arch'] must hold at most 64 layer widths in "
                             f"[1, {MAX_LAYER_WIDTH}], got {str(widths)[:80]}")
    fx = kwargs.get("features_extractor_kwargs") or {}
    if set(fx) - {"features_dim"} or not (_is_int(fx.get("features_dim", 1)) and 1 <= fx.get("features_dim", 1) <= MAX_LAYER_WIDTH):
        raise ValueError(f"{where}: policy_kwargs['features_extractor_kwargs'] may only set features_dim, an int in "
                         f"[1, {MAX_LAYER_WIDTH}]; got {str(fx)[:80]}")
    return kwargs


def _kwargs_to_json(policy_kwargs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in policy_kwargs.items():
        if key == "features_extractor_class":
            if getattr(value, "__name__", None) not in _FEATURE_EXTRACTORS or _extractor_class(value.__name__) is not value:
                raise ValueError(f"policy_kwargs['features_extractor_class'] must be one of {_FEATURE_EXTRACTORS}, got {value!r}")
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
    out = dict(policy_kwargs)
    if "features_extractor_class" in out:
        name = out["features_extractor_class"]
        if name not in _FEATURE_EXTRACTORS:
            raise ValueError(f"policy.json: features_extractor_class must be one of {_FEATURE_EXTRACTORS}, got {name!r}")
        out["features_extractor_class"] = _extractor_class(name)
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
    # Everything in policy.json is checked, and the network's size held against the weights file's header,
    # before anything is built: a small file must not be able to ask for a huge network.
    where = f"policy {str(root)!r}: {CONFIG_NAME}"
    obs_space = space_from_json(config.get("observation_space"), f"{where}: observation_space")
    action_space = space_from_json(config.get("action_space"), f"{where}: action_space")
    kwargs = _check_kwargs(config.get("policy_kwargs", {}), where)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as f:
            stored = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"policy {str(root)!r}: {WEIGHTS_NAME} is not a valid safetensors file ({exc}); it may be "
                         "torn or corrupted") from None
    needed = _min_weights(obs_space, action_space, kwargs, name)
    if needed > stored:
        raise ValueError(f"{where} describes a network of at least {needed} weights (observation_space "
                         f"{obs_space.shape}, net_arch {kwargs.get('net_arch')}), but {WEIGHTS_NAME} holds {stored}; "
                         "the files do not belong together")
    policy_cls = getattr(importlib.import_module(_POLICY_CLASSES[name]), name)
    try:
        policy = policy_cls(obs_space, action_space, lambda _progress: 0.0, **_kwargs_from_json(kwargs))
    except (AssertionError, TypeError, ValueError) as exc:  # e.g. NatureCNN on a non-image space
        raise ValueError(f"{where}: SB3 cannot build a {name} from these spaces and policy_kwargs "
                         f"({str(exc)[:300]})") from None
    try:
        load_model(policy, str(weights_path), strict=True, device=str(device))
    except Exception as exc:  # missing/unexpected keys, wrong shapes, torn file
        raise ValueError(f"policy {str(root)!r}: {WEIGHTS_NAME} does not fit a {name} for these spaces ({exc})") from None
    policy.set_training_mode(False)
    return SavedPolicy(policy.to(device), config, root)


__all__ = ["ImpalaCNN", "LatentCNN", "LatentCellCNN", "SavedPolicy", "save_policy", "load_policy", "is_saved_policy", "space_to_json", "space_from_json"]
