"""Env-steps/s of the dream (``WorldModelVectorEnv``) against the real room, a DIAMOND-style denoiser and the matmul peak.

What one run measures (all on this machine, same thread count, in the same process):

- **dream**: env-steps/s of ``WorldModelVectorEnv(num_envs=B, model=..., dtype=..., obs_type=...)`` with random
  actions (``env.step`` end to end: validation, all denoise passes, commit, heads, autoreset bookkeeping and, for
  ``rgb`` observations, the decode to uint8; ``return_frames=False`` as SB3 runs it), at B = 1, 16, 64, fp32 and
  bf16 (``torch.autocast``; emulated and ~80x slower per matmul on a CPU without AVX512-BF16/AMX, so it runs fewer
  steps there), observations ``rgb`` (64x64 frames) and ``latent`` (the latent frames: nothing decoded).
  Rate = B x steps / wall time of the timed steps.
- **rollout**: wall time of one ``WorldModelEnv`` (a single env, rgb, ``dtype="auto"``) stepping 1,440 frames
  (``--quick``: 240 frames, scaled to 1,440 and marked ``extrapolated``).
- **room**: steps/s of one real ``NeuralSimRoom-v0`` (MuJoCo physics + 64x64 render), random
  actions (``_common.room_steps_per_s``, the loop of ``room_speed.py``).
- **DIAMOND**: a DIAMOND-style pixel-space U-Net (``diamond_baseline.py``, ~4.4 M params, Atari
  config) forward at the same batch sizes with random weights;
  env-steps/s = B / (3 x forward time) (3 Euler steps per env step, its reward/end LSTM not counted).
- **peak**: FLOP/s of large square matmuls (fp32 2048^3; bf16 smaller when emulated).
- **MFU**: model FLOPs per env step (``torch.utils.flop_counter.FlopCounterMode`` over one
  ``env.step``: matmuls, convolutions, attention; elementwise ops not counted) x env-steps/s,
  divided by the matmul peak of the same dtype.

Targets (the performance issue), at batch 64 and the machine's best dtype, reported met or not in ``targets``:
latent-observation dream >= 1.5x the room (``vs_room_latent``); rgb dream >= 0.5x the room (``vs_room``);
rgb dream >= 2,000 env-steps/s on a CPU with native bf16 (``env_sps``; elsewhere reported, ``met`` null);
MFU >= 50 % of the measured matmul peak of the dtype used (``mfu``); >= 100x DIAMOND at the same batch
(``vs_diamond``, fp32); a single env's 1,440-frame rollout in <= 10 s (``rollout_1440_s``). Each env-steps/s target
also gives ``mfu_needed``: the MFU at which the model's measured FLOPs per env step would reach it on the measured
peak (above 1: out of reach of any speed-up of the same computation; the model must do less per step). The transfer
benchmark's ``dream_vs_real_training_speed`` (PPO env-steps/s in the dream over the room's, target >= 1) is copied
from ``benchmarks/results/transfer.json`` when present, with that file's date (not measured here).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/throughput.py --quick --threads 1   # about a minute
    python benchmarks/throughput.py                                         # full (several minutes)
    python benchmarks/throughput.py --model path/to/checkpoint              # a trained checkpoint
    python benchmarks/throughput.py --random-weights                        # the default preset, untrained
    python benchmarks/throughput.py --profile --threads 1                   # torch.profiler of one batch-64 step
    python benchmarks/throughput.py --profile --profile-dtype bf16 --threads 1  # the same in bf16 (native where the CPU has it)
    python benchmarks/throughput.py --quick --denoise-steps 3 --dtypes fp32  # another number of Euler steps
    python benchmarks/throughput.py --quick --compile --dtypes fp32         # WorldModel.compile_streaming()

Prints a table; the last line is one JSON object, also written to benchmarks/results/throughput.json
(``--profile``: benchmarks/results/profile_step.json and the full torch.profiler table in profile_step.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula, sdpa_flop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS_DIR, bf16_native, machine_info, matmul_peak, prepare_model, room_steps_per_s,  # noqa: E402
                     rounded, set_threads, timeit, write_result)
from diamond_baseline import build as build_diamond  # noqa: E402
from diamond_baseline import example_inputs as diamond_inputs  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TARGETS = {"env_sps": 2000.0, "vs_room": 0.5, "vs_room_latent": 1.5, "vs_diamond": 100.0, "mfu": 0.50,
           "rollout_1440_s": 10.0, "dream_vs_real_training_speed": 1.0}
ROLLOUT_FRAMES = 1440


# PyTorch's counter has formulas for the CUDA attention kernels but not for the CPU one that
# scaled_dot_product_attention runs here, which it silently counted as 0: the same formula as flash attention's.
_CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
if _CPU_SDPA not in flop_registry:
    register_flop_formula(_CPU_SDPA, get_raw=True)(sdpa_flop)


def count_flops(fn) -> int:
    """FLOPs (matmul/conv/attention) of one call of ``fn``."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# ------------------------------------------------------------------------------------------ dream


