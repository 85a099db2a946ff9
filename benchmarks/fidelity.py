"""Fidelity of a world model against the real room (DESIGN.md §6).

Protocol: for each held-out seed, 16 real context frames from NeuralSimRoom-v0 (sticky random
actions), then the same action sequence in the real room and in the dream (all seeds batched).
Reported: PSNR / SSIM at horizons 1, 4, 16, 64, 256; the reward head's sign accuracy on the first
16 dream steps (steps whose real reward is clearly non-zero) and its correlation with the real reward over steps 1-4
and 5-16; a revisit test (yaw out and back: the
frame on return vs the real one and vs the dream's own first visit); a long rollout checked for
collapse (NaN, frame statistics in range). A PNG of PSNR vs horizon when matplotlib is installed.

    python benchmarks/fidelity.py [--model default] [--seeds 32] [--quick]

Last line: one JSON object, also written to benchmarks/results/fidelity.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

HORIZONS = (1, 4, 16, 64, 256)
CONTEXT = 16
RESULTS = Path(__file__).resolve().parent / "results"


def sticky_actions(rng: np.random.Generator, n: int, dim: int, persistence: float = 0.9) -> np.ndarray:
    """Temporally correlated random camera actions (the kind of motion the dataset holds)."""
    out = np.zeros((n, dim), np.float32)
    a = rng.uniform(-1, 1, dim).astype(np.float32)
    for t in range(n):
        if rng.random() > persistence:
            a = rng.uniform(-1, 1, dim).astype(np.float32)
        out[t] = a
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of uint8 images ``[..., H, W, 3]``."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(-3, -2, -1))
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image SSIM (Gaussian window 11, sigma 1.5, on luma-free rgb mean) of uint8 ``[N, H, W, 3]``."""
    x = torch.from_numpy(a).double().permute(0, 3, 1, 2) / 255
    y = torch.from_numpy(b).double().permute(0, 3, 1, 2) / 255
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = (g / g.sum())
    w = (g[:, None] * g[None, :]).expand(3, 1, 11, 11)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(z, w, groups=3)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean(dim=(1, 2, 3)).numpy()


