"""Why agents on the dream's latents do not transfer: the same saved policies in the dream, their latents from each source.

A `neuralsim eval transfer --obs latent` run saves each seed's final policy trained in the room and in the dream.
Each one acts here from the transfer benchmark's held-out starts (the agreement's layouts, ``--episodes`` of them) in
the room (through the model's encoder) and in the dream, the dream run with rgb frames and its frame memory
throughout (the same rewards and endings for every source), the policy observing:

* ``dynamics``: the latent frame the dynamics committed (``WorldModelEnv(obs_type="latent")``, the default);
* ``frames``: the dream's decoded frame, with the frame memory's correction, encoded again
  (``latent_source="frames"``, what the encoder makes of a real frame);
* ``frames-no-memory``: the committed latent decoded *without* the frame memory, encoded again (a diagnostic: is it
  the memory's correction, or only the trip through decoder and encoder, that matters?).

Every source's dream decodes its frames, so its termination detector judges them for all three
(``obs_type="latent"`` alone ends episodes by the reward model instead). A dream that judges policies as the room does
gives room-trained policies room-like returns; the table puts each source's returns beside the room's.

    OMP_NUM_THREADS=1 python benchmarks/latent_source.py --policies runs/transfer_latent_taught
    OMP_NUM_THREADS=1 python benchmarks/latent_source.py --policies runs/transfer_latent_taught --quick  # ~1 min

Prints a table; the last line is one JSON object, also written to ``benchmarks/results/latent_source.json``
(``--quick``: ``latent_source_quick.json``; ``--results-dir``, ``--name`` to change).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_standard_args, machine_info, resolve_standard_args, rounded, set_threads, write_result  # noqa: E402

SOURCES = ("dynamics", "frames", "frames-no-memory")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", type=Path, required=True,
                        help="a `neuralsim eval transfer --obs latent` workdir: its <world>-seed<N>/final policies")
    parser.add_argument("--model", default="default", help="the world model (default: default)")
    parser.add_argument("--episodes", type=int, default=None, help="held-out layouts per policy (default 20; --quick 4)")
    parser.add_argument("--max-episode-steps", type=int, default=None,
                        help="episode limit (default 200, the benchmark's; --quick 60)")
    parser.add_argument("--sources", default=",".join(SOURCES),
                        help=f"comma-separated, of {', '.join(SOURCES)} (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    add_standard_args(parser, "latent_source", quick_help="seed 0's policies only, 4 layouts, 60-step episodes "
                      "(a smoke run, not a score)")
    args = resolve_standard_args(parser, parser.parse_args(argv), "latent_source")
    args.episodes = args.episodes if args.episodes is not None else (4 if args.quick else 20)
    if args.max_episode_steps is None:
        args.max_episode_steps = 60 if args.quick else 200
    for name in ("episodes", "max_episode_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    args.sources = [s for s in args.sources.split(",") if s]
    if not args.sources or set(args.sources) - set(SOURCES):
        parser.error(f"--sources must be comma-separated names of {', '.join(SOURCES)}, got {','.join(args.sources)!r}")
    args.finals = sorted(p.parent for p in args.policies.glob("*-seed*/final/policy.json")
                         if not args.quick or p.parent.parent.name.endswith("-seed0"))
    if not args.finals:
        parser.error(f"--policies must be a `neuralsim eval transfer` workdir with <world>-seed<N>/final policies, "
                     f"got {str(args.policies)!r}")
    for final in args.finals:
        key = json.loads((final.parent / "run.json").read_text()).get("key", {})
        if key.get("obs") != "latent":
            parser.error(f"--policies: {final} was trained on {key.get('obs')!r} observations; this benchmark scores "
                         "policies on latent observations")
    return args


def dream_returns(act: Callable, model: str, starts: np.ndarray, prompts: list[str], max_steps: int, keys: Any,
                  source: str, seed: int = 7) -> dict[str, list]:
    """The policy's episodes in the dream from the real starts (rgb dream, frame memory on), observing ``source``."""
    from neuralsim.agents.wrappers import keyset_vectors
    from neuralsim.envs.vector import WorldModelVectorEnv
    from neuralsim.envs.world_model_env import encoded_obs, latent_obs

    n = len(starts)
    venv = WorldModelVectorEnv(n, model=model, max_episode_steps=max_steps, obs_type="rgb")
    session = venv.session
    vectors = keyset_vectors(keys, venv.single_action_space, name="model")

    def observe(frames: np.ndarray) -> np.ndarray:
        if source == "frames":
            return encoded_obs(session, frames)
        if source == "dynamics":
            return latent_obs(venv._state.latent)
        plain = session.decode(venv._state.latent[:, None], first_frame=False, context=None)[:, -1]
        return encoded_obs(session, plain)

    frames, _ = venv.reset(seed=seed, options={"image": starts, "prompt": prompts, "resize": True})
    obs = encoded_obs(session, frames)  # a start is a real frame: every source encodes it
    rng = np.random.default_rng(seed)
    returns, success, active = np.zeros(n), np.zeros(n, bool), np.ones(n, bool)
    while active.any():
        frames, rewards, terminated, truncated, _ = venv.step(vectors[np.asarray(act(obs, rng), dtype=np.int64)])
        obs = observe(frames)
        returns[active] += rewards[active]
        success[active] |= terminated[active]
        active &= ~(terminated | truncated)
    venv.close()
    return {"returns": returns.tolist(), "successes": success.tolist()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    from neuralsim.agents import transfer as T
    from neuralsim.envs.latent import FrameEncoder

    t0 = time.perf_counter()
    cfg = T.TransferConfig(model=args.model, max_episode_steps=args.max_episode_steps, obs="latent")
    env_id, env_kwargs = T.real_env_spec(cfg.model, cfg.real_task)
    eval_kwargs = {**env_kwargs, "max_episode_steps": cfg.max_episode_steps}
    seeds = [cfg.eval_seed + e for e in range(args.episodes)]  # the transfer benchmark's agreement layouts
    starts, prompts = T.real_starts(env_id, eval_kwargs, seeds)
    encoder = FrameEncoder(cfg.model)
    rows = []
    for final in args.finals:
        act = T.saved_policy_fn(final)
        real = T.evaluate_real(act, env_id, eval_kwargs, seeds, cfg.max_episode_steps, rng_seed=7, keysets=cfg.keys,
                               encoder=encoder)
        row = {"policy": final.parent.name, "trained_in": final.parent.name.split("-")[0],
               "real_return": float(np.mean(real["returns"])), "real_success": float(np.mean(real["successes"]))}
        for source in args.sources:
            dream = dream_returns(act, cfg.model, starts, prompts, cfg.max_episode_steps, cfg.keys, source)
            row[f"{source}_return"] = float(np.mean(dream["returns"]))
            row[f"{source}_success"] = float(np.mean(dream["successes"]))
        rows.append(row)
        print(f"{row['policy']}: room {row['real_return']:.2f}, "
              + ", ".join(f"{s} {row[f'{s}_return']:.2f}" for s in args.sources), file=sys.stderr, flush=True)

    print(f"\nfinal policies of {args.policies} (latent observations), {args.episodes} layouts each, model {args.model}; "
          "mean return (success):", file=sys.stderr)
    print(f"{'policy':<14}{'room':>14}" + "".join(f"{s:>20}" for s in args.sources), file=sys.stderr)
    for row in rows:
        print(f"{row['policy']:<14}{row['real_return']:>7.2f} ({row['real_success']:.2f})"
              + "".join(f"{row[f'{s}_return']:>13.2f} ({row[f'{s}_success']:.2f})" for s in args.sources), file=sys.stderr)
    # per source: how far the dream's judgement of the policies is from the room's
    summary = {}
    for source in args.sources:
        gap = [abs(r[f"{source}_return"] - r["real_return"]) for r in rows]
        by_world = {w: float(np.mean([r[f"{source}_return"] for r in rows if r["trained_in"] == w]))
                    for w in ("real", "dream") if any(r["trained_in"] == w for r in rows)}
        summary[source] = {"mean_abs_gap_to_room": float(np.mean(gap)), "mean_return_by_training": by_world}
        print(f"{source}: mean |dream - room| {np.mean(gap):.2f}; mean return of the policies trained in "
              + ", ".join(f"{w} {v:.2f}" for w, v in by_world.items()), file=sys.stderr)
    room = {w: float(np.mean([r["real_return"] for r in rows if r["trained_in"] == w]))
            for w in ("real", "dream") if any(r["trained_in"] == w for r in rows)}
    result = {"benchmark": "latent_source", "model": args.model, "policies": str(args.policies), "quick": args.quick,
              "episodes": args.episodes, "max_episode_steps": args.max_episode_steps, "sources": args.sources,
              "rows": rows, "summary": summary,
              "room_return_by_training": room, "seconds": time.perf_counter() - t0, "machine": machine_info()}
    result = rounded(result)
    write_result(result, args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
