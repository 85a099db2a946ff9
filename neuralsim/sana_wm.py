"""The official SANA-WM (``sana-wm-2.6b``) as a step-wise world-model backend, built on diffusers.

SANA-WM (NVIDIA, arXiv 2605.15178) ships in diffusers >= 0.42.1: ``SanaWMTransformer3DModel`` (the 2.66 B
bidirectional camera-controlled DiT), ``AutoencoderKLLTX2Video`` (LTX-2 VAE: 32x space, 8x time, first frame
alone), ``SanaWMPipeline`` (Gemma-2 prompt encoding, first-frame conditioning, flow-matching Euler sampling with
per-token timesteps) and ``cam_utils`` (key DSL -> camera poses -> Plücker rays). This module composes those
classes into the protocol :class:`neuralsim.session.DreamModel` that :class:`neuralsim.model.WorldModel` implements
too (``init_state`` / ``step`` / ``decode`` / heads, latents ``[B, T, C, h, w]``), so a ``DreamSession`` (and the
envs, ``neuralsim rollout``, ``neuralsim play``) serves either. Nothing of diffusers is re-implemented here.

The pipeline generates a whole clip from a camera trajectory known in advance. An environment must advance one
action at a time, so the backend keeps a bounded window of clean latent frames (the first frame as an attention
sink + the ``context_frames`` most recent ones) and, per ``step(action)``, denoises one new latent frame (8 video
frames) while the window is held clean through per-frame timesteps: the pipeline's own condition-mask mechanism,
extended from one clean frame to the whole window. The window length is bounded, so a step costs the same at
step 10 as at step 10,000. For a 9-frame clip (one image + one 8-frame chunk) the first ``step`` reproduces
``SanaWMPipeline.__call__`` given the same noise (``tests/test_sana_wm.py``).

Example::

    backend = SanaWMBackend.from_pretrained("path/to/SANA-WM_bidirectional-diffusers", device="cuda")
    state = backend.init_state(1, frames=first_frame[None, None], prompt="a sunny street")
    latent, state = backend.step(state, "w-8", generator=torch.Generator().manual_seed(0))  # [1, C, h, w]
    chunk = backend.decode(latent[:, None], first_frame=False, context=state)  # uint8 [1, 8, 704, 1280, 3]

Install with ``pip install "neuralsim[sana]"``; ``import neuralsim`` does not need it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from neuralsim.actions import (
    CAMERA_ACTION_DIM,
    DEFAULT_PITCH_LIMIT_DEG,
    DEFAULT_ROTATION_SPEED_DEG,
    DEFAULT_TRANSLATION_SPEED,
    DISCRETE_KEYSETS,
    action_string_to_vectors,
    discrete_to_vectors,
    keysets_to_vectors,
    parse_action_string,
    space_to_spec,
    validate_actions,
)
from neuralsim.camera import CameraIntegrator
from neuralsim.checkpoints import OFFICIAL_MODEL_NAME as NAME  # "sana-wm-2.6b"
from neuralsim.checkpoints import UNSAFE_SUFFIXES
from neuralsim.device import resolve_dtype

INSTALL_HINT = 'pip install "neuralsim[sana]"'
MIN_DIFFUSERS = (0, 42, 1)
#: The public release's resolution (diffusers' ``cam_utils.TARGET_HEIGHT/WIDTH``).
DEFAULT_IMAGE_SIZE = (704, 1280)
#: Flow shift of the public bidirectional model (used when a directory ships no scheduler config).
DEFAULT_FLOW_SHIFT = 9.8
#: Raw NVlabs/Sana DiT key prefixes -> diffusers names (Sana's ``TimestepEmbedder.mlp`` vs diffusers'
#: ``TimestepEmbedding``); everything else in the raw checkpoint already has the diffusers name.
RAW_KEY_RENAMES = {"t_embedder.mlp.0.": "t_embedder.linear_1.", "t_embedder.mlp.2.": "t_embedder.linear_2."}
#: Raw-checkpoint entries diffusers does not use (the fixed sin-cos ``pos_embed`` and the caption null embedding).
RAW_KEYS_DROPPED = ("pos_embed", "y_embedder.y_embedding")


# ---------------------------------------------------------------------------------------------
# Helpers: optional dependency, dtype choice, safetensors-only loading
# ---------------------------------------------------------------------------------------------


def _require_diffusers() -> Any:
    """Import diffusers (>= 0.42.1) or raise an ImportError that says how to install it."""
    try:
        import diffusers
        from diffusers import SanaWMPipeline  # noqa: F401  (SANA-WM appeared in 0.42.1)
    except ImportError as exc:  # diffusers missing or too old to have SANA-WM
        raise ImportError(
            f"the official SANA-WM backend needs diffusers>=0.42.1, transformers and accelerate: {INSTALL_HINT} ({exc})"
        ) from exc
    version = tuple(int(p) for p in diffusers.__version__.split(".")[:3] if p.isdigit())
    if version < MIN_DIFFUSERS:
        raise ImportError(f"diffusers {diffusers.__version__} is too old for SANA-WM (need >= 0.42.1): {INSTALL_HINT}")
    return diffusers


def _resolve_device(device: str | torch.device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _reject_pickle(path: Path, what: str) -> None:
    if path.suffix.lower() in UNSAFE_SUFFIXES:
        raise ValueError(
            f"{what}={str(path)!r} is a pickled checkpoint; neuralsim loads safetensors only and never unpickles. "
            "Convert it once in a trusted environment (safetensors.torch.save_file) or use the *-diffusers release."
        )


def _check_safetensors_dir(directory: Path, what: str) -> None:
    """A component directory must hold config.json and *.safetensors weights (pickles are never loaded)."""
    if not directory.is_dir():
        raise ValueError(f"{what}: missing component directory {str(directory)!r}")
    if not (directory / "config.json").is_file():
        raise ValueError(f"{what}: {str(directory)!r} has no config.json")
    if not any(directory.glob("*.safetensors")):
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in UNSAFE_SUFFIXES)
        found = f" (found pickled weights {pickles}, which are never loaded)" if pickles else ""
        raise ValueError(f"{what}: {str(directory)!r} has no *.safetensors weights{found}")


def read_safetensors(path: str | Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file tensor by tensor (peak memory ~ one copy of the weights), casting floats to ``dtype``."""
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for key in f.keys():
            tensor = f.get_tensor(key)
            if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                tensor = tensor.to(dtype)
            out[key] = tensor
    return out


