"""Start from a sentence: a small flow-matching generator of the first latent frame from a prompt.

The dynamics draws each next frame from the last one; the first frame of a dream started from text has no last
frame, and the dynamics' text path is too weak to draw a room from a sentence alone (a uniform blur, measured). So a
model that starts from prompts carries :class:`PromptStart` (``WorldModelConfig.prompt_start_channels > 0``): its own
word-hash text encoder (:class:`~neuralsim.text.HashTextEncoder`, up to ``prompt_start_tokens`` tokens: a room's
description is ~70 words and punctuation, more than the dynamics' 32), and a conv net over the 8x8 latent grid with
per-position cross-attention to the prompt's tokens (so "a red ball near the blue wall" can bind a colour to a
thing) and FiLM from the pooled prompt and the noise level.

Trained (``neuralsim train prompt``) on the first frames of collected episodes and their descriptions, as
x0-prediction flow matching: ``x_tau = (1 - tau) x0 + tau * noise``, loss ``|f(x_tau, tau, prompt) - x0|^2``, prompts
dropped (empty) 10 % of the time so a missing prompt samples an unconditional start. Sampled in
``prompt_start_steps`` Euler steps (a reset pays them once). Cost: ~0.2 GFLOP per step per sample.

**Views around the start** (``reference=True``, ``WorldModelConfig.prompt_view_channels``): the same generator
also conditioned on a reference latent frame (concatenated to its input) and a yaw angle (FiLM), drawing what the
camera sees from the reference's place turned by that angle. The sentence names the whole room; the reference shows
which part of it the camera faces; the view turned 180 degrees is the part no context frame showed. Trained (``neuralsim
train views``) on pairs of frames of one place at two headings (a dataset with camera poses, e.g. the room's ``turn``
policy); at a reset with a prompt the model draws them and its frame memory holds them (:mod:`neuralsim.frame_memory`).

Core layer: imports torch and :mod:`neuralsim.text` only.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from neuralsim.text import HashTextEncoder

PROMPT_DROPOUT = 0.1  # training prompts replaced by the empty one: the generator also samples without a prompt
TEXT_LAYERS = 2


def _groups(channels: int) -> int:
    return 8 if channels % 8 == 0 else 1


def tau_features(tau: torch.Tensor, dim: int = 64) -> torch.Tensor:
    """Sinusoidal features ``[B, dim]`` of noise levels ``tau [B]`` in [0, 1]."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=tau.device, dtype=torch.float32) / half)
    angles = 1000.0 * tau.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


#: Harmonics of the yaw angle a view generator reads (sin and cos of k * yaw, k = 1..YAW_HARMONICS).
YAW_HARMONICS = 4


