"""Flow matching: noise schedule, few-step Euler sampler, diffusion-forcing noise levels.

Convention (rectified flow, as SANA / SANA-WM): ``x_tau = (1 - tau) * x0 + tau * eps`` with ``tau = 1``
pure noise and ``tau = 0`` data; the network predicts the velocity ``v = eps - x0`` and sampling
integrates ``dx/dtau = v`` from ``tau = 1`` down to ``0``.

Diffusion forcing (Chen et al. 2024): every latent frame of a training sequence gets its own noise
level, so one causal network learns to denoise the next frame given clean, slightly noisy or no
context. At inference the committed context frames are held at a small level (``context_noise``),
the same augmentation that guards long rollouts against drift.

All randomness comes from an explicit ``torch.Generator`` (never the global RNG).
"""

from __future__ import annotations

from typing import Callable

import torch


def shift_timesteps(tau: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3/SANA timestep shift ``tau' = s*tau / (1 + (s-1)*tau)``; ``s > 1`` spends more time at high noise."""
    if shift == 1.0:
        return tau
    return shift * tau / (1.0 + (shift - 1.0) * tau)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """``x_tau = (1 - tau) * x0 + tau * noise``; ``tau`` broadcasts from the left (e.g. ``[B, T]`` over ``[B, T, ...]``)."""
    tau = tau.reshape(*tau.shape, *([1] * (x0.ndim - tau.ndim))).to(x0.dtype)
    return (1.0 - tau) * x0 + tau * noise


def posterior_skip(prior: torch.Tensor, x: torch.Tensor, tau: torch.Tensor | float,
                   prior_var: float) -> tuple[torch.Tensor, torch.Tensor | float]:
    """The posterior mean of ``x0`` given a Gaussian prior ``N(prior, prior_var)`` and ``x = x_tau`` (noise
    ``tau / (1 - tau)`` around ``x / (1 - tau)``), and the posterior std relative to the prior's:
    ``((tau² prior + v (1 - tau) x) / a, tau / √a)`` with ``a = v (1 - tau)² + tau²``. At ``tau = 1``: ``(prior, 1)``;
    at ``tau = 0``: ``(x, 0)``. ``tau``: a float, or a tensor broadcast from the left (``[B, T]`` over ``[B, T, ...]``)."""
    if isinstance(tau, torch.Tensor):
        tau = tau.reshape(*tau.shape, *([1] * (x.ndim - tau.ndim))).float()
    a = prior_var * (1 - tau) ** 2 + tau**2
    return (tau**2 * prior + prior_var * (1 - tau) * x) / a, tau / a**0.5


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow-matching regression target ``v = noise - x0``."""
    return noise - x0


def randn(shape: tuple[int, ...], *, generator: torch.Generator | None, device: torch.device | str,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise from ``generator`` (which must live on ``device`` when given).

    A CPU generator with a non-CPU ``device`` draws on the CPU and moves the result, so seeded runs
    agree across devices.
    """
    device = torch.device(device)
    if generator is not None and generator.device != device:
        return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


def rand(shape: tuple[int, ...], *, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """Uniform ``[0, 1)`` samples from ``generator`` (see :func:`randn` for devices)."""
    device = torch.device(device)
    if generator is not None and generator.device != device:
        return torch.rand(shape, generator=generator, device=generator.device).to(device)
    return torch.rand(shape, generator=generator, device=device)


def add_context_noise(x0: torch.Tensor, level: float, *, generator: torch.Generator | None) -> torch.Tensor:
    """Noise augmentation of context frames: ``x_level`` with fresh noise (identity when ``level == 0``)."""
    if level <= 0:
        return x0
    noise = randn(tuple(x0.shape), generator=generator, device=x0.device, dtype=x0.dtype)
    return (1.0 - level) * x0 + level * noise


def sampling_timesteps(steps: int, *, shift: float = 1.0, end: float = 0.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """``steps + 1`` decreasing noise levels from 1 to 0.

    The first ``steps`` levels run uniformly (then shifted) from 1 down to ``end``; the last is 0.
    With ``end = 0`` this is the usual uniform schedule. With ``end = context_noise`` the input of
    the last step sits exactly at the context level, so that pass can double as the commit pass
    (see ``WorldModelConfig.fused_commit``): e.g. ``steps=2`` gives ``[1, end, 0]``.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"denoise_steps must be an int >= 1, got {steps!r}")
    if end > 0 and steps > 1:
        head = shift_timesteps(torch.linspace(1.0, 0.0, steps, device=device), shift) * (1.0 - end) + end
        return torch.cat([head, torch.zeros(1, device=device)])
    return shift_timesteps(torch.linspace(1.0, 0.0, steps + 1, device=device), shift)


def euler_sample(
    velocity_fn: Callable[[torch.Tensor, float], torch.Tensor],
    noise: torch.Tensor,
    *,
    steps: int,
    shift: float = 1.0,
) -> torch.Tensor:
    """Few-step Euler integration of ``dx/dtau = v(x, tau)`` from ``tau = 1`` (``noise``) to ``tau = 0``.

    Args:
        velocity_fn: ``(x, tau) -> v`` with ``tau`` a python float.
        noise: the starting point ``x_1``.
        steps: number of Euler steps (1 = one-shot ``x0 = noise - v``).
        shift: timestep shift (see :func:`shift_timesteps`).

    Returns:
        ``x_0``, same shape as ``noise``.
    """
    taus = sampling_timesteps(steps, shift=shift).tolist()
    x = noise
    for tau, tau_next in zip(taus[:-1], taus[1:]):
        x = x + (tau_next - tau) * velocity_fn(x, tau)
    return x


def diffusion_forcing_levels(
    batch_size: int,
    frames: int,
    *,
    generator: torch.Generator | None,
    device: torch.device | str = "cpu",
    context_noise: float = 0.05,
    clean_context_prob: float = 0.5,
    shift: float = 1.0,
) -> torch.Tensor:
    """Independent noise level per latent frame for training, ``[B, T]`` in ``[0, 1]``.

    Every frame draws ``tau ~ U(0, 1)`` (then shifted). A fraction ``clean_context_prob`` of the
    sequences instead mirrors inference: a random prefix of frames sits at a context level drawn from
    ``U(0, 2 * context_noise)`` (noise augmentation around the inference level), the rest keep their
    independent levels. So the network sees both the general diffusion-forcing mix and the exact
    "clean-ish history, noisy next frame" pattern it meets in ``step``.
    """
    tau = shift_timesteps(rand((batch_size, frames), generator=generator, device=device), shift)
    if clean_context_prob > 0 and frames > 1:
        use_prefix = rand((batch_size, 1), generator=generator, device=device) < clean_context_prob  # [B, 1]
        cut = (rand((batch_size, 1), generator=generator, device=device) * frames).long().clamp(1, frames - 1)
        in_prefix = torch.arange(frames, device=device)[None, :] < cut  # [B, T]
        ctx = rand((batch_size, frames), generator=generator, device=device) * (2.0 * context_noise)
        tau = torch.where(use_prefix & in_prefix, ctx.clamp(max=1.0), tau)
    return tau
