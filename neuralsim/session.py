"""``DreamSession``: one world model dreaming, whoever drives it; ``DreamModel``: what a world model offers.

Every loop that steps a world model goes through a session: ``WorldModelEnv`` (batch 1) and
``WorldModelVectorEnv`` (batch N, partial resets) in ``envs/``, ``neuralsim rollout`` and ``neuralsim play``,
the trainer's sample GIFs and self-forcing rollouts, and ``benchmarks/fidelity.py``. A session loads a model
(a name, a checkpoint directory or an instance), checks start inputs and actions naming the argument, starts
episodes from images, prompts or the checkpoint's start set, steps them with actions or the key DSL (or rolls
``T`` known steps out at once, decoding on a second thread: :meth:`DreamSession.rollout`), decodes, and reads the
reward/termination heads. It holds no episode: states and ``torch.Generator`` s belong to the
caller, so each driver keeps its own seeding (an env's ``np_random``, ``rollout --seed``).

Both model families implement :class:`DreamModel` themselves: :class:`neuralsim.model.WorldModel` (native)
and :class:`neuralsim.sana_wm.SanaWMBackend` (the official SANA-WM through diffusers, extra ``[sana]``).

Example:
    >>> session = DreamSession("default", dtype="float32")
    >>> g = DreamSession.generator(0)
    >>> state, rgb, info = session.start(1, g, rng=np.random.default_rng(0))  # a frame of the start set
    >>> out = session.step(state, session.keys_to_actions("w-1"), g)
    >>> out.frames.shape  # uint8 [B, k, H, W, 3]
    (1, 1, 64, 64, 3)
"""

from __future__ import annotations

import collections
import contextlib
import os
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from neuralsim import actions as act
from neuralsim.checkpoints import OFFICIAL_MODEL_NAME
from neuralsim.decoding import DecodeProcess, show_step, shown_fields
from neuralsim.device import resolve_dtype
from neuralsim.images import RESIZE_MODES, resize_frame
from neuralsim.limits import MAX_DENOISE_STEPS


# ----------------------------------------------------------------------------------------------
# The protocol both model families implement
# ----------------------------------------------------------------------------------------------


@runtime_checkable
class DreamState(Protocol):
    """A rollout state (``WorldState``, ``SanaWMState``); ``step`` returns a new one and never mutates its input."""

    @property
    def batch_size(self) -> int: ...

    @property
    def latent(self) -> torch.Tensor:
        """The last committed latent frame ``[B, C, h, w]``."""

    def merge(self, mask: Any, other: Any) -> Any:
        """Rows of ``other`` where ``mask`` (bool ``[B]``) is True, of this state elsewhere; ``other`` has ``B`` rows
        or one per True of ``mask`` (a partial reset). Raises ``NotImplementedError`` where rows cannot mix."""


@runtime_checkable
class DreamModel(Protocol):
    """A world model a session can serve; one latent layout (``[B, T, C, h, w]``, one step ``[B, C, h, w]``).

    Attributes:
        config: ``image_size`` ``(H, W)``, ``frames_per_latent`` k, ``latent_channels``, ``latent_size``
            ``(h, w)``, ``denoise_steps``, ``provenance`` (dict: how its data was collected).
        uses_autocast: the session runs it under ``torch.autocast`` for a lower ``dtype`` (False: it was cast).
        can_generate_start: ``init_state`` works without frames (from a prompt, or unconditionally).
    """

    config: Any
    uses_autocast: bool
    can_generate_start: bool

    @property
    def device(self) -> torch.device: ...

    @property
    def action_spec(self) -> dict:
        """The action space as a :mod:`neuralsim.actions` spec."""

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of one latent frame."""

    @property
    def text_conditioned(self) -> bool:
        """Prompts are accepted."""

    def encode(self, frames: Any) -> torch.Tensor:
        """uint8 ``[B, T, H, W, 3]`` (``T = 1 + n*k``) -> latents ``[B, 1 + n, C, h, w]``."""

    def init_state(self, batch_size: int, frames: Any = None, actions: Any = None, prompt: Any = None,
                   generator: torch.Generator | None = None, denoise_steps: int | None = None) -> Any:
        """Start ``batch_size`` rollouts from frames (``actions``: ``[B, n, ...]``, one per env step between the
        latent frames of the clip) or, where ``can_generate_start``, from nothing."""

    def step(self, state: Any, actions: Any, generator: torch.Generator | None = None,
             denoise_steps: int | None = None) -> tuple[torch.Tensor, Any]:
        """One env step (``actions``: ``[B, ...]`` of the action space) -> ``(latent [B, C, h, w], new state)``."""

    def decode(self, latents: torch.Tensor, *, first_frame: bool = True, context: Any = None) -> torch.Tensor:
        """Latents ``[B, T, C, h, w]`` -> uint8 ``[B, F, H, W, 3]`` (torch); ``first_frame``: the first latent is a
        lone frame (``F = 1 + (T-1)k``), else ``F = T*k``; ``context``: the state ``step`` returned with them."""

    def predict_reward_termination(self, state: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reward [B], termination probability [B])`` of the last committed frame (zeros without heads)."""


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def known_model_names() -> list[str]:
    """Every name ``model=`` accepts as a string that is not a directory."""
    from neuralsim.checkpoints import available_models

    return sorted(set(available_models()) | {OFFICIAL_MODEL_NAME})


