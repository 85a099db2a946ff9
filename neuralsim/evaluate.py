"""``neuralsim eval``: evaluations that need the RL side (policy transfer from dream to real)."""

from __future__ import annotations

import argparse


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="evaluation", metavar="EVALUATION", required=True)
    t = sub.add_parser("transfer", help="PPO trained in the dream vs in the real room, evaluated in the real room",
                       description="Train SB3 PPO only in SanaWM-v0 and, with the same budget, directly in "
                                   "NeuralSimRoom-v0; evaluate both and a random policy in the real room.")
    from neuralsim.agents.transfer import add_transfer_arguments

    add_transfer_arguments(t)


def run_eval(args: argparse.Namespace) -> int:
    from neuralsim.agents.transfer import run_transfer

    return run_transfer(args)
