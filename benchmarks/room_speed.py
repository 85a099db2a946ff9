"""Steps/s of the real MuJoCo room (NeuralSimRoom-v0): full env step, physics only, render only.

    python benchmarks/room_speed.py [--quick] [--steps N] [--image-size 64]

Single env, seeded random actions; each row is the best of 3 runs. Prints a table; the last line is one JSON object, also written
to benchmarks/results/room_speed.json. The CPU is shared on the dev machine: the load average is
recorded next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import neuralsim  # noqa: F401  (registers NeuralSimRoom-v0)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_rate as _rate  # noqa: E402  (shared benchmark helpers)
from _common import room_step_loop  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps (a few seconds)")
    parser.add_argument("--steps", type=int, default=None, help="steps per measurement (default 3000, 500 with --quick)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "room_speed.json"))
    args = parser.parse_args()
    steps = args.steps or (500 if args.quick else 3000)
    rng = np.random.default_rng(0)
    results: dict[str, float] = {}

    for action_type in ("continuous", "discrete"):
        env = gym.make("NeuralSimRoom-v0", image_size=args.image_size, action_type=action_type)
        env.reset(seed=0)
        results[f"env_step_{action_type}"] = _rate(room_step_loop(env, rng, action_type), steps)
        if action_type == "continuous":
            room = env.unwrapped
            vectors = rng.uniform(-1, 1, (steps + 20, 4)).astype(np.float32)
            results["physics_only"] = _rate(lambda n: [room._simulate(v) for v in vectors[:n]], steps)
            results["render_only"] = _rate(lambda n: [room._render_frame() for _ in range(n)], steps)
            t0 = time.perf_counter()
            n_resets = max(10, steps // 50)
            for i in range(n_resets):
                env.reset(seed=i)
            results["reset_ms"] = 1000 * (time.perf_counter() - t0) / n_resets
        env.close()

    soft = gym.make("NeuralSimRoom-v0", image_size=args.image_size, soft_body=True)
    soft.reset(seed=0)
    results["env_step_soft_body"] = _rate(room_step_loop(soft, rng, "continuous"), steps)
    vectors = rng.uniform(-1, 1, (steps + 20, 4)).astype(np.float32)
    results["physics_only_soft_body"] = _rate(lambda n: [soft.unwrapped._simulate(v) for v in vectors[:n]], steps)
    soft.close()

    from neuralsim.data import collect

    with tempfile.TemporaryDirectory() as tmp:
        episodes = 2 if args.quick else 8
        summary = collect("NeuralSimRoom-v0", Path(tmp) / "d", episodes=episodes, policy="explore",
                          image_size=args.image_size, progress=False)
        results["collect_explore_1_worker"] = summary["steps_per_s"]

    rows = [
        ("env.step, continuous actions (physics + render + info)", results["env_step_continuous"], "steps/s"),
        ("env.step, discrete actions", results["env_step_discrete"], "steps/s"),
        ("physics only (5 MuJoCo steps per env step)", results["physics_only"], "steps/s"),
        ("render only (64x64 rgb read-back)" if args.image_size == 64 else "render only", results["render_only"], "frames/s"),
        ("env.step with soft_body=True (flex cube)", results["env_step_soft_body"], "steps/s"),
        ("physics only with soft_body=True", results["physics_only_soft_body"], "steps/s"),
        ("reset (new layout)", results["reset_ms"], "ms"),
        ("collect, explore policy, 1 worker (incl. shard writing)", results["collect_explore_1_worker"], "steps/s"),
    ]
    print(f"NeuralSimRoom-v0 at {args.image_size}x{args.image_size}, {steps} steps per row (best of 3), "
          f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}, LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS')}")
    print(f"{'measurement':58s} {'value':>10s}  unit")
    for name, value, unit in rows:
        print(f"{name:58s} {value:10.1f}  {unit}")
    record = {
        "benchmark": "room_speed",
        "image_size": args.image_size,
        "steps": steps,
        "quick": args.quick,
        **{k: round(v, 2) for k, v in results.items()},
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "machine": platform.processor() or platform.machine(),
    }
    from neuralsim.checkpoints import atomic_write_text

    atomic_write_text(args.out, json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
