"""Is the room's target in what a latent-observation agent sees? Supervised probes of latents, decoded latents and rgb.

    OMP_NUM_THREADS=1 python benchmarks/latent_probe.py --threads 1            # 20,000 frames, 8 epochs: ~10 min
    OMP_NUM_THREADS=1 python benchmarks/latent_probe.py --quick --threads 1    # about a minute

PPO learns the room's task from rgb frames (``ImpalaCNN``) but not from the model's latent frames (``LatentCNN``), in
the dream or in the room seen through the encoder (``transfer_latent.json``; docs/performance.md). This asks whether
the target is in the latents at all. Frames of the real room (``NeuralSimRoom-v0``'s default task at the model's
image size, episodes of 50 steps so the frames span many layouts; the transfer benchmark's walk-and-turn keys pressed
at random, ``w`` more often so the camera also nears the target) are labelled with whether the target's centre is in
the image and, if so, its image column. Small nets are then trained, supervised, to read both from:

- ``latent``: the latent observations a latent agent gets (:class:`~neuralsim.envs.latent.FrameEncoder`, fp32),
  through :class:`~neuralsim.policy.LatentCNN` (the latent agents' extractor) and through a per-cell net (two 1x1
  convs, 128 and 64 channels, then two 3x3 of 32, no stride: a detector of what one latent cell holds);
- ``decoded``: those latents through the model's decoder (what the model can recover of the frame), ``ImpalaCNN``;
- ``rgb``: the frames themselves, through :class:`~neuralsim.policy.ImpalaCNN` (the rgb agents' extractor).

Every net ends in the extractor's 256 features and a linear head (a visibility logit and the column); Adam 3e-4,
batches of 128, a loss of binary cross-entropy plus the squared column error (in half-widths) on visible frames. The
first 80 % of the frames train (in time order, so the held-out 20 % are later episodes), the rest measure: the
visibility accuracy (always "not visible" scores the share of frames without the target) and the mean column error
in pixels over held-out frames with the target in view, beside predicting the training frames' mean column.

Prints a table; the last line is one JSON object, also written to benchmarks/results/latent_probe.json (``--quick``:
latent_probe_quick.json). The figures name the CPU (``cpu_capability``, ``cpu_bf16``); every net runs in fp32.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_standard_args, machine_info, resolve_standard_args, rounded, set_threads, write_result  # noqa: E402

#: steps per collected episode: short, so the frames span many layouts (a new one per episode) and the held-out
#: frames many episodes
EPISODE_STEPS = 50

#: (name, what it reads, extractor): the probes, in the table's order
PROBES = (("LatentCNN", "latent", "latent_cnn"), ("per-cell net", "latent", "per_cell"),
          ("ImpalaCNN", "decoded", "impala"), ("ImpalaCNN", "rgb", "impala"))


def collect(n: int, image_size: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` frames of the real room (uint8 ``[n, H, W, 3]``), whether the target's centre is in each, its column."""
    import gymnasium as gym

    import neuralsim  # noqa: F401  (registers the envs)
    from neuralsim.agents.transfer import WALK_AND_TURN
    from neuralsim.agents.wrappers import KeySetActions
    from ppo_observation import target_column

    env = KeySetActions(gym.make("NeuralSimRoom-v0", image_size=tuple(image_size), max_episode_steps=EPISODE_STEPS),
                        WALK_AND_TURN)
    rng = np.random.default_rng(seed)
    walk = list(WALK_AND_TURN).index("w")
    frames, visible, column = [], [], []
    obs, info = env.reset(seed=seed)
    while len(frames) < n:
        u = target_column(info, obs.shape[1])
        frames.append(obs)
        visible.append(u is not None)
        column.append(0.0 if u is None else u)
        obs, _, terminated, truncated, info = env.step(walk if rng.random() < 0.3 else int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            obs, info = env.reset()
    env.close()
    return np.stack(frames), np.array(visible), np.array(column, np.float32)


def observations(encoder: Any, frames: np.ndarray, batch: int = 256) -> dict[str, torch.Tensor]:
    """What each probe reads (``encoder``: a :class:`~neuralsim.envs.latent.FrameEncoder`): ``latent``
    ``[n, C, h, w]`` (normalised), ``decoded`` and ``rgb`` ``[n, 3, H, W]`` in [0, 1]."""
    latents = np.concatenate([encoder(frames[i:i + batch]) for i in range(0, len(frames), batch)])
    decoded = torch.from_numpy(np.concatenate([
        encoder.session.decode(torch.from_numpy(latents[i:i + batch])[:, None], first_frame=False)[:, 0]
        for i in range(0, len(latents), batch)]))

    def images(x: torch.Tensor) -> torch.Tensor:  # uint8 [n, H, W, 3] -> float [n, 3, H, W]
        return x.permute(0, 3, 1, 2).float().div(255).contiguous()

    return {"latent": torch.from_numpy(latents), "decoded": images(decoded), "rgb": images(torch.from_numpy(frames))}


def make_extractor(kind: str, shape: tuple[int, ...]) -> torch.nn.Module:
    from gymnasium import spaces

    from neuralsim.policy import ImpalaCNN, LatentCellCNN, LatentCNN

    if kind == "latent_cnn":
        return LatentCNN(spaces.Box(-1e4, 1e4, shape, np.float32))
    if kind == "per_cell":
        return LatentCellCNN(spaces.Box(-1e4, 1e4, shape, np.float32))
    return ImpalaCNN(spaces.Box(0, 255, shape, np.uint8))  # reads floats in [0, 1], as SB3 hands it images


def probe(extractor: torch.nn.Module, x: torch.Tensor, visible: torch.Tensor, column: torch.Tensor, width: int, *,
          epochs: int, seed: int) -> dict[str, Any]:
    """Train ``extractor`` + a linear head on the first 80 % of ``x``; accuracy and column error (pixels of an image
    ``width`` wide) on the rest."""
    from neuralsim.agents.pretrain import fit_target_readout

    torch.manual_seed(seed)
    target = column / (width / 2) - 1  # in [-1, 1]: pixels squared would drown the visibility's loss
    head = torch.nn.Linear(extractor.features_dim, 2)
    split = int(0.8 * len(x))
    t0 = time.perf_counter()
    out = fit_target_readout(extractor, head, x, visible, target, split=split, epochs=epochs)  # torch's generator
    seen = visible[split:]
    return {"visible_accuracy": float(((out[:, 0] > 0) == seen).float().mean()),
            "column_error_px": float((out[seen, 1] - target[split:][seen]).abs().mean() * width / 2) if seen.any() else None,
            "parameters": sum(p.numel() for p in extractor.parameters()), "train_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="shipped model name or checkpoint directory (default: default)")
    parser.add_argument("--frames", type=int, default=None, help="room frames (default 20,000; --quick 5,000)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs per probe (default 8; --quick 3)")
    parser.add_argument("--seed", type=int, default=0, help="room and training seed (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one per heavy job)")
    add_standard_args(parser, "latent_probe", quick_help="5,000 frames, 3 epochs: about a minute (a smoke run, not a figure)")
    args = resolve_standard_args(parser, parser.parse_args(argv), "latent_probe")
    frames_n = args.frames if args.frames is not None else (5000 if args.quick else 20_000)
    epochs = args.epochs if args.epochs is not None else (3 if args.quick else 8)
    if frames_n < 10 or epochs < 1 or args.seed < 0 or args.threads < 1:
        parser.error("--frames must be >= 10, --epochs and --threads >= 1, --seed >= 0")
    if not (args.model == "default" or os.path.isdir(args.model)):
        parser.error(f"--model must be 'default' or a checkpoint directory, got {args.model!r}")
    os.environ.setdefault("MUJOCO_GL", "egl")
    set_threads(args.threads)

    from neuralsim.envs.latent import FrameEncoder

    encoder = FrameEncoder(args.model, dtype="float32")
    image_size = tuple(encoder.image_size)
    t0 = time.perf_counter()
    frames, visible, column = collect(frames_n, image_size, args.seed)
    inputs = observations(encoder, frames)
    visible_t, column_t = torch.from_numpy(visible), torch.from_numpy(column)
    split = int(0.8 * frames_n)
    held_out = visible[split:]
    train_mean = float(column[:split][visible[:split]].mean()) if visible[:split].any() else 0.0
    baseline = float(np.abs(column[split:][held_out] - train_mean).mean()) if held_out.any() else None
    print(f"{frames_n:,} room frames at {image_size[1]}x{image_size[0]} ({time.perf_counter() - t0:.0f} s), target in view "
          f"in {visible.mean():.0%}; held out: {len(held_out):,}, {held_out.mean():.0%} with the target in view; "
          f"'not visible' always scores {1 - held_out.mean():.3f}, the mean column errs by {baseline or float('nan'):.2f} px")
    print(f"{'extractor':<14} {'reads':<9} {'params':>8} {'visible acc':>12} {'column err px':>14} {'train s':>8}")
    rows = []
    for name, reads, kind in PROBES:
        x = inputs[reads]
        torch.manual_seed(args.seed)  # the extractor's initial weights
        row = {"extractor": name, "reads": reads, **probe(make_extractor(kind, tuple(x.shape[1:])), x, visible_t,
                                                          column_t, image_size[1], epochs=epochs, seed=args.seed)}
        rows.append(row)
        err = row["column_error_px"]
        print(f"{name:<14} {reads:<9} {row['parameters']:>8,} {row['visible_accuracy']:>12.3f} "
              f"{(f'{err:.2f}' if err is not None else '-'):>14} {row['train_s']:>8.0f}", flush=True)
    result = rounded({
        "benchmark": "latent_probe", "model": args.model, "quick": args.quick, "frames": frames_n, "epochs": epochs,
        "seed": args.seed, "image_size": list(image_size), "visible_share": float(visible.mean()),
        "held_out_visible_share": float(held_out.mean()), "always_not_visible_accuracy": float(1 - held_out.mean()),
        "mean_column_error_px": baseline, "rows": rows, "seconds": time.perf_counter() - t0, "machine": machine_info()})
    write_result(result, args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
