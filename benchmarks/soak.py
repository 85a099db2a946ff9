"""Soak test: a ``WorldModelVectorEnv`` of 16 envs for 10,000 steps with random actions and autoresets.

What one run checks (issue 10, reliability):

- **NaN/inf**: counted in every observation (float latents with ``--obs-type latent``; uint8 rgb
  frames cannot hold one, their latents are guarded by the model), every reward and every predicted
  termination probability (must be 0). The model itself raises ``FloatingPointError`` on a non-finite
  latent, reward, termination or recurrent state: that is counted as an error, the batch is reset and
  the soak goes on.
- **Errors**: any exception from ``step``/``reset``, by type (must be 0).
- **Memory**: resident set size after the warm-up steps (which include a first round of autoresets, so
  every code path has run once) and at the end (``psutil`` if installed, else
  ``/proc/self/status`` VmRSS), sampled along the way; drift % = (end − start) / start. A world
  model with a constant-size state should not grow (target: |drift| < 5 %).
- **Autoresets**: episodes end by the step limit (``--max-episode-steps``) or predicted termination
  and restart on the next step (NEXT_STEP), so resets are soaked too.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/soak.py --quick --random-weights    # ~1 minute: 500 steps
    python benchmarks/soak.py                                               # 10,000 steps, the shipped default
    python benchmarks/soak.py --model path/to/checkpoint --num-envs 16

``--model`` is a checkpoint directory or a shipped name (default "default"; while it is not shipped,
or with ``--random-weights``, the "default" preset with seeded random weights is saved to a temp dir
and loaded like a checkpoint). Prints a table; the last line is one JSON object, also written to
benchmarks/results/soak.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_info, prepare_model, rounded, set_threads, write_result  # noqa: E402

TARGETS = {"nonfinite": 0, "errors": 0, "rss_drift_pct": 5.0}


def rss_bytes() -> int:
    """Resident set size of this process now: psutil if installed, else VmRSS from /proc/self/status."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    raise RuntimeError("cannot measure RSS: install psutil (no /proc/self/status here)")


def nonfinite(x: np.ndarray) -> int:
    x = np.asarray(x)
    return int(np.size(x) - np.isfinite(x).sum()) if x.dtype.kind in "fc" else 0


