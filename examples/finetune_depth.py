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
metres, so the scale is learned too). `--width W` starts a fresh net of width W instead; `--edge-weight` and `--object-weight` weight the pixels beside a depth edge and the task
objects' pixels (the env's `object_mask()`, collected from the same episodes) up; `--flip` mirrors half of each
batch (tried on the shipped model, not shipped: docs/experiments.md, "Depth for the memory"). Every other weight is
copied
unchanged; the output is written atomically by `save_pretrained`.
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
import torch.nn.functional as F

import neuralsim.envs  # noqa: F401  (registers the envs a dataset names)
from neuralsim.checkpoints import read_start_frames, resolve_checkpoint, write_start_frames
from neuralsim.data import frames_with_labels
from neuralsim.frame_memory import MAX_DEPTH, MIN_DEPTH, DepthNet
from neuralsim.model import WorldModel

DEPTH_SEED = 540_000


def collect_labelled_frames(data: str, label: str, count: int, first_seed: int = DEPTH_SEED,
                            policies: Sequence[str | None] = (None,)) -> tuple[np.ndarray, np.ndarray]:
    """``count`` frames ``[N, H, W, 3]`` uint8 of ``data``'s env and what its method ``label`` says of each (the room's
    ``depth_map``, ``object_mask``), split evenly over ``policies`` (None: the dataset's collection policy; each
    policy's episodes seeded from ``first_seed`` + 100,000 × its place); episodes of the dataset's length. The same
    arguments give the same frames, so two labels of one set line up frame for frame."""
    frames, labels = [], []
    for k, policy in enumerate(policies):
        n = count // len(policies) + (k < count % len(policies))
        try:
            f, d = frames_with_labels(data, label, n, first_seed + 100_000 * k, policy=policy)
        except ValueError as e:
            raise SystemExit(f"error: --data / --policies: {e}") from None
        frames.append(f)
        labels.append(d)
    return np.concatenate(frames), np.concatenate(labels)


def collect_depth_frames(data: str, count: int, first_seed: int = DEPTH_SEED,
                         policies: Sequence[str | None] = (None,)) -> tuple[np.ndarray, np.ndarray]:
    """``count`` frames of ``data``'s env and their depth ``[N, H, W]`` float32 metres from the env's ``depth_map()``
    (:func:`collect_labelled_frames`)."""
    frames, depth = collect_labelled_frames(data, "depth_map", count, first_seed, policies)
    return frames, depth.astype(np.float32)


