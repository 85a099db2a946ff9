"""The transfer benchmark's agreement step alone: saved policies scored in the room and in a model's dream.

A model change is judged on the same policies: the ones a `neuralsim eval transfer` run saved (seed 0's checkpoints
along its dream and room trainings), random keys and the scripted ones (always forward, turning on the spot), each
for ``--episodes`` held-out layouts from the same starts in both worlds, exactly as step 3 of
``neuralsim.agents.transfer.run_transfer_benchmark`` (``measure_agreement``). Reported: each policy's mean return
and success in both worlds, the Spearman rank correlation of the returns (with its 90 % interval from resampling
the starts, ``spearman_ci90``), and the dream's reward along the real episodes (their first 16 actions replayed open
loop from the same real first frame): Pearson and termination F1.
No PPO is trained, so a new model is scored in minutes instead of an hour.

    OMP_NUM_THREADS=1 python benchmarks/transfer_agreement.py --policies runs/transfer --model DIR
    OMP_NUM_THREADS=1 python benchmarks/transfer_agreement.py --policies runs/transfer --quick   # 4 episodes
    OMP_NUM_THREADS=1 python benchmarks/transfer_agreement.py --policies runs/transfer --task 'ball_start="thrown"'
    OMP_NUM_THREADS=1 python benchmarks/transfer_agreement.py --policies runs/transfer_latent_taught --latent-source frames

Policies trained on latent observations (``neuralsim eval transfer --obs latent``: the run record says so) observe the
room through the model's encoder and the dream's latents from ``--latent-source`` (``dynamics``, the default, or
``frames``: the dream's decoded frames encoded again, ``WorldModelEnv(latent_source=...)``).

``--task OPTION=JSON`` sets a task option of the real env (its ``TASK_OPTIONS``) for the episodes of both worlds (the
dream starts from the real first frames, so it sees the same task); the policies stay the ones the run trained.
Without it, the transfer benchmark's task (the env's ``TRANSFER_TASK``: the room's ball at rest).

Prints a table; the last line is one JSON object, also written to ``benchmarks/results/transfer_agreement.json``
(``--quick``: ``transfer_agreement_quick.json``; ``--results-dir``, ``--name`` to change).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_standard_args, machine_info, resolve_standard_args, rounded, set_threads, write_result  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", type=Path, required=True,
                        help="a `neuralsim eval transfer` workdir: its dream-seed0/ and real-seed0/ saved policies")
    parser.add_argument("--model", default="default", help="the world model whose dream scores them (default: default)")
    parser.add_argument("--episodes", type=int, default=None, help="held-out layouts per policy (default 20; --quick 4)")
    parser.add_argument("--max-episode-steps", type=int, default=200, help="episode limit (default 200, the benchmark's)")
    parser.add_argument("--task", action="append", default=[], metavar="OPTION=JSON",
                        help="a task option of the real env for both worlds' episodes (its TASK_OPTIONS), e.g. "
                             "ball_start='\"thrown\"'; repeatable (default: the transfer benchmark's task, the "
                             "env's TRANSFER_TASK)")
    parser.add_argument("--latent-source", choices=("dynamics", "frames"), default="dynamics",
                        help="for policies on latent observations, the dream's latents: dynamics (default: the "
                             "committed latents, nothing decoded) or frames (the decoded frames encoded again)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    add_standard_args(parser, "transfer_agreement", quick_help="4 layouts per policy (a smoke run, not a score)")
    args = resolve_standard_args(parser, parser.parse_args(argv), "transfer_agreement")
    args.episodes = args.episodes if args.episodes is not None else (4 if args.quick else 20)
    try:
        from neuralsim.agents.transfer import parse_task_options

        args.task = parse_task_options(args.task)
    except ValueError as exc:
        parser.error(str(exc))
    if args.episodes < 2:
        parser.error(f"--episodes must be >= 2 (a rank correlation needs spread), got {args.episodes}")
    for world in ("dream", "real"):
        if not (args.policies / f"{world}-seed0" / "run.json").is_file():
            parser.error(f"--policies must be a `neuralsim eval transfer` workdir with {world}-seed0/run.json, "
                         f"got {str(args.policies)!r}")
    return args


def run_observation(workdir: Path) -> str:
    """What the run's policies observe, ``"rgb"`` or ``"latent"`` (its seed-0 dream training's record)."""
    from neuralsim.agents.transfer import RUN_RECORD

    record = json.loads((workdir / "dream-seed0" / RUN_RECORD).read_text())
    return str(record.get("key", {}).get("obs", "rgb"))


def saved_policies(workdir: Path, world: str) -> list[dict[str, Any]]:
    """The policies ``[{"path", "steps"}...]`` a finished training in ``workdir/<world>-seed0`` saved."""
    from neuralsim.agents.transfer import RUN_RECORD

    record = json.loads((workdir / f"{world}-seed0" / RUN_RECORD).read_text())
    return record["run"]["policies"]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    import gymnasium as gym
    import numpy as np

    from neuralsim.agents import transfer as T

    t0 = time.perf_counter()
    # no --task: the transfer benchmark's task (the env's TRANSFER_TASK), as the run that trained the policies
    obs = run_observation(args.policies)
    cfg = T.TransferConfig(model=args.model, episodes=args.episodes, max_episode_steps=args.max_episode_steps,
                           workdir=str(args.policies), real_task=args.task or None, obs=obs,
                           latent_source=args.latent_source)
    try:
        cfg.validate(cli=True)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    env_id, env_kwargs = T.real_env_spec(cfg.model, cfg.real_task)
    try:
        T.check_task_options(env_id, cfg.real_task)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    eval_kwargs = {**env_kwargs, "max_episode_steps": cfg.max_episode_steps} if env_id == "NeuralSimRoom-v0" else env_kwargs
    action_space = gym.spaces.Discrete(len(cfg.keys))
    seeds = [cfg.eval_seed + e for e in range(cfg.episodes)]  # the transfer benchmark's agreement layouts
    starts, prompts = T.real_starts(env_id, eval_kwargs, seeds)
    candidates = T.agreement_candidates(saved_policies(args.policies, "dream"), saved_policies(args.policies, "real"),
                                        action_space, cfg.keys)
    encoder = None
    if obs == "latent":  # the room through the model's encoder, as the run trained and scored them
        from neuralsim.envs.latent import FrameEncoder

        encoder = FrameEncoder(cfg.model)
    rows, rho, rewards = T.measure_agreement(cfg, candidates, env_id, eval_kwargs, seeds, starts, prompts,
                                             encoder=encoder, log=lambda m: print(m, file=sys.stderr, flush=True))
    for row in rows:
        del row["_act"]
    seen = obs if obs == "rgb" else f"latent ({args.latent_source} in the dream)"
    print(f"\nagreement of {args.policies}'s policies ({seen}), {args.episodes} layouts each, model {args.model}:",
          file=sys.stderr)
    print(f"{'policy':<26}{'real return':>12}{'dream return':>13}{'real success':>13}{'dream success':>14}", file=sys.stderr)
    for row in rows:
        print(f"{row['policy']:<26}{row['real_return']:>12.2f}{row['dream_return']:>13.2f}{row['real_success']:>13.2f}"
              f"{row['dream_success']:>14.2f}", file=sys.stderr)
    interval = T.spearman_interval(rows)
    print(f"Spearman {rho:.3f}" + ("" if interval is None else f" (90 % interval, the starts resampled: "
                                   f"{interval[0]}–{interval[1]})")
          + f"; dream reward along the real episodes: Pearson {rewards['reward_corr_t1_16']}, "
          f"termination F1 {rewards['termination_f1']} ({rewards['termination_positives']} real endings, "
          f"{rewards['termination_predicted']} predicted)", file=sys.stderr)
    result = {"benchmark": "transfer_agreement", "model": args.model, "policies": str(args.policies),
              "quick": args.quick, "episodes": args.episodes, "obs": obs,
              "latent_source": args.latent_source if obs == "latent" else None,
              "task": {k: env_kwargs[k] for k in T.env_task_options(env_id) if k in env_kwargs}, "agreement": rows,
              "spearman": None if not np.isfinite(rho) else rho, "spearman_ci90": interval, **rewards,
              "seconds": time.perf_counter() - t0, "machine": machine_info()}
    result = rounded(result)
    write_result(result, args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
