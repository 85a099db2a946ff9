"""Where the dream's object error comes from: the frame memory's pixels, its seam, or the dream's own.

Protocol. ``fidelity.py``'s run of one action protocol (``explore``: the collection policy's actions, or ``sticky``)
on its held-out seeds (from 1,000,000; 16 real context frames, then the dream), with the frame memory's gate recorded
at every dream step (a forward hook on ``model.frame_memory``). At horizon ``--horizon`` (default 4, the issue's
``object_psnr_explore_t4``) the pixels of the task objects in the real frame (MuJoCo's segmentation,
``NeuralSimRoomEnv.object_mask``) are split by the gate: ``memory`` (gate 1: the remembered frame's pixels),
``seam`` (between 0 and 1: the feathered edge) and ``dream`` (gate 0: what the dynamics drew). Reported per part:
its share of the object pixels, its share of their squared error and its PSNR; the object PSNR over all of them is
the fidelity benchmark's figure; ``dream_error_top2_seeds``: the share of the dream part's error in its two worst
rooms.

    python benchmarks/object_error.py [--model default] [--protocol explore] [--horizon 4] [--seeds 32] [--quick]

``--quick``: 8 seeds. Last line: one JSON object, also written to ``benchmarks/results/<name>.json`` (default
``object_error``; ``--quick``: ``object_error_quick``).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_standard_args, load_memory_model, machine_info, resolve_standard_args, rounded, set_threads, write_result  # noqa: E402

PARTS = ("memory", "seam", "dream")
SEEDS = (32, 8)  # held-out seeds: full, --quick


def split_object_error(real: np.ndarray, dream: np.ndarray, objects: np.ndarray, gate: np.ndarray) -> dict[str, Any]:
    """``real``, ``dream`` ``[B, H, W, 3]`` uint8, ``objects`` ``[B, H, W]`` bool, ``gate`` ``[B, H, W]`` in [0, 1] →
    per part (memory: gate 1, seam, dream: gate 0) the share of the object pixels, the share of their squared error
    and the PSNR; ``object_psnr`` over all of them."""
    error = ((real.astype(np.float64) - dream.astype(np.float64)) ** 2).mean(-1)  # per pixel, over the channels
    parts = {"memory": gate >= 0.999, "seam": (gate > 0.001) & (gate < 0.999), "dream": gate <= 0.001}
    total_pixels, total_error = int(objects.sum()), float(error[objects].sum())
    out: dict[str, Any] = {"object_pixels": total_pixels,
                           "object_psnr": 10 * np.log10(255**2 / error[objects].mean()) if total_pixels else None}
    for name, part in parts.items():
        sel = objects & part
        out[f"{name}_pixel_share"] = float(sel.sum() / total_pixels) if total_pixels else None
        out[f"{name}_error_share"] = float(error[sel].sum() / total_error) if total_error > 0 else None
        out[f"{name}_psnr"] = float(10 * np.log10(255**2 / max(error[sel].mean(), 1e-10))) if sel.any() else None
    per_seed = (error * (objects & parts["dream"])).reshape(len(real), -1).sum(1)
    out["dream_error_top2_seeds"] = float(np.sort(per_seed)[-2:].sum() / per_seed.sum()) if per_seed.sum() > 0 else None
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="a model directory or 'default' (needs a frame memory)")
    parser.add_argument("--protocol", default="explore", choices=("explore", "sticky"))
    parser.add_argument("--horizon", type=int, default=4, help="dream step scored (default 4)")
    parser.add_argument("--threads", type=int, default=2)
    add_standard_args(parser, "object_error", quick_help="8 seeds", seeds=SEEDS)
    args = parser.parse_args(argv)
    if args.horizon < 1:
        parser.error(f"--horizon must be >= 1, got {args.horizon}")
    resolve_standard_args(parser, args, "object_error", SEEDS)
    set_threads(args.threads)
    import gymnasium as gym

    import fidelity
    import neuralsim  # noqa: F401  (registers the envs)

    t0 = time.perf_counter()
    model = load_memory_model(args.model)
    cfg = model.config
    k = int(cfg.frames_per_latent)
    env = gym.make("NeuralSimRoom-v0", image_size=tuple(cfg.image_size), reach_radius=1e-3,
                   **fidelity.WORLD_ENV_KWARGS).unwrapped
    gates: list[torch.Tensor] = []  # one per dream step: the memory is applied only to a step's decoded frame
    hook = model.frame_memory.register_forward_hook(lambda module, inputs, output: gates.append(output[1].detach()))
    seeds = [args.first_seed + i for i in range(args.seeds)]
    try:
        with torch.no_grad():
            # fidelity.py's arguments for this protocol (its dream seed is the protocol's index), so the frames match
            reach = float(inspect.signature(type(env)).parameters["reach_radius"].default)
            p = fidelity.run_protocol(args.protocol, model, env, seeds, [args.horizon], k=k,
                                      n_ctx=1 + (fidelity.CONTEXT - 1) // k, reach=reach,
                                      dream_seed=fidelity.PROTOCOLS.index(args.protocol), denoise_steps=None)
    finally:
        hook.remove()
        env.close()
    h = args.horizon
    gate = gates[h - 1][:, 0].float().numpy()
    split = split_object_error(p["real"][:, h - 1], p["dream"][:, h - 1], p["masks"][h], gate)
    result = {"benchmark": "object_error", "model": args.model, "protocol": args.protocol, "horizon": h,
              "seeds": args.seeds, "first_seed": args.first_seed, **split,
              "fidelity_object_psnr": p["metrics"][f"object_psnr_{args.protocol}_t{h}"],
              "seconds": time.perf_counter() - t0, **machine_info()}
    print(f"object pixels at {args.protocol} t+{h} ({args.seeds} seeds, model {args.model}), split by the frame memory's gate:")
    print(f"{'part':<8}{'pixels':>9}{'error':>9}{'PSNR dB':>9}")
    for part in PARTS:
        share, err, db = (split[f"{part}_{x}"] for x in ("pixel_share", "error_share", "psnr"))
        print(f"{part:<8}{'-' if share is None else f'{share:.3f}':>9}{'-' if err is None else f'{err:.3f}':>9}"
              f"{'-' if db is None else f'{db:.2f}':>9}")
    print(f"all: {fidelity._f(split['object_psnr'])} dB (fidelity.py: {fidelity._f(result['fidelity_object_psnr'])}); "
          f"the dream part's error in its two worst rooms: {fidelity._f(split['dream_error_top2_seeds'])}")
    result = rounded(result)
    write_result(result, args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
