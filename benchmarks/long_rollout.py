"""Constant memory and time over a long dream: step time and RSS at steps 100, 1,000, 10,000 of one rollout.

One ``WorldModelEnv`` (batch 1, fp32, decoded rgb observations, no step limit) steps 10,000 times
with seeded random actions in a single episode. At steps 100, 1,000 and 10,000 it records the
median step time over the last 50 steps, the process RSS and the size of the streaming state;
the ratios (10,000 / 100) are the constant-memory figure (1.0 = constant). A trace every 100 steps
goes to the JSON for plots. Then a minute-scale rollout: 1,440 video frames (60 s at 24 fps;
frames = env steps x ``frames_per_latent``) timed end to end, reset included, through the path a user
takes: ``gym.make("SanaWM-v0", model=..., dtype=..., max_episode_steps=-1)`` + ``reset`` + ``step``, once per
``--dtypes`` (default: fp32, and bf16 where the CPU runs it natively; rounds interleaved with ``--repeats``),
beside what ``dtype="auto"`` picks for a single env; and the same rollout through ``neuralsim rollout``'s
``dream()`` (``--paths``), which knows the actions ahead and decodes each frame on a second thread while the
dynamics draws the next (``rollout``; the same frames), or shared with a child process (``process``, ``neuralsim
rollout --overlap process``; its start, 2-4 s, is part of the timed rollout). ``--compile`` adds the same rollouts with
``env.unwrapped.model.compile_streaming()``: the compile (the first reset + step) is timed apart
(``compile_s``) and the rollout after it. The figure: ``minute_s`` (best dtype, eager) against the
issue's target of 10 s (``targets``).

``--quick``: 1,000 steps (ratios 1,000 / 100) and a 240-frame rollout, well under a minute
(``--skip-long``: only the minute-scale rollouts).

    OMP_NUM_THREADS=1 python benchmarks/long_rollout.py --quick --threads 1
    python benchmarks/long_rollout.py [--model DIR | --random-weights] [--threads N] [--dtypes float32 bfloat16]
    python benchmarks/long_rollout.py --skip-long --repeats 2 --compile --threads 1 --paths env rollout process

Prints a table; the last line is one JSON object, also written to benchmarks/results/long_rollout.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS_DIR, bf16_native, machine_info, prepare_model, rounded, rss_bytes, set_threads,  # noqa: E402
                     write_result)

MB = 2**20


def make_env(path: str):
    from neuralsim.envs import WorldModelEnv

    return WorldModelEnv(path, max_episode_steps=None, dtype="float32")


def state_bytes(env) -> int | None:
    state = getattr(env.unwrapped, "_state", None)
    return int(state.nbytes()) if hasattr(state, "nbytes") else None


def long_rollout(path: str, steps: int, marks: list[int], window: int, trace_every: int, seed: int = 0) -> dict:
    """One episode of ``steps`` env steps; step time (median of the last ``window``) and RSS at each mark."""
    env = make_env(path)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    times = np.zeros(steps)
    points, trace, error = [], [], None
    ends = 0
    for i in range(1, steps + 1):
        action = env.action_space.sample()
        t0 = time.perf_counter()
        try:
            _, _, terminated, _, _ = env.step(action)  # no step limit; a predicted termination does not stop the dream
        except FloatingPointError as exc:  # an untrained model may diverge; report where
            error = f"step {i}: {exc}"
            break
        times[i - 1] = time.perf_counter() - t0
        ends += int(terminated)
        if i in marks or i % trace_every == 0:
            row = {"step": i, "step_ms": 1e3 * float(np.median(times[max(0, i - window):i])),
                   "rss_mb": rss_bytes() / MB, "state_bytes": state_bytes(env)}
            if i in marks:
                points.append(row)
                print(f"step {i:>6}: {row['step_ms']:.2f} ms/step (median of {window}), RSS {row['rss_mb']:.1f} MB, "
                      f"state {row['state_bytes']} B", file=sys.stderr, flush=True)
            if i % trace_every == 0:
                trace.append(row)
    env.close()
    first, last = (points[0], points[-1]) if len(points) >= 2 else (None, None)
    ratios = None if first is None else {
        "of": f"{last['step']} / {first['step']}",
        "step_time": last["step_ms"] / first["step_ms"], "rss": last["rss_mb"] / first["rss_mb"],
        "state_bytes": (last["state_bytes"] / first["state_bytes"]) if first["state_bytes"] else None,
    }
    return {"steps": steps, "window": window, "points": points, "ratios": ratios, "trace": trace,
            "predicted_terminations": ends, "error": error,
            "mean_step_ms": 1e3 * float(times[times > 0].mean()) if (times > 0).any() else None}


def make_gym_env(path: str, dtype: str):
    """The single env as a user makes it: ``gym.make("SanaWM-v0", ...)`` with no step limit, one torch thread policy
    left to the script (``num_threads=None``)."""
    import gymnasium as gym

    import neuralsim  # noqa: F401  (registers SanaWM-v0)

    return gym.make("SanaWM-v0", model=path, dtype=dtype, max_episode_steps=-1, num_threads=None)


def minute_rollout(path: str, frames: int, dtype: str = "float32", *, compile: bool = False, seed: int = 1,
                   via: str = "env") -> dict:
    """``frames // frames_per_latent`` steps from a start frame in ``dtype``, timed end to end (loading excluded).

    ``via="env"``: reset + step of a ``gym.make`` env (an agent's loop: each frame decoded before the next
    action). ``via="rollout"``: :func:`neuralsim.rollout.dream` with the same actions, what ``neuralsim rollout``
    runs: the actions are known ahead, so each frame is decoded on a second thread while the dynamics draws the
    next (:meth:`neuralsim.session.DreamSession.rollout`; the same frames as stepping). ``compile``:
    ``compile_streaming()`` first, and one step to compile it, timed as ``compile_s`` and not part of ``wall_s``."""
    from neuralsim.rollout import dream
    from neuralsim.session import DreamSession

    env = make_gym_env(path, dtype) if via == "env" else None
    session = env.unwrapped.session if env is not None else DreamSession(path, dtype=dtype, batch_size=1)
    k = session.frames_per_step
    steps = max(1, frames // k)
    rng = np.random.default_rng(seed)
    space = env.action_space if env is not None else session.action_space
    space.seed(seed)
    actions = [space.sample() for _ in range(steps)]
    start = session.start_frames[int(rng.integers(len(session.start_frames)))] if env is None else None
    compile_s = None
    if compile:
        session.model.compile_streaming()
        t0 = time.perf_counter()
        if env is not None:
            env.reset(seed=0)
            env.step(actions[0])
        else:
            dream(session, 1, start=start, actions=np.stack(actions[:1]), seed=0)
        compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if env is not None:
        env.reset(seed=int(rng.integers(2**31)))
        for a in actions:
            env.step(a)
    else:
        dream(session, steps, start=start, actions=np.stack(actions), seed=int(rng.integers(2**31)),
              overlap="process" if via == "process" else "thread")
        session.close()  # ends the child of `process` (timed: a `neuralsim rollout` ends it too)
    wall = time.perf_counter() - t0
    if compile:
        session.model.compile_streaming(False)
    if env is not None:
        env.close()
    return {"via": via, "dtype": str(session.dtype).removeprefix("torch."), "compiled": compile, "frames": steps * k,
            "env_steps": steps, "frames_per_latent": k, "wall_s": wall, "ms_per_step": 1e3 * wall / steps,
            "frames_per_s": steps * k / wall, "realtime_factor_24fps": (steps * k / 24) / wall, "compile_s": compile_s}


def minute_rollouts(path: str, frames: int, dtypes: list[str], *, repeats: int, compile: bool,
                    vias: tuple[str, ...] = ("env", "rollout")) -> list[dict]:
    """:func:`minute_rollout` for each path and dtype (and compiled, with ``compile``), rounds interleaved; per row
    the best of ``repeats`` (the CPU is shared: the least disturbed round) and every round's ``wall_s``."""
    variants = [(v, d, c) for c in ([False, True] if compile else [False]) for v in vias for d in dtypes]
    runs: dict[tuple[str, str, bool], list[dict]] = {v: [] for v in variants}
    for _ in range(repeats):
        for via, dtype, compiled in variants:
            runs[(via, dtype, compiled)].append(minute_rollout(path, frames, dtype, compile=compiled, via=via))
            r = runs[(via, dtype, compiled)][-1]
            print(f"{frames} frames, {via}, {r['dtype']}{' compiled' if compiled else ''}: {r['wall_s']:.2f} s "
                  f"({r['ms_per_step']:.2f} ms/step)" + (f", compile {r['compile_s']:.1f} s" if compiled else ""),
                  file=sys.stderr, flush=True)
    rows = []
    for rounds in runs.values():
        best = dict(min(rounds, key=lambda r: r["wall_s"]))
        best["rounds_wall_s"] = [r["wall_s"] for r in rounds]
        rows.append(best)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="checkpoint directory or shipped model name (default: default)")
    parser.add_argument("--random-weights", action="store_true", help="the 'default' preset with random weights")
    parser.add_argument("--quick", action="store_true", help="1,000 steps and a 240-frame rollout")
    parser.add_argument("--steps", type=int, default=None, help="length of the long rollout (default 10,000; quick 1,000)")
    parser.add_argument("--frames", type=int, default=None, help="frames of the timed rollout (default 1,440; quick 240)")
    parser.add_argument("--window", type=int, default=50, help="steps per step-time median")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--dtypes", nargs="+", default=None, choices=["float32", "bfloat16"],
                        help="dtypes of the minute-scale rollout (default: float32, plus bfloat16 where native)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the minute-scale rollouts (interleaved)")
    parser.add_argument("--compile", action="store_true", help="also the minute-scale rollouts with compile_streaming()")
    parser.add_argument("--skip-long", action="store_true", help="only the minute-scale rollouts")
    parser.add_argument("--paths", nargs="+", default=["env", "rollout"], choices=["env", "rollout", "process"],
                        help="minute-scale rollouts through a gym.make env's steps, neuralsim rollout's dream() "
                             "decoding on a second thread (rollout) or in a child process (process)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/long_rollout.json)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if "env" not in args.paths:
        parser.error("--paths must include env (the issue's figure is a single env's rollout)")
    steps = args.steps or (1000 if args.quick else 10000)
    frames = args.frames or (240 if args.quick else 1440)
    dtypes = args.dtypes or (["float32", "bfloat16"] if bf16_native() else ["float32"])
    marks = [m for m in (100, 1000, 10000) if m <= steps] or [steps]
    if marks[-1] != steps and steps not in marks:
        marks.append(steps)
    warnings.filterwarnings("ignore", message=".*after the episode ended.*")

    with tempfile.TemporaryDirectory() as tmp:
        model = prepare_model(args.model, args.random_weights, Path(tmp))
        long = None if args.skip_long else long_rollout(model["path"], steps, marks, args.window, trace_every=100)
        minutes = minute_rollouts(model["path"], frames, dtypes, repeats=args.repeats, compile=args.compile,
                                  vias=tuple(args.paths))
        auto = make_gym_env(model["path"], "auto")
        auto_dtype = str(auto.unwrapped.session.dtype).removeprefix("torch.")
        auto.close()

    if long is not None:
        print(f"\nlong rollout: model {model['name']}, 1 env, fp32, torch threads {torch.get_num_threads()}")
        print(f"{'step':>7s} {'ms/step':>9s} {'RSS MB':>8s} {'state B':>9s}")
        for p in long["points"]:
            print(f"{p['step']:>7d} {p['step_ms']:9.2f} {p['rss_mb']:8.1f} {p['state_bytes'] or 0:9d}")
        if long["ratios"]:
            r = long["ratios"]
            print(f"ratio {r['of']}: step time {r['step_time']:.3f}, RSS {r['rss']:.3f}, state {r['state_bytes']}")
        if long["error"]:
            print(f"stopped early: {long['error']}")
    capability = machine_info()["cpu_capability"]
    print(f"\nminute-scale rollout through gym.make('SanaWM-v0'): model {model['name']}, 1 env, torch threads "
          f"{torch.get_num_threads()}, CPU {capability} (native bf16: {bf16_native()}); dtype='auto' picks {auto_dtype}")
    print(f"{'path':>8s} {'dtype':>9s} {'compiled':>8s} {'frames':>7s} {'wall s':>8s} {'ms/step':>8s} {'frames/s':>9s} "
          f"{'compile s':>10s}")
    for m in minutes:
        print(f"{m['via']:>8s} {m['dtype']:>9s} {str(m['compiled']):>8s} {m['frames']:>7d} {m['wall_s']:8.2f} {m['ms_per_step']:8.2f} "
              f"{m['frames_per_s']:9.1f} {'' if m['compile_s'] is None else format(m['compile_s'], '.1f'):>10s}")
    eager = [m for m in minutes if not m["compiled"] and m["via"] == "env"]
    minute = min(eager, key=lambda m: m["wall_s"])  # the machine's best dtype for one env
    per_1440 = 1440 / minute["frames"] * minute["wall_s"]
    targets = {"minute_rollout_1440_s": per_1440, "minute_rollout_le_10s": per_1440 <= 10.0,
               "minute_rollout_dtype": minute["dtype"], "cpu_capability": capability}
    print(f"best eager env: {minute['dtype']}, {minute['frames']} frames in {minute['wall_s']:.2f} s "
          f"(= {per_1440:.1f} s per 1,440 frames; target <= 10 s: {'met' if per_1440 <= 10 else 'not met'})")
    # `neuralsim rollout`'s paths: the actions known ahead, decoding on a second thread or in a child process
    for via, key in (("rollout", "dream_rollout"), ("process", "process_rollout")):
        for compiled, suffix in ((False, ""), (True, "_compiled")):
            dreamed = [m for m in minutes if m["compiled"] == compiled and m["via"] == via]
            if dreamed:
                best = min(dreamed, key=lambda m: m["wall_s"])
                targets[f"{key}{suffix}_1440_s"] = 1440 / best["frames"] * best["wall_s"]
                targets[f"{key}{suffix}_le_10s"] = targets[f"{key}{suffix}_1440_s"] <= 10.0
                print(f"best {'compiled' if compiled else 'eager'} neuralsim rollout, decoding in a "
                      f"{'thread' if via == 'rollout' else 'process'}: {best['dtype']}, "
                      f"{targets[f'{key}{suffix}_1440_s']:.1f} s per 1,440 frames")
    result = {"benchmark": "long_rollout", "model": model["name"], "random_weights": model["random_weights"],
              "note": model["note"], "quick": args.quick, "threads": torch.get_num_threads(),
              "long": long, "minute": minute, "minutes": minutes, "auto_dtype": auto_dtype, "targets": targets,
              "machine": machine_info()}
    write_result(rounded(result), args.out or RESULTS_DIR / "long_rollout.json")
    return result

if __name__ == "__main__":
    main()