def make_env(path: str, batch: int, dtype: str, *, denoise_steps: int | None = None, compile: bool = False,
             obs_type: str = "rgb"):
    """A ``WorldModelVectorEnv`` of ``batch`` envs, reset with seed 0 (``compile``: its model runs
    ``WorldModel.compile_streaming()``; the first steps then compile)."""
    from neuralsim.envs import WorldModelVectorEnv

    env = WorldModelVectorEnv(batch, model=path, dtype=dtype, max_episode_steps=200, denoise_steps=denoise_steps,
                              obs_type=obs_type, return_frames=False, compile=compile)
    env.reset(seed=0)
    env.action_space.seed(0)
    return env


def measure_dream(path: str, batch: int, dtype: str, *, min_steps: int, max_seconds: float,
                  flops: float | None = None, warmup_steps: int = 2, denoise_steps: int | None = None,
                  compile: bool = False, obs_type: str = "rgb") -> dict:
    """Env-steps/s of ``env.step`` on a ``WorldModelVectorEnv`` of ``batch`` envs (after ``warmup_steps`` steps,
    the first of which counts the FLOPs unless ``flops`` per env step is given)."""
    env = make_env(path, batch, dtype, denoise_steps=denoise_steps, compile=compile, obs_type=obs_type)
    pool = [env.action_space.sample() for _ in range(16)]
    if flops is None:
        # A compiled model's FLOPs are counted on its eager path, before it compiles: counted through the compiled
        # step, the FLOP counter's dispatch mode left the step running eager (measured: compiled rows at eager's
        # env-steps/s to 0.1 %, against 1.11-1.13x once counted apart; benchmarks/model_size.py --compile)
        if compile:
            env.model.compile_streaming(False)
        flops = count_flops(lambda: env.step(pool[0])) / batch
        if compile:
            env.model.compile_streaming(True)
        warmup_steps -= 1
    if compile:
        t0 = time.perf_counter()
        env.step(env.action_space.sample())  # compiles
        compile_s = time.perf_counter() - t0
    for i in range(warmup_steps):
        env.step(pool[i % len(pool)])
    times, resets, start = [], 0, time.perf_counter()
    while len(times) < min_steps or (time.perf_counter() - start < max_seconds and len(times) < 20 * min_steps):
        t0 = time.perf_counter()
        _, _, term, trunc, _ = env.step(pool[len(times) % len(pool)])
        times.append(time.perf_counter() - t0)
        resets += int(np.sum(term | trunc))
        if time.perf_counter() - start > max_seconds and len(times) >= min_steps:
            break
    env.close()
    total = float(np.sum(times))
    return {
        "obs": obs_type, "dtype": dtype, "batch": batch, "steps": len(times),
        "env_sps": batch * len(times) / total,  # headline: includes autoresets as they happen
        "env_sps_median": batch / float(np.median(times)),
        "step_ms": 1e3 * float(np.median(times)),
        "episode_ends": resets,
        "flops_per_env_step": flops,
        **({"compile_s": compile_s} if compile else {}),
    }


