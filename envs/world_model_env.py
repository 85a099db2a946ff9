"""``SanaWM-v0``: a Gymnasium environment whose dynamics are a learned latent world model (a dream).

The env wraps a ``neuralsim.WorldModel`` checkpoint (or the official SANA-WM through
``neuralsim.sana_wm.SanaWMBackend``): ``reset`` encodes a start frame (or generates one from a
prompt) into the model's constant-size streaming state, every ``step`` denoises the next latent frame
conditioned on the action and commits it, and the decoder turns it back into pixels.

:class:`DreamCore` holds the batched machinery (loading, input validation, start frames, one batched
model step, reward/termination heads); :class:`WorldModelEnv` uses it at batch 1 and
:class:`neuralsim.envs.vector.WorldModelVectorEnv` at batch N, so both agree on every detail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from neuralsim import actions as act
from neuralsim.checkpoints import OFFICIAL_MODEL_NAME
from neuralsim.device import bf16_is_native, resolve_dtype  # noqa: F401  (re-exported)
from neuralsim.limits import MAX_DENOISE_STEPS

OFFICIAL_MODEL = OFFICIAL_MODEL_NAME
#: Finite bound of the latent observation Box (normalised latents are O(1); the sampler clamps far below).
LATENT_BOUND = 1e4
RESET_OPTION_KEYS = ("image", "prompt", "actions", "resize")

RewardFn = Callable[[np.ndarray, Any, np.ndarray, dict], float]


# ----------------------------------------------------------------------------------------------
# Loading (dtype decisions: neuralsim.device, re-exported above)
# ----------------------------------------------------------------------------------------------


def known_model_names() -> list[str]:
    """Every name ``model=`` accepts as a string that is not a directory."""
    from neuralsim.checkpoints import available_models

    return sorted(set(available_models()) | {OFFICIAL_MODEL})


def load_backend(model: Any, *, checkpoint: str | os.PathLike | None, random_weights: bool,
                 device: torch.device, dtype: torch.dtype) -> tuple["Backend", str, Path | None]:
    """Build the world model behind an env, wrapped in the :class:`Backend` interface.

    Args:
        model: a ``WorldModel``/``SanaWMBackend`` instance, a checkpoint directory, a shipped model
            name (``"default"``), or ``"sana-wm-2.6b"`` (the official model through diffusers).
        checkpoint: the diffusers-format directory of ``"sana-wm-2.6b"``.
        random_weights: build the named preset (or the official architecture) with random weights.
        device, dtype: where and in which precision the model runs.

    Returns:
        ``(backend, name, checkpoint directory or None)``.
    """
    if not isinstance(random_weights, bool):
        raise TypeError(f"random_weights must be a bool, got {type(random_weights).__name__}")
    if not isinstance(model, (str, os.PathLike)):
        if not (hasattr(model, "init_state") and hasattr(model, "step") and hasattr(model, "config")):
            raise TypeError(f"model must be a model name, a checkpoint directory or a WorldModel instance, "
                            f"got {type(model).__name__}")
        if checkpoint is not None or random_weights:
            raise ValueError("checkpoint= and random_weights= are for model names; got a model instance")
        name = type(model).__name__
        if hasattr(model, "pipeline") and hasattr(model, "vae"):  # neuralsim.sana_wm.SanaWMBackend
            return OfficialBackend(model), OFFICIAL_MODEL, None
        return NativeBackend(model.to(device).eval()), name, None
    text = os.fspath(model)
    if text == OFFICIAL_MODEL:
        return OfficialBackend(_load_official(checkpoint, random_weights, device, dtype)), OFFICIAL_MODEL, None
    if checkpoint is not None:
        raise ValueError(f"checkpoint= is only for model={OFFICIAL_MODEL!r}; for model={text!r} pass the "
                         "directory as model=DIR")

    from neuralsim.checkpoints import ASSETS_DIR, DEFAULT_MODEL_MISSING, default_model_missing, resolve_checkpoint
    from neuralsim.model import WorldModel

    if random_weights:
        from neuralsim.config import PRESETS, WorldModelConfig

        if text not in PRESETS:
            raise ValueError(f"model={text!r} with random_weights=True must be a preset name, one of {sorted(PRESETS)} "
                             f"(or {OFFICIAL_MODEL!r})")
        with torch.random.fork_rng(devices=[]):  # init draws from the global RNG: seed a private copy of it
            torch.manual_seed(0)
            torch_model = WorldModel(WorldModelConfig.from_preset(text))
        return NativeBackend(torch_model.to(device).eval()), f"{text} (random weights)", None

    path = Path(text)
    if not path.exists():
        if default_model_missing(text):
            raise ValueError(f"model='default': {DEFAULT_MODEL_MISSING}; pass model=DIR (a checkpoint from `neuralsim "
                             "train`), or random_weights=True to run the default architecture untrained")
        if os.sep not in text and not text.startswith(".") and not (ASSETS_DIR / text).is_dir():
            raise ValueError(f"model={text!r} is neither a checkpoint directory nor a known model name; "
                             f"known models: {known_model_names()}")
    path = resolve_checkpoint(text, "model")
    return NativeBackend(WorldModel.from_pretrained(path, device=device).eval()), text, path


def _load_official(checkpoint: Any, random_weights: bool, device: torch.device, dtype: torch.dtype) -> Any:
    if checkpoint is None and not random_weights:
        raise ValueError(f"model={OFFICIAL_MODEL!r} needs checkpoint=DIR (the official weights in diffusers format, "
                         "e.g. a local copy of Efficient-Large-Model/SANA-WM_bidirectional-diffusers), or "
                         "random_weights=True to run the architecture with random weights (timing and plumbing only)")
    if checkpoint is not None and random_weights:
        raise ValueError("pass either checkpoint=DIR or random_weights=True, not both")
    try:
        from neuralsim.sana_wm import SanaWMBackend
    except ImportError as exc:
        raise ImportError(f"model={OFFICIAL_MODEL!r} needs the [sana] extra: pip install 'neuralsim[sana]' "
                          f"({exc})") from exc
    if checkpoint is not None:
        return SanaWMBackend.from_pretrained(checkpoint, device=device, dtype=dtype)
    # Random weights: the public release's architecture (diffusers' defaults), no text encoder, no CFG.
    from diffusers import AutoencoderKLLTX2Video, SanaWMTransformer3DModel

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.device(device):
        torch.manual_seed(0)
        transformer, vae = SanaWMTransformer3DModel(), AutoencoderKLLTX2Video()
    return SanaWMBackend(transformer, vae, guidance_scale=1.0, denoise_steps=4, dtype=dtype, device=device)


def resize_mode_of(config: Any) -> str:
    """How real frames became ``config.image_size`` when the model's dataset was collected: ``provenance["resize"]``
    (``"pad"``, ``"crop"`` or ``"squash"``; ``"squash"`` when unrecorded)."""
    provenance = getattr(config, "provenance", None)
    mode = provenance.get("resize") if isinstance(provenance, dict) else None
    return mode if mode in ("pad", "crop", "squash") else "squash"


def load_start_set(path: Path | None, image_size: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
    """The start frames shipped with a checkpoint (uint8 ``[N, H, W, 3]``, resized if needed) and their descriptions."""
    empty = np.zeros((0, *image_size, 3), dtype=np.uint8)
    if path is None:
        return empty, []
    from neuralsim.checkpoints import START_FRAMES_NAME, read_start_frames
    from neuralsim.data import resize_frame

    frames, descriptions = read_start_frames(path)
    if frames.size == 0:
        return empty, []
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{Path(path) / START_FRAMES_NAME}: 'frames' must be uint8 [N, H, W, 3], "
                         f"got {frames.dtype} {frames.shape}")
    if tuple(frames.shape[1:3]) != tuple(image_size):
        frames = np.stack([resize_frame(f, image_size) for f in frames])
    return np.ascontiguousarray(frames), [str(d) for d in descriptions]


# ----------------------------------------------------------------------------------------------
# Backends: one small interface over the native WorldModel and the official SANA-WM
# ----------------------------------------------------------------------------------------------


class Backend:
    """What the envs need from a world model; :class:`NativeBackend` and :class:`OfficialBackend` implement it.

    Attributes:
        model: the wrapped model. image_size: ``(H, W)``. frames_per_step: k. latent_shape: ``(C, h, w)``.
        action_spec: ``neuralsim.actions`` spec of the action space. text_conditioned: prompts allowed.
        can_generate_start: ``init`` works without frames. can_merge: per-row resets are possible.
    """

    model: Any
    image_size: tuple[int, int]
    frames_per_step: int
    latent_shape: tuple[int, int, int]
    action_spec: dict
    text_conditioned: bool
    can_generate_start: bool
    can_merge: bool

    def init(self, batch_size: int, frames: np.ndarray | None, actions: np.ndarray | None, prompts: list[str] | None,
             generator: torch.Generator, denoise_steps: int | None) -> Any:
        """Encode ``frames`` (uint8 ``[B, T, H, W, 3]``) or generate a first frame -> state."""
        raise NotImplementedError

    def step(self, state: Any, actions: np.ndarray, generator: torch.Generator,
             denoise_steps: int | None) -> tuple[torch.Tensor, Any]:
        """-> ``(latent [B, C, h, w], new state)``; never modifies ``state``."""
        raise NotImplementedError

    def decode_step(self, latent: torch.Tensor, state: Any) -> np.ndarray:
        """The chunk of a step: uint8 ``[B, k, H, W, 3]``."""
        raise NotImplementedError

    def decode_start(self, state: Any) -> np.ndarray:
        """The last frame of a generated start: uint8 ``[B, H, W, 3]``."""
        raise NotImplementedError

    def latent(self, state: Any) -> torch.Tensor:
        """The last committed latent frame ``[B, C, h, w]``."""
        raise NotImplementedError

    def heads(self, state: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(predicted reward [B] float32, termination probability [B] float32)`` of the last step."""
        raise NotImplementedError

    def merge(self, state: Any, mask: np.ndarray, fresh: Any) -> Any:
        """Rows of ``fresh`` (batch ``mask.sum()``) replace the ``mask`` rows of ``state``."""
        raise NotImplementedError