def load_model(model: Any, *, checkpoint: str | os.PathLike | None = None, random_weights: bool = False,
               device: torch.device | None = None, dtype: torch.dtype = torch.float32
               ) -> tuple[DreamModel, str, Path | None]:
    """Build a :class:`DreamModel` from a name, a directory or an instance.

    Args:
        model: a ``WorldModel``/``SanaWMBackend`` instance, a checkpoint directory, a shipped model name
            (``"default"``), or ``"sana-wm-2.6b"`` (the official model through diffusers).
        checkpoint: the diffusers-format directory of ``"sana-wm-2.6b"``.
        random_weights: build the named preset (or the official architecture) with random weights.
        device: where the model runs (None: an instance stays where it is; names load on the CPU).
        dtype: the precision the official model is cast to (the native one stays fp32 and is autocast).

    Returns:
        ``(model, name, checkpoint directory or None)``.
    """
    if not isinstance(random_weights, bool):
        raise TypeError(f"random_weights must be a bool, got {type(random_weights).__name__}")
    if not isinstance(model, (str, os.PathLike)):
        if not isinstance(model, DreamModel):
            raise TypeError(f"model must be a model name, a checkpoint directory or a WorldModel instance, "
                            f"got {type(model).__name__}")
        if checkpoint is not None or random_weights:
            raise ValueError("checkpoint= and random_weights= are for model names; got a model instance")
        if isinstance(model, torch.nn.Module):  # the native WorldModel follows the session's device
            return model.to(device or model.device).eval(), type(model).__name__, None
        return model, OFFICIAL_MODEL_NAME, None  # SanaWMBackend: placed and cast when it was built
    device = torch.device("cpu") if device is None else device
    text = os.fspath(model)
    if text == OFFICIAL_MODEL_NAME:
        return _load_official(checkpoint, random_weights, device, dtype), OFFICIAL_MODEL_NAME, None
    if checkpoint is not None:
        raise ValueError(f"checkpoint= is only for model={OFFICIAL_MODEL_NAME!r}; for model={text!r} pass the "
                         "directory as model=DIR")

    from neuralsim.checkpoints import ASSETS_DIR, DEFAULT_MODEL_MISSING, default_model_missing, resolve_checkpoint
    from neuralsim.model import WorldModel

    if random_weights:
        from neuralsim.config import PRESETS, WorldModelConfig

        if text not in PRESETS:
            raise ValueError(f"model={text!r} with random_weights=True must be a preset name, one of {sorted(PRESETS)} "
                             f"(or {OFFICIAL_MODEL_NAME!r})")
        with torch.random.fork_rng(devices=[]):  # init draws from the global RNG: seed a private copy of it
            torch.manual_seed(0)
            native = WorldModel(WorldModelConfig.from_preset(text))
        return native.to(device).eval(), f"{text} (random weights)", None

    path = Path(text)
    if not path.exists():
        if default_model_missing(text):
            raise ValueError(f"model='default': {DEFAULT_MODEL_MISSING}; pass model=DIR (a checkpoint from `neuralsim "
                             "train`), or random_weights=True to run the default architecture untrained")
        if os.sep not in text and not text.startswith(".") and not (ASSETS_DIR / text).is_dir():
            raise ValueError(f"model={text!r} is neither a checkpoint directory nor a known model name; "
                             f"known models: {known_model_names()}")
    path = resolve_checkpoint(text, "model")
    return WorldModel.from_pretrained(path, device=device).eval(), text, path


