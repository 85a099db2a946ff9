"""How well a target tracker's motion model alone can score the room: its return from the true start, no frames read.

    OMP_NUM_THREADS=1 python benchmarks/tracker_kinematics.py [--model default] [--quick] [--episodes 30]

A target tracker (``neuralsim.reward.TargetTracker``) scores a dream from where it believes the target is, moved by
the camera's own motion. This benchmark takes the localizer out: each episode's tracker memory opens with the *true*
target offset and place in the room (``target_offsets`` / ``room_places`` of the room's ``info``), then only the
motion model runs under the actions the policy took in the room (walk-and-turn keys: random, always forward, always
turning, and the data-collection policy ``explore``, whose actions are replayed). The tracker's episode return
(progress + the bonus on the step it calls a success, as in a dream) is set beside the room's, with and without the
walls (``walkable_half_extent``): the ceiling a dream's reward can reach with a perfect localizer. Reported per
policy: mean real and tracker returns, the Pearson correlation of episode returns, and the success agreement.

Held-out layouts from seed 500,000 (the transfer benchmark's). Prints a table; the last line is one JSON object, also
written to benchmarks/results/tracker_kinematics.json (``--quick``: 8 episodes per policy, tracker_kinematics_quick.json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch

import neuralsim  # noqa: F401  (registers NeuralSimRoom-v0)
from neuralsim.actions import keys_to_vector
from neuralsim.data import make_policy
from neuralsim.reward import TargetTracker, room_places, target_offsets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_info, rounded, set_threads, write_result  # noqa: E402

WALK_AND_TURN = ("w", "j", "l", "wj", "wl")
FIRST_SEED = 500_000


def trackers(model: str) -> dict[str, TargetTracker]:
    """The model's tracker with walls and the same tracker without them (its learned success edges kept)."""
    from neuralsim.model import WorldModel

    tracker = WorldModel.from_pretrained(model).reward_model
    if not isinstance(tracker, TargetTracker) or not tracker.walls:
        raise SystemExit(f"--model {model!r} needs a target tracker with walls (a task with walkable_half_extent)")
    task = {"progress_reward_scale": tracker.scale, "success_bonus": tracker.bonus_value, "reach_radius": tracker.reach,
            "contact_distance": tracker.contact}
    no_walls = TargetTracker(1, 4, 1, task, translation_speed=tracker.translation_speed,
                             rotation_speed_deg=float(np.degrees(tracker.rotation)), response=tracker.response,
                             view_tan=tracker.view_tan)
    no_walls.load_state_dict({k: v for k, v in tracker.state_dict().items() if k in ("near", "log_sharpness")}, strict=False)
    return {"walls": tracker.eval(), "no_walls": no_walls.eval()}


def policies(env: gym.Env) -> dict[str, Callable[[gym.Env, np.random.Generator], Callable[[Any, dict], np.ndarray]]]:
    """Per policy, a function that starts an episode's actor: ``(env, rng) -> act(obs, info)``."""
    keys = np.stack([keys_to_vector(k) for k in WALK_AND_TURN]).astype(np.float32)

    def explore(env: gym.Env, rng: np.random.Generator) -> Callable[[Any, dict], np.ndarray]:
        actor = make_policy("explore", env)
        actor.reset(env, rng)
        return lambda obs, info: np.asarray(actor.act(obs, info), np.float32)

    return {"random": lambda env, rng: (lambda obs, info: keys[rng.integers(len(keys))]),
            "forward": lambda env, rng: (lambda obs, info: keys[0]),
            "turn": lambda env, rng: (lambda obs, info: keys[2]),
            "explore": explore}


@torch.no_grad()
def episode(env: gym.Env, start_actor: Callable, seed: int, models: dict[str, TargetTracker], max_steps: int
            ) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    act = start_actor(env, rng)
    pose = torch.as_tensor(info["pose"])
    start = torch.cat([target_offsets(pose, torch.as_tensor(info["target_position"])), torch.zeros(2), room_places(pose)])
    memory = {name: start[: m.memory_size][None].clone() for name, m in models.items()}
    returns = {name: 0.0 for name in models}
    ended = {name: False for name in models}
    real, success = 0.0, False
    for _ in range(max_steps):
        action = act(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        real += float(reward)
        success |= bool(terminated)
        for name, m in models.items():
            if not ended[name]:
                progress, moved = m._advance(memory[name], torch.as_tensor(action)[None])
                memory[name] = moved
                done = bool(m._termination(moved[:, :2]) > 0)
                returns[name] += float(progress) + m.bonus_value * done
                ended[name] = done
        if terminated or truncated:
            break
    return {"real": real, "real_success": success, **{n: returns[n] for n in models},
            **{f"{n}_success": ended[n] for n in models}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="world model with a walled target tracker (default: default)")
    parser.add_argument("--episodes", type=int, default=None, help="held-out layouts per policy (default 30; --quick 8)")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="8 episodes per policy: a few seconds")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/tracker_kinematics.json)")
    args = parser.parse_args(argv)
    episodes = args.episodes if args.episodes is not None else (8 if args.quick else 30)
    if episodes < 2:
        parser.error(f"--episodes must be at least 2 (a correlation), got {episodes}")
    set_threads(1)
    models = trackers(args.model)
    env = gym.make("NeuralSimRoom-v0")
    rows = []
    print(f"{'policy':<9} {'real':>7} {'walls':>7} {'no walls':>9} {'r walls':>8} {'r none':>7} {'succ. agree w/ walls':>21}")
    for name, act in policies(env).items():
        eps = [episode(env, act, FIRST_SEED + i, models, args.max_steps) for i in range(episodes)]
        col = {k: np.array([e[k] for e in eps], dtype=float) for k in eps[0]}

        def corr(a: np.ndarray, b: np.ndarray) -> float | None:
            return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else None

        row = {"policy": name, "episodes": episodes, "real_return": col["real"].mean(), "walls_return": col["walls"].mean(),
               "no_walls_return": col["no_walls"].mean(), "pearson_walls": corr(col["real"], col["walls"]),
               "pearson_no_walls": corr(col["real"], col["no_walls"]), "real_success": col["real_success"].mean(),
               "walls_success": col["walls_success"].mean(),
               "success_agreement_walls": float((col["real_success"] == col["walls_success"]).mean())}
        rows.append(rounded(row))
        fmt = lambda v: "  n/a" if v is None else f"{v:7.2f}"  # noqa: E731
        print(f"{name:<9} {row['real_return']:7.2f} {row['walls_return']:7.2f} {row['no_walls_return']:9.2f} "
              f"{fmt(row['pearson_walls']):>8} {fmt(row['pearson_no_walls']):>7} {row['success_agreement_walls']:21.2f}")
    env.close()
    pooled = {k: float(np.mean([r[k] for r in rows])) for k in ("real_return", "walls_return", "no_walls_return")}
    result = {"benchmark": "tracker_kinematics", "quick": args.quick, "model": args.model, "machine": machine_info(),
              "episodes_per_policy": episodes, "first_seed": FIRST_SEED, "rows": rows,
              "mean_abs_return_gap_walls": rounded(float(np.mean([abs(r["walls_return"] - r["real_return"]) for r in rows]))),
              "mean_abs_return_gap_no_walls": rounded(float(np.mean([abs(r["no_walls_return"] - r["real_return"])
                                                                     for r in rows]))),
              **rounded(pooled)}
    out = args.out or RESULTS_DIR / ("tracker_kinematics_quick.json" if args.quick else "tracker_kinematics.json")
    write_result(result, out)
    return result


if __name__ == "__main__":
    main()
