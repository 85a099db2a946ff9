"""Reward and success prediction in the dream: the fidelity benchmark's reward protocol alone (about 30 s).

Protocol (``benchmarks/fidelity.py``, the same functions, seeds and dream seeds, so the figures equal its
``reward_corr_t1_16`` / ``termination_f1``): the room's default task (the ball, a success the camera sees) from
held-out seeds under the explore, sticky-random and scripted policies; 16 real context frames, then 16 dreamed steps
of the same actions. Reported: Pearson between the dream's reward and the real one over dream steps 1-16, success F1
(probability > 0.5 vs the real success test), steps after an episode's first success left out; per policy and pooled;
and the same reward model on the real frames (its ceiling); for a target tracker also its motion model alone from the
true target offset and place (``*_true_start``: dead reckoning's ceiling, the localizer taken out). ``--reward-dream-trust`` overrides a target tracker's
``reward_dream_trust`` (how much it measures on dreamed frames; ``neuralsim.reward.TargetTracker``).

    OMP_NUM_THREADS=1 python benchmarks/reward_prediction.py --model DIR [--reward-dream-trust 1.0]
    OMP_NUM_THREADS=1 python benchmarks/reward_prediction.py --model DIR --quick      # 8 seeds
    OMP_NUM_THREADS=1 python benchmarks/reward_prediction.py --model DIR --ball-start thrown  # the ball thrown at reset

Prints a table; the last line is one JSON object, also written to ``benchmarks/results/reward_prediction.json``
(the room's default task, the ball at rest; the ball thrown: ``reward_prediction_ball_thrown.json``; ``--quick``:
``..._quick.json``; ``--results-dir``, ``--name`` to change).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (add_standard_args, ball_start_name, machine_info, resolve_standard_args, room_ball_start,  # noqa: E402
                     rounded, set_threads, write_result)

SEEDS = (32, 8)  # held-out seeds per policy: full, --quick


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from neuralsim.envs.room import NeuralSimRoomEnv  # light: mujoco loads with the first env

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="checkpoint directory or shipped name")
    parser.add_argument("--ball-start", choices=NeuralSimRoomEnv.BALL_STARTS, default=room_ball_start(),
                        help="the room's ball at reset: at rest on the floor (default, the room's default task) or "
                             "thrown (it falls and rolls on at a velocity the context shows but the dream's memory does "
                             "not follow)")
    parser.add_argument("--reward-dream-trust", type=float, default=None,
                        help="a target tracker's weight of a dreamed frame's measurement, in [0, 1] (default: the model's)")
    parser.add_argument("--threads", type=int, default=None)
    add_standard_args(parser, "reward_prediction", quick_help="8 seeds per policy", seeds=SEEDS,
                      seeds_what="held-out seeds per policy (fidelity.py's)")
    args = parser.parse_args(argv)
    resolve_standard_args(parser, args, ball_start_name("reward_prediction", args.ball_start), SEEDS)
    if args.reward_dream_trust is not None and not 0.0 <= args.reward_dream_trust <= 1.0:
        parser.error(f"--reward-dream-trust must be in [0, 1], got {args.reward_dream_trust}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads or 1)
    import gymnasium as gym

    import fidelity
    import neuralsim.envs  # noqa: F401  (registers the room)
    from neuralsim.model import WorldModel

    t0 = time.perf_counter()
    model = WorldModel.from_pretrained(args.model).float().eval()
    cfg = model.config
    if cfg.action_spec.get("type") != "box" or cfg.action_dim != 4:
        raise SystemExit(f"reward_prediction.py needs a model of the room's 4-dim camera actions, got {cfg.action_spec}")
    source = "heads" if model.reward_model is None else f"reward model ({cfg.reward_model_kind})"
    if args.reward_dream_trust is not None:
        if cfg.reward_model_kind != "target" or model.reward_model is None:
            raise SystemExit("--reward-dream-trust needs a model with a target tracker (reward_model_kind 'target')")
        cfg.reward_dream_trust = model.reward_model.dream_trust = float(args.reward_dream_trust)
    k = int(cfg.frames_per_latent)
    n_ctx = 1 + (fidelity.CONTEXT - 1) // k
    seeds = [args.first_seed + i for i in range(args.seeds)]
    env = gym.make("NeuralSimRoom-v0", image_size=tuple(cfg.image_size), reach_radius=1e-3,
                   ball_start=args.ball_start).unwrapped
    reach = float(inspect.signature(type(env)).parameters["reach_radius"].default)
    with torch.no_grad():
        metrics = fidelity.reward_metrics({name: fidelity.reward_protocol(name, model, env, seeds, k=k, n_ctx=n_ctx,
                                                                          reach=reach, dream_seed=5 + i, denoise_steps=None)
                                           for i, name in enumerate(fidelity.REWARD_PROTOCOLS)})
    env.close()
    result: dict[str, Any] = {"benchmark": "reward_prediction", "model": args.model, "quick": args.quick,
                              "seeds": args.seeds, "first_seed": args.first_seed, "ball_start": args.ball_start,
                              "reward_source": source,
                              "reward_dream_trust": cfg.reward_dream_trust if cfg.reward_model_kind == "target" else None,
                              **metrics, "seconds": time.perf_counter() - t0, "machine": machine_info()}
    print(f"\nreward prediction in the dream ({source}, {args.seeds} held-out seeds per policy, model {args.model}):",
          file=sys.stderr)
    print(f"{'policy':>10s} {'Pearson t1-16':>14s} {'success F1':>11s}", file=sys.stderr)
    for name in (*fidelity.REWARD_PROTOCOLS, ""):
        suffix = f"_{name}" if name else ""
        corr, f1 = metrics.get(f"reward_corr_t1_16{suffix}"), metrics.get(f"termination_f1{suffix}")
        print(f"{name or 'pooled':>10s} {'n/a' if corr is None else f'{corr:.3f}':>14s} "
              f"{'n/a' if f1 is None else f'{f1:.3f}':>11s}", file=sys.stderr)
    interval = lambda key: fidelity.format_interval(metrics.get(key)) or "n/a"  # noqa: E731
    print(f"episodes resampled: Pearson {interval('reward_corr_t1_16_ci90')}, F1 {interval('termination_f1_ci90')}",
          file=sys.stderr)
    print(f"real successes {metrics['termination_positives']}, predicted {metrics['termination_predicted']}; on the real "
          f"frames: Pearson {metrics.get('reward_corr_t1_16_real_frames')}, F1 {metrics.get('termination_f1_real_frames')}",
          file=sys.stderr)
    print(f"progress alone (steps that end neither episode): Pearson {metrics.get('reward_corr_t1_16_progress')}; the "
          f"dream's first success {metrics.get('termination_delay_median')} steps after the real one (median), within 1 "
          f"step for {metrics.get('termination_within_1_step')} of the real successes, missed {metrics.get('termination_missed')}",
          file=sys.stderr)
    if "reward_corr_t1_16_true_start" in metrics:
        print(f"the tracker's motion model alone from the true start (its ceiling at trust 0): Pearson "
              f"{metrics['reward_corr_t1_16_true_start']}, F1 {metrics['termination_f1_true_start']}", file=sys.stderr)
    result = rounded(result)
    write_result(result, args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
