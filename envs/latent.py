"""Latent observations for real envs: a world model's encoder as a Gymnasium observation wrapper.

An agent trained in the dream on latents (``WorldModelEnv(obs_type="latent")``) sees normalised
latent frames ``[C, h, w]``, never pixels. :class:`LatentObservation` gives any pixel env (e.g.
``NeuralSimRoom-v0``) the very same observations: each frame is resized the way the model's
training frames were (``provenance["resize"]``, :func:`neuralsim.images.resize_frame`) and encoded
by the checkpoint's encoder, so a policy trained in the dream runs in the real world unchanged.
:class:`VectorLatentObservation` does the same for a Gymnasium vector env, one encoder forward per
step for the whole batch; :class:`FrameEncoder` is the shared function (frames in, latents out).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import VectorEnv, VectorObservationWrapper
from gymnasium.vector.utils import batch_space

from neuralsim.envs.world_model_env import LATENT_BOUND, encoded_obs
from neuralsim.images import RESIZE_MODES, resize_frame
from neuralsim.session import DreamSession


def latent_observation_space(latent_shape: tuple[int, int, int]) -> spaces.Box:
    """The latent observation space of the dream (``WorldModelEnv(obs_type="latent")``) for ``(C, h, w)``."""
    return spaces.Box(-LATENT_BOUND, LATENT_BOUND, tuple(int(s) for s in latent_shape), np.float32)


class FrameEncoder:
    """A world model's encoder as a function: rgb frames uint8 ``[B, h', w', 3]`` -> latent obs float32 ``[B, C, h, w]``.

    Frames of another size than the model's ``image_size`` are resized with
    :func:`neuralsim.images.resize_frame` in the mode the model's dataset was collected with; every
    frame is encoded alone (the first-frame latent of ``WorldModel.encode``), in the precision the
    dream would use, and clipped to ``±LATENT_BOUND`` as the dream's latent observations are.

    Args:
        model: a shipped model name (``"default"``), a checkpoint directory or a ``WorldModel`` instance
            (shared, not copied: one model can serve many wrappers).
        resize: ``None`` (the checkpoint's ``provenance["resize"]``, ``"squash"`` if unrecorded) or
            ``"pad"``, ``"crop"``, ``"squash"``.
        device: ``"cpu"`` (default) or ``"cuda"``.
        dtype: as :class:`~neuralsim.envs.WorldModelEnv` (``"auto"``: bf16 autocast only where native).

    Attributes:
        model: the ``WorldModel``. image_size: ``(H, W)``. latent_shape: ``(C, h, w)``.
        resize: the resize mode. observation_space: ``Box(-LATENT_BOUND, LATENT_BOUND, (C, h, w), float32)``.
    """

    def __init__(self, model: Any = "default", *, resize: str | None = None, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "auto") -> None:
        from neuralsim.model import WorldModel

        self.session = DreamSession(model, device=device, dtype=dtype)
        self.model, self.model_name = self.session.model, self.session.model_name
        if not isinstance(self.model, WorldModel):
            raise ValueError(f"model={self.model_name!r}: latent observations need a neuralsim WorldModel checkpoint "
                             "(the official SANA-WM's VAE latents are not supported here)")
        self.device, self.dtype = self.session.device, self.session.dtype
        self.image_size: tuple[int, int] = self.session.image_size
        self.latent_shape: tuple[int, int, int] = self.session.latent_shape
        if resize is not None and resize not in RESIZE_MODES:
            raise ValueError(f"resize must be None (the checkpoint's) or one of {', '.join(RESIZE_MODES)}, got {resize!r}")
        self.resize = resize if resize is not None else self.session.resize_mode
        self.observation_space = latent_observation_space(self.latent_shape)

    def resize_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 ``[B, h', w', 3]`` -> uint8 ``[B, H, W, 3]`` (the model's ``image_size``; unchanged when it already is)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [B, H, W, 3] rgb, got {frames.dtype} {frames.shape}")
        if tuple(frames.shape[1:3]) == tuple(self.image_size):
            return np.ascontiguousarray(frames)
        return np.stack([resize_frame(f, self.image_size, mode=self.resize) for f in frames])

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Encode uint8 ``[B, h', w', 3]`` frames -> float32 ``[B, C, h, w]`` latent observations."""
        return encoded_obs(self.session, self.resize_frames(frames))


def check_pixel_space(space: gym.Space, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``space`` is rgb frames ``Box(0, 255, (H, W, 3), uint8)``."""
    if not (isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3 and space.shape[-1] == 3):
        raise ValueError(f"{name} must have rgb observations Box(0, 255, (H, W, 3), uint8), got {space}; for an env "
                         "that renders its frames, wrap it in gymnasium.wrappers.AddRenderObservation(env, "
                         "render_only=True) first")


def frame_encoder_for(model: Any = None, encoder: FrameEncoder | None = None, resize: str | None = None,
                      device: str | torch.device = "cpu", dtype: str | torch.dtype = "auto") -> FrameEncoder:
    """The latent wrappers' encoder: ``encoder`` when given (checked; then ``model`` and ``resize`` must be None),
    else a new :class:`FrameEncoder` of ``model`` (``"default"`` when None)."""
    if encoder is None:
        return FrameEncoder("default" if model is None else model, resize=resize, device=device, dtype=dtype)
    if not isinstance(encoder, FrameEncoder):
        raise TypeError(f"encoder must be a FrameEncoder, got {type(encoder).__name__}")
    if model is not None or resize is not None:
        raise ValueError("pass either encoder= or model= (with resize=), not both")
    return encoder


class LatentObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Observe a pixel env through a world model's encoder: the dream's latent observations, in the real world.

    ## Description

    Every rgb observation of ``env`` is resized to the model's ``image_size`` the way its dataset
    was collected and encoded into one normalised latent frame, exactly what
    ``WorldModelEnv(model, obs_type="latent")`` observes in the dream: a policy trained there acts
    here unchanged. The model's ``frames_per_latent`` should be 1 (as the default model's): with
    k > 1 a dream step spans k frames, while this wrapper encodes each real frame alone.

    ## Action Space

    ``env``'s, unchanged.

    ## Observation Space

    ``Box(-1e4, 1e4, (C, h, w), float32)`` (``LATENT_BOUND``; ``C = latent_channels``, ``h, w`` the
    latent grid), identical to the dream's latent observation space. ``env`` must observe rgb frames
    ``Box(0, 255, (H', W', 3), uint8)`` of any size. ``wrapper.frame`` is the last frame as encoded
    (uint8 ``[H, W, 3]``, after resizing), for videos.

    ## Rewards, Starting State, Episode End

    ``env``'s, unchanged.

    ## Arguments

    ```python
    >>> import gymnasium as gym
    >>> import neuralsim
    >>> from neuralsim.envs.latent import LatentObservation
    >>> env = LatentObservation(gym.make("NeuralSimRoom-v0"), model="default")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape == env.observation_space.shape, obs.dtype
    (True, dtype('float32'))

    ```

    * ``env``: a pixel env.
    * ``model``: a shipped model name, a checkpoint directory or a ``WorldModel`` instance (default ``"default"``).
    * ``resize``, ``device``, ``dtype``: as :class:`FrameEncoder`.
    * ``encoder``: a :class:`FrameEncoder` to share between wrappers (instead of ``model``).

    ## Version History

    * v0: initial version.
    """

    def __init__(self, env: gym.Env, model: Any = None, *, resize: str | None = None, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "auto", encoder: FrameEncoder | None = None) -> None:
        check_pixel_space(env.observation_space, "env")
        gym.utils.RecordConstructorArgs.__init__(self, model=model, resize=resize, device=device, dtype=dtype,
                                                 encoder=encoder)
        gym.ObservationWrapper.__init__(self, env)
        self.encoder = frame_encoder_for(model, encoder, resize, device, dtype)
        self.observation_space = self.encoder.observation_space
        self.frame: np.ndarray | None = None

    def observation(self, observation: np.ndarray) -> np.ndarray:
        frames = self.encoder.resize_frames(np.asarray(observation)[None])
        self.frame = frames[0]
        return self.encoder(frames)[0]


class VectorLatentObservation(VectorObservationWrapper):
    """:class:`LatentObservation` for a Gymnasium vector env: the whole batch encoded in one forward.

    ``single_observation_space``: the dream's latent space ``Box(-1e4, 1e4, (C, h, w), float32)``;
    ``observation_space``: batched ``(num_envs, C, h, w)``. ``env`` must observe rgb frames and
    autoreset ``NEXT_STEP`` (gymnasium's default) or not at all.

    Args:
        env: a vector env of rgb frames, e.g. ``gym.make_vec("NeuralSimRoom-v0", num_envs=8)``.
        model, resize, device, dtype, encoder: as :class:`LatentObservation`.

    Example:
        >>> envs = VectorLatentObservation(gym.make_vec("NeuralSimRoom-v0", num_envs=4), model="default")  # doctest: +SKIP
        >>> obs, info = envs.reset(seed=0)                                                                  # doctest: +SKIP
        >>> obs.shape == (4, *envs.single_observation_space.shape)                                        # doctest: +SKIP
        True
    """

    def __init__(self, env: VectorEnv, model: Any = None, *, resize: str | None = None,
                 device: str | torch.device = "cpu", dtype: str | torch.dtype = "auto",
                 encoder: FrameEncoder | None = None) -> None:
        check_pixel_space(env.single_observation_space, "env")
        super().__init__(env)
        self.encoder = frame_encoder_for(model, encoder, resize, device, dtype)
        self.single_observation_space = self.encoder.observation_space
        self.observation_space = batch_space(self.single_observation_space, env.num_envs)

    def observations(self, observations: np.ndarray) -> np.ndarray:
        return self.encoder(np.asarray(observations))


__all__ = ["FrameEncoder", "LatentObservation", "VectorLatentObservation", "check_pixel_space", "frame_encoder_for",
           "latent_observation_space"]
