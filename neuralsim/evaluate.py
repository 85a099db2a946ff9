"""``neuralsim eval``: evaluations that need the RL side (policy transfer from dream to real)."""

from __future__ import annotations

import argparse


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="evaluation", metavar="EVALUATION", required=True)
    t = sub.add_parser("transfer", help="PPO trained in the dream vs in the real room, evaluated in the real room",
                       description="Train SB3 PPO only in SanaWM-v0 and, with the same budget, directly in "
                                   "NeuralSimRoom-v0; evaluate both and a random policy in the real room.")
    t.add_argument("--model", default="default", help="world model name or checkpoint dir")
    t.add_argument("--timesteps", type=int, default=100_000, help="PPO env steps for each of dream and real")
    t.add_argument("--episodes", type=int, default=20, help="evaluation episodes per seed")
    t.add_argument("--seeds", type=int, default=3, help="training seeds")
    t.add_argument("--quick", action="store_true", help="small budgets, end to end in a few minutes")
    t.add_argument("--out", default="benchmarks/results/transfer.json")


def run_eval(args: argparse.Namespace) -> int:
    from neuralsim.cli import CLIError

    try:
        from neuralsim.agents.transfer import run_transfer
    except ImportError:
        raise CLIError("the transfer benchmark (neuralsim.agents.transfer) is not part of this version yet") from None
    return run_transfer(args)