def _load_official(checkpoint: Any, random_weights: bool, device: torch.device, dtype: torch.dtype) -> Any:
    if checkpoint is None and not random_weights:
        raise ValueError(f"model={OFFICIAL_MODEL_NAME!r} needs checkpoint=DIR (the official weights in diffusers "
                         "format, e.g. a local copy of Efficient-Large-Model/SANA-WM_bidirectional-diffusers), or "
                         "random_weights=True to run the architecture with random weights (timing and plumbing only)")
    if checkpoint is not None and random_weights:
        raise ValueError("pass either checkpoint=DIR or random_weights=True, not both")
    try:
        from neuralsim.sana_wm import SanaWMBackend
    except ImportError as exc:
        raise ImportError(f"model={OFFICIAL_MODEL_NAME!r} needs the [sana] extra: pip install 'neuralsim[sana]' "
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
    mode = config.provenance.get("resize") if isinstance(config.provenance, dict) else None
    return mode if mode in RESIZE_MODES else "squash"


def load_start_set(path: Path | None, image_size: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
    """The start frames shipped with a checkpoint (uint8 ``[N, H, W, 3]``, resized if needed) and their descriptions."""
    empty = np.zeros((0, *image_size, 3), dtype=np.uint8)
    if path is None:
        return empty, []
    from neuralsim.checkpoints import START_FRAMES_NAME, read_start_frames

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
# Input checks
# ----------------------------------------------------------------------------------------------


def check_image(image: Any, image_size: tuple[int, int], *, resize: bool | str, name: str = "image",
                max_ndim: int = 5) -> np.ndarray:
    """Validate a start image: uint8 ``[..., H, W, 3]`` with 3 to ``max_ndim`` dims.

    Args:
        resize: ``False`` (a differently sized image is an error), ``True`` (squash) or a mode of
            :func:`neuralsim.images.resize_frame` (``"pad"``, ``"crop"``, ``"squash"``).

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
        mode = "squash" if resize is True else str(resize)
        if mode not in RESIZE_MODES:
            raise ValueError(f"options['resize'] must be a bool or one of {', '.join(RESIZE_MODES)}, got {resize!r}")
        flat = image.reshape(-1, *image.shape[-3:])
        image = np.stack([resize_frame(f, image_size, mode=mode) for f in flat]).reshape(*image.shape[:-3], *image_size, 3)
    return np.ascontiguousarray(image)


def check_prompts(prompt: Any, batch_size: int, name: str = "prompt") -> list[str]:
    """A str (for every row) or a list of ``batch_size`` str -> list of cleaned prompts."""
    from neuralsim.text import validate_prompts

    if not isinstance(prompt, (str, list, tuple)):
        raise TypeError(f"{name} must be a str{' or a list of str' if batch_size > 1 else ''}, got {type(prompt).__name__}")
    prompts = validate_prompts(list(prompt) if isinstance(prompt, tuple) else prompt, batch_size, name=name)
    if prompts is None or any(p is None for p in prompts):
        raise TypeError(f"{name} must hold str prompts, got None")
    return prompts  # type: ignore[return-value]


@dataclass
class StartInputs:
    """Checked inputs of :meth:`DreamSession.start` (each may be None).

    Attributes:
        image: uint8 ``[B, T, H, W, 3]``, ``T = 1 + n*k``. prompts: B str. actions: ``[B, n, A]`` / ``[B, n]``.
    """

    image: np.ndarray | None = None
    prompts: list[str] | None = None
    actions: np.ndarray | None = None


@dataclass
class DreamStep:
    """What :meth:`DreamSession.step` returns for a batch of B.

    Attributes:
        state: the new state. latent: ``[B, C, h, w]`` (torch). frames: uint8 ``[B, k, H, W, 3]`` or None when not
        decoded. reward, termination_prob: ``[B]`` float32 from the model's heads.
    """

    state: Any
    latent: torch.Tensor
    frames: np.ndarray | None
    reward: np.ndarray
    termination_prob: np.ndarray


@dataclass
class DreamRollout:
    """What :meth:`DreamSession.rollout` returns for a batch of B over T steps.

    Attributes:
        state: the state after the last step (as :meth:`DreamSession.step` returns it). latents: ``[B, T, C, h, w]``
        (torch). frames: uint8 ``[B, T*k, H, W, 3]`` or None when not decoded. rewards, termination_prob: ``[B, T]``
        float32.
    """

    state: Any
    latents: torch.Tensor
    frames: np.ndarray | None
    rewards: np.ndarray
    termination_prob: np.ndarray


#: Steps :meth:`DreamSession.rollout`'s decoding thread may fall behind the dynamics (each holds a state).
_ROLLOUT_AHEAD = 16
#: ``overlap="process"``: steps sent ahead to the child (so it never waits for the next), the others wait for whichever
#: process is free first.
_CHILD_QUEUE = 4

# ----------------------------------------------------------------------------------------------
# The session
# ----------------------------------------------------------------------------------------------


class DreamSession:
    """A world model ready to dream batches of episodes: loading, checked inputs, start, step, decode, heads.

    Args:
        model: a shipped model name (``"default"``), a checkpoint directory, a :class:`DreamModel` instance
            (``WorldModel`` or ``SanaWMBackend``), or ``"sana-wm-2.6b"`` (the official model; ``checkpoint=DIR``).
        checkpoint: for ``model="sana-wm-2.6b"``, the directory of its diffusers-format weights.
        denoise_steps: Euler steps per latent frame for :meth:`start` and :meth:`step` (None: the model's).
        device: ``"cpu"``, ``"cuda"``, ... (None: an instance's own device, the CPU for names).
        dtype: ``"auto"`` (bf16 only where native), ``"float32"``, ``"bfloat16"``: autocast for the native model,
            the cast of the official one.
        batch_size: the batch the session will step, if known (the envs pass theirs): for the native model,
            ``dtype="auto"`` on a CPU then stays fp32 below :data:`neuralsim.device.AUTO_BF16_MIN_BATCH_CPU` rows,
            where bf16 is slower (:func:`neuralsim.device.resolve_dtype`). None: bf16 wherever native.
        random_weights: build the named preset or the official architecture with random weights.
        num_threads: torch CPU threads (:func:`neuralsim.runtime.apply_thread_policy`; None leaves torch alone).
        compile: run the native model's per-frame pass through ``torch.compile``
            (:meth:`neuralsim.model.WorldModel.compile_streaming`): a single env's step 1.5x as fast, 16 envs' up to
            1.1x, 64 envs' no faster (fp32, measured), after 15-60 s of compiling at the first step of each batch size;
            needs a C++ compiler.

    Attributes:
        model, model_name, checkpoint_dir, config, image_size ``(H, W)``, frames_per_step k, action_spec,
        action_space, latent_shape ``(C, h, w)``, start_frames uint8 ``[N, H, W, 3]``, start_descriptions.
    """

    def __init__(self, model: Any = "default", *, checkpoint: str | os.PathLike | None = None,
                 denoise_steps: int | None = None, device: str | torch.device | None = None,
                 dtype: str | torch.dtype = "auto", random_weights: bool = False,
                 num_threads: int | str | None = None, batch_size: int | None = None, compile: bool = False) -> None:
        from neuralsim.runtime import apply_thread_policy

        apply_thread_policy(num_threads)  # validates num_threads; see neuralsim.runtime
        try:
            dev = None if device is None else torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must be a torch device like 'cpu' or 'cuda:0', got {device!r}") from exc
        if dev is not None and dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r} but CUDA is not available here; use device='cpu'")
        self.denoise_steps = self._check_denoise_steps(denoise_steps)
        # Whether a start with a prompt draws the views around it (a model with a view generator): they only show in
        # decoded frames, so an env that never decodes (latent observations, no render_mode) turns this off.
        self.draw_views = True
        # Whether a model's termination detector judges each step's frame (see judges_frames); False falls back to the
        # reward model's own ending and skips the decode where nothing else needs the frames (latent observations).
        self.judge_frames = True
        if not isinstance(compile, (bool, np.bool_)):
            raise TypeError(f"compile must be a bool, got {compile!r}")
        probe = dev or (model.device if isinstance(model, DreamModel) else torch.device("cpu"))
        self.dtype = resolve_dtype(dtype, probe)
        batch_dtype = resolve_dtype(dtype, probe, batch_size=batch_size)  # (checks batch_size)
        self.model, self.model_name, self.checkpoint_dir = load_model(
            model, checkpoint=checkpoint, random_weights=random_weights, device=dev, dtype=self.dtype)
        self.device = self.model.device
        if compile:
            if not hasattr(self.model, "compile_streaming"):
                raise ValueError(f"compile=True is for the native WorldModel; {type(self.model).__name__} has no "
                                 "compiled path (use compile=False)")
            self.model.compile_streaming(True)
        if self.model.uses_autocast:  # autocast picks the dtype per call; a cast model keeps the one it was loaded in
            self.dtype = batch_dtype
        self.random_weights = random_weights
        cfg = self.config = self.model.config
        self.image_size: tuple[int, int] = tuple(int(s) for s in cfg.image_size)  # type: ignore[assignment]
        self.frames_per_step = int(cfg.frames_per_latent)
        self.action_spec = dict(self.model.action_spec)
        self.action_space = act.spec_to_space(self.action_spec)
        self.latent_shape: tuple[int, int, int] = tuple(int(s) for s in self.model.latent_shape)  # type: ignore[assignment]
        self.start_frames, self.start_descriptions = load_start_set(self.checkpoint_dir, self.image_size)
        self._decoder: DecodeProcess | None = None  # rollout(overlap="process")'s child, started by the first one
        self._decoder_finalizer: weakref.finalize | None = None

    def set_start_set(self, frames: Any, descriptions: Sequence[str] | None = None) -> None:
        """Replace the start set resets draw from (the checkpoint's ``start_frames.safetensors``) with ``frames``,
        uint8 ``[N, H, W, 3]`` (resized to the model's size like the checkpoint's set), and their ``descriptions``
        (N str, the prompts of a text-conditioned model; None: none)."""
        if isinstance(frames, torch.Tensor):
            frames = frames.detach().cpu().numpy()
        expected = f"a uint8 numpy array (N, H, W, 3) of N >= 1 frames (the model's H, W = {self.image_size})"
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
            raise TypeError(f"start_frames must be {expected}, got "
                            f"{getattr(frames, 'dtype', type(frames).__name__)}")
        if frames.ndim != 4 or frames.shape[-1] != 3 or not all(frames.shape):
            raise ValueError(f"start_frames must be {expected}, got shape {frames.shape}")
        if descriptions is None:
            descriptions = [""] * len(frames)
        if isinstance(descriptions, str) or not all(isinstance(d, str) for d in descriptions) \
                or len(descriptions) != len(frames):
            raise ValueError(f"start_descriptions must be a list of {len(frames)} str (one per start frame), got "
                             f"{descriptions!r:.80}")
        if tuple(frames.shape[1:3]) != self.image_size:
            frames = np.stack([resize_frame(f, self.image_size) for f in frames])
        self.start_frames, self.start_descriptions = np.ascontiguousarray(frames), [str(d) for d in descriptions]

    @staticmethod
    def _check_denoise_steps(denoise_steps: Any, name: str = "denoise_steps") -> int | None:
        if denoise_steps is not None and (isinstance(denoise_steps, bool) or not isinstance(denoise_steps, (int, np.integer))
                                          or not 0 < denoise_steps <= MAX_DENOISE_STEPS):
            raise ValueError(f"{name} must be an int in [1, {MAX_DENOISE_STEPS}] or None (the model's default), "
                             f"got {denoise_steps!r}")
        return None if denoise_steps is None else int(denoise_steps)

    @property
    def text_conditioned(self) -> bool:
        return self.model.text_conditioned

    @property
    def judges_frames(self) -> bool:
        """Whether the model's termination detector judges each step's decoded frame (:meth:`step` then decodes every
        step, even where ``decode=False``: the termination and the bonus come from the frame the dream draws). Set
        :attr:`judge_frames` False to end episodes by the reward model's own estimate instead, without decoding (the
        envs do for latent observations)."""
        return self.judge_frames and getattr(self.model, "termination_detector", None) is not None

    @property
    def resize_mode(self) -> str:
        """How real frames became the model's ``image_size`` when its dataset was collected (``"squash"`` if unrecorded)."""
        return resize_mode_of(self.config)

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` to ``dtype`` for a native model below fp32; nothing for fp32 or a cast model."""
        if self.dtype == torch.float32 or not self.model.uses_autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @staticmethod
    def generator(seed: int | np.random.Generator) -> torch.Generator:
        """A CPU torch generator (CPU so seeds agree across devices): ``manual_seed(seed)`` for an int, seeded with
        one draw from ``seed`` for a numpy generator (an env's ``np_random``)."""
        if isinstance(seed, np.random.Generator):
            seed = int(seed.integers(0, 2**63 - 1))
        return torch.Generator().manual_seed(int(seed))

    # -------------------------------------------------------------------- inputs

    def check_actions(self, actions: Any, batch_size: int, name: str = "actions", *, single: bool = False) -> np.ndarray:
        """Validated batch: ``[B, A]`` float32 (Box) or ``[B]`` int64 (Discrete); raises naming ``name``.

        ``single=True``: ``actions`` is one element of the action space (batch 1, no batch axis).
        """
        space = self.action_space
        if isinstance(actions, (str, bytes)):
            raise TypeError(f"{name} must be an element of the action space {space}, got a str; "
                            "for key-DSL strings use env.unwrapped.step_keys('w-8')")
        if actions is None:
            raise TypeError(f"{name} must be an element of the action space {space}, got None")
        arr = np.asarray(actions.detach().cpu() if isinstance(actions, torch.Tensor) else actions)
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

    def keys_to_actions(self, keys: str) -> np.ndarray:
        """Key DSL -> one action per env step (the key set held on the first frame of each step); see
        :func:`neuralsim.actions.action_string_to_actions`."""
        return act.action_string_to_actions(keys, self.action_spec, self.frames_per_step)

    def check_start(self, batch_size: int, *, image: Any = None, prompt: Any = None, actions: Any = None,
                    resize: bool | str = False, max_ndim: int = 5, names: str = "{}") -> StartInputs:
        """Check the inputs of :meth:`start` for ``batch_size`` rows, raising errors that name them.

        Args:
            image: uint8 ``(H, W, 3)`` (every row), ``(T, H, W, 3)`` (batch 1: a clip of ``T = 1 + n*k`` frames;
                else one frame per row), or ``(B, T, H, W, 3)``.
            prompt: a str (every row) or B str. actions: ``(n, ...)`` or ``(B, n, ...)``, the n actions between the
                latent frames of the clip. resize: fit an image of another size (False, True = squash, or a mode).
            max_ndim: the most dims ``image`` may have. names: how to name an argument in errors (``"{}"``;
                the env: ``"options[{!r}]"``).
        """
        image_name, k = names.format("image"), self.frames_per_step
        if image is not None:
            image = check_image(image, self.image_size, resize=resize, name=image_name, max_ndim=max_ndim)
            if batch_size == 1 and image.ndim <= 4:
                image = image.reshape(1, -1, *image.shape[-3:])  # [1, T, H, W, 3]
            elif image.ndim == 3:
                image = np.ascontiguousarray(np.broadcast_to(image, (batch_size, 1, *image.shape)))
            elif image.shape[0] != batch_size:
                raise ValueError(f"{image_name} must be (H, W, 3) for every env being reset, or one per env: "
                                 f"({batch_size}, H, W, 3) or ({batch_size}, T, H, W, 3); got shape {image.shape}")
            else:
                image = image.reshape(batch_size, -1, *image.shape[-3:])
            if (image.shape[1] - 1) % k:
                raise ValueError(f"{image_name} has T={image.shape[1]} frames; a context clip must have 1 + n*{k} "
                                 f"frames (the first frame alone, then whole env steps of {k} frames)")
        prompts = None
        if prompt is not None:
            if not self.text_conditioned:
                raise ValueError(f"{names.format('prompt')} given but model {self.model_name!r} has no text "
                                 "conditioning; start from options={'image': frame} instead")
            prompts = check_prompts(prompt, batch_size, name=names.format("prompt"))
        if actions is not None:
            if image is None or image.shape[1] == 1:
                raise ValueError(f"{names.format('actions')} are the actions between the frames of a context clip; "
                                 f"pass {image_name} as (T, H, W, 3) with T = 1 + n*{k} frames too")
            n = (image.shape[1] - 1) // k
            arr = np.asarray(actions.detach().cpu() if isinstance(actions, torch.Tensor) else actions)
            per = () if self.action_spec["type"] == "discrete" else self.action_space.shape
            if arr.shape == (n, *per):
                arr = np.broadcast_to(arr, (batch_size, n, *per))
            if arr.shape != (batch_size, n, *per):
                raise ValueError(f"{names.format('actions')} must have shape {(n, *per)} (one action per env step of "
                                 f"the context clip{', for every env' if batch_size > 1 else ''}), got shape {arr.shape}")
            flat = self.check_actions(arr.reshape(batch_size * n, *per), batch_size * n, name=names.format("actions"))
            actions = flat.reshape(batch_size, n, *flat.shape[1:])
        if prompts is None and image is None and not self.model.can_generate_start and not len(self.start_frames) \
                and not self.random_weights:
            raise ValueError(f"model {self.model_name!r} needs a start frame: reset(options={{'image': frame}})")
        return StartInputs(image, prompts, actions)

    # -------------------------------------------------------------------- the dream

    @torch.inference_mode()
    def start(self, batch_size: int, generator: torch.Generator, inputs: StartInputs | None = None, *,
              image: Any = None, prompt: Any = None, actions: Any = None, latents: torch.Tensor | None = None,
              rng: np.random.Generator | None = None) -> tuple[Any, np.ndarray | None, dict]:
        """Start ``batch_size`` episodes from an image, a prompt, latents, or a frame of the start set.

        Args:
            generator: the noise of the episodes (a generated first frame, context noise).
            inputs: from :meth:`check_start`; else ``image``, ``prompt``, ``actions`` are checked here (as there).
            latents: the context as normalised latents ``[B, T_lat, C, h, w]`` instead of frames (native models).
            rng: draws the start-set frame of each row when there is neither image, prompt nor latents (and the
                noise picture of a random-weights model that cannot generate its start).

        Returns:
            ``(state, rgb [B, H, W, 3] uint8 or None for latents, info)``; ``info`` has ``"start_index"`` (``[B]``,
            -1 where not from the start set) and ``"prompt"`` (B str, empty where none).
        """
        if latents is not None:  # the model checks latents and prompts (one per row, None = no prompt)
            inputs = StartInputs(None, prompt)
        elif inputs is None:
            inputs = self.check_start(batch_size, image=image, prompt=prompt, actions=actions)
        image, prompts = inputs.image, inputs.prompts
        index = np.full(batch_size, -1, dtype=np.int64)
        if image is None and prompts is None and latents is None:
            if rng is None:
                raise ValueError("a start without image, prompt or latents needs rng= (a numpy Generator: it draws "
                                 "the start-set frame of each row)")
            if len(self.start_frames):
                index = rng.integers(0, len(self.start_frames), size=batch_size)
                image = self.start_frames[index][:, None]  # [B, 1, H, W, 3]
                if self.text_conditioned and len(self.start_descriptions) == len(self.start_frames):
                    described = [self.start_descriptions[i] for i in index]
                    prompts = described if all(p.strip() for p in described) else None
            elif not self.model.can_generate_start:  # random weights, no start set: a noise picture
                image = rng.integers(0, 256, (batch_size, 1, *self.image_size, 3), dtype=np.uint8)
        # a model with a view generator draws the views around a prompted start unless told no (draw_views)
        views = {"views": self.draw_views} if getattr(self.model, "prompt_views", None) is not None else {}
        with self.autocast():
            if latents is not None:
                state = self.model.init_state(batch_size, latents=latents, prompt=prompts, generator=generator,
                                              denoise_steps=self.denoise_steps, **views)
            else:
                state = self.model.init_state(batch_size, frames=image, actions=inputs.actions, prompt=prompts,
                                              generator=generator, denoise_steps=self.denoise_steps, **views)
            rgb = np.ascontiguousarray(image[:, -1]) if image is not None else \
                None if latents is not None else self.decode(state.latent[:, None], first_frame=True)[:, -1]
        return state, rgb, {"start_index": index, "prompt": prompts or [""] * batch_size}

    @torch.inference_mode()
    def step(self, state: Any, actions: Any, generator: torch.Generator, *, decode: bool = True,
             denoise_steps: int | None = None) -> DreamStep:
        """One env step of the whole batch.

        Args:
            actions: ``[B, A]`` (Box) or ``[B]`` (Discrete), checked as :meth:`check_actions`.
            decode: decode the step's frames (a model with a termination detector decodes them anyway:
                :attr:`judges_frames`). denoise_steps: this step's Euler steps (None: the session's).
        """
        actions = self.check_actions(actions, state.batch_size)
        steps = self.denoise_steps if denoise_steps is None else self._check_denoise_steps(denoise_steps)
        with self.autocast():
            latent, state = self.model.step(state, actions, generator=generator, denoise_steps=steps)
            state, frames, reward, term = self._show(latent, state, decode)
        return DreamStep(state, latent, frames, reward, term)

    def _show(self, latent: torch.Tensor, state: Any, decode: bool
              ) -> tuple[Any, np.ndarray | None, np.ndarray, np.ndarray]:
        """What a step shows after the dynamics (under the caller's inference mode and autocast): ``(state judged,
        frames or None, reward, termination probability)``. A model with a termination detector decodes anyway and
        judges the frame the dream draws."""
        return show_step(self.model, latent, state, decode, self.judges_frames)

    def rollout(self, state: Any, actions: Any, generator: torch.Generator, *, decode: bool = True,
                denoise_steps: int | None = None, overlap: bool | str = True) -> DreamRollout:
        """``T`` env steps of the whole batch, each as :meth:`step` gives it (the same frames, rewards and
        termination probabilities, bit for bit, and the same noise drawn from ``generator``).

        The dynamics never reads a decoded frame (the frame memory and the termination detector only act on what
        is shown), so with ``overlap`` each step's frames are decoded and judged beside the dynamics drawing the
        next steps. An env cannot do this: its agent needs each frame before it picks the next action.

        Args:
            state: from :meth:`start` or a previous step (not modified).
            actions: ``[B, T, A]`` (Box) or ``[B, T]`` (Discrete); step ``t`` is checked as :meth:`check_actions`
                checks ``actions[:, t]``.
            decode: decode the frames (a model with a termination detector decodes them anyway to judge them).
            denoise_steps: Euler steps of every step (None: the session's).
            overlap: where the frames are decoded and judged. ``"thread"`` (or True): on a second thread; the two
                threads share Python's GIL, so on two cores the shipped model's 1,440-frame rollout is 1.37x as fast
                as a ``gym.make`` env's, not 2x. ``"process"``: in a child process that the session starts at its
                first such rollout and keeps until :meth:`close` (a native model on the CPU only; its weights are
                sent at every rollout): the child shows the steps it can take while the dynamics runs (its start
                takes 2-4 s), and this process shows the others after the last step. False: on the calling
                thread, in order (``benchmarks/long_rollout.py``; docs/performance.md sections 14-16).

        Returns:
            A :class:`DreamRollout`: the state after the last step, latents ``[B, T, C, h, w]``, frames uint8
            ``[B, T*k, H, W, 3]`` (None when not decoded), rewards and termination probabilities ``[B, T]``.

        Raises:
            ValueError: ``actions`` of another shape, or a step's actions outside the action space (naming it);
                ``overlap`` not one of its forms, or ``"process"`` for a model other than a native one on the CPU.
            FloatingPointError: as :meth:`step`, from the dynamics or the decoding.
        """
        from neuralsim.model import WorldModel

        arr = np.asarray(actions.detach().cpu() if isinstance(actions, torch.Tensor) else actions)
        want = 3 if self.action_spec["type"] == "box" else 2
        if arr.ndim != want or arr.shape[0] != state.batch_size or arr.shape[1] < 1:
            form = "[B, T, A] (Box)" if want == 3 else "[B, T] (Discrete)"
            raise ValueError(f"actions must be {form} with B = {state.batch_size} rows and T >= 1 steps, got shape "
                             f"{arr.shape}")
        if not (isinstance(overlap, bool) or overlap in ("thread", "process")):
            raise ValueError(f'overlap must be True, False, "thread" or "process", got {overlap!r}')
        mode = ("thread" if overlap else None) if isinstance(overlap, bool) else overlap
        if mode == "process" and not (isinstance(self.model, WorldModel) and self.device.type == "cpu"):
            raise ValueError(f'overlap="process" is for a native WorldModel on the CPU; this session holds a '
                             f'{type(self.model).__name__} on {self.device.type!r} (use overlap="thread")')
        steps = self.denoise_steps if denoise_steps is None else self._check_denoise_steps(denoise_steps)
        decode = decode or self.judges_frames
        mode = mode if decode else None
        device = self.device.type  # a caller's own autocast (a benchmark's precision) holds for the decoding too
        cast, casting = torch.get_autocast_dtype(device), torch.is_autocast_enabled(device)
        def show(latent: torch.Tensor, stepped: Any, last: bool) -> tuple[Any, np.ndarray | None, np.ndarray, np.ndarray]:
            # inference mode and autocast are per thread, so entered here; only the last judged state is kept
            with torch.inference_mode(), torch.autocast(device, dtype=cast, enabled=casting), self.autocast():
                stepped, frames, reward, term = self._show(latent, stepped, decode)
            return stepped if last else None, frames, reward, term

        if mode == "process":
            return self._rollout_in_process(state, arr, generator, steps, (cast, casting), show)

        pending: list[Any] = []  # per step: (the last step's judged state, frames, reward, termination), or its future
        latents = []
        with contextlib.ExitStack() as stack:
            pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="neuralsim-decode")) \
                if mode == "thread" else None
            for t in range(arr.shape[1]):
                latent, state = self._rollout_step(state, arr, t, generator, steps)
                latents.append(latent)
                last = t == arr.shape[1] - 1
                pending.append(pool.submit(show, latent, state, last) if pool is not None else show(latent, state, last))
                if pool is not None and len(pending) > _ROLLOUT_AHEAD:  # bound the states held for the decoder
                    pending[-_ROLLOUT_AHEAD - 1].result()
            shown = [p.result() if isinstance(p, Future) else p for p in pending]
        return self._rollout_result(latents, shown, decode)

    def _rollout_step(self, state: Any, arr: np.ndarray, t: int, generator: torch.Generator, steps: int | None
                      ) -> tuple[torch.Tensor, Any]:
        checked = self.check_actions(arr[:, t], state.batch_size, name=f"actions[:, {t}]")
        with torch.inference_mode(), self.autocast():
            return self.model.step(state, checked, generator=generator, denoise_steps=steps)

    @staticmethod
    def _rollout_result(latents: list[torch.Tensor], shown: list[tuple], decode: bool) -> DreamRollout:
        frames = np.concatenate([f for _, f, _, _ in shown], axis=1) if decode else None
        return DreamRollout(shown[-1][0], torch.stack(latents, 1), frames,  # the last state as `step` returns it
                            np.stack([r for _, _, r, _ in shown], 1), np.stack([p for _, _, _, p in shown], 1))

    def _rollout_in_process(self, state: Any, arr: np.ndarray, generator: torch.Generator, steps: int | None,
                            caller_cast: tuple[torch.dtype, bool], show: Callable) -> DreamRollout:
        """:meth:`rollout` with the showing in the session's child process (:class:`neuralsim.decoding.DecodeProcess`);
        ``show`` shows a step here, as the in-order path does."""
        if getattr(self, "_decoder", None) is None or not self._decoder.alive:
            self.close()
            self._decoder = DecodeProcess()
            self._decoder_finalizer = weakref.finalize(self, self._decoder.close)
        worker = self._decoder
        casts = [caller_cast[0]] if caller_cast[1] else []
        if self.dtype != torch.float32 and self.model.uses_autocast:  # as self.autocast()
            casts.append(self.dtype)
        try:
            worker.begin(self.model, judge=self.judges_frames, autocast=casts)
            # The steps' showings are independent of each other, so the two processes share them. While the
            # dynamics runs, each step waits in `waiting` and the child (once ready: its start takes 2-4 s, importing
            # torch) is kept `_CHILD_QUEUE` steps ahead; after the last step this process shows the waiting steps
            # from the end while the child goes on from the front. So neither core idles, whichever half is slower:
            # where the showing is faster than the dynamics, the child catches up on its start and the rollout takes
            # the dynamics' time. The same frames either way (the same show_step, weights and autocast). A waiting
            # step holds only its latent and the fields the showing reads (a few KB; the frame memory's tensors are
            # shared by several steps); the child is sent the same, and only the last state is judged whole.
            T = arr.shape[1]
            latents, shown = [], [None] * T
            waiting, in_child = collections.deque(), collections.deque()  # (t, latent, state); t sent, unanswered

            def exchange(last_state: Any) -> None:
                while in_child and worker.answered():  # those in already (an error in the child stops the rollout)
                    t = in_child.popleft()
                    shown[t] = worker.result(last_state if t == T - 1 else None)
                while waiting and len(in_child) < _CHILD_QUEUE and worker.ready():
                    t, latent, stepped = waiting.popleft()
                    worker.submit(latent, stepped)
                    in_child.append(t)

            for t in range(T):
                latent, state = self._rollout_step(state, arr, t, generator, steps)
                latents.append(latent)
                waiting.append((t, latent, state if t == T - 1 else shown_fields(state)))
                exchange(state)
            while waiting:
                exchange(state)
                if waiting:
                    t, latent, stepped = waiting.pop()
                    shown[t] = show(latent, stepped, t == T - 1)
            while in_child:
                t = in_child.popleft()
                shown[t] = worker.result(state if t == T - 1 else None)
        except BaseException:
            # its answers to the steps after an error would come out of order at the next rollout: ended at once
            self.close(now=True)
            raise
        return self._rollout_result(latents, shown, True)

    def close(self, *, now: bool = False) -> None:
        """End the child process of :meth:`rollout` with ``overlap="process"``, if one was started (idempotent; the
        session stays usable and starts another when asked); ``now``: kill it rather than let it finish its work."""
        if getattr(self, "_decoder", None) is not None:
            self._decoder_finalizer.detach()
            self._decoder.close(now=now)
            self._decoder = None

    def decode(self, latents: torch.Tensor, *, first_frame: bool = True, context: Any = None) -> np.ndarray:
        """Latents ``[B, T, C, h, w]`` -> uint8 ``[B, F, H, W, 3]`` numpy (see :meth:`DreamModel.decode`)."""
        with self.autocast():
            return self.model.decode(latents, first_frame=first_frame, context=context).cpu().numpy()

    @staticmethod
    @torch.inference_mode()  # as start and step: the state stays inference tensors (a compiled step guards on it)
    def merge(state: Any, mask: np.ndarray, fresh: Any) -> Any:
        """Rows of ``fresh`` (batch ``mask.sum()``) replace the ``mask`` rows of ``state`` (a partial reset)."""
        return fresh if bool(np.all(mask)) else state.merge(np.asarray(mask, dtype=bool), fresh)


def as_session(model: Any, **kwargs: Any) -> DreamSession:
    """``model`` if it is a session already, else ``DreamSession(model, **kwargs)``."""
    return model if isinstance(model, DreamSession) else DreamSession(model, **kwargs)


__all__ = ["DreamModel", "DreamRollout", "DreamState", "DreamSession", "DreamStep", "StartInputs", "as_session", "check_image",
           "check_prompts", "known_model_names", "load_model", "load_start_set", "resize_mode_of"]
