"""What the termination detector costs: a vector env's step with the detector judging each decoded frame and without.

A model with a termination detector (``config.termination_detector_channels``, ``neuralsim train termination``)
decodes every step's frame and runs the detector over it (``DreamSession.judges_frames``): for rgb observations the
frame is decoded anyway and the detector's small CNN is the whole cost; for latent observations the decode (and the
frame memory's warps) come with it. This times the same weights in one process with ``session.judge_frames`` off and
on, for each observation type: a ``WorldModelVectorEnv`` of ``--batch`` envs (``dtype="auto"``), reset from the
model's start set, the median of ``--steps`` steps under random actions.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/termination_cost.py --threads 1            # batch 64, 40 steps
    OMP_NUM_THREADS=1 python benchmarks/termination_cost.py --quick --threads 1    # about a minute

Prints a table; the last line is one JSON object, also written to benchmarks/results/termination_cost.json
(``--quick``: termination_cost_quick.json), with the CPU (``cpu_capability``, ``cpu_bf16``) and each row's dtype.
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


def time_steps(model: str, obs: str, judge: bool, batch: int, steps: int) -> dict[str, Any]:
    """One row: steps of a ``batch``-env vector env with ``obs`` observations, the detector judging or not."""
    from neuralsim.envs import WorldModelVectorEnv

    vec = WorldModelVectorEnv(batch, model=model, obs_type=obs, max_episode_steps=200, return_frames=False)
    vec.session.judge_frames = judge
    vec.reset(seed=0)
    vec.action_space.seed(0)
    vec.step(vec.action_space.sample())  # warm-up
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        vec.step(vec.action_space.sample())
        times.append(time.perf_counter() - t)
    dtype = str(vec.session.dtype).replace("torch.", "")
    vec.close()
    step = float(np.median(times))
    return {"obs": obs, "judged": judge, "batch": batch, "step_ms": 1000 * step, "env_steps_per_s": batch / step,
            "dtype": dtype}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="a model directory or 'default' (needs a detector)")
    parser.add_argument("--batch", type=int, default=64, help="envs of the vector env (default 64)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row (default 40; --quick 10)")
    parser.add_argument("--threads", type=int, default=1)
    add_standard_args(parser, "termination_cost", quick_help="10 steps per row: about a minute")
    args = resolve_standard_args(parser, parser.parse_args(argv), "termination_cost")
    args.steps = (10 if args.quick else 40) if args.steps is None else args.steps
    for name in ("batch", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    set_threads(args.threads)
    from neuralsim.model import WorldModel

    if not WorldModel.from_pretrained(args.model).config.termination_detector_channels:
        raise SystemExit(f"--model {args.model!r} has no termination detector (config.termination_detector_channels = 0)")
    rows = [time_steps(args.model, obs, judge, args.batch, args.steps) for obs in ("rgb", "latent") for judge in (False, True)]
    print(f"termination detector, model {args.model}, {args.batch} envs stepping")
    print(f"{'obs':>7s} {'judged':>7s} {'step ms':>8s} {'env-steps/s':>12s}")
    for r in rows:
        print(f"{r['obs']:>7s} {'yes' if r['judged'] else 'no':>7s} {r['step_ms']:8.1f} {r['env_steps_per_s']:12.0f}"
              f"   ({r['dtype']})")
    ratio = {obs: next(r for r in rows if r["obs"] == obs and r["judged"])["step_ms"]
             / next(r for r in rows if r["obs"] == obs and not r["judged"])["step_ms"] for obs in ("rgb", "latent")}
    result = {"benchmark": "termination_cost", "model": args.model, "quick": args.quick, "rows": rows,
              "step_ratio_rgb": ratio["rgb"], "step_ratio_latent": ratio["latent"], "machine": machine_info()}
    write_result(rounded(result), args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
