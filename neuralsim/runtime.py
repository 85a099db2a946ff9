"""Process-level defaults a user should not have to know: torch's CPU thread count, a quiet headless SDL.

**Threads.** torch starts one intra-op thread per core. On a small CPU that is also busy (a 2-core
laptop with a browser, a second training job) those threads oversubscribe the cores and OpenMP's
spinning makes every small op wait: a 64-step dream rollout of the shipped model took 53–100 s with
torch's default of 2 threads on this project's 2-core machine while another job ran, and 6 s with one
thread. :func:`default_num_threads` is the policy neuralsim applies by default: half the CPUs this
process may use, at least 1 and at most 4 (so 1 on a 2-core machine). It never overrides a choice the
user made: ``OMP_NUM_THREADS`` in the environment, ``NEURALSIM_NUM_THREADS``, ``--threads`` on the CLI,
or ``num_threads=`` of the envs.

**SDL.** pygame (``neuralsim play``, ``render_mode="human"``, gymnasium's classic-control renderers)
prints ``error: XDG_RUNTIME_DIR is invalid or not set`` and ALSA complaints on a headless machine.
:func:`quiet_headless_sdl` sets ``SDL_AUDIODRIVER=dummy`` (neuralsim plays no sound) and a private
``XDG_RUNTIME_DIR`` only when ``XDG_RUNTIME_DIR`` is unset, i.e. outside a desktop session, and hides
pygame's banner. Call it before pygame is imported.

Importing this module has no side effects and does not import torch.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile

logger = logging.getLogger(__name__)

#: Environment variable that sets neuralsim's torch thread count (an int >= 1).
THREADS_ENV = "NEURALSIM_NUM_THREADS"
#: The most threads the default policy asks for (more rarely helps a 3.5 M-parameter model).
MAX_DEFAULT_THREADS = 4


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def default_num_threads() -> int:
    """The default torch intra-op thread count: ``clamp(usable CPUs // 2, 1, 4)`` (1 on a 2-core machine)."""
    return max(1, min(MAX_DEFAULT_THREADS, _usable_cpus() // 2))


def _env_threads() -> int | None:
    text = os.environ.get(THREADS_ENV)
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value}")
    return value


def apply_thread_policy(num_threads: int | str | None = "auto") -> int:
    """Set torch's intra-op thread count by neuralsim's policy; returns the count in effect.

    Args:
        num_threads: a positive int sets exactly that; ``None`` leaves torch alone; ``"auto"`` (the
            default of the CLI and the envs) uses ``NEURALSIM_NUM_THREADS`` if set, else leaves torch
            alone when ``OMP_NUM_THREADS`` is set, else lowers torch's count to
            :func:`default_num_threads` (it never raises a count the user lowered).

    Raises:
        ValueError: ``num_threads`` is not a positive int, ``"auto"`` or ``None``.
    """
    import torch

    if num_threads is None:
        return torch.get_num_threads()
    if num_threads == "auto":
        wanted = _env_threads()
        if wanted is None:
            if os.environ.get("OMP_NUM_THREADS"):
                return torch.get_num_threads()
            wanted = min(default_num_threads(), torch.get_num_threads())
    elif isinstance(num_threads, int) and not isinstance(num_threads, bool) and num_threads > 0:
        wanted = num_threads
    else:
        raise ValueError(f"num_threads must be a positive int, 'auto' or None, got {num_threads!r}")
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
        logger.debug("torch intra-op threads set to %d", wanted)
    return wanted


def set_thread_defaults(num_threads: int | None = None) -> int | None:
    """Entry points (the CLI): choose the thread count for this process and the ones it starts.

    Sets ``OMP_NUM_THREADS`` (read by torch when it is first imported, and inherited by collect
    workers and ``torchrun`` ranks) to ``num_threads`` if given, else to ``NEURALSIM_NUM_THREADS`` if
    set, else to :func:`default_num_threads` unless the user already set ``OMP_NUM_THREADS``. If torch
    is already imported, its count is set too.

    Args:
        num_threads: the user's explicit choice (``--threads``), or ``None``.

    Returns:
        The thread count now requested, or ``None`` when the user's ``OMP_NUM_THREADS`` stands.

    Raises:
        ValueError: a bad ``num_threads`` or ``NEURALSIM_NUM_THREADS``.
    """
    import sys

    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads <= 0):
        raise ValueError(f"num_threads must be a positive int or None, got {num_threads!r}")
    wanted = num_threads or _env_threads()
    if wanted is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return None
        wanted = default_num_threads()
    os.environ["OMP_NUM_THREADS"] = str(wanted)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(wanted)
    return wanted


def quiet_headless_sdl() -> None:
    """Keep SDL/pygame quiet on a machine without a desktop session (see the module docstring).

    Only fills in variables that are unset; a desktop session (``XDG_RUNTIME_DIR`` set) is left as is.
    """
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    runtime_dir = os.path.join(tempfile.gettempdir(), f"neuralsim-runtime-{os.getuid() if hasattr(os, 'getuid') else 0}")
    try:
        os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
        st = os.lstat(runtime_dir)
        if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
            return  # a link or another user's directory of that name: SDL only warns, so leave it
        os.chmod(runtime_dir, 0o700)
    except OSError:
        return
    os.environ["XDG_RUNTIME_DIR"] = runtime_dir


__all__ = ["THREADS_ENV", "MAX_DEFAULT_THREADS", "default_num_threads", "apply_thread_policy", "set_thread_defaults",
           "quiet_headless_sdl"]
