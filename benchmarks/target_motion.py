"""What the thrown ball's motion after the context costs the dream's reward, and what following it would be worth.

The fidelity benchmark's reward gates are scored on the room's default task, whose ball is thrown at reset: it falls
and rolls on after the 16 context frames, while the frame memory holds it where the last context frame has it. This
benchmark measures the cost with an oracle. It runs the fidelity benchmark's reward protocol (the same held-out seeds,
policies, context, actions and dream seeds) once, and composes each dreamed frame four ways: the model's own frame, and
the last context frame's target pixels (MuJoCo's segmentation of the room's target, dilated by one pixel) cut out of
the memory and drawn as a layer of their own, warped with the camera as if the camera had moved the other way by the
target's displacement, and shown where its depth puts it in front:

- ``model``: the model's own frame (equals ``benchmarks/reward_prediction.py``'s figures);
- ``still``: the layer not moved (the composite's reference: cutting the target out changes a few pixels around it);
- ``true``: moved by the room's true displacement of the target since the last context frame (perfect motion);
- ``velocity``: moved by the target's true velocity over the last ``VELOCITY_FRAMES`` context frames, horizontal,
  decaying by ``DECAY`` per step (the best a constant-deceleration estimate from the context could give).

Per composition: success F1 and reward Pearson over dream steps 1-16 (the fidelity benchmark's ``termination_f1`` /
``reward_corr_t1_16``, the model's termination detector judging the composed frames), the endings it predicts, and the
target's PSNR over steps 1-16 (the real frame's target pixels, dilated by one pixel). The dynamics, the reward
model's progress and the memory's other frames are the same in all four.

    OMP_NUM_THREADS=1 python benchmarks/target_motion.py [--model DIR] [--ball-start thrown|rest] [--seeds 32]

Needs a model with ``frames_per_latent`` 1, a frame memory with a depth net and a termination detector. Prints a table;
the last line is one JSON object, also written to ``benchmarks/results/target_motion.json`` (``--quick``: 8 seeds per
policy, ``target_motion_quick.json``; ``--name``, ``--results-dir`` to change).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from neuralsim.camera import splat_depth
from neuralsim.frame_memory import relative_pose

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_standard_args, machine_info, resolve_standard_args, rounded, set_threads, write_result  # noqa: E402

SEEDS = (32, 8)  # held-out seeds per policy: full, --quick (the fidelity benchmark's)
MODES = ("model", "still", "true", "velocity")
#: ``velocity``: the target's velocity is its displacement over this many context frames, divided by them ...
VELOCITY_FRAMES = 6
#: ... and each dreamed step moves it by the last step's motion times this (rolling friction, roughly)
DECAY = 0.9
#: The moved layer is drawn where its depth lies in front of the static memory's, or within this fraction behind it
#: (its depth is the memory's depth of the target pixels: the floor just behind a ball on it, with a floor).
IN_FRONT = 1.05


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from neuralsim.envs.room import NeuralSimRoomEnv  # light: mujoco loads with the first env

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="checkpoint directory or shipped model name")
    parser.add_argument("--ball-start", choices=NeuralSimRoomEnv.BALL_STARTS, default="thrown",
                        help="the room's ball at reset: thrown (default: the motion this oracle follows) or at rest "
                             "(the room's default task)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    add_standard_args(parser, "target_motion", quick_help="8 seeds per policy", seeds=SEEDS,
                      seeds_what="held-out seeds per policy (the fidelity benchmark's)")
    return resolve_standard_args(parser, parser.parse_args(argv), "target_motion", SEEDS)


@torch.no_grad()
def compose(model: Any, latent: torch.Tensor, state: Any, mask: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """The frame the dream shows for ``latent [B, C, h, w]`` at ``state`` (after :meth:`WorldModel.step`), the last
    memory frame's ``mask [B, H, W]`` pixels cut out and drawn moved by ``displacement [B, 3]`` (metres, in the last
    memory frame's camera axes): uint8 ``[B, H, W, 3]``. With an empty mask, the model's own frame
    (``model.decode(latent, context=state)``)."""
    fm = model.frame_memory
    depth, nan = state.memory_depth, torch.full_like(state.memory_depth, float("nan"))  # NaN depth: no point there
    still, layer = torch.where(mask, nan, depth), torch.where(mask, depth, nan)
    # the model's own frame with the target's pixels gone from its last memory frame (the earlier ones as they are)
    out = model.decode(latent[:, None], first_frame=False, context=dataclasses.replace(state, memory_depth=still))[:, 0]
    if not bool(mask.any()):
        return out
    rel = relative_pose(state.memory_c2w, state.c2w)
    moved = rel.clone()
    moved[:, :3, 3] -= displacement.to(moved.dtype)  # the target moved by d: the camera, by -d
    warped, seen = fm.warp(state.memory_frame, moved, layer)
    behind, ahead = splat_depth(rel, still, fm.fovy_deg), splat_depth(moved, layer, fm.fovy_deg)
    front = seen[:, 0] & torch.isfinite(ahead) & (~torch.isfinite(behind) | (ahead < IN_FRONT * behind))
    warped = ((warped.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    return torch.where(front[..., None], warped, out)


def displacements(poses: np.ndarray, targets: np.ndarray, last: int, steps: int, mode: str) -> torch.Tensor:
    """``[steps, B, 3]`` the target's displacement since frame ``last`` at each dreamed step, in the camera axes of
    frame ``last``: ``poses [B, T, 4, 4]`` camera-to-world and ``targets [B, T, 3]`` world positions (the room's
    ``info``, OpenCV axes, +y down); ``mode`` ``still`` / ``true`` / ``velocity`` (module docstring)."""
    targets = torch.as_tensor(targets, dtype=torch.float64)
    B = len(targets)
    if mode == "still":
        world = torch.zeros(steps, B, 3, dtype=torch.float64)
    elif mode == "true":
        world = (targets[:, last + 1:last + 1 + steps] - targets[:, last:last + 1]).transpose(0, 1)
    elif mode == "velocity":
        velocity = (targets[:, last] - targets[:, last - VELOCITY_FRAMES]) / VELOCITY_FRAMES
        velocity[:, 1] = 0.0  # it rolls on the floor
        gain = torch.cumsum(DECAY ** torch.arange(1, steps + 1, dtype=torch.float64), 0)
        world = gain[:, None, None] * velocity[None]
    else:
        raise ValueError(f"mode must be one of {MODES[1:]}, got {mode!r}")
    rotation = torch.as_tensor(poses[:, last, :3, :3], dtype=torch.float64)  # camera-to-world: R^T d in its axes
    return torch.einsum("bji,sbj->sbi", rotation, world).float()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    import gymnasium as gym

    import fidelity
    import neuralsim.envs  # noqa: F401  (registers the room)
    from neuralsim.model import WorldModel
    from neuralsim.session import DreamSession

    t0 = time.perf_counter()
    model = WorldModel.from_pretrained(args.model).float().eval()
    cfg = model.config
    if (int(cfg.frames_per_latent) != 1 or model.frame_memory is None or model.frame_memory.depth is None
            or model.termination_detector is None):
        raise SystemExit("target_motion.py needs a model with frames_per_latent 1, a frame memory with a depth net "
                         "(frame_memory_depth_width) and a termination detector")
    env = gym.make("NeuralSimRoom-v0", image_size=tuple(cfg.image_size), reach_radius=1e-3,
                   ball_start=args.ball_start).unwrapped
    reach = float(inspect.signature(type(env)).parameters["reach_radius"].default)
    n_ctx, steps, last = fidelity.CONTEXT, fidelity.REWARD_STEPS, fidelity.CONTEXT - 1
    seeds = [args.first_seed + i for i in range(args.seeds)]
    protocols: dict[str, dict[str, dict[str, np.ndarray]]] = {mode: {} for mode in MODES}
    psnr: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {mode: [] for mode in MODES}
    for i, name in enumerate(fidelity.REWARD_PROTOCOLS):
        eps = [fidelity.named_episode(name, env, seed, n_ctx - 1 + steps, 1, reach=reach, raw_frames=n_ctx,
                                      mask_steps=range(last, n_ctx + steps), target_only=True) for seed in seeds]
        terminated = np.stack([ep["terminated"] for ep in eps])
        valid = (np.cumsum(terminated, axis=1) - terminated == 0)[:, last:]  # not after the first success
        masks = torch.as_tensor(np.stack([ep["masks"][last] for ep in eps]))
        masks = F.max_pool2d(masks.float()[:, None], 3, 1, 1)[:, 0] > 0  # with its antialiased edge
        poses, targets = np.stack([ep["poses"] for ep in eps]), np.stack([ep["target_positions"] for ep in eps])
        moves = {mode: displacements(poses, targets, last, steps, mode) for mode in MODES[1:]}
        session = DreamSession(model, dtype="float32")
        g = session.generator(5 + i)  # the fidelity benchmark's dream seed of this protocol
        state, _, _ = session.start(len(eps), g, image=np.stack([ep["raw"] for ep in eps]),
                                    actions=np.stack([ep["actions"][:last] for ep in eps]).astype(np.float32),
                                    prompt=[ep["description"] for ep in eps])
        rewards: dict[str, list] = {mode: [] for mode in MODES}
        ends: dict[str, list] = {mode: [] for mode in MODES}
        for t in range(steps):
            out = session.step(state, np.stack([ep["actions"][last + t] for ep in eps]).astype(np.float32), g)
            state = out.state
            real = np.stack([ep["obs"][n_ctx + t] for ep in eps])
            where = F.max_pool2d(torch.as_tensor(np.stack([ep["masks"][n_ctx + t] for ep in eps])).float()[:, None],
                                 3, 1, 1)[:, 0].numpy() > 0
            for mode in MODES:
                if mode == "model":
                    frames, judged = out.frames[:, -1], state
                else:
                    with torch.inference_mode():
                        frames = compose(model, out.latent, state, masks, moves[mode][t]).numpy()
                        judged = model.judge_termination(state, frames[:, None])
                rewards[mode].append(judged.reward.float().numpy())
                ends[mode].append(judged.termination_prob.float().numpy())
                psnr[mode].append((frames, real, where))
        for mode in MODES:
            protocols[mode][name] = {"real_rewards": np.stack([ep["rewards"][last:] for ep in eps]),
                                     "dream_rewards": np.stack(rewards[mode], 1), "real_terminated": terminated[:, last:],
                                     "dream_termination": np.stack(ends[mode], 1), "valid": valid}
    env.close()
    rows = {}
    for mode in MODES:
        m = fidelity.reward_metrics(protocols[mode])
        frames, real, where = (np.concatenate(x) for x in zip(*psnr[mode]))
        rows[mode] = {"termination_f1": m["termination_f1"], "reward_corr_t1_16": m["reward_corr_t1_16"],
                      "termination_predicted": m["termination_predicted"],
                      "termination_within_1_step": m["termination_within_1_step"],
                      "target_psnr": fidelity.masked_psnr(frames, real, where)}
    positives = fidelity.reward_metrics(protocols["model"])["termination_positives"]
    result: dict[str, Any] = {"benchmark": "target_motion", "model": args.model, "quick": args.quick, "seeds": args.seeds,
                              "first_seed": args.first_seed, "ball_start": args.ball_start,
                              "velocity_frames": VELOCITY_FRAMES, "decay": DECAY, "termination_positives": positives,
                              "modes": rows, "seconds": time.perf_counter() - t0, "machine": machine_info()}
    print(f"\nthe target's motion after the context ({args.ball_start} ball, {args.seeds} seeds per policy, "
          f"{positives} real endings, model {args.model}):", file=sys.stderr)
    print(f"{'frame':>10s} {'success F1':>11s} {'Pearson t1-16':>14s} {'predicted':>10s} {'target PSNR':>12s}",
          file=sys.stderr)
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    for mode, r in rows.items():
        print(f"{mode:>10s} {fmt(r['termination_f1'], '.3f'):>11s} {fmt(r['reward_corr_t1_16'], '.3f'):>14s} "
              f"{r['termination_predicted']:>10d} {fmt(r['target_psnr'], '.2f'):>12s}", file=sys.stderr)
    result = rounded(result)
    write_result(result, args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