def measure_rollout(path: str, frames: int, *, denoise_steps: int | None = None, compile: bool = False) -> dict:
    """Wall time of one ``WorldModelEnv`` (rgb, ``dtype="auto"``) stepping ``frames`` frames with random actions,
    after one warm-up step (episodes do not end: ``max_episode_steps=None``). ``compile``: the env's
    ``compile=True``; the warm-up step compiles, timed apart (``compile_s``)."""
    from neuralsim.envs import WorldModelEnv

    env = WorldModelEnv(model=path, max_episode_steps=None, denoise_steps=denoise_steps, compile=compile)
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(16)]
    t0 = time.perf_counter()
    env.step(actions[0])
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(frames):
        env.step(actions[i % len(actions)])
    seconds = time.perf_counter() - t0
    dtype = str(env.session.dtype).replace("torch.", "")
    env.close()
    return {"frames": frames, "seconds": seconds, "dtype": dtype, "ms_per_frame": 1e3 * seconds / frames,
            "compiled": compile, **({"compile_s": warmup_s} if compile else {})}


def transfer_training_speed() -> dict | None:
    """``dream_vs_real_training_speed`` of the last transfer benchmark run (benchmarks/results/transfer.json), if any."""
    path = RESULTS_DIR / "transfer.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("dream_vs_real_training_speed")
    if value is None:
        return None
    return {"value": value, "source": f"{path.name} of {time.strftime('%Y-%m-%d', time.gmtime(os.path.getmtime(path)))}"}


# ------------------------------------------------------------------------------------------ DIAMOND


def measure_diamond(batch: int, dtype: str, *, min_iters: int, max_seconds: float, warmup: bool = True) -> dict:
    """Forward time of the DIAMOND-style denoiser at ``batch``; env-steps/s = batch / (3 x forward)."""
    net = build_diamond()
    inputs = diamond_inputs(batch)
    steps = net.config.denoise_steps
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), ctx:
        flops = count_flops(lambda: net(**diamond_inputs(1))) * batch  # FLOPs are linear in the batch
        seconds = timeit(lambda: net(**inputs), min_iters=min_iters, max_seconds=max_seconds, warmup=warmup)
    return {
        "dtype": dtype, "batch": batch, "forward_ms": 1e3 * seconds,
        "env_sps": batch / (steps * seconds), "flops_per_env_step": steps * flops / batch,
    }


# ------------------------------------------------------------------------------------------ profile


