"""Throughput of the native world model: latent frames/s per denoise pass and env-steps/s.

For each dtype (fp32, bf16 through ``torch.autocast``) and batch size (1, 16, 64) it measures:

- ``pass_fps``: latent frames/s of one dynamics pass (one Euler step of the next frame against the state,
  the per-frame path without commit);
- ``step_sps``: ``WorldModel.step`` (all denoise passes + commit) in latent frames/s;
- ``env_sps``: env-steps/s of ``step`` + ``decode`` (what a ``WorldModelEnv`` with rgb observations pays);
- ``decode_fps`` / ``encode_fps``: the autoencoder alone, frames/s.

The shipped model (``--model default``) or a checkpoint directory; ``--random-weights`` builds the named
preset with random weights instead (speed does not depend on them). On a CPU without native bf16 (AVX2
only) bf16 is emulated and far slower than fp32: that is reported, not hidden.

``--reference`` also times ``step`` on the reference path (``model.fast_streaming = False``: the full
``DynamicsTransformer.forward`` per denoise pass), interleaved with the fast path in the same process, so
the speed-up of the per-frame path is a same-run ratio (``step_ref_ms``, ``fast_speedup``).
``--compile`` runs ``step`` through ``WorldModel.compile_streaming()`` (compiles once per batch size).

Usage::

    python benchmarks/model_step.py            # full run (a few minutes on 2 cores)
    python benchmarks/model_step.py --quick    # about a minute
    OMP_NUM_THREADS=1 python benchmarks/model_step.py --quick --threads 1 --dtypes fp32 --reference

Prints a table, then one JSON object as the last line (also written to benchmarks/results/model_step.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from neuralsim.checkpoints import atomic_write_text
from neuralsim.config import WorldModelConfig
from neuralsim.device import bf16_is_native
from neuralsim.model import WorldModel, describe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import timeit as _timeit  # noqa: E402  (shared benchmark helpers)


def best_of(fns: dict[str, object], *, repeats: int, calls: int) -> dict[str, float]:
    """Seconds per call of each function: the best of ``repeats`` rounds of ``calls`` calls, rounds interleaved
    (A, B, A, B, ...) so that both see the same load on a shared machine."""
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / calls)
    return best


def measure_reference(model: WorldModel, batch: int, *, quick: bool, denoise_steps: int | None) -> dict:
    """``step`` on the fast per-frame path vs the reference path, interleaved in this process (fp32)."""
    cfg = model.config
    H, W = cfg.image_size
    g = torch.Generator().manual_seed(0)
    frames = np.random.default_rng(0).integers(0, 256, (batch, 1, H, W, 3), dtype=np.uint8)
    actions = np.random.default_rng(1).uniform(-1, 1, (batch, cfg.action_dim)).astype(np.float32)

    def step(fast: bool):
        def run():
            model.fast_streaming = fast
            model.step(state, actions, generator=g, denoise_steps=denoise_steps)
        return run

    with torch.inference_mode():
        state = model.init_state(batch, frames=frames, prompt="a red ball near the blue wall", generator=g)
        t = best_of({"ref": step(False), "fast": step(True)}, repeats=3 if quick else 7, calls=max(2, 100 // batch))
    model.fast_streaming = True
    return {"step_ref_ms": 1e3 * t["ref"], "step_fast_ms": 1e3 * t["fast"], "fast_speedup": t["ref"] / t["fast"]}


def measure_denoise_steps(model: WorldModel, batch: int, steps: list[int], *, quick: bool, decode_ms: float) -> dict:
    """``step`` at each number of Euler steps, interleaved in this process (fp32); env-steps/s adds ``decode_ms``."""
    cfg = model.config
    H, W = cfg.image_size
    g = torch.Generator().manual_seed(0)
    frames = np.random.default_rng(0).integers(0, 256, (batch, 1, H, W, 3), dtype=np.uint8)
    actions = np.random.default_rng(1).uniform(-1, 1, (batch, cfg.action_dim)).astype(np.float32)
    with torch.inference_mode():
        state = model.init_state(batch, frames=frames, prompt="a red ball near the blue wall", generator=g)
        t = best_of({n: (lambda n=n: model.step(state, actions, generator=g, denoise_steps=n)) for n in steps},
                    repeats=3 if quick else 7, calls=max(2, 100 // batch))
    return {str(n): {"step_ms": 1e3 * t[n], "env_sps": batch / (t[n] + decode_ms / 1e3)} for n in steps}


def measure(model: WorldModel, batch: int, dtype: str, *, min_iters: int, max_seconds: float) -> dict:
    cfg = model.config
    H, W = cfg.image_size
    g = torch.Generator().manual_seed(0)
    frames = np.random.default_rng(0).integers(0, 256, (batch, 1, H, W, 3), dtype=np.uint8)
    actions = np.zeros((batch, cfg.action_dim), np.float32) if cfg.action_spec["type"] == "box" else np.zeros(batch, np.int64)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()
    with torch.no_grad(), ctx:
        state = model.init_state(batch, frames=frames, generator=g)
        latent, state = model.step(state, actions, generator=g)
        # one dynamics pass of the next frame against the state
        act, known, rays, _, _, rel, _, _ = model._sequence_conditioning(batch, 2, actions[:, None], "actions")
        x = torch.randn(batch, 1, cfg.tokens_per_frame, cfg.token_channels, generator=g)
        tau = torch.full((batch, 1), 0.5)
        kw = dict(start=state.step, action=act[:, 1:], action_known=known[:, 1:], text=state.text_kv,
                  text_mask=state.text_mask, cache=state.cache, rays=None if rays is None else rays[:, 1:])
        if cfg.prev_frame_input:
            kw.update(prev=model._tokens(state.latent[:, None]), rel_rays=None if rel is None else rel[:, 1:])
        frame = model.dynamics.prepare_frame(**kw)  # what every denoise pass of the frame shares
        t_pass = _timeit(lambda: model.dynamics(x, tau, frame=frame, commit=False), min_iters=min_iters, max_seconds=max_seconds)
        t_step = _timeit(lambda: model.step(state, actions, generator=g), min_iters=min_iters, max_seconds=max_seconds)
        t_dec = _timeit(lambda: model.decode(latent[:, None], first_frame=False), min_iters=min_iters, max_seconds=max_seconds)
        t_enc = _timeit(lambda: model.encode(frames), min_iters=min_iters, max_seconds=max_seconds)
    return {
        "dtype": dtype, "batch": batch,
        "pass_fps": batch / t_pass, "step_sps": batch / t_step, "env_sps": batch / (t_step + t_dec),
        "decode_fps": batch / t_dec * cfg.frames_per_latent, "encode_fps": batch / t_enc,
        "pass_ms": 1e3 * t_pass, "step_ms": 1e3 * t_step, "decode_ms": 1e3 * t_dec,
    }


def _rounded(value):
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="checkpoint directory or shipped model name (default: default)")
    parser.add_argument("--random-weights", action="store_true", help="the preset named by --model, random weights")
    parser.add_argument("--reference", action="store_true", help="also time step on the reference path (same run)")
    parser.add_argument("--compile", action="store_true", help="step through WorldModel.compile_streaming()")
    parser.add_argument("--denoise-steps", type=int, default=None, help="Euler steps per env step (default: the model's)")
    parser.add_argument("--compare-steps", type=int, nargs="*", default=None,
                        help="also time step at each of these denoise_steps, interleaved (same run), fp32")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--quick", action="store_true", help="about a minute: fewer repeats, bf16 only at batch 1")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "model_step.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if not args.random_weights:
        model = WorldModel.from_pretrained(args.model)
        name = str(args.model)
    else:
        torch.manual_seed(0)  # a script may seed globally; the library never does
        model = WorldModel(WorldModelConfig.from_preset(args.model)).eval()
        name = f"preset:{args.model} (random weights)"
    if args.denoise_steps is not None:
        model.config = model.config.replace(denoise_steps=args.denoise_steps)
    if args.compile:
        model.compile_streaming()
    cfg = model.config
    rows = []
    for dtype in args.dtypes:
        for batch in args.batch:
            if args.quick and dtype == "bf16" and batch > 1:
                continue
            slow = dtype == "bf16" and not bf16_is_native("cpu")
            budget = (2.0 if args.quick else 6.0) * (3 if slow else 1)
            rows.append(measure(model, batch, dtype, min_iters=1 if (slow or args.quick) else 3, max_seconds=budget))
            r = rows[-1]
            if args.reference and dtype == "fp32":
                r.update(measure_reference(model, batch, quick=args.quick, denoise_steps=args.denoise_steps))
                print(f"fp32 B={batch:<3} step: reference path {r['step_ref_ms']:.2f} ms, fast path {r['step_fast_ms']:.2f} ms "
                      f"-> {r['fast_speedup']:.3f}x", file=sys.stderr, flush=True)
            if args.compare_steps and dtype == "fp32":
                r["by_denoise_steps"] = measure_denoise_steps(model, batch, args.compare_steps, quick=args.quick,
                                                              decode_ms=r["decode_ms"])
                print(f"fp32 B={batch:<3} " + ", ".join(f"denoise_steps={n}: step {v['step_ms']:.2f} ms, env {v['env_sps']:.0f}/s"
                                                      for n, v in r["by_denoise_steps"].items()), file=sys.stderr, flush=True)
            print(f"{dtype:>5} B={batch:<3} pass {r['pass_fps']:9.0f} fr/s   step {r['step_sps']:8.0f} /s   "
                  f"env (step+decode) {r['env_sps']:8.0f} /s   decode {r['decode_fps']:8.0f} fr/s   "
                  f"encode {r['encode_fps']:8.0f} fr/s", file=sys.stderr, flush=True)

    info = describe(cfg)
    header = f"{'dtype':>5} {'batch':>5} {'pass fr/s':>10} {'step /s':>9} {'env /s':>9} {'decode fr/s':>12} {'encode fr/s':>12}"
    print(f"\nmodel {name}: {info['parameters']['total']:,} params "
          f"(dynamics {info['parameters']['dynamics']:,}, autoencoder {info['parameters']['autoencoder']:,}); "
          f"{cfg.tokens_per_frame} tokens/latent frame; denoise_steps={cfg.denoise_steps}, fused_commit={cfg.fused_commit}")
    print(header)
    for r in rows:
        print(f"{r['dtype']:>5} {r['batch']:>5} {r['pass_fps']:>10.0f} {r['step_sps']:>9.0f} {r['env_sps']:>9.0f} "
              f"{r['decode_fps']:>12.0f} {r['encode_fps']:>12.0f}")
    result = {
        "benchmark": "model_step",
        "model": name,
        "quick": args.quick,
        "parameters": info["parameters"],
        "tokens_per_latent_frame": cfg.tokens_per_frame,
        "denoise_steps": cfg.denoise_steps,
        "fused_commit": cfg.fused_commit,
        "compiled": args.compile,
        "rows": [_rounded(r) for r in rows],
        "machine": {
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
    }
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
