"""Helpers shared by the benchmark scripts (timing, the real room's step rate, model loading, results).

Not a benchmark itself (``neuralsim bench`` runs only the names in ``neuralsim.cli.BENCHMARKS``).
Scripts import it as ``from _common import ...``: Python puts a script's own directory on ``sys.path``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from neuralsim.device import bf16_is_native, cpu_bf16_flags

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------------------------------ timing


def timeit(fn: Callable[[], Any], *, min_iters: int, max_seconds: float, warmup: bool = True) -> float:
    """Median seconds per call: one warm-up call (unless ``warmup=False``), then calls until ``min_iters``
    done and ``max_seconds`` spent (at most ``10 * min_iters`` calls)."""
    if warmup:
        fn()
    times, start = [], time.perf_counter()
    while len(times) < min_iters or (time.perf_counter() - start < max_seconds and len(times) < 10 * min_iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > max_seconds and len(times) >= min_iters:
            break
    return float(np.median(times))


def best_rate(fn: Callable[[int], None], steps: int, repeats: int = 3) -> float:
    """Best rate (calls/s) over ``repeats`` runs of ``fn(steps // repeats)`` (the CPU is shared: best = least disturbed)."""
    fn(min(20, steps))  # warm-up
    n = max(1, steps // repeats)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(n)
        rates.append(n / (time.perf_counter() - t0))
    return max(rates)


def room_step_loop(env: Any, rng: np.random.Generator, action_type: str = "continuous") -> Callable[[int], None]:
    """``run(n)``: ``n`` steps of a NeuralSimRoom-v0 env with random actions, resetting when an episode ends."""
    space = env.action_space

    def run(n: int) -> None:
        for _ in range(n):
            a = rng.uniform(-1, 1, 4).astype(np.float32) if action_type == "continuous" else int(rng.integers(space.n))
            _, _, term, trunc, _ = env.step(a)
            if term or trunc:
                env.reset()

    return run


def room_steps_per_s(steps: int, image_size: int = 64, action_type: str = "continuous", seed: int = 0) -> float:
    """Steps/s of one real ``NeuralSimRoom-v0`` (physics + 64x64 render), random actions, best of 3."""
    import gymnasium as gym

    import neuralsim  # noqa: F401  (registers NeuralSimRoom-v0)

    env = gym.make("NeuralSimRoom-v0", image_size=image_size, action_type=action_type)
    env.reset(seed=seed)
    try:
        return best_rate(room_step_loop(env, np.random.default_rng(seed), action_type), steps)
    finally:
        env.close()


def matmul_peak(dtype: torch.dtype, size: int, *, min_iters: int, max_seconds: float) -> float:
    """Peak FLOP/s of a ``size``x``size`` @ ``size``x``size`` matmul in ``dtype``: the fastest of the repeats
    (one warm-up, then at least ``min_iters`` calls and up to ``max_seconds``)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(dtype)
    b = torch.randn(size, size, generator=g).to(dtype)
    out = torch.empty(size, size, dtype=dtype)
    torch.mm(a, b, out=out)
    best, n, start = float("inf"), 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - start < max_seconds:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best, n = min(best, time.perf_counter() - t0), n + 1
    return 2 * size**3 / best


def bf16_native() -> bool:
    """True where the CPU runs bf16 matmuls in hardware (AVX512-BF16 or AMX): :func:`neuralsim.device.bf16_is_native`."""
    return bf16_is_native(torch.device("cpu"))


# ------------------------------------------------------------------------------------------ setup


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` when given (scripts only; the library never does)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def rss_bytes() -> int:
    """Resident set size of this process now (not the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import psutil

        return int(psutil.Process().memory_info().rss)


def never_terminate(net: Any, names: Sequence[str] = ("termination_head", "termination_detector")) -> None:
    """Set the last layer of each of ``net``'s termination modules ``names`` (those it has) to say "never" (a logit of
    -6 whatever the input; their compute unchanged): an untrained head or a dynamics that was not trained would end
    episodes at random, and a speed benchmark would time resets instead of steps."""
    with torch.no_grad():
        for name in names:
            module = getattr(net, name, None)
            if module is not None:
                last = module.net[-1]
                last.weight.zero_()
                last.bias.fill_(-6.0)


def prepare_model(model: str, random_weights: bool, workdir: Path, *, start_frames: int = 8) -> dict[str, Any]:
    """Resolve the world model a benchmark runs: a checkpoint dir, a shipped name, or the "default" preset with random weights.

    ``random_weights`` (or ``model="default"`` while ``neuralsim/assets/default`` is not shipped yet):
    the ``default`` preset with seeded random weights is saved to ``workdir`` with a start set of
    ``start_frames`` real room frames, so the env loads it exactly like a trained checkpoint. Its
    termination head is set to predict "never" (an untrained head says 0.5, which would end every
    other episode and time resets instead of steps); episodes then end by truncation only.

    Returns:
        ``{"path": str (what to pass as model=), "name": str, "random_weights": bool, "note": str}``.
    """
    from neuralsim.checkpoints import DEFAULT_MODEL_MISSING, default_model_missing, write_start_frames

    note = ""
    if not random_weights and default_model_missing(model):
        note = f"{DEFAULT_MODEL_MISSING}: measured the default preset with random weights"
        warnings.warn(note, stacklevel=2)
        random_weights = True
    if not random_weights:
        return {"path": model, "name": model, "random_weights": False, "note": note}

    from neuralsim.config import WorldModelConfig
    from neuralsim.model import WorldModel

    preset = "default" if model in ("default", "") or Path(model).is_dir() else model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = WorldModel(WorldModelConfig.from_preset(preset)).eval()
    never_terminate(net, ("termination_head",))
    path = workdir / f"{preset}-random"
    net.save_pretrained(path)
    frames, descriptions = room_frames(start_frames, net.config.image_size)
    write_start_frames(path, frames, descriptions)
    return {"path": str(path), "name": f"preset:{preset} (random weights)", "random_weights": True, "note": note}


def load_memory_model(name: str) -> Any:
    """``WorldModel.from_pretrained(name)`` in fp32, in eval mode, for a benchmark of its frame memory: a model
    without one is refused naming ``--model``."""
    from neuralsim.model import WorldModel

    model = WorldModel.from_pretrained(name).float().eval()
    if model.frame_memory is None:
        raise SystemExit(f"--model {name!r} has no frame memory (config.frame_memory_width = 0)")
    return model


def room_frames(n: int, image_size: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """``n`` first frames of the real room (seeds ``seed..seed+n-1``) and their descriptions; noise if MuJoCo is unavailable."""
    try:
        import gymnasium as gym

        import neuralsim  # noqa: F401

        env = gym.make("NeuralSimRoom-v0", image_size=image_size[0])
        frames, texts = [], []
        for i in range(n):
            obs, info = env.reset(seed=seed + i)
            frames.append(obs)
            texts.append(str(info.get("description", "")))
        env.close()
        if frames[0].shape[:2] == tuple(image_size):
            return np.stack(frames), texts
    except Exception as exc:  # noqa: BLE001  (a benchmark still runs without the room)
        warnings.warn(f"room frames unavailable ({exc}); using noise start frames", stacklevel=2)
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *image_size, 3), dtype=np.uint8), [""] * n


# ------------------------------------------------------------------------------------------ results


def machine_info() -> dict[str, Any]:
    """Versions, CPU capability, torch threads and load: stored next to every number."""
    return {
        "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16": list(cpu_bf16_flags()),
        "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


# ------------------------------------------------------------------------------------------ command line

#: held-out seeds start here: collection, training and the recipe's data use seeds far below (or in other millions)
FIRST_HELD_OUT_SEED = 1_000_000


def add_standard_args(parser: argparse.ArgumentParser, name: str, *, quick_help: str,
                      seeds: tuple[int, int] | None = None, seeds_what: str = "held-out seeds") -> None:
    """The options every results-writing benchmark shares: ``--quick``, ``--name`` (default ``name``; with --quick
    ``name_quick``), ``--results-dir``; with ``seeds`` = (full, quick) also ``--seeds`` and ``--first-seed``.
    :func:`resolve_standard_args` fills the defaults that depend on --quick after parsing."""
    if seeds is not None:
        parser.add_argument("--seeds", type=int, default=None,
                            help=f"{seeds_what} (default {seeds[0]}; --quick {seeds[1]})")
        parser.add_argument("--first-seed", type=int, default=FIRST_HELD_OUT_SEED,
                            help=f"the first held-out seed (default {FIRST_HELD_OUT_SEED:,}: far from the data's)")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--name", default=None, help=f"results file name (default {name}; --quick: {name}_quick)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where <name>.json goes")


def resolve_standard_args(parser: argparse.ArgumentParser, args: argparse.Namespace, name: str,
                          seeds: tuple[int, int] | None = None) -> argparse.Namespace:
    """Set ``args.name`` (and ``args.seeds`` from ``seeds`` = (full, quick)) where the command line left them out;
    a ``--seeds`` below 1 is a usage error. Returns ``args``."""
    args.name = args.name or (f"{name}_quick" if args.quick else name)
    if seeds is not None:
        args.seeds = args.seeds if args.seeds is not None else seeds[1 if args.quick else 0]
        if args.seeds < 1:
            parser.error(f"--seeds must be >= 1, got {args.seeds}")
    return args


def room_ball_start() -> str:
    """The room's default ``ball_start`` (its default task's), read from its signature."""
    import inspect

    from neuralsim.envs.room import NeuralSimRoomEnv

    return inspect.signature(NeuralSimRoomEnv).parameters["ball_start"].default


def ball_start_name(name: str, ball_start: str) -> str:
    """A benchmark's results name for the room's ``ball_start``: ``name`` for the room's default task, else
    ``name_ball_<ball_start>`` (each ball start keeps a file of its own: in sequence, one run overwrote the other's)."""
    return name if ball_start == room_ball_start() else f"{name}_ball_{ball_start}"


def write_result(result: dict[str, Any], out: str | os.PathLike) -> None:
    """Write ``result`` as indented JSON atomically (``neuralsim.checkpoints.atomic_write_json``) and print it as one
    line."""
    from neuralsim.checkpoints import atomic_write_json

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    print(json.dumps(result))


def rounded(value: Any, digits: int = 4) -> Any:
    """Floats rounded to ``digits`` significant digits, recursively (keeps JSON readable)."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value