def loss_weights(log_depth: torch.Tensor, objects: torch.Tensor | None, edge_weight: float,
                 object_weight: float) -> torch.Tensor:
    """Per-pixel weights ``[N, H, W]`` of the depth loss: 1, plus ``edge_weight`` within a pixel of a depth edge (a
    jump of more than 10 % between neighbours: where a wrong depth moves an outline when the camera walks), plus
    ``object_weight`` on the task objects' pixels (``objects``, the env's ``object_mask``; None: no such term).
    The objects are a few pixels of each frame, mostly outline, and a uniform loss leaves their depth to the wall
    behind them."""
    dx, dy = (log_depth.diff(dim=-1).abs() > 0.1).float(), (log_depth.diff(dim=-2).abs() > 0.1).float()
    jump = F.pad(dx, (0, 1)) + F.pad(dx, (1, 0)) + F.pad(dy, (0, 0, 0, 1)) + F.pad(dy, (0, 0, 1, 0))  # both sides
    edges = F.max_pool2d((jump > 0).float()[:, None], 3, stride=1, padding=1)[:, 0]
    weight = 1 + edge_weight * edges
    if objects is not None and object_weight:
        weight = weight + object_weight * (objects > 0).float()
    return weight


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
    parser.add_argument("--width", type=int, default=0,
                        help="start a fresh depth net of this width instead of fine-tuning the model's (default 0: keep)")
    parser.add_argument("--refine", type=int, default=0,
                        help="add a full-resolution correction of this width to the depth net (DepthNet's refine; "
                             "default 0: as the net is)")
    parser.add_argument("--edge-weight", type=float, default=0.0,
                        help="extra loss weight within a pixel of a depth edge (default 0)")
    parser.add_argument("--object-weight", type=float, default=0.0,
                        help="extra loss weight on the task objects' pixels, from the env's object_mask() (default 0)")
    parser.add_argument("--flip", action="store_true", help="mirror half of each batch left-right (the depth with it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.width < 0 or args.refine < 0 or not (args.edge_weight >= 0 and args.object_weight >= 0):
        raise SystemExit(f"error: --width, --refine, --edge-weight and --object-weight must be >= 0, got {args.width}, "
                         f"{args.refine}, {args.edge_weight}, {args.object_weight}")
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
    if args.refine and not args.width and model.config.frame_memory_depth_refine not in (0, args.refine):
        raise SystemExit(f"error: --refine {args.refine}: the model's depth net has a correction of width "
                         f"{model.config.frame_memory_depth_refine} already (give that, or 0)")

    t0 = time.perf_counter()
    if args.policies is not None and args.frames < len(args.policies):
        raise SystemExit(f"error: --frames must be at least one per --policies entry, got {args.frames}")
    policies = args.policies or (None,)
    frames, depth = collect_depth_frames(args.data, args.frames, args.seed_start, policies)
    objects = None
    if args.object_weight:  # the same episodes again, for the object masks (seeded: the frames line up)
        again, objects = collect_labelled_frames(args.data, "object_mask", args.frames, args.seed_start, policies)
        if not np.array_equal(again, frames):
            raise SystemExit("error: --object-weight: the env's object_mask() frames differ from its depth_map() ones")
        objects = torch.from_numpy(np.asarray(objects) > 0)
    print(f"collected {len(frames)} frames with their depth in {time.perf_counter() - t0:.0f} s "
          f"(median {np.median(depth):.2f} m)", flush=True)
    frames_u8 = torch.from_numpy(frames)  # uint8 until a batch is drawn: 4x less memory than floats
    log_true = torch.from_numpy(np.log(np.clip(depth, MIN_DEPTH, MAX_DEPTH)))
    del depth

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(20_000 + args.seed)
    refine = args.refine or model.config.frame_memory_depth_refine
    if args.width:  # a fresh net: the seed above draws its weights
        memory.depth = DepthNet(args.width, refine)
        model.config = model.config.replace(frame_memory_depth_width=args.width, frame_memory_depth_refine=refine)
    elif args.refine and memory.depth.refine is None:  # the trained net, a full-resolution correction added (a no-op
        grown = DepthNet(model.config.frame_memory_depth_width, refine)  # until it trains: its last layer is zero)
        missing, unexpected = grown.load_state_dict(memory.depth.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("refine.") for k in missing), (missing, unexpected)
        memory.depth = grown
        model.config = model.config.replace(frame_memory_depth_refine=refine)

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
            x = frames_u8[i].permute(0, 3, 1, 2).float() / 127.5 - 1
            y = log_true[i]
            w = loss_weights(y, None if objects is None else objects[i], args.edge_weight, args.object_weight)
            if args.flip:  # a mirrored room is a room: its depth is the mirrored depth
                flip = torch.from_numpy(rng.random(len(i)) < 0.5)
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                y, w = (torch.where(flip[:, None, None], t.flip(-1), t) for t in (y, w))
            error = (net(x).log() - y).abs()
            loss = (error * w).sum() / w.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            if step % 50 == 0 or step == args.steps - 1:
                writer.writerow([step, f"{error.mean().item():.5f}", f"{lr:.2e}", f"{time.perf_counter() - t0:.1f}"])
                log.flush()
    net.eval()
    run = {"from": str(args.model), "data": str(args.data), "frames": args.frames, "seed_start": args.seed_start,
           "policies": args.policies, "width": args.width or None, "refine": args.refine or None,
           "edge_weight": args.edge_weight,
           "object_weight": args.object_weight, "flip": args.flip,
           "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
           "final_log_l1": round(error.mean().item(), 5)}
    if "depth_finetune" in model.config.provenance:  # fine-tuned before: the record keeps the earlier runs
        run["before"] = model.config.provenance["depth_finetune"]
    model.config = model.config.replace(provenance={**model.config.provenance, "depth_finetune": run})
    model.save_pretrained(args.out)
    start, descriptions = read_start_frames(resolve_checkpoint(args.model))
    if len(start):  # the start set the envs reset from travels with the model
        write_start_frames(args.out, start, descriptions or [""] * len(start))
    print(f"wrote {args.out} (log-depth L1 {error.mean().item():.4f} after {args.steps} steps)")


if __name__ == "__main__":
    main()