class NativeBackend(Backend):
    """The native :class:`neuralsim.model.WorldModel`."""

    def __init__(self, model: Any) -> None:
        cfg = model.config
        self.model = model
        self.image_size = tuple(int(s) for s in cfg.image_size)  # type: ignore[assignment]
        self.frames_per_step = int(cfg.frames_per_latent)
        self.latent_shape = (int(cfg.latent_channels), *(int(s) for s in cfg.latent_size))  # type: ignore[assignment]
        self.action_spec = dict(cfg.action_spec)
        self.text_conditioned = bool(getattr(cfg, "text_width", 0))
        self.can_generate_start = True
        self.can_merge = True
        self.device = model.device

    def init(self, batch_size, frames, actions, prompts, generator, denoise_steps):
        return self.model.init_state(batch_size, frames=frames, actions=actions, prompt=prompts, generator=generator,
                                     denoise_steps=denoise_steps)

    def step(self, state, actions, generator, denoise_steps):
        return self.model.step(state, actions, generator=generator, denoise_steps=denoise_steps)

    def decode_step(self, latent, state):
        return self.model.decode(latent[:, None], first_frame=False).cpu().numpy()

    def decode_start(self, state):
        return self.model.decode(state.latent[:, None], first_frame=True)[:, -1].cpu().numpy()

    def latent(self, state):
        return state.latent

    def heads(self, state):
        reward, term = self.model.predict_reward_termination(state)
        return reward.float().cpu().numpy().astype(np.float32), term.float().cpu().numpy().astype(np.float32)

    def merge(self, state, mask, fresh):
        from neuralsim.model import tree_map

        mask_t = torch.from_numpy(np.asarray(mask, dtype=bool))
        rows = torch.from_numpy(np.maximum(np.cumsum(mask) - 1, 0))  # row of `fresh` for every masked row
        expanded = dataclasses.replace(fresh, **{f.name: tree_map(lambda t: t.index_select(0, rows.to(t.device)),
                                                                  getattr(fresh, f.name))
                                                 for f in dataclasses.fields(fresh)})
        return state.merge(mask_t, expanded)


