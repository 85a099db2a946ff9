"""`WorldModel`: the native latent world model (encode → init_state → step → decode) and its checkpoints.

A SANA-WM-style world model scaled by :class:`~neuralsim.config.WorldModelConfig`: a causal
deep-compression autoencoder (``neuralsim.autoencoder``), a causal hybrid gated-delta-rule/softmax
diffusion transformer with a constant-size streaming state (``neuralsim.dynamics``), flow matching
with diffusion forcing and a few-step Euler sampler (``neuralsim.sampler``), an offline prompt
encoder (``neuralsim.text``) and reward/termination heads.

Example:
    >>> model = WorldModel(WorldModelConfig.from_preset("tiny"))
    >>> g = torch.Generator().manual_seed(0)
    >>> state = model.init_state(2, frames=np.zeros((2, 1, 32, 32, 3), np.uint8), generator=g)
    >>> latent, state = model.step(state, np.zeros((2, 4), np.float32), generator=g)
    >>> frames = model.decode(latent[:, None], first_frame=False)  # (2, 1, 32, 32, 3) uint8
    >>> reward, done_prob = model.predict_reward_termination(state)

Streaming: ``step`` returns a *new* :class:`WorldState` and never modifies the one passed in, so
states can be kept, cloned and branched. Its cost and size do not grow with the episode length.

Mixed precision only through ``torch.autocast`` at the call site (the recurrent state stays fp32).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from neuralsim.actions import actions_to_vectors, discrete_to_vectors, released, validate_actions
from neuralsim.autoencoder import Autoencoder, ResBlock, psnr, ssim
from neuralsim.camera import (TranslationResponse, camera_intrinsics, camera_step, plucker_rays_torch,  # noqa: F401
                              rotation_warp_grid, translation_response)  # (camera_intrinsics re-exported)
from neuralsim.checkpoints import (CONFIG_NAME, WEIGHTS_NAME, count_weights, read_config, read_weights,  # noqa: F401
                                   resolve_checkpoint, write_checkpoint)
from neuralsim.config import WorldModelConfig
from neuralsim.critic import adversarial_losses, gradient_difference_loss
from neuralsim.frame_memory import FrameMemory, memory_frame_indices, relative_pose
from neuralsim.dynamics import DynamicsTransformer
from neuralsim.limits import MAX_DENOISE_STEPS
from neuralsim.reward import RewardModel, TerminationDetector, TargetTracker
from neuralsim.sampler import (
    add_context_noise,
    add_noise,
    diffusion_forcing_levels,
    posterior_skip,
    rand,
    randn,
    sampling_timesteps,
    velocity_target,
)
from neuralsim.prompt_start import PromptStart
from neuralsim.text import HashTextEncoder, TextEncoder, validate_prompts


class InputError(ValueError, TypeError):
    """Bad input to a public method: both a ``ValueError`` and (for dtype problems) a ``TypeError``."""


# ---------------------------------------------------------------------------------------------
# Streaming state
# ---------------------------------------------------------------------------------------------


#: The views around a start (``config.prompt_view_channels``) are drawn only where the start's camera is this level:
#: its generator learned from level turns on the spot, and a pitched camera's quarter-turned views overlap its own
#: view (at 49 degrees of pitch the view turned 90 degrees filled a fifth of the next frame with a wrong drawing).
VIEW_MAX_PITCH_DEG = 10.0


def tree_map(fn: Callable[..., torch.Tensor], *trees: Any) -> Any:
    """``fn`` over the tensors of nested dicts/lists/tuples (a world state's parts), keeping the structure.

    Args:
        fn: called with the tensors at one place of every tree (``fn(a, b)`` for ``tree_map(fn, ta, tb)``).
        trees: trees of the same structure; ``None`` stays ``None``.
    """
    first = trees[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return fn(*trees)
    if isinstance(first, dict):
        return {k: tree_map(fn, *(t[k] for t in trees)) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(tree_map(fn, *xs) for xs in zip(*trees))
    raise TypeError(f"unexpected {type(first).__name__} in WorldState")


def tree_leaves(tree: Any) -> list[torch.Tensor]:
    """The tensors of a tree, in :func:`tree_map`'s order."""
    out: list[torch.Tensor] = []
    tree_map(lambda t: out.append(t) or t, tree)
    return out


def canonical_layout(t: torch.Tensor) -> torch.Tensor:
    """``t`` with the strides of a fresh contiguous tensor (a copy only if it has others, e.g. a slice of a larger
    buffer, which a batch-1 tensor can be while counting as contiguous)."""
    expected, step = [], 1
    for size in reversed(t.shape):
        expected.append(step)
        step *= size
    return t if tuple(reversed(expected)) == t.stride() else t.clone(memory_format=torch.contiguous_format)


def where_rows(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Row ``b`` of ``new`` where ``mask [B]`` is True, else of ``old`` (tensors with the batch as their first dim)."""
    return torch.where(mask.view(-1, *([1] * (old.ndim - 1))), new, old)


def _check_finite(before: "WorldState", **parts: Any) -> None:
    """Raise ``FloatingPointError`` naming the first part (reward, termination, features, new state) with a NaN/inf.

    One host sync for all parts; the state passed to ``step`` is left as it was, so callers can go back to it.
    """
    names, sums = [], []
    for name, tree in parts.items():
        for t in tree_leaves(tree):
            if t.is_floating_point():
                names.append(name)
                sums.append(t.sum(dtype=torch.float32))  # NaN/inf survive a sum (cheaper than isfinite(t).all())
    finite = torch.isfinite(torch.stack(sums)) if sums else None
    if finite is not None and not bool(finite.all()):
        bad = names[finite.tolist().index(False)]
        raise FloatingPointError(f"the world model produced a non-finite {bad} at step {int(before.step.max())}; "
                                 "the new state is discarded (diverged weights or inputs?); the state passed in is unchanged")


class CameraAdvance(NamedTuple):
    """One latent frame of camera motion (:meth:`WorldModel._advance_camera`)."""

    c2w: torch.Tensor
    pitch: torch.Tensor
    rays: torch.Tensor
    rel_rays: torch.Tensor | None
    warp: torch.Tensor | None
    velocity: torch.Tensor | None  # with a translation response
    effective: torch.Tensor | None  # [B, 4] the motion the camera made (with a translation response)


@dataclass
class WorldState:
    """Everything a rollout carries between steps; every tensor has the batch as its first dim.

    Attributes:
        cache: per dynamics block: GDN ``{"S": [B, nh, D, D+1], "conv": [B, K-1, S, nh*D]}`` or softmax
            ``{"k", "v": [B, nh, sink+window, S, D], "frame": [B, sink+window] int64}``, plus
            ``"ffn": [B, Kt-1, S, width]`` with a temporal FFN conv. Fixed size.
        text_kv: per block prompt keys/values ``[B, heads, L, head_dim]`` (computed once per episode).
        text_mask: ``[B, L]`` bool; text_tokens: ``[B, L, text_width]``.
        step: ``[B]`` int64, latent frames committed to the current context (per row: rows may be reset
            separately; with ``config.context_window`` a full context restarts from its last frame).
        latent: ``[B, C, h, w]`` the last committed latent frame (normalised; decode it to see it).
        reward, termination_prob: ``[B]`` predicted for the last committed frame (0 with heads off).
        reward_memory: ``[B, hidden]`` the reward model's memory of the episode (None without one).
        c2w, pitch: camera worlds: ``[B, 4, 4]`` float64 camera-to-world pose relative to the first
            frame and ``[B]`` accumulated pitch (radians), as ``neuralsim.camera.CameraIntegrator``.
        velocity: with a translation response (``config.camera_velocity_gain``): ``[B, 2]`` float64 the camera's
            ``(forward, right)`` velocity in its heading, in units of the commanded full speed; else None.
        memory_frame, memory_c2w: with a frame memory (``config.frame_memory_width``): ``[B, 3, H, W]`` float32 the
            last real context frame in [-1, 1] and ``[B, 4, 4]`` float64 its camera pose; else None.
        memory_depth: with a depth-aware memory (``config.frame_memory_depth_width``): ``[B, H, W]`` float32 that
            frame's depth, computed once; else None.
        memory_earlier, memory_earlier_pose, memory_earlier_depth: with ``config.frame_memory_frames = K > 1``: the
            memory's earlier real context frames ``[B, K-1, 3, H, W]`` float32, oldest first
            (:func:`neuralsim.frame_memory.memory_frame_indices`), their cameras in the last frame's camera frame
            ``[B, K-1, 4, 4]`` float64 (relative, so a context restart that rebases ``memory_c2w`` moves them too) and
            their depths ``[B, K-1, H, W]`` (None without a depth net); else None. With a view generator
            (``config.prompt_view_channels``) the views around the start come first (``V =
            len(config.prompt_view_yaws_deg)`` more slots, ``[B, V + K-1, ...]``): drawn from the prompt, posed as the
            last frame's camera turned by each yaw; a row started without a prompt holds the last frame there at the
            identity pose (skipped by decode).
    """

    cache: list[dict[str, torch.Tensor]]
    text_kv: list[tuple[torch.Tensor, torch.Tensor]]
    text_mask: torch.Tensor
    text_tokens: torch.Tensor
    step: torch.Tensor
    latent: torch.Tensor
    reward: torch.Tensor
    termination_prob: torch.Tensor
    c2w: torch.Tensor | None = None
    pitch: torch.Tensor | None = None
    reward_memory: torch.Tensor | None = None
    velocity: torch.Tensor | None = None
    memory_frame: torch.Tensor | None = None
    memory_c2w: torch.Tensor | None = None
    memory_depth: torch.Tensor | None = None
    memory_earlier: torch.Tensor | None = None
    memory_earlier_pose: torch.Tensor | None = None
    memory_earlier_depth: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.step.shape[0])

    def _map(self, fn: Callable[..., torch.Tensor], *others: "WorldState") -> "WorldState":
        return WorldState(**{f.name: tree_map(fn, getattr(self, f.name), *(getattr(o, f.name) for o in others))
                             for f in dataclasses.fields(self)})

    def clone(self) -> "WorldState":
        """A deep copy (tensors cloned)."""
        return self._map(torch.clone)

    def to(self, device: torch.device | str) -> "WorldState":
        return self._map(lambda t: t.to(device))

    def merge(self, mask: torch.Tensor | np.ndarray | Sequence[bool], other: "WorldState") -> "WorldState":
        """A new state whose rows come from ``other`` where ``mask`` is True and from ``self`` elsewhere.

        Args:
            mask: ``[B]`` bool (e.g. the envs being reset).
            other: a state with the same batch size, or with one row per True of ``mask`` (e.g. freshly
                initialised for the envs being reset).
        """
        if not isinstance(other, WorldState):
            raise TypeError(f"other must be a WorldState, got {type(other).__name__}")
        mask = torch.as_tensor(np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask))
        if mask.dtype != torch.bool or mask.shape != (self.batch_size,):
            raise ValueError(f"mask must be a bool tensor of shape ({self.batch_size},), got {mask.dtype} {tuple(mask.shape)}")
        if other.batch_size == int(mask.sum()) != self.batch_size:  # row i of `other` for the i-th masked row
            rows = torch.from_numpy(np.maximum(np.cumsum(mask.numpy()) - 1, 0))
            other = other._map(lambda t: t.index_select(0, rows.to(t.device)))
        if other.batch_size != self.batch_size:
            raise ValueError(f"other has batch size {other.batch_size}, expected {self.batch_size} or {int(mask.sum())}")
        mask = mask.to(self.step.device)
        return self._map(lambda s, o: where_rows(mask, o.to(s.device), s), other)

    def nbytes(self) -> int:
        """Bytes held by all tensors of the state."""
        return sum(t.numel() * t.element_size() for f in dataclasses.fields(self) for t in tree_leaves(getattr(self, f.name)))


# ---------------------------------------------------------------------------------------------
# Camera: the poses, rays and warps are neuralsim.camera's; resampling latents at a warp is the model's
# ---------------------------------------------------------------------------------------------


def warp_latents(latents: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Resample ``latents [B, T, C, h, w]`` at ``grid [B, T, h, w, 2]`` (bilinear; the edge extends into what a
    turn reveals)."""
    B, T = latents.shape[:2]
    out = F.grid_sample(latents.flatten(0, 1).float(), grid.flatten(0, 1).to(latents.device), mode="bilinear",
                        padding_mode="border", align_corners=True)
    return out.unflatten(0, (B, T))


# ---------------------------------------------------------------------------------------------
# The world model
# ---------------------------------------------------------------------------------------------


GATE_BOUND = 4.0  # the changes-only refiner's gate lies in [-GATE_BOUND, GATE_BOUND] (see LatentRefiner.forward)
CORRECTION_BOUND = 1.0  # ... and its correction in (-CORRECTION_BOUND, CORRECTION_BOUND), latent std units


class _ChangeBlock(nn.Module):
    """SiLU → conv3×3, twice, plus the identity; no norms, no biases, so zero in gives zero out (the changes-only refiner)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class LatentRefiner(nn.Module):
    """A small conv net at the latent's full resolution that corrects the transformer's x0 estimate.

    The transformer reads 2×2 latent patches (16 tokens per frame), so motion within a patch (a turn of a few
    pixels) is hard for it to place; a few 3×3 convs over the previous latent, that latent turned by the camera
    (bilinear, with the flow of the turn as two more channels) and the estimate place it where it belongs. FiLM
    from the action and the noise level. The output layer starts at zero: a refiner added to a trained model
    leaves its outputs unchanged until it is trained.

    ``reads_changes``: the convs see only changes (estimate − previous, turned − previous, the flow), the previous
    latent only gates them (multiplicatively), the action only scales them, and there are no biases or norms, so
    when nothing changes (an idle step: the estimate is the previous latent, no turn) the correction is exactly
    zero. The first form learned a small steady correction there that added up over idle steps (measured: 4×
    the idle drift of the transformer alone after 16 steps).
    """

    def __init__(self, latent_channels: int, action_dim: int, channels: int, blocks: int = 2,
                 reads_changes: bool = False) -> None:
        super().__init__()
        self.reads_changes = reads_changes
        C = latent_channels
        if reads_changes:
            self.conv_in = nn.Conv2d(2 * C + 2, channels, 3, padding=1, bias=False)
            self.gate = nn.Conv2d(C, channels, 3, padding=1)  # from the previous latent: where the changes matter
            self.film = nn.Linear(action_dim + 2, channels)  # action, action known, tau → scale only
            self.blocks = nn.Sequential(*[_ChangeBlock(channels) for _ in range(blocks)])
            self.conv_out = nn.Conv2d(channels, C, 3, padding=1, bias=False)
        else:
            self.conv_in = nn.Conv2d(3 * C + 2, channels, 3, padding=1)
            self.film = nn.Linear(action_dim + 2, 2 * channels)  # action, action known, tau → scale, shift
            self.blocks = nn.Sequential(*[ResBlock(channels) for _ in range(blocks)])
            self.conv_out = nn.Conv2d(channels, C, 3, padding=1)
        for p in (*self.film.parameters(), *self.conv_out.parameters()):
            nn.init.zeros_(p)

    def forward(self, prev: torch.Tensor, x0: torch.Tensor, grid: torch.Tensor | None, cond: torch.Tensor) -> torch.Tensor:
        """``prev``, ``x0`` ``[N, C, h, w]``; ``grid [N, h, w, 2]`` (the camera's turn, or None) ``cond [N, A+2]`` →
        the correction to add to ``x0``."""
        if grid is None:
            turned, flow = prev, prev.new_zeros(prev.shape[0], 2, *prev.shape[2:])
        else:
            turned = F.grid_sample(prev, grid.to(prev.dtype), mode="bilinear", padding_mode="border", align_corners=True)
            h, w = prev.shape[2:]
            ys, xs = torch.linspace(-1, 1, h, device=prev.device), torch.linspace(-1, 1, w, device=prev.device)
            identity = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2): x, y as grid_sample
            flow = (grid.to(prev.dtype) - identity).permute(0, 3, 1, 2)
        film = self.film(cond).unsqueeze(-1).unsqueeze(-1)
        if self.reads_changes:
            # The gate is bounded: unbounded, the correction grew with the square of the latent's scale, and a
            # 10,000-step dream that drifted to twice the usual scale diverged at step 1,510 (measured). Trained
            # gates stay within ±3.6 on real latents, so the bound changes nothing there.
            gate = F.hardtanh(self.gate(prev), -GATE_BOUND, GATE_BOUND)
            h = self.conv_in(torch.cat([x0 - prev, turned - prev, flow], dim=1)) * (1 + gate) * (1 + film)
            # ... and so is the correction (softly, in units of the latent's std): it reads changes and writes changes,
            # a loop that, unbounded, amplified a drifting dream until it diverged; on real latents 99.9 % of its
            # values are below 0.29, which the bound shortens by 3 %. Bounded, that dream stays finite but still
            # ends in a saturated frame after ~3,000 steps (0.3 instead of 1 too): why this form is not shipped.
            return CORRECTION_BOUND * torch.tanh(self.conv_out(F.silu(self.blocks(h))) / CORRECTION_BOUND)
        scale, shift = film.chunk(2, dim=1)
        h = self.conv_in(torch.cat([prev, turned, x0, flow], dim=1)) * (1 + scale) + shift
        return self.conv_out(F.silu(self.blocks(h)))


class _Head(nn.Module):
    """Scalar prediction from the pooled features of a committed frame."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)



def _reward_model(config: WorldModelConfig) -> nn.Module | None:
    """The separate reward model the config asks for (``reward_model_kind``), or None."""
    if not config.reward_model_channels:
        return None
    if config.reward_model_kind == "recurrent":
        return RewardModel(config.latent_channels, config.action_dim, config.reward_model_channels, config.reward_model_hidden)
    task = config.reward_task
    response = TranslationResponse.from_spec(task)
    H, W = config.image_size
    return TargetTracker(config.latent_channels, config.action_dim, config.reward_model_channels, task,
                         latent_size=(H // config.spatial_stride, W // config.spatial_stride),
                         translation_speed=config.camera_translation_speed, rotation_speed_deg=config.camera_rotation_speed_deg, response=response,
                         dream_trust=config.reward_dream_trust,
                         view_tan=math.tan(math.radians(config.camera_fovy_deg) / 2) * W / H,
                         range_calibration=config.reward_range_calibration)


class WorldModel(nn.Module):
    """The native neuralsim world model (see module docstring).

    Args:
        config: the architecture.
        text_encoder: a :class:`~neuralsim.text.TextEncoder` to use instead of the built-in
            :class:`~neuralsim.text.HashTextEncoder` (its ``width``/``max_tokens`` must match the
            config; if it is an ``nn.Module`` its weights are part of the checkpoint).
    """

    # neuralsim.session.DreamModel: mixed precision through torch.autocast at the call site; a first frame can be
    # generated (from a prompt, or unconditionally)
    uses_autocast = True
    can_generate_start = True

    def __init__(self, config: WorldModelConfig, text_encoder: TextEncoder | None = None) -> None:
        super().__init__()
        if not isinstance(config, WorldModelConfig):
            raise TypeError(f"config must be a WorldModelConfig, got {type(config).__name__}")
        self.config = config
        self.autoencoder = Autoencoder(config)
        self.dynamics = DynamicsTransformer(config)
        if text_encoder is None:
            text_encoder = HashTextEncoder(width=config.text_width, max_tokens=config.text_max_tokens,
                                           vocab=config.text_vocab, hidden=config.text_hidden, layers=config.text_layers)
        if text_encoder.width != config.text_width or text_encoder.max_tokens != config.text_max_tokens:
            raise ValueError(f"text_encoder gives {text_encoder.max_tokens} tokens of width {text_encoder.width}; "
                             f"the config expects {config.text_max_tokens} of width {config.text_width}")
        self.text_encoder = text_encoder
        self.null_text = nn.Parameter(torch.randn(config.text_width) * 0.02)  # the "no prompt" token
        self.refiner = (LatentRefiner(config.latent_channels, config.action_dim, config.refiner_channels,
                                      reads_changes=config.refiner_reads_changes)
                        if config.refiner_channels else None)
        self.reward_head = _Head(config.width) if config.reward_head else None
        self.termination_head = _Head(config.width) if config.termination_head else None
        self.reward_model = _reward_model(config)
        self.termination_detector = (TerminationDetector(config.termination_detector_channels, tuple(config.image_size))
                                     if config.termination_detector_channels else None)
        self.prompt_start = (PromptStart(self.latent_shape, config.prompt_start_channels,
                                         max_tokens=config.prompt_start_tokens, vocab=config.text_vocab,
                                         text_hidden=config.text_hidden) if config.prompt_start_channels else None)
        self.prompt_views = (PromptStart(self.latent_shape, config.prompt_view_channels,
                                         max_tokens=config.prompt_start_tokens, vocab=config.text_vocab,
                                         text_hidden=config.text_hidden, reference=True)
                             if config.prompt_view_channels else None)
        self.frame_memory = (FrameMemory(config.frame_memory_width, config.camera_fovy_deg,
                                         config.camera_translation_speed, config.frame_memory_depth_width,
                                         gate=config.frame_memory_gate, depth_refine=config.frame_memory_depth_refine,
                                         range_steps=config.frame_memory_range_steps,
                                         floor_height=config.frame_memory_floor_height,
                                         floor_net_width=config.frame_memory_floor_net_width,
                                         stand_min_depth=config.frame_memory_stand_min_depth)
                             if config.frame_memory_width else None)
        # `step` runs the per-frame fast path of the dynamics (same numbers as its reference `forward`); False
        # runs the reference, for tests and debugging.
        self.fast_streaming = True
        # `decode` hands the decoder channels-last (NHWC) tensors: oneDNN's CPU convolutions run faster on them
        # (1.5x at 16-64 frames of contiguous latents; `step`'s latents already come in this layout). Same
        # numbers up to float rounding: a uint8 pixel may differ by 1 level.
        self.channels_last_decode = True
        # Ablation switch (benchmarks/fidelity.py): True zeroes every camera ray the dynamics reads (absolute and
        # relative), so a run measures what the ray path contributes.
        self.ablate_rays = False
        self._compiled_frame: Callable[..., Any] | None = None  # set by compile_streaming()
        self._compiled_parts: dict[str, Callable[..., Any]] = {}  # the work around it in `step`, likewise

    # --- small helpers ----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.null_text.device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of one latent frame."""
        return (self.config.latent_channels, *self.config.latent_size)

    @property
    def action_spec(self) -> dict:
        """The action space the model learned (a :mod:`neuralsim.actions` spec)."""
        return self.config.action_spec

    @property
    def text_conditioned(self) -> bool:
        return bool(self.config.text_width)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def compile_streaming(self, enabled: bool = True) -> "WorldModel":
        """Run the per-frame dynamics pass of :meth:`step` through ``torch.compile`` (inductor); off by default (the
        envs' ``compile=True`` calls it).

        The compiled code reads the weights at every call: models of one config share it (the second
        compiles nothing) and weights changed in place need no recompile (tested).
        The first :meth:`step` at each batch size compiles (15-80 s on a small CPU, less once inductor's on-disk
        cache holds the code; needs a C++ compiler: the kernels are called through inductor's ``cpp_wrapper``).
        Outputs differ from eager by float rounding (~1e-6) and are deterministic: the same seed gives the same
        rollout. Only :meth:`step` runs compiled (the pass, and the camera's rays, the pass's per-frame context, the
        refiner and the reward model around it), so a batch size
        compiles once (a graph per pass kind, denoise and commit) and is never recompiled by a context restart or
        a partial reset; starting episodes (any number of reset rows) stays eager. Measured on the shipped model
        (one thread; README "Performance"): ``step`` 2.2x faster at batch 1 (a single env's ``env.step``, with
        decoding, 1.5x; with two passes per step, before the one-pass model: now its 1,440-frame rollout gains
        1.09x), up to 1.1x at batch 16; at 64 a latent-observation env step 1.13x (fp32) to 1.21x (bf16),
        an rgb one 1.01-1.05x. The decoder is not compiled: compiled, the shipped one decoded no faster at batch 1
        and slower at 16-64.

        Args:
            enabled: False restores the eager path.

        Returns:
            ``self``.
        """
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
        self._compiled_frame, self._compiled_parts = None, {}
        if enabled:
            # No guards on torch.nn's own modules: the parameters stay inputs of the graph (measured: a second model
            # of the same config reuses the code and gets its own outputs), so guarding them would only recompile.
            # cpp_wrapper: inductor calls the kernels of a graph from C++, not from a generated Python function that
            # checks and reinterprets every buffer (~700 Python calls per batch-1 step); measured on the shipped model
            # at batch 1: a step 1.16x faster, the same outputs, the same cold compile (76 vs 74 s; section 16).
            options: dict[str, Any] = {"freezing": True, "cpp_wrapper": True}
            skip_inbuilt = getattr(torch.compiler, "skip_guard_on_inbuilt_nn_modules_unsafe", None)  # torch >= 2.7
            if skip_inbuilt is not None:
                options["guard_filter_fn"] = skip_inbuilt
            compiled = functools.partial(torch.compile, dynamic=False, options=options)
            self._compiled_frame = compiled(self.dynamics.forward_frame)
            # The eager work around the pass in `step` (the camera's poses and rays, the pass's per-frame context,
            # the refiner, the reward model) cost as much as the compiled pass itself at batch 1 (3.5 ms): compiled
            # too, a step took 6.5 instead of 7.7 ms (eager 9.9; docs/performance.md section 14). Starts stay eager.
            self._compiled_parts = {"advance_camera": compiled(self._advance_camera),
                                    "prepare_frame": compiled(self.dynamics.prepare_frame),
                                    "refine": compiled(self._refine), "reward_step": compiled(self._reward_step)}
        return self

    def _latent_affine(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        scale = torch.as_tensor(cfg.latent_scale, dtype=torch.float32, device=device).reshape(-1, 1, 1)
        shift = torch.as_tensor(cfg.latent_shift, dtype=torch.float32, device=device).reshape(-1, 1, 1)
        return scale, shift

    def set_latent_normalization(self, scale: float | Sequence[float] | torch.Tensor,
                                 shift: float | Sequence[float] | torch.Tensor) -> None:
        """Store latent statistics: ``normalised = (raw - shift) * scale`` (floats or one per channel).

        The trainer calls this after the autoencoder stage (e.g. ``scale = 1/std``, ``shift = mean``).
        """

        def as_field(x):
            x = torch.as_tensor(x, dtype=torch.float64).reshape(-1).tolist()
            return x[0] if len(x) == 1 else tuple(x)

        self.config = self.config.replace(latent_scale=as_field(scale), latent_shift=as_field(shift))

    def _frames_to_float(self, frames: Any, name: str = "frames") -> torch.Tensor:
        """Validate uint8 ``[B, T, H, W, 3]`` (torch or numpy) → float ``[B, T, 3, H, W]`` in [-1, 1]."""
        cfg = self.config
        H, W = cfg.image_size
        k = cfg.frames_per_latent
        expected = f"uint8 [B, T, {H}, {W}, 3] with T = 1 + n*{k}"
        if isinstance(frames, np.ndarray):
            if frames.dtype != np.uint8:
                raise InputError(f"{name} must be {expected}; got dtype {frames.dtype}")
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        elif not isinstance(frames, torch.Tensor):
            raise InputError(f"{name} must be a numpy array or torch tensor ({expected}); got {type(frames).__name__}")
        if frames.dtype != torch.uint8:
            raise InputError(f"{name} must be {expected}; got dtype {frames.dtype}")
        if (frames.ndim != 5 or tuple(frames.shape[2:]) != (H, W, 3) or frames.shape[0] < 1 or frames.shape[1] < 1
                or (frames.shape[1] - 1) % k):
            raise InputError(f"{name} must be {expected}; got shape {tuple(frames.shape)}")
        x = frames.to(self.device).permute(0, 1, 4, 2, 3).float()  # (B, T, 3, H, W)
        return x / 127.5 - 1.0

    def _tokens(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, T, C, h, w]`` → ``[B, T, S, C p²]``: ``p × p`` patches (``patch_size``), row-major."""
        p = self.config.patch_size
        if p == 1:
            return latents.flatten(3).transpose(2, 3)
        B, T, C, h, w = latents.shape
        x = latents.reshape(B, T, C, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)  # (B, T, gh, gw, C, p, p)
        return x.reshape(B, T, (h // p) * (w // p), C * p * p)

    def _untokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, T, S, C p²]`` → ``[B, T, C, h, w]`` (inverse of :meth:`_tokens`)."""
        p = self.config.patch_size
        if p == 1:
            return tokens.transpose(2, 3).unflatten(3, self.config.latent_size)
        B, T = tokens.shape[:2]
        (gh, gw), C = self.config.token_grid, self.config.latent_channels
        x = tokens.reshape(B, T, gh, gw, C, p, p).permute(0, 1, 4, 2, 5, 3, 6)  # (B, T, C, gh, p, gw, p)
        return x.reshape(B, T, C, gh * p, gw * p)

    def _prev_tokens(self, tokens: torch.Tensor, generator: torch.Generator | None,
                     levels: torch.Tensor | None = None, warp: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The previous frame of every frame of ``tokens [B, T, S, C]`` (zeros before the first), warped by
        ``warp [B, T, h, w, 2]`` when given → ``(input: noise-augmented at the context level (or per-frame
        ``levels [B, T]``), residual base: clean)``."""
        base = torch.cat([torch.zeros_like(tokens[:, :1]), tokens[:, :-1]], dim=1)
        if warp is not None:
            base = self._tokens(warp_latents(self._untokens(base), warp))
        if levels is None:
            return add_context_noise(base, self.config.context_noise, generator=generator), base
        return add_noise(base, randn(tuple(base.shape), generator=generator, device=base.device), levels), base

    def _base_warp(self, warp: torch.Tensor | None) -> torch.Tensor | None:
        """The grid that turns the residual's base (the previous latent): ``warp`` with ``prev_frame_warp``, else None."""
        return warp if self.config.prev_frame_warp else None

    def _x0_estimate(self, out: torch.Tensor, x: torch.Tensor, tau: torch.Tensor | float,
                     base: torch.Tensor) -> torch.Tensor:
        """``x0_residual``: the network's output ``out`` → its x0 estimate, for the noisy input ``x`` at ``tau``
        (a float, or ``[B, T]`` for tokens ``[B, T, S, C]``) and the previous latent ``base``.

        ``x0 = base + out``; with ``skip_prior_var = v > 0`` the skip is instead the posterior mean of x0 given the
        previous latent (a frame's prior around it, variance ``v``) and the input (``x / (1 - tau)``, noise
        ``tau / (1 - tau)``): ``(tau² base + v (1 - tau) x) / a`` with ``a = v (1 - tau)² + tau²``, and the output is
        scaled by ``tau / √a``. Both factors are 1 at ``tau = 1``, so the one-step sample is what it was; at low
        noise the input carries the frame, which the patchified transformer cannot copy through its tokens
        (measured, shipped model: at tau = 0.1 its x0 error was 4× that of this posterior mean alone), so a
        second denoise pass can add detail to the one-step estimate instead of blurring it further.
        """
        if self.config.skip_prior_var == 0:
            return base + out.float()
        skip, scale = posterior_skip(base, x.float(), tau, self.config.skip_prior_var)
        return skip + scale * out.float()

    def _output_to_velocity(self, out: torch.Tensor, x: torch.Tensor, tau: float, base: torch.Tensor | None,
                            refine: Callable[[torch.Tensor, float], torch.Tensor] | None = None) -> torch.Tensor:
        """The network's output → the flow velocity at ``x`` (``tau > 0``): ``x0_residual`` predicts x0
        (:meth:`_x0_estimate`, then ``refine(x0, tau)`` with a refiner)."""
        if self.config.prediction == "velocity":
            return out.float()
        x0 = self._x0_estimate(out, x, tau, base)
        return (x - (x0 if refine is None else refine(x0, tau))) / tau

    def _refine(self, x0: torch.Tensor, prev: torch.Tensor, tau: torch.Tensor, action: torch.Tensor,
                known: torch.Tensor, grid: torch.Tensor | None) -> torch.Tensor:
        """The x0 estimate ``[B, T, S, C]`` corrected by the refiner (unchanged without one). ``prev``: the clean
        previous latent frames as tokens (not warped); ``tau``/``known`` ``[B, T]``; ``action [B, T, A]``;
        ``grid [B, T, h, w, 2]`` the camera's turn since the previous frame, or None."""
        if self.refiner is None:
            return x0
        B, T = x0.shape[:2]
        cond = torch.cat([action.float(), known.float()[..., None], tau.float()[..., None]], dim=-1).flatten(0, 1)
        delta = self.refiner(self._untokens(prev).flatten(0, 1), self._untokens(x0).flatten(0, 1),
                             None if grid is None else grid.flatten(0, 1), cond)
        return x0 + self._tokens(delta.unflatten(0, (B, T)).float())

    # --- autoencoder ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, frames: Any) -> torch.Tensor:
        """Frames ``uint8 [B, T, H, W, 3]`` (``T = 1 + n*frames_per_latent``) → normalised latents
        ``float32 [B, 1 + n, C, h, w]``. Causal (latent j sees only its own raw frames), deterministic.

        Raises:
            InputError (ValueError/TypeError): frames not uint8 ``[B, T, H, W, 3]`` with ``T = 1 + n*k``, B >= 1.
            FloatingPointError: the autoencoder produced NaN/inf (diverged weights).
        """
        z = self.autoencoder.encode(self._frames_to_float(frames)).float()
        if not bool(torch.isfinite(z.sum())):
            raise FloatingPointError("the autoencoder produced non-finite latents from finite frames (diverged weights?)")
        scale, shift = self._latent_affine(z.device)
        return (z - shift) * scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, first_frame: bool = True, context: Any = None) -> torch.Tensor:
        """Normalised latents ``[B, T_lat, C, h, w]`` → frames ``uint8 [B, T, H, W, 3]`` (torch).

        Args:
            first_frame: the first latent is the lone first frame (``T = 1 + (T_lat-1)*k``, the inverse
                of :meth:`encode`); False for latents produced by :meth:`step` (``T = T_lat*k``).
            context: the state :meth:`step` returned with ``latents`` (``neuralsim.session.DreamModel``): with a
                frame memory (``config.frame_memory_width``) a step's frame takes the remembered frame's pixels where
                the memory's gate opens (``config.frame_memory_gate``, :mod:`neuralsim.frame_memory`); otherwise unused.

        Raises:
            FloatingPointError: the decoder produced NaN/inf pixels (never silently clamped to black frames).
        """
        C, h, w = self.latent_shape
        if not isinstance(latents, torch.Tensor):
            latents = torch.as_tensor(np.asarray(latents))
        if latents.ndim != 5 or tuple(latents.shape[2:]) != (C, h, w) or not latents.is_floating_point():
            raise InputError(f"latents must be float [B, T_lat, {C}, {h}, {w}], got {latents.dtype} {tuple(latents.shape)}")
        scale, shift = self._latent_affine(self.device)
        z = latents.to(self.device).float() / scale + shift
        if self.channels_last_decode:  # channels-last storage (B, T, h, w, C) viewed as [B, T, C, h, w]
            z = z.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
        x = self.autoencoder.decode(z, first_frame=first_frame).float()  # (B, T, 3, H, W)
        if not bool(torch.isfinite(x.sum())):  # clamp would turn NaN into black frames and hide it
            raise FloatingPointError("the autoencoder produced non-finite pixels from finite latents (diverged or "
                                     "corrupted decoder weights?)" if bool(torch.isfinite(z.sum())) else
                                     "decode got non-finite latents (NaN/inf)")
        if (self.frame_memory is not None and isinstance(context, WorldState) and context.memory_frame is not None
                and not first_frame and x.shape[1] == 1):  # a step's frame, with the state it was drawn in
            rel = relative_pose(context.memory_c2w, context.c2w)
            frame = x[:, 0].clamp(-1, 1)
            for j in range(0 if context.memory_earlier is None else context.memory_earlier.shape[1]):
                # the views drawn from a prompt and the earlier frames first, oldest first: each newer frame's pixels
                # replace them where it sees them
                pose = context.memory_earlier_pose[:, j].to(rel.device, rel.dtype)
                same = (pose == torch.eye(4, dtype=pose.dtype, device=pose.device)).flatten(1).all(1)
                if bool(same.all()):
                    continue  # the last frame itself (a context shorter than the memory): it is applied below
                d = None if context.memory_earlier_depth is None else context.memory_earlier_depth[:, j].to(x.device)
                new = self.frame_memory(frame, context.memory_earlier[:, j].to(x.device), torch.linalg.inv(pose) @ rel,
                                        d)[0]
                # rows where this slot repeats the last frame (no view drawn, a short context) keep their frame
                frame = torch.where(same.to(x.device)[:, None, None, None], frame, new) if bool(same.any()) else new
            depth = None if context.memory_depth is None else context.memory_depth.to(x.device)
            x = self.frame_memory(frame, context.memory_frame.to(x.device), rel, depth)[0][:, None]
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 1, 3, 4, 2).contiguous()

    # --- conditioning inputs ----------------------------------------------------------------
    def _encode_text(self, prompts: list[str | None] | None, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated prompts (None entries = no prompt) → ``(tokens [B, L, text_width], mask [B, L])``."""
        cfg, L = self.config, self.config.text_max_tokens
        tokens = torch.zeros(batch_size, L, cfg.text_width, device=self.device)
        tokens[:, 0] = self.null_text
        mask = torch.zeros(batch_size, L, dtype=torch.bool, device=self.device)
        mask[:, 0] = True
        rows = [i for i, p in enumerate(prompts or []) if p is not None]
        if rows:
            enc, enc_mask = self.text_encoder.encode([prompts[i] for i in rows])
            index = torch.tensor(rows, device=self.device)
            tokens = tokens.index_copy(0, index, enc.to(tokens.dtype))
            mask = mask.index_copy(0, index, enc_mask.to(self.device))
        return tokens, mask

    def _validate_actions(self, actions: Any, batch_size: int, name: str) -> np.ndarray:
        try:
            return validate_actions(actions, self.config.action_spec, batch_size=batch_size, name=name)
        except (TypeError, ValueError) as exc:
            raise InputError(str(exc)) from None

    def _action_inputs(self, actions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Validated actions ``[N]``/``[N, A]`` → ``(conditioning [N, A] float32, camera motion [N, 4] float64 or None)``."""
        spec = self.config.action_spec
        vec = torch.from_numpy(actions_to_vectors(actions, spec)).to(self.device)
        if not self.config.camera:
            return vec, None
        if spec["type"] == "discrete":
            cam = discrete_to_vectors(actions, spec.get("start", 0))
        else:
            cam = np.asarray(actions, dtype=np.float64).reshape(len(actions), -1)
        return vec, torch.from_numpy(np.asarray(cam, dtype=np.float64)).to(self.device)

    def _translation_response(self) -> TranslationResponse | None:
        cfg = self.config
        if not (cfg.camera and cfg.camera_velocity_gain):
            return None
        return TranslationResponse(cfg.camera_velocity_gain, cfg.camera_acceleration_limit, cfg.camera_frame_time,
                                   cfg.camera_substeps)

    def _advance_camera(self, c2w: torch.Tensor, pitch: torch.Tensor, motion: torch.Tensor | None,
                        frames: int, velocity: torch.Tensor | None = None) -> "CameraAdvance":
        """Hold ``motion [B, 4]`` (None = still) for ``frames`` raw frames → a :class:`CameraAdvance`: the pose,
        pitch, rays ``[B, S, 6*k]``, relative rays ``[B, S, 6*k]``, warp grid ``[B, h, w, 2]``, and with a
        translation response the velocity after it and the effective motion (the mean over the raw frames).

        The rays of a latent frame are those of its ``k`` raw poses (a lone first frame repeats its pose), one
        per token; the relative rays are the same poses seen from the camera before the motion (the previous
        latent frame's), so they say where each token's content comes from; None unless ``prev_frame_input``
        reads them. Both are zeros with ``ablate_rays``. The warp grid (``prev_frame_warp`` or a refiner, else None) resamples the
        previous latent frame as seen after the rotation to the latent frame's last pose. With a translation
        response (:func:`neuralsim.camera.translation_response`) the camera moves as the world's servo moves it
        from ``velocity`` (None: at rest), also while ``motion`` is None (a still command: it coasts to a stop).
        """
        cfg, response = self.config, self._translation_response()
        start, poses, effective = c2w, [], []
        if response is not None and velocity is None:
            velocity = torch.zeros(c2w.shape[0], 2, dtype=torch.float64, device=c2w.device)
        for _ in range(frames):
            step = motion
            if response is not None:
                command = torch.zeros(c2w.shape[0], 4, dtype=torch.float64, device=c2w.device) if motion is None else motion
                step, velocity = translation_response(velocity, command, response,
                                                      translation_speed=cfg.camera_translation_speed,
                                                      rotation_speed_deg=cfg.camera_rotation_speed_deg)
                effective.append(step)
            if step is not None:
                c2w, pitch = camera_step(c2w, pitch, step, translation_speed=cfg.camera_translation_speed,
                                         rotation_speed_deg=cfg.camera_rotation_speed_deg)
            poses.append(c2w)
        poses = poses * (cfg.frames_per_latent // len(poses))  # first frame: its one pose k times
        rays = torch.cat([plucker_rays_torch(p, *cfg.token_grid, cfg.camera_fovy_deg) for p in poses], dim=-1)
        rel = None
        if cfg.prev_frame_input:  # only the direct path reads them: no work for models without it
            to_start = torch.linalg.inv(start.double())
            rel = torch.cat([plucker_rays_torch(to_start @ p, *cfg.token_grid, cfg.camera_fovy_deg) for p in poses],
                            dim=-1)
        warp = None
        if cfg.prev_frame_warp or cfg.refiner_channels:  # the refiner reads the turn too
            warp = rotation_warp_grid(torch.linalg.inv(start.double()) @ poses[-1], *cfg.latent_size, cfg.camera_fovy_deg)
        if self.ablate_rays:
            rays, rel = torch.zeros_like(rays), None if rel is None else torch.zeros_like(rel)
        mean_effective = torch.stack(effective).mean(0) if effective else None
        return CameraAdvance(c2w, pitch, rays, rel, warp, velocity, mean_effective)

    def _conditioning_vector(self, vec: torch.Tensor, effective: torch.Tensor | None) -> torch.Tensor:
        """The network's action input: with a translation response and Box camera actions, the commanded forward
        and strafe replaced by the motion that results (the coast after a release, the ramp from rest)."""
        if effective is None or self.config.action_spec["type"] == "discrete":
            return vec
        return torch.cat([effective[:, :2].to(vec.dtype), vec[:, 2:]], dim=-1)

    def _sequence_conditioning(self, batch_size: int, frames: int, actions: Any, name: str,
                               frame_poses: list[torch.Tensor] | None = None
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None,
                                          torch.Tensor | None, torch.Tensor | None, torch.Tensor | None,
                                          torch.Tensor | None]:
        """Actions between ``frames`` latent frames (``[B, frames-1, A]`` / ``[B, frames-1]``, or None) →
        ``(action [B, T, A], known [B, T], rays [B, T, S, 6k] | None, final c2w, final pitch,
        relative rays [B, T, S, 6k] | None, warp grids [B, T, h, w, 2] | None, final velocity | None)``.
        With a translation response the camera starts at rest (as an episode does) and ``action`` holds the
        motion that results (:meth:`_conditioning_vector`). ``frame_poses``: a list that gets each frame's camera
        ``c2w [B, 4, 4]`` appended, in order (with ``config.camera``)."""
        cfg, B, T = self.config, batch_size, frames
        action = torch.zeros(B, T, cfg.action_dim, device=self.device)
        known = torch.zeros(B, T, dtype=torch.bool, device=self.device)
        motion: torch.Tensor | None = None
        if actions is not None:
            arr = np.asarray(actions.detach().cpu() if isinstance(actions, torch.Tensor) else actions)
            per_step = () if cfg.action_spec["type"] == "discrete" else (cfg.action_dim,)
            if arr.shape != (B, T - 1, *per_step):
                raise InputError(f"{name} must have shape {(B, T - 1, *per_step)} (the actions between the "
                                 f"{T} latent frames), got {arr.shape}")
        if actions is not None and T > 1:
            flat = self._validate_actions(arr.reshape(B * (T - 1), *per_step), B * (T - 1), name)
            vec, cam = self._action_inputs(flat)
            action[:, 1:] = vec.view(B, T - 1, -1)
            known[:, 1:] = True
            motion = None if cam is None else cam.view(B, T - 1, 4)
        if not cfg.camera:
            return action, known, None, None, None, None, None, None
        c2w = torch.eye(4, dtype=torch.float64, device=self.device).repeat(B, 1, 1)
        pitch = torch.zeros(B, dtype=torch.float64, device=self.device)
        first = self._advance_camera(c2w, pitch, None, 1)
        # the first frame: at rest (a still command from rest leaves the velocity at zero)
        c2w, pitch, velocity = first.c2w, first.pitch, first.velocity
        rays, rels, warps = [first.rays], [first.rel_rays], [first.warp]
        poses = [] if frame_poses is None else frame_poses
        poses.append(c2w)
        for t in range(1, T):
            adv = self._advance_camera(c2w, pitch, None if motion is None else motion[:, t - 1], cfg.frames_per_latent,
                                       velocity)
            c2w, pitch, velocity = adv.c2w, adv.pitch, adv.velocity
            poses.append(c2w)
            rays.append(adv.rays)
            rels.append(adv.rel_rays)
            warps.append(adv.warp)
            if adv.effective is not None and motion is not None:
                action[:, t] = self._conditioning_vector(action[:, t], adv.effective)
        rel = None if rels[0] is None else torch.stack(rels, dim=1)
        warp = None if warps[0] is None else torch.stack(warps, dim=1)
        return action, known, torch.stack(rays, dim=1), c2w, pitch, rel, warp, velocity

    def _heads(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``features [..., d]`` → ``(reward (zeros if disabled), termination logit or None if disabled)``."""
        zeros = features.new_zeros(features.shape[:-1]).float()
        reward = self.reward_head(features).float() if self.reward_head is not None else zeros
        logit = self.termination_head(features).float() if self.termination_head is not None else None
        return reward, logit

    @staticmethod
    def _prob(logit: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(like) if logit is None else torch.sigmoid(logit)

    # --- streaming --------------------------------------------------------------------------
    def _generate(self, state: WorldState, action: torch.Tensor, known: torch.Tensor, rays: torch.Tensor | None,
                  generator: torch.Generator | None, steps: int, rel_rays: torch.Tensor | None = None,
                  warp: torch.Tensor | None = None, compiled_ok: bool = True, **updates: Any
                  ) -> tuple[torch.Tensor, WorldState]:
        """Denoise one latent frame against ``state`` with ``steps`` Euler passes and commit it.

        Separate commit: after denoising, the clean frame is re-noised to ``context_noise`` and run
        through the network once more to write it into the state (``steps + 1`` passes). Fused commit
        (``config.fused_commit`` and ``steps >= 2``): the schedule ends ``[..., context_noise, 0]``,
        so the last pass already sees the frame at the context level; its state update is kept
        (``steps`` passes; the committed frame is the sample at ``context_noise``, as in training).
        Commit from the denoise pass (``config.commit_from_denoise``): the first pass (tau = 1) writes the state,
        which then holds the previous frames and the actions; the new frame reaches the next step through the
        direct path (``steps`` passes: one per env step with one step). A row whose context restarts
        (``context_window``) still commits its frame in a pass of its own, as a context's first frame.
        ``compiled_ok=False`` keeps the passes eager under :meth:`compile_streaming` (a start: its batch is the
        number of reset rows, which varies; compiling for each would stall the env).
        """
        cfg = self.config
        B, S, C = state.batch_size, cfg.tokens_per_frame, cfg.token_channels
        from_denoise = cfg.commit_from_denoise
        fused = not from_denoise and cfg.fused_commit and steps >= 2 and cfg.context_noise > 0
        inputs = dict(start=state.step, action=action, action_known=known, rays=rays, text=state.text_kv,
                      text_mask=state.text_mask, cache=state.cache)
        base, refine = None, None
        # under compile_streaming, a step's parts around the pass run compiled too (a start's stay eager)
        parts = self._compiled_parts if compiled_ok and self.fast_streaming else {}
        if cfg.prev_frame_input:  # the last committed frame (zeros before the first), lightly noised as in training
            latent = state.latent[:, None].float()
            if self.refiner is not None:
                prev_clean = self._tokens(latent)
                refiner = parts.get("refine", self._refine)

                def refine(x0: torch.Tensor, tau: float) -> torch.Tensor:
                    return refiner(x0, prev_clean, torch.full((B, 1), tau, device=self.device), action, known, warp)
            if warp is not None and cfg.prev_frame_warp:  # (B, 1, h, w, 2): the last frame as the turned camera would see it
                latent = warp_latents(latent, warp)
            base = self._tokens(latent)  # (B, 1, S, C)
            prev = add_context_noise(base, cfg.context_noise, generator=generator)
            inputs.update(prev=prev, rel_rays=rel_rays)
        if self.fast_streaming:  # the per-frame twin of `dynamics.forward` (same numbers; see dynamics.prepare_frame)
            compiled = self._compiled_frame if compiled_ok else None
            if compiled is not None:
                # The compiled pass guards on its inputs' strides, and the state's tensors come with others depending
                # on what made them (a batch-1 slice of a concatenation, inductor's buffers, a merge, a transpose): one
                # layout here keeps a batch size to one compile, whatever the path (the prompt's keys/values
                # too: before, a row's autoreset recompiled the shipped model's pass once, 6 s, mid-run).
                for key in ("cache", "text", "text_mask"):
                    inputs[key] = tree_map(canonical_layout, inputs[key])
            prepare = parts.get("prepare_frame", self.dynamics.prepare_frame)
            frame = prepare(**inputs)

            def net(x: torch.Tensor, tau: float, commit: bool, other: dict | None = None) -> tuple[torch.Tensor, Any, Any]:
                tau_t = torch.full((B, 1), tau, device=self.device)
                ctx = frame if other is None else prepare(**other)
                if compiled is not None:
                    return compiled(x, tau_t, ctx, commit=commit)
                return self.dynamics(x, tau_t, frame=ctx, commit=commit)  # a module call: hooks see every pass
        else:
            def net(x: torch.Tensor, tau: float, commit: bool, other: dict | None = None) -> tuple[torch.Tensor, Any, Any]:
                return self.dynamics(x, torch.full((B, 1), tau, device=self.device), **(other or inputs))
        x = randn((B, 1, S, C), generator=generator, device=self.device)
        taus = sampling_timesteps(steps, shift=cfg.flow_shift, end=cfg.context_noise if fused else 0.0).tolist()
        features = cache = None
        for i, (tau, tau_next) in enumerate(zip(taus[:-1], taus[1:])):
            commit = (fused and i == steps - 1) or (from_denoise and i == 0)
            out, pass_features, pass_cache = net(x, tau, commit)
            if commit:
                features, cache = pass_features, pass_cache
            x = x + (tau_next - tau) * self._output_to_velocity(out, x, tau, base, refine)
        if not bool(torch.isfinite(x).all()):
            raise FloatingPointError(f"the world model produced a non-finite latent at step {int(state.step.max())}; "
                                     "the new state is discarded (diverged weights or inputs?); the state passed in "
                                     "is unchanged")
        commit_inputs = None  # None: the denoise passes' inputs
        full = state.step >= cfg.context_window if cfg.context_window else None
        restart = full is not None and bool(full.any())
        if restart:
            # Rows whose context is full commit this frame as the first of a new context, as init_state(latents=...)
            # would: trained on windows of 16 frames, the recurrent state drifts out of range over hundreds of them.
            commit_inputs, updates = self._restart_inputs(state, full, x, inputs, updates, generator)
            fused = False  # (a fused last pass committed into the old context)
        if restart or not (fused or from_denoise):
            x_ctx = add_context_noise(x, cfg.context_noise, generator=generator)
            _, commit_features, commit_cache = net(x_ctx, cfg.context_noise, True, commit_inputs)
            if from_denoise:  # only the restarting rows take the commit pass's state
                cache = [{k: where_rows(full, c[k], v) for k, v in old.items()} for c, old in zip(commit_cache, cache)]
                features = where_rows(full, commit_features, features)
            else:
                features, cache = commit_features, commit_cache
        reward, logit = self._heads(features[:, -1])
        # The recurrent GDN states plus the last hidden features (every new cache entry feeds them): cheap, one sync.
        _check_finite(state, reward=reward, termination=logit, features=features[:, -1],
                      state=[c["S"] for c in cache if "S" in c])
        latent = self._untokens(x)[:, 0]  # (B, C, h, w)
        step = updates.pop("step", state.step) + 1
        prob = self._prob(logit, reward)
        if self.reward_model is not None:
            reward_step = parts.get("reward_step", self._reward_step)
            reward, prob, updates["reward_memory"] = reward_step(state, latent, action[:, -1] * known[:, -1, None])
        new = dataclasses.replace(state, cache=cache, step=step, latent=latent, reward=reward,
                                  termination_prob=prob, **updates)
        return latent, new

    def _reward_step(self, state: WorldState, latent: torch.Tensor, action: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The reward model over the transition ``state.latent -> latent`` under ``action [B, A]`` →
        ``(reward [B], termination probability [B], memory)``. A state without memory (a generated first
        frame) opens it with this frame: no transition yet, so reward and probability 0."""
        rm = self.reward_model
        if state.reward_memory is None:
            _, _, memory = rm(latent[:, None], action[:, None, :][:, :0])
            zeros = torch.zeros(latent.shape[0], device=self.device)
            return zeros, zeros, memory
        reward, logit, memory = rm.step(state.latent, latent, action, state.reward_memory)
        _check_finite(state, reward=reward, termination=logit)
        return reward.float(), torch.sigmoid(logit.float()), memory.float()

    def _restart_inputs(self, state: WorldState, restart: torch.Tensor, x: torch.Tensor, inputs: dict[str, Any],
                        updates: dict[str, Any], generator: torch.Generator | None
                        ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The commit pass's inputs with the rows of ``restart [B]`` (bool) starting a new context from the frame
        ``x [B, 1, S, C]``: an empty cache, frame index 0, the unknown action, the first pose, no previous frame
        (what :meth:`init_state` gives a one-frame context). Returns ``(inputs, updates)``: the state ``updates``
        of the step (camera pose) with, for those rows, the first pose and ``step`` counting from 0 again."""
        B = state.batch_size
        action0, known0, rays0, c2w0, pitch0, rel0, _, _ = self._sequence_conditioning(B, 1, None, "actions")

        def pick(fresh: Any, old: Any) -> Any:
            if old is None:
                return None
            return where_rows(restart, fresh.to(old.dtype), old)

        empty = self.dynamics.empty_cache(B, self.device)
        cache = [{k: pick(empty[i][k], v) for k, v in c.items()} for i, c in enumerate(inputs["cache"])]
        mixed = {**inputs, "start": pick(torch.zeros_like(state.step), state.step), "cache": cache,
                 "action": pick(action0, inputs["action"]), "action_known": pick(known0, inputs["action_known"]),
                 "rays": pick(rays0, inputs["rays"])}
        if self.config.prev_frame_input:
            mixed["prev"] = pick(self._prev_tokens(x, generator)[0], inputs["prev"])
            mixed["rel_rays"] = pick(rel0, inputs.get("rel_rays"))
        updates = {**updates, "step": pick(torch.zeros_like(state.step), state.step)}
        if updates.get("c2w") is not None:
            c2w = pick(c2w0, updates["c2w"])
            if state.memory_c2w is not None:
                # The new context's poses start again from this frame; the frame memory's pose moves into them, so
                # where it lies relative to the camera is unchanged (left as it was, its warp would follow the
                # camera's pose in the new context as if it were the old one's and reopen at a wrong place).
                memory_c2w = state.memory_c2w.to(c2w.dtype)
                rebased = c2w @ torch.linalg.inv(updates["c2w"]) @ memory_c2w
                updates["memory_c2w"] = where_rows(restart, rebased, memory_c2w)
            updates.update(c2w=c2w, pitch=pick(pitch0, updates["pitch"]))
        return mixed, updates

    @torch.no_grad()
    def init_state(self, batch_size: int, frames: Any = None, actions: Any = None, prompt: Any = None,
                   generator: torch.Generator | None = None, denoise_steps: int | None = None, *,
                   latents: torch.Tensor | None = None, views: bool = True) -> WorldState:
        """Start ``batch_size`` rollouts.

        Args:
            frames: context ``uint8 [B, T, H, W, 3]``, ``T = 1 + n*frames_per_latent`` (encoded and committed
                to the state in one parallel pass). None: the first frame is generated (from ``prompt``
                if given, else unconditionally): by the prompt-start generator when the model has one
                (``config.prompt_start_channels``, :mod:`neuralsim.prompt_start`), else by the dynamics with
                ``denoise_steps``.
            actions: the actions between the context latent frames, ``[B, n, A]`` (Box) or ``[B, n]``
                (Discrete); None = unknown (the null action, no camera motion).
            prompt: a ``str`` for all rows, one ``str``/``None`` per row, or None.
            generator: source of all sampling noise (context noise included).
            latents: instead of ``frames``, the context as normalised latents ``[B, T_lat, C, h, w]``
                (from :meth:`encode`; used by self-forcing training, which has them cached).
            views: with a view generator (``config.prompt_view_channels``), draw the views around the start for
                the rows with a prompt (False: skip them, e.g. for a dream never decoded: they only show in decoded
                frames; the state keeps the same shape).

        Returns:
            The state after the context; ``state.latent`` is the last context (or generated) latent frame.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputError(f"batch_size must be an int >= 1, got {batch_size!r}")
        cfg, B = self.config, int(batch_size)
        steps = self._check_steps(denoise_steps)
        prompts = validate_prompts(prompt, B)
        tokens, mask = self._encode_text(prompts, B)
        # contiguous: `text_kv` hands out transposed views, a merge (partial reset) contiguous tensors, and a compiled
        # pass recompiles on a stride change
        text_kv = [(k.float().contiguous(), v.float().contiguous()) for k, v in self.dynamics.text_kv(tokens)]
        state = WorldState(
            cache=self.dynamics.empty_cache(B, self.device), text_kv=text_kv, text_mask=mask, text_tokens=tokens.float(),
            step=torch.zeros(B, dtype=torch.long, device=self.device),
            latent=torch.zeros(B, *self.latent_shape, device=self.device),
            reward=torch.zeros(B, device=self.device), termination_prob=torch.zeros(B, device=self.device),
        )
        if frames is not None and latents is not None:
            raise InputError("pass the context as frames or as latents, not both")
        if frames is None and latents is None:
            if actions is not None:
                raise InputError("actions were given without frames; expected frames [B, T, H, W, 3] for them")
            if self.prompt_start is None:  # the dynamics draws the first frame
                action, known, rays, c2w, pitch, rel, warp, velocity = self._sequence_conditioning(B, 1, None, "actions")
                _, state = self._generate(state, action, known, rays, generator, steps, rel_rays=rel, warp=warp,
                                          compiled_ok=False, c2w=c2w, pitch=pitch, velocity=velocity)
                return state
            # the first frame drawn from the prompt (None: unconditionally), then committed as a context frame
            latents = self.prompt_start.sample(prompts or [None] * B, generator, cfg.prompt_start_steps)[:, None]
        if latents is None:
            latents = self.encode(frames)  # (B, T_lat, C, h, w)
        else:
            self._check_latents(latents)
        latents = latents.to(self.device).float()
        if latents.shape[0] != B:
            raise InputError(f"frames has batch {latents.shape[0]} but batch_size={B}")
        T = latents.shape[1]
        frame_poses: list[torch.Tensor] = []
        action, known, rays, c2w, pitch, rel, warp, velocity = self._sequence_conditioning(B, T, actions, "actions",
                                                                                           frame_poses)
        tokens = self._tokens(latents)  # (B, T, S, C)
        x = add_context_noise(tokens, cfg.context_noise, generator=generator)
        prev = self._prev_tokens(tokens, generator, warp=self._base_warp(warp))[0] if cfg.prev_frame_input else None
        _, features, cache = self.dynamics(
            x, torch.full((B, T), cfg.context_noise, device=self.device), start=state.step, action=action,
            action_known=known, rays=rays, text=text_kv, text_mask=mask, cache=state.cache, prev=prev, rel_rays=rel)
        reward, logit = self._heads(features[:, -1])
        _check_finite(state, reward=reward, termination=logit, features=features[:, -1],
                      state=[c["S"] for c in cache if "S" in c])
        prob, memory = self._prob(logit, reward), None
        if self.reward_model is not None:  # the context's transitions, in order: the memory of the episode so far
            rewards, logits, memory = self.reward_model(latents, action[:, 1:] * known[:, 1:, None])
            if T > 1:
                reward, prob = rewards[:, -1].float(), torch.sigmoid(logits[:, -1].float())
            else:
                reward, prob = torch.zeros_like(reward), torch.zeros_like(reward)
            _check_finite(state, reward=reward, termination=prob)
        remembered: dict[str, torch.Tensor | None] = {}
        if self.frame_memory is not None and c2w is not None:  # real frames of the context, remembered for the episode
            remembered = self._remember(frames, latents, frame_poses)
            if self.prompt_views is not None:  # and below them, the views around the start the prompt names
                remembered = self._with_views(remembered, latents[:, -1], prompts if views else None, frame_poses[-1],
                                              pitch, generator)
        return dataclasses.replace(state, cache=cache, step=state.step + T, latent=latents[:, -1], reward=reward,
                                   termination_prob=prob, c2w=c2w, pitch=pitch, reward_memory=memory,
                                   velocity=velocity, **remembered)

    def _remember(self, frames: Any, latents: torch.Tensor, frame_poses: list[torch.Tensor]) -> dict[str, Any]:
        """The frame memory's fields of a new state (:class:`WorldState`): the last context frame, its pose and
        depth, and with ``config.frame_memory_frames > 1`` the earlier frames it holds, with their poses relative to
        the last frame's; each depth computed once per episode."""
        index = memory_frame_indices(latents.shape[1], self.config.frame_memory_frames) + [latents.shape[1] - 1]
        distinct = sorted(set(index))  # a context shorter than the memory repeats frames: decode and depth them once
        picked = (frames[:, distinct] if frames is not None  # frames: numpy or torch, [B, T, H, W, 3]
                  else self.decode(latents[:, distinct], first_frame=False))
        held = self._frames_to_float(picked).contiguous()  # [B, distinct, 3, H, W] in [-1, 1]
        B, n = held.shape[:2]
        poses = torch.stack([frame_poses[i] for i in distinct], 1)  # (B, distinct, 4, 4): a floor caps each depth
        depth = self.frame_memory.memory_depth(held.flatten(0, 1), poses.flatten(0, 1))
        depth = None if depth is None else depth.view(B, n, *depth.shape[1:])
        where = torch.tensor([distinct.index(i) for i in index], device=held.device)
        held, depth = held[:, where], None if depth is None else depth[:, where.to(depth.device)]
        K = len(index)
        last_c2w = frame_poses[-1].clone()
        fields = {"memory_frame": held[:, -1].contiguous(), "memory_c2w": last_c2w,
                  "memory_depth": None if depth is None else depth[:, -1].contiguous()}
        if K > 1:
            to_last, last = torch.linalg.inv(last_c2w.double()), index[-1]
            eye = torch.eye(4, dtype=torch.float64, device=last_c2w.device).expand_as(to_last)
            # exactly the identity for a repeat of the last frame (a short context): decode skips it
            poses = [eye if i == last else to_last @ frame_poses[i].double() for i in index[:-1]]
            fields.update(memory_earlier=held[:, :-1].contiguous(), memory_earlier_pose=torch.stack(poses, 1),
                          memory_earlier_depth=None if depth is None else depth[:, :-1].contiguous())
        return fields

    def view_poses(self, last_c2w: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
        """The cameras of the views around a frame (``config.prompt_view_yaws_deg``) in that frame's camera frame:
        ``[B, V, 4, 4]`` float64 for its pose ``last_c2w [B, 4, 4]`` and accumulated ``pitch [B]`` (each view is the
        frame's camera turned by its yaw, as that many frames of the yaw key would turn it)."""
        cfg = self.config
        c2w, pitch = last_c2w.double(), pitch.double().to(last_c2w.device)
        to_last = torch.linalg.inv(c2w)
        poses = []
        for yaw in cfg.prompt_view_yaws_deg:
            action = torch.zeros(c2w.shape[0], 4, dtype=torch.float64, device=c2w.device)
            action[:, 2] = yaw / cfg.camera_rotation_speed_deg
            turned, _ = camera_step(c2w, pitch, action, translation_speed=0.0,
                                    rotation_speed_deg=cfg.camera_rotation_speed_deg)
            poses.append(to_last @ turned)
        return torch.stack(poses, 1)

    def _with_views(self, fields: dict[str, Any], reference: torch.Tensor, prompts: list[str | None] | None,
                    last_c2w: torch.Tensor, pitch: torch.Tensor, generator: torch.Generator | None) -> dict[str, Any]:
        """The frame memory's ``fields`` (:meth:`_remember`) with the views around the start prepended to its
        earlier frames (the lowest priority: any real frame that sees a pixel replaces them). Rows with a prompt get
        the views :attr:`prompt_views` draws from their last context latent ``reference [B, C, h, w]`` and their
        prompt; rows without one, rows whose camera is not level (``VIEW_MAX_PITCH_DEG``) and every row of a model
        asked without prompts hold the last frame at the identity pose, which decode skips: the state's shape is the
        same for every reset, so rows merge."""
        cfg, B = self.config, reference.shape[0]
        V = len(cfg.prompt_view_yaws_deg)
        last = fields["memory_frame"]  # [B, 3, H, W]
        frames = last[:, None].repeat(1, V, 1, 1, 1)
        eye = torch.eye(4, dtype=torch.float64, device=last_c2w.device)
        poses = eye.expand(B, V, 4, 4).clone()
        depth = None if fields["memory_depth"] is None else fields["memory_depth"][:, None].repeat(1, V, 1, 1)
        level = (pitch.abs() <= math.radians(VIEW_MAX_PITCH_DEG)).tolist()
        rows = [i for i, p in enumerate(prompts or []) if p is not None and level[i]]
        if rows:
            index = torch.tensor(rows, device=reference.device)
            n, yaws = len(rows), torch.tensor([math.radians(y) for y in cfg.prompt_view_yaws_deg])
            drawn = self.prompt_views.sample(
                [prompts[i] for i in rows for _ in range(V)], generator, cfg.prompt_start_steps,
                reference=reference.index_select(0, index).repeat_interleave(V, 0), yaw=yaws.repeat(n))
            pixels = self._frames_to_float(self.decode(drawn[:, None], first_frame=True)).contiguous()[:, 0]
            frames[rows] = pixels.view(n, V, *pixels.shape[1:]).to(frames.device, frames.dtype)
            poses[rows] = self.view_poses(last_c2w[rows], pitch[rows]).to(poses.device)
            if depth is not None:
                view_c2w = last_c2w[rows].double()[:, None] @ poses[rows].to(last_c2w.device)  # the views' own poses
                view_depth = self.frame_memory.memory_depth(pixels, view_c2w.flatten(0, 1))
                depth[rows] = view_depth.view(n, V, *view_depth.shape[1:]).to(depth.device, depth.dtype)
        if fields.get("memory_earlier") is not None:
            frames = torch.cat([frames, fields["memory_earlier"]], 1)
            poses = torch.cat([poses, fields["memory_earlier_pose"].to(poses.device)], 1)
            if depth is not None:
                depth = torch.cat([depth, fields["memory_earlier_depth"]], 1)
        return {**fields, "memory_earlier": frames.contiguous(), "memory_earlier_pose": poses,
                "memory_earlier_depth": None if depth is None else depth.contiguous()}

    def _check_steps(self, denoise_steps: int | None) -> int:
        steps = self.config.denoise_steps if denoise_steps is None else denoise_steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise InputError(f"denoise_steps must be an int >= 1, got {denoise_steps!r}")
        if steps > MAX_DENOISE_STEPS:  # a bound on work a caller (or a file) can ask for: neuralsim.limits
            raise InputError(f"denoise_steps must be at most {MAX_DENOISE_STEPS}, got {denoise_steps!r}")
        return int(steps)

    @torch.no_grad()
    def step(self, state: WorldState, actions: Any, generator: torch.Generator | None = None,
             denoise_steps: int | None = None) -> tuple[torch.Tensor, WorldState]:
        """Generate the next latent frame of every row and commit it.

        Args:
            state: from :meth:`init_state` or a previous step (not modified).
            actions: ``[B, A]`` float (Box) or ``[B]`` int (Discrete), held for ``frames_per_latent`` raw frames.
            generator: source of the sampling noise.
            denoise_steps: Euler steps (default ``config.denoise_steps``).

        Returns:
            ``(latent [B, C, h, w] normalised, new state)``; reward and termination probability of the
            step are in ``new_state.reward`` / ``new_state.termination_prob``
            (:meth:`predict_reward_termination`).

        Raises:
            InputError (ValueError/TypeError): bad actions (shape, dtype, range, NaN, batch mismatch).
            FloatingPointError: the generated latent is not finite.
        """
        if not isinstance(state, WorldState):
            raise InputError(f"state must be a WorldState from init_state/step, got {type(state).__name__}")
        steps = self._check_steps(denoise_steps)
        vec, motion = self._action_inputs(self._validate_actions(actions, state.batch_size, "actions"))
        rays, cam = None, {}
        if self.config.camera:
            advance = self._compiled_parts.get("advance_camera", self._advance_camera)
            adv = advance(state.c2w, state.pitch, motion, self.config.frames_per_latent, state.velocity)
            vec = self._conditioning_vector(vec, adv.effective)
            rays, rel, warp = adv.rays[:, None], adv.rel_rays, adv.warp
            cam = {"c2w": adv.c2w, "pitch": adv.pitch, "rel_rays": None if rel is None else rel[:, None],
                   "warp": None if warp is None else warp[:, None], "velocity": adv.velocity}
        known = torch.ones(state.batch_size, 1, dtype=torch.bool, device=self.device)
        return self._generate(state, vec[:, None], known, rays, generator, steps, **cam)

    @torch.no_grad()
    def judge_termination(self, state: WorldState, frames: Any) -> WorldState:
        """The state of a step (:meth:`step`) with its termination and bonus judged by the termination detector from the
        frames the step decoded (``uint8 [B, F, H, W, 3]``, the last one judged): probability ``sigmoid(logit)``, and
        the reward model's progress term plus its bonus where that probability is > 0.5 (the envs' termination rule),
        in place of the bonus its own estimate paid. Without a termination detector, ``state`` as it is."""
        if self.termination_detector is None:
            return state
        frames = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
        if frames.ndim != 5 or frames.shape[0] != state.batch_size:
            raise InputError(f"frames must be uint8 [B={state.batch_size}, F, H, W, 3], got {tuple(frames.shape)}")
        prob = torch.sigmoid(self.termination_detector(frames[:, -1]).float()).to(state.termination_prob.device)
        bonus = self.reward_model.bonus.to(state.reward.device, state.reward.dtype)
        # the reward model paid its bonus where its own probability was > 0.5: take that back, pay the detector's
        progress = state.reward - bonus * (state.termination_prob > 0.5).to(state.reward.dtype)
        reward = progress + bonus * (prob > 0.5).to(state.reward.dtype)
        return dataclasses.replace(state, reward=reward, termination_prob=prob)

    def predict_reward_termination(self, state: WorldState) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reward [B], termination probability [B])`` predicted for the last committed frame of ``state``
        (filled by :meth:`step` and :meth:`init_state`; zeros when the config disables a head)."""
        return state.reward, state.termination_prob

    # --- training losses --------------------------------------------------------------------
    def autoencoder_loss(self, frames: Any, generator: torch.Generator | None = None, *, latent_noise: float = 0.05,
                         edge_weight: float | None = None,
                         pixel_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction loss of uint8 frames ``[B, T, H, W, 3]``: L1 + L2 + w·(1 − SSIM), the L1 and L2
        terms weighted up on edge pixels by ``edge_weight`` (default ``config.ae_edge_weight``) and by
        ``pixel_weight [B, T, H, W]`` when given (e.g. 1 + w on the task objects' pixels); weights normalised to
        mean 1.

        The decoder sees latents with a little Gaussian noise (``latent_noise`` of their std, 5 %) so it
        tolerates the imperfect latents the dynamics produces.
        """
        cfg = self.config
        groups = self.autoencoder.pack(self._frames_to_float(frames)).flatten(0, 1)  # (N, 3k, H, W)
        z = self.autoencoder.encoder(groups)
        noise = randn(tuple(z.shape), generator=generator, device=z.device, dtype=z.dtype)
        recon = self.autoencoder.decoder(z + latent_noise * z.detach().std() * noise).float()
        weight = groups.new_ones(groups.shape[0] * cfg.frames_per_latent, 1, *cfg.image_size)  # (N*k, 1, H, W)
        edge_weight = cfg.ae_edge_weight if edge_weight is None else edge_weight
        if edge_weight > 0:  # edge pixels weigh more: at 64x64 a small object is mostly boundary
            luma = groups.reshape(-1, 3, *cfg.image_size).mean(dim=1, keepdim=True)  # (N*k, 1, H, W)
            grad = (F.pad((luma[..., :, 1:] - luma[..., :, :-1]).abs(), (0, 1))  # |dx|
                    + F.pad((luma[..., 1:, :] - luma[..., :-1, :]).abs(), (0, 0, 0, 1)))  # + |dy|
            grad = F.max_pool2d(grad, 3, stride=1, padding=1)  # both sides of an edge
            weight = 1.0 + edge_weight * grad / grad.mean().clamp_min(1e-6)
        if pixel_weight is not None:
            pixel_weight = torch.as_tensor(pixel_weight, device=weight.device, dtype=weight.dtype)
            if tuple(pixel_weight.shape) != (*tuple(frames.shape[:2]), *cfg.image_size):
                raise InputError(f"pixel_weight must be [B, T, H, W] = {[*frames.shape[:2], *cfg.image_size]} like "
                                 f"frames, got {list(pixel_weight.shape)}")
            # packed as the frames are (the first frame repeated k times), then one weight per raw frame of a group
            packed = self.autoencoder.pack(pixel_weight[:, :, None].expand(-1, -1, 3, -1, -1))  # (B, 1+n, 3k, H, W)
            weight = weight * packed.reshape(-1, 3, *cfg.image_size)[:, :1]
        weight = (weight / weight.mean()).reshape(groups.shape[0], -1, 1, *cfg.image_size)  # mean 1
        weight = weight.expand(-1, -1, 3, -1, -1).reshape(groups.shape)
        l1 = (weight * (recon - groups).abs()).mean()
        mse = (weight * (recon - groups).pow(2)).mean()
        with torch.autocast(device_type=recon.device.type, enabled=False):  # bf16 variances go negative: NaN SSIM
            s = ssim(recon.reshape(-1, 3, *cfg.image_size), groups.reshape(-1, 3, *cfg.image_size))
        loss = l1 + mse + cfg.ae_ssim_weight * (1 - s)
        logs = {"loss": loss.item(), "l1": l1.item(), "mse": mse.item(), "ssim": s.item(),
                "psnr": psnr(recon.detach().clamp(-1, 1), groups), "latent_std": z.detach().float().std().item()}
        return loss, logs

    @torch.no_grad()
    def reward_model_sequence(self, latents: torch.Tensor, actions: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The reward model along a sequence of latents ``[B, T, C, h, w]`` (e.g. :meth:`encode` of real frames) and the
        actions between them (``[B, T-1, A]`` Box or ``[B, T-1]`` Discrete, as the env took them), its memory opened
        by the first frame as in a dream: ``(rewards [B, T-1], termination probabilities [B, T-1])``."""
        moves = self._reward_model_moves(latents, actions)
        rewards, logits, _ = self.reward_model(latents.to(self.device).float(), moves)
        return rewards.float(), torch.sigmoid(logits.float())

    def _reward_model_moves(self, latents: torch.Tensor, actions: Any) -> torch.Tensor:
        """Checked reward-model inputs: raise unless the model has one and ``latents`` is ``[B, T, C, h, w]``; the
        action vectors between the frames ``[B, T-1, A]`` (zeros where unknown), as ``init_state`` feeds them."""
        if self.reward_model is None:
            raise InputError("this model has no reward model (config.reward_model_channels = 0); `neuralsim train "
                             "reward` adds one")
        self._check_latents(latents)
        B, T = latents.shape[:2]
        action, known, *_ = self._sequence_conditioning(B, T, actions, "actions")
        return action[:, 1:] * known[:, 1:, None]

    def reward_loss(self, latents: torch.Tensor, actions: Any, rewards: Any, terminated: Any,
                    opens: torch.Tensor | None = None, offsets: torch.Tensor | None = None,
                    places: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The reward model's loss on windows: ``latents [B, T, C, h, w]`` (normalised, real or the model's own),
        ``actions [B, T-1, A]`` (Box) or ``[B, T-1]`` (Discrete) as the env took them, ``rewards [B, T-1]`` and
        ``terminated [B, T-1]`` the real env's; ``opens [B]`` the frame at which each row's memory opens (default
        0; :meth:`neuralsim.reward.RewardModel.loss`); ``offsets [B, T, 2]`` the target's true place per frame (a target
        tracker's localizer labels, :func:`neuralsim.reward.target_offsets`); ``places [B, T, 4]`` the agent's true place
        in the room (a tracker with walls: its room head's labels, :func:`neuralsim.reward.room_places`). Returns
        ``(loss, logs)`` (reward MSE + termination BCE, + the heads' terms with ``offsets`` / ``places``)."""
        moves = self._reward_model_moves(latents, actions)
        B, T = latents.shape[:2]
        target = torch.as_tensor(np.asarray(rewards.cpu() if isinstance(rewards, torch.Tensor) else rewards),
                                 dtype=torch.float32, device=self.device)
        done = torch.as_tensor(np.asarray(terminated.cpu() if isinstance(terminated, torch.Tensor) else terminated),
                               device=self.device).bool()
        for name, value in (("rewards", target), ("terminated", done)):
            if tuple(value.shape) != (B, T - 1):
                raise InputError(f"{name} must have shape {(B, T - 1)}, got {tuple(value.shape)}")
        if opens is not None:
            opens = torch.as_tensor(opens, dtype=torch.long, device=self.device)
            if tuple(opens.shape) != (B,) or bool(((opens < 0) | (opens > T - 2)).any()):
                raise InputError(f"opens must be {B} frame indices in [0, {T - 2}], got {opens.tolist()}")
        if offsets is None and places is None:
            return self.reward_model.loss(latents.float(), moves, target, done, opens)
        if not isinstance(self.reward_model, TargetTracker):
            raise InputError("offsets and places label a target tracker's heads; this model's reward model is recurrent")
        labels = {}
        for name, value, width in (("offsets", offsets, 2), ("places", places, 4)):
            if value is not None:
                labels[name] = torch.as_tensor(value, dtype=torch.float32, device=self.device)
                if tuple(labels[name].shape) != (B, T, width):
                    raise InputError(f"{name} must have shape {(B, T, width)}, got {tuple(labels[name].shape)}")
        return self.reward_model.loss(latents.float(), moves, target, done, opens, **labels)

    def dynamics_loss(self, latents: torch.Tensor, actions: Any, rewards: Any = None, terminated: Any = None,
                      prompts: Sequence[str | None] | None = None, generator: torch.Generator | None = None,
                      own_frames: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Diffusion-forcing loss on a batch of latent sequences (parallel form), teacher-forced or self-forced.

        Args:
            latents: normalised ``[B, T, C, h, w]`` (from :meth:`encode`).
            actions: ``[B, T-1, A]`` (Box) / ``[B, T-1]`` (Discrete): action ``i`` leads from frame ``i`` to ``i+1``.
            rewards: ``[B, T-1]`` float, reward of transition ``i`` (None: no reward loss).
            terminated: ``[B, T-1]`` bool, transition ``i`` ended the episode (None: no termination loss).
            prompts: one ``str``/``None`` per sequence, or None; replaced by the null prompt with
                probability ``config.prompt_dropout``.
            generator: source of noise levels, noise and prompt dropout.
            own_frames: self-forcing, ``[B, K, C, h, w]``: the model's own rollout of frames ``1..K`` (from
                frame 0 and the same actions). They replace the real frames ``1..K`` as inputs, held with frame 0
                at the context-noise level, and the flow loss covers frames ``K+1..`` only: the model learns
                to continue, and pull back toward the data, the drifted history it meets in a long rollout.
                The reward/termination heads see every transition (their targets stay the real ones), so
                they learn to read dreamed frames too.

        Returns:
            ``(loss, logs)``: flow-matching MSE on the velocity, plus weighted reward MSE and termination BCE.
        """
        cfg = self.config
        if cfg.commit_from_denoise:
            raise InputError("a model with commit_from_denoise trains with streaming_loss (`train --streaming`): the "
                             "parallel loss commits every frame clean")
        self._check_latents(latents)
        B, T = latents.shape[:2]
        x0 = self._tokens(latents.to(self.device).float())  # (B, T, S, C)
        action, known, rays, _, _, rel, warp, _ = self._sequence_conditioning(B, T, actions, "actions")
        tau = diffusion_forcing_levels(B, T, generator=generator, device=self.device, context_noise=cfg.context_noise,
                                       clean_context_prob=cfg.clean_context_prob, shift=cfg.flow_shift)
        noise = randn(tuple(x0.shape), generator=generator, device=self.device)
        tokens, mask = self._training_text(prompts, B, generator)
        inputs, weight = x0, torch.ones(B, T, device=self.device)
        if own_frames is not None:
            K = own_frames.shape[1] if isinstance(own_frames, torch.Tensor) and own_frames.ndim == 5 else -1
            if not 1 <= K <= T - 2 or tuple(own_frames.shape[2:]) != self.latent_shape or own_frames.shape[0] != B:
                got = tuple(own_frames.shape) if hasattr(own_frames, "shape") else type(own_frames).__name__
                raise InputError(f"own_frames must be [B={B}, K, {', '.join(map(str, self.latent_shape))}] with "
                                 f"1 <= K <= T-2 = {T - 2}, got {got}")
            own = self._tokens(own_frames.to(self.device).float())
            inputs = torch.cat([x0[:, :1], own, x0[:, 1 + K:]], dim=1)
            tau = tau.clone()
            tau[:, : 1 + K] = cfg.context_noise
            weight[:, : 1 + K] = 0.0
        prev = base = None
        if cfg.prev_frame_input:  # the previous frame as the model sees it (real or own), noise-augmented around inference's level
            prev_levels = rand((B, T), generator=generator, device=self.device) * (2.0 * cfg.context_noise)
            prev, base = self._prev_tokens(inputs, generator, prev_levels, warp=self._base_warp(warp))
        noisy = add_noise(inputs, noise, tau)
        out, features, _ = self.dynamics(noisy, tau, start=torch.zeros(B, dtype=torch.long, device=self.device),
                                         action=action, action_known=known, rays=rays, text=self.dynamics.text_kv(tokens),
                                         text_mask=mask, prev=prev, rel_rays=rel)
        if cfg.prediction == "x0_residual":  # x0 error: weights every noise level alike (velocity MSE = x0 MSE / tau²)
            pred = self._x0_estimate(out, noisy, tau, base)
            if self.refiner is not None:  # it reads the clean previous frames, not the (possibly turned) base
                prev_clean = torch.cat([torch.zeros_like(inputs[:, :1]), inputs[:, :-1]], dim=1)
                pred = self._refine(pred, prev_clean, tau, action, known, warp)
            err = (pred - x0).pow(2).mean(dim=(2, 3))  # (B, T)
        else:
            err = (out.float() - velocity_target(x0, noise)).pow(2).mean(dim=(2, 3))  # (B, T)
        flow = (err * weight).sum() / weight.sum()
        reward_pred, logit = self._heads(features[:, 1:])  # (B, T-1): frame i+1 closes transition i
        return self._with_head_losses(flow, {"flow": flow.item()}, reward_pred, logit, rewards, terminated)

    def _check_latents(self, latents: Any) -> None:
        """Raise unless ``latents`` is a float tensor ``[B, T, *latent_shape]``."""
        if not isinstance(latents, torch.Tensor) or latents.ndim != 5 or tuple(latents.shape[2:]) != self.latent_shape:
            got = tuple(latents.shape) if hasattr(latents, "shape") else type(latents).__name__
            raise InputError(f"latents must be a float tensor [B, T, {', '.join(map(str, self.latent_shape))}], got {got}")

    def _training_text(self, prompts: Sequence[str | None] | None, batch_size: int,
                       generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated training prompts, each dropped to the null prompt with ``prompt_dropout`` → text tokens, mask."""
        prompts = validate_prompts(prompts, batch_size, name="prompts")
        if prompts is not None and self.config.prompt_dropout > 0:
            drop = rand((batch_size,), generator=generator, device="cpu") < self.config.prompt_dropout
            prompts = [None if d else p for p, d in zip(prompts, drop.tolist())]
        return self._encode_text(prompts, batch_size)

    def _with_head_losses(self, loss: torch.Tensor, logs: dict[str, float], reward_pred: torch.Tensor,
                          logit: torch.Tensor | None, rewards: Any, terminated: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """``loss`` plus the reward MSE and termination BCE of the heads' ``[B, T-1]`` predictions (when given)."""
        cfg = self.config
        B, T1 = reward_pred.shape
        if rewards is not None and self.reward_head is not None:
            target = torch.as_tensor(np.asarray(rewards), dtype=torch.float32, device=self.device) if not isinstance(
                rewards, torch.Tensor) else rewards.to(self.device, torch.float32)
            if target.shape != (B, T1):
                raise InputError(f"rewards must have shape {(B, T1)}, got {tuple(target.shape)}")
            reward_mse = F.mse_loss(reward_pred, target)
            loss = loss + cfg.reward_loss_weight * reward_mse
            logs["reward_mse"] = reward_mse.item()
        if terminated is not None and self.termination_head is not None:
            target = torch.as_tensor(np.asarray(terminated.cpu() if isinstance(terminated, torch.Tensor) else terminated))
            if tuple(target.shape) != (B, T1):
                raise InputError(f"terminated must have shape {(B, T1)}, got {tuple(target.shape)}")
            target = target.to(self.device, torch.float32)
            bce = F.binary_cross_entropy_with_logits(logit, target)
            loss = loss + cfg.termination_loss_weight * bce
            logs["termination_bce"] = bce.item()
            logs["termination_acc"] = ((logit > 0).float() == target).float().mean().item()
        logs["loss"] = loss.item()
        return loss, logs

    def streaming_loss(self, latents: torch.Tensor, actions: Any, rewards: Any = None, terminated: Any = None,
                       prompts: Sequence[str | None] | None = None, generator: torch.Generator | None = None, *,
                       own_history: float = 0.0, one_step_fraction: float = 0.5,
                       fixed_tau: float | None = None, burn_in: int = 0,
                       own_history_grad: bool = False, release_weight: float = 0.0,
                       critic: nn.Module | None = None, adversarial_weight: float = 0.0,
                       critic_only: bool = False, gradient_difference_weight: float = 0.0
                       ) -> tuple[torch.Tensor, dict[str, float]]:
        """The dynamics loss computed the way the model is sampled: frame by frame against the streaming state.

        For each frame of the window, one denoise pass on the noisy frame reads the state of the committed
        frames before it (exactly :meth:`step`'s pass: clean history, noisy target), then one commit pass
        writes a frame into the state. :meth:`dynamics_loss`'s parallel diffusion forcing trains most frames
        against noisy history, which sampling never shows; here every frame is trained as it is sampled. The
        loss covers the frames after the first (a rollout starts from a real frame).

        Args:
            latents, actions, rewards, terminated, prompts, generator: as :meth:`dynamics_loss`.
            own_history: per row and frame, the probability that the committed frame is the model's own
                one-step sample (its x0 prediction at ``tau = 1``, no gradient) instead of the real one: the
                rollout the env would dream, with the real frame as the target of every step (self-forcing
                without a separate rollout). Only frames drawn at ``tau = 1`` can be own.
            one_step_fraction: the fraction of target frames at ``tau = 1`` (what one-step sampling sees); the
                others draw ``tau`` from the shifted uniform as in :meth:`dynamics_loss`.
            fixed_tau: every target frame at this noise level in ``(0, 1]`` instead (evaluation by noise level;
                ``one_step_fraction`` is then unused and own history needs ``fixed_tau = 1``).
            burn_in: the first ``burn_in`` frames only build the state: the real frames, committed without
                gradient or loss (one pass each), so the frames after them are trained against a state built over
                a longer context, as a long dream's is (trained on short windows alone, the state drifts out of
                range over hundreds of frames). Own history would not do here: after tens of own frames the dream
                has left the real trajectory, and the real frames after it are no longer a target it can reach.
            own_history_grad: keep the gradient through the own frames committed as history (backpropagation through
                the dreamed rollout), so a frame's loss also trains the steps that drew the frames it was dreamed
                from; otherwise they are fixed inputs and only the state carries a gradient across frames.
            release_weight: the frame right after the keys are let go (a zero action after a non-zero one) weighs
                ``1 + release_weight`` in the loss: the world's last slide after a release is small in latent space,
                below the error of a moving frame, and is drowned out in a plain mean.
            critic, adversarial_weight: a :class:`neuralsim.critic.LatentCritic` (or ``FrameCritic``: it judges the
                frames decoded through the frozen decoder): the trained frames' one-step samples are scored against
                the real frames, the dynamics adds ``adversarial_weight`` times the
                generator's hinge term, and the critic's own hinge loss is added to the returned loss (it reaches only
                the critic's weights; the caller steps them). The x0 error alone draws the mean of the frames the
                history allows, which blurs and feeds the blur forward.
            critic_only: train the critic alone (a warm-up before it steers the dynamics): the frames are drawn
                without gradient and the returned loss reaches only the critic (the generator term is left out).
            gradient_difference_weight: add this times the gradient difference loss (Mathieu et al., 2016;
                :func:`neuralsim.critic.gradient_difference_loss`) between the trained frames' one-step samples and
                the real frames, both decoded through the frozen decoder: the edges' strength and place, pixel by
                pixel, which a blurred edge and a texture where the real frame is flat both pay for.
        """
        cfg = self.config
        if not adversarial_weight >= 0.0 or (adversarial_weight > 0 and critic is None):
            raise InputError(f"adversarial_weight must be >= 0 and needs a critic, got {adversarial_weight!r} with "
                             f"critic={type(critic).__name__}")
        if critic_only and critic is None:
            raise InputError("critic_only trains the critic alone and needs a critic, got critic=None")
        if not gradient_difference_weight >= 0.0:
            raise InputError(f"gradient_difference_weight must be >= 0, got {gradient_difference_weight!r}")
        if not cfg.prev_frame_input or cfg.prediction != "x0_residual":
            raise InputError("streaming_loss needs a model with prev_frame_input and prediction='x0_residual'")
        if not release_weight >= 0.0:
            raise InputError(f"release_weight must be >= 0, got {release_weight!r}")
        if release_weight and cfg.action_spec["type"] != "box":
            raise InputError("release_weight finds where the keys are let go (a zero action), which needs Box actions")
        if not 0.0 <= own_history <= 1.0 or not 0.0 <= one_step_fraction <= 1.0:
            raise InputError(f"own_history and one_step_fraction must be in [0, 1], got {own_history!r}, "
                             f"{one_step_fraction!r}")
        from_denoise = cfg.commit_from_denoise
        if from_denoise and (one_step_fraction != 1.0 or fixed_tau not in (None, 1.0)):
            raise InputError("a model with commit_from_denoise commits the state from its tau = 1 pass, as one-step "
                             f"sampling does: one_step_fraction must be 1 and fixed_tau None or 1, got "
                             f"{one_step_fraction!r}, {fixed_tau!r}")
        self._check_latents(latents)
        B, T = latents.shape[:2]
        if isinstance(burn_in, bool) or not isinstance(burn_in, int) or not 0 <= burn_in <= T - 2:
            raise InputError(f"burn_in must be an int in [0, T - 2 = {T - 2}] (frames that only build the state), "
                             f"got {burn_in!r}")
        x0 = self._tokens(latents.to(self.device).float())  # (B, T, S, C)
        action, known, rays, _, _, rel, warp, _ = self._sequence_conditioning(B, T, actions, "actions")
        tokens, mask = self._training_text(prompts, B, generator)
        text = self.dynamics.text_kv(tokens)
        if fixed_tau is not None:
            if not 0.0 < fixed_tau <= 1.0:
                raise InputError(f"fixed_tau must be in (0, 1] or None, got {fixed_tau!r}")
            tau = torch.full((B, T), float(fixed_tau), device=self.device)
            one_step = tau == 1.0
        else:
            one_step = rand((B, T), generator=generator, device=self.device) < one_step_fraction
            tau = torch.where(one_step, torch.ones(B, T, device=self.device),
                              diffusion_forcing_levels(B, T, generator=generator, device=self.device,
                                                       clean_context_prob=0.0, shift=cfg.flow_shift))
        own = one_step & (rand((B, T), generator=generator, device=self.device) < own_history)
        own[:, : max(1, burn_in)] = False  # a rollout starts from a real frame (and a burn-in is real frames)
        cache = self.dynamics.empty_cache(B, self.device)
        committed = torch.zeros_like(x0[:, :1])  # the frame before frame 0: zeros, as in training and sampling
        errors, features, samples = [], [], []
        grad = torch.is_grad_enabled() and not critic_only  # a critic warming up reads frames drawn without gradient
        for t in range(T):
            with torch.set_grad_enabled(grad and t >= burn_in):
                base = committed
                if warp is not None and cfg.prev_frame_warp:
                    base = self._tokens(warp_latents(self._untokens(base), warp[:, t : t + 1]))
                frame = self.dynamics.prepare_frame(
                    start=torch.full((B,), t, dtype=torch.long, device=self.device), action=action[:, t : t + 1],
                    action_known=known[:, t : t + 1], rays=None if rays is None else rays[:, t : t + 1], text=text,
                    text_mask=mask, cache=cache, prev=add_context_noise(base, cfg.context_noise, generator=generator),
                    rel_rays=None if rel is None else rel[:, t : t + 1])
                pred = x0[:, t : t + 1]
                # commit_from_denoise: a dreamed frame's state comes from its denoise pass; the first frame and the
                # burn-in are context frames, committed clean as init_state does
                denoise_commits = from_denoise and t >= max(1, burn_in)
                if t >= burn_in:  # a burn-in frame is only committed
                    noise = randn(tuple(x0[:, t : t + 1].shape), generator=generator, device=self.device)
                    noisy = add_noise(x0[:, t : t + 1], noise, tau[:, t : t + 1])
                    out, feats, new_cache = self.dynamics(noisy, tau[:, t : t + 1], frame=frame, commit=denoise_commits)
                    estimate = self._x0_estimate(out, noisy, tau[:, t : t + 1], base)
                    pred = self._refine(estimate, committed, tau[:, t : t + 1], action[:, t : t + 1], known[:, t : t + 1],
                                        None if warp is None else warp[:, t : t + 1])  # at tau = 1 the sample
                    errors.append((pred - x0[:, t : t + 1]).pow(2).mean(dim=(1, 2, 3)))  # (B,)
                    if t >= max(1, burn_in):
                        samples.append(pred)
                mine = own[:, t, None, None, None]
                committed = torch.where(mine, pred if own_history_grad else pred.detach(), x0[:, t : t + 1])
                if denoise_commits:
                    cache = new_cache
                else:
                    ctx = add_context_noise(committed, cfg.context_noise, generator=generator)
                    _, feats, cache = self.dynamics(ctx, torch.full((B, 1), cfg.context_noise, device=self.device),
                                                    frame=frame, commit=True)
                features.append(feats)
        per_frame = torch.stack(errors, dim=1)  # (B, T - burn_in)
        # The rollout's frames: the first frame (generated from nothing, an error several times a next frame's) would
        # dominate the loss, while a rollout always starts from a real one; dynamics_loss trains it. After a burn-in
        # every trained frame has history.
        first = max(1, burn_in)  # the first trained frame's index (per_frame starts at frame burn_in)
        trained = per_frame[:, first - burn_in :]
        weights = torch.ones_like(trained)
        if release_weight and T > 2 and actions is not None:  # the commanded actions (not the motion they make)
            arr = np.asarray(actions.detach().cpu() if isinstance(actions, torch.Tensor) else actions)
            after = torch.zeros(B, T, dtype=torch.bool, device=self.device)  # frame t reached by a release
            after[:, 1:] = torch.from_numpy(released(arr.reshape(B, T - 1, -1))).to(self.device)
            weights = weights + release_weight * after[:, first:].to(weights.dtype)
        flow = (trained * weights).sum() / weights.sum() if trained.shape[1] else per_frame.mean()
        logs = {"flow": flow.item(),  # flow_first: the first frame (generated from nothing); NaN after a burn-in
                "flow_first": per_frame[:, 0].mean().item() if not burn_in else float("nan"),
                "flow_next": flow.item(),
                "own_fraction": own[:, max(1, burn_in):].float().mean().item() if T > 1 else 0.0}
        use_critic = critic is not None and (adversarial_weight > 0 or critic_only)
        if (use_critic or gradient_difference_weight > 0) and samples:
            fake = self._untokens(torch.cat(samples, dim=1)).flatten(0, 1)  # (B * trained, C, h, w)
            real = self._untokens(x0[:, max(1, burn_in):]).flatten(0, 1)
            fake_frames = real_frames = None
            if gradient_difference_weight > 0 or getattr(critic, "reads", "latents") == "frames":
                scale, shift = self._latent_affine(self.device)  # decoded by the frozen decoder (not trained here)
                with torch.no_grad():
                    real_frames = self.autoencoder.decoder(real / scale + shift)
                with torch.set_grad_enabled(grad):
                    fake_frames = self.autoencoder.decoder(fake / scale + shift)
            if gradient_difference_weight > 0:
                edges = gradient_difference_loss(fake_frames, real_frames)
                flow = flow + gradient_difference_weight * edges
                logs.update(gradient_difference=edges.item())
            if use_critic:
                reads_frames = getattr(critic, "reads", "latents") == "frames"
                generator_term, critic_loss = adversarial_losses(critic, real_frames if reads_frames else real,
                                                                 fake_frames if reads_frames else fake)
                if not critic_only:  # warming up, only the critic learns: its loss is added after the heads
                    flow = flow + adversarial_weight * generator_term + critic_loss
                logs.update(adversarial=generator_term.item(), critic=critic_loss.item())
        reward_pred, logit = self._heads(torch.cat(features, dim=1)[:, 1:])  # frame i+1 closes transition i
        loss, logs = self._with_head_losses(flow, logs, reward_pred, logit, rewards, terminated)
        if critic_only:  # nothing but the critic's own loss carries a gradient (not the heads either)
            loss = loss.detach() + (critic_loss if use_critic and samples else 0.0)
        return loss, logs

    # --- checkpoints ------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into directory ``path`` (created if needed).

        Each file is written atomically (``neuralsim.checkpoints``: temp file, fsync, rename; weights first,
        config last). Other files in the directory (e.g. optimizer state) are left alone.
        """
        return write_checkpoint(path, type(self).__name__, self.config, self.state_dict())

    @classmethod
    def from_pretrained(cls, path_or_name: str | os.PathLike, device: torch.device | str | None = None) -> "WorldModel":
        """Load a checkpoint directory, or a shipped model by name (``neuralsim/assets/<name>/``).

        Raises:
            ValueError: ``"sana-wm-2.6b"`` (use ``neuralsim.sana_wm``), a pickle file offered (never
                unpickled), a config of another class, or tensors that disagree with the config (the
                first mismatching tensor is named with expected and found shapes).
            FileNotFoundError: no such directory or shipped name, or a missing file.
        """
        directory = resolve_checkpoint(path_or_name, "path_or_name")
        config = read_config(directory, cls.__name__)
        # the header alone (no tensor is read): every block the config asks for has at least one tensor
        stored = count_weights(directory)
        blocks = config.depth + config.text_layers + sum(config.ae_blocks) + sum(config.ae_decoder_blocks)
        if blocks > stored:
            raise ValueError(f"{directory / CONFIG_NAME} asks for {blocks} blocks (depth={config.depth}, text_layers="
                             f"{config.text_layers}, ae_blocks, ae_decoder_blocks) but {WEIGHTS_NAME} holds only "
                             f"{stored} tensors; the config does not belong to these weights")
        tensors = read_weights(directory, device)
        return cls.from_weights(config, tensors, device,
                                source=str(directory / WEIGHTS_NAME), config_source=CONFIG_NAME)

    @classmethod
    def from_weights(cls, config: WorldModelConfig, tensors: dict[str, torch.Tensor],
                     device: torch.device | str | None = None, *, source: str = "the state dict",
                     config_source: str = "the config") -> "WorldModel":
        """A model of ``config`` holding ``tensors`` (a full state dict), built without initialising weights first.

        :meth:`from_pretrained` reads a checkpoint's files and calls this; so does the decoding process of
        :mod:`neuralsim.decoding`, which is sent a config and tensors.

        Raises:
            ValueError: a tensor missing, of another shape than ``config`` implies, or not defined by ``config``
                (named with expected and found shapes; ``source`` and ``config_source`` name where they came from).
        """
        with torch.device("meta"):
            model = cls(config)
        expected = model.state_dict()
        for name, t in expected.items():
            if name not in tensors:
                raise ValueError(f"{source}: no tensor {name!r} (expected shape {tuple(t.shape)}), "
                                 f"which {config_source} requires")
            if tuple(tensors[name].shape) != tuple(t.shape):
                raise ValueError(f"{source}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                                 f"but {config_source} implies {tuple(t.shape)}")
        extra = sorted(set(tensors) - set(expected))
        if extra:
            raise ValueError(f"{source}: tensors that {config_source} does not define, first: {extra[0]!r}")
        model = model.to_empty(device=device or "cpu")
        model._rebuild_buffers()
        model.load_state_dict(tensors, strict=True)
        return model.eval()

    def _rebuild_buffers(self) -> None:
        """Recompute non-persistent buffers (RoPE tables) after ``to_empty``."""
        from neuralsim.dynamics import rope_2d

        for blk in self.dynamics.blocks:
            if blk.attn.kind == "softmax":
                cos, sin = rope_2d(*self.config.token_grid, blk.attn.head_dim)
                blk.attn.rope_cos, blk.attn.rope_sin = cos.to(self.device), sin.to(self.device)


# ---------------------------------------------------------------------------------------------
# describe
# ---------------------------------------------------------------------------------------------


def describe(config: WorldModelConfig | str) -> dict[str, Any]:
    """Parameter counts per component and memory plan, computed on the ``meta`` device (no weights allocated).

    Args:
        config: a config or a preset name.

    Returns:
        JSON-serialisable dict: parameters per component (autoencoder/encoder/decoder, dynamics, text,
        heads, total), bf16/fp32 weight bytes, streaming state bytes per env (fp32), tokens per latent frame.
    """
    if isinstance(config, str):
        config = WorldModelConfig.from_preset(config)
    with torch.device("meta"):
        model = WorldModel(config)
        cache = model.dynamics.empty_cache(1, "meta")

    def count(module: nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    text = count(model.text_encoder) + model.null_text.numel()
    heads = count(model.reward_head) + count(model.termination_head)
    total = model.num_parameters()
    L, nh, D = config.text_max_tokens, config.num_heads, config.head_dim
    state_bytes = sum(t.numel() * t.element_size() for t in tree_leaves(cache))
    state_bytes += 4 * (config.depth * 2 * nh * L * D + L * config.text_width + L // 4)  # prompt k/v, tokens, mask
    state_bytes += 4 * (config.latent_channels * config.tokens_per_frame + 2) + 8  # latent, reward, termination, step
    state_bytes += 8 * (16 + 1) if config.camera else 0  # c2w, pitch
    return {
        "preset_description": config.description,
        "parameters": {
            "autoencoder": count(model.autoencoder),
            "encoder": count(model.autoencoder.encoder),
            "decoder": count(model.autoencoder.decoder),
            "dynamics": count(model.dynamics),
            "text": text,
            "heads": heads,
            "total": total,
        },
        "weights_bytes_bf16": 2 * total,
        "weights_bytes_fp32": 4 * total,
        "state_bytes_per_env_fp32": int(state_bytes),
        "tokens_per_latent_frame": config.tokens_per_frame,
        "latent_shape": list(model.latent_shape),
        "image_size": list(config.image_size),
        "frames_per_latent": config.frames_per_latent,
        "gdn_blocks": config.depth - len(config.softmax_blocks),
        "softmax_blocks": list(config.softmax_blocks),
    }
