"""The ``neuralsim`` command line: ``info | collect | train | rollout | play | bench | eval``.

Each subcommand is a thin layer over the library: argument parsing and validation here, the work
in the module that owns it (``data``, ``train``, ``rollout``, ...), imported only when the
subcommand runs so ``neuralsim --help`` is instant.

Errors the user can fix (a bad option or file, a full disk, a batch that does not fit in memory) end the command
with one ``neuralsim CMD: error: ...`` line and exit code 2, and an ``--out`` this run created but wrote nothing
into is removed again: :func:`user_error_message` is the one place that decides which. Anything else is a bug
and keeps its traceback; ``NEURALSIM_TRACEBACK=1`` shows the traceback of a user error too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from neuralsim import __version__
from neuralsim.limits import MAX_SEED


class CLIError(Exception):
    """A usage error reported as ``neuralsim <cmd>: error: ...`` with exit code 2."""


def user_error_message(exc: BaseException, args: argparse.Namespace | None = None) -> str | None:
    """The one-line ``error:`` message for an exception the user can fix, or ``None`` for a bug.

    User errors: :class:`CLIError`; ``ValueError`` / ``TypeError`` (the library's checks of options, files and
    configs, e.g. ``DatasetError``, ``TrainingError``, ``InputError``, an unknown preset or ``--set`` field);
    a full disk (``ENOSPC``/``EDQUOT``, named by the file being written); and running out of memory.
    """
    import errno

    if isinstance(exc, (CLIError, ValueError, TypeError)):
        return " ".join(str(exc).split()) or type(exc).__name__
    out = getattr(args, "out", None)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        where = repr(exc.filename) if exc.filename else (f"into --out {out!r}" if out else "a file")
        return (f"no space left on the device while writing {where} ({exc.strerror}); free some space or write "
                "elsewhere" + (", then run again with --resume" if out and getattr(args, "command", "") in
                               ("collect", "train") else ""))
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and (
            type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(exc))):
        hint = "; try a smaller --batch-size" if hasattr(args, "batch_size") else ""
        return f"out of memory ({type(exc).__name__}: {' '.join(str(exc).split())[:200] or 'no details'}){hint}"
    return None


def _new_dirs(path: str | Path | None) -> Path | None:
    """The topmost of ``path`` and its ancestors that does not exist yet (what a mkdir -p would create)."""
    if not path:
        return None
    p = Path(path).absolute()
    if p.exists() or p.is_symlink():
        return None
    while not p.parent.exists() and p.parent != p.parent.parent:
        p = p.parent
    return p


#: Files a run makes before any work and that hold none: a dataset writer's lock (``neuralsim.data.LOCK``, empty).
_NO_WORK_FILES = {".neuralsim.lock"}


def _is_locked(file: Path) -> bool:
    """True when another process holds the ``flock`` on ``file``."""
    try:
        import fcntl
    except ImportError:
        return False
    fd = os.open(file, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _remove_if_empty(top: Path | None) -> None:
    """Remove ``top`` if it holds nothing but empty directories (and empty lock files): files may hold work."""
    if top is None or not top.is_dir() or top.is_symlink():
        return
    markers = []
    for root, dirs, files in os.walk(top):
        for name in files:
            file = Path(root, name)
            if name not in _NO_WORK_FILES or file.is_symlink() or file.stat().st_size or _is_locked(file):
                return  # work, or a lock another live run holds
            markers.append(file)
        if any(Path(root, d).is_symlink() for d in dirs):
            return
    for file in markers:
        file.unlink()
    for root, _, _ in sorted(os.walk(top), key=lambda entry: -len(Path(entry[0]).parts)):
        os.rmdir(root)


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {value}")
        return value

    return parse


def _nonneg_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a non-negative integer, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{name} must be a non-negative integer, got {value}")
        return value

    return parse


def writable_dir(path: str | Path, option: str) -> Path:
    """:func:`neuralsim.checkpoints.ensure_writable_dir` raising :class:`CLIError`."""
    from neuralsim.checkpoints import ensure_writable_dir

    return ensure_writable_dir(path, option, CLIError)


def writable_file(path: str | Path, option: str, suffixes: Sequence[str]) -> Path:
    """:func:`neuralsim.checkpoints.ensure_writable_file` raising :class:`CLIError`."""
    from neuralsim.checkpoints import ensure_writable_file

    return ensure_writable_file(path, option, suffixes, CLIError)


# --------------------------------------------------------------------------------------------- info


def cpu_capability() -> str:
    """Alias of :func:`neuralsim.device.cpu_capability` (imported lazily: torch is heavy)."""
    from neuralsim.device import cpu_capability as capability

    return capability()


def native_bf16() -> bool:
    """True when bf16 matmuls run natively on the default device: :func:`neuralsim.device.bf16_is_native`."""
    from neuralsim.device import bf16_is_native

    return bf16_is_native()


def run_info(args: argparse.Namespace) -> int:
    import importlib.metadata as md

    import torch

    if args.preset:
        from neuralsim.model import describe

        from neuralsim.config import WorldModelConfig

        try:
            config = WorldModelConfig.from_preset(args.preset)
        except ValueError as exc:
            raise CLIError(f"--preset {args.preset!r}: {exc}") from None
        facts = describe(config)
        print(json.dumps(facts, indent=2) if args.json else _format_facts(facts))
        return 0

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    from neuralsim.checkpoints import available_models

    facts = {
        "neuralsim": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": version("numpy"),
        "gymnasium": version("gymnasium"),
        "stable-baselines3": version("stable-baselines3"),
        "safetensors": version("safetensors"),
        "mujoco (extra [mujoco])": version("mujoco"),
        "diffusers (extra [sana])": version("diffusers"),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "cpu_capability": cpu_capability(),
        "bf16_native": native_bf16(),
        "models": available_models(),
    }
    print(json.dumps(facts, indent=2) if args.json else _format_facts(facts))
    return 0


def _format_facts(facts: dict, indent: int = 0) -> str:
    lines = []
    for key, value in facts.items():
        if isinstance(value, dict):
            lines.append(" " * indent + f"{key}:")
            lines.append(_format_facts(value, indent + 2))
        else:
            lines.append(" " * indent + f"{key:<26}{'' if value is None else value}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- bench


BENCHMARKS = ("throughput", "model_step", "room_speed", "fidelity", "long_rollout", "soak", "preset_2p6b", "transfer")


def _benchmarks_dir() -> Path:
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


def run_bench(args: argparse.Namespace) -> int:
    directory = _benchmarks_dir()
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


# --------------------------------------------------------------------------------------------- parser


class _LazySubParsers(argparse._SubParsersAction):
    """Subcommands whose arguments are added only when that subcommand is parsed.

    The argument-adding functions live in the modules that do the work (``neuralsim.train`` imports
    torch, ``neuralsim.evaluate`` gymnasium's RL side, ...); importing them all for ``neuralsim --help``
    took ~2 s. A subparser registered with :func:`_lazy` imports its module on first use instead.
    """

    def __call__(self, parser, namespace, values, option_string=None):
        _load(self._name_parser_map.get(values[0]))
        super().__call__(parser, namespace, values, option_string)


def _lazy(p: argparse.ArgumentParser, module: str, add_arguments: str, run: str) -> None:
    """Defer ``module.add_arguments(p)`` and ``p.set_defaults(func=module.run)`` until ``p`` is used."""
    p._neuralsim_pending = (module, add_arguments, run)  # type: ignore[attr-defined]


def _load(p: argparse.ArgumentParser | None) -> None:
    pending = getattr(p, "_neuralsim_pending", None)
    if pending is None:
        return
    import importlib

    module_name, add_arguments, run = pending
    module = importlib.import_module(module_name)
    getattr(module, add_arguments)(p)
    p.set_defaults(func=getattr(module, run))
    del p._neuralsim_pending  # type: ignore[union-attr]


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

    p = sub.add_parser("info", help="versions, device, bf16 support, available models (or --preset NAME facts)",
                       description="Print versions, device, bf16 support and the available models. "
                                   "With --preset NAME: parameter count per component and bf16 weight memory of a preset.")
    p.add_argument("--preset", help="describe a model preset (e.g. default, paper-2.6b) instead")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_info)

    p = sub.add_parser("collect", help="record rollouts of a Gymnasium env into a dataset (safetensors shards)",
                       description="Record frames, actions, rewards and episode ends of any pixel Gymnasium env into "
                                   "safetensors shards + manifest.json. Resumable after a crash with --resume.")
    _lazy(p, "neuralsim.data", "add_collect_arguments", "run_collect")

    p = sub.add_parser("train", help="train the autoencoder, the dynamics model, or both",
                       description="Train a world model on a dataset made by `neuralsim collect`. Checkpoints are written "
                                   "atomically to --out; --resume continues from the last one with the same data order. "
                                   "Runs under `torchrun --nproc-per-node N` with DDP.")
    _lazy(p, "neuralsim.train", "add_train_arguments", "run_train")

    p = sub.add_parser("rollout", help="dream: roll a world model out to a GIF/MP4, or write dream episodes as a dataset",
                       description="Roll out a world model from a real start frame, an image file or a prompt, driven by "
                                   "a key-DSL action string or a policy. --out FILE.gif|.mp4 writes a video; --out DIR with "
                                   "--episodes N writes dream episodes in the `collect` shard format.")
    _lazy(p, "neuralsim.rollout", "add_rollout_arguments", "run_rollout")

    p = sub.add_parser("play", help="drive a dream live with the keyboard (pygame window), record it, log the keys",
                       description="Open a window on a dream (side by side with the real env the model came from, if "
                                   "any) and drive it with the keyboard: w/s/a/d/i/k/j/l in camera worlds, number keys "
                                   "in Discrete worlds, arrows in other Box worlds. --record FILE.mp4|.gif records it; "
                                   "--log FILE saves the actions as a key-DSL string that `neuralsim rollout --actions` "
                                   "replays exactly (same --seed). Needs the [play] extra (pygame-ce).")
    _lazy(p, "neuralsim.play", "add_play_arguments", "run_play")

    p = sub.add_parser("bench", help="run a benchmark script (benchmarks/NAME.py), --quick for the short variant",
                       description="Run benchmarks from a source checkout. Each prints a table and a JSON line and writes "
                                   "benchmarks/results/NAME.json.")
    p.add_argument("name", choices=BENCHMARKS + ("all",), help="which benchmark")
    p.add_argument("--quick", action="store_true", help="the ~1 minute variant")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="arguments passed to the script")
    p.set_defaults(func=run_bench)

    p = sub.add_parser("eval", help="evaluations: policy transfer from dream to real",
                       description="`neuralsim eval transfer`: train PPO in the dream and in the real room with the same "
                                   "budget, evaluate both (and a random policy) in the real room.")
    _lazy(p, "neuralsim.evaluate", "add_eval_arguments", "run_eval")
    for name, p in sub.choices.items():
        if name != "bench":  # bench passes --threads on to its script
            p.add_argument("--threads", type=_positive_int("--threads"), default=None,
                           help="torch CPU threads (default: $OMP_NUM_THREADS if set, else half the CPUs, 1 to 4; "
                                "see neuralsim.runtime)")
    if not lazy:
        for p in sub.choices.values():
            _load(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from neuralsim.runtime import quiet_headless_sdl, set_thread_defaults

    quiet_headless_sdl()  # before anything imports pygame (play, classic-control renderers in collect)
    parser = build_parser()
    args = parser.parse_args(argv)
    created = _new_dirs(getattr(args, "out", None))  # what a failed run may have made and must not leave
    try:
        seed = getattr(args, "seed", None)
        if isinstance(seed, int) and not 0 <= seed <= MAX_SEED:  # every subcommand's --seed, in one place
            raise CLIError(f"--seed must be an integer in [0, {MAX_SEED}], got {seed}")
        if args.command != "bench":  # benchmarks take their own --threads
            try:
                set_thread_defaults(getattr(args, "threads", None))
            except ValueError as exc:  # a bad NEURALSIM_NUM_THREADS
                raise CLIError(str(exc)) from None
        status = int(args.func(args) or 0)
        if status == 2:  # a subcommand that printed its own error line
            _remove_if_empty(created)
        return status
    except Exception as exc:  # the one place that turns a user's error into one line and exit code 2
        message = user_error_message(exc, args)
        if message is None or os.environ.get("NEURALSIM_TRACEBACK") == "1":
            raise
        _remove_if_empty(created)
        parser.exit(2, f"neuralsim {args.command}: error: {message}\n")
    except KeyboardInterrupt:
        print(f"neuralsim {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
