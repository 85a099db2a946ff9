"""A DIAMOND-style pixel-space diffusion world model denoiser, for speed comparisons only.

Follows the denoiser of DIAMOND (Alonso et al., "Diffusion for World Modeling: Visual Details Matter
in Atari", NeurIPS 2024; github.com/eloialonso/diamond, ``src/models/diffusion/inner_model.py`` and
``src/models/blocks.py``) at its Atari configuration: a U-Net over 64x64 rgb frames with 4 levels of
64 channels, 2 residual blocks per level, self-attention only in the two middle blocks, the noisy
next frame concatenated in channels with the 4 previous frames, and the noise level (EDM ``c_noise``),
the context noise level and the 4 previous actions embedded into one conditioning vector that
modulates every residual block through adaptive group norm. That is ~4.4 M parameters. One env step
of DIAMOND costs 3 Euler steps of this network (its Atari setting), i.e. 3 forward passes, plus a
small reward/termination LSTM that is left out here (it only makes DIAMOND slower).

Weights are random: speed does not depend on them. Written from the paper's description and
architecture, not copied.

    >>> net = DiamondDenoiser(DiamondConfig()).eval()
    >>> sum(p.numel() for p in net.parameters())  # doctest: +SKIP
    4400000
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

GROUP_SIZE = 32  # channels per group norm group (DIAMOND's GN_GROUP_SIZE)
ATTN_HEAD_DIM = 8


@dataclass
class DiamondConfig:
    """DIAMOND's Atari denoiser (``config/agent/default.yaml``)."""

    image_size: int = 64
    img_channels: int = 3
    context_frames: int = 4  # num_steps_conditioning
    cond_channels: int = 256
    depths: tuple[int, ...] = (2, 2, 2, 2)
    channels: tuple[int, ...] = (64, 64, 64, 64)
    attn_levels: tuple[bool, ...] = (False, False, False, False)  # the middle blocks always attend
    num_actions: int = 18  # full Atari action set
    sigma_data: float = 0.5
    denoise_steps: int = 3  # Euler steps per env step


def _groups(channels: int) -> int:
    return max(1, channels // GROUP_SIZE)


class FourierFeatures(nn.Module):
    """Random Fourier features of a scalar (the noise level): ``[B] -> [B, dim]``."""

    def __init__(self, dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.randn(1, dim // 2, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * x[:, None].float() @ self.freqs  # (B, dim/2)
        return torch.cat([f.cos(), f.sin()], dim=-1)


class AdaGroupNorm(nn.Module):
    """Group norm without affine parameters, then ``x * (1 + scale) + shift`` from the conditioning vector."""

    def __init__(self, channels: int, cond_channels: int) -> None:
        super().__init__()
        self.groups = _groups(channels)
        self.linear = nn.Linear(cond_channels, 2 * channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(cond)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return F.group_norm(x, self.groups, eps=1e-5) * (1 + scale) + shift


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the pixels of a feature map (pre group norm, residual)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.heads = max(1, channels // ATTN_HEAD_DIM)
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).transpose(-1, -2).unbind(1)  # (B, nh, HW, hd)
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(y.transpose(-1, -2).reshape(B, C, H, W))


class ResBlock(nn.Module):
    """AdaGN -> SiLU -> conv3x3, twice, with a (1x1-projected) skip and optional self-attention."""

    def __init__(self, c_in: int, c_out: int, cond_channels: int, attn: bool) -> None:
        super().__init__()
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.norm1 = AdaGroupNorm(c_in, cond_channels)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = AdaGroupNorm(c_out, cond_channels)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.attn = SelfAttention2d(c_out) if attn else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x, cond)))
        h = self.conv2(F.silu(self.norm2(h, cond)))
        return self.attn(h + self.skip(x))


class UNet(nn.Module):
    """Levels of residual blocks; down path keeps every block output as a skip, the up path concatenates them."""

    def __init__(self, cfg: DiamondConfig) -> None:
        super().__init__()
        ch, cc = cfg.channels, cfg.cond_channels
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        for i, n in enumerate(cfg.depths):
            c_prev, c = ch[max(0, i - 1)], ch[i]
            self.down.append(nn.ModuleList(
                [ResBlock(c_prev if j == 0 else c, c, cc, cfg.attn_levels[i]) for j in range(n)]))
            # the up path of a level has n + 1 blocks: one per down block output plus the level's input
            self.up.insert(0, nn.ModuleList(
                [ResBlock(2 * c if j < n else c_prev + c, c if j < n else c_prev, cc, cfg.attn_levels[i]) for j in range(n + 1)]))
        self.mid = nn.ModuleList([ResBlock(ch[-1], ch[-1], cc, attn=True) for _ in range(2)])
        self.downsample = nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1) for c in ch[:-1]])
        self.upsample = nn.ModuleList([nn.Conv2d(c, c, 3, padding=1) for c in reversed(ch[:-1])])

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        skips: list[list[torch.Tensor]] = []
        for i, blocks in enumerate(self.down):
            if i > 0:
                x = self.downsample[i - 1](x)  # (B, C, H/2^i, W/2^i)
            level = [x]
            for block in blocks:
                x = block(x, cond)
                level.append(x)
            skips.append(level)
        for block in self.mid:
            x = block(x, cond)
        for i, blocks in enumerate(self.up):
            if i > 0:
                x = self.upsample[i - 1](F.interpolate(x, scale_factor=2.0, mode="nearest"))
            level = skips.pop()
            for block in blocks:
                x = block(torch.cat([x, level.pop()], dim=1), cond)
        return x


