"""A deep-compression convolutional autoencoder, causal in time (the role of SANA-WM's LTX-2 VAE).

Space is compressed by ``spatial_stride`` (a stride-2 conv per level), time by ``frames_per_latent``:
the first raw frame is a latent frame alone, every later latent frame packs ``k`` raw frames stacked
along channels (``3k`` input channels). A latent frame therefore depends only on its own raw frames,
never on later ones, so ``reset(image)`` works from one frame and encoding is causal. The first
frame is packed by repeating it ``k`` times; decoding it keeps the last of its ``k`` outputs.

Deterministic encode (no KL sampling, as DC-AE); the loss is L1 + L2 + (1 - SSIM), no downloaded
perceptual networks. Latents are normalised outside this module (``WorldModel`` holds scale/shift).
The decoder runs once per env step, so its widths and blocks per level are separate config fields.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from neuralsim.config import WorldModelConfig


def _groups(channels: int) -> int:
    """GroupNorm groups: up to 8, at least 4 channels per group where possible."""
    return next((g for g in (8, 4, 2) if channels % g == 0 and channels // g >= 4), 1)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv3×3, twice, plus the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(channels), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_norm_silu(self.norm1, x))
        return x + self.conv2(_norm_silu(self.norm2, h))


def _norm_silu(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """``silu(norm(x))``. A bf16 channels-last ``x`` (the dream's decoder under bf16 autocast) is normalised in the
    NCHW layout: the CPU's bf16 GroupNorm is about 10× slower on channels-last, and the two copies cost less
    (a batch-64 decode's GroupNorms and copies 32 → 19 ms on an AMX Xeon, one thread, under the profiler; the same
    mean error against fp32)."""
    if x.dtype == torch.bfloat16 and x.dim() == 4 and not x.is_contiguous():
        return F.silu(norm(x.contiguous())).contiguous(memory_format=torch.channels_last)
    return F.silu(norm(x))


class Encoder(nn.Module):
    """``[N, 3k, H, W]`` in [-1, 1] → raw latents ``[N, C, H/s, W/s]``."""

    def __init__(self, config: WorldModelConfig) -> None:
        super().__init__()
        ch = config.ae_channels
        self.stem = nn.Conv2d(3 * config.frames_per_latent, ch[0], 3, padding=1)
        self.levels = nn.ModuleList()
        for i, c in enumerate(ch):
            layers: list[nn.Module] = [ResBlock(c) for _ in range(config.ae_blocks[i])]
            if i + 1 < len(ch):
                layers.append(nn.Conv2d(c, ch[i + 1], 3, stride=2, padding=1))  # downsample ×2
            self.levels.append(nn.Sequential(*layers))
        self.norm_out = nn.GroupNorm(_groups(ch[-1]), ch[-1])
        self.conv_out = nn.Conv2d(ch[-1], config.latent_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for level in self.levels:
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class Decoder(nn.Module):
    """Raw latents ``[N, C, h, w]`` → ``[N, 3k, H, W]`` (unbounded; clamp to [-1, 1] for pixels)."""

    def __init__(self, config: WorldModelConfig) -> None:
        super().__init__()
        ch = config.ae_decoder_channels
        self.conv_in = nn.Conv2d(config.latent_channels, ch[0], 3, padding=1)
        self.levels = nn.ModuleList()
        for i, c in enumerate(ch):
            layers: list[nn.Module] = [ResBlock(c) for _ in range(config.ae_decoder_blocks[i])]
            if i + 1 < len(ch):
                # upsample ×2 by sub-pixel conv: the conv runs at the low resolution (fast on CPUs)
                layers += [nn.Conv2d(c, 4 * ch[i + 1], 3, padding=1), nn.PixelShuffle(2)]
            self.levels.append(nn.Sequential(*layers))
        # no norm before the output: with few channels a GroupNorm would erase absolute colour
        self.conv_out = nn.Conv2d(ch[-1], 3 * config.frames_per_latent, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)
        for level in self.levels:
            x = level(x)
        return self.conv_out(F.silu(x))


class Autoencoder(nn.Module):
    """Frames ⇄ raw (un-normalised) latents, with the causal temporal packing described above."""

    def __init__(self, config: WorldModelConfig) -> None:
        super().__init__()
        self.k = config.frames_per_latent
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def pack(self, frames: torch.Tensor) -> torch.Tensor:
        """Float frames ``[B, T, 3, H, W]`` with ``T = 1 + n*k`` → groups ``[B, 1 + n, 3k, H, W]``."""
        B, T, _, H, W = frames.shape
        first = frames[:, :1].expand(B, self.k, 3, H, W)  # the first frame alone, repeated k times
        groups = torch.cat([first, frames[:, 1:]], dim=1)  # (B, (1+n)*k, 3, H, W)
        return groups.reshape(B, -1, 3 * self.k, H, W)  # (B, 1+n, 3k, H, W)

    def unpack(self, groups: torch.Tensor, first_frame: bool = True) -> torch.Tensor:
        """Inverse of :meth:`pack`: ``[B, T_lat, 3k, H, W]`` → ``[B, T, 3, H, W]``.

        With ``first_frame`` the first group is the lone first frame (its last copy is kept);
        otherwise every group gives ``k`` frames (decoding latents of later steps).
        """
        B, T_lat, _, H, W = groups.shape
        frames = groups.reshape(B, T_lat * self.k, 3, H, W)  # (B, T_lat*k, 3, H, W)
        return frames[:, self.k - 1 :] if first_frame else frames

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Float frames ``[B, T, 3, H, W]`` in [-1, 1] → raw latents ``[B, T_lat, C, h, w]``."""
        groups = self.pack(frames)
        B, T_lat = groups.shape[:2]
        z = self.encoder(groups.flatten(0, 1))  # (B*T_lat, C, h, w)
        return z.unflatten(0, (B, T_lat))

    def decode(self, latents: torch.Tensor, first_frame: bool = True) -> torch.Tensor:
        """Raw latents ``[B, T_lat, C, h, w]`` → float frames ``[B, T, 3, H, W]`` (unclamped)."""
        B, T_lat = latents.shape[:2]
        groups = self.decoder(latents.flatten(0, 1)).unflatten(0, (B, T_lat))  # (B, T_lat, 3k, H, W)
        return self.unpack(groups, first_frame)


def _gaussian_window(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 2.0, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004, Gaussian window) of image batches ``[N, C, H, W]``.

    ``data_range`` is max - min of the pixel scale (2 for [-1, 1], 255 for uint8). The window shrinks
    for images smaller than it. Returns a scalar tensor (differentiable).
    """
    window = min(window, a.shape[-1], a.shape[-2])
    window -= 1 - window % 2  # keep it odd
    g = _gaussian_window(window, sigma, a.device, a.dtype)
    C = a.shape[1]
    gx = g.view(1, 1, 1, -1).expand(C, 1, 1, window)
    gy = g.view(1, 1, -1, 1).expand(C, 1, window, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:  # separable Gaussian, 'valid' padding
        return F.conv2d(F.conv2d(x, gx, groups=C), gy, groups=C)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean()


def psnr(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB over the whole batch."""
    mse = F.mse_loss(a.float(), b.float()).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range**2 / mse)
