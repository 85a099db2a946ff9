"""The real-world baseline: PPO trained directly in the MuJoCo room, evaluated on held-out layouts.

    python examples/train_ppo_in_room.py                                   # the transfer benchmark's real side, 1 seed
    python examples/train_ppo_in_room.py --target ball --action-type discrete   # a target a pixel policy can see
    python examples/train_ppo_in_room.py --target ball --keys w,j,l,wj,wl       # walk-and-turn actions only

Same PPO settings as `neuralsim eval transfer` (CnnPolicy on 64x64 rgb, 16 envs); prints the real-room return
and success rate of the trained policy next to a random policy on the same layouts, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from stable_baselines3 import PPO

import neuralsim  # noqa: F401  (registers NeuralSimRoom-v0)
from neuralsim.agents.transfer import EVAL_SEED, PPO_KWARGS, evaluate_real, make_real_venv, random_policy_fn, saved_policy_fn
from neuralsim.policy import save_policy

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--timesteps", type=int, default=61_440, help="PPO env steps in the room")
p.add_argument("--num-envs", type=int, default=16)
p.add_argument("--target", default=None, help="fix the target object (ball, box0, box1, box2); default: drawn per layout")
p.add_argument("--action-type", default="continuous", choices=("continuous", "discrete"))
p.add_argument("--keys", default=None, help="comma-separated key sets as discrete actions over the continuous room, "
                                           "e.g. w,j,l,wj,wl (neuralsim.agents.wrappers.KeySetActions)")
p.add_argument("--episodes", type=int, default=40, help="evaluation layouts")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--out", default="runs/ppo-in-room", help="where the policy is saved")
args = p.parse_args()

room_kwargs = {"action_type": args.action_type, **({"target": args.target} if args.target else {})}
keysets = None if args.keys is None else tuple(args.keys.split(","))
venv = make_real_venv("NeuralSimRoom-v0", room_kwargs, args.num_envs, args.seed, max_episode_steps=200, keysets=keysets)
agent = PPO("CnnPolicy", venv, seed=args.seed, device="cpu", verbose=1, **PPO_KWARGS)
start = time.perf_counter()
agent.learn(args.timesteps)
train_s = time.perf_counter() - start
path = save_policy(agent, args.out, metadata={"world": "real", "room_kwargs": room_kwargs, "steps": agent.num_timesteps})
action_space = venv.action_space
venv.close()

seeds = [EVAL_SEED + i for i in range(args.episodes)]
results = {}
for name, act in (("PPO trained in the room", saved_policy_fn(path)), ("random", random_policy_fn(action_space))):
    res = evaluate_real(act, "NeuralSimRoom-v0", {**room_kwargs, "max_episode_steps": 200}, seeds, max_steps=200,
                        keysets=keysets)
    results[name] = {"return_mean": float(np.mean(res["returns"])), "return_std": float(np.std(res["returns"])),
                     "success_rate": float(np.mean(res["successes"]))}
    print(f"{name:<24} return {results[name]['return_mean']:7.2f} ± {results[name]['return_std']:.2f}, "
          f"success {results[name]['success_rate']:.3f}")
print(json.dumps({"room_kwargs": room_kwargs, "keysets": keysets, "train_s": train_s, "env_steps": int(agent.num_timesteps), "real": results}))
