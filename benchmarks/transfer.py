"""Policy transfer, dream -> real: PPO trained only in SanaWM-v0 vs trained in NeuralSimRoom-v0 with the same budget.

    python benchmarks/transfer.py [--quick] [--timesteps N] [--seeds 3] [--episodes 20] [--model default]

The same as `neuralsim eval transfer` (neuralsim.cli.evaluate over neuralsim.agents.transfer): prints the
table (mean ± std real return, success rate, training wall clock and env-steps/s per world, transfer
score, dream-vs-real agreement with Spearman's rho), the last line one JSON object, also written to
benchmarks/results/transfer.json (transfer-quick.json with --quick, which is a smoke run, not a score).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import neuralsim  # noqa: F401
from neuralsim.cli.evaluate import add_transfer_arguments, run_transfer

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_transfer_arguments(parser)
    args = parser.parse_args()
    results = Path(__file__).resolve().parent / "results"
    if args.out is None:  # next to this script, whatever the working directory
        args.out = str(results / ("transfer-quick.json" if args.quick else "transfer.json"))
    sys.exit(run_transfer(args))