def soak(path: str, *, num_envs: int, steps: int, warmup: int, max_episode_steps: int, obs_type: str, seed: int,
         samples: int = 10) -> dict:
    from neuralsim.envs import WorldModelVectorEnv

    envs = WorldModelVectorEnv(num_envs, model=path, obs_type=obs_type, max_episode_steps=max_episode_steps,
                               dtype="float32")
    envs.action_space.seed(seed)
    obs, _ = envs.reset(seed=seed)
    counts = {"obs": nonfinite(obs), "reward": 0, "termination_prob": 0}
    errors: Counter[str] = Counter()
    episodes, rss_trace = 0, []
    sample_every = max(1, (steps - warmup) // samples)
    rss_start = rss_bytes()
    t_start = None
    for t in range(steps):
        if t == warmup:
            rss_start = rss_bytes()
            rss_trace.append((t, rss_start))
            t_start = time.perf_counter()
        try:
            obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
        except Exception as exc:  # noqa: BLE001  (a soak counts errors and goes on)
            errors[type(exc).__name__] += 1
            print(f"step {t}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            envs.reset(seed=seed + t)
            continue
        counts["obs"] += nonfinite(obs)
        counts["reward"] += nonfinite(reward)
        counts["termination_prob"] += nonfinite(info["termination_prob"])
        episodes += int(np.sum(terminated | truncated))
        if t > warmup and (t - warmup) % sample_every == 0:
            rss_trace.append((t, rss_bytes()))
    seconds = time.perf_counter() - t_start if t_start is not None else float("nan")
    rss_end = rss_bytes()
    rss_trace.append((steps, rss_end))
    envs.close()
    timed = steps - warmup
    return {
        "num_envs": num_envs, "steps": steps, "warmup_steps": warmup, "max_episode_steps": max_episode_steps,
        "obs_type": obs_type, "env_steps": num_envs * steps, "episodes_ended": episodes,
        "nonfinite": counts, "nonfinite_total": sum(counts.values()), "errors": dict(errors),
        "errors_total": sum(errors.values()), "seconds": seconds, "env_steps_per_s": num_envs * timed / seconds,
        "rss_start_mb": rss_start / 2**20, "rss_end_mb": rss_end / 2**20,
        "rss_max_mb": max(r for _, r in rss_trace) / 2**20,
        "rss_drift_pct": 100.0 * (rss_end - rss_start) / rss_start,
        "rss_trace_mb": [[t, r / 2**20] for t, r in rss_trace],
    }


def print_table(name: str, r: dict, targets: dict) -> None:
    rows = [
        ("model", name),
        ("envs x steps", f"{r['num_envs']} x {r['steps']} ({r['warmup_steps']} warm-up)"),
        ("env-steps/s", f"{r['env_steps_per_s']:.1f}"),
        ("episodes ended (autoresets)", f"{r['episodes_ended']}"),
        ("NaN/inf obs / reward / term.", f"{r['nonfinite']['obs']} / {r['nonfinite']['reward']} / "
                                         f"{r['nonfinite']['termination_prob']}"),
        ("errors", f"{r['errors_total']} {r['errors'] or ''}".strip()),
        ("RSS after warm-up / end / max", f"{r['rss_start_mb']:.1f} / {r['rss_end_mb']:.1f} / {r['rss_max_mb']:.1f} MB"),
        ("RSS drift", f"{r['rss_drift_pct']:+.2f} %"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"soak: WorldModelVectorEnv, random actions, NEXT_STEP autoresets (torch threads {torch.get_num_threads()})")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print("  targets: " + ", ".join(f"{k} {'met' if ok else 'NOT met'}" for k, ok in targets.items()))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="checkpoint directory or shipped model name (default: default)")
    parser.add_argument("--random-weights", action="store_true", help="the 'default' preset with random weights")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None, help="vector steps (default 10,000; 500 with --quick)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="steps before the RSS baseline (default: 5 %% of the steps, at least one episode + 10)")
    parser.add_argument("--max-episode-steps", type=int, default=100, help="truncation limit, so autoresets happen")
    parser.add_argument("--obs-type", default="rgb", choices=("rgb", "latent"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="about a minute: 500 steps")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/soak.json)")
    args = parser.parse_args(argv)
    steps = args.steps or (500 if args.quick else 10_000)
    warmup = args.warmup if args.warmup is not None else min(steps // 2, max(steps // 20, args.max_episode_steps + 10))
    for name, value, low in (("--num-envs", args.num_envs, 1), ("--steps", steps, 1), ("--max-episode-steps",
                             args.max_episode_steps, 1), ("--warmup", warmup, 0)):
        if value < low:
            parser.error(f"{name} must be >= {low}, got {value}")
    if warmup >= steps:
        parser.error(f"--warmup ({warmup}) must be smaller than --steps ({steps})")
    set_threads(args.threads)
    torch.manual_seed(0)  # scripts may seed globally; the envs draw from their own seeded generators

    with tempfile.TemporaryDirectory() as tmp:
        model = prepare_model(args.model, args.random_weights, Path(tmp))
        r = soak(model["path"], num_envs=args.num_envs, steps=steps, warmup=warmup,
                 max_episode_steps=args.max_episode_steps, obs_type=args.obs_type, seed=args.seed)
    targets = {"nonfinite": r["nonfinite_total"] <= TARGETS["nonfinite"], "errors": r["errors_total"] <= TARGETS["errors"],
               "rss_drift": abs(r["rss_drift_pct"]) < TARGETS["rss_drift_pct"]}
    print_table(model["name"], r, targets)
    result = {"benchmark": "soak", "model": model["name"], "random_weights": model["random_weights"], "note": model["note"],
              "quick": args.quick, "threads": torch.get_num_threads(), **r, "targets": TARGETS, "targets_met": targets,
              "machine": machine_info()}
    write_result(rounded(result), args.out or RESULTS_DIR / "soak.json")
    return result


if __name__ == "__main__":
    main()
