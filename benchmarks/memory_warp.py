"""How well the frame memory's warp places the last real frame in a later view, apart from its gate and the dream.

Protocol. For each held-out seed (from 1,000,000, as ``fidelity.py``) a real episode of ``NeuralSimRoom-v0`` as the
model's data saw it, under the collection policy (``explore``) and sticky-random actions (``sticky``): the frame after
15 steps is the memory (the last of ``fidelity.py``'s 16 context frames), with MuJoCo's depth of it
(``NeuralSimRoomEnv.depth_map``); the real frames 1, 2, 4, 8 and 16 steps later are the targets, and the room's true
camera poses give the motion between (so the warp is scored, not the model's dead reckoning). Three warps of the memory
into each target view (``FrameMemory.warp``):

* ``rotation``: the camera's rotation alone (what a memory without a depth net does);
* ``learned``: the memory's depth from the model's depth net (``frame_memory_depth_width``), forward-warped;
* ``true``: MuJoCo's depth of the memory frame, the same way (the bound of the learned one).

Reported per protocol, warp and horizon: the pooled PSNR over the pixels each warp says it sees (``seen``: inside the
remembered view and, with depth, not hidden) and the share of the frame seen: a warp that sees less scores only its
own pixels, so read the two together; and the same PSNR over the task objects' pixels among them
(``*_object_psnr_*``; MuJoCo's segmentation of the target frame), where a wrong depth shows first. The depth net's own accuracy on the memory frames against MuJoCo's: AbsRel
(mean |d - d*| / d*) and the share within 1.25× (δ < 1.25), as monocular depth is scored, and the AbsRel over the
memory frame's object pixels alone (``depth_abs_rel_objects_*``).

    python benchmarks/memory_warp.py [--model default] [--seeds 16] [--quick]

``--quick``: 4 seeds. Last line: one JSON object, also written to ``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_standard_args, load_memory_model, machine_info, resolve_standard_args, rounded, write_result  # noqa: E402

MEMORY_STEP = 15  # the last of fidelity.py's 16 context frames
HORIZONS = (1, 2, 4, 8, 16)
SEEDS = (16, 4)  # held-out seeds: full, --quick


def episode(env: Any, seed: int, protocol: str) -> dict[str, Any]:
    """The memory frame, its true depth and pose, and the real frames and poses ``HORIZONS`` steps after it."""
    from fidelity import sticky_actions
    from neuralsim.data import make_policy

    obs, info = env.reset(seed=seed)
    policy = make_policy("explore", env) if protocol == "explore" else None
    if policy is not None:
        policy.reset(env, np.random.default_rng(seed))
    actions = sticky_actions(np.random.default_rng(seed), MEMORY_STEP + max(HORIZONS) + 1, 4)
    out: dict[str, Any] = {"frames": {}, "poses": {}, "masks": {}}
    for t in range(MEMORY_STEP + max(HORIZONS) + 1):
        if t == MEMORY_STEP:
            out.update(memory=obs, depth=env.depth_map(), pose=info["pose"].astype(np.float64),
                       objects=env.object_mask() > 0)
        elif t - MEMORY_STEP in HORIZONS:
            out["frames"][t - MEMORY_STEP], out["poses"][t - MEMORY_STEP] = obs, info["pose"].astype(np.float64)
            out["masks"][t - MEMORY_STEP] = env.object_mask() > 0
        a = policy.act(obs, info) if policy is not None else actions[t]
        obs, _, _, _, info = env.step(np.asarray(a, np.float32))
    return out


def pixels(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).float().div(127.5).sub(1).permute(0, 3, 1, 2)


def run(model: Any, env: Any, seeds: Sequence[int], protocol: str) -> dict[str, Any]:
    eps = [episode(env, s, protocol) for s in seeds]
    memory = pixels(np.stack([e["memory"] for e in eps]))
    true_depth = torch.from_numpy(np.stack([e["depth"] for e in eps]))
    fm = model.frame_memory
    # the memory's pose as the dream holds it (its camera at the world's origin height: the start camera's, the floor
    # `floor_height` below), so a model with a floor caps the net's depth here as it does in a dream
    level = torch.from_numpy(np.stack([e["pose"] for e in eps]))
    level[:, 1, 3] = 0.0
    learned = fm.memory_depth(memory, level)
    depths = {"rotation": None, "true": true_depth}
    if learned is not None:
        depths["learned"] = learned
    metrics: dict[str, Any] = {}
    if learned is not None:
        ratio = torch.maximum(learned / true_depth, true_depth / learned)
        metrics[f"depth_abs_rel_{protocol}"] = float(((learned - true_depth).abs() / true_depth).mean())
        metrics[f"depth_delta125_{protocol}"] = float((ratio < 1.25).float().mean())
        objects = torch.from_numpy(np.stack([e["objects"] for e in eps]))
        if bool(objects.any()):
            metrics[f"depth_abs_rel_objects_{protocol}"] = float(((learned - true_depth).abs() / true_depth)[objects].mean())
    for h in HORIZONS:
        real = pixels(np.stack([e["frames"][h] for e in eps]))
        objects = torch.from_numpy(np.stack([e["masks"][h] for e in eps]))
        rel = torch.from_numpy(np.stack([np.linalg.inv(e["pose"]) @ e["poses"][h] for e in eps]))
        for name, depth in depths.items():
            warped, seen = fm.warp(memory, rel, depth)
            seen = seen.expand_as(real)
            mse = float(((warped - real) ** 2 * 127.5 ** 2)[seen].mean()) if bool(seen.any()) else float("nan")
            metrics[f"{name}_psnr_{protocol}_t{h}"] = 10 * np.log10(255 ** 2 / max(mse, 1e-10))
            on_objects = seen & objects[:, None].expand_as(real)
            mse = float(((warped - real) ** 2 * 127.5 ** 2)[on_objects].mean()) if bool(on_objects.any()) else float("nan")
            metrics[f"{name}_object_psnr_{protocol}_t{h}"] = 10 * np.log10(255 ** 2 / max(mse, 1e-10))
            metrics[f"{name}_seen_{protocol}_t{h}"] = float(seen.float().mean())
    return metrics


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="a model directory or 'default' (needs a frame memory)")
    add_standard_args(parser, "memory_warp", quick_help="4 seeds", seeds=SEEDS)
    args = parser.parse_args(argv)
    resolve_standard_args(parser, args, "memory_warp", SEEDS)
    torch.set_num_threads(1)
    import gymnasium as gym

    import neuralsim  # noqa: F401  (registers the envs)
    from fidelity import WORLD_ENV_KWARGS  # the rooms of the model's data

    t0 = time.perf_counter()
    model = load_memory_model(args.model)
    env = gym.make("NeuralSimRoom-v0", image_size=tuple(model.config.image_size), reach_radius=1e-3,
                   **WORLD_ENV_KWARGS).unwrapped
    seeds = [args.first_seed + i for i in range(args.seeds)]
    result: dict[str, Any] = {"benchmark": "memory_warp", "model": args.model, "seeds": args.seeds, "horizons": list(HORIZONS),
                              "depth_width": model.config.frame_memory_depth_width, **machine_info()}
    with torch.no_grad():
        for protocol in ("explore", "sticky"):
            result.update(run(model, env, seeds, protocol))
    env.close()
    result["seconds"] = time.perf_counter() - t0
    warps = ["rotation", "learned", "true"] if model.config.frame_memory_depth_width else ["rotation", "true"]
    print(f"memory warp vs the real frame, pooled PSNR over the pixels each warp sees (dB) / share seen; {args.seeds} seeds")
    for protocol in ("explore", "sticky"):
        if f"depth_abs_rel_{protocol}" in result:
            print(f"{protocol}: learned depth AbsRel {result[f'depth_abs_rel_{protocol}']:.3f}, "
                  f"δ<1.25 {result[f'depth_delta125_{protocol}']:.3f}")
        print(f"{'warp':<10}" + "".join(f"{'t+' + str(h):>14}" for h in HORIZONS))
        for w in warps:
            print(f"{w:<10}" + "".join(f"{result[f'{w}_psnr_{protocol}_t{h}']:8.2f} /{result[f'{w}_seen_{protocol}_t{h}']:4.2f}"
                                        for h in HORIZONS))
        print("object pixels:" + (f" learned depth AbsRel {result[f'depth_abs_rel_objects_{protocol}']:.3f} there"
                                  if f"depth_abs_rel_objects_{protocol}" in result else ""))
        for w in warps:
            print(f"{w:<10}" + "".join(f"{result[f'{w}_object_psnr_{protocol}_t{h}']:14.2f}" for h in HORIZONS))
    result = rounded(result)
    write_result(result, args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
