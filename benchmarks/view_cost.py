"""What the views around a prompted start cost: reset and step time with the view generator drawing them and without.

A model with a view generator (``config.prompt_view_channels``, ``neuralsim train views``) draws, at a reset with a
sentence, the views turned by ``config.prompt_view_yaws_deg`` from the start frame (its Euler steps, their decode and
depth), and its frame memory warps them into every decoded frame in which they may be seen. This times the same
weights in one process with ``session.draw_views`` off and on (what an env sets for latent observations), on resets
from the model's start set (real frames and their sentences, what ``SanaWM-v0`` resets from):

- ``reset_ms``: one ``WorldModelEnv`` (``dtype="auto"``) reset, median of ``--resets`` seeds;
- ``vector_reset_s``, ``step_ms``, ``env_steps_per_s``: a ``WorldModelVectorEnv`` of ``--batch`` envs (rgb
  observations, ``dtype="auto"``), its reset and the median of ``--steps`` steps under random actions.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/view_cost.py --threads 1            # batch 64, 40 steps, 20 resets
    OMP_NUM_THREADS=1 python benchmarks/view_cost.py --quick --threads 1    # about a minute

Prints a table; the last line is one JSON object, also written to benchmarks/results/view_cost.json (``--quick``:
view_cost_quick.json), with the CPU (``cpu_capability``, ``cpu_bf16``) and each row's dtype.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_standard_args, machine_info, resolve_standard_args, rounded, set_threads, write_result  # noqa: E402


def time_views(model: str, draw: bool, batch: int, steps: int, resets: int) -> dict[str, Any]:
    """One row: resets of a single env and steps of a ``batch``-env vector env, views drawn or not."""
    from neuralsim.envs import WorldModelEnv, WorldModelVectorEnv

    env = WorldModelEnv(model=model)
    env.session.draw_views = draw
    env.reset(seed=0)  # warm-up
    times = []
    for seed in range(1, resets + 1):
        t = time.perf_counter()
        env.reset(seed=seed)
        times.append(time.perf_counter() - t)
    single_dtype = str(env.session.dtype).replace("torch.", "")
    env.close()
    vec = WorldModelVectorEnv(batch, model=model, max_episode_steps=200, return_frames=False)
    vec.session.draw_views = draw
    t = time.perf_counter()
    vec.reset(seed=0)
    vector_reset = time.perf_counter() - t
    vec.action_space.seed(0)
    vec.step(vec.action_space.sample())  # warm-up
    step_times = []
    for _ in range(steps):
        t = time.perf_counter()
        vec.step(vec.action_space.sample())
        step_times.append(time.perf_counter() - t)
    vector_dtype = str(vec.session.dtype).replace("torch.", "")
    vec.close()
    step = float(np.median(step_times))
    return {"views": draw, "reset_ms": 1000 * float(np.median(times)), "reset_dtype": single_dtype, "batch": batch,
            "vector_reset_s": vector_reset, "step_ms": 1000 * step, "env_steps_per_s": batch / step,
            "step_dtype": vector_dtype}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="a model directory or 'default' (needs a view generator)")
    parser.add_argument("--batch", type=int, default=64, help="envs of the vector env (default 64)")
    parser.add_argument("--steps", type=int, default=None, help="timed vector steps (default 40; --quick 10)")
    parser.add_argument("--resets", type=int, default=None, help="timed single-env resets (default 20; --quick 5)")
    parser.add_argument("--threads", type=int, default=1)
    add_standard_args(parser, "view_cost", quick_help="10 steps, 5 resets: about a minute")
    args = resolve_standard_args(parser, parser.parse_args(argv), "view_cost")
    args.steps = (10 if args.quick else 40) if args.steps is None else args.steps
    args.resets = (5 if args.quick else 20) if args.resets is None else args.resets
    for name in ("batch", "steps", "resets"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    set_threads(args.threads)
    from neuralsim.model import WorldModel

    config = WorldModel.from_pretrained(args.model).config
    if not config.prompt_view_channels:
        raise SystemExit(f"--model {args.model!r} has no view generator (config.prompt_view_channels = 0)")
    rows = [time_views(args.model, draw, args.batch, args.steps, args.resets) for draw in (False, True)]
    off, on = rows
    print(f"views around a prompted start, model {args.model}, one env reset and {args.batch} envs stepping")
    print(f"{'views':>6s} {'reset ms':>9s} {'vector reset s':>15s} {'step ms':>8s} {'env-steps/s':>12s}")
    for r in rows:
        print(f"{'on' if r['views'] else 'off':>6s} {r['reset_ms']:9.1f} {r['vector_reset_s']:15.2f} {r['step_ms']:8.1f} "
              f"{r['env_steps_per_s']:12.0f}   ({r['reset_dtype']} / {r['step_dtype']})")
    result = {"benchmark": "view_cost", "model": args.model, "quick": args.quick, "yaws_deg": list(config.prompt_view_yaws_deg),
              "rows": rows, "reset_ratio": on["reset_ms"] / off["reset_ms"], "step_ratio": on["step_ms"] / off["step_ms"],
              "machine": machine_info()}
    write_result(rounded(result), args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