def real_rollout(env, seed: int, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``[1 + len(actions), H, W, 3]`` and rewards of the real room under ``actions``."""
    obs, _ = env.reset(seed=seed)
    frames, rewards = [obs], []
    for a in actions:
        obs, r, _, _, _ = env.step(a)
        frames.append(obs)
        rewards.append(r)
    return np.stack(frames), np.asarray(rewards, np.float32)


@torch.inference_mode()
def dream_rollout(model, context_frames: np.ndarray, context_actions: np.ndarray, actions: np.ndarray, seed: int,
                  denoise_steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Batched dream: context ``[B, T, H, W, 3]`` + ``[B, T-1, A]``, then ``actions [B, N, A]`` → frames ``[B, N, H, W, 3]``."""
    g = torch.Generator().manual_seed(seed)
    state = model.init_state(len(context_frames), frames=torch.from_numpy(context_frames),
                             actions=torch.from_numpy(context_actions), generator=g)
    frames, rewards = [], []
    for t in range(actions.shape[1]):
        latent, state = model.step(state, torch.from_numpy(actions[:, t]), generator=g, denoise_steps=denoise_steps)
        frames.append(model.decode(latent[:, None], first_frame=False)[:, -1].numpy())
        rewards.append(model_reward(state))
    return np.stack(frames, axis=1), np.stack(rewards, axis=1)


def model_reward(state) -> np.ndarray:
    return np.asarray(state.reward, dtype=np.float32).reshape(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--first-seed", type=int, default=1_000_000, help="held out: collection uses small seeds")
    parser.add_argument("--long-steps", type=int, default=10_000)
    parser.add_argument("--denoise-steps", type=int, default=None)
    parser.add_argument("--context-noise", type=float, default=None,
                        help="override the noise level committed frames are held at (inference-time ablation; "
                             "0 disables the fused commit, so a separate clean commit pass runs)")
    parser.add_argument("--quick", action="store_true", help="8 seeds, horizons up to 64, 1,000-step collapse check")
    parser.add_argument("--name", default="fidelity", help="results file name")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.long_steps = 8, 1000
    horizons = [h for h in HORIZONS if not args.quick or h <= 64]
    H = max(horizons)

    import gymnasium as gym

    import neuralsim  # noqa: F401  (registers the envs)
    from neuralsim.model import WorldModel

    t0 = time.perf_counter()
    model = WorldModel.from_pretrained(args.model).eval()
    if args.context_noise is not None:
        model.config.context_noise = float(args.context_noise)
    dim = model.config.action_dim
    env = gym.make("NeuralSimRoom-v0", max_episode_steps=100_000, reach_radius=1e-3,
                   image_size=tuple(model.config.image_size)).unwrapped

    # 1. Open-loop PSNR/SSIM vs horizon.
    ctx_frames, ctx_actions, fut_actions, real_future, real_rewards = [], [], [], [], []
    for i in range(args.seeds):
        seed = args.first_seed + i
        acts = sticky_actions(np.random.default_rng(seed), CONTEXT - 1 + H, dim)
        frames, rewards = real_rollout(env, seed, acts)
        ctx_frames.append(frames[:CONTEXT])
        ctx_actions.append(acts[: CONTEXT - 1])
        fut_actions.append(acts[CONTEXT - 1:])
        real_future.append(frames[CONTEXT:])
        real_rewards.append(rewards[CONTEXT - 1:])
    dream, dream_rewards = dream_rollout(model, np.stack(ctx_frames), np.stack(ctx_actions), np.stack(fut_actions), 0,
                                         args.denoise_steps)
    real = np.stack(real_future)
    per_h = {}
    for h in horizons:
        p = psnr(dream[:, h - 1], real[:, h - 1])
        s = ssim(dream[:, h - 1], real[:, h - 1])
        per_h[h] = {"psnr": float(p.mean()), "psnr_std": float(p.std()), "ssim": float(s.mean())}
    copy_last = {h: float(psnr(np.stack(ctx_frames)[:, -1], real[:, h - 1]).mean()) for h in horizons}
    # The autoencoder's round trip bounds what any dynamics can reach.
    with torch.inference_mode():
        recon = model.decode(model.encode(torch.from_numpy(real[:, :H:8].reshape(-1, 1, *real.shape[2:]))))[:, -1].numpy()
    ae_psnr = float(psnr(recon, real[:, :H:8].reshape(-1, *real.shape[2:])).mean())

    # 2. Reward head sign accuracy (first 16 dream steps, where the real reward is clearly non-zero).
    rr = np.stack(real_rewards)[:, :16]
    dr = dream_rewards[:, :16]
    mask = np.abs(rr) > 0.05
    sign_acc = float((np.sign(rr[mask]) == np.sign(dr[mask])).mean()) if mask.any() else float("nan")
    # Pearson correlation of dreamed and real rewards over the first dream steps and later ones (how long the head
    # keeps tracking the task as the dream drifts).
    all_rr = np.stack(real_rewards)[:, : dream_rewards.shape[1]]

    def reward_corr(a: int, b: int) -> float:
        x, y = all_rr[:, a:b].ravel(), dream_rewards[:, a:b].ravel()
        return float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")

    # 3. Revisit: yaw right then back by the same amount; compare the frame on return.
    from neuralsim.actions import action_string_to_vectors

    loop = action_string_to_vectors("l-20,j-20")[:, :dim]
    revisit_real, revisit_dream, revisit_self = [], [], []
    for i in range(min(args.seeds, 8)):
        seed = args.first_seed + 500 + i
        acts = np.concatenate([sticky_actions(np.random.default_rng(seed), CONTEXT - 1, dim) * 0.5, loop])
        frames, _ = real_rollout(env, seed, acts)
        d, _ = dream_rollout(model, frames[None, :CONTEXT], acts[None, : CONTEXT - 1], acts[None, CONTEXT - 1:], seed,
                             args.denoise_steps)
        revisit_real.append(psnr(d[0, -1], frames[-1]))
        revisit_self.append(psnr(d[0, -1], model.decode(model.encode(frames[None, CONTEXT - 1 : CONTEXT]))[0, -1].numpy()))
        revisit_dream.append(psnr(frames[-1], frames[CONTEXT - 1]))
    # 4. Collapse check: a long random rollout.
    g = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(1)
    with torch.inference_mode():
        state = model.init_state(1, frames=torch.from_numpy(np.stack(ctx_frames)[:1, :1]), generator=g)
        stats, finite = [], True
        t_long = time.perf_counter()
        for t in range(args.long_steps):
            latent, state = model.step(state, torch.from_numpy(sticky_actions(rng, 1, dim)), generator=g)
            finite &= bool(torch.isfinite(latent).all())
            if (t + 1) % max(1, args.long_steps // 10) == 0:
                frame = model.decode(latent[:, None], first_frame=False)[0, -1].numpy().astype(np.float64)
                stats.append({"step": t + 1, "mean": round(float(frame.mean()), 2), "std": round(float(frame.std()), 2)})
        long_seconds = time.perf_counter() - t_long
    real_std = float(np.stack(ctx_frames).astype(np.float64).std(axis=(2, 3, 4)).mean())
    collapsed = (not finite) or any(s["std"] < 0.25 * real_std or not 5 < s["mean"] < 250 for s in stats)

    result = {
        "model": args.model, "seeds": args.seeds, "context_frames": CONTEXT,
        "denoise_steps": args.denoise_steps or model.config.denoise_steps, "context_noise": model.config.context_noise,
        **{f"psnr_t{h}": round(per_h[h]["psnr"], 2) for h in horizons},
        **{f"ssim_t{h}": round(per_h[h]["ssim"], 3) for h in horizons},
        **{f"copy_last_frame_psnr_t{h}": round(copy_last[h], 2) for h in horizons},
        "autoencoder_psnr": round(ae_psnr, 2),
        "reward_sign_accuracy": round(sign_acc, 3), "reward_sign_samples": int(mask.sum()),
        "reward_corr_t1_4": round(reward_corr(0, 4), 3), "reward_corr_t5_16": round(reward_corr(4, 16), 3),
        "revisit_psnr_vs_real": round(float(np.mean(revisit_real)), 2),
        "revisit_psnr_vs_first_visit": round(float(np.mean(revisit_self)), 2),
        "revisit_real_return_vs_start_psnr": round(float(np.mean(revisit_dream)), 2),
        "long_rollout_steps": args.long_steps, "long_rollout_finite": finite, "long_rollout_collapsed": collapsed,
        "long_rollout_frame_stats": stats, "real_frame_std": round(real_std, 2),
        "long_rollout_steps_per_s": round(args.long_steps / long_seconds, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"{'horizon':>8} {'PSNR dB':>9} {'±':>6} {'SSIM':>6} {'copy-last PSNR':>15}")
    for h in horizons:
        print(f"{h:>8} {per_h[h]['psnr']:>9.2f} {per_h[h]['psnr_std']:>6.2f} {per_h[h]['ssim']:>6.3f} {copy_last[h]:>15.2f}")
    print(f"autoencoder round trip {ae_psnr:.2f} dB (the ceiling); reward sign accuracy {sign_acc:.3f} over {int(mask.sum())} steps, "
          f"reward correlation {result['reward_corr_t1_4']} (steps 1-4) / {result['reward_corr_t5_16']} (5-16); revisit PSNR vs real "
          f"{result['revisit_psnr_vs_real']:.2f} dB, vs first visit {result['revisit_psnr_vs_first_visit']:.2f} dB; "
          f"{args.long_steps}-step rollout finite={finite} collapsed={collapsed}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(horizons, [per_h[h]["psnr"] for h in horizons], "o-", label="dream vs real")
        ax.plot(horizons, [copy_last[h] for h in horizons], "s--", label="copy last context frame")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("horizon (env steps)")
        ax.set_ylabel("PSNR (dB)")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(RESULTS / f"{args.name}.png", dpi=120)
        result["plot"] = f"benchmarks/results/{args.name}.png"
    except ImportError:
        result["plot"] = None
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