class DiamondDenoiser(nn.Module):
    """DIAMOND's inner model plus EDM preconditioning: ``(noisy next frame, sigma, context, actions) -> denoised``."""

    def __init__(self, cfg: DiamondConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = cfg
        cc = cfg.cond_channels
        self.noise_emb = FourierFeatures(cc, generator)
        self.noise_cond_emb = FourierFeatures(cc, generator)
        self.act_emb = nn.Embedding(cfg.num_actions, cc // cfg.context_frames)
        self.cond_proj = nn.Sequential(nn.Linear(cc, cc), nn.SiLU(), nn.Linear(cc, cc))
        self.conv_in = nn.Conv2d((cfg.context_frames + 1) * cfg.img_channels, cfg.channels[0], 3, padding=1)
        self.unet = UNet(cfg)
        self.norm_out = nn.GroupNorm(_groups(cfg.channels[0]), cfg.channels[0])
        self.conv_out = nn.Conv2d(cfg.channels[0], cfg.img_channels, 3, padding=1)

    def inner(self, noisy: torch.Tensor, c_noise: torch.Tensor, c_noise_cond: torch.Tensor, context: torch.Tensor,
              actions: torch.Tensor) -> torch.Tensor:
        """The network. noisy ``[B, 3, H, W]``, c_noise/c_noise_cond ``[B]``, context ``[B, 4*3, H, W]``, actions ``[B, 4]`` long."""
        act = self.act_emb(actions).flatten(1)  # (B, cond_channels)
        cond = self.cond_proj(self.noise_emb(c_noise) + self.noise_cond_emb(c_noise_cond) + act)
        x = self.conv_in(torch.cat([context, noisy], dim=1))
        x = self.unet(x, cond)
        return self.conv_out(F.silu(self.norm_out(x)))

    def forward(self, noisy: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """EDM-preconditioned denoiser D(x; sigma): the estimate of the clean next frame."""
        sd = self.config.sigma_data
        s = sigma[:, None, None, None]
        c_in, c_skip, c_out = 1 / (s**2 + sd**2).sqrt(), sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt()
        c_noise = sigma.log() / 4
        out = self.inner(noisy * c_in, c_noise, torch.zeros_like(c_noise), context, actions)
        return c_skip * noisy + c_out * out

    @torch.no_grad()
    def sample_next_frame(self, context: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None,
                          sigma_max: float = 5.0, sigma_min: float = 2e-3, rho: float = 7.0) -> torch.Tensor:
        """One env step: ``denoise_steps`` Euler steps of the probability-flow ODE on a Karras schedule."""
        B, _, H, W = context.shape
        n = self.config.denoise_steps
        ramp = torch.linspace(0, 1, n)
        sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)]).to(context.device)
        x = torch.randn(B, self.config.img_channels, H, W, generator=generator, device=context.device) * sigmas[0]
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            denoised = self(x, sigma.expand(B), context, actions)
            x = x + (x - denoised) / sigma * (sigma_next - sigma)
        return x


def build(generator_seed: int = 0) -> DiamondDenoiser:
    """The Atari-configuration denoiser with random weights (eval mode)."""
    g = torch.Generator().manual_seed(generator_seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator_seed)
        return DiamondDenoiser(DiamondConfig(), generator=g).eval()


def example_inputs(batch: int, cfg: DiamondConfig | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of one forward pass at ``batch``."""
    cfg = cfg or DiamondConfig()
    g = torch.Generator().manual_seed(seed)
    H = W = cfg.image_size
    return {
        "noisy": torch.randn(batch, cfg.img_channels, H, W, generator=g),
        "sigma": torch.full((batch,), 1.0),
        "context": torch.randn(batch, cfg.context_frames * cfg.img_channels, H, W, generator=g),
        "actions": torch.randint(0, cfg.num_actions, (batch, cfg.context_frames), generator=g),
    }


if __name__ == "__main__":
    net = build()
    total = sum(p.numel() for p in net.parameters())
    print(f"DIAMOND-style denoiser: {total:,} parameters")
    with torch.no_grad():
        print(tuple(net(**example_inputs(2)).shape))
