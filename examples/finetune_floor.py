"""Train a frame-memory floor net on an env's segmentation, and save a copy of the model that uses it.

    OMP_NUM_THREADS=1 python examples/finetune_floor.py --model default --data runs/default/data \
        --frames 32768 --policies explore sticky scripted --width 16 --floor-height 0.6 --out runs/default/floor

The frame memory (`neuralsim/frame_memory.py`) warps its remembered frames by their depth. Its depth net, at half
resolution, gives a ball a few pixels across the depth of the wall behind it, so a dreamed walk toward the ball grows
it too slowly and stretches it (docs/experiments.md, "The floor's pixels under what stands on it"). In a world of a
flat floor and things standing on it the floor says more: a floor pixel's depth follows from the camera's height,
and anything else stands where its column next meets the floor below it (`neuralsim.frame_memory.standing_depth`).
That needs to know which pixels show the floor. This script collects `--frames` frames of the dataset's env under
its policy (or split over `--policies`; episode seeds from `--seed-start`, 560,000: none of the dataset's or the
benchmarks') with the env's `floor_mask()` (the room's: MuJoCo's segmentation of its floor), trains a fresh
`FloorNet` of `--width` on the per-pixel binary cross-entropy (mirrored batches with `--flip`), and writes the model
with `frame_memory_floor_net_width` set (`frame_memory_floor_height` from `--floor-height` where the model has none,
`frame_memory_stand_min_depth` from `--stand-min-depth`). Every other weight is copied unchanged; the output is
written atomically by `save_pretrained`. The trained net's pixel accuracy and floor IoU on `--eval-frames` frames of
other seeds are printed and kept in the model's provenance.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import neuralsim.envs  # noqa: F401  (registers the envs a dataset names)
from neuralsim.checkpoints import read_start_frames, resolve_checkpoint, write_start_frames
from neuralsim.data import frames_with_labels
from neuralsim.frame_memory import FloorNet
from neuralsim.model import WorldModel

FLOOR_SEED = 560_000
EVAL_SEED = 590_000  # beyond the training seeds of three policies (560,000, 570,000, 580,000 + episodes)


def collect(data: str, count: int, first_seed: int, policies: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """``count`` frames ``[N, H, W, 3]`` uint8 and their floor masks ``[N, H, W]`` bool, split evenly over
    ``policies`` (each policy's episodes seeded from ``first_seed`` + 10,000 × its place)."""
    frames, masks = [], []
    for k, policy in enumerate(policies):
        n = count // len(policies) + (k < count % len(policies))
        try:
            f, m = frames_with_labels(data, "floor_mask", n, first_seed + 10_000 * k, policy=policy)
        except ValueError as e:
            raise SystemExit(f"error: --data / --policies: {e}") from None
        frames.append(f)
        masks.append(np.asarray(m, bool))
    return np.concatenate(frames), np.concatenate(masks)


@torch.no_grad()
def evaluate(net: FloorNet, frames: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Pixel accuracy and the floor's intersection over union of ``net``'s marks (logit > 0) against ``masks``."""
    hit = inter = union = 0
    for i in range(0, len(frames), 256):
        x = torch.from_numpy(frames[i : i + 256]).permute(0, 3, 1, 2).float() / 127.5 - 1
        pred, true = net(x) > 0, torch.from_numpy(masks[i : i + 256])
        hit += int((pred == true).sum())
        inter += int((pred & true).sum())
        union += int((pred | true).sum())
    return {"pixel_accuracy": round(hit / masks.size, 5), "floor_iou": round(inter / max(union, 1), 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model with a depth-aware frame memory, or 'default'")
    parser.add_argument("--data", required=True, help="the dataset whose env (with floor_mask()) and policy to collect")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=32768, help="frames collected with their floor masks")
    parser.add_argument("--eval-frames", type=int, default=2048, help="held-out frames the result is scored on")
    parser.add_argument("--seed-start", type=int, default=FLOOR_SEED, help=f"first episode seed (default {FLOOR_SEED:,})")
    parser.add_argument("--policies", nargs="+", default=None, metavar="POLICY",
                        help="collection policies the frames are split over (default: the dataset's)")
    parser.add_argument("--width", type=int, default=16, help="the floor net's width (default 16)")
    parser.add_argument("--floor-height", type=float, default=None,
                        help="the camera's height above the floor, for a model without frame_memory_floor_height "
                             "(the room's: 0.6)")
    parser.add_argument("--stand-min-depth", type=float, default=None,
                        help="frame_memory_stand_min_depth of the output, metres (default: the model's, 1.0 unless set)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--flip", action="store_true", help="mirror half of each batch left-right (the masks with it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.width < 1 or args.steps < 1 or args.batch_size < 1 or args.eval_frames < 1:
        raise SystemExit(f"error: --width, --steps, --batch-size and --eval-frames must be >= 1, got {args.width}, "
                         f"{args.steps}, {args.batch_size}, {args.eval_frames}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise SystemExit(f"error: --lr must be a positive number, got {args.lr}")
    if args.frames < args.batch_size:
        raise SystemExit(f"error: --frames must be at least --batch-size ({args.batch_size}), got {args.frames}")
    if args.floor_height is not None and not (0 < args.floor_height < math.inf):
        raise SystemExit(f"error: --floor-height must be a finite number > 0, got {args.floor_height}")
    if args.stand_min_depth is not None and not (0 <= args.stand_min_depth < math.inf):
        raise SystemExit(f"error: --stand-min-depth must be a finite number >= 0, got {args.stand_min_depth}")
    torch.set_num_threads(args.threads)
    model = WorldModel.from_pretrained(args.model)
    if model.frame_memory is None or model.frame_memory.depth is None:
        raise SystemExit(f"error: --model needs a frame memory with a depth net (frame_memory_depth_width > 0): "
                         f"{args.model!r} has none")
    height = args.floor_height or model.config.frame_memory_floor_height
    if not height:
        raise SystemExit(f"error: {args.model!r} states no floor (frame_memory_floor_height 0): give --floor-height")
    policies = args.policies or [None]

    t0 = time.perf_counter()
    frames, masks = collect(args.data, args.frames, args.seed_start, policies)
    held_frames, held_masks = collect(args.data, args.eval_frames, EVAL_SEED, policies)
    print(f"collected {len(frames)} + {len(held_frames)} frames with their floor masks in {time.perf_counter() - t0:.0f} s "
          f"({masks.mean():.1%} of pixels floor)", flush=True)
    frames_u8, labels = torch.from_numpy(frames), torch.from_numpy(masks)

    torch.manual_seed(args.seed)  # draws the fresh net's weights
    rng = np.random.default_rng(30_000 + args.seed)
    net = FloorNet(args.width)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "floor_finetune.csv").open("w", newline="") as log:
        writer = csv.writer(log)
        writer.writerow(["step", "bce", "pixel_error", "lr", "seconds"])
        t0 = time.perf_counter()
        for step in range(args.steps):
            lr = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))  # cosine to 0
            for group in opt.param_groups:
                group["lr"] = lr
            i = torch.from_numpy(rng.choice(len(frames), args.batch_size, replace=False))
            x = frames_u8[i].permute(0, 3, 1, 2).float() / 127.5 - 1
            y = labels[i].float()
            if args.flip:  # a mirrored room is a room: its floor is the mirrored floor
                flip = torch.from_numpy(rng.random(len(i)) < 0.5)
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                y = torch.where(flip[:, None, None], y.flip(-1), y)
            logits = net(x)
            loss = F.binary_cross_entropy_with_logits(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            if step % 50 == 0 or step == args.steps - 1:
                error = ((logits > 0) != (y > 0.5)).float().mean().item()
                writer.writerow([step, f"{loss.item():.5f}", f"{error:.5f}", f"{lr:.2e}", f"{time.perf_counter() - t0:.1f}"])
                log.flush()
    net.eval()
    scores = evaluate(net, held_frames, held_masks)
    model.frame_memory.floor_net = net
    if not model.config.frame_memory_floor_height:
        model.frame_memory.floor_height = float(height)
    near = model.config.frame_memory_stand_min_depth if args.stand_min_depth is None else float(args.stand_min_depth)
    model.frame_memory.stand_min_depth = near
    model.config = model.config.replace(frame_memory_floor_height=float(height), frame_memory_floor_net_width=args.width,
                                        frame_memory_stand_min_depth=near)
    run = {"from": str(args.model), "data": str(args.data), "frames": args.frames, "seed_start": args.seed_start,
           "policies": args.policies, "width": args.width, "floor_height": float(height), "stand_min_depth": near, "steps": args.steps,
           "batch_size": args.batch_size, "lr": args.lr, "flip": args.flip, "seed": args.seed,
           "held_out": {"frames": args.eval_frames, "seed_start": EVAL_SEED, **scores}}
    model.config = model.config.replace(provenance={**model.config.provenance, "floor_finetune": run})
    model.save_pretrained(args.out)
    start, descriptions = read_start_frames(resolve_checkpoint(args.model))
    if len(start):  # the start set the envs reset from travels with the model
        write_start_frames(args.out, start, descriptions or [""] * len(start))
    print(f"wrote {args.out}: held-out pixel accuracy {scores['pixel_accuracy']:.4f}, floor IoU {scores['floor_iou']:.4f} "
          f"after {args.steps} steps")


if __name__ == "__main__":
    main()
