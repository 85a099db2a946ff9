"""How far a dream's target tracker believes the target is when the dream starts, against the room's truth.

Protocol. The reward protocols of ``fidelity.py`` / ``reward_prediction.py`` (the room's default task; the explore,
sticky-random and scripted policies; held-out seeds from 1,000,000): for each episode the 16 real context frames
start a dream (``WorldModel.init_state``, as every dream starts), and the tracker's memory of the target
(``state.reward_memory[:, :2]``: forward, right in metres from the agent) is set beside the true offset of the room's
target at the last context frame (``neuralsim.reward.target_offsets``). Reported per true-range bin: the episodes,
the median ratio of believed to true range, the mean absolute range error and the median bearing error. A ratio
above 1 near the target is what makes a dream's success come late (``termination_delay_median`` in
``reward_prediction.py``): the success radius is reached in the dream only after the real agent reached it.

    python benchmarks/tracker_range.py [--model default] [--seeds 32] [--quick]

``--quick``: 8 seeds per policy. Last line: one JSON object, also written to ``benchmarks/results/<name>.json``
(default ``tracker_range``; ``--quick``: ``tracker_range_quick``).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_standard_args, machine_info, resolve_standard_args, rounded, set_threads, write_result  # noqa: E402

RANGE_BINS = ((0.0, 0.9), (0.9, 1.5), (1.5, 2.5), (2.5, float("inf")))  # metres; 0.9: the room's success radius
SEEDS = (32, 8)  # held-out seeds per policy: full, --quick


def range_errors(believed: np.ndarray, true: np.ndarray) -> list[dict[str, Any]]:
    """``believed``, ``true`` ``[N, 2]`` (forward, right) metres → one row per ``RANGE_BINS`` bin of the true range:
    ``episodes``, ``range_ratio_median`` (believed / true), ``range_abs_error_mean`` (m), ``bearing_error_median_deg``."""
    rb, rt = np.linalg.norm(believed, axis=1), np.linalg.norm(true, axis=1)
    bearing = np.degrees(np.abs(np.angle(np.exp(1j * (np.arctan2(believed[:, 1], believed[:, 0])
                                                      - np.arctan2(true[:, 1], true[:, 0]))))))
    rows = []
    for lo, hi in RANGE_BINS:
        sel = (rt >= lo) & (rt < hi)
        rows.append({"range_m": [lo, hi if np.isfinite(hi) else None], "episodes": int(sel.sum()),
                     "range_ratio_median": float(np.median(rb[sel] / rt[sel])) if sel.any() else None,
                     "range_abs_error_mean": float(np.abs(rb[sel] - rt[sel]).mean()) if sel.any() else None,
                     "bearing_error_median_deg": float(np.median(bearing[sel])) if sel.any() else None})
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="a model directory or 'default' (needs a target tracker)")
    parser.add_argument("--threads", type=int, default=2)
    add_standard_args(parser, "tracker_range", quick_help="8 seeds per policy", seeds=SEEDS,
                      seeds_what="held-out seeds per policy")
    args = parser.parse_args(argv)
    resolve_standard_args(parser, args, "tracker_range", SEEDS)
    set_threads(args.threads)
    import gymnasium as gym

    import fidelity
    import neuralsim  # noqa: F401  (registers the envs)
    from neuralsim.model import WorldModel
    from neuralsim.reward import target_offsets

    t0 = time.perf_counter()
    model = WorldModel.from_pretrained(args.model).float().eval()
    if getattr(model.reward_model, "memory_size", None) is None:
        raise SystemExit(f"--model {args.model!r} has no target tracker (config.reward_model_kind 'target')")
    cfg = model.config
    k = int(cfg.frames_per_latent)
    n_ctx = 1 + (fidelity.CONTEXT - 1) // k
    raw = 1 + (n_ctx - 1) * k
    env = gym.make("NeuralSimRoom-v0", image_size=tuple(cfg.image_size), reach_radius=1e-3).unwrapped
    reach = float(inspect.signature(type(env)).parameters["reach_radius"].default)
    believed, true = [], []
    try:
        with torch.no_grad():
            for policy in fidelity.REWARD_PROTOCOLS:
                eps = [fidelity.named_episode(policy, env, args.first_seed + i, n_ctx - 1, k, reach=reach, raw_frames=raw)
                       for i in range(args.seeds)]
                state = model.init_state(len(eps), frames=np.stack([e["raw"] for e in eps]),
                                         actions=np.stack([e["actions"] for e in eps]),
                                         prompt=[e["description"] for e in eps], generator=torch.Generator().manual_seed(0))
                believed.append(state.reward_memory[:, :2].float().numpy())
                true.append(target_offsets(torch.as_tensor(np.stack([e["poses"][-1] for e in eps])),
                                           torch.as_tensor(np.stack([e["target_positions"][-1] for e in eps]))).numpy())
    finally:
        env.close()
    rows = range_errors(np.concatenate(believed), np.concatenate(true))
    result = {"benchmark": "tracker_range", "model": args.model, "seeds_per_policy": args.seeds, "first_seed": args.first_seed,
              "policies": list(fidelity.REWARD_PROTOCOLS), "rows": rows, "seconds": time.perf_counter() - t0,
              **machine_info()}
    print(f"the tracker's belief at a dream's start vs the room ({args.seeds} seeds x {len(fidelity.REWARD_PROTOCOLS)} "
          f"policies, model {args.model})")
    print(f"{'true range (m)':<16}{'episodes':>9}{'believed/true':>15}{'|error| m':>11}{'bearing deg':>13}")
    for r in rows:
        lo, hi = r["range_m"]
        label = f"{lo}-{'inf' if hi is None else hi}"
        cells = [fidelity._f(r[key]) for key in ("range_ratio_median", "range_abs_error_mean", "bearing_error_median_deg")]
        print(f"{label:<16}{r['episodes']:>9}{cells[0]:>15}{cells[1]:>11}{cells[2]:>13}")
    result = rounded(result)
    write_result(result, args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
