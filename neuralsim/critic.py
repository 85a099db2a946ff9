"""Terms against the blur of dreamed frames for the streaming loss (training only): critics for an adversarial
term, and the gradient difference loss.

The one-step sampler draws a frame as the network's x0 estimate at tau = 1. Trained on the x0 error alone, that
estimate is the mean of the frames the history allows: blurred where the next frame is uncertain, and every dreamed
frame feeds that blur into the next (the fidelity benchmark's sharpness falls from 0.80 at t+1 to 0.35 at t+16).
A critic that tells real frames from dreamed ones gives the dynamics a second signal: look like a real frame,
not only be close to it on average (the x0 error keeps it close). :class:`LatentCritic` reads one latent frame
``[N, C, h, w]``, :class:`FrameCritic` the frame decoded from it (through the frozen decoder); both score patches
(PatchGAN-style: they judge texture and edges, not the layout), and spectral norm keeps them Lipschitz so the hinge loss
stays stable with few updates.

It is never part of a shipped model: ``neuralsim train dynamics --streaming --adversarial W`` builds one, saves it
beside each checkpoint (``critic.safetensors``) so a resumed run continues it, and drops it at export;
``--critic-warmup N`` trains it alone for the stage's first N steps, so it steers the dynamics only once it tells the
frames apart. :func:`gradient_difference_loss` (``--gradient-difference W``) needs no second network: it compares
the edges of the decoded dream with the real frame's, pixel by pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class LatentCritic(nn.Module):
    """Patch critic over latent frames ``[N, C, h, w]`` → logits ``[N, h/2 · w/2]`` (higher: more real)."""

    reads = "latents"

    def __init__(self, channels: int, width: int = 64):
        super().__init__()
        if channels < 1 or width < 1:
            raise ValueError(f"channels and width must be >= 1, got {channels!r}, {width!r}")
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(channels, width, 3, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * width, 2 * width, 3, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * width, 1, 1)),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net(latents.float()).flatten(1)


class FrameCritic(nn.Module):
    """Patch critic over decoded frames ``[N, 3k, H, W]`` in [-1, 1] → logits ``[N, H/8 · W/8]``: the blur the
    sharpness figure measures is in the pixels; the dynamics gets the critic's gradient through the frozen decoder."""

    reads = "frames"

    def __init__(self, channels: int = 3, width: int = 32):
        super().__init__()
        if channels < 1 or width < 1:
            raise ValueError(f"channels and width must be >= 1, got {channels!r}, {width!r}")
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(channels, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * width, 4 * width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(4 * width, 1, 3, padding=1)),
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames.float()).flatten(1)


def adversarial_losses(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hinge losses ``(generator, critic)`` for frames ``real`` and ``fake`` ``[N, C, h, w]`` (latent or decoded: what
    ``critic`` reads).

    Both go into one backward: the generator term reads the critic with its weights frozen (no gradient reaches
    them from it), the critic term reads the fake frames detached (no gradient reaches the dynamics from it)."""
    flags = [p.requires_grad for p in critic.parameters()]
    critic.requires_grad_(False)
    try:
        generator = -critic(fake).mean()
    finally:
        for p, flag in zip(critic.parameters(), flags):
            p.requires_grad_(flag)
    critic_loss = F.relu(1.0 - critic(real.detach())).mean() + F.relu(1.0 + critic(fake.detach())).mean()
    return generator, critic_loss


def gradient_difference_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Gradient difference loss (Mathieu, Couprie & LeCun, 2016) between frames ``[N, C, H, W]``: the mean absolute
    difference of the absolute horizontal and vertical pixel differences. A mean-square error is smallest for the
    average of the frames the history allows, whose edges are smeared; this term is smallest where each edge has the
    real frame's strength at the real frame's place, and a texture drawn where the real frame is flat pays for every
    gradient it adds (a critic can be fooled by one; see docs/experiments.md, "a critic against the blur")."""
    if fake.shape != real.shape or fake.dim() != 4:
        raise ValueError(f"fake and real must be [N, C, H, W] of one shape, got {tuple(fake.shape)}, {tuple(real.shape)}")
    fake, real = fake.float(), real.float()
    dx = ((fake[..., :, 1:] - fake[..., :, :-1]).abs() - (real[..., :, 1:] - real[..., :, :-1]).abs()).abs().mean()
    dy = ((fake[..., 1:, :] - fake[..., :-1, :]).abs() - (real[..., 1:, :] - real[..., :-1, :]).abs()).abs().mean()
    return dx + dy
