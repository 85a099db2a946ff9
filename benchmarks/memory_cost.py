"""What each real frame the frame memory holds costs: ``step`` + ``decode`` time after a clip of real context frames.

``config.frame_memory_frames = K`` keeps K real context frames (the last, the first and others spread between them,
``neuralsim.frame_memory.memory_frame_indices``); each is one more depth-net pass when the dream starts and one more
warp per decoded frame while the camera is within its range. This times the same weights at each K in one process,
interleaved (K = 1, 2, ... then again), on a clip of ``--context`` real room frames (the first frames of as many
rooms, noise where MuJoCo is absent: the time does not depend on the pixels), its actions turning in place, then ``--steps`` dream steps turning in place
(the worst case: a camera that does not walk stays in range of every held frame, so no warp is skipped).

Columns, per batch size and K: ``init_ms`` (``init_state`` on the clip: encode, one pass over the context, the held
frames' depths), ``step_ms`` (median of ``step`` + ``decode(context=state)``, the rgb env's per-step work).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/memory_cost.py --threads 1            # batch 1 and 64, K = 1..4
    OMP_NUM_THREADS=1 python benchmarks/memory_cost.py --quick --threads 1    # about a minute

Prints a table; the last line is one JSON object, also written to benchmarks/results/memory_cost.json (``--quick``:
memory_cost_quick.json). A reported figure names the CPU (``cpu_capability``, ``cpu_bf16``) and dtype (fp32).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (add_standard_args, load_memory_model, machine_info, resolve_standard_args,  # noqa: E402
                     room_frames, rounded, set_threads, write_result)

TURN = 0.5  # the yaw command of every step, context and dream (no translation: every held frame stays in range)


def time_memory(model: Any, frames: np.ndarray, held: int, steps: int, seed: int = 0) -> dict[str, float]:
    """``init_ms`` and the median ``step_ms`` of ``model`` holding ``held`` frames, started from ``frames``
    ``[B, T, H, W, 3]`` turning in place."""
    model.config = model.config.replace(frame_memory_frames=held)  # validated; no weight reads it
    B, T = frames.shape[:2]
    turn = np.zeros((B, 4), np.float32)
    turn[:, 2] = TURN
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        t0 = time.perf_counter()
        state = model.init_state(B, frames=frames, actions=np.repeat(turn[:, None], T - 1, axis=1), generator=g)
        init = time.perf_counter() - t0
        times = []
        for _ in range(steps + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            latent, state = model.step(state, turn, generator=g)
            model.decode(latent[:, None], first_frame=False, context=state)
            times.append(time.perf_counter() - t0)
    return {"init_ms": 1e3 * init, "step_ms": 1e3 * float(np.median(times[1:]))}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="a model directory or 'default' (needs a frame memory)")
    parser.add_argument("--frames", type=int, nargs="+", default=None, help="K values (default 1 2 3 4; --quick 1 3)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--context", type=int, default=16, help="real context frames of the clip (default 16)")
    parser.add_argument("--steps", type=int, default=None, help="timed dream steps per row (default 40 at batch 1, "
                        "8 at 64; --quick a quarter)")
    parser.add_argument("--repeats", type=int, default=None, help="passes over every K, interleaved (default 2; --quick 1)")
    parser.add_argument("--threads", type=int, default=1)
    add_standard_args(parser, "memory_cost", quick_help="K = 1 and 3, one pass, fewer steps (about a minute)")
    args = parser.parse_args(argv)
    resolve_standard_args(parser, args, "memory_cost")
    frames_list = args.frames or ([1, 3] if args.quick else [1, 2, 3, 4])
    repeats = args.repeats or (1 if args.quick else 2)
    for name, values in (("--frames", frames_list), ("--batch", args.batch), ("--context", [args.context]),
                         ("--repeats", [repeats]), ("--steps", [args.steps or 1])):
        if min(values) < 1:
            parser.error(f"{name} must be >= 1, got {values}")
    set_threads(args.threads)
    t_start = time.perf_counter()
    model = load_memory_model(args.model)
    clip, _ = room_frames(args.context, tuple(model.config.image_size))  # [T, H, W, 3]: the time ignores the pixels
    rows = []
    for batch in args.batch:
        frames = np.repeat(clip[None], batch, axis=0)
        steps = args.steps or max(2, (40 if batch == 1 else 8) // (4 if args.quick else 1))
        runs: dict[int, list[dict[str, float]]] = {k: [] for k in frames_list}
        for _ in range(repeats):
            for k in frames_list:
                runs[k].append(time_memory(model, frames, k, steps))
        for k in frames_list:
            rows.append({"batch": batch, "memory_frames": k, "steps": steps,
                         "init_ms": min(r["init_ms"] for r in runs[k]), "step_ms": min(r["step_ms"] for r in runs[k])})
    print(f"frame memory cost (model {args.model}, fp32, {args.context}-frame clip, turning in place; best of "
          f"{repeats} interleaved passes)")
    print(f"{'batch':>6}{'frames held':>13}{'init ms':>10}{'step+decode ms':>16}{'vs 1 frame':>12}")
    base = {r["batch"]: r["step_ms"] for r in rows if r["memory_frames"] == frames_list[0]}
    for r in rows:
        r["step_vs_first"] = r["step_ms"] / base[r["batch"]]
        print(f"{r['batch']:>6}{r['memory_frames']:>13}{r['init_ms']:>10.1f}{r['step_ms']:>16.2f}"
              f"{r['step_vs_first']:>11.2f}x")
    result = rounded({"benchmark": "memory_cost", "model": args.model, "dtype": "float32", "context": args.context,
                      "quick": args.quick, "rows": rows, "seconds": time.perf_counter() - t_start, **machine_info()})
    write_result(result, args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