def yaw_features(yaw: torch.Tensor) -> torch.Tensor:
    """Features ``[B, 2 * YAW_HARMONICS]`` of yaw angles ``yaw [B]`` (radians, right-handed to the right)."""
    k = torch.arange(1, YAW_HARMONICS + 1, device=yaw.device, dtype=torch.float32)
    angles = yaw.float()[:, None] * k[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class _Block(nn.Module):
    """Residual conv block (GroupNorm, SiLU, 3x3, FiLM by the condition) then cross-attention to the prompt tokens."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.GroupNorm(_groups(channels), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(channels, 2 * channels)
        self.norm2 = nn.GroupNorm(_groups(channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.norm_q = nn.LayerNorm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(channels, 2 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, C, h, w = x.shape
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        y = self.conv1(F.silu(self.norm1(x)))
        y = self.norm2(y) * (1 + scale) + shift
        x = x + self.conv2(F.silu(y))
        tokens = x.flatten(2).transpose(1, 2)  # (B, h*w, C)
        q = self.q(self.norm_q(tokens)).view(B, h * w, self.heads, -1).transpose(1, 2)
        k, v = self.kv(text).view(B, text.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        tokens = tokens + self.proj(o.transpose(1, 2).reshape(B, h * w, C))
        return tokens.transpose(1, 2).reshape(B, C, h, w)


class PromptStart(nn.Module):
    """Prompt -> the first normalised latent frame ``[C, h, w]`` (see the module docstring).

    Args:
        latent_shape: ``(C, h, w)`` of the world model's latent frames.
        channels: width of the conv net and of the prompt tokens.
        max_tokens, vocab, text_hidden: of its :class:`~neuralsim.text.HashTextEncoder`.
        blocks: residual + cross-attention blocks.
        reference: a view generator: every call also takes a reference latent frame and a yaw angle (the module
            docstring).
    """

    def __init__(self, latent_shape: tuple[int, int, int], channels: int, *, max_tokens: int, vocab: int,
                 text_hidden: int, blocks: int = 4, reference: bool = False) -> None:
        super().__init__()
        C, h, w = latent_shape
        self.latent_shape = (int(C), int(h), int(w))
        self.reference = bool(reference)
        yaw_dim = 2 * YAW_HARMONICS if reference else 0
        heads = max(1, channels // 32)
        self.text = HashTextEncoder(width=channels, max_tokens=max_tokens, vocab=vocab, hidden=text_hidden,
                                    layers=TEXT_LAYERS)
        self.inp = nn.Conv2d(2 * C if reference else C, channels, 3, padding=1)
        self.pos = nn.Parameter(torch.randn(1, channels, h, w) * 0.02)
        self.cond = nn.Sequential(nn.Linear(64 + channels + yaw_dim, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.blocks = nn.ModuleList(_Block(channels, heads) for _ in range(blocks))
        self.out_norm = nn.GroupNorm(_groups(channels), channels)
        self.out = nn.Conv2d(channels, C, 3, padding=1)

    @property
    def device(self) -> torch.device:
        return self.pos.device

    @torch.no_grad()
    def init_from(self, start: "PromptStart") -> None:
        """Start a view generator from a trained first-frame generator of the same size: every weight copied, the
        reference's input channels and the yaw's condition features zeroed, so it first draws what ``start`` draws
        from the sentence (a room in its colours) and learns from there what the reference and the yaw add."""
        if not self.reference or start.reference:
            raise ValueError("init_from starts a view generator (reference=True) from a first-frame generator")
        mine, theirs = self.state_dict(), start.state_dict()
        if set(mine) != set(theirs):
            raise ValueError("init_from needs a first-frame generator of the same architecture")
        C = self.latent_shape[0]
        for name, value in theirs.items():
            target = mine[name]
            if name == "inp.weight":  # [channels, 2C, 3, 3]: the noisy frame's channels, then the reference's
                target.zero_()[:, :C] = value
            elif name == "cond.0.weight":  # [channels, 64 + channels + yaw]: the yaw's features last
                target.zero_()[:, : value.shape[1]] = value
            elif target.shape == value.shape:
                target.copy_(value)
            else:
                raise ValueError(f"init_from: {name} is {tuple(value.shape)} in the first-frame generator, "
                                 f"{tuple(target.shape)} here (another size)")
        self.load_state_dict(mine)

    def encode_prompts(self, prompts: list[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt tokens ``[B, L, channels]`` and mask ``[B, L]``; ``None`` (or an empty string) is the empty prompt
        (only the start token)."""
        return self.text.encode([p or "" for p in prompts])

    def _check_reference(self, reference: torch.Tensor | None, yaw: torch.Tensor | None, batch: int) -> None:
        if not self.reference:
            if reference is not None or yaw is not None:
                raise ValueError("this generator draws first frames: it takes no reference frame or yaw")
            return
        if reference is None or yaw is None:
            raise ValueError("a view generator needs reference [B, C, h, w] and yaw [B] (radians)")
        if tuple(reference.shape) != (batch, *self.latent_shape) or tuple(yaw.shape) != (batch,):
            raise ValueError(f"reference must be [{batch}, {', '.join(map(str, self.latent_shape))}] and yaw [{batch}], "
                             f"got {tuple(reference.shape)} and {tuple(yaw.shape)}")

    def forward(self, x: torch.Tensor, tau: torch.Tensor, text: torch.Tensor, mask: torch.Tensor,
                reference: torch.Tensor | None = None, yaw: torch.Tensor | None = None) -> torch.Tensor:
        """The clean latent predicted from ``x [B, C, h, w]`` at noise levels ``tau [B]`` (a view generator: seen
        from ``reference [B, C, h, w]``'s place turned by ``yaw [B]`` radians to the right)."""
        self._check_reference(reference, yaw, x.shape[0])
        m = mask.to(text.dtype)[..., None]
        pooled = (text * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        parts = [tau_features(tau).to(text.dtype), pooled]
        if self.reference:
            parts.append(yaw_features(yaw).to(text.dtype))
            x = torch.cat([x, reference.to(x.dtype)], dim=1)
        cond = self.cond(torch.cat(parts, dim=1))
        y = self.inp(x) + self.pos
        for block in self.blocks:
            y = block(y, cond, text, mask)
        return self.out(F.silu(self.out_norm(y)))

    def loss(self, latents: torch.Tensor, prompts: list[str | None], generator: torch.Generator | None = None,
             reference: torch.Tensor | None = None, yaw: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Flow-matching loss on clean latents ``[B, C, h, w]`` and their prompts (10 % dropped); a view
        generator's also on their references and yaws (:meth:`forward`)."""
        B = latents.shape[0]
        drop = torch.rand((B,), generator=generator) < PROMPT_DROPOUT
        prompts = [None if bool(d) else p for p, d in zip(prompts, drop)]
        text, mask = self.encode_prompts(prompts)
        tau = torch.rand((B,), generator=generator).to(latents.device)
        noise = torch.randn(latents.shape, generator=generator).to(latents.device)
        x = (1 - tau[:, None, None, None]) * latents + tau[:, None, None, None] * noise
        pred = self(x, tau, text, mask, reference, yaw)
        loss = F.mse_loss(pred.float(), latents.float())
        return loss, {"view_mse" if self.reference else "prompt_mse": float(loss.detach())}

    @torch.no_grad()
    def sample(self, prompts: list[str | None], generator: torch.Generator | None = None, steps: int = 8,
               reference: torch.Tensor | None = None, yaw: torch.Tensor | None = None) -> torch.Tensor:
        """First latent frames ``[B, C, h, w]`` for ``prompts`` (None: unconditional), ``steps`` Euler steps from
        noise drawn from ``generator``; a view generator's seen from ``reference`` turned by ``yaw``."""
        text, mask = self.encode_prompts(prompts)
        x = torch.randn((len(prompts), *self.latent_shape), generator=generator).to(self.device)
        if reference is not None:
            reference, yaw = reference.to(self.device).float(), yaw.to(self.device).float()
        taus = torch.linspace(1.0, 0.0, steps + 1).tolist()
        for tau, tau_next in zip(taus[:-1], taus[1:]):
            x0 = self(x, torch.full((len(prompts),), tau, device=self.device), text, mask, reference, yaw).float()
            x = x0 + (tau_next / tau) * (x - x0)  # the straight path through (x, x0), moved to tau_next
        return x
