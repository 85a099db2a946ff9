"""The real-world baseline: PPO trained directly in the MuJoCo room, evaluated on held-out layouts.

    python examples/train_ppo_in_room.py                          # the transfer benchmark's real side, 1 seed
    python examples/train_ppo_in_room.py --keys box               # the continuous Box(4) camera actions instead
    python examples/train_ppo_in_room.py --target-colour none     # a ball of any colour (PPO does not find it)

Same PPO settings as `neuralsim eval transfer` (CnnPolicy with ImpalaCNN on 64x64 rgb, the walk-and-turn keys,
16 envs) on the room's default task (reach the red ball); prints the real-room return
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
from neuralsim.agents.sb3 import rgb_policy_kwargs
from neuralsim.policy import save_policy

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--timesteps", type=int, default=61_440, help="PPO env steps in the room")
p.add_argument("--num-envs", type=int, default=16)
p.add_argument("--target", default=None, help="the target object (ball, box0, box1, box2); default: the room's (ball)")
p.add_argument("--target-colour", default=None, help="red, yellow, cyan, pink, or none (drawn like every object's); "
                                                    "default: the room's (red)")
p.add_argument("--keys", default="w,j,l,wj,wl", help="comma-separated key sets as discrete actions over the continuous "
                                                    "room (neuralsim.agents.wrappers.KeySetActions; default: walk and "
                                                    "turn), or 'box' for the continuous Box(4) actions")
p.add_argument("--episodes", type=int, default=40, help="evaluation layouts")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--out", default="runs/ppo-in-room", help="where the policy is saved")
args = p.parse_args()

room_kwargs = {**({"target": args.target} if args.target else {}),
               **({"target_colour": None if args.target_colour == "none" else args.target_colour}
                  if args.target_colour else {})}
keysets = None if args.keys == "box" else tuple(args.keys.split(","))
venv = make_real_venv("NeuralSimRoom-v0", room_kwargs, args.num_envs, args.seed, max_episode_steps=200, keysets=keysets)
agent = PPO("CnnPolicy", venv, seed=args.seed, device="cpu", verbose=1, policy_kwargs=rgb_policy_kwargs(), **PPO_KWARGS)
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
