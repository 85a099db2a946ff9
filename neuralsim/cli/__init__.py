"""The ``neuralsim`` command line: ``info | collect | train | rollout | play | bench | eval``.

The CLI sits above the library and nothing in the library imports it. Each subcommand is one module here
(``neuralsim.cli.collect``, ``.train``, ``.rollout``, ``.play``, ``.evaluate``, ``.info``, ``.bench``) with
``add_arguments(parser)`` and ``run(args)``: argument parsing and checks there, the work in the library module that
owns it (``neuralsim.data``, ``neuralsim.train``, ``neuralsim.rollout``, ...). A subcommand's module is imported
only when that subcommand is parsed, so ``neuralsim --help`` is instant (torch is never imported for it).

Errors the user can fix (a bad option or file, a full disk, a batch that does not fit in memory) end every
subcommand the same way, in :func:`neuralsim.cli.errors.run_command`: one ``neuralsim CMD: error: ...`` line and
exit code 2, and an ``--out`` this run created but wrote nothing into is removed again. The library reports them
with its own exceptions (``ValueError`` and its subclasses, ``TypeError``); :class:`CLIError` is for what only the
command line can get wrong. Anything else is a bug and keeps its traceback; ``NEURALSIM_TRACEBACK=1`` shows the
traceback of a user error too.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Sequence

from neuralsim import __version__
from neuralsim.cli.bench import BENCHMARKS
from neuralsim.checkpoints import ensure_writable_dir as writable_dir  # noqa: F401  (former name, re-exported)
from neuralsim.checkpoints import ensure_writable_file as writable_file  # noqa: F401  (former name, re-exported)
from neuralsim.cli.errors import CLIError, positive_int, run_command, user_error_message
from neuralsim.cli.info import cpu_capability, native_bf16

#: Subcommand -> (its module in neuralsim.cli, one-line help, description).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "info": ("info", "versions, device, bf16 support, available models (or --preset NAME facts)",
             "Print versions, device, bf16 support and the available models. "
             "With --preset NAME: parameter count per component and bf16 weight memory of a preset."),
    "collect": ("collect", "record rollouts of a Gymnasium env into a dataset (safetensors shards)",
                "Record frames, actions, rewards and episode ends of any pixel Gymnasium env into "
                "safetensors shards + manifest.json. Resumable after a crash with --resume."),
    "train": ("train", "train the autoencoder, the dynamics model, or both",
              "Train a world model on a dataset made by `neuralsim collect`. Checkpoints are written "
              "atomically to --out; --resume continues from the last one with the same data order. "
              "Runs under `torchrun --nproc-per-node N` with DDP."),
    "rollout": ("rollout", "dream: roll a world model out to a GIF/MP4, or write dream episodes as a dataset",
                "Roll out a world model from a real start frame, an image file or a prompt, driven by "
                "a key-DSL action string or a policy. --out FILE.gif|.mp4 writes a video; --out DIR with "
                "--episodes N writes dream episodes in the `collect` shard format."),
    "play": ("play", "drive a dream live with the keyboard (pygame window), record it, log the keys",
             "Open a window on a dream (side by side with the real env the model came from, if "
             "any) and drive it with the keyboard: w/s/a/d/i/k/j/l in camera worlds, number keys "
             "in Discrete worlds, arrows in other Box worlds. --record FILE.mp4|.gif records it; "
             "--log FILE saves the actions as a key-DSL string that `neuralsim rollout --actions` "
             "replays exactly (same --seed). Needs the [play] extra (pygame-ce)."),
    "bench": ("bench", "run a benchmark script (benchmarks/NAME.py), --quick for the short variant",
              "Run benchmarks from a source checkout. Each prints a table and a JSON line and writes "
              "benchmarks/results/NAME.json."),
    "eval": ("evaluate", "evaluations: policy transfer from dream to real",
             "`neuralsim eval transfer`: train PPO in the dream and in the real room with the same "
             "budget, evaluate both (and a random policy) in the real room."),
}


class _LazySubParsers(argparse._SubParsersAction):
    """Subcommands whose arguments are added only when that subcommand is parsed.

    A subcommand's module imports what its work needs (``neuralsim.train`` imports torch, ``neuralsim.agents``
    gymnasium's RL side, ...); importing them all for ``neuralsim --help`` took ~2 s.
    """

    def __call__(self, parser, namespace, values, option_string=None):
        _load(self._name_parser_map.get(values[0]))
        super().__call__(parser, namespace, values, option_string)


def _load(p: argparse.ArgumentParser | None) -> None:
    """Import ``p``'s subcommand module, add its arguments and set ``func`` to its ``run`` (once)."""
    module_name = getattr(p, "_neuralsim_module", None)
    if module_name is None:
        return
    module = importlib.import_module(f"neuralsim.cli.{module_name}")
    module.add_arguments(p)
    p.set_defaults(func=module.run)
    del p._neuralsim_module  # type: ignore[union-attr]


def build_parser(*, lazy: bool = True) -> argparse.ArgumentParser:
    """The ``neuralsim`` parser.

    Args:
        lazy: add a subcommand's arguments (importing its module) only when it is parsed, so
            ``neuralsim --help`` stays fast; ``False`` adds every subcommand's arguments now (for
            introspecting the full parser).
    """
    parser = argparse.ArgumentParser(
        prog="neuralsim",
        description="neuralsim: learn a world model of a Gymnasium env, then train agents inside it.",
    )
    parser.add_argument("--version", action="version", version=f"neuralsim {__version__}")
    parser.register("action", "parsers", _LazySubParsers)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_line, description) in COMMANDS.items():
        p = sub.add_parser(name, help=help_line, description=description)
        p._neuralsim_module = module  # type: ignore[attr-defined]
        if name != "bench":  # bench passes --threads on to its script
            p.add_argument("--threads", type=positive_int("--threads"), default=None,
                           help="torch CPU threads (default: $OMP_NUM_THREADS if set, else half the CPUs, 1 to 4; "
                                "see neuralsim.runtime)")
    if not lazy:
        for p in sub.choices.values():
            _load(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``neuralsim`` console script (and ``python -m neuralsim``): parse, run, report a user's error."""
    from neuralsim.runtime import quiet_headless_sdl

    quiet_headless_sdl()  # before anything imports pygame (play, classic-control renderers in collect)
    parser = build_parser()
    return run_command(parser, parser.parse_args(argv))


__all__ = ["main", "build_parser", "COMMANDS", "BENCHMARKS", "CLIError", "user_error_message", "writable_dir",
           "writable_file", "cpu_capability", "native_bf16"]

if __name__ == "__main__":
    raise SystemExit(main())