class OfficialBackend(Backend):
    """The official SANA-WM (:class:`neuralsim.sana_wm.SanaWMBackend`): no reward head, batch-wide resets only."""

    def __init__(self, model: Any) -> None:
        from neuralsim.actions import space_to_spec

        cfg = model.config
        self.model = model
        self.image_size = tuple(int(s) for s in cfg.image_size)  # type: ignore[assignment]
        self.frames_per_step = int(cfg.frames_per_latent)
        self.latent_shape = (int(cfg.latent_channels), *(int(s) for s in cfg.latent_size))  # type: ignore[assignment]
        self.action_spec = space_to_spec(model.action_space)
        self.text_conditioned = getattr(model, "text_encoder", None) is not None
        self.can_generate_start = False  # SANA-WM is image-to-video
        self.can_merge = False  # the state's window length and sink flag are batch-wide
        self.device = model.device

    def init(self, batch_size, frames, actions, prompts, generator, denoise_steps):
        kwargs: dict[str, Any] = {}
        if prompts is None and not self.text_conditioned:  # no text encoder: an all-zero prompt embedding
            width = int(self.model.transformer.config.caption_channels)
            kwargs["prompt_embeds"] = torch.zeros(batch_size, 1, 1, width, device=self.device, dtype=self.model.dtype)
        if actions is not None:  # [B, n] steps -> per-frame canonical vectors [B, n*k, 4]
            from neuralsim.actions import DISCRETE_KEYSETS, keys_to_vector

            if self.action_spec["type"] == "discrete":
                actions = np.stack([[keys_to_vector(DISCRETE_KEYSETS[int(a)]) for a in row] for row in actions])
            actions = np.repeat(np.asarray(actions, dtype=np.float64), self.frames_per_step, axis=1)
        return self.model.init_state(batch_size, frames=frames, actions=actions, prompt=prompts, generator=generator,
                                     **kwargs)

    def step(self, state, actions, generator, denoise_steps):
        latent, state = self.model.step(state, actions, generator=generator, denoise_steps=denoise_steps)
        return latent[:, :, 0], state  # [B, C, 1, h, w] -> [B, C, h, w]

    def decode_step(self, latent, state):
        return self.model.decode(latent[:, :, None], context=state)

    def decode_start(self, state):
        return self.model.decode(state.latents[:, :, -1:])[:, -1]

    def latent(self, state):
        return state.latents[:, :, -1]

    def heads(self, state):
        zeros = np.zeros(state.batch_size, dtype=np.float32)
        return zeros, zeros.copy()

    def merge(self, state, mask, fresh):
        if np.all(mask):
            return fresh
        raise NotImplementedError(f"model={OFFICIAL_MODEL!r} cannot reset some envs of a batch (its window length and "
                                  "sink are batch-wide); use WorldModelEnv, or one WorldModelVectorEnv per episode batch")


# ----------------------------------------------------------------------------------------------
# Input validation (shared by the single and the vector env)
# ----------------------------------------------------------------------------------------------


