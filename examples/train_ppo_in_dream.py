"""Train PPO only inside the dream (SanaWM-v0), then run it in the real MuJoCo room.

    python examples/train_ppo_in_dream.py                         # 50,000 dream steps, 16 envs, ~10 min on 2 cores
    python examples/train_ppo_in_dream.py --timesteps 4096 --episodes 5   # a smoke run (~1 min)

The agent never sees the real room while training: observations, rewards and episode ends all come
from the world model (its decoder and its reward model: for the shipped model the target tracker, which locates
the ball in the start frame and follows it with the camera's motion). Afterwards the policy is saved
(policy.json + model.safetensors, no pickle) and evaluated in NeuralSimRoom-v0 on held-out layouts,
next to a random policy. The full benchmark (real-trained baseline, 3 seeds, dream-vs-real
agreement) is `neuralsim eval transfer`.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from stable_baselines3 import PPO

import neuralsim  # noqa: F401  (registers SanaWM-v0 and NeuralSimRoom-v0)
from neuralsim.agents.sb3 import make_sb3_env, rgb_policy_kwargs
from neuralsim.agents.transfer import (DREAM_START_SEED, EVAL_SEED, PPO_KWARGS, evaluate_real, random_policy_fn,
                                       real_env_spec, real_starts, saved_policy_fn)
from neuralsim.policy import save_policy

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--model", default="default", help="world model: shipped name or checkpoint dir")
p.add_argument("--timesteps", type=int, default=50_000, help="PPO env steps in the dream")
p.add_argument("--num-envs", type=int, default=16, help="dreams stepped in one batched forward")
p.add_argument("--episodes", type=int, default=20, help="real-room evaluation episodes")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--out", default="runs/ppo-in-dream", help="where the policy is saved")
args = p.parse_args()

# 1. The real task (the room's: the ball at rest) and first frames of 256 of its layouts, where the dream's episodes
#    start, whatever start set a checkpoint ships (one collected with the ball thrown shows balls in flight, whose
#    motion no single frame shows).
env_id, env_kwargs = real_env_spec(args.model)
start_frames, descriptions = real_starts(env_id, env_kwargs, [DREAM_START_SEED + i for i in range(256)])

# 2. The dream: N envs of the world model in one batched SB3 VecEnv (bf16 where the CPU/GPU has it).
venv = make_sb3_env(model=args.model, num_envs=args.num_envs, seed=args.seed, max_episode_steps=200,
                    start_frames=start_frames, start_descriptions=descriptions)

# 3. PPO on 64x64 rgb frames (ImpalaCNN: it sees the few-pixel ball), trained only on dreamed transitions.
agent = PPO("CnnPolicy", venv, seed=args.seed, device="cpu", verbose=1, policy_kwargs=rgb_policy_kwargs(), **PPO_KWARGS)
start = time.perf_counter()
agent.learn(args.timesteps)
train_s = time.perf_counter() - start
path = save_policy(agent, args.out, metadata={"world": "dream", "model": args.model, "steps": agent.num_timesteps})
venv.close()
print(f"trained {agent.num_timesteps:,} dream steps in {train_s:.0f} s ({agent.num_timesteps / train_s:.0f} env-steps/s); saved {path}")

# 4. The real room the model was trained on, on layouts neither the model nor the agent has seen.
seeds = [EVAL_SEED + i for i in range(args.episodes)]
results = {}
for name, act in (("PPO trained in the dream", saved_policy_fn(path)), ("random", random_policy_fn(venv.action_space))):
    res = evaluate_real(act, env_id, {**env_kwargs, "max_episode_steps": 200}, seeds, max_steps=200)
    results[name] = {"return_mean": float(np.mean(res["returns"])), "return_std": float(np.std(res["returns"])),
                     "success_rate": float(np.mean(res["successes"]))}
    print(f"{name:<26} real return {results[name]['return_mean']:7.2f} ± {results[name]['return_std']:.2f}, "
          f"success {results[name]['success_rate']:.2f}")
print(json.dumps({"train_s": train_s, "env_steps": int(agent.num_timesteps), "real": results}))
