"""The termination detector as a judge of real frames: success F1 on many real frames of new rooms.

A dream's success is judged by the model's termination detector (``neuralsim.reward.TerminationDetector``) reading
the dream's decoded frames; a judge that misreads the *real* frames bounds what any dream can score
(``benchmarks/reward_prediction.py``'s ``termination_f1_real_frames`` reads only its 96 benchmark episodes). This
benchmark collects real episodes of NeuralSimRoom-v0's default task in rooms apart from the data's and the other
benchmarks' seeds, under the sticky-random, scripted, seek and explore policies, each with the ball thrown and at
rest, and scores the detector on every frame after a step (fired: logit > 0, the threshold fitted into the model)
against the room's own success test on that step. Per policy, per ball start and pooled: F1, precision, recall,
positives.

    OMP_NUM_THREADS=1 python benchmarks/detector_real_frames.py [--model DIR] [--episodes 200]
    OMP_NUM_THREADS=1 python benchmarks/detector_real_frames.py --quick        # 24 episodes per set (about a minute)

Needs a model with a termination detector. Prints a table; the last line is one JSON object, also written to
``benchmarks/results/detector_real_frames.json`` (``--quick``: ``detector_real_frames_quick.json``; ``--name``,
``--results-dir`` to change).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_standard_args, machine_info, resolve_standard_args, rounded, set_threads, write_result  # noqa: E402

EPISODES = (200, 24)  # episodes per (policy, ball start): full, --quick
POLICIES = ("sticky", "scripted", "seek", "explore")
BALL_STARTS = ("thrown", "rest")
FIRST_SEED = 5_200_000  # apart from the data (below 1,000,000 and the recipe's millions) and the dream benchmarks'
MAX_STEPS = 64  # the recipe's real detector data's episode length: most successes come early or not at all


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="checkpoint directory or shipped name")
    parser.add_argument("--episodes", type=int, default=None,
                        help=f"episodes per policy and ball start (default {EPISODES[0]}; --quick {EPISODES[1]})")
    parser.add_argument("--first-seed", type=int, default=FIRST_SEED, help=f"the first room seed (default {FIRST_SEED:,})")
    parser.add_argument("--threads", type=int, default=None)
    add_standard_args(parser, "detector_real_frames", quick_help=f"{EPISODES[1]} episodes per set")
    args = parser.parse_args(argv)
    resolve_standard_args(parser, args, "detector_real_frames")
    args.episodes = args.episodes if args.episodes is not None else EPISODES[1 if args.quick else 0]
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    return args


def f1_row(fired: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """F1, precision and recall of ``fired`` against ``truth`` (bool arrays), with the counts."""
    hits = int((fired & truth).sum())
    return {"f1": 2 * hits / max(int(fired.sum()) + int(truth.sum()), 1),
            "precision": hits / max(int(fired.sum()), 1), "recall": hits / max(int(truth.sum()), 1),
            "positives": int(truth.sum()), "fired": int(fired.sum()), "frames": int(len(truth))}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    from neuralsim.data import Dataset
    from neuralsim.data.collection import collect
    from neuralsim.model import WorldModel
    from neuralsim.train import TerminationPool

    t0 = time.perf_counter()
    model = WorldModel.from_pretrained(args.model).float().eval()
    detector = model.termination_detector
    if detector is None:
        raise SystemExit(f"--model {args.model!r} has no termination detector (`neuralsim train termination` adds one)")
    size = tuple(model.config.image_size)
    sets: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for p, policy in enumerate(POLICIES):
            for b, ball_start in enumerate(BALL_STARTS):
                seed = args.first_seed + (p * len(BALL_STARTS) + b) * 100_000  # every set its own rooms
                out = Path(tmp) / f"{policy}_{ball_start}"
                collect("NeuralSimRoom-v0", out, args.episodes, policy=policy, seed=seed, max_steps=MAX_STEPS,
                        image_size=size, env_kwargs={"ball_start": ball_start}, progress=False)
                frames, labels = TerminationPool.real_frames(Dataset(out))
                logits = torch.cat([detector(frames[k : k + 512]).float() for k in range(0, len(frames), 512)])
                sets[(policy, ball_start)] = {"fired": (logits > 0).numpy(), "truth": labels.numpy()}

    def pooled(keys: list[tuple[str, str]]) -> dict[str, Any]:
        return f1_row(np.concatenate([sets[k]["fired"] for k in keys]), np.concatenate([sets[k]["truth"] for k in keys]))

    rows = {f"{policy}/{ball}": f1_row(**sets[(policy, ball)]) for policy in POLICIES for ball in BALL_STARTS}
    by_policy = {policy: pooled([(policy, ball) for ball in BALL_STARTS]) for policy in POLICIES}
    by_ball = {ball: pooled([(policy, ball) for policy in POLICIES]) for ball in BALL_STARTS}
    everything = pooled(list(sets))

    print(f"termination detector of {args.model} on real frames ({args.episodes} episodes of up to {MAX_STEPS} steps "
          f"per set, rooms from seed {args.first_seed:,})")
    print(f"{'set':<20} {'F1':>6} {'prec':>6} {'recall':>6} {'ends':>6} {'fired':>6} {'frames':>8}")
    for name, row in [*rows.items(), *by_policy.items(), *by_ball.items(), ("all", everything)]:
        print(f"{name:<20} {row['f1']:6.3f} {row['precision']:6.3f} {row['recall']:6.3f} {row['positives']:6d} "
              f"{row['fired']:6d} {row['frames']:8d}")
    result = {
        "benchmark": "detector_real_frames", "model": args.model, "quick": args.quick, "episodes": args.episodes,
        "first_seed": args.first_seed, "max_steps": MAX_STEPS,
        "f1": everything["f1"], "precision": everything["precision"], "recall": everything["recall"],
        "positives": everything["positives"], "frames": everything["frames"],
        **{f"f1_{policy}": row["f1"] for policy, row in by_policy.items()},
        **{f"f1_{ball}": row["f1"] for ball, row in by_ball.items()},
        "sets": rows, "seconds": time.perf_counter() - t0, "machine": machine_info(),
    }
    result = rounded(result)
    write_result(result, args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