def check_image(image: Any, image_size: tuple[int, int], *, resize: bool | str, name: str = "options['image']",
                max_ndim: int = 4) -> np.ndarray:
    """Validate a start image: uint8 ``[H, W, 3]`` or ``[T, H, W, 3]`` (``[..., H, W, 3]`` up to ``max_ndim``).

    Args:
        resize: ``False`` (a differently sized image is an error), ``True`` (squash) or a mode of
            :func:`neuralsim.data.resize_frame` (``"pad"``, ``"crop"``, ``"squash"``).

    Returns:
        uint8 array with the same leading dims and ``(H, W)`` = ``image_size`` (resized when ``resize``).
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    expected = f"a uint8 numpy array of shape (H, W, 3) = ({image_size[0]}, {image_size[1]}, 3) or (T, H, W, 3)"
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be {expected}, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8 (values 0..255), got {image.dtype}; convert with "
                        f"np.clip(x, 0, 255).astype(np.uint8) (or x * 255 first for images in [0, 1])")
    if not 3 <= image.ndim <= max_ndim:
        raise ValueError(f"{name} must be {expected}, got shape {image.shape}")
    if image.shape[-1] != 3:
        raise ValueError(f"{name} must have 3 channels (RGB, channels last: (H, W, 3)), got shape {image.shape}")
    if any(s == 0 for s in image.shape):
        raise ValueError(f"{name} is empty: shape {image.shape}")
    if tuple(image.shape[-3:-1]) != tuple(image_size):
        if not resize:
            raise ValueError(f"{name} has size {tuple(image.shape[-3:-1])} but the model expects {tuple(image_size)} "
                             f"(H, W); pass options={{'resize': True}} to resize it")
        from neuralsim.data import RESIZE_MODES, resize_frame

        mode = "squash" if resize is True else str(resize)
        if mode not in RESIZE_MODES:
            raise ValueError(f"options['resize'] must be a bool or one of {', '.join(RESIZE_MODES)}, got {resize!r}")
        flat = image.reshape(-1, *image.shape[-3:])
        image = np.stack([resize_frame(f, image_size, mode=mode) for f in flat]).reshape(*image.shape[:-3], *image_size, 3)
    return np.ascontiguousarray(image)


def check_prompts(prompt: Any, batch_size: int, name: str = "options['prompt']") -> list[str]:
    """A str (for every env) or a list of ``batch_size`` str -> list of cleaned prompts."""
    from neuralsim.text import validate_prompts

    if not isinstance(prompt, (str, list, tuple)):
        raise TypeError(f"{name} must be a str{' or a list of str' if batch_size > 1 else ''}, got {type(prompt).__name__}")
    prompts = validate_prompts(list(prompt) if isinstance(prompt, tuple) else prompt, batch_size, name=name)
    if prompts is None or any(p is None for p in prompts):
        raise TypeError(f"{name} must hold str prompts, got None")
    return prompts  # type: ignore[return-value]


class DreamCore:
    """Batched dream machinery: a world model, its spaces, start frames, validated batched steps.

    Not an env itself: :class:`WorldModelEnv` (batch 1) and ``WorldModelVectorEnv`` (batch N) own the
    episode bookkeeping (step counters, autoreset, RNG); this class owns everything model-side.
    """

    def __init__(
        self,
        model: Any = "default",
        *,
        checkpoint: str | os.PathLike | None = None,
        obs_type: str = "rgb",
        denoise_steps: int | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "auto",
        random_weights: bool = False,
        num_threads: int | str | None = "auto",
    ) -> None:
        if obs_type not in ("rgb", "latent"):
            raise ValueError(f"obs_type must be 'rgb' or 'latent', got {obs_type!r}")
        from neuralsim.runtime import apply_thread_policy

        apply_thread_policy(num_threads)  # validates num_threads; see neuralsim.runtime
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must be a torch device like 'cpu' or 'cuda:0', got {device!r}") from exc
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r} but CUDA is not available here; use device='cpu'")
        if denoise_steps is not None and (isinstance(denoise_steps, bool) or not isinstance(denoise_steps, (int, np.integer))
                                          or not 0 < denoise_steps <= MAX_DENOISE_STEPS):
            raise ValueError(f"denoise_steps must be an int in [1, {MAX_DENOISE_STEPS}] or None (the model's default), "
                             f"got {denoise_steps!r}")
        self.dtype = resolve_dtype(dtype, self.device)
        self.obs_type = obs_type
        self.denoise_steps = None if denoise_steps is None else int(denoise_steps)
        self.backend, self.model_name, self.checkpoint_dir = load_backend(
            model, checkpoint=checkpoint, random_weights=random_weights, device=self.device, dtype=self.dtype)
        self.random_weights = random_weights
        b = self.backend
        self.image_size, self.frames_per_step, self.action_spec = b.image_size, b.frames_per_step, b.action_spec
        self.start_frames, self.start_descriptions = load_start_set(self.checkpoint_dir, self.image_size)

        self.single_action_space = act.spec_to_space(self.action_spec)
        if obs_type == "rgb":
            self.single_observation_space: spaces.Box = spaces.Box(0, 255, (*self.image_size, 3), np.uint8)
        else:
            self.single_observation_space = spaces.Box(-LATENT_BOUND, LATENT_BOUND, b.latent_shape, np.float32)

    # -------------------------------------------------------------------- helpers

    @property
    def config(self) -> Any:
        return self.backend.model.config

    @property
    def resize_mode(self) -> str:
        """How real frames became the model's ``image_size`` when its dataset was collected (``"squash"`` if unrecorded)."""
        return resize_mode_of(self.config)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32 or isinstance(self.backend, OfficialBackend):  # the official model is cast
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @staticmethod
    def make_generator(rng: np.random.Generator) -> torch.Generator:
        """A CPU torch generator seeded from ``rng`` (the env's ``np_random``); CPU so seeds agree across devices."""
        return torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))

    # -------------------------------------------------------------------- validation

    def check_actions(self, actions: Any, batch_size: int, name: str = "action", *, single: bool = False) -> np.ndarray:
        """Validated batch: ``[B, A]`` float32 (Box) or ``[B]`` int64 (Discrete); raises naming ``name``.

        ``single=True``: ``actions`` is one element of the single action space (batch 1, no batch axis).
        """
        space = self.single_action_space
        if isinstance(actions, (str, bytes)):
            raise TypeError(f"{name} must be an element of the action space {space}, got a str; "
                            "for key-DSL strings use env.unwrapped.step_keys('w-8')")
        if actions is None:
            raise TypeError(f"{name} must be an element of the action space {space}, got None")
        arr = np.asarray(actions.detach().cpu() if hasattr(actions, "detach") else actions)
        if arr.dtype == object or arr.dtype.kind in "USb":
            raise TypeError(f"{name} must be numeric (the action space {space}), got dtype {arr.dtype}")
        if single:
            if self.action_spec["type"] == "discrete" and arr.ndim == 0:
                arr = arr.reshape(1)
            elif self.action_spec["type"] == "box":
                if arr.shape != space.shape:
                    raise ValueError(f"{name} must have shape {space.shape} (the action space {space}), got shape {arr.shape}")
                arr = arr.reshape(1, -1)
            elif arr.ndim != 0:
                raise ValueError(f"{name} must be a scalar int in the action space {space}, got shape {arr.shape}")
        return act.validate_actions(arr, self.action_spec, batch_size=batch_size, name=name)

    def parse_options(self, options: dict | None, batch_size: int) -> dict:
        """Validate reset options for ``batch_size`` envs -> ``{"image", "prompts", "actions"}`` (each may be None).

        ``image`` comes back as uint8 ``[B, T, H, W, 3]``; ``prompts`` as a list of B str; ``actions`` as
        ``[B, n, A]`` / ``[B, n]`` for a context clip of ``1 + n*k`` frames.
        """
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
        unknown = sorted(set(options) - set(RESET_OPTION_KEYS))
        if unknown:
            raise ValueError(f"options has unknown keys {unknown}; expected some of {list(RESET_OPTION_KEYS)}")
        resize = options.get("resize", False)
        if not isinstance(resize, (bool, np.bool_)) and not (isinstance(resize, str) and resize in ("pad", "crop", "squash")):
            raise TypeError(f"options['resize'] must be a bool or one of 'pad', 'crop', 'squash', got "
                            f"{type(resize).__name__} {repr(resize)[:60]}")
        if resize is True or isinstance(resize, np.bool_) and resize:
            resize = self.resize_mode
        image = None
        if options.get("image") is not None:
            image = check_image(options["image"], self.image_size, resize=resize or False, max_ndim=4 if batch_size == 1 else 5)
            if batch_size == 1:
                image = image.reshape(1, -1, *image.shape[-3:])  # [1, T, H, W, 3]
            elif image.ndim == 3:
                image = np.ascontiguousarray(np.broadcast_to(image, (batch_size, 1, *image.shape)))
            elif image.shape[0] != batch_size:
                raise ValueError(f"options['image'] must be (H, W, 3) for every env being reset, or one per env: "
                                 f"({batch_size}, H, W, 3) or ({batch_size}, T, H, W, 3); got shape {image.shape}")
            else:
                image = image.reshape(batch_size, -1, *image.shape[-3:])
            k = self.frames_per_step
            if (image.shape[1] - 1) % k:
                raise ValueError(f"options['image'] has T={image.shape[1]} frames; a context clip must have 1 + n*{k} "
                                 f"frames (the first frame alone, then whole env steps of {k} frames)")
        prompts = None
        if options.get("prompt") is not None:
            if not self.backend.text_conditioned:
                raise ValueError(f"options['prompt'] given but model {self.model_name!r} has no text conditioning; "
                                 "start from options={'image': frame} instead")
            prompts = check_prompts(options["prompt"], batch_size)
        actions = None
        if options.get("actions") is not None:
            if image is None or image.shape[1] == 1:
                raise ValueError("options['actions'] are the actions between the frames of a context clip; pass "
                                 f"options['image'] as (T, H, W, 3) with T = 1 + n*{self.frames_per_step} frames too")
            n = (image.shape[1] - 1) // self.frames_per_step
            arr = np.asarray(options["actions"])
            per = () if self.action_spec["type"] == "discrete" else self.single_action_space.shape
            if arr.shape == (n, *per):
                arr = np.broadcast_to(arr, (batch_size, n, *per))
            if arr.shape != (batch_size, n, *per):
                raise ValueError(f"options['actions'] must have shape {(n, *per)} (one action per env step of the "
                                 f"context clip{', for every env' if batch_size > 1 else ''}), got shape {arr.shape}")
            flat = self.check_actions(arr.reshape(batch_size * n, *per), batch_size * n, name="options['actions']")
            actions = flat.reshape(batch_size, n, *flat.shape[1:])
        if prompts is None and image is None and not self.backend.can_generate_start and not len(self.start_frames) \
                and not self.random_weights:
            raise ValueError(f"model {self.model_name!r} needs a start frame: reset(options={{'image': frame}})")
        return {"image": image, "prompts": prompts, "actions": actions}

    # -------------------------------------------------------------------- model calls

    @torch.inference_mode()
    def start(self, batch_size: int, rng: np.random.Generator, generator: torch.Generator,
              parsed: dict) -> tuple[Any, np.ndarray, np.ndarray, dict]:
        """Build the state of ``batch_size`` fresh episodes from parsed options (or the start set).

        Returns:
            ``(state, obs [B, ...], rgb [B, H, W, 3] uint8, info)``; ``info`` has ``"start_index"``
            (``[B]`` int, -1 where not from the start set) and ``"prompt"`` (list of B str).
        """
        image, prompts, actions = parsed["image"], parsed["prompts"], parsed["actions"]
        index = np.full(batch_size, -1, dtype=np.int64)
        if image is None and prompts is None:
            if len(self.start_frames):
                index = rng.integers(0, len(self.start_frames), size=batch_size)
                image = self.start_frames[index][:, None]  # [B, 1, H, W, 3]
                if self.backend.text_conditioned and len(self.start_descriptions) == len(self.start_frames):
                    described = [self.start_descriptions[i] for i in index]
                    prompts = described if all(p.strip() for p in described) else None
            elif not self.backend.can_generate_start:  # random weights, no start set: a noise picture
                image = rng.integers(0, 256, (batch_size, 1, *self.image_size, 3), dtype=np.uint8)
        with self.autocast():
            state = self.backend.init(batch_size, image, actions, prompts, generator, self.denoise_steps)
            latent = self.backend.latent(state)
            rgb = np.ascontiguousarray(image[:, -1]) if image is not None else self.backend.decode_start(state)
        obs = rgb if self.obs_type == "rgb" else self._latent_obs(latent)
        return state, obs, rgb, {"start_index": index, "prompt": prompts or [""] * batch_size}

    @torch.inference_mode()
    def step(self, state: Any, actions: np.ndarray, generator: torch.Generator, *, decode: bool = True) -> dict:
        """One env step for the whole batch (``actions`` validated by :meth:`check_actions`).

        Returns:
            dict with ``state``, ``obs`` ``[B, ...]``, ``frames`` uint8 ``[B, k, H, W, 3]`` (None when not
            decoded), ``predicted_reward`` ``[B]`` float32, ``termination_prob`` ``[B]`` float32.
        """
        with self.autocast():
            latent, state = self.backend.step(state, actions, generator, self.denoise_steps)
            frames = self.backend.decode_step(latent, state) if decode or self.obs_type == "rgb" else None
            reward, term_prob = self.backend.heads(state)
        obs = frames[:, -1] if self.obs_type == "rgb" else self._latent_obs(latent)
        return {"state": state, "obs": np.ascontiguousarray(obs), "frames": frames,
                "predicted_reward": reward, "termination_prob": term_prob}

    @staticmethod
    def _latent_obs(latent: torch.Tensor) -> np.ndarray:
        return latent.float().clamp(-LATENT_BOUND, LATENT_BOUND).cpu().numpy().astype(np.float32)

    def keys_to_actions(self, keys: str) -> np.ndarray:
        """Key DSL -> one action per env step (the key set held on the first frame of each step); see
        :func:`neuralsim.actions.action_string_to_actions`."""
        return act.action_string_to_actions(keys, self.action_spec, self.frames_per_step)