def raw_to_diffusers_state_dict(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a raw official DiT state dict (NVlabs/Sana names) onto ``SanaWMTransformer3DModel`` names."""
    out = {}
    for key, value in raw.items():
        key = key.removeprefix("module.")
        if key in RAW_KEYS_DROPPED:
            continue
        for old, new in RAW_KEY_RENAMES.items():
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    return out


def load_transformer_safetensors(
    path: str | Path, config: dict | None = None, *, dtype: torch.dtype = torch.float32
) -> Any:
    """Build ``SanaWMTransformer3DModel`` with empty (meta) parameters and assign the weights of one safetensors file.

    Args:
        path: a ``.safetensors`` file holding the DiT (raw official names or diffusers names).
        config: ``SanaWMTransformer3DModel`` config; default: ``config.json`` beside the file, else the public release.
        dtype: parameter dtype.

    Raises:
        ValueError: pickled file offered, missing file, or keys that do not match the model.
    """
    _require_diffusers()
    from accelerate import init_empty_weights
    from diffusers import SanaWMTransformer3DModel

    path = Path(path)
    _reject_pickle(path, "transformer")
    if path.suffix != ".safetensors" or not path.is_file():
        raise ValueError(f"transformer={str(path)!r}: expected an existing .safetensors file or a diffusers directory")
    if config is None and (path.parent / "config.json").is_file():
        config = json.loads((path.parent / "config.json").read_text())
    config = {k: v for k, v in (config or {}).items() if not k.startswith("_")}
    with init_empty_weights():  # parameters on meta, buffers (and RoPE's plain complex table) on CPU
        model = SanaWMTransformer3DModel.from_config(config)
    state = raw_to_diffusers_state_dict(read_safetensors(path, dtype))
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"transformer={str(path)!r} does not match SanaWMTransformer3DModel{' (config ' + str(config) + ')' if config else ''}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(dtype).eval()


# ---------------------------------------------------------------------------------------------
# Config and state
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SanaWMBackendConfig:
    """What the env reads about the backend (the native model's ``WorldModelConfig`` counterpart).

    Attributes:
        image_size: ``(H, W)`` of frames in and out (multiples of the VAE's spatial stride).
        latent_channels: VAE latent channels (128 for LTX-2).
        latent_size: ``(h, w)`` tokens per latent frame (``H/32, W/32``).
        frames_per_latent: video frames per latent frame / env step (8).
        context_frames: K, the most recent latent frames kept beside the first-frame sink.
        denoise_steps: Euler steps per env step (the public model was sampled with 60).
        guidance_scale: classifier-free guidance (> 1 doubles the batch; public default 5).
        action_type: ``"discrete"`` (index into ``DISCRETE_KEYSETS``) or ``"box"`` (canonical 4-vector).
        intrinsics: ``(fx, fy, cx, cy)`` in pixels of ``image_size``.
        decode_context_frames: preceding latent frames fed to the causal VAE decoder with each chunk.
    """

    image_size: tuple[int, int]
    latent_channels: int
    latent_size: tuple[int, int]
    frames_per_latent: int
    context_frames: int
    denoise_steps: int
    guidance_scale: float
    action_type: str
    intrinsics: tuple[float, float, float, float]
    decode_context_frames: int
    translation_speed: float = DEFAULT_TRANSLATION_SPEED
    rotation_speed_deg: float = DEFAULT_ROTATION_SPEED_DEG
    pitch_limit_deg: float = DEFAULT_PITCH_LIMIT_DEG
    name: str = NAME
    provenance: dict = field(default_factory=dict)  # how the training frames were made; unknown for the release


@dataclass(frozen=True)
class SanaWMState:
    """Bounded rollout state; ``step`` returns a new one and never mutates its input.

    Attributes:
        latents: ``[B, C, W, h, w]`` clean normalised latents: the sink (first latent frame) + up to K recent ones.
        raymap: ``[B, W, 20]`` float32 per-latent-frame camera rows (``cam_utils.prepare_camera``'s ``raymap``).
        plucker: ``[B, 48, W, h, w]`` float32 packed Plücker rays (``prepare_camera``'s ``chunk_plucker``).
        c2w: ``[B, 4, 4]`` float64 camera-to-world pose after the last frame (episode frame: first pose = identity).
        pitch: ``[B]`` accumulated pitch in radians (for the clamp).
        sink_pending: the sink's camera rows still need the first chunk's poses (``prepare_camera`` packs frames
            0..7 into the first latent frame's Plücker block, as the pipeline does).
        step_index: latent frames generated since ``init_state``.
        prompt_embeds / prompt_mask / negative_embeds / negative_mask: ``[B, 1, L, D]`` / ``[B, L]`` text conditioning.
    """

    latents: torch.Tensor
    raymap: torch.Tensor
    plucker: torch.Tensor
    c2w: np.ndarray
    pitch: np.ndarray
    sink_pending: bool
    step_index: int
    prompt_embeds: torch.Tensor
    prompt_mask: torch.Tensor
    negative_embeds: torch.Tensor | None
    negative_mask: torch.Tensor | None

    @property
    def batch_size(self) -> int:
        return int(self.latents.shape[0])

    @property
    def latent(self) -> torch.Tensor:
        """The last latent frame of the window ``[B, C, h, w]``."""
        return self.latents[:, :, -1]

    def merge(self, mask: Any, other: SanaWMState) -> SanaWMState:
        """``other`` where ``mask`` is all True; some rows alone cannot be reset (the window length and the sink flag
        are batch-wide), so any other mask raises ``NotImplementedError``."""
        if bool(np.all(np.asarray(mask))):
            return other
        raise NotImplementedError(f"model={NAME!r} cannot reset some envs of a batch (its window length and sink are "
                                  "batch-wide); use WorldModelEnv, or one WorldModelVectorEnv per episode batch")


# ---------------------------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------------------------


class SanaWMBackend:
    """The official SANA-WM served step by step: one ``step`` = one latent frame = 8 video frames.

    Actions (per env, held for the 8 frames of the chunk unless a DSL string says otherwise):

    - a key-DSL string covering exactly 8 frames, e.g. ``"w-8"`` or ``"w-4,jw-4"`` (any ``action_type``);
    - ``action_type="discrete"``: an index into :data:`neuralsim.actions.DISCRETE_KEYSETS`
      (``Discrete(11)``: none, w, s, a, d, j, l, i, k, wj, wl);
    - ``action_type="box"``: the canonical 4-dim camera velocity ``[forward, strafe_right, yaw_right, pitch_up]``
      in ``[-1, 1]`` (``Box(-1, 1, (4,))``), scaled by the DSL's per-frame speeds (0.05 units, 1.2 degrees).
      Not a 6-DoF twist: like the DSL, translation stays on the horizontal plane and there is no roll.

    Poses integrate exactly as diffusers' ``cam_utils.action_string_to_c2w`` (via
    :class:`neuralsim.camera.CameraIntegrator`); camera tensors come from ``cam_utils.prepare_camera``.
    """

    name = NAME
    frames_per_latent: int
    # neuralsim.session.DreamModel: cast to its dtype when built (no autocast); image-to-video (needs a first frame)
    uses_autocast = False
    can_generate_start = False

    def __init__(
        self,
        transformer: Any,
        vae: Any,
        *,
        scheduler: Any = None,
        text_encoder: Any = None,
        tokenizer: Any = None,
        context_frames: int = 4,
        denoise_steps: int = 60,
        guidance_scale: float = 5.0,
        action_type: str = "discrete",
        image_size: tuple[int, int] | None = None,
        intrinsics: Sequence[float] | None = None,
        negative_prompt: str = "",
        max_sequence_length: int = 300,
        chi_prompt: list[str] | None = None,
        decode_context_frames: int = 1,
        translation_speed: float = DEFAULT_TRANSLATION_SPEED,
        rotation_speed_deg: float = DEFAULT_ROTATION_SPEED_DEG,
        pitch_limit_deg: float = DEFAULT_PITCH_LIMIT_DEG,
        dtype: str | torch.dtype | None = None,
        vae_dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        """Wrap already-built diffusers components (see :meth:`from_pretrained` / :meth:`from_components`).

        Args:
            transformer: a ``SanaWMTransformer3DModel``.
            vae: an ``AutoencoderKLLTX2Video``.
            scheduler: a ``FlowMatchEulerDiscreteScheduler`` (default: shift 9.8, the public model's).
            text_encoder / tokenizer: Gemma-2 and its tokenizer; without them ``init_state`` needs ``prompt_embeds``.
            context_frames: K >= 1 recent latent frames kept beside the sink (window = K + 1 clean frames + 1 new).
            denoise_steps: Euler steps per env step (public sampling: 60).
            guidance_scale: CFG scale (> 1 runs a negative-prompt branch; public: 5).
            action_type: ``"discrete"`` or ``"box"`` (the ``action_space`` the env exposes).
            image_size: ``(H, W)``; default 704 x 1280, the public model's only training resolution.
            intrinsics: ``(fx, fy, cx, cy)`` in pixels of ``image_size``; default a 90-degree horizontal FOV
                (``fx = fy = W/2``, centred principal point).
            negative_prompt / max_sequence_length / chi_prompt: as ``SanaWMPipeline.encode_prompt``.
            decode_context_frames: preceding latent frames decoded with each chunk (the VAE is causal in time).
            translation_speed / rotation_speed_deg / pitch_limit_deg: the DSL's per-frame camera speeds.
            dtype / vae_dtype / device: cast and move the components (``None`` keeps them as they are;
                ``"auto"``: bf16 on CUDA or native-bf16 CPUs, else fp32).
        """
        _require_diffusers()
        from diffusers import FlowMatchEulerDiscreteScheduler, SanaWMPipeline

        def move(module: Any, dev: torch.device | None, dt: torch.dtype | None) -> Any:
            # Cast only what differs (diffusers warns on every ``.to(dtype)``); ``.to`` is in place for modules.
            if module is None:
                return None
            if dev is not None and module.device != dev:
                module = module.to(dev)
            if dt is not None and module.dtype != dt:
                module = module.to(dt)
            return module

        dev = _resolve_device(device) if device is not None else transformer.device
        dt = resolve_dtype(dtype, dev) if dtype is not None else None
        transformer, text_encoder = move(transformer, dev, dt), move(text_encoder, dev, dt)
        vae = move(vae, dev, resolve_dtype(vae_dtype, dev) if vae_dtype is not None else dt)
        if (text_encoder is None) != (tokenizer is None):
            raise ValueError("text_encoder and tokenizer must be given together (or both left out and prompt_embeds passed)")
        scheduler = scheduler if scheduler is not None else FlowMatchEulerDiscreteScheduler(shift=DEFAULT_FLOW_SHIFT)
        self.pipeline = SanaWMPipeline(
            tokenizer=tokenizer, text_encoder=text_encoder, vae=vae.eval(), transformer=transformer.eval(), scheduler=scheduler
        )
        self.transformer, self.vae, self.scheduler = transformer, vae, scheduler
        self.text_encoder, self.tokenizer = text_encoder, tokenizer

        s, t = int(vae.spatial_compression_ratio), int(vae.temporal_compression_ratio)
        height, width = tuple(int(x) for x in (image_size or DEFAULT_IMAGE_SIZE))
        if height % s or width % s or height <= 0 or width <= 0:
            raise ValueError(f"image_size must be positive multiples of the VAE stride {s}, got {(height, width)}")
        if int(context_frames) < 1 or int(denoise_steps) < 1 or int(decode_context_frames) < 1:
            raise ValueError(
                f"need context_frames >= 1, denoise_steps >= 1, decode_context_frames >= 1; got "
                f"{context_frames}, {denoise_steps}, {decode_context_frames}"
            )
        if action_type not in ("discrete", "box"):
            raise ValueError(f"action_type must be 'discrete' or 'box', got {action_type!r}")
        if transformer.config.in_channels != vae.config.latent_channels:
            raise ValueError(
                f"transformer in_channels {transformer.config.in_channels} != vae latent_channels {vae.config.latent_channels}"
            )
        intr = tuple(float(x) for x in (intrinsics if intrinsics is not None else (width / 2, width / 2, width / 2, height / 2)))
        if len(intr) != 4:
            raise ValueError(f"intrinsics must be (fx, fy, cx, cy), got {intrinsics!r}")
        self.config = SanaWMBackendConfig(
            image_size=(height, width),
            latent_channels=int(vae.config.latent_channels),
            latent_size=(height // s, width // s),
            frames_per_latent=t,
            context_frames=int(context_frames),
            denoise_steps=int(denoise_steps),
            guidance_scale=float(guidance_scale),
            action_type=action_type,
            intrinsics=intr,
            decode_context_frames=int(decode_context_frames),
            translation_speed=float(translation_speed),
            rotation_speed_deg=float(rotation_speed_deg),
            pitch_limit_deg=float(pitch_limit_deg),
        )
        self.frames_per_latent = t
        self.negative_prompt, self.max_sequence_length, self.chi_prompt = negative_prompt, int(max_sequence_length), chi_prompt

    # ----- loading ----------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        dtype: str | torch.dtype = "auto",
        device: str | torch.device = "auto",
        load_text_encoder: bool = True,
        **options: Any,
    ) -> SanaWMBackend:
        """Load a diffusers-format SANA-WM directory (``SanaWMPipeline`` layout) with diffusers' low-memory loaders.

        Args:
            path: directory with ``transformer/`` and ``vae/`` (required), ``scheduler/``, ``text_encoder/`` and
                ``tokenizer/`` (optional), e.g. a local copy of ``Efficient-Large-Model/SANA-WM_bidirectional-diffusers``.
            dtype / device: ``"auto"`` = bf16 + CUDA when available (fp32 on CPUs without native bf16).
            load_text_encoder: False skips Gemma-2 (~5 GB bf16); then pass ``prompt_embeds`` to ``init_state``.
            **options: forwarded to :class:`SanaWMBackend` (``context_frames``, ``denoise_steps``, ...).

        Raises:
            ImportError: diffusers missing. ValueError: pickled file, missing component or weights.
        """
        _require_diffusers()
        from diffusers import AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler, SanaWMTransformer3DModel

        root = Path(path)
        _reject_pickle(root, "path")
        if not root.is_dir():
            raise ValueError(f"path={str(root)!r} is not a directory; expected a diffusers SANA-WM directory "
                             "(transformer/, vae/, text_encoder/, tokenizer/, scheduler/)")
        for name in ("transformer", "vae"):
            _check_safetensors_dir(root / name, f"path={str(root)!r}")
        dev = _resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        vae_dt = resolve_dtype(options.pop("vae_dtype", dt), dev)
        load = {"use_safetensors": True, "low_cpu_mem_usage": True}
        transformer = SanaWMTransformer3DModel.from_pretrained(root, subfolder="transformer", torch_dtype=dt, **load)
        vae = AutoencoderKLLTX2Video.from_pretrained(root, subfolder="vae", torch_dtype=vae_dt, **load)
        scheduler = None
        if (root / "scheduler" / "scheduler_config.json").is_file():
            scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(root, subfolder="scheduler")
        text_encoder = tokenizer = None
        if load_text_encoder and (root / "text_encoder").is_dir():
            index_path = root / "model_index.json"
            try:
                index = json.loads(index_path.read_text()) if index_path.is_file() else {}
            except (ValueError, UnicodeDecodeError) as exc:
                raise ValueError(f"{index_path} is not valid JSON ({exc})") from None
            text_cls = _text_encoder_class(index, str(index_path))
            text_encoder, tokenizer = _load_text_encoder(root / "text_encoder", root / "tokenizer", dt, text_cls)
        return cls(transformer, vae, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer,
                   device=dev, **options)

    @classmethod
    def from_components(
        cls,
        transformer: Any,
        vae: Any,
        *,
        transformer_config: dict | str | os.PathLike | None = None,
        text_encoder: Any = None,
        tokenizer: Any = None,
        scheduler: Any = None,
        dtype: str | torch.dtype = "auto",
        device: str | torch.device = "auto",
        **options: Any,
    ) -> SanaWMBackend:
        """Build from the raw official DiT safetensors (or a module / diffusers dir) plus a VAE directory.

        Args:
            transformer: path to the official DiT ``.safetensors`` (raw NVlabs/Sana names are mapped), a diffusers
                ``transformer/`` directory, or a ``SanaWMTransformer3DModel``.
            vae: a diffusers ``AutoencoderKLLTX2Video`` directory or module.
            transformer_config: config dict or config.json path for a raw file (default: config.json beside it,
                else the public release's defaults).
            text_encoder / tokenizer: modules, or directories loaded with transformers (safetensors only).
            scheduler: a ``FlowMatchEulerDiscreteScheduler`` (default shift 9.8).
        """
        _require_diffusers()
        from diffusers import AutoencoderKLLTX2Video, SanaWMTransformer3DModel

        dev = _resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        vae_dt = resolve_dtype(options.pop("vae_dtype", dt), dev)
        load = {"use_safetensors": True, "low_cpu_mem_usage": True}
        if isinstance(transformer, (str, os.PathLike)):
            tpath = Path(transformer)
            _reject_pickle(tpath, "transformer")
            if tpath.is_dir():
                _check_safetensors_dir(tpath, "transformer")
                transformer = SanaWMTransformer3DModel.from_pretrained(tpath, torch_dtype=dt, **load)
            else:
                if isinstance(transformer_config, (str, os.PathLike)):
                    transformer_config = json.loads(Path(transformer_config).read_text())
                transformer = load_transformer_safetensors(tpath, transformer_config, dtype=dt)
        if isinstance(vae, (str, os.PathLike)):
            vpath = Path(vae)
            _reject_pickle(vpath, "vae")
            _check_safetensors_dir(vpath, "vae")
            vae = AutoencoderKLLTX2Video.from_pretrained(vpath, torch_dtype=vae_dt, **load)
        if isinstance(text_encoder, (str, os.PathLike)):
            tok_dir = Path(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else Path(text_encoder)
            text_encoder, loaded_tok = _load_text_encoder(Path(text_encoder), tok_dir, dt)
            tokenizer = loaded_tok if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)) else tokenizer
        return cls(transformer, vae, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer,
                   dtype=dt, vae_dtype=vae_dt, device=dev, **options)

    # ----- spaces -----------------------------------------------------------------------------

    @property
    def image_size(self) -> tuple[int, int]:
        return self.config.image_size

    @property
    def action_space(self) -> Any:
        """``Discrete(len(DISCRETE_KEYSETS))`` or ``Box(-1, 1, (4,), float32)`` (see ``action_type``)."""
        from gymnasium import spaces

        if self.config.action_type == "discrete":
            return spaces.Discrete(len(DISCRETE_KEYSETS))
        return spaces.Box(-1.0, 1.0, shape=(CAMERA_ACTION_DIM,), dtype=np.float32)

    @property
    def action_spec(self) -> dict:
        return space_to_spec(self.action_space)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of one latent frame."""
        return (self.config.latent_channels, *self.config.latent_size)

    @property
    def text_conditioned(self) -> bool:
        """Prompts need the text encoder (without it ``init_state`` takes ``prompt_embeds``, or runs unprompted)."""
        return self.text_encoder is not None

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    # ----- encode / decode --------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, frames: Any) -> torch.Tensor:
        """``uint8 [B, T, H, W, 3]`` (T = 1 + 8k) -> normalised latents ``[B, 1 + k, C, h, w]`` (posterior mode)."""
        return self._encode(self._as_frames(frames, len(frames))).transpose(1, 2)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """Checked frames -> latents in the pipeline's layout ``[B, C, 1 + k, h, w]``."""
        video = (x.permute(0, 4, 1, 2, 3).float() / 255.0) * 2.0 - 1.0  # [B, 3, T, H, W] in [-1, 1], as VaeImageProcessor
        z = self.vae.encode(video.to(self.vae.device, dtype=self.vae.dtype)).latent_dist.mode()
        mean = self.vae.latents_mean.view(1, -1, 1, 1, 1).to(z)
        std = self.vae.latents_std.view(1, -1, 1, 1, 1).to(z)
        return ((z - mean) * self.vae.config.scaling_factor / std).to(self.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, first_frame: bool = True,
               context: SanaWMState | torch.Tensor | None = None) -> torch.Tensor:
        """Latents ``[B, T, C, h, w]`` -> ``uint8 [B, F, H, W, 3]`` frames (torch, on the model's device).

        The LTX-2 VAE is causal in time and decodes the first latent frame of a clip to a single frame, so a
        chunk must be decoded after its predecessors.

        Args:
            first_frame: the latents are a clip: ``F = 1 + 8 (T - 1)`` frames. False: they follow ``context``
                and give their ``8 T`` frames only.
            context: with ``first_frame=False``, the state ``step`` returned with ``latents``, or a
                ``[B, n, C, h, w]`` tensor of the preceding latent frames.
        """
        if not torch.is_tensor(latents) or latents.ndim != 5 or latents.shape[2] != self.config.latent_channels:
            shape = tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__
            raise ValueError(f"latents must be a [B, T, {self.config.latent_channels}, h, w] tensor, got {shape}")
        if first_frame != (context is None):
            raise ValueError("pass context= (the state step() returned) exactly when first_frame=False: a chunk is "
                             "decoded after the latent frames before it")
        latents = latents.transpose(1, 2)  # the pipeline's [B, C, T, h, w]
        n_ctx = 0
        if isinstance(context, SanaWMState):
            window, t = context.latents, latents.shape[2]
            if window.shape[2] <= t or not torch.equal(window[:, :, -t:], latents.to(window)):
                raise ValueError("context state does not end with these latents; pass the state step() returned with them")
            context = window[:, :, :-t][:, :, -self.config.decode_context_frames:]
        elif context is not None:
            if not torch.is_tensor(context) or context.ndim != 5 or context.shape[0] != latents.shape[0] \
                    or context.shape[2] != latents.shape[1]:
                raise ValueError(f"context must be a SanaWMState or a [B, n, C, h, w] tensor matching latents, got "
                                 f"{type(context).__name__}")
            context = context.transpose(1, 2)
        if context is not None:
            n_ctx = context.shape[2]
            latents = torch.cat([context.to(latents), latents], dim=2)
        video = self.pipeline._decode_latents(latents)  # [B, 3, F, H, W] in [-1, 1]
        if n_ctx:
            video = video[:, :, 1 + self.frames_per_latent * (n_ctx - 1):]
        frames = self.pipeline.video_processor.postprocess_video(video.float(), output_type="pt")  # [B, F, 3, H, W]
        return (frames * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2)

    def predict_reward_termination(self, state: SanaWMState) -> tuple[torch.Tensor, torch.Tensor]:
        """SANA-WM predicts no reward and no end of episode: ``(zeros [B], zeros [B])``."""
        zeros = torch.zeros(state.batch_size, dtype=torch.float32)
        return zeros, zeros.clone()

    # ----- rollout ----------------------------------------------------------------------------

    @torch.no_grad()
    def init_state(
        self,
        batch_size: int,
        frames: Any = None,
        actions: Any = None,
        prompt: str | Sequence[str] | None = None,
        *,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        denoise_steps: int | None = None,
    ) -> SanaWMState:
        """Start a rollout from real frames (SANA-WM is image-to-video: a first frame is required).

        Args:
            batch_size: B.
            frames: ``uint8 [B, T, H, W, 3]`` or ``[B, H, W, 3]``, T = 1 + 8k at ``image_size``.
            actions: for T > 1, the motion between the given frames: one ``action_space`` element per env step
                (``[B, k]`` key-set indices or ``[B, k, 4]`` vectors, each held for its 8 frames), key-DSL strings
                (one per env, T - 1 frames) or canonical per-frame vectors ``[B, T - 1, 4]``; default idle.
            prompt: a string or one per env (Gemma-2 with the chi-prompt prefix, as the pipeline); default "".
            prompt_embeds / prompt_attention_mask: precomputed ``[B or 1, 1, L, D]`` / ``[B or 1, L]``
                (a prompt without a text encoder needs them; no prompt and no text encoder: an all-zero embedding);
                negative_*: the CFG branch (default: encoded ``negative_prompt``).
            generator / denoise_steps: unused (encoding is deterministic); accepted for the protocol.
        """
        del generator, denoise_steps
        if frames is None:
            raise ValueError("frames is required: SANA-WM generates from a first frame (uint8 [B, 1, H, W, 3])")
        video = self._as_frames(frames, batch_size)
        b, t = video.shape[:2]
        if prompt is None and prompt_embeds is None and self.text_encoder is None:  # unprompted: a zero embedding
            width = int(self.transformer.config.caption_channels)
            prompt_embeds = torch.zeros(b, 1, 1, width, device=self.device, dtype=self.dtype)
        latents = self._encode(video)
        vectors = self._init_action_vectors(actions, b, t - 1)  # [B, T-1, 4]
        poses, c2w, pitch = self._integrate(np.broadcast_to(np.eye(4), (b, 4, 4)), np.zeros(b), vectors)
        poses = np.concatenate([np.broadcast_to(np.eye(4), (b, 1, 4, 4)), poses], axis=1)  # [B, T, 4, 4]
        if t > 1:
            raymap, plucker = self._camera(poses)
            sink_pending = False
        else:  # the sink's Plücker block packs frames 0..7: known after the first step
            h, w = self.config.latent_size
            raymap = torch.zeros(b, 1, 20)
            plucker = torch.zeros(b, 6 * self.frames_per_latent, 1, h, w)
            sink_pending = True
        keep = [0] + list(range(max(1, latents.shape[2] - self.config.context_frames), latents.shape[2]))
        cond, cond_mask, neg, neg_mask = self._text(
            b, prompt, prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask
        )
        return SanaWMState(
            latents=latents[:, :, keep], raymap=raymap[:, keep], plucker=plucker[:, :, keep], c2w=c2w, pitch=pitch,
            sink_pending=sink_pending, step_index=0, prompt_embeds=cond, prompt_mask=cond_mask,
            negative_embeds=neg, negative_mask=neg_mask,
        )

    @torch.no_grad()
    def step(
        self,
        state: SanaWMState,
        actions: Any,
        generator: torch.Generator | None = None,
        denoise_steps: int | None = None,
        *,
        guidance_scale: float | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, SanaWMState]:
        """Generate the next latent frame (8 video frames) under ``actions``.

        Args:
            state: from ``init_state`` or a previous ``step``.
            actions: per env: a key-DSL string of exactly 8 frames, or an ``action_space`` element (see the class).
            generator: noise source (seeded -> deterministic).
            denoise_steps / guidance_scale: override the backend's defaults for this step.
            noise: ``[B, C, h, w]`` initial noise instead of drawing it (used by the pipeline-parity test).

        Returns:
            ``(latent_frame [B, C, h, w], new_state)``.
        """
        if not isinstance(state, SanaWMState):
            raise TypeError(f"state must be a SanaWMState from init_state/step, got {type(state).__name__}")
        b, n = state.batch_size, self.frames_per_latent
        vectors = self._step_action_vectors(actions, b)  # [B, 8, 4]
        chunk, c2w, pitch = self._integrate(state.c2w, state.pitch, vectors)
        origin = np.broadcast_to(np.eye(4), (b, 1, 4, 4))
        rows, pluck = self._camera(np.concatenate([origin, chunk], axis=1))  # rows 0 (sink) and 1 (new)
        raymap, plucker = state.raymap, state.plucker
        if state.sink_pending:
            raymap = torch.cat([rows[:, :1], raymap[:, 1:]], dim=1)
            plucker = torch.cat([pluck[:, :, :1], plucker[:, :, 1:]], dim=2)
        raymap = torch.cat([raymap, rows[:, 1:]], dim=1)
        plucker = torch.cat([plucker, pluck[:, :, 1:]], dim=2)

        new = self._denoise(state, raymap, plucker, generator, denoise_steps, guidance_scale,
                            None if noise is None else noise[:, :, None])
        latents = torch.cat([state.latents, new], dim=2)
        keep = [0] + list(range(max(1, latents.shape[2] - self.config.context_frames), latents.shape[2]))
        new_state = replace(
            state, latents=latents[:, :, keep], raymap=raymap[:, keep], plucker=plucker[:, :, keep],
            c2w=c2w, pitch=pitch, sink_pending=False, step_index=state.step_index + 1,
        )
        return new[:, :, 0], new_state

    # ----- internals --------------------------------------------------------------------------

    def _denoise(self, state, raymap, plucker, generator, denoise_steps, guidance_scale, noise) -> torch.Tensor:
        """The pipeline's per-token-timestep Euler loop over [clean window | new frame]."""
        from diffusers import FlowMatchEulerDiscreteScheduler
        from diffusers.models.transformers.transformer_sana_wm import _process_camera_conditions_ucpe
        from diffusers.utils.torch_utils import randn_tensor

        dev, dtype = self.device, self.dtype
        b, c, w_ctx, h, w = state.latents.shape
        steps = int(denoise_steps if denoise_steps is not None else self.config.denoise_steps)
        cfg = float(guidance_scale if guidance_scale is not None else self.config.guidance_scale)
        if steps < 1:
            raise ValueError(f"denoise_steps must be >= 1, got {steps}")
        if noise is None:
            noise = randn_tensor((b, c, 1, h, w), generator=generator, device=dev, dtype=dtype)
        elif tuple(noise.shape) != (b, c, 1, h, w):
            raise ValueError(f"noise must have shape {(b, c, h, w)}, got {tuple(noise.shape[:2] + noise.shape[3:])}")
        latents = torch.cat([state.latents.to(dev, dtype), noise.to(dev, dtype)], dim=2)  # [B, C, W+1, h, w]
        # The whole window is held clean. The mask stays fp32: in diffusers 0.42.1 the pipeline's bf16 mask makes
        # ``t / 1000 - 1e-6 < 1 - mask`` round to ``1.0 < 1.0`` at t = 1000, silently skipping the first Euler step.
        condition_mask = torch.zeros(latents.shape, device=dev, dtype=torch.float32)
        condition_mask[:, :, :w_ctx] = 1.0

        do_cfg = cfg > 1.0
        if do_cfg and state.negative_embeds is None:
            raise ValueError("guidance_scale > 1 needs negative prompt embeddings (text encoder or negative_prompt_embeds)")
        embeds = torch.cat([state.negative_embeds, state.prompt_embeds]) if do_cfg else state.prompt_embeds
        text_mask = torch.cat([state.negative_mask, state.prompt_mask]) if do_cfg else state.prompt_mask
        reps = 2 if do_cfg else 1
        raymap_in = raymap.to(dev, torch.float32).repeat(reps, 1, 1)
        plucker_in = plucker.to(dev, torch.float32).repeat(reps, 1, 1, 1, 1)
        # Ray geometry in fp32 with the model's own function, handed over as cam_pos_embeds: identical to the
        # pipeline's in-model computation in fp32, and the working route for bf16 on CPU (create_grid refuses bf16).
        raymats, absmap = _process_camera_conditions_ucpe(raymap_in, raymap_in.shape[0], (w_ctx + 1, h, w), self.transformer.patch_size)
        p = raymats.reshape(raymap_in.shape[0], -1, 4, 4).to(dtype)
        absmap = absmap.permute(0, 4, 1, 2, 3).to(dtype)

        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config)  # fresh step counter per call
        scheduler.set_timesteps(steps, device=dev)
        for t in scheduler.timesteps:
            mask_in = condition_mask.repeat(reps, 1, 1, 1, 1)
            timestep = torch.min(t.expand(mask_in.shape).float(), (1.0 - mask_in) * 1000.0)
            pred = self.transformer(
                latents.repeat(reps, 1, 1, 1, 1), timestep[:, :1, :, 0, 0], embeds.to(dev), return_dict=False,
                mask=text_mask.to(dev), camera_conditions=raymap_in.to(dtype), chunk_plucker=plucker_in,
                cam_pos_embeds={"absmap": absmap, "P": p},
                data_info={"img_hw": torch.tensor([list(self.config.image_size)], dtype=torch.float, device=dev)},
            )[0]
            if do_cfg:
                uncond, text = pred.chunk(2)
                pred = uncond + cfg * (text - uncond)
                timestep = timestep.chunk(2)[0]
            bb, cc, ff, hh, ww = latents.shape
            denoised = scheduler.step(
                -pred.reshape(bb, cc, -1).transpose(1, 2), t, latents.reshape(bb, cc, -1).transpose(1, 2),
                per_token_timesteps=timestep.reshape(bb, cc, -1)[:, 0], return_dict=False,
            )[0]
            denoised = denoised.transpose(1, 2).reshape(bb, cc, ff, hh, ww)
            keep_clean = t / 1000.0 - 1e-6 < (1.0 - condition_mask)
            latents = torch.where(keep_clean, denoised, latents).to(dtype)
        return latents[:, :, -1:]

    def _camera(self, poses: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, 1 + 8n, 4, 4]`` poses (first = episode origin) -> raymap ``[B, 1+n, 20]``, plucker ``[B, 48, 1+n, h, w]``."""
        from diffusers.pipelines.sana_wm.cam_utils import prepare_camera

        s = int(self.vae.spatial_compression_ratio)
        intr = np.broadcast_to(np.asarray(self.config.intrinsics, dtype=np.float32), (poses.shape[1], 4)).copy()
        cams = [
            prepare_camera(np.ascontiguousarray(p, dtype=np.float32), intr, target_size=self.config.image_size,
                           vae_stride=(self.frames_per_latent, s, s))
            for p in poses
        ]
        return torch.stack([c["raymap"] for c in cams]), torch.stack([c["chunk_plucker"] for c in cams])

    def _integrate(self, c2w: np.ndarray, pitch: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per env, integrate ``[B, n, 4]`` canonical actions from ``c2w``/``pitch`` -> poses ``[B, n, 4, 4]``, end pose, pitch."""
        cam = CameraIntegrator(self.config.translation_speed, self.config.rotation_speed_deg, self.config.pitch_limit_deg)
        poses, ends, pitches = [], [], []
        for env in range(len(vectors)):
            cam.reset(c2w[env], float(pitch[env]))
            poses.append(np.stack([cam.step(v) for v in vectors[env]]) if len(vectors[env]) else np.zeros((0, 4, 4)))
            ends.append(cam.c2w.copy())
            pitches.append(cam.pitch)
        return np.stack(poses), np.stack(ends), np.asarray(pitches, dtype=np.float64)

    def _step_action_vectors(self, actions: Any, batch_size: int) -> np.ndarray:
        """One env step's actions -> ``[B, 8, 4]`` canonical per-frame vectors."""
        n = self.frames_per_latent
        if isinstance(actions, str):
            actions = [actions]
        if isinstance(actions, (list, tuple)) and actions and all(isinstance(a, str) for a in actions):
            if len(actions) != batch_size:
                raise ValueError(f"actions: got {len(actions)} key-DSL strings for a batch of {batch_size}")
            out = []
            for a in actions:
                frames = parse_action_string(a)
                if len(frames) != n:
                    raise ValueError(
                        f"actions={a!r} covers {len(frames)} frames; one step is {n} frames (e.g. 'w-{n}' or 'w-4,jw-4')"
                    )
                out.append(keysets_to_vectors(frames))
            return np.stack(out)
        spec = space_to_spec(self.action_space)
        arr = validate_actions(actions, spec, batch_size=batch_size, name="actions")
        if spec["type"] == "discrete":
            vec = discrete_to_vectors(arr)
        else:
            vec = arr.astype(np.float64)
        return np.repeat(vec[:, None, :], n, axis=1)

    def _init_action_vectors(self, actions: Any, batch_size: int, n: int) -> np.ndarray:
        if actions is None or n == 0:
            if actions is not None and n == 0:
                raise ValueError("actions given to init_state with a single frame; they describe motion between frames")
            return np.zeros((batch_size, n, CAMERA_ACTION_DIM))
        if isinstance(actions, str):
            actions = [actions] * batch_size
        if isinstance(actions, (list, tuple)) and all(isinstance(a, str) for a in actions):
            if len(actions) != batch_size:
                raise ValueError(f"actions: got {len(actions)} key-DSL strings for a batch of {batch_size}")
            out = [action_string_to_vectors(a) for a in actions]
            if any(len(o) != n for o in out):
                raise ValueError(f"actions must cover the {n} frames after the first, got {[len(o) for o in out]}")
            return np.stack(out)
        steps, k = n // self.frames_per_latent, self.frames_per_latent
        arr = np.asarray(actions.detach().cpu() if torch.is_tensor(actions) else actions)
        if arr.shape[:2] == (batch_size, steps) and arr.ndim == (2 if self.config.action_type == "discrete" else 3):
            # one action_space element per env step (the session's form), held for its k frames
            spec = space_to_spec(self.action_space)
            flat = validate_actions(arr.reshape(batch_size * steps, *arr.shape[2:]), spec, name="actions")
            vectors = discrete_to_vectors(flat) if spec["type"] == "discrete" else flat.astype(np.float64)
            return np.repeat(vectors.reshape(batch_size, steps, CAMERA_ACTION_DIM).astype(np.float64), k, axis=1)
        arr = np.asarray(arr, dtype=np.float64)
        if arr.shape != (batch_size, n, CAMERA_ACTION_DIM) or not np.all(np.isfinite(arr)):
            raise ValueError(f"actions must be key-DSL strings or finite [B, T-1, 4] = {(batch_size, n, 4)}, got {arr.shape}")
        return arr

    def _as_frames(self, frames: Any, batch_size: int) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(frames) if not torch.is_tensor(frames) else frames)
        if x.ndim == 4:
            x = x[:, None]
        height, width = self.config.image_size
        if x.dtype != torch.uint8 or x.ndim != 5 or x.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 [B, T, H, W, 3], got {x.dtype} {tuple(x.shape)}")
        if x.shape[0] != batch_size:
            raise ValueError(f"frames batch {x.shape[0]} != batch_size {batch_size}")
        if tuple(x.shape[2:4]) != (height, width):
            raise ValueError(
                f"frames are {tuple(x.shape[2:4])} but this model runs at image_size {(height, width)}; "
                "resize/crop them first (SANA-WM was trained at 704x1280 only)"
            )
        if (x.shape[1] - 1) % self.frames_per_latent:
            raise ValueError(f"frames must have T = 1 + {self.frames_per_latent}k frames (first frame alone), got T={x.shape[1]}")
        return x

    def _text(self, b, prompt, embeds, mask, neg, neg_mask):
        """Prompt conditioning ``(cond [B,1,L,D], mask [B,L], neg, neg_mask)`` via the pipeline's ``encode_prompt``."""
        from diffusers.pipelines.sana_wm.pipeline_sana_wm import DEFAULT_CHI_PROMPT

        dev = self.device

        def batch(x: torch.Tensor | None, name: str) -> torch.Tensor | None:
            if x is None:
                return None
            if x.shape[0] not in (1, b):
                raise ValueError(f"{name} has batch {x.shape[0]}, expected 1 or {b}")
            return x.to(dev).expand(b, *x.shape[1:]).clone() if x.shape[0] == 1 else x.to(dev)

        if embeds is not None:
            if prompt is not None:
                raise ValueError("pass either prompt or prompt_embeds, not both")
            if embeds.ndim == 3:
                embeds = embeds[:, None]
            if embeds.ndim != 4 or embeds.shape[-1] != self.transformer.config.caption_channels:
                raise ValueError(f"prompt_embeds must be [B, 1, L, {self.transformer.config.caption_channels}], got {tuple(embeds.shape)}")
            mask = torch.ones(embeds.shape[0], embeds.shape[2], dtype=torch.long) if mask is None else mask
            if neg is not None and neg_mask is None:
                neg = neg[:, None] if neg.ndim == 3 else neg
                neg_mask = torch.ones(neg.shape[0], neg.shape[2], dtype=torch.long)
            if neg is None and self.text_encoder is not None:
                _, _, neg, neg_mask = self.pipeline.encode_prompt(
                    "", self.negative_prompt, device=dev, max_sequence_length=embeds.shape[2],
                    chi_prompt=self.chi_prompt or DEFAULT_CHI_PROMPT,
                )
            return batch(embeds, "prompt_embeds"), batch(mask, "prompt_attention_mask"), batch(neg, "negative_prompt_embeds"), batch(neg_mask, "negative_prompt_attention_mask")
        if self.text_encoder is None:
            raise ValueError("this backend has no text encoder; pass prompt_embeds (and negative_prompt_embeds for CFG)")
        prompts = [prompt or ""] * b if prompt is None or isinstance(prompt, str) else list(prompt)
        if len(prompts) != b:
            raise ValueError(f"prompt: got {len(prompts)} prompts for a batch of {b}")
        outs = [
            self.pipeline.encode_prompt(
                p, self.negative_prompt, device=dev, max_sequence_length=self.max_sequence_length,
                chi_prompt=self.chi_prompt or DEFAULT_CHI_PROMPT,
            )
            for p in prompts
        ]
        cond, cond_mask, neg_e, neg_m = (torch.cat([o[i] for o in outs]) for i in range(4))
        if neg is not None:
            neg_e, neg_m = batch(neg, "negative_prompt_embeds"), batch(neg_mask, "negative_prompt_attention_mask")
        return cond, cond_mask, neg_e, neg_m


# Text-encoder classes a model_index.json may name. The file is data: its class name is looked up only in
# this list (never getattr on a module with a name from a file), and no repository code is ever trusted.
TEXT_ENCODER_CLASSES = ("Gemma2Model", "Gemma2ForCausalLM", "GemmaModel", "GemmaForCausalLM")


def _text_encoder_class(index: Any, where: str) -> str | None:
    """The text-encoder class ``model_index.json`` names, checked against :data:`TEXT_ENCODER_CLASSES`."""
    entry = index.get("text_encoder") if isinstance(index, dict) else None
    if entry is None:
        return None
    if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == "transformers" and isinstance(entry[1], str)):
        raise ValueError(f"{where}: 'text_encoder' must be [\"transformers\", CLASS], got {entry!r}")
    if entry[1] not in TEXT_ENCODER_CLASSES:
        raise ValueError(f"{where}: text_encoder class {entry[1]!r} is not one neuralsim loads; expected one of "
                         f"{list(TEXT_ENCODER_CLASSES)}")
    return entry[1]


def _load_text_encoder(text_dir: Path, tokenizer_dir: Path, dtype: torch.dtype, class_name: str | None = None) -> tuple[Any, Any]:
    """Gemma-2 + tokenizer with transformers (the allow-listed class model_index.json names, else a causal LM),
    safetensors only, ``trust_remote_code=False``: nothing in the directory can choose code."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _check_safetensors_dir(text_dir, "text_encoder")
    if class_name is not None and class_name not in TEXT_ENCODER_CLASSES:
        raise ValueError(f"text_encoder class {class_name!r} is not one neuralsim loads; expected one of "
                         f"{list(TEXT_ENCODER_CLASSES)}")
    model_cls = getattr(transformers, class_name) if class_name else AutoModelForCausalLM
    model = model_cls.from_pretrained(text_dir, dtype=dtype, use_safetensors=True, trust_remote_code=False)
    tok_dir = tokenizer_dir if tokenizer_dir.is_dir() else text_dir
    return model.eval(), AutoTokenizer.from_pretrained(tok_dir, trust_remote_code=False)


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def window_tokens(config: SanaWMBackendConfig) -> int:
    """Tokens one denoise forward processes at a full window (sink + K + new), per batch element."""
    h, w = config.latent_size
    return (config.context_frames + 2) * h * w


__all__ = [
    "NAME",
    "SanaWMBackend",
    "SanaWMBackendConfig",
    "SanaWMState",
    "load_transformer_safetensors",
    "raw_to_diffusers_state_dict",
    "read_safetensors",
    "resolve_dtype",
    "param_count",
    "window_tokens",
]
