"""Fine-tune a model's frame-memory depth net on an env's true depth, and save a copy of the model.

    OMP_NUM_THREADS=1 python examples/finetune_depth.py --model default --data runs/default/data \
        --frames 16384 --steps 2000 --out runs/default/depth

The depth net (`frame_memory_depth_width`, `neuralsim/frame_memory.py`) places the remembered frame's pixels as the
camera walks. `neuralsim train memory` trains it without labels (the other frame, warped by it, must match), which
has nothing to match on a flat wall. An env that can render its depth (the room's `depth_map()`: MuJoCo's depth
buffer of the same camera and state) gives the labels instead: this script collects `--frames` frames of the
dataset's env under its policy (or split over `--policies`, e.g. `explore sticky`: views the dataset's policy
rarely takes; episode seeds from `--seed-start`, 540,000: none of the dataset's, the transfer
benchmark's held-out layouts from 500,000, the decoder fine-tune's from 520,000 or the fidelity benchmark's from
1,000,000) with the depth of each, then trains the depth net alone on the L1 error of log depth (the warp needs
metres, so the scale is learned too). Every other weight is copied unchanged; the output is written atomically by
`save_pretrained`.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

import neuralsim.envs  # noqa: F401  (registers the envs a dataset names)
from neuralsim.checkpoints import read_start_frames, resolve_checkpoint, write_start_frames
from neuralsim.data import frames_with_labels
from neuralsim.frame_memory import MAX_DEPTH, MIN_DEPTH
from neuralsim.model import WorldModel

DEPTH_SEED = 540_000


def collect_depth_frames(data: str, count: int, first_seed: int = DEPTH_SEED,
                         policies: Sequence[str | None] = (None,)) -> tuple[np.ndarray, np.ndarray]:
    """``count`` frames ``[N, H, W, 3]`` uint8 of ``data``'s env and their depth ``[N, H, W]`` float32 metres from the
    env's ``depth_map()``, split evenly over ``policies`` (None: the dataset's collection policy; each policy's
    episodes seeded from ``first_seed`` + 100,000 × its place); episodes of the dataset's length."""
    frames, depth = [], []
    for k, policy in enumerate(policies):
        n = count // len(policies) + (k < count % len(policies))
        try:
            f, d = frames_with_labels(data, "depth_map", n, first_seed + 100_000 * k, policy=policy)
        except ValueError as e:
            raise SystemExit(f"error: --data / --policies: {e}") from None
        frames.append(f)
        depth.append(d.astype(np.float32))
    return np.concatenate(frames), np.concatenate(depth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model with a depth-aware frame memory, or 'default'")
    parser.add_argument("--data", required=True, help="the dataset whose env (with depth_map()) and policy to collect")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=16384, help="frames collected with their depth (default 16384)")
    parser.add_argument("--seed-start", type=int, default=DEPTH_SEED, help=f"first episode seed (default {DEPTH_SEED:,})")
    parser.add_argument("--policies", nargs="+", default=None, metavar="POLICY",
                        help="collection policies the frames are split over (random | sticky | explore | scripted | "
                             "PATH; default: the dataset's): views the dataset's policy rarely takes")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.steps < 1 or args.batch_size < 1 or not (args.lr > 0 and math.isfinite(args.lr)):
        raise SystemExit(f"error: --steps and --batch-size must be >= 1 and --lr a positive number, got "
                         f"{args.steps}, {args.batch_size}, {args.lr}")
    if args.frames < args.batch_size:
        raise SystemExit(f"error: --frames must be at least --batch-size ({args.batch_size}), got {args.frames}")
    torch.set_num_threads(args.threads)
    model = WorldModel.from_pretrained(args.model)
    memory = model.frame_memory
    if memory is None or memory.depth is None:
        raise SystemExit(f"error: --model needs a frame memory with a depth net (frame_memory_depth_width > 0): "
                         f"{args.model!r} has none (add one with neuralsim train memory --set frame_memory_depth_width=16)")

    t0 = time.perf_counter()
    if args.policies is not None and args.frames < len(args.policies):
        raise SystemExit(f"error: --frames must be at least one per --policies entry, got {args.frames}")
    frames, depth = collect_depth_frames(args.data, args.frames, args.seed_start, args.policies or (None,))
    print(f"collected {len(frames)} frames with their depth in {time.perf_counter() - t0:.0f} s "
          f"(median {np.median(depth):.2f} m)", flush=True)
    log_true = torch.from_numpy(np.log(np.clip(depth, MIN_DEPTH, MAX_DEPTH)))
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(20_000 + args.seed)
    net = memory.depth
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "depth_finetune.csv").open("w", newline="") as log:
        writer = csv.writer(log)
        writer.writerow(["step", "log_l1", "lr", "seconds"])
        t0 = time.perf_counter()
        for step in range(args.steps):
            lr = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))  # cosine to 0
            for group in opt.param_groups:
                group["lr"] = lr
            i = torch.from_numpy(rng.choice(len(frames), args.batch_size, replace=False))
            loss = (net(pixels[i]).log() - log_true[i]).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            if step % 50 == 0 or step == args.steps - 1:
                writer.writerow([step, f"{loss.item():.5f}", f"{lr:.2e}", f"{time.perf_counter() - t0:.1f}"])
                log.flush()
    net.eval()
    run = {"from": str(args.model), "data": str(args.data), "frames": args.frames, "seed_start": args.seed_start,
           "policies": args.policies,
           "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
           "final_log_l1": round(loss.item(), 5)}
    if "depth_finetune" in model.config.provenance:  # fine-tuned before: the record keeps the earlier runs
        run["before"] = model.config.provenance["depth_finetune"]
    model.config = model.config.replace(provenance={**model.config.provenance, "depth_finetune": run})
    model.save_pretrained(args.out)
    start, descriptions = read_start_frames(resolve_checkpoint(args.model))
    if len(start):  # the start set the envs reset from travels with the model
        write_start_frames(args.out, start, descriptions or [""] * len(start))
    print(f"wrote {args.out} (log-depth L1 {loss.item():.4f} after {args.steps} steps)")


if __name__ == "__main__":
    main()
