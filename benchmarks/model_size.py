"""What a smaller dynamics would buy: the dream's env-steps/s at batch 64 with the model's dynamics narrowed or made
shallower, against the real room (the performance issue's ``vs_room_latent`` asks 1.5x, ``vs_room`` 0.5x).

Each variant is the model's own config (``--model``, default the shipped one) with the dynamics' ``width`` (its
heads keep 32 channels each, the prompt tokens the same width) or ``depth`` (its softmax block kept in the middle)
changed. It keeps the model's weights wherever a tensor's name and shape are unchanged (the decoder, the frame memory's
nets, the termination detector: what an rgb step also runs, and whose cost depends on what they compute, such as which
rows the memory warps); the rest is seeded random (the speed of the dynamics does not depend on its weights). Its
termination head and detector say "never" (a dynamics that was not trained dreams frames that would end episodes at
random, and resets would be timed instead of steps): episodes end by truncation only. Saved with the model's start
set, it is stepped in a ``WorldModelVectorEnv`` exactly as ``benchmarks/throughput.py`` steps the shipped one. The variants are timed interleaved, best of
``--repeats`` passes (the speed of a shared machine drifts by tens of percent within minutes), each dtype and
observation type in turn. No variant is trained: this says what the gates ask of a model's size, not what fidelity
a smaller model keeps.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/model_size.py --threads 1            # latent and rgb, fp32 and bf16
    OMP_NUM_THREADS=1 python benchmarks/model_size.py --quick --threads 1    # about a minute

Prints a table; the last line is one JSON object, also written to benchmarks/results/model_size.json (``--quick``:
model_size_quick.json). The figures name the CPU (``cpu_capability``, ``cpu_bf16``) and dtype of each row.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (add_standard_args, machine_info, never_terminate, resolve_standard_args,  # noqa: E402
                     room_steps_per_s, rounded, set_threads, write_result)
from throughput import measure_dream  # noqa: E402

HEAD_DIM = 32  # channels per head, as the shipped dynamics has them (width 128, 4 heads)
#: (name, width, depth): the dynamics sizes measured; None keeps the model's own.
VARIANTS = (("as shipped", None, None), ("width 96", 96, None), ("width 64", 64, None), ("depth 3", None, 3),
            ("width 64, depth 4", 64, 4))
QUICK_VARIANTS = ("as shipped", "width 64, depth 4")
TARGETS = {"latent": 1.5, "rgb": 0.5}  # x the room at batch 64 (vs_room_latent, vs_room)


def variant_config(config: Any, width: int | None, depth: int | None) -> Any:
    """``config`` with the dynamics' ``width`` (heads of :data:`HEAD_DIM` channels, prompt tokens as wide) and
    ``depth`` (one softmax block, at the middle, as the shipped model's) replaced where given."""
    changes: dict[str, Any] = {}
    if width is not None:
        changes.update(width=width, num_heads=max(1, width // HEAD_DIM), text_width=width)
    if depth is not None:
        changes.update(depth=depth, softmax_blocks=[depth // 2] if config.softmax_blocks else [])
    return config.replace(**changes)


def save_variant(model_dir: Path, config: Any, out: Path) -> int:
    """A model of ``config`` saved to ``out`` with ``model_dir``'s start set: ``model_dir``'s weights wherever a
    tensor's name and shape match, the rest seeded random; the termination head and detector set to "never".
    Returns the dynamics' parameter count."""
    from neuralsim.checkpoints import read_weights
    from neuralsim.model import WorldModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = WorldModel(config).eval()
    own = read_weights(model_dir)
    state = net.state_dict()
    net.load_state_dict({k: own[k] if k in own and own[k].shape == v.shape else v for k, v in state.items()})
    never_terminate(net)
    net.save_pretrained(out)
    start_set = model_dir / "start_frames.safetensors"
    if start_set.is_file():
        shutil.copy(start_set, out / start_set.name)
    return sum(p.numel() for p in net.dynamics.parameters())


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="the model whose config the variants change (default: "
                        "the shipped one)")
    parser.add_argument("--obs", nargs="+", choices=("latent", "rgb"), default=None,
                        help="observation types (default latent rgb; --quick latent)")
    parser.add_argument("--dtypes", nargs="+", choices=("fp32", "bf16"), default=None,
                        help="dtypes (default fp32 bf16; --quick fp32)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row (default 40 latent, 12 rgb; "
                        "--quick 15)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved passes over the variants (default 2; "
                        "--quick 1)")
    parser.add_argument("--compile", action="store_true", help="also time each row with the env's compile=True "
                        "(WorldModel.compile_streaming: the per-frame pass through torch.compile; rows marked compiled)")
    parser.add_argument("--variants", nargs="+", choices=[v[0] for v in VARIANTS], default=None, metavar="NAME",
                        help="the variants to measure, by name (default all; --quick: " + ", ".join(
                            repr(v) for v in QUICK_VARIANTS) + "); names: " + ", ".join(repr(v[0]) for v in VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    add_standard_args(parser, "model_size", quick_help="two variants, latent, fp32, one pass (about a minute)")
    args = parser.parse_args(argv)
    resolve_standard_args(parser, args, "model_size")
    obs_types = args.obs or (["latent"] if args.quick else ["latent", "rgb"])
    dtypes = args.dtypes or (["fp32"] if args.quick else ["fp32", "bf16"])
    repeats = args.repeats or (1 if args.quick else 2)
    for name, value in (("--batch", args.batch), ("--repeats", repeats), ("--steps", args.steps or 1)):
        if value < 1:
            parser.error(f"{name} must be >= 1, got {value}")
    set_threads(args.threads)
    from neuralsim.checkpoints import read_config, resolve_checkpoint

    t_start = time.perf_counter()
    try:
        model_dir = resolve_checkpoint(args.model)
        config = read_config(model_dir)
    except (ValueError, FileNotFoundError) as e:
        parser.error(f"--model: {e}")
    chosen = args.variants or (QUICK_VARIANTS if args.quick else [v[0] for v in VARIANTS])
    variants = [v for v in VARIANTS if v[0] in chosen]
    room = room_steps_per_s(500 if args.quick else 2000)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        built = []
        for name, width, depth in variants:
            cfg = variant_config(config, width, depth)
            path = Path(tmp) / f"variant{len(built)}"
            built.append((name, cfg, path, save_variant(model_dir, cfg, path)))
        for obs_type in obs_types:
            steps = args.steps or (15 if args.quick else 40 if obs_type == "latent" else 12)
            for dtype in dtypes:
                modes = (False, True) if args.compile else (False,)
                best: dict[tuple[str, bool], dict[str, Any]] = {}
                for _ in range(repeats):  # eager and compiled interleaved too
                    for name, _, path, _ in built:
                        for c in modes:
                            run = measure_dream(str(path), args.batch, dtype, min_steps=steps, max_seconds=0,
                                                compile=c, obs_type=obs_type)
                            if (name, c) not in best or run["env_sps"] > best[name, c]["env_sps"]:
                                best[name, c] = run
                for c in modes:
                    for name, cfg, _, params in built:
                        run = best[name, c]
                        rows.append({"variant": name, "width": cfg.width, "depth": cfg.depth,
                                     "num_heads": cfg.num_heads, "dynamics_parameters": params, "obs": obs_type,
                                     "dtype": dtype, "compiled": c, "batch": args.batch, "steps": run["steps"],
                                     "env_sps": run["env_sps"], "episode_ends": run["episode_ends"],
                                     "mflop_per_env_step": run["flops_per_env_step"] / 1e6,
                                     "vs_room": run["env_sps"] / room, "target_vs_room": TARGETS[obs_type]})
    print(f"dream env-steps/s at batch {args.batch}, variants of {args.model}'s dynamics (untrained where resized), best of "
          f"{repeats} interleaved passes; the room: {room:,.0f} steps/s (one env)")
    print(f"{'variant':<20}{'width':>6}{'depth':>6}{'params M':>10}{'MFLOP':>7}{'obs':>8}{'dtype':>6}{'env-steps/s':>13}"
          f"{'x room':>8}{'gate':>6}{'ends':>6}")
    mark = {False: "", True: " compiled"}
    for r in rows:
        print(f"{r['variant']:<20}{r['width']:>6}{r['depth']:>6}{r['dynamics_parameters'] / 1e6:>10.2f}"
              f"{r['mflop_per_env_step']:>7.1f}{r['obs']:>8}"
              f"{r['dtype']:>6}{r['env_sps']:>13.1f}{r['vs_room']:>7.2f}x{r['target_vs_room']:>5.1f}x"
              f"{r['episode_ends']:>6}{mark[r['compiled']]}")
    result = rounded({"benchmark": "model_size", "model": args.model, "batch": args.batch, "quick": args.quick,
                      "repeats": repeats, "room_sps": room, "rows": rows, "seconds": time.perf_counter() - t_start,
                      "machine": machine_info()})
    write_result(result, args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
