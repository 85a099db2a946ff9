"""Fidelity of a world model against the real room (docs/DESIGN.md §3 and §6), measured so that it cannot flatter the model.

Protocol. For each held-out seed (from 1,000,000; collection uses small seeds) a real start in
``NeuralSimRoom-v0`` as the model's data saw it (``target=None, start_view_deg=None``: layouts and start
headings of the collected data): 16 real context frames (``1 + n*frames_per_latent`` raw frames), encoded into
the dream with ``DreamSession.start(image=..., actions=..., prompt=info["description"])``; then the
same actions in the real room and in the dream, all seeds in one model batch. Two action
protocols, each driving its own context and future:

* ``explore``: the collection policy (``neuralsim.data.make_policy("explore", env)``, which reads the
  real room's privileged state); its actions are recorded on the real room and replayed in the dream.
* ``sticky``: sticky-random camera actions (a new uniform action with probability 0.1 per step).

Reported per protocol and horizon (env steps 1, 4, 16, 64, and 256 in the full run): the dream's
PSNR **pooled** over seeds (``10·log10(255²/MSE)`` with the MSE averaged over seeds first; the per-image
mean and median beside it: an identical frame scores ~148 dB per image, so a mean alone flatters
still scenes), SSIM, **object PSNR** (only the pixels of the ball, the boxes and the soft cube, from
MuJoCo's segmentation render of the same real frame, ``NeuralSimRoomEnv.object_mask()``), and a
**sharpness ratio** (mean of the top 5 % luminance gradients ``|dx|+|dy|`` of the dream over that of
the autoencoder's round trip of the real frame: decoder colour noise cannot raise it above what the
autoencoder itself delivers). Baselines from the same frames: copy-last-frame (the last real context
frame held forever), copy-last-frame through the autoencoder, and copy-last-frame turned (in pixels) by the
camera rotation the actions make (geometry alone, `copy_last_turned_*`). The autoencoder's own pooled and
object PSNR on the real frames bound what any dynamics can reach.

Tests: **idle** (16 zero actions after the explore context: dream vs the real frames, which are not
frozen: the agent's velocity decays over a step or two and a rolling ball keeps rolling; drop = AE
round-trip PSNR of the start frame minus the dream's PSNR, both pooled; at t+1 beside it what holding the start frame
through the autoencoder scores and what the round trip of the real t+1 frame scores, the floor and the ceiling of
the first idle step; `idle_frozen_drop_db_t1/t16`: the drops of a dream frozen at the start frame's round trip, the
part of the gate that is the room's own motion after the release);
**yaw** (``l`` and ``j`` held 8 steps: the per-step horizontal image shift of the dream over the real
one, estimated to 1/8 px by minimising the MSE over shifts of the middle rows, pooled over seeds);
**ablations** (horizons 1, 4, 16: future actions zeroed, Plücker rays removed via
``model.ablate_rays``, prompt removed); **turn around** (one real frame and its description, then ``l`` held until
the camera faces the other way, 180°: what the dream shows there is not in the image, only in the sentence, which names
the four walls' colours; the end frame vs the real one, with the prompt and without: ``turn_around_psnr``,
``ablation_no_prompt_turn_around_psnr``, ``turn_around_prompt_gain_db``); **revisit** (yaw 20 steps right and back: the frame on
return vs the real one); **reward** on the room's default task (the ball, started in view, at rest; ``reward_task``), under the explore, sticky-random
and scripted (walk to the target) policies, 16 context frames then 16 dream steps: Pearson of the dream's predicted vs
the real reward (``reward_corr_t1_16``; the reward model when the checkpoint has one, else the heads) and termination F1
at probability > 0.5 vs "the real agent is within reach of the target" (``termination_f1``), steps after a first success
left out, each with a 90 % interval from resampling the episodes (``*_ci90``); beside them, where the gap is: the Pearson over the steps that end neither episode
(``reward_corr_t1_16_progress``: the progress term alone) and how far the dream's first success falls from the real one
(``termination_delay_median`` in steps, ``termination_within_1_step``, ``termination_missed``); ``reward_gates`` holds
the reward issue's thresholds (0.8 each); ``ball_thrown`` the pooled and per-policy figures of the same protocol with
the ball thrown (the default task until 2026-12-07; not gated); a **long
rollout** checked for NaN and collapse (degenerate frames — flat, black, saturated, latent out of range — at more of
100 checkpoints than the real room shows after the same actions). ``gates`` evaluates the acceptance thresholds of the issue.

Outputs: a table, PNG strips ``docs/fidelity_strip_{explore,sticky}.png`` (pairs of rows real / dream
for 4 seeds; columns t = 0, 1, 2, 4, 8, 16, 32 where t = 0 is the last context frame, real / its
autoencoder round trip), a PSNR-vs-horizon plot when matplotlib is installed, and as the last line
one JSON object, also written to ``benchmarks/results/<name>.json``.

    python benchmarks/fidelity.py [--model default] [--seeds 32] [--quick] [--name fidelity]

``--quick``: 8 seeds, horizons up to 64, a 1,000-step long rollout (~1-2 minutes on one thread).
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, when imported as a module (tests)
from _common import RESULTS_DIR, add_standard_args, machine_info, resolve_standard_args, rounded, write_result  # noqa: E402

from neuralsim.session import DreamSession  # noqa: E402

HORIZONS = (1, 4, 16, 64, 256)
SEEDS = (32, 8)  # held-out seeds: full, --quick
QUICK_HORIZONS = (1, 4, 16, 64)
ABLATION_HORIZONS = (1, 4, 16)
STRIP_TIMES = (0, 1, 2, 4, 8, 16, 32)
STRIP_SEEDS = 4
CONTEXT = 16  # real context frames (the encoder takes 1 + n*frames_per_latent of them)
IDLE_STEPS = 16
YAW_STEPS = 8
REVISIT_LOOP = "l-20,j-20"
MAX_REVISIT_SEEDS = 8
TURN_AROUND_DEG = 180.0
REWARD_STEPS = 16
#: The pooled reward figures' episode bootstrap (:func:`episode_bootstrap`): resamples, and the interval's coverage
#: (the keys say 90: ``reward_corr_t1_16_ci90``, ``termination_f1_ci90``).
BOOTSTRAP_RESAMPLES, BOOTSTRAP_LEVEL = 1000, 0.9
PROTOCOLS = ("explore", "sticky")
# The reward and termination are judged on the room's default task (the ball, started in view, at rest since
# 2026-12-07; the thrown ball beside it, `ball_thrown`) under these policies:
# the collection policy, sticky-random actions, and the scripted policy that walks to the target.
REWARD_PROTOCOLS = ("explore", "random", "scripted")
#: What the JSON keeps of the same protocol with the ball thrown (``ball_thrown``; not gated).
THROWN_KEYS = ("reward_corr_t1_16", "termination_f1", "reward_corr_t1_16_ci90", "termination_f1_ci90",
               "termination_positives", "termination_predicted",
               *(f"{m}_{p}" for p in REWARD_PROTOCOLS for m in ("reward_corr_t1_16", "termination_f1")))
# The world's frames are judged in the room as the model's data saw it (target drawn per layout, any start heading).
WORLD_ENV_KWARGS = {"target": None, "start_view_deg": None, "ball_start": "thrown"}  # the world of the model's data
DOCS_DIR = Path(__file__).resolve().parent.parent / "docs"
MSE_FLOOR = 1e-10  # per-image PSNR of identical images: 10*log10(255^2/1e-10) = 148 dB (finite, for JSON)


# ------------------------------------------------------------------------------------------ metrics


def _mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image MSE of uint8 images ``[..., H, W, 3]`` → ``[...]`` float64."""
    return ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(-3, -2, -1))


def _db(mse: float | np.ndarray) -> np.ndarray:
    return 10 * np.log10(255.0**2 / np.maximum(mse, MSE_FLOOR))


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of uint8 images ``[..., H, W, 3]`` (identical images: 148 dB)."""
    return _db(_mse(a, b))


def psnr_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """``pooled`` (MSE averaged over the images first), ``mean`` and ``median`` of the per-image PSNR of ``[N, H, W, 3]``."""
    mse = _mse(a, b)
    per_image = _db(mse)
    return {"pooled": float(_db(mse.mean())), "mean": float(per_image.mean()), "median": float(np.median(per_image))}


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float | None:
    """PSNR over the pixels where ``mask [N, H, W]`` is true, pooled over all images (None: no such pixel)."""
    if not mask.any():
        return None
    err = (a.astype(np.float64) - b.astype(np.float64)) ** 2  # (N, H, W, 3)
    return float(_db(err[mask].mean()))


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image SSIM (Gaussian window 11, sigma 1.5, per rgb channel, averaged) of uint8 ``[N, H, W, 3]``."""
    x = torch.from_numpy(a).double().permute(0, 3, 1, 2) / 255
    y = torch.from_numpy(b).double().permute(0, 3, 1, 2) / 255
    size = min(11, x.shape[-1], x.shape[-2])
    g = torch.exp(-((torch.arange(size, dtype=torch.float64) - (size - 1) / 2) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :]).expand(3, 1, size, size)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(z, w, groups=3)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3)).numpy()


