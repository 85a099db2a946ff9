"""``neuralsim bench NAME``: run a benchmark script of a source checkout (``benchmarks/NAME.py``)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from neuralsim.cli.errors import CLIError

BENCHMARKS = ("throughput", "model_step", "room_speed", "fidelity", "long_rollout", "soak", "preset_2p6b", "transfer")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=BENCHMARKS + ("all",), help="which benchmark")
    p.add_argument("--quick", action="store_true", help="the ~1 minute variant")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="arguments passed to the script")


def benchmarks_dir() -> Path:
    """The package's own ``benchmarks/`` (beside ``neuralsim/``); ``./benchmarks`` only when the package has none.

    Never a ``./benchmarks/NAME.py`` of the current directory ahead of the package's: ``bench`` runs code, and the
    directory a user happens to stand in must not choose it.
    """
    import neuralsim

    here = Path(neuralsim.__file__).resolve().parent.parent / "benchmarks"
    for candidate in (here, Path.cwd() / "benchmarks"):
        if candidate.is_dir():
            return candidate
    raise CLIError("benchmarks/ not found: run `neuralsim bench` from a source checkout of neuralsim")


def run(args: argparse.Namespace) -> int:
    directory = benchmarks_dir()
    names = BENCHMARKS if args.name == "all" else (args.name,)
    status = 0
    for name in names:
        script = directory / f"{name}.py"
        if not script.exists():
            print(f"neuralsim bench: {name}: {script} not present in this checkout, skipped", file=sys.stderr)
            status = status or 1
            continue
        cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else []) + list(args.extra)
        print("$ " + " ".join(cmd), flush=True)
        status = subprocess.call(cmd) or status
    return status