def profile_step(path: str, batch: int, dtype: str, steps: int, text_out: Path, denoise_steps: int | None = None,
                 obs_type: str = "rgb") -> dict:
    """torch.profiler (CPU) over ``steps`` env steps at ``batch``; phases labelled by forward hooks on the model's modules
    (and ``prepare_frame``, which ``step`` calls as a method, by wrapping it for the duration)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    env = make_env(path, batch, dtype, denoise_steps=denoise_steps, obs_type=obs_type)
    model = env.model
    labels: dict[torch.nn.Module, str] = {}
    for i, block in enumerate(model.dynamics.blocks):
        kind = "softmax" if i in model.config.softmax_blocks else "gdn"
        for name in ("attn", "cross_attn", "mlp"):
            labels[getattr(block, name)] = f"phase: dynamics {name} ({kind})"
    for name, module in model.dynamics.named_children():
        if name != "blocks":
            labels[module] = "phase: dynamics embed/final"
    decoder = getattr(model.autoencoder, "decoder", model.autoencoder)
    labels[decoder] = "phase: decoder"
    for name in ("reward_head", "termination_head"):
        if getattr(model, name, None) is not None:
            labels[getattr(model, name)] = "phase: heads"
    # the parts beside the dynamics and the decoder that a step may run (each labelled only where the model has it)
    for name, label in (("refiner", "refiner"), ("reward_model", "reward model"), ("frame_memory", "frame memory"),
                        ("termination_detector", "termination detector"), ("encoder", "encoder")):
        module = getattr(model.autoencoder, name, None) if name == "encoder" else getattr(model, name, None)
        if module is not None:
            labels[module] = f"phase: {label}"
    stack: list = []
    handles = []
    for module, label in labels.items():
        def pre(_m, _i, label=label):
            ctx = record_function(label)
            ctx.__enter__()
            stack.append(ctx)

        def post(_m, _i, _o):
            stack.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    prepare = model.dynamics.prepare_frame

    def labelled_prepare(*args, **kwargs):
        with record_function("phase: dynamics prepare_frame"):
            return prepare(*args, **kwargs)

    model.dynamics.prepare_frame = labelled_prepare
    actions = env.action_space.sample()
    for _ in range(2):
        env.step(actions)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            with record_function("env.step"):
                env.step(actions)
        wall = (time.perf_counter() - t0) / steps
    for h in handles:
        h.remove()
    del model.dynamics.prepare_frame
    env.close()

    events = prof.key_averages()
    step_us = sum(e.cpu_time_total for e in events if e.key == "env.step") / steps
    phases = {e.key[len("phase: "):]: e.cpu_time_total / steps for e in events if e.key.startswith("phase: ")}
    ops = sorted((e for e in events if not e.key.startswith(("phase: ", "env.step"))),
                 key=lambda e: e.self_cpu_time_total, reverse=True)
    top_ops = [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / steps / 1e3,
                "pct": 100 * e.self_cpu_time_total / steps / step_us, "calls_per_step": e.count / steps} for e in ops[:20]]
    phase_rows = [{"phase": k, "ms_per_step": v / 1e3, "pct": 100 * v / step_us}
                  for k, v in sorted(phases.items(), key=lambda kv: -kv[1])]
    text_out.parent.mkdir(parents=True, exist_ok=True)
    text = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
    text_out.write_text(
        f"env.step of WorldModelVectorEnv, batch {batch}, {dtype}, {steps} steps, torch threads {torch.get_num_threads()}\n\n{text}\n")
    print(f"\nprofile: batch {batch} {dtype}: {wall * 1e3:.1f} ms per env.step wall ({step_us / 1e3:.1f} ms under the profiler)")
    print(f"{'phase (inclusive)':45s} {'ms/step':>9s} {'%':>6s}")
    for r in phase_rows:
        print(f"{r['phase']:45s} {r['ms_per_step']:9.2f} {r['pct']:6.1f}")
    print(f"\n{'op (self time)':45s} {'ms/step':>9s} {'%':>6s} {'calls':>7s}")
    for r in top_ops:
        print(f"{r['op'][:45]:45s} {r['self_ms_per_step']:9.2f} {r['pct']:6.1f} {r['calls_per_step']:7.0f}")
    return {"batch": batch, "dtype": dtype, "obs": obs_type, "steps": steps, "wall_ms_per_step": wall * 1e3,
            "profiled_ms_per_step": step_us / 1e3, "phases": phase_rows, "top_ops": top_ops}


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="checkpoint directory or shipped model name (default: default)")
    parser.add_argument("--random-weights", action="store_true", help="the 'default' preset with random weights")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    parser.add_argument("--obs", nargs="+", default=["rgb", "latent"], choices=["rgb", "latent"],
                        help="observation types of the dream rows (latent: nothing decoded)")
    parser.add_argument("--quick", action="store_true", help="about a minute: few steps per row")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--peak-size", type=int, default=2048, help="matmul size of the peak measurement")
    parser.add_argument("--skip", nargs="*", default=[], choices=["room", "diamond", "peak", "rollout"],
                        help="reference points to skip")
    parser.add_argument("--profile", action="store_true",
                        help="only profile env.step (batch --profile-batch, dtype --profile-dtype)")
    parser.add_argument("--profile-batch", type=int, default=64)
    parser.add_argument("--profile-dtype", default="fp32", choices=list(DTYPES),
                        help="the profiled dtype (default fp32; bf16 writes profile_step_bf16.json)")
    parser.add_argument("--profile-obs", default="rgb", choices=["rgb", "latent"],
                        help="the profiled observation type (latent writes profile_step[_bf16]_latent.json)")
    parser.add_argument("--denoise-steps", type=int, default=None, help="Euler steps per env step (default: the model's)")
    parser.add_argument("--compile", action="store_true", help="the dream envs with compile=True "
                        "(WorldModel.compile_streaming(); fp32 rows and a second single-env rollout; compiling "
                        "takes up to a minute per batch size, timed apart as compile_s)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/throughput.json)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    torch.manual_seed(0)  # scripts may seed globally; nothing below depends on it

    with tempfile.TemporaryDirectory() as tmp:
        model = prepare_model(args.model, args.random_weights, Path(tmp))
        if args.profile:
            name = "profile_step" + ("" if args.profile_dtype == "fp32" else f"_{args.profile_dtype}") \
                + ("" if args.profile_obs == "rgb" else f"_{args.profile_obs}")
            out = Path(args.out or RESULTS_DIR / f"{name}.json")
            prof = profile_step(model["path"], args.profile_batch, args.profile_dtype, 3 if args.quick else 10,
                                out.with_suffix(".txt"), args.denoise_steps, obs_type=args.profile_obs)
            result = {"benchmark": "profile_step", "model": model["name"], "quick": args.quick, **prof,
                      "threads": torch.get_num_threads(), "machine": machine_info()}
            write_result(rounded(result), out)
            return result
        early_peak = measure_peak("fp32", args, True) if "peak" not in args.skip and "fp32" in args.dtypes else None
        rows = run_dream(model["path"], args)
        rollout = None
        if "rollout" not in args.skip:
            frames = 240 if args.quick else ROLLOUT_FRAMES
            rollout = measure_rollout(model["path"], frames, denoise_steps=args.denoise_steps)
            print(f"rollout: {rollout['frames']} frames in {rollout['seconds']:.2f} s", file=sys.stderr, flush=True)
            if args.compile:  # the single env with compile=True beside the eager one; the faster one is judged
                compiled = measure_rollout(model["path"], frames, denoise_steps=args.denoise_steps, compile=True)
                print(f"rollout, compiled: {compiled['frames']} frames in {compiled['seconds']:.2f} s "
                      f"(compiling: {compiled['compile_s']:.1f} s)", file=sys.stderr, flush=True)
                rollout = {**rollout, "eager_seconds": rollout["seconds"]} if rollout["seconds"] <= compiled["seconds"] \
                    else {**compiled, "eager_seconds": rollout["seconds"]}

    slow_bf16 = not bf16_native()
    ref: dict = {}
    if "room" not in args.skip:
        ref["room_sps"] = room_steps_per_s(300 if args.quick else 3000)
        print(f"room: NeuralSimRoom-v0, 1 env: {ref['room_sps']:.0f} steps/s", file=sys.stderr, flush=True)
    diamond = []
    diamond_params = sum(p.numel() for p in build_diamond().parameters())
    if "diamond" not in args.skip:
        print(f"DIAMOND-style denoiser: {diamond_params:,} parameters (DIAMOND Atari: ~4.4 M)", file=sys.stderr, flush=True)
        for dtype in args.dtypes:
            if dtype == "bf16" and slow_bf16:
                continue  # emulated bf16 U-Net at batch 64: minutes per forward, no information
            for batch in args.batch:
                # quick: the big batches run once, warmed up by the batch-1 row (a forward at 64 takes seconds)
                diamond.append(measure_diamond(batch, dtype, min_iters=1 if (args.quick or batch > 1) else 3,
                                               max_seconds=2.0 if args.quick else 8.0,
                                               warmup=not (args.quick and batch > 1)))
                d = diamond[-1]
                print(f"DIAMOND {dtype} B={batch}: forward {d['forward_ms']:.1f} ms -> {d['env_sps']:.1f} env-steps/s",
                      file=sys.stderr, flush=True)
    peaks = {}
    if "peak" not in args.skip:
        for dtype in args.dtypes:
            peaks[dtype] = measure_peak(dtype, args, slow_bf16)
            if dtype == "fp32" and early_peak and early_peak["flops_per_s"] > peaks[dtype]["flops_per_s"]:
                peaks[dtype] = early_peak  # best of before and after the dream rows
            print(f"peak {dtype} {peaks[dtype]['size']}^3 matmul: {peaks[dtype]['flops_per_s'] / 1e9:.1f} GFLOP/s",
                  file=sys.stderr, flush=True)

    for r in rows:
        d = next((d for d in diamond if d["batch"] == r["batch"] and d["dtype"] == r["dtype"]), None) or \
            next((d for d in diamond if d["batch"] == r["batch"] and d["dtype"] == "fp32"), None)
        r["vs_diamond"] = r["env_sps"] / d["env_sps"] if d else None
        r["vs_room"] = r["env_sps"] / ref["room_sps"] if "room_sps" in ref else None
        # MFU against the bf16 peak only where bf16 is native: emulated bf16 autocast runs many ops in fp32
        peak = peaks.get(r["dtype"]) if (r["dtype"] == "fp32" or not slow_bf16) else None
        r["achieved_flops_per_s"] = r["flops_per_env_step"] * r["env_sps"]
        r["mfu"] = r["achieved_flops_per_s"] / peak["flops_per_s"] if peak else None
        r["mfu_vs_fp32_peak"] = r["achieved_flops_per_s"] / peaks["fp32"]["flops_per_s"] if "fp32" in peaks else None
    for d in diamond:
        peak = peaks.get(d["dtype"])
        d["mfu"] = d["flops_per_env_step"] * d["env_sps"] / peak["flops_per_s"] if peak else None

    targets = evaluate_targets(rows, ref, diamond, rollout, transfer_training_speed(), peaks)
    print_table(model["name"], rows, ref, diamond, peaks, targets, rollout)
    print(f"DIAMOND-style denoiser: {diamond_params:,} parameters")
    result = {
        "benchmark": "throughput", "model": model["name"], "random_weights": model["random_weights"],
        "note": model["note"], "quick": args.quick, "threads": torch.get_num_threads(),
        "denoise_steps": args.denoise_steps, "compiled": args.compile,
        "rows": rows, "room": ref, "rollout": rollout, "diamond": diamond, "matmul_peak": peaks, "targets": targets,
        "diamond_parameters": diamond_params,
        "machine": machine_info(),
    }
    write_result(rounded(result), args.out or RESULTS_DIR / "throughput.json")
    return result


def measure_peak(dtype: str, args: argparse.Namespace, slow_bf16: bool) -> dict:
    """Matmul peak of ``dtype``: ``--peak-size`` cubed (512/1024 for emulated bf16, ~1 GFLOP/s)."""
    size = args.peak_size if not (dtype == "bf16" and slow_bf16) else (512 if args.quick else 1024)
    flops = matmul_peak(DTYPES[dtype], size, min_iters=2 if dtype == "bf16" and slow_bf16 else 3,
                        max_seconds=1.5 if args.quick else 5.0)
    return {"size": size, "flops_per_s": flops}


def run_dream(path: str, args: argparse.Namespace) -> list[dict]:
    slow_bf16 = not bf16_native()
    rows = []
    for obs in args.obs:
        for dtype in args.dtypes:
            for batch in args.batch:
                slow = dtype == "bf16" and slow_bf16
                if slow:  # emulated: one or a few steps give the order of magnitude
                    min_steps = {1: 3}.get(batch, 1) if args.quick else {1: 10}.get(batch, 3)
                else:
                    min_steps = max(2, (40 if args.quick else 200) // batch)
                # FLOPs do not depend on the dtype (they do on the observation: rgb decodes)
                known = next((r["flops_per_env_step"] for r in rows if r["batch"] == batch and r["obs"] == obs), None)
                rows.append(measure_dream(path, batch, dtype, min_steps=min_steps,
                                          max_seconds=2.0 if args.quick else 10.0, flops=known,
                                          warmup_steps=1 if slow else 2, denoise_steps=args.denoise_steps,
                                          compile=args.compile and dtype == "fp32", obs_type=obs))
                r = rows[-1]
                print(f"dream {obs} {dtype} B={batch}: {r['env_sps']:.1f} env-steps/s ({r['steps']} steps, "
                      f"{r['step_ms']:.1f} ms/step, {r['flops_per_env_step'] / 1e6:.1f} MFLOP/env-step)",
                      file=sys.stderr, flush=True)
    return rows


def mfu_needed(env_sps: float, row: dict, peaks: dict | None) -> float | None:
    """The MFU at which ``row``'s FLOPs per env step would run at ``env_sps`` on the measured matmul peak of its dtype
    (None without that peak). Above 1 no speed-up of the same computation reaches it: the FLOPs per step must fall."""
    peak = (peaks or {}).get(row["dtype"])
    return env_sps * row["flops_per_env_step"] / peak["flops_per_s"] if peak else None


def evaluate_targets(rows: list[dict], ref: dict, diamond: list[dict], rollout: dict | None,
                     transfer: dict | None, peaks: dict | None = None) -> dict:
    """The performance issue's targets at batch 64 (or the largest batch measured), best dtype per observation.
    Each env-steps/s target also states ``mfu_needed`` (:func:`mfu_needed`): the MFU it asks of the model as it is."""
    big = max(r["batch"] for r in rows)

    def best(obs: str) -> dict | None:
        at_big = [r for r in rows if r["batch"] == big and r["obs"] == obs]
        return max(at_big, key=lambda r: r["env_sps"]) if at_big else None

    rgb, latent = best("rgb"), best("latent")
    head = rgb or latent
    native = bf16_native()
    out: dict = {"batch": big, "best_dtype": head["dtype"], "obs": head["obs"], "native_bf16": native}
    out["env_sps"] = {"value": head["env_sps"], "target": TARGETS["env_sps"], "obs": head["obs"], "dtype": head["dtype"],
                      # the target is set for CPUs with native bf16; elsewhere the figure is reported, not judged
                      "met": head["env_sps"] >= TARGETS["env_sps"] if native else None,
                      "mfu_needed": mfu_needed(TARGETS["env_sps"], head, peaks)}
    if latent is not None:
        out["env_sps_latent"] = {"value": latent["env_sps"], "dtype": latent["dtype"]}
    if "room_sps" in ref:
        for key, row in (("vs_room", rgb), ("vs_room_latent", latent)):
            if row is not None:
                v = row["env_sps"] / ref["room_sps"]
                out[key] = {"value": v, "target": TARGETS[key], "met": v >= TARGETS[key], "dtype": row["dtype"],
                            "mfu_needed": mfu_needed(TARGETS[key] * ref["room_sps"], row, peaks)}
    fp32 = next((r for r in rows if r["batch"] == big and r["obs"] == head["obs"] and r["dtype"] == "fp32"), None)
    if fp32 is not None and fp32.get("vs_diamond") is not None:
        out["vs_diamond"] = {"value": fp32["vs_diamond"], "target": TARGETS["vs_diamond"],
                             "met": fp32["vs_diamond"] >= TARGETS["vs_diamond"], "dtype": "fp32"}
    if head.get("mfu") is not None:
        out["mfu"] = {"value": head["mfu"], "target": TARGETS["mfu"], "met": head["mfu"] >= TARGETS["mfu"],
                      "dtype": head["dtype"], "obs": head["obs"]}
    if rollout is not None:
        seconds = rollout["seconds"] * ROLLOUT_FRAMES / rollout["frames"]
        out["rollout_1440_s"] = {"value": seconds, "target": TARGETS["rollout_1440_s"],
                                 "met": seconds <= TARGETS["rollout_1440_s"], "dtype": rollout["dtype"],
                                 "extrapolated": rollout["frames"] != ROLLOUT_FRAMES,
                                 "compiled": rollout.get("compiled", False),
                                 **({"compile_s": rollout["compile_s"]} if "compile_s" in rollout else {})}
    if transfer is not None:
        out["dream_vs_real_training_speed"] = {**transfer, "target": TARGETS["dream_vs_real_training_speed"],
                                               "met": transfer["value"] >= TARGETS["dream_vs_real_training_speed"]}
    return out


def print_table(name: str, rows: list[dict], ref: dict, diamond: list[dict], peaks: dict, targets: dict,
                rollout: dict | None) -> None:
    print(f"\nthroughput: model {name}, torch threads {torch.get_num_threads()}, "
          f"CPU {torch.backends.cpu.get_cpu_capability()}, bf16 {'native' if bf16_native() else 'emulated'}")
    for dtype, p in peaks.items():
        print(f"matmul peak {dtype} ({p['size']}^3): {p['flops_per_s'] / 1e9:.1f} GFLOP/s")
    if "room_sps" in ref:
        print(f"real room NeuralSimRoom-v0 (1 env): {ref['room_sps']:.0f} steps/s")
    if rollout is not None:
        how = f", compiled ({rollout['compile_s']:.1f} s to compile; eager {rollout['eager_seconds']:.2f} s)" \
            if rollout.get("compiled") else ""
        print(f"single env ({rollout['dtype']}), {rollout['frames']} frames: {rollout['seconds']:.2f} s "
              f"({rollout['ms_per_frame']:.1f} ms/frame){how}")
    print(f"\n{'':8s}{'obs':>7s}{'dtype':>6s} {'batch':>5s} {'env-steps/s':>12s} {'ms/step':>9s} {'MFLOP/step':>11s} "
          f"{'MFU':>7s} {'x room':>8s} {'x DIAMOND':>10s}")

    def fmt(v, spec):
        return format(v, spec) if v is not None else format("-", ">" + spec.split(".")[0].lstrip(">"))

    def pct(v):
        return f"{100 * v:6.1f}%" if v is not None else f"{'-':>7s}"

    for r in rows:
        print(f"{'dream':8s}{r['obs']:>7s}{r['dtype']:>6s} {r['batch']:>5d} {r['env_sps']:12.1f} {r['step_ms']:9.1f} "
              f"{r['flops_per_env_step'] / 1e6:11.1f} {pct(r['mfu'])} "
              f"{fmt(r['vs_room'], '8.2f')} {fmt(r['vs_diamond'], '10.1f')}")
    for d in diamond:
        print(f"{'DIAMOND':8s}{'rgb':>7s}{d['dtype']:>6s} {d['batch']:>5d} {d['env_sps']:12.1f} {3 * d['forward_ms']:9.1f} "
              f"{d['flops_per_env_step'] / 1e6:11.1f} {pct(d['mfu'])}")
    print(f"\ntargets at batch {targets['batch']}, best dtype per observation:")

    def verdict(met):
        return "met" if met else ("not judged (no native bf16)" if met is None else "NOT met")

    def needs(t):  # what the target asks of the model as it is
        return f" (needs MFU {100 * t['mfu_needed']:.0f}%)" if t.get("mfu_needed") is not None else ""

    t = targets["env_sps"]
    print(f"  {t['obs']} env-steps/s >= {t['target']:.0f} (native bf16): {t['value']:.0f} ({t['dtype']}) -> {verdict(t['met'])}"
          f"{needs(t)}")
    for key, label, scale, unit in (("vs_room", "the real room, rgb", 1, "x"),
                                    ("vs_room_latent", "the real room, latent obs", 1, "x"),
                                    ("vs_diamond", "DIAMOND (fp32)", 1, "x"),
                                    ("mfu", "of the matmul peak of the dtype used (MFU)", 100, "%"),
                                    ("dream_vs_real_training_speed", "PPO speed dream/room (transfer.json)", 1, "x")):
        if key in targets:
            t = targets[key]
            print(f"  >= {t['target'] * scale:g}{unit} {label}: {t['value'] * scale:.2f}{unit} -> {verdict(t['met'])}{needs(t)}")
    if "rollout_1440_s" in targets:
        t = targets["rollout_1440_s"]
        print(f"  1,440-frame single-env rollout <= {t['target']:g} s: {t['value']:.1f} s"
              f"{' (extrapolated)' if t['extrapolated'] else ''} -> {verdict(t['met'])}")


if __name__ == "__main__":
    main()