def luminance(frames: np.ndarray) -> np.ndarray:
    """``[..., H, W, 3]`` uint8 → ``[..., H, W]`` float64 luma (BT.601)."""
    return frames.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def sharpness(frames: np.ndarray, top: float = 0.05) -> np.ndarray:
    """Per image of ``[N, H, W, 3]``: the mean of the top ``top`` fraction of luminance gradient magnitudes ``|dx| + |dy|``."""
    y = luminance(frames)
    grad = np.abs(np.diff(y, axis=-1))[..., :-1, :] + np.abs(np.diff(y, axis=-2))[..., :, :-1]  # (N, H-1, W-1)
    flat = np.sort(grad.reshape(len(frames), -1), axis=1)
    k = max(1, int(round(top * flat.shape[1])))
    return flat[:, -k:].mean(axis=1)


def shift_curve(prev: np.ndarray, nxt: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """MSE of ``nxt(x)`` vs ``prev(x - d)`` for every candidate horizontal shift ``d`` (px, fractional: linear
    interpolation), on the luminance of the middle half of the rows, summed over the pairs ``[N, H, W, 3]``.

    The content of a frame moves by ``d`` between ``prev`` and ``nxt``: yaw right (``l``) moves it left (d < 0).
    """
    a, b = luminance(prev), luminance(nxt)
    H, W = a.shape[-2:]
    a, b = a[:, H // 4 : H - H // 4], b[:, H // 4 : H - H // 4]
    margin = int(math.ceil(np.abs(shifts).max())) + 1
    x = np.arange(margin, W - margin)
    curve = np.empty(len(shifts))
    for i, d in enumerate(shifts):
        src = x - d
        lo = np.floor(src).astype(int)
        frac = src - lo
        shifted = a[..., lo] * (1 - frac) + a[..., lo + 1] * frac  # prev(x - d)
        curve[i] = ((b[..., x] - shifted) ** 2).mean(axis=(-2, -1)).sum()
    return curve


def horizontal_shift(prev: np.ndarray, nxt: np.ndarray, max_shift: float, step: float = 0.125) -> float:
    """The horizontal shift (px) between frames ``prev`` and ``nxt`` ``[N, H, W, 3]`` that minimises their MSE
    pooled over the N pairs (the same camera motion in every pair)."""
    shifts = np.arange(-max_shift, max_shift + step / 2, step)
    return float(shifts[int(np.argmin(shift_curve(prev, nxt, shifts)))])


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation of two flat arrays (None when either is constant)."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def f1_score(pred: np.ndarray, label: np.ndarray) -> float | None:
    """F1 of boolean predictions vs labels (None when there is no positive label)."""
    pred, label = np.asarray(pred, bool).ravel(), np.asarray(label, bool).ravel()
    if not label.any():
        return None
    tp = int((pred & label).sum())
    return 2 * tp / (2 * tp + int((pred & ~label).sum()) + int((~pred & label).sum()))


# ------------------------------------------------------------------------------------------ real room


def sticky_actions(rng: np.random.Generator, n: int, dim: int, persistence: float = 0.9) -> np.ndarray:
    """``[n, dim]`` float32 temporally correlated random camera actions (a new uniform action with prob. 1 - persistence)."""
    out = np.zeros((n, dim), np.float32)
    a = rng.uniform(-1, 1, dim).astype(np.float32)
    for t in range(n):
        if rng.random() > persistence:
            a = rng.uniform(-1, 1, dim).astype(np.float32)
        out[t] = a
    return out


def real_episode(env: Any, seed: int, steps: int, k: int, *, reach: float, raw_frames: int,
                 actions: np.ndarray | None = None, policy: Any = None, mask_steps: Sequence[int] = (),
                 target_only: bool = False) -> dict[str, Any]:
    """Run the real room from ``reset(seed)`` for ``steps`` env steps of the world model (each = ``k`` room steps with
    the action held, as ``neuralsim.data.FrameRecorder``), driven by ``policy`` (which sees the real room) or ``actions``.

    Returns:
        ``raw`` (``[raw_frames, H, W, 3]``: the first room frames, for the context), ``obs`` (``[1 + steps, H, W, 3]``:
        the frame after every step), ``actions [steps, 4]``, ``rewards [steps]`` (summed over the ``k`` room steps,
        plus the success bonus when the room's success test passes at ``reach``, as in the collected data),
        ``terminated [steps]`` (that test: the room runs with a tiny reach radius so it never stops),
        ``masks`` (step → ``[H, W]`` object mask of that frame; ``target_only``: the target's alone),
        ``description``, ``poses [1 + steps, 4, 4]`` and ``target_positions [1 + steps, 3]`` (the camera and the target
        after every step, from ``info``).
    """
    obs, info = env.reset(seed=seed)
    poses, targets = [info["pose"]], [info["target_position"]]
    if policy is not None:
        policy.reset(env, np.random.default_rng(seed))
    raw, frames, acts, rewards, terminated = [obs], [obs], [], [], []
    masks = {0: env.object_mask(target_only)} if 0 in mask_steps else {}
    for t in range(steps):
        a = np.asarray(policy.act(obs, info) if policy is not None else actions[t], np.float32)
        total, reached = 0.0, False
        for _ in range(k):
            obs, reward, _, _, info = env.step(a)
            total += float(reward)
            reached |= env.target_reached(reach)  # the room's success test at its default radius
            if len(raw) < raw_frames:
                raw.append(obs)
        acts.append(a)
        rewards.append(total + (env.success_bonus if reached else 0.0))
        terminated.append(reached)
        frames.append(obs)
        poses.append(info["pose"])
        targets.append(info["target_position"])
        if t + 1 in mask_steps:
            masks[t + 1] = env.object_mask(target_only)
    return {"raw": np.stack(raw), "obs": np.stack(frames), "actions": np.stack(acts) if acts else np.zeros((0, 4), np.float32),
            "rewards": np.asarray(rewards, np.float32), "terminated": np.asarray(terminated, bool), "masks": masks,
            "description": str(info.get("description", "")), "poses": np.stack(poses).astype(np.float32),
            "target_positions": np.stack(targets).astype(np.float32)}


def named_episode(name: str, env: Any, seed: int, steps: int, k: int, *, reach: float, raw_frames: int,
                  mask_steps: Sequence[int] = (), target_only: bool = False) -> dict[str, Any]:
    """One real episode (:func:`real_episode`) under the actions ``name`` names: ``"sticky"`` or ``"random"``,
    sticky-random actions drawn from ``seed``; else that collection policy (e.g. ``"explore"``), which sees the room."""
    from neuralsim.data import make_policy

    masks = {"mask_steps": mask_steps, "target_only": target_only}
    if name in ("sticky", "random"):
        return real_episode(env, seed, steps, k, reach=reach, raw_frames=raw_frames, **masks,
                            actions=sticky_actions(np.random.default_rng(seed), steps, 4))
    return real_episode(env, seed, steps, k, reach=reach, raw_frames=raw_frames, **masks, policy=make_policy(name, env))


# ------------------------------------------------------------------------------------------ dream


def ae_roundtrip(model: Any, frames: np.ndarray, chunk: int = 64) -> np.ndarray:
    """``[N, H, W, 3]`` uint8 → the autoencoder's round trip of each frame alone (``decode(encode(x[:, None]))``)."""
    out = []
    for i in range(0, len(frames), chunk):
        x = torch.from_numpy(np.ascontiguousarray(frames[i : i + chunk]))[:, None]
        out.append(model.decode(model.encode(x))[:, -1].numpy())
    return np.concatenate(out) if out else frames.copy()


def dream_rollout(model: Any, context: np.ndarray, context_actions: np.ndarray, actions: np.ndarray,
                  prompts: list[str] | None, seed: int, denoise_steps: int | None) -> dict[str, np.ndarray]:
    """Batched dream: context ``[B, T, H, W, 3]`` uint8 + ``[B, T_lat-1, 4]``, then ``actions [B, N, 4]``.

    Returns:
        ``frames [B, N, H, W, 3]`` (the last decoded frame of every step), ``rewards [B, N]``, ``termination [B, N]``.
    """
    session = DreamSession(model, dtype="float32")  # precision: main()'s autocast
    g = session.generator(seed)
    ctx_actions = np.ascontiguousarray(context_actions, np.float32) if context_actions.shape[1] else None  # one frame: none
    state, _, _ = session.start(len(context), g, image=context, actions=ctx_actions, prompt=prompts)
    n, k = actions.shape[1], session.frames_per_step
    if not n:
        empty = np.zeros((len(context), 0), np.float32)
        return {"frames": np.zeros((len(context), 0, *context.shape[2:]), np.uint8), "rewards": empty, "termination": empty}
    # each step's frames decoded on a second thread while the next are drawn: the same outputs as stepping
    out = session.rollout(state, np.ascontiguousarray(actions, np.float32), g, denoise_steps=denoise_steps)
    return {"frames": out.frames[:, k - 1 :: k], "rewards": out.rewards, "termination": out.termination_prob}


# ------------------------------------------------------------------------------------------ protocols


def turned_last_frames(model: Any, last: np.ndarray, ctx_actions: np.ndarray, future_actions: np.ndarray,
                       horizons: Sequence[int], k: int) -> dict[int, np.ndarray] | None:
    """The last real context frame turned, in pixels, by the camera rotation from it to each horizon (translation
    ignored; the edge extends into what a turn reveals): the baseline of geometry alone. None without camera actions."""
    import torch

    from neuralsim.model import camera_step, rotation_warp_grid, warp_latents

    cfg = model.config
    if not cfg.camera:
        return None
    B = len(last)
    c2w = torch.eye(4, dtype=torch.float64).repeat(B, 1, 1)
    pitch = torch.zeros(B, dtype=torch.float64)
    step = lambda c, p, a: camera_step(c, p, torch.as_tensor(a, dtype=torch.float64), translation_speed=cfg.camera_translation_speed,
                                       rotation_speed_deg=cfg.camera_rotation_speed_deg)
    for t in range(ctx_actions.shape[1]):  # the pitch limit depends on the pitch reached in the context
        for _ in range(k):
            c2w, pitch = step(c2w, pitch, ctx_actions[:, t])
    start, poses = c2w, {}
    for t in range(max(horizons)):
        for _ in range(k):
            c2w, pitch = step(c2w, pitch, future_actions[:, t])
        poses[t + 1] = c2w
    image = torch.from_numpy(np.ascontiguousarray(last)).permute(0, 3, 1, 2).float()[:, None]  # (B, 1, 3, H, W)
    out = {}
    for h in horizons:
        grid = rotation_warp_grid(torch.linalg.inv(start) @ poses[h], *cfg.image_size, cfg.camera_fovy_deg)
        out[h] = warp_latents(image, grid[:, None])[:, 0].permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def protocol_episodes(name: str, env: Any, seeds: Sequence[int], horizons: Sequence[int], *, k: int, n_ctx: int,
                      reach: float) -> list[dict[str, Any]]:
    """The real episodes of action protocol ``name`` (``"explore"``: the collection policy; ``"sticky"``: sticky-random
    actions), one per seed, long enough for every horizon and strip, with object masks at the horizons."""
    H = max(max(horizons), max(STRIP_TIMES))
    steps = n_ctx - 1 + H
    raw_frames = 1 + (n_ctx - 1) * k
    mask_steps = [n_ctx - 1 + h for h in horizons]
    return [named_episode(name, env, seed, steps, k, reach=reach, raw_frames=raw_frames, mask_steps=mask_steps)
            for seed in seeds]


def autoencoder_metrics(real: np.ndarray, round_trip: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """``ae_psnr_pooled``, ``ae_psnr_mean``, ``ae_object_psnr`` and ``ae_sharpness_ratio`` of ``round_trip`` against
    the ``real`` frames ``[N, H, W, 3]`` (objects: the pixels of ``masks [N, H, W]``)."""
    ae = psnr_stats(round_trip, real)
    return {"ae_psnr_pooled": ae["pooled"], "ae_psnr_mean": ae["mean"],
            "ae_object_psnr": masked_psnr(round_trip, real, masks),
            "ae_sharpness_ratio": float(sharpness(round_trip).mean() / max(sharpness(real).mean(), 1e-9))}


def run_protocol(name: str, model: Any, env: Any, seeds: Sequence[int], horizons: Sequence[int], *, k: int, n_ctx: int,
                 reach: float, dream_seed: int, denoise_steps: int | None) -> dict[str, Any]:
    """Real episodes of one action protocol for every seed, the dream of the same actions, its baselines and ablations.

    Returns a dict of arrays (``context``, ``real`` ``[B, H_max, ...]``, ``dream``, ``masks`` per horizon, rewards...)
    and the flat metrics under ``"metrics"``.
    """
    episodes = protocol_episodes(name, env, seeds, horizons, k=k, n_ctx=n_ctx, reach=reach)
    context = np.stack([ep["raw"] for ep in episodes])  # (B, 1 + (n_ctx-1)k, H, W, 3)
    ctx_actions = np.stack([ep["actions"][: n_ctx - 1] for ep in episodes])  # (B, n_ctx-1, 4)
    future_actions = np.stack([ep["actions"][n_ctx - 1 :] for ep in episodes])  # (B, H, 4)
    real = np.stack([ep["obs"][n_ctx:] for ep in episodes])  # (B, H, H_img, W, 3): frame after dream step t at t-1
    last = context[:, -1]
    prompts = [ep["description"] for ep in episodes]
    masks = {h: np.stack([ep["masks"][n_ctx - 1 + h] for ep in episodes]) for h in horizons}
    out = {"context": context, "ctx_actions": ctx_actions, "actions": future_actions, "real": real, "prompts": prompts,
           "masks": masks, "real_rewards": np.stack([ep["rewards"][n_ctx - 1 :] for ep in episodes]),
           "real_terminated": np.stack([ep["terminated"][n_ctx - 1 :] for ep in episodes]), "seeds": list(seeds)}
    d = dream_rollout(model, context, ctx_actions, future_actions, prompts, dream_seed, denoise_steps)
    out.update(dream=d["frames"], dream_rewards=d["rewards"], dream_termination=d["termination"])
    last_ae = ae_roundtrip(model, last)
    out["last_ae"] = last_ae
    real_h = np.concatenate([real[:, h - 1] for h in horizons])
    ae_h = ae_roundtrip(model, real_h).reshape(len(horizons), len(seeds), *real.shape[2:])
    out["real_ae"] = {h: ae_h[i] for i, h in enumerate(horizons)}

    turned = turned_last_frames(model, last, ctx_actions, future_actions, horizons, k)
    m: dict[str, Any] = {}
    for h in horizons:
        r, dr, ae = real[:, h - 1], d["frames"][:, h - 1], out["real_ae"][h]
        s = psnr_stats(dr, r)
        c = psnr_stats(np.broadcast_to(last, r.shape), r)
        m[f"psnr_pooled_{name}_t{h}"], m[f"psnr_mean_{name}_t{h}"], m[f"psnr_median_{name}_t{h}"] = s["pooled"], s["mean"], s["median"]
        m[f"copy_last_pooled_{name}_t{h}"], m[f"copy_last_mean_{name}_t{h}"] = c["pooled"], c["mean"]
        m[f"copy_last_ae_pooled_{name}_t{h}"] = psnr_stats(last_ae, r)["pooled"]
        if turned is not None:  # geometry alone: the last real frame turned by the camera's rotation since
            m[f"copy_last_turned_pooled_{name}_t{h}"] = psnr_stats(turned[h], r)["pooled"]
        m[f"ssim_{name}_t{h}"] = float(ssim(dr, r).mean())
        m[f"object_psnr_{name}_t{h}"] = masked_psnr(dr, r, masks[h])
        m[f"copy_last_object_psnr_{name}_t{h}"] = masked_psnr(np.broadcast_to(last, r.shape), r, masks[h])
        m[f"object_pixel_fraction_{name}_t{h}"] = float(masks[h].mean())
        m[f"sharpness_vs_ae_{name}_t{h}"] = float(sharpness(dr).mean() / max(sharpness(ae).mean(), 1e-9))
    out["metrics"] = m
    return out


def run_ablations(name: str, model: Any, p: dict[str, Any], *, dream_seed: int, denoise_steps: int | None) -> dict[str, Any]:
    """Dreams of protocol ``p`` over ``ABLATION_HORIZONS`` with future actions zeroed, rays removed
    (``model.ablate_rays``; None where the model lacks it) and prompt removed: pooled PSNR per horizon."""
    H = max(ABLATION_HORIZONS)
    acts = p["actions"][:, :H]
    variants: dict[str, Callable[[], dict[str, np.ndarray] | None]] = {
        "no_actions": lambda: dream_rollout(model, p["context"], p["ctx_actions"], np.zeros_like(acts), p["prompts"],
                                            dream_seed, denoise_steps),
        "no_rays": lambda: _without_rays(model, lambda: dream_rollout(model, p["context"], p["ctx_actions"], acts,
                                                                      p["prompts"], dream_seed, denoise_steps)),
        "no_prompt": lambda: dream_rollout(model, p["context"], p["ctx_actions"], acts, None, dream_seed, denoise_steps),
    }
    m: dict[str, Any] = {}
    for variant, fn in variants.items():
        d = fn()
        for h in ABLATION_HORIZONS:
            m[f"ablation_{variant}_psnr_pooled_{name}_t{h}"] = (
                None if d is None else psnr_stats(d["frames"][:, h - 1], p["real"][:, h - 1])["pooled"])
    return m


def _without_rays(model: Any, fn: Callable[[], Any]) -> Any:
    """``fn()`` with ``model.ablate_rays = True`` (restored to False after); None when the model has no such switch."""
    if not hasattr(model, "ablate_rays"):
        return None
    model.ablate_rays = True
    try:
        return fn()
    finally:
        model.ablate_rays = False


def idle_and_yaw(model: Any, env: Any, p: dict[str, Any], *, k: int, reach: float, dream_seed: int,
                 denoise_steps: int | None, rotation_px: float) -> dict[str, Any]:
    """From the explore contexts: 16 idle steps, and ``l`` / ``j`` held ``YAW_STEPS`` steps, real and dreamed
    (one model batch of 3B rows). Returns the idle drops, the yaw shifts and ratios, and the no-rays yaw ratio."""
    from neuralsim.actions import keys_to_vector

    B, n_ctx = len(p["seeds"]), p["ctx_actions"].shape[1] + 1
    raw_frames = p["context"].shape[1]
    branches = {"idle": np.zeros(4, np.float32), "l": keys_to_vector("l").astype(np.float32),
                "j": keys_to_vector("j").astype(np.float32)}
    real: dict[str, np.ndarray] = {}
    replay_ok = True
    for key, vec in branches.items():
        n = IDLE_STEPS if key == "idle" else YAW_STEPS
        frames = []
        for i, seed in enumerate(p["seeds"]):
            acts = np.concatenate([p["ctx_actions"][i], np.repeat(vec[None], n, 0)])
            ep = real_episode(env, seed, len(acts), k, reach=reach, raw_frames=raw_frames, actions=acts)
            replay_ok &= bool(np.array_equal(ep["raw"], p["context"][i]))
            frames.append(ep["obs"][n_ctx - 1 :])  # (1 + n, H, W, 3): start frame, then the branch
        real[key] = np.stack(frames)
    start = p["context"][:, -1]
    start_ae = p["last_ae"]

    def dream_branches() -> dict[str, np.ndarray]:
        acts = np.concatenate([np.broadcast_to(vec, (B, IDLE_STEPS, 4)) for vec in branches.values()])
        d = dream_rollout(model, np.concatenate([p["context"]] * 3), np.concatenate([p["ctx_actions"]] * 3), acts,
                          p["prompts"] * 3, dream_seed, denoise_steps)["frames"]
        return {key: d[i * B : (i + 1) * B] for i, key in enumerate(branches)}

    dream = dream_branches()
    m: dict[str, Any] = {}
    ae_start = psnr_stats(start_ae, start)["pooled"]
    m["idle_ae_start_psnr_pooled"] = ae_start
    for t in (1, IDLE_STEPS):
        m[f"idle_drop_db_t{t}"] = ae_start - psnr_stats(dream["idle"][:, t - 1], real["idle"][:, t])["pooled"]
    # The real room is not frozen under idle actions: the agent's velocity decays over the first step or two and a
    # rolling ball keeps rolling; hence the real frames (not the start frame) are the reference above.
    m[f"idle_real_change_psnr_t{IDLE_STEPS}"] = psnr_stats(real["idle"][:, IDLE_STEPS], start)["pooled"]
    # The floor of the drops above for a dream that holds the scene: the start frame's round trip, frozen, scored
    # against the real frames (what the room's own motion after the release costs a perfectly still dream).
    for t in (1, IDLE_STEPS):
        m[f"idle_frozen_drop_db_t{t}"] = ae_start - psnr_stats(start_ae, real["idle"][:, t])["pooled"]
    m[f"idle_dream_t{IDLE_STEPS}_vs_start_ae_psnr_pooled"] = psnr_stats(dream["idle"][:, IDLE_STEPS - 1], start_ae)["pooled"]
    # Where the t+1 drop comes from: a dream that holds the start frame scores what copying it through the
    # autoencoder scores; the autoencoder round trip of the real t+1 frame is what a perfect dynamics would score.
    m["idle_dream_t1_psnr_pooled"] = psnr_stats(dream["idle"][:, 0], real["idle"][:, 1])["pooled"]
    m["idle_copy_start_ae_t1_psnr_pooled"] = psnr_stats(start_ae, real["idle"][:, 1])["pooled"]
    m["idle_ae_real_t1_psnr_pooled"] = psnr_stats(ae_roundtrip(model, real["idle"][:, 1]), real["idle"][:, 1])["pooled"]
    m["idle_dream_t1_vs_start_ae_psnr_pooled"] = psnr_stats(dream["idle"][:, 0], start_ae)["pooled"]
    m["idle_real_still_after_t2_fraction"] = float(np.mean([np.array_equal(r[-1], r[2]) for r in real["idle"]]))

    max_shift = min(max(3.0, 2.5 * rotation_px * k), start.shape[2] / 4)

    def shifts(frames_real: np.ndarray, frames_dream: np.ndarray, first_dream: np.ndarray) -> tuple[float, float]:
        seq_d = np.concatenate([first_dream[:, None], frames_dream[:, :YAW_STEPS]], 1)
        r = [horizontal_shift(frames_real[:, t], frames_real[:, t + 1], max_shift) for t in range(YAW_STEPS)]
        dr = [horizontal_shift(seq_d[:, t], seq_d[:, t + 1], max_shift) for t in range(YAW_STEPS)]
        return float(np.mean(r)), float(np.mean(dr))

    num = den = 0.0
    for key, sign in (("l", -1.0), ("j", 1.0)):  # yaw right moves the image content left
        real_shift, dream_shift = shifts(real[key], dream[key], start_ae)
        m[f"yaw_real_shift_px_{key}"], m[f"yaw_dream_shift_px_{key}"] = real_shift, dream_shift
        m[f"yaw_shift_ratio_{key}"] = dream_shift / real_shift if abs(real_shift) > 1e-6 else None
        num, den = num + sign * dream_shift, den + sign * real_shift
    m["yaw_shift_ratio"] = num / den if abs(den) > 1e-6 else None
    m["yaw_max_shift_px"] = max_shift
    no_rays = _without_rays(model, dream_branches)
    if no_rays is None:
        m["ablation_no_rays_yaw_shift_ratio"] = None
    else:
        num = den = 0.0
        for key, sign in (("l", -1.0), ("j", 1.0)):
            real_shift, dream_shift = shifts(real[key], no_rays[key], start_ae)
            num, den = num + sign * dream_shift, den + sign * real_shift
        m["ablation_no_rays_yaw_shift_ratio"] = num / den if abs(den) > 1e-6 else None
    m["replay_matches_context"] = replay_ok
    return m


def revisit_test(model: Any, env: Any, seeds: Sequence[int], *, k: int, n_ctx: int, reach: float, dream_seed: int,
                 denoise_steps: int | None) -> dict[str, Any]:
    """Yaw right 20 steps and back after a calm sticky context (all seeds batched): the frame on return vs the real one."""
    from neuralsim.actions import action_string_to_vectors

    loop = action_string_to_vectors(REVISIT_LOOP)[:, :4].astype(np.float32)
    raw_frames = 1 + (n_ctx - 1) * k
    eps = []
    for seed in seeds:
        acts = np.concatenate([sticky_actions(np.random.default_rng(seed), n_ctx - 1, 4) * 0.5, loop])
        eps.append(real_episode(env, seed, len(acts), k, reach=reach, raw_frames=raw_frames, actions=acts))
    context = np.stack([ep["raw"] for ep in eps])
    d = dream_rollout(model, context, np.stack([ep["actions"][: n_ctx - 1] for ep in eps]),
                      np.stack([ep["actions"][n_ctx - 1 :] for ep in eps]), [ep["description"] for ep in eps],
                      dream_seed, denoise_steps)["frames"]
    real_end = np.stack([ep["obs"][-1] for ep in eps])
    start_ae = ae_roundtrip(model, context[:, -1])
    return {"revisit_psnr_vs_real": psnr_stats(d[:, -1], real_end)["pooled"],
            "revisit_psnr_vs_real_mean": psnr_stats(d[:, -1], real_end)["mean"],
            "revisit_psnr_vs_first_visit": psnr_stats(d[:, -1], start_ae)["pooled"],
            "revisit_real_return_vs_start_psnr": psnr_stats(real_end, context[:, -1])["pooled"],
            "revisit_seeds": len(seeds)}


def turn_around_test(model: Any, env: Any, seeds: Sequence[int], *, k: int, reach: float, dream_seed: int,
                     denoise_steps: int | None) -> dict[str, Any]:
    """From one real frame and its description, ``l`` held until the camera has turned ``TURN_AROUND_DEG``: the end
    frame vs the real one with the prompt and without it (all seeds batched). The image alone does not show that side
    of the room; the sentence names its walls' colours, so this is where a prompt can matter."""
    from neuralsim.actions import keys_to_vector

    steps = int(round(TURN_AROUND_DEG / (env.rotation_speed_deg * k)))
    acts = np.repeat(keys_to_vector("l")[None, :4].astype(np.float32), steps, 0)
    eps = [real_episode(env, seed, steps, k, reach=reach, raw_frames=1, actions=acts) for seed in seeds]
    context = np.stack([ep["raw"][:1] for ep in eps])
    batch_acts, no_ctx = np.repeat(acts[None], len(eps), 0), np.zeros((len(eps), 0, 4), np.float32)
    real_end = np.stack([ep["obs"][-1] for ep in eps])
    ends = {variant: dream_rollout(model, context, no_ctx, batch_acts, prompts, dream_seed, denoise_steps)["frames"][:, -1]
            for variant, prompts in (("prompt", [ep["description"] for ep in eps]), ("no_prompt", None))}
    with_prompt, without = (psnr_stats(ends[v], real_end)["pooled"] for v in ("prompt", "no_prompt"))
    wins = _mse(ends["prompt"], real_end) < _mse(ends["no_prompt"], real_end)  # per seed: is the prompt's end closer?
    return {"turn_around_psnr": with_prompt, "ablation_no_prompt_turn_around_psnr": without,
            "turn_around_prompt_gain_db": with_prompt - without, "turn_around_prompt_wins": float(wins.mean()),
            "turn_around_steps": steps,
            "turn_around_start_vs_end_real_psnr": psnr_stats(context[:, 0], real_end)["pooled"]}


SATURATED_STD = 0.9 * 127.5  # a frame std above this: nearly every pixel at 0 or 255
LONG_CHECKPOINTS = 100  # frames of the long rollout judged (evenly spaced)
LATENT_RMS_FACTOR = 2.0  # a latent RMS above this times the real room's largest is out of the data's range
COLLAPSE_MARGIN = 0.1  # collapsed: degenerate at this share of checkpoints more than the real room is


def _checkpoint_stats(frame: np.ndarray, latent: torch.Tensor) -> dict[str, float]:
    """A long-rollout checkpoint: the frame's mean and std (0-255) and its latent's RMS."""
    frame = frame.astype(np.float64)
    return {"mean": round(float(frame.mean()), 2), "std": round(float(frame.std()), 2),
            "latent_rms": round(float(latent.float().pow(2).mean().sqrt()), 3)}


def long_rollout(model: Any, start: np.ndarray, prompt: str, steps: int, *, real_std: float, dream_seed: int,
                 denoise_steps: int | None, env: Any = None, seed: int | None = None, k: int = 1,
                 reach: float = 0.0) -> dict[str, Any]:
    """One dream of ``steps`` sticky-random steps from one real frame ``[H, W, 3]``, looked at ``LONG_CHECKPOINTS``
    times: finite? collapsed?

    A checkpoint's frame is degenerate when it is flat (std under a quarter of ``real_std``, the real context frames'),
    black or white (mean out of 5..250), saturated (std above ``SATURATED_STD``) or its latent is out of the data's
    range (RMS above ``LATENT_RMS_FACTOR`` times the largest RMS of the real room's latents at the checkpoints). Given
    the real room ``env`` and the ``seed`` that drew ``start``, the real room runs the same actions and its frames at the
    same checkpoints are judged by the same rule: it shows flat frames too (facing a wall: std 0 measured). Collapsed:
    not finite, or degenerate at more checkpoints than the real room plus ``COLLAPSE_MARGIN`` of them."""
    session = DreamSession(model, dtype="float32")  # precision: main()'s autocast
    g = session.generator(dream_seed)
    rng = np.random.default_rng(dream_seed)
    state, _, _ = session.start(1, g, image=start[None, None], prompt=[prompt])
    stats, finite = [], True
    t0 = time.perf_counter()
    actions = sticky_actions(rng, steps, 4)
    diverged_at = None
    for t in range(steps):
        shown = (t + 1) % max(1, steps // LONG_CHECKPOINTS) == 0
        try:
            out = session.step(state, actions[t : t + 1], g, decode=shown, denoise_steps=denoise_steps)
        except FloatingPointError:  # the model refuses a non-finite state: the rollout diverged here
            finite, diverged_at = False, t + 1
            break
        state = out.state
        finite &= bool(torch.isfinite(out.latent).all())
        if shown:
            stats.append({"step": t + 1, **_checkpoint_stats(out.frames[0, -1], out.latent)})
    seconds = time.perf_counter() - t0
    if env is not None and seed is not None and stats:  # the real room after the same actions, same checkpoints
        real = real_episode(env, seed, len(actions), k, reach=reach, raw_frames=1, actions=actions)["obs"]
        latents = model.encode(np.stack([real[s["step"]] for s in stats])[:, None])[:, 0]  # (n, C, h, w)
        for s, latent in zip(stats, latents):
            s.update({f"real_{key}": v for key, v in _checkpoint_stats(real[s["step"]], latent).items()})
    rms_limit = LATENT_RMS_FACTOR * max((s["real_latent_rms"] for s in stats if "real_latent_rms" in s), default=math.inf)

    def degenerate(mean: float, std: float, rms: float) -> bool:
        return std < 0.25 * real_std or std > SATURATED_STD or not 5 < mean < 250 or rms > rms_limit

    dream_share = float(np.mean([degenerate(s["mean"], s["std"], s["latent_rms"]) for s in stats])) if stats else 1.0
    real_checked = [s for s in stats if "real_mean" in s]
    real_share = (float(np.mean([degenerate(s["real_mean"], s["real_std"], s["real_latent_rms"]) for s in real_checked]))
                  if real_checked else 0.0)
    collapsed = (not finite) or dream_share > real_share + COLLAPSE_MARGIN
    return {"long_rollout_steps": steps, "long_rollout_finite": finite, "long_rollout_collapsed": collapsed,
            "long_rollout_diverged_at_step": diverged_at,
            "long_rollout_degenerate_share": round(dream_share, 3), "long_rollout_real_degenerate_share": round(real_share, 3),
            "long_rollout_latent_rms_limit": rms_limit if math.isfinite(rms_limit) else None,
            "long_rollout_frame_stats": stats, "real_frame_std": real_std,
            "long_rollout_steps_per_s": (diverged_at or steps) / max(seconds, 1e-9)}


def reward_protocol(name: str, model: Any, env: Any, seeds: Sequence[int], *, k: int, n_ctx: int, reach: float,
                    dream_seed: int, denoise_steps: int | None) -> dict[str, Any]:
    """The real task env (never terminating: ``reach`` labels success) under policy ``name`` (``"random"``: sticky-random
    actions) for ``n_ctx - 1 + REWARD_STEPS`` steps per seed, and the dream of the same actions from its context.

    Returns ``real_rewards``, ``dream_rewards``, ``real_terminated``, ``dream_termination`` (``[B, REWARD_STEPS]``) and
    ``valid`` (``[B, REWARD_STEPS]`` bool): the steps up to and including the first success (an episode ends there; a seed
    that succeeds within the context has none)."""
    steps = n_ctx - 1 + REWARD_STEPS
    raw_frames = 1 + (n_ctx - 1) * k
    eps = [named_episode(name, env, seed, steps, k, reach=reach, raw_frames=raw_frames) for seed in seeds]
    terminated = np.stack([ep["terminated"] for ep in eps])  # (B, steps)
    valid = np.cumsum(terminated, axis=1) - terminated == 0  # not after the first success
    ctx_actions = np.stack([ep["actions"][: n_ctx - 1] for ep in eps])
    d = dream_rollout(model, np.stack([ep["raw"] for ep in eps]), ctx_actions,
                      np.stack([ep["actions"][n_ctx - 1 :] for ep in eps]), [ep["description"] for ep in eps],
                      dream_seed, denoise_steps)
    out = {"real_rewards": np.stack([ep["rewards"][n_ctx - 1 :] for ep in eps]), "dream_rewards": d["rewards"],
           "real_terminated": terminated[:, n_ctx - 1 :], "dream_termination": d["termination"],
           "valid": valid[:, n_ctx - 1 :]}
    tracker = getattr(model, "reward_model", None)
    if getattr(tracker, "memory_size", None) is not None:  # a target tracker: its motion model from the true start
        out.update(true_start_dead_reckoning(tracker, eps, n_ctx, k))
    if getattr(model, "reward_model", None) is not None and k == 1:  # its ceiling: the same steps seen on real frames
        latents = model.encode(np.stack([ep["obs"] for ep in eps])[:, :, None].reshape(-1, 1, *eps[0]["obs"].shape[1:]))
        latents = latents.view(len(eps), steps + 1, *latents.shape[2:])
        rewards, probs = model.reward_model_sequence(latents, np.stack([ep["actions"] for ep in eps]))
        if getattr(model, "termination_detector", None) is not None:  # the ending judged by the detector, as the dream's
            obs = torch.from_numpy(np.stack([ep["obs"][1:] for ep in eps]))  # the frame after each step
            judged = torch.sigmoid(model.termination_detector(obs.flatten(0, 1)).float()).view(probs.shape)
            bonus = float(model.reward_model.bonus)
            rewards, probs = rewards - bonus * probs + bonus * (judged > 0.5).float(), judged
        out["real_frames_rewards"] = rewards[:, n_ctx - 1 :].numpy()
        out["real_frames_termination"] = probs[:, n_ctx - 1 :].numpy()
    return out


@torch.no_grad()
def true_start_dead_reckoning(tracker: Any, eps: list[dict[str, Any]], n_ctx: int, k: int) -> dict[str, np.ndarray]:
    """A target tracker's dream without its localizer: the memory opened at the target's true offset (and the agent's
    true place in the room, with walls) on the last context frame, then moved by the dream's actions alone, as a dream
    at ``reward_dream_trust`` 0 moves it. ``true_start_rewards`` / ``true_start_termination`` ``[B, REWARD_STEPS]``: the
    ceiling of dead reckoning, which only the motion model limits (the ball rolls, boxes stop the agent)."""
    from neuralsim.reward import room_places, target_offsets

    last = (n_ctx - 1) * k  # the raw frame the dream starts after
    poses = torch.as_tensor(np.stack([ep["poses"][last] for ep in eps]))
    targets = torch.as_tensor(np.stack([ep["target_positions"][last] for ep in eps]))
    memory = torch.cat([target_offsets(poses, targets), torch.zeros(len(eps), 2), room_places(poses)], dim=-1)
    memory = memory[:, : tracker.memory_size]
    rewards, termination = [], []
    for t in range(REWARD_STEPS):
        action = torch.as_tensor(np.stack([ep["actions"][n_ctx - 1 + t] for ep in eps]))
        progress, memory = tracker._advance(memory, action)
        ended = (tracker._termination(memory[:, :2]) > 0).float()
        rewards.append(progress + tracker.bonus_value * ended)
        termination.append(ended)
    return {"true_start_rewards": torch.stack(rewards, 1).numpy(), "true_start_termination": torch.stack(termination, 1).numpy()}


def termination_delays(protocols: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per episode whose real first success falls within the first ``REWARD_STEPS`` dream steps: the dream's first
    success step (prob > 0.5, any of those steps) minus the real one. ``termination_delay_median`` over the episodes
    where the dream ends at all, ``termination_within_1_step`` the share of all of them ended within one step of the
    real success, ``termination_missed`` those the dream never ends."""
    delays, missed = [], 0
    for p in protocols.values():
        real = p["real_terminated"][:, :REWARD_STEPS] & p.get("valid", np.ones_like(p["real_terminated"], bool))[:, :REWARD_STEPS]
        dream = p["dream_termination"][:, :REWARD_STEPS] > 0.5
        for r, d in zip(real, dream):
            if r.any():
                if d.any():
                    delays.append(int(d.argmax()) - int(r.argmax()))
                else:
                    missed += 1
    total = len(delays) + missed
    return {"termination_delay_median": float(np.median(delays)) if delays else None,
            "termination_within_1_step": sum(abs(x) <= 1 for x in delays) / total if total else None,
            "termination_missed": missed}


def episode_bootstrap(episodes: Sequence[tuple[np.ndarray, ...]], statistic: Callable[..., float | None], *,
                      resamples: int = BOOTSTRAP_RESAMPLES, level: float = BOOTSTRAP_LEVEL, seed: int = 0
                      ) -> list[float] | None:
    """The ``level`` percentile interval ``[low, high]`` of ``statistic(*columns)`` over the episodes resampled with
    replacement (``resamples`` times, a fixed ``seed``: the same inputs give the same interval). ``episodes``: per
    episode a tuple of columns (its scored steps); each resample's columns are the chosen episodes' concatenated.
    Resamples where the statistic is undefined (None: no positive, a constant) are left out; None when more than half
    are, or there are no episodes. Episodes, not steps, are resampled: an episode's steps are not independent."""
    if not episodes:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        picked = [episodes[i] for i in rng.integers(0, len(episodes), len(episodes))]
        value = statistic(*(np.concatenate(column) for column in zip(*picked)))
        if value is not None:
            values.append(value)
    if len(values) < resamples / 2:
        return None
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def reward_metrics(protocols: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Reward prediction: Pearson of dreamed vs real reward over dream steps 1-16; termination F1 (prob > 0.5 vs the
    real agent within reach of the target); steps after an episode's first success left out. Pooled over the
    protocols, and per protocol; the pooled two with their 90 % episode-bootstrap intervals (``*_ci90``,
    :func:`episode_bootstrap`: a few dozen endings decide the F1, and the interval says how far a new set of seeds
    may move it)."""
    m: dict[str, Any] = {}
    episodes = []  # per episode its scored steps' (real reward, dream reward, real end, dream end)
    for name, p in protocols.items():
        valid = p.get("valid", np.ones_like(p["real_terminated"], bool))[:, :REWARD_STEPS]
        mine = [(p["real_rewards"][b, :REWARD_STEPS][v], p["dream_rewards"][b, :REWARD_STEPS][v],
                 p["real_terminated"][b, :REWARD_STEPS][v], p["dream_termination"][b, :REWARD_STEPS][v] > 0.5)
                for b, v in enumerate(valid)]
        rr, dr, rt, dt = (np.concatenate(column) for column in zip(*mine))
        m[f"reward_corr_t1_16_{name}"] = pearson(rr, dr)
        m[f"termination_f1_{name}"] = f1_score(dt, rt)
        episodes += mine
    cat = dict(zip(("rr", "dr", "rt", "dt"), (np.concatenate(column) for column in zip(*episodes))))
    m["reward_corr_t1_16"] = pearson(cat["rr"], cat["dr"])
    m["termination_f1"] = f1_score(cat["dt"], cat["rt"])
    m["reward_corr_t1_16_ci90"] = episode_bootstrap(episodes, lambda rr, dr, rt, dt: pearson(rr, dr))
    m["termination_f1_ci90"] = episode_bootstrap(episodes, lambda rr, dr, rt, dt: f1_score(dt, rt))
    m["termination_positives"] = int(cat["rt"].sum())
    m["termination_predicted"] = int(cat["dt"].sum())
    # Where the gap is: the rewards of the steps that end neither episode (progress alone), and how many steps the
    # dream's first success falls after the real one (a success bonus one step off costs the Pearson most of its value)
    calm = ~cat["rt"] & ~cat["dt"]
    m["reward_corr_t1_16_progress"] = pearson(cat["rr"][calm], cat["dr"][calm])
    m.update(termination_delays(protocols))
    if all("true_start_rewards" in p for p in protocols.values()):  # a tracker's dead reckoning from the true start
        v = [p["valid"][:, :REWARD_STEPS] for p in protocols.values()]
        ps = list(protocols.values())
        m["reward_corr_t1_16_true_start"] = pearson(np.concatenate([p["real_rewards"][:, :REWARD_STEPS][x] for p, x in zip(ps, v)]),
                                                    np.concatenate([p["true_start_rewards"][x] for p, x in zip(ps, v)]))
        m["termination_f1_true_start"] = f1_score(np.concatenate([p["true_start_termination"][x] > 0.5 for p, x in zip(ps, v)]),
                                                  np.concatenate([p["real_terminated"][:, :REWARD_STEPS][x] for p, x in zip(ps, v)]))
    if all("real_frames_rewards" in p for p in protocols.values()):  # the reward model on the real frames: its ceiling
        pairs = [(p["real_rewards"][:, :REWARD_STEPS][v], p["real_frames_rewards"][:, :REWARD_STEPS][v],
                  p["real_terminated"][:, :REWARD_STEPS][v], p["real_frames_termination"][:, :REWARD_STEPS][v] > 0.5)
                 for p in protocols.values() for v in [p["valid"][:, :REWARD_STEPS]]]
        m["reward_corr_t1_16_real_frames"] = pearson(np.concatenate([a for a, _, _, _ in pairs]),
                                                     np.concatenate([b for _, b, _, _ in pairs]))
        m["termination_f1_real_frames"] = f1_score(np.concatenate([d for *_, d in pairs]),
                                                   np.concatenate([c for _, _, c, _ in pairs]))
    return m


# ------------------------------------------------------------------------------------------ outputs


def save_strip(path: Path, p: dict[str, Any], times: Sequence[int], seeds: int = STRIP_SEEDS, scale: int = 2) -> None:
    """PNG: for each of the first ``seeds`` seeds a real row over a dream row; columns ``times`` (0 = last context
    frame: real / its autoencoder round trip), upscaled ``scale``×; white gaps between seeds."""
    import imageio.v3 as iio

    rows = []
    H, W = p["real"].shape[2:4]
    gap = np.full((4, (W + 2) * len(times), 3), 255, np.uint8)
    for i in range(min(seeds, len(p["seeds"]))):
        for kind, first in (("real", p["context"][i, -1]), ("dream", p["last_ae"][i])):
            tiles = [first if t == 0 else p[kind][i, t - 1] for t in times]
            rows.append(np.concatenate([np.pad(x, ((0, 0), (1, 1), (0, 0)), constant_values=255) for x in tiles], 1))
        rows.append(gap)
    image = np.concatenate(rows[:-1], 0).repeat(scale, 0).repeat(scale, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, image)


def evaluate_gates(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The acceptance gates of the fidelity issue: ``{name: {"value", "threshold", "pass"}}`` (None value: fails)."""
    gates: dict[str, dict[str, Any]] = {}

    def diff(a: str, b: str) -> float | None:
        return None if r.get(a) is None or r.get(b) is None else r[a] - r[b]

    def add(name: str, value: Any, threshold: Any, ok: Callable[[Any], bool]) -> None:
        gates[name] = {"value": value, "threshold": threshold, "pass": value is not None and bool(ok(value))}

    for proto, margins in (("explore", {1: 3.0, 4: 4.0, 16: 3.0}), ("sticky", {1: 2.0, 4: 2.0, 16: 2.0})):
        for h, margin in margins.items():
            add(f"dream_minus_copy_last_{proto}_t{h}", diff(f"psnr_pooled_{proto}_t{h}", f"copy_last_pooled_{proto}_t{h}"),
                f">= {margin}", lambda v, m=margin: v >= m)
    add("idle_drop_db_t1", r.get("idle_drop_db_t1"), "<= 1", lambda v: v <= 1)
    add("idle_drop_db_t16", r.get("idle_drop_db_t16"), "<= 2", lambda v: v <= 2)
    add("yaw_shift_ratio", r.get("yaw_shift_ratio"), "0.85..1.15", lambda v: 0.85 <= v <= 1.15)
    add("sharpness_vs_ae_explore_t16", r.get("sharpness_vs_ae_explore_t16"), ">= 0.75", lambda v: v >= 0.75)
    add("sharpness_vs_ae_sticky_t16", r.get("sharpness_vs_ae_sticky_t16"), ">= 0.6", lambda v: v >= 0.6)
    add("object_psnr_explore_t4", r.get("object_psnr_explore_t4"), ">= 22", lambda v: v >= 22)
    add("ae_psnr_pooled", r.get("ae_psnr_pooled"), ">= 34", lambda v: v >= 34)
    add("ae_object_psnr", r.get("ae_object_psnr"), ">= 27", lambda v: v >= 27)
    add("revisit_psnr_vs_real", r.get("revisit_psnr_vs_real"), ">= 22", lambda v: v >= 22)
    add("long_rollout_ok", bool(r.get("long_rollout_finite")) and not r.get("long_rollout_collapsed"), "finite, not collapsed",
        lambda v: v)
    return gates


def _f(v: Any, digits: int = 2) -> str:
    return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def format_interval(interval: Sequence[float] | None) -> str:
    """A ``*_ci90`` interval as ``[90 % CI low–high]`` ("" without one)."""
    return "" if interval is None else f"[90 % CI {interval[0]:.2f}–{interval[1]:.2f}]"


def print_report(r: dict[str, Any], horizons: Sequence[int]) -> None:
    """The human-readable table (the JSON follows as the last line)."""
    for proto in PROTOCOLS:
        print(f"\n{proto}: dream vs real, PSNR dB ({r['seeds']} seeds; pooled = MSE averaged over seeds first)")
        head = ["t", "pooled", "mean", "median", "copy", "copyAE", "turned", "obj", "copyObj", "SSIM", "sharp/AE"]
        print(" ".join(f"{h:>8}" for h in head))
        for h in horizons:
            vals = [r.get(f"psnr_pooled_{proto}_t{h}"), r.get(f"psnr_mean_{proto}_t{h}"), r.get(f"psnr_median_{proto}_t{h}"),
                    r.get(f"copy_last_pooled_{proto}_t{h}"), r.get(f"copy_last_ae_pooled_{proto}_t{h}"),
                    r.get(f"copy_last_turned_pooled_{proto}_t{h}"),
                    r.get(f"object_psnr_{proto}_t{h}"), r.get(f"copy_last_object_psnr_{proto}_t{h}")]
            extra = [_f(r.get(f"ssim_{proto}_t{h}"), 3), _f(r.get(f"sharpness_vs_ae_{proto}_t{h}"), 3)]
            print(" ".join(f"{x:>8}" for x in [str(h), *(_f(v) for v in vals), *extra]))
        print("  ablations (pooled PSNR): " + "; ".join(
            f"t+{h}: actions 0 {_f(r.get(f'ablation_no_actions_psnr_pooled_{proto}_t{h}'))}, "
            f"no rays {_f(r.get(f'ablation_no_rays_psnr_pooled_{proto}_t{h}'))}, "
            f"no prompt {_f(r.get(f'ablation_no_prompt_psnr_pooled_{proto}_t{h}'))}" for h in ABLATION_HORIZONS))
    print(f"\nautoencoder round trip: pooled {_f(r['ae_psnr_pooled'])} dB, objects {_f(r['ae_object_psnr'])} dB, "
          f"sharpness AE/real {_f(r['ae_sharpness_ratio'], 3)}")
    print(f"idle: drop {_f(r['idle_drop_db_t1'])} dB at t+1, {_f(r['idle_drop_db_t16'])} dB at t+16 "
          f"(AE start {_f(r['idle_ae_start_psnr_pooled'])} dB; real t+16 vs start {_f(r['idle_real_change_psnr_t16'])} dB)")
    if "idle_frozen_drop_db_t1" in r:
        print(f"idle: a dream frozen at the start frame's round trip would drop {_f(r['idle_frozen_drop_db_t1'])} / "
              f"{_f(r['idle_frozen_drop_db_t16'])} dB (the room's own motion after the release: the coast, rolling "
              f"balls); the dream after 16 idle steps is {_f(r['idle_dream_t16_vs_start_ae_psnr_pooled'])} dB from that frame")
    if "idle_dream_t1_psnr_pooled" in r:
        print(f"idle t+1 vs the real t+1: dream {_f(r['idle_dream_t1_psnr_pooled'])} dB, the start frame through the AE "
              f"{_f(r['idle_copy_start_ae_t1_psnr_pooled'])} dB, the real t+1 through the AE "
              f"{_f(r['idle_ae_real_t1_psnr_pooled'])} dB; dream t+1 vs the AE start "
              f"{_f(r['idle_dream_t1_vs_start_ae_psnr_pooled'])} dB")
    print(f"yaw: shift/step real {_f(r['yaw_real_shift_px_l'])} / {_f(r['yaw_real_shift_px_j'])} px (l/j), dream "
          f"{_f(r['yaw_dream_shift_px_l'])} / {_f(r['yaw_dream_shift_px_j'])} px; ratio {_f(r['yaw_shift_ratio'], 3)} "
          f"(l {_f(r['yaw_shift_ratio_l'], 3)}, j {_f(r['yaw_shift_ratio_j'], 3)}; rays removed {_f(r['ablation_no_rays_yaw_shift_ratio'], 3)})")
    print(f"revisit: vs real {_f(r['revisit_psnr_vs_real'])} dB, vs first visit {_f(r['revisit_psnr_vs_first_visit'])} dB")
    print(f"turn around ({r['turn_around_steps']} steps of l from one frame): with the prompt {_f(r['turn_around_psnr'])} dB, "
          f"prompt removed {_f(r['ablation_no_prompt_turn_around_psnr'])} dB (gain {_f(r['turn_around_prompt_gain_db'])} dB, "
          f"closer with it on {_f(r['turn_around_prompt_wins'])} of the seeds; "
          f"real end vs start {_f(r['turn_around_start_vs_end_real_psnr'])} dB)")
    print(f"reward (default task) corr t1-16 {_f(r['reward_corr_t1_16'], 3)} "
          f"{format_interval(r.get('reward_corr_t1_16_ci90'))}; termination F1 {_f(r['termination_f1'], 3)} "
          f"{format_interval(r.get('termination_f1_ci90'))} "
          f"({r['termination_positives']} positives, {r['termination_predicted']} predicted); per policy: " + ", ".join(
              f"{p} {_f(r.get(f'reward_corr_t1_16_{p}'), 3)} / {_f(r.get(f'termination_f1_{p}'), 3)}" for p in REWARD_PROTOCOLS)
          + f"; on the real frames {_f(r.get('reward_corr_t1_16_real_frames'), 3)} / {_f(r.get('termination_f1_real_frames'), 3)}"
          + f"; progress alone {_f(r.get('reward_corr_t1_16_progress'), 3)}, the dream's first success "
          f"{_f(r.get('termination_delay_median'), 1)} steps after the real one (median; within 1 step: "
          f"{_f(r.get('termination_within_1_step'), 2)}, missed: {r.get('termination_missed')})")
    if r.get("ball_thrown"):
        t = r["ball_thrown"]
        print(f"  the ball thrown instead (not gated): corr t1-16 {_f(t['reward_corr_t1_16'], 3)} "
              f"{format_interval(t.get('reward_corr_t1_16_ci90'))}; termination F1 {_f(t['termination_f1'], 3)} "
              f"{format_interval(t.get('termination_f1_ci90'))} ({t['termination_positives']} positives, "
              f"{t['termination_predicted']} predicted)")
    print(f"long rollout {r['long_rollout_steps']} steps: finite={r['long_rollout_finite']} collapsed={r['long_rollout_collapsed']}")
    print(f"  degenerate checkpoints: dream {_f(r.get('long_rollout_degenerate_share'), 2)}, real room after the same "
          f"actions {_f(r.get('long_rollout_real_degenerate_share'), 2)} (collapsed: dream > real + {COLLAPSE_MARGIN})")
    every = max(1, len(r.get("long_rollout_frame_stats", [])) // 10)
    for st in r.get("long_rollout_frame_stats", [])[every - 1 :: every]:  # dream (real room after the same actions)
        print(f"  step {st['step']:>6}: frame mean {st['mean']:6.1f} ({st.get('real_mean', float('nan')):6.1f}), "
              f"std {st['std']:5.1f} ({st.get('real_std', float('nan')):5.1f}), latent RMS {st['latent_rms']:6.2f} "
              f"({st.get('real_latent_rms', float('nan')):4.2f})")
    print("\ngates:")
    for name, g in r["gates"].items():
        print(f"  {'PASS' if g['pass'] else 'fail'}  {name:<34} {_f(g['value'], 3) if not isinstance(g['value'], bool) else str(g['value']):>8}  {g['threshold']}")


def plot(r: dict[str, Any], horizons: Sequence[int], path: Path) -> str | None:
    """PSNR (pooled) vs horizon, dream and copy-last, both protocols (None without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for proto, colour in zip(PROTOCOLS, ("C0", "C1")):
        ax.plot(horizons, [r[f"psnr_pooled_{proto}_t{h}"] for h in horizons], "o-", color=colour, label=f"dream ({proto})")
        ax.plot(horizons, [r[f"copy_last_pooled_{proto}_t{h}"] for h in horizons], "s--", color=colour, alpha=0.6,
                label=f"copy last ({proto})")
    ax.axhline(r["ae_psnr_pooled"], color="grey", lw=0.8, ls=":", label="autoencoder")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("horizon (env steps)")
    ax.set_ylabel("pooled PSNR (dB)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


# ------------------------------------------------------------------------------------------ main


def _display_path(path: Path) -> str:
    """``path`` relative to the repository root when inside it (as results JSONs name files), else absolute."""
    root = Path(__file__).resolve().parent.parent
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path.resolve())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="checkpoint directory or shipped name")
    parser.add_argument("--autoencoder-only", action="store_true",
                        help="only the autoencoder's figures (ae_*: the round trip of the same real frames; no dream, "
                             "about 20 s), e.g. after a decoder fine-tune; results name fidelity_autoencoder[_quick]")
    parser.add_argument("--long-steps", type=int, default=None, help="long-rollout steps (default 10,000; --quick 1,000)")
    parser.add_argument("--denoise-steps", type=int, default=None)
    parser.add_argument("--context-noise", type=float, default=None,
                        help="override the noise level committed frames are held at (inference-time ablation; "
                             "0 disables the fused commit, so a separate clean commit pass runs)")
    parser.add_argument("--flow-shift", type=float, default=None,
                        help="override the sampling schedule's timestep shift (inference-time; with --denoise-steps 3 "
                             "the middle pass runs at 0.05 + 0.95 s/(1+s): 0.357 puts it at 0.30)")
    parser.add_argument("--context-window", type=int, default=None,
                        help="override config.context_window: the dream's recurrent context restarts from its last "
                             "frame once it holds this many frames (0: never; inference-time)")
    parser.add_argument("--dtype", default="auto", help="compute dtype via autocast: auto (bf16 only where native), float32, bfloat16")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    add_standard_args(parser, "fidelity", quick_help="8 seeds, horizons up to 64, 1,000-step long rollout", seeds=SEEDS)
    parser.add_argument("--strips-dir", type=Path, default=None,
                        help="where fidelity_strip_<protocol>.png go (default: docs/ for the full run named "
                             "fidelity, else --results-dir as <name>_strip_<protocol>.png, so a quick or named "
                             "run never replaces the shipped model's strips)")
    args = parser.parse_args(argv)
    resolve_standard_args(parser, args, "fidelity_autoencoder" if args.autoencoder_only else "fidelity", SEEDS)
    args.long_steps = args.long_steps if args.long_steps is not None else (1000 if args.quick else 10_000)
    if args.long_steps < 1:
        parser.error(f"--long-steps must be >= 1, got {args.long_steps}")
    if args.flow_shift is not None and not args.flow_shift > 0:
        parser.error(f"--flow-shift must be > 0, got {args.flow_shift}")
    if args.context_window is not None and args.context_window < 0:
        parser.error(f"--context-window must be >= 0, got {args.context_window}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads or 1)
    import gymnasium as gym

    import neuralsim  # noqa: F401  (registers the envs)
    from neuralsim.device import cpu_bf16_flags, cpu_capability, resolve_dtype
    from neuralsim.model import WorldModel

    t0 = time.perf_counter()
    model = WorldModel.from_pretrained(args.model).eval()
    if args.context_noise is not None:
        model.config.context_noise = float(args.context_noise)
    if args.flow_shift is not None:
        model.config.flow_shift = float(args.flow_shift)
    if args.context_window is not None:
        model.config.context_window = int(args.context_window)
    cfg = model.config
    if cfg.action_spec.get("type") != "box" or cfg.action_dim != 4:
        raise ValueError(f"fidelity.py needs a model of the room's 4-dim camera actions, got action_spec {cfg.action_spec}")
    dtype = resolve_dtype(args.dtype, "cpu")
    k = int(cfg.frames_per_latent)
    n_ctx = 1 + (CONTEXT - 1) // k  # latent context frames: 1 + n*k <= CONTEXT raw frames
    horizons = QUICK_HORIZONS if args.quick else HORIZONS
    seeds = [args.first_seed + i for i in range(args.seeds)]
    # A tiny reach radius: the real room never terminates, so every horizon has a frame; the termination labels and
    # the success bonus use the room's default radius (that of the collected data).
    env = gym.make("NeuralSimRoom-v0", image_size=tuple(cfg.image_size), reach_radius=1e-3, **WORLD_ENV_KWARGS).unwrapped
    task_env = gym.make("NeuralSimRoom-v0", image_size=tuple(cfg.image_size), reach_radius=1e-3).unwrapped
    thrown_env = gym.make("NeuralSimRoom-v0", image_size=tuple(cfg.image_size), reach_radius=1e-3,
                          ball_start="thrown").unwrapped
    result_task = {"ball_start": task_env.ball_start}
    reach = float(inspect.signature(type(env)).parameters["reach_radius"].default)
    rotation_px = 0.5 * cfg.image_size[0] / math.tan(math.radians(cfg.camera_fovy_deg) / 2) * math.tan(
        math.radians(env.rotation_speed_deg))

    result: dict[str, Any] = {"benchmark": "fidelity", "model": args.model, "quick": args.quick, "seeds": args.seeds,
                              "first_seed": args.first_seed, "context_frames": 1 + (n_ctx - 1) * k,
                              "frames_per_latent": k, "horizons": list(horizons),
                              "denoise_steps": args.denoise_steps or cfg.denoise_steps, "context_noise": cfg.context_noise,
                              "flow_shift": cfg.flow_shift, "context_window": cfg.context_window, "device": "cpu", "dtype": str(dtype).replace("torch.", ""),
                              "reward_source": ("heads" if getattr(model, "reward_model", None) is None
                                                else f"reward model ({cfg.reward_model_kind})"),
                              "reward_task": result_task,
                              "cpu_capability": cpu_capability(),
                              "cpu_bf16": list(cpu_bf16_flags()),
                              "threads": torch.get_num_threads()}
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)
    if args.autoencoder_only:  # the frames of step 2 below, without the dreams
        real, masks = [], []
        for name in PROTOCOLS:
            episodes = protocol_episodes(name, env, seeds, horizons, k=k, n_ctx=n_ctx, reach=reach)
            real += [np.stack([ep["obs"][n_ctx + h - 1] for ep in episodes]) for h in horizons]
            masks += [np.stack([ep["masks"][n_ctx - 1 + h] for ep in episodes]) for h in horizons]
        env.close()
        task_env.close()
        thrown_env.close()
        real_all, mask_all = np.concatenate(real), np.concatenate(masks)
        with torch.no_grad(), autocast:
            result.update(autoencoder_metrics(real_all, ae_roundtrip(model, real_all), mask_all))
        result.update(autoencoder_only=True, seconds=time.perf_counter() - t0, machine=machine_info())
        result = rounded(result)
        print(f"autoencoder round trip ({len(real_all)} frames, {args.seeds} seeds x {len(PROTOCOLS)} protocols x "
              f"{len(horizons)} horizons): pooled {_f(result['ae_psnr_pooled'])} dB, objects "
              f"{_f(result['ae_object_psnr'])} dB (gates 34 / 27), sharpness ratio {_f(result['ae_sharpness_ratio'])}")
        write_result(result, args.results_dir / f"{args.name}.json")
        return result
    with torch.no_grad(), autocast:
        # 1. Both action protocols: real, dream, baselines, ablations.
        protocols = {}
        for i, name in enumerate(PROTOCOLS):
            p = run_protocol(name, model, env, seeds, horizons, k=k, n_ctx=n_ctx, reach=reach, dream_seed=i,
                             denoise_steps=args.denoise_steps)
            result.update(p["metrics"])
            result.update(run_ablations(name, model, p, dream_seed=i, denoise_steps=args.denoise_steps))
            protocols[name] = p
        # 2. The autoencoder's own fidelity on the same real frames (every horizon, both protocols).
        real_all = np.concatenate([p["real"][:, h - 1] for p in protocols.values() for h in horizons])
        ae_all = np.concatenate([p["real_ae"][h] for p in protocols.values() for h in horizons])
        mask_all = np.concatenate([p["masks"][h] for p in protocols.values() for h in horizons])
        result.update(autoencoder_metrics(real_all, ae_all, mask_all))
        # 3. Idle and yaw tests from the explore contexts; revisit; reward head; long rollout.
        result.update(idle_and_yaw(model, env, protocols["explore"], k=k, reach=reach, dream_seed=2,
                                   denoise_steps=args.denoise_steps, rotation_px=rotation_px))
        result.update(revisit_test(model, env, [args.first_seed + 500 + i for i in range(min(args.seeds, MAX_REVISIT_SEEDS))],
                                   k=k, n_ctx=n_ctx, reach=reach, dream_seed=3, denoise_steps=args.denoise_steps))
        result.update(turn_around_test(model, env, seeds, k=k, reach=reach, dream_seed=6, denoise_steps=args.denoise_steps))
        result.update(reward_metrics({name: reward_protocol(name, model, task_env, seeds, k=k, n_ctx=n_ctx, reach=reach,
                                                            dream_seed=5 + i, denoise_steps=args.denoise_steps)
                                      for i, name in enumerate(REWARD_PROTOCOLS)}))
        # the same protocol with the ball thrown (the default task until 2026-12-07): beside the gates, not in them
        thrown = reward_metrics({name: reward_protocol(name, model, thrown_env, seeds, k=k, n_ctx=n_ctx, reach=reach,
                                                       dream_seed=5 + i, denoise_steps=args.denoise_steps)
                                 for i, name in enumerate(REWARD_PROTOCOLS)})
        result["ball_thrown"] = {key: thrown.get(key) for key in THROWN_KEYS}
        sticky = protocols["sticky"]
        real_std = float(sticky["context"].astype(np.float64).std(axis=(2, 3, 4)).mean())
        result.update(long_rollout(model, sticky["context"][0, 0], sticky["prompts"][0], args.long_steps, real_std=real_std,
                                   dream_seed=4, denoise_steps=args.denoise_steps, env=env, seed=seeds[0], k=k,
                                   reach=reach))
    env.close()
    task_env.close()
    thrown_env.close()

    # 4. Strips, plot, gates, table, JSON.
    times = [t for t in STRIP_TIMES if t <= protocols["explore"]["real"].shape[1]]
    strips = {}
    for name, p in protocols.items():
        if args.strips_dir is not None:
            path = args.strips_dir / f"fidelity_strip_{name}.png"
        elif args.name == "fidelity" and not args.quick:
            path = DOCS_DIR / f"fidelity_strip_{name}.png"
        else:
            path = args.results_dir / f"{args.name}_strip_{name}.png"
        save_strip(path, p, times)
        strips[name] = _display_path(path)
    result["strips"] = strips
    plotted = plot(result, horizons, args.results_dir / f"{args.name}.png")
    result["plot"] = None if plotted is None else _display_path(Path(plotted))
    result["seconds"] = time.perf_counter() - t0
    result["machine"] = machine_info()
    result["gates"] = evaluate_gates(result)
    result["gates_passed"] = f"{sum(g['pass'] for g in result['gates'].values())}/{len(result['gates'])}"
    result["reward_gates"] = {name: {"value": result.get(name), "threshold": ">= 0.8",
                                     "pass": result.get(name) is not None and result[name] >= 0.8}
                              for name in ("reward_corr_t1_16", "termination_f1")}
    result = rounded(result)
    print_report(result, horizons)
    write_result(result, args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
