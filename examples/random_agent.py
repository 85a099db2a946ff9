"""A random agent in the batched dream: the smallest end-to-end use of ``SanaWM-v0``.

    python examples/random_agent.py                          # the shipped default model, 16 envs
    python examples/random_agent.py --model runs/default/model --num-envs 64 --steps 200
    python examples/random_agent.py --model default --random-weights   # untrained default architecture (timing)

Prints one JSON line: env steps, finished episodes, mean predicted reward, env-steps/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import gymnasium as gym
import numpy as np

import neuralsim  # noqa: F401  (registers SanaWM-v0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="model name or checkpoint directory")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--steps", type=int, default=50, help="vector env steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--denoise-steps", type=int, default=None)
    p.add_argument("--random-weights", action="store_true", help="build the preset --model with random weights")
    args = p.parse_args(argv)

    try:
        envs = gym.make_vec("SanaWM-v0", num_envs=args.num_envs, vectorization_mode="vector_entry_point",
                            model=args.model, denoise_steps=args.denoise_steps, random_weights=args.random_weights)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    envs.action_space.seed(args.seed)
    obs, info = envs.reset(seed=args.seed)
    episodes, rewards = 0, []
    t0 = time.perf_counter()
    for _ in range(args.steps):
        obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
        episodes += int(np.sum(terminated | truncated))
        rewards.append(reward)
    seconds = time.perf_counter() - t0
    envs.close()
    print(json.dumps({"model": args.model, "num_envs": args.num_envs, "obs_shape": list(obs.shape),
                      "env_steps": args.steps * args.num_envs, "episodes_finished": episodes,
                      "mean_reward": round(float(np.mean(rewards)), 4), "seconds": round(seconds, 3),
                      "env_steps_per_s": round(args.steps * args.num_envs / max(seconds, 1e-9), 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
