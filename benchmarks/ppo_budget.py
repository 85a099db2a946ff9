"""How many env steps PPO needs in the real room to beat random keys: the budget question of the transfer benchmark.

    python benchmarks/ppo_budget.py [--quick] [--timesteps 409600] [--checkpoints 8] [--episodes 40] [--seed 0]
                                    [--task start_view_deg=null]

The transfer score (dream − random) / (real − random) means something only once PPO trained in the real env beats
a random policy there. This trains PPO exactly as `neuralsim eval transfer` does in its real world (the env named
by the model's provenance, `agents.transfer.train_ppo`: CnnPolicy on 64×64 rgb, the walk-and-turn keys, 16 envs,
`PPO_KWARGS`) for ``--timesteps`` env steps, saves ``--checkpoints`` policies along the way, and evaluates each,
random keys and holding each key set alone on ``--episodes`` held-out layouts (the transfer benchmark's evaluation
seeds of seed block ``--seed``). Prints a table; the last line is one JSON object, also written to
benchmarks/results/ppo_budget.json (``--quick``: ppo_budget_quick.json, a smoke run, not a figure):
``first_steps_above_random`` is the first saved policy's step count whose mean return beats random's (None: none did).
``--task OPTION=JSON`` sets a task option of the real env for training and evaluation (the room's
``start_view_deg=null``: any start heading, where random keys rarely find the ball; `benchmarks/room_task.py`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import neuralsim  # noqa: F401  (registers the envs)
from neuralsim.agents.transfer import (QUICK_PPO_KWARGS, TransferConfig, check_task_options, constant_policy_fn,
                                       evaluate_real, parse_task_options, random_policy_fn, real_env_spec, saved_policy_fn,
                                       train_ppo)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, rounded, write_result  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="the world model whose real env PPO trains in")
    parser.add_argument("--timesteps", type=int, default=None, help="PPO env steps (default 409,600; --quick 2,048)")
    parser.add_argument("--checkpoints", type=int, default=8, help="policies saved along the training (default 8)")
    parser.add_argument("--episodes", type=int, default=None, help="held-out layouts per policy (default 40; --quick 4)")
    parser.add_argument("--seed", type=int, default=0, help="training seed and evaluation seed block (default 0)")
    parser.add_argument("--workdir", default=None, help="where the policies go (default runs/ppo_budget[_TASK]; --quick: "
                                                        "a temporary directory)")
    parser.add_argument("--task", action="append", default=[], metavar="OPTION=JSON",
                        help="a task option of the real env (its TASK_OPTIONS), e.g. start_view_deg=null: any start "
                             "heading; repeatable (default: the env's default task)")
    parser.add_argument("--quick", action="store_true", help="tiny budget: the whole pipeline in about a minute")
    parser.add_argument("--out", default=None, help="results JSON (default benchmarks/results/ppo_budget.json)")
    args = parser.parse_args(argv)
    timesteps = args.timesteps if args.timesteps is not None else (2048 if args.quick else 409_600)
    episodes = args.episodes if args.episodes is not None else (4 if args.quick else 40)
    for name, value in (("--timesteps", timesteps), ("--checkpoints", args.checkpoints), ("--episodes", episodes)):
        if value < 1:
            parser.error(f"{name} must be >= 1, got {value}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    try:
        task = parse_task_options(args.task)
    except ValueError as e:
        parser.error(str(e))
    overrides: dict[str, Any] = dict(model=args.model, timesteps=timesteps, checkpoints=args.checkpoints, seeds=1,
                                     episodes=episodes, real_task=task)
    if args.quick:
        overrides.update(num_envs=4, ppo=dict(QUICK_PPO_KWARGS))
    cfg = TransferConfig(**overrides)
    try:
        cfg.validate(cli=True)
    except ValueError as e:
        parser.error(str(e))
    # a run on another task gets its own files: ppo_budget_start_view_deg-null.json, runs/ppo_budget_start_view_deg-null
    name = "ppo_budget" + "".join(f"_{k}-{re.sub(r'[^A-Za-z0-9.]+', '', json.dumps(v))}" for k, v in sorted(task.items()))
    workdir = Path(args.workdir or (tempfile.mkdtemp(prefix="ppo_budget_") if args.quick else f"runs/{name}"))
    out = args.out or str(RESULTS / (f"{name}_quick.json" if args.quick else f"{name}.json"))

    t0 = time.perf_counter()
    env_id, env_kwargs = real_env_spec(cfg.model, task)
    try:
        check_task_options(env_id, task)
    except ValueError as e:
        parser.error(str(e))
    try:
        gym.make(env_id, **env_kwargs).close()
    except (ValueError, TypeError) as e:
        parser.error(f"--task: {e}")
    eval_kwargs = {**env_kwargs, "max_episode_steps": cfg.max_episode_steps} if env_id == "NeuralSimRoom-v0" else env_kwargs
    print(f"training PPO in {env_id} ({timesteps:,} env steps, {cfg.num_envs} envs, seed {args.seed})...", flush=True)
    run = train_ppo("real", cfg, args.seed, workdir / f"real-seed{args.seed}")
    print(f"  {run['wall_s']:.0f} s, {run['env_steps_per_s']:.0f} env-steps/s", flush=True)

    space = gym.spaces.Discrete(len(cfg.keys))
    seeds = [cfg.eval_seed + 1000 * args.seed + e for e in range(episodes)]  # the transfer benchmark's layouts
    policies = [("random", None, random_policy_fn(space))]
    policies += [(f"always {k}", None, constant_policy_fn(k, space, cfg.keys)) for k in cfg.keys]
    policies += [(f"PPO after {p['steps']:,} steps", p["steps"], saved_policy_fn(p["path"])) for p in run["policies"]]
    rows = []
    print(f"{'policy':<28} {'return (mean ± std)':>20} {'success':>8}")
    for name, steps, act in policies:
        res = evaluate_real(act, env_id, eval_kwargs, seeds, cfg.max_episode_steps, rng_seed=args.seed, keysets=cfg.keys)
        row = {"policy": name, "steps": steps, "return_mean": float(np.mean(res["returns"])),
               "return_std": float(np.std(res["returns"])), "success_rate": float(np.mean(res["successes"]))}
        rows.append(row)
        print(f"{name:<28} {row['return_mean']:>10.2f} ± {row['return_std']:<7.2f} {row['success_rate']:>8.2f}", flush=True)
    random_return = rows[0]["return_mean"]
    above = [r["steps"] for r in rows if r["steps"] is not None and r["return_mean"] > random_return]
    result = {"benchmark": "ppo_budget", "quick": args.quick, "model": cfg.model, "env_id": env_id,
              "task": task, "timesteps": timesteps, "seed": args.seed, "episodes": episodes, "keys": list(cfg.keys),
              "num_envs": cfg.num_envs, "ppo": cfg.ppo, "train_wall_s": run["wall_s"],
              "train_env_steps_per_s": run["env_steps_per_s"], "random_return": random_return,
              "final_return": rows[-1]["return_mean"], "final_minus_random": rows[-1]["return_mean"] - random_return,
              "first_steps_above_random": above[0] if above else None, "rows": rows,
              "seconds": time.perf_counter() - t0, "machine": machine_info()}
    result = rounded(result)
    write_result(result, out)
    return result


if __name__ == "__main__":
    main()
