"""How every ``neuralsim`` subcommand ends on a user's error: one ``neuralsim CMD: error: ...`` line, exit code 2.

The library raises its own exceptions (``ValueError`` and its subclasses ``DatasetError``, ``TrainingError``,
``InputError``; ``TypeError``; ``FileNotFoundError`` for a missing checkpoint); the subcommand modules raise
:class:`CLIError` for what only the command line can get wrong (an option's value, a combination of options).
:func:`run_command` is the one place that turns either into the error line and exit code 2, and removes an
``--out`` this run created but wrote nothing into; :func:`user_error_message` decides what is the user's error.
Anything else is a bug and keeps its traceback; ``NEURALSIM_TRACEBACK=1`` shows the traceback of a user error too.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from neuralsim.limits import MAX_SEED


class CLIError(Exception):
    """A usage error reported as ``neuralsim <cmd>: error: ...`` with exit code 2."""


def user_error_message(exc: BaseException, args: argparse.Namespace | None = None) -> str | None:
    """The one-line ``error:`` message for an exception the user can fix, or ``None`` for a bug.

    User errors: :class:`CLIError`; ``ValueError`` / ``TypeError`` (the library's checks of options, files and
    configs, e.g. ``DatasetError``, ``TrainingError``, ``InputError``, an unknown preset or ``--set`` field);
    a full disk (``ENOSPC``/``EDQUOT``, named by the file being written); and running out of memory.
    """
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


def run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the parsed subcommand ``args.func(args)``; a user's error ends it with one line and exit code 2.

    Also checks what every subcommand shares: ``--seed`` in ``[0, MAX_SEED]`` and the thread count
    (``--threads`` / ``NEURALSIM_NUM_THREADS``; ``bench`` passes its ``--threads`` on to the script).
    """
    from neuralsim.runtime import set_thread_defaults

    created = new_dirs(getattr(args, "out", None))  # what a failed run may have made and must not leave
    try:
        seed = getattr(args, "seed", None)
        if isinstance(seed, int) and not 0 <= seed <= MAX_SEED:  # every subcommand's --seed, in one place
            raise CLIError(f"--seed must be an integer in [0, {MAX_SEED}], got {seed}")
        if args.command != "bench":  # benchmarks take their own --threads
            try:
                set_thread_defaults(getattr(args, "threads", None))
            except ValueError as exc:  # a bad NEURALSIM_NUM_THREADS
                raise CLIError(str(exc)) from None
        return int(args.func(args) or 0)
    except Exception as exc:  # the one place that turns a user's error into one line and exit code 2
        message = user_error_message(exc, args)
        if message is None or os.environ.get("NEURALSIM_TRACEBACK") == "1":
            raise
        remove_if_empty(created)
        parser.exit(2, f"neuralsim {args.command}: error: {message}\n")
    except KeyboardInterrupt:
        print(f"neuralsim {args.command}: interrupted", file=sys.stderr)
        return 130


# ------------------------------------------------------------------------------ checks shared by subcommands


def check_positive(args: argparse.Namespace, *names: str, at_most: dict[str, int] | None = None) -> None:
    """Each of ``args.<name>`` that is set must be a positive integer (and at most ``at_most[name]``)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise CLIError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    for name, limit in (at_most or {}).items():
        value = getattr(args, name)
        if value is not None and value > limit:
            raise CLIError(f"--{name.replace('_', '-')} must be at most {limit}, got {value}")


def positive_int(name: str):
    """An argparse ``type`` that accepts integers >= 1, naming ``name`` otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {value}")
        return value

    return parse


# ------------------------------------------------------------------------------ a failed run leaves no --out


def new_dirs(path: str | Path | None) -> Path | None:
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
NO_WORK_FILES = {".neuralsim.lock"}


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


def remove_if_empty(top: Path | None) -> None:
    """Remove ``top`` if it holds nothing but empty directories (and empty lock files): files may hold work."""
    if top is None or not top.is_dir() or top.is_symlink():
        return
    markers = []
    for root, dirs, files in os.walk(top):
        for name in files:
            file = Path(root, name)
            if name not in NO_WORK_FILES or file.is_symlink() or file.stat().st_size or _is_locked(file):
                return  # work, or a lock another live run holds
            markers.append(file)
        if any(Path(root, d).is_symlink() for d in dirs):
            return
    for file in markers:
        file.unlink()
    for root, _, _ in sorted(os.walk(top), key=lambda entry: -len(Path(entry[0]).parts)):
        os.rmdir(root)


__all__ = ["CLIError", "user_error_message", "run_command", "check_positive", "positive_int", "new_dirs",
           "remove_if_empty"]