# ----------------------------------------------------------------------------------------------
# The env
# ----------------------------------------------------------------------------------------------


class WorldModelEnv(gym.Env):
    """A dream: a learned latent world model (SANA-WM's architecture) as a Gymnasium environment.

    ## Description

    The dynamics, the pixels, the reward and the end of an episode all come from a world model
    trained on video and actions of a real environment (by default the MuJoCo room of
    ``NeuralSimRoom-v0``; any checkpoint from ``neuralsim train`` works). ``reset`` encodes a start
    frame into the model's constant-size streaming state (or generates the first frame from a text
    prompt); every ``step`` denoises the next latent frame (``frames_per_latent`` video frames, the
    action held for all of them, like Atari frame-skip) in ``denoise_steps`` Euler steps, commits it
    to the state and decodes it. Memory and time per step do not grow with the episode length.

    ## Action Space

    The action space stored in the checkpoint (the world the model learned). For the camera worlds
    of the default model: ``Box(-1.0, 1.0, (4,), float32)``, the canonical camera action
    ``[forward, strafe_right, yaw_right, pitch_up]``; Discrete key-set worlds use
    ``Discrete(11)`` (:data:`neuralsim.actions.DISCRETE_KEYSETS`). ``env.unwrapped.step_keys("w-8,l-16")``
    drives either with SANA-WM's key DSL (one action per env step of ``frames_per_latent`` frames).

    ## Observation Space

    ``obs_type="rgb"`` (default): ``Box(0, 255, (H, W, 3), uint8)``, the last decoded frame of the
    step, ``(H, W) = config.image_size`` (64×64 for the default model). ``obs_type="latent"``:
    ``Box(-1e4, 1e4, (C, h, w), float32)``, the committed latent frame
    (``C = latent_channels``, ``h, w = H, W / spatial_stride``); nothing is decoded unless
    ``render_mode`` is set.

    ``info`` of ``step``: ``"frames"`` (uint8 ``[k, H, W, 3]``, the decoded chunk of the step, when
    decoded), ``"step"`` (int, steps since reset), ``"model"`` (str), ``"predicted_reward"`` (float,
    the model's reward head), ``"termination_prob"`` (float). ``info`` of ``reset``: ``"step"`` (0),
    ``"model"``, ``"prompt"`` (str, empty if none), ``"start_index"`` (int index in the start set, -1
    if the start came from ``options``).

    ## Rewards

    The model's reward head (trained on the real env's rewards), or ``reward_fn(obs, action,
    next_obs, info) -> float`` when given (``info`` holds the predicted reward).

    ## Starting State

    ``reset(seed, options)``: ``options={"image": uint8 (H, W, 3) or (T, H, W, 3)}`` starts from
    that frame or clip (T = 1 + m·k; ``"actions"``: the m actions between its latent frames;
    ``"resize": True`` resizes a differently sized image the way the model's training frames were,
    ``provenance["resize"]``: ``"pad"``, ``"crop"`` or ``"squash"``, or name the mode), ``{"prompt": str}`` generates the first
    frame from text (text-conditioned models), both together condition the image start on the
    prompt. Without either, a frame is drawn with ``self.np_random`` from the checkpoint's start
    set (real frames, with their descriptions as prompt when the model is text-conditioned). All
    sampling noise comes from a ``torch.Generator`` seeded from ``self.np_random`` in ``reset``:
    the same seed and actions give bit-identical frames on a CPU *at the same torch thread count*.
    Another ``num_threads`` may change a rare pixel by one level (measured: the shipped model, a
    4-env batch, 6 steps, 1 vs 2 threads: 6 pixels in a million differ, by 1/255): MKL's matmuls and
    ATen's reductions split their sums by thread, and float addition is not associative (the
    difference stays with oneDNN disabled). Pin ``num_threads`` (or ``OMP_NUM_THREADS``) to reproduce a run.

    ## Episode End

    Terminated when the model's predicted termination probability exceeds 0.5. Truncated after
    ``max_episode_steps`` steps (default 200). ``WorldModelEnv(...)`` truncates itself;
    ``gym.make("SanaWM-v0", max_episode_steps=N)`` leaves it to gymnasium's ``TimeLimit`` (200 unless
    N is given), as for any registered env, so ``env.spec.max_episode_steps`` is the limit.

    ## Arguments

    ```python
    >>> import gymnasium as gym
    >>> import neuralsim
    >>> env = gym.make("SanaWM-v0", render_mode="rgb_array")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, obs.dtype
    ((64, 64, 3), dtype('uint8'))
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> info["frames"].shape[1:], info["step"]
    ((64, 64, 3), 1)
    >>> env.close()

    ```

    * ``model``: a shipped model name (``"default"``), a checkpoint directory (``config.json`` +
      ``model.safetensors`` [+ ``start_frames.safetensors``]), a ``WorldModel`` instance, or
      ``"sana-wm-2.6b"`` (the official SANA-WM through diffusers; needs the ``[sana]`` extra).
    * ``checkpoint``: for ``model="sana-wm-2.6b"``, the directory of its diffusers-format weights.
    * ``obs_type``: ``"rgb"`` or ``"latent"``.
    * ``denoise_steps``: Euler steps per latent frame (default: the model's).
    * ``max_episode_steps``: truncation limit (default 200; None: no limit).
    * ``reward_fn``: ``callable(obs, action, next_obs, info) -> float`` replacing the reward head.
    * ``render_mode``: ``None``, ``"rgb_array"`` (``render()`` returns the last frame) or
      ``"human"`` (a pygame window; needs the ``[play]`` extra).
    * ``device``: ``"cpu"`` (default) or ``"cuda"``.
    * ``dtype``: ``"auto"`` (bf16 autocast only where bf16 is native: CUDA or AVX512-BF16/AMX CPUs;
      fp32 elsewhere), ``"float32"``, ``"bfloat16"``.
    * ``random_weights``: build the named preset (``"default"``, ``"tiny"``, ...) or the official
      architecture with random weights (timing, plumbing).
    * ``num_threads``: torch CPU threads (process-wide). ``"auto"`` (default): ``NEURALSIM_NUM_THREADS``
      if set; else, unless ``OMP_NUM_THREADS`` is set, lower torch's count to half the CPUs (1 to 4),
      which keeps a busy 2-core laptop fast; an int sets it; ``None`` leaves torch alone
      (:func:`neuralsim.runtime.apply_thread_policy`).

    ## Version History

    * v0: initial version.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 15}

    def __init__(
        self,
        model: Any = "default",
        *,
        checkpoint: str | os.PathLike | None = None,
        obs_type: str = "rgb",
        denoise_steps: int | None = None,
        max_episode_steps: int | None = 200,
        reward_fn: RewardFn | None = None,
        render_mode: str | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "auto",
        random_weights: bool = False,
        num_threads: int | str | None = "auto",
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool) or not isinstance(
                max_episode_steps, (int, np.integer)) or max_episode_steps <= 0):
            raise ValueError(f"max_episode_steps must be a positive int or None (no limit), got {max_episode_steps!r}")
        if reward_fn is not None and not callable(reward_fn):
            raise TypeError(f"reward_fn must be callable(obs, action, next_obs, info) -> float, got {type(reward_fn).__name__}")
        self.core = DreamCore(model, checkpoint=checkpoint, obs_type=obs_type, denoise_steps=denoise_steps,
                              device=device, dtype=dtype, random_weights=random_weights, num_threads=num_threads)
        self.render_mode = render_mode
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self._limit_owner: str | None = None  # "env" or "TimeLimit", decided at the first reset
        self.reward_fn = reward_fn
        self.observation_space = self.core.single_observation_space
        self.action_space = self.core.single_action_space
        self._state: Any = None
        self._generator: torch.Generator | None = None
        self._obs: np.ndarray | None = None
        self._frame: np.ndarray | None = None  # last rgb frame, for render()
        self._steps = 0
        self._needs_reset = True
        self._warned_done = False
        self._window: Any = None
        self._clock: Any = None

    # -------------------------------------------------------------------- properties

    @property
    def model(self) -> Any:
        """The world model (``WorldModel`` or ``SanaWMBackend``)."""
        return self.core.backend.model

    @property
    def config(self) -> Any:
        return self.core.config

    @property
    def frames_per_step(self) -> int:
        return self.core.frames_per_step

    # -------------------------------------------------------------------- gym API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        # Options first: a rejected reset must not reseed np_random (the next valid reset() continues as if
        # the failed call never happened), then the usual super().reset(seed=seed).
        parsed = self.core.parse_options(options, 1)
        super().reset(seed=seed)
        if self.spec is not None and self._limit_owner is None:
            # Made by gym.make from an id with a registered limit: gymnasium's TimeLimit (200, or gym.make's
            # max_episode_steps=N; -1 = none) truncates, so this env does not cut episodes itself.
            registered = gym.registry.get(self.spec.id)
            self._limit_owner = "TimeLimit" if registered is not None and registered.max_episode_steps else "env"
            if self._limit_owner == "TimeLimit":
                self.max_episode_steps = None
        generator = self.core.make_generator(self.np_random)
        state, obs, rgb, start_info = self.core.start(1, self.np_random, generator, parsed)
        self._state, self._generator = state, generator
        self._obs, self._frame = obs[0], rgb[0]
        self._steps, self._needs_reset, self._warned_done = 0, False, False
        if self.render_mode == "human":
            self._render_human()
        info = {"step": 0, "model": self.core.model_name, "prompt": start_info["prompt"][0],
                "start_index": int(start_info["start_index"][0])}
        return self._obs.copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self._step(action, decode=self.core.obs_type == "rgb" or self.render_mode is not None)

    def _step(self, action: Any, *, decode: bool) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._state is None:
            raise gym.error.ResetNeeded("WorldModelEnv.step() called before reset(); call env.reset(seed=...) first")
        if self._needs_reset and not self._warned_done:
            gym.logger.warn("step() called after the episode ended (terminated or truncated); the dream goes on, "
                            "but call env.reset() to start a new episode")
            self._warned_done = True
        actions = self.core.check_actions(action, 1, name="action", single=True)
        # Nothing is committed until the step (model and reward_fn) succeeded: an error leaves the episode as it was.
        gen_state = self._generator.get_state()
        try:
            out = self.core.step(self._state, actions, self._generator, decode=decode)
            obs = out["obs"][0]
            term_prob = float(out["termination_prob"][0])
            info: dict[str, Any] = {"step": self._steps + 1, "model": self.core.model_name,
                                    "predicted_reward": float(out["predicted_reward"][0]), "termination_prob": term_prob}
            if out["frames"] is not None:
                info["frames"] = out["frames"][0]
            if self.reward_fn is None:
                reward = info["predicted_reward"]
            else:
                user_action = actions[0] if self.core.action_spec["type"] == "box" else int(actions[0])
                reward = self._user_reward(self._obs, user_action, obs, info)
        except BaseException:
            self._generator.set_state(gen_state)
            raise
        self._state, self._obs = out["state"], obs
        if out["frames"] is not None:
            self._frame = out["frames"][0, -1]
        self._steps += 1
        terminated = term_prob > 0.5
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        self._needs_reset = terminated or truncated
        if self.render_mode == "human":
            self._render_human()
        return self._obs.copy(), reward, terminated, truncated, info

    def _user_reward(self, obs: Any, action: Any, next_obs: Any, info: dict) -> float:
        value = self.reward_fn(obs, action, next_obs, info)  # type: ignore[misc]
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"reward_fn must return a float, got {type(value).__name__}") from None

    def step_keys(self, keys: str) -> tuple[np.ndarray, float, bool, bool, dict, list[np.ndarray]]:
        """Drive a camera (or Discrete key-set) world with SANA-WM's key DSL.

        One action per env step: ``"w-8"`` at ``frames_per_latent=8`` is one step forward; a segment
        shorter than a step is held for the whole step (the key set of each step's first frame).
        Stops early when the episode ends.

        Args:
            keys: e.g. ``"w-16,l-8"`` (w/s forward/back, a/d strafe, j/l yaw, i/k pitch, ``none-N`` idle).

        Returns:
            ``(obs, reward, terminated, truncated, info, frames)`` of the last step, with ``frames`` the
            list of all decoded ``[H, W, 3]`` frames of the steps taken.
        """
        actions = self.core.keys_to_actions(keys)
        if self.core.action_spec["type"] == "box":
            low, high = self.action_space.low, self.action_space.high  # type: ignore[attr-defined]
            actions = np.clip(actions, low, high)
        frames: list[np.ndarray] = []
        result: tuple = ()
        for a in actions:
            result = self._step(a if self.core.action_spec["type"] == "box" else int(a), decode=True)
            frames.extend(list(result[4]["frames"]))
            if result[2] or result[3]:
                break
        return (*result, frames)  # type: ignore[return-value]

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' to gym.make")
            return None
        if self._frame is None:
            return None if self.render_mode == "human" else np.zeros((*self.core.image_size, 3), np.uint8)
        if self.render_mode == "rgb_array":
            return self._frame.copy()
        self._render_human()
        return None

    def _render_human(self) -> None:
        from neuralsim.runtime import quiet_headless_sdl

        quiet_headless_sdl()  # no SDL "XDG_RUNTIME_DIR is invalid" / ALSA noise headless; hides the banner
        try:
            import pygame
        except ImportError as exc:
            raise gym.error.DependencyNotInstalled('render_mode="human" needs pygame: '
                                                   'pip install "neuralsim[play]"') from exc
        if self._frame is None:
            return
        h, w = self.core.image_size
        scale = max(1, 512 // max(h, w))
        if self._window is None:
            pygame.display.init()  # display only: no audio or other subsystems
            self._window = pygame.display.set_mode((w * scale, h * scale))
            pygame.display.set_caption(f"neuralsim dream: {self.core.model_name}")
            self._clock = pygame.time.Clock()
        surface = pygame.surfarray.make_surface(np.repeat(np.repeat(self._frame, scale, 0), scale, 1).swapaxes(0, 1))
        self._window.blit(surface, (0, 0))
        pygame.event.pump()
        pygame.display.flip()
        self._clock.tick(self.metadata["render_fps"])

    def close(self) -> None:
        if self._window is not None:
            import pygame

            pygame.display.quit()
            self._window = None
        self._state = None
        super().close()
