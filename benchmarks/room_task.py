"""The room's task as a pixel agent meets it: success rate, steps and the target's pixels on the success frame.

    python benchmarks/room_task.py [--quick] [--episodes N]

For the default task (success: the ball within ``reach_radius`` 0.9 m *and* at least ``success_pixels`` 20 of its
pixels in the frame), the earlier one (within 0.5 m, distance alone) and the default from any start heading
(``start_view_deg=None``: the ball need not be in view), three policies on the same held-out layouts
(seeds from 10,000): ``scripted`` (turns to the ball and walks), ``explore`` (the data-collection policy) and
``random`` (uniform over the walk-and-turn keys ``w, j, l, wj, wl``, the transfer benchmark's default key set).
Reports the success rate, mean episode length to success, mean return, and the ball's visible pixels on the frame
of the success step (MuJoCo's segmentation render): a reward model can only learn a success its frame shows.
Prints a table; the last line is one JSON object, also written to benchmarks/results/room_task.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import neuralsim  # noqa: F401  (registers NeuralSimRoom-v0)
from neuralsim.actions import WALK_AND_TURN, keys_to_vector
from neuralsim.data import make_policy
from neuralsim.envs.room import OBJECTS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, rounded, write_result  # noqa: E402

# any_heading: the default task from a uniform start heading (the ball need not be in view): how much of random keys'
# success comes from starting toward the ball.
TASKS = {"default": {}, "distance_0.5m": {"reach_radius": 0.5, "success_pixels": None},
         "any_heading": {"start_view_deg": None}}
POLICIES = ("scripted", "explore", "random")
FIRST_SEED = 10_000


def run_task(env_kwargs: dict[str, Any], policy: str, episodes: int) -> dict[str, Any]:
    """``episodes`` episodes of ``policy`` → success rate, steps to success, return, ball pixels at success."""
    env = gym.make("NeuralSimRoom-v0", **env_kwargs)
    room = env.unwrapped
    keys = [keys_to_vector(k).astype(np.float32) for k in WALK_AND_TURN]
    successes, steps, pixels, returns = 0, [], [], []
    for i in range(episodes):
        obs, info = env.reset(seed=FIRST_SEED + i)
        rng = np.random.default_rng(i)
        actor = None if policy == "random" else make_policy(policy, env)
        if actor is not None:
            actor.reset(env, rng)
        total, t = 0.0, -1
        while True:  # until the success or gym.make's time limit (200 steps)
            t += 1
            action = keys[rng.integers(len(keys))] if actor is None else actor.act(obs, info)
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            if terminated:
                successes += 1
                steps.append(t + 1)
                pixels.append(room.visible_pixels()[OBJECTS[room.privileged_state()["target"]][0]])
                break
            if truncated:
                break
        returns.append(total)
    env.close()
    return {"success_rate": successes / episodes, "steps_to_success": float(np.mean(steps)) if steps else None,
            "return_mean": float(np.mean(returns)),
            "target_pixels_at_success_mean": float(np.mean(pixels)) if pixels else None,
            "target_pixels_at_success_min": int(min(pixels)) if pixels else None,
            "success_frames_showing_target": float(np.mean(np.asarray(pixels) > 0)) if pixels else None}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 episodes per row (about 20 s)")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per row (default 100, 12 with --quick)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "room_task.json"))
    args = parser.parse_args(argv)
    episodes = args.episodes or (12 if args.quick else 100)
    if episodes < 1:
        parser.error(f"--episodes must be >= 1, got {episodes}")
    result: dict[str, Any] = {"benchmark": "room_task", "quick": args.quick, "episodes": episodes,
                              "first_seed": FIRST_SEED, "machine": machine_info()}
    print(f"{'task':<15} {'policy':<9} {'success':>8} {'steps':>6} {'return':>7} {'ball px at success (min)':>25}")
    for task, kwargs in TASKS.items():
        for policy in POLICIES:
            r = run_task(kwargs, policy, episodes)
            for key, value in r.items():
                result[f"{task}_{policy}_{key}"] = value
            steps = "-" if r["steps_to_success"] is None else f"{r['steps_to_success']:.0f}"
            px = "-" if r["target_pixels_at_success_mean"] is None else \
                f"{r['target_pixels_at_success_mean']:.0f} ({r['target_pixels_at_success_min']})"
            print(f"{task:<15} {policy:<9} {r['success_rate']:>8.2f} {steps:>6} {r['return_mean']:>7.2f} {px:>25}",
                  flush=True)
    result = rounded(result)
    write_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
