"""The x0 error of one denoise pass by noise level: does the model use a low-noise input?

Protocol. Windows of real episodes (``--data``, the dataset the model was trained on: this measures the
parameterisation, not generalisation) are encoded by the model's autoencoder; every frame after the first is denoised
once at a fixed noise level tau against the streaming state of the real frames before it, exactly as ``step``'s pass
(``WorldModel.streaming_loss(..., fixed_tau=tau)``, no own history). Reported per tau: the mean squared error of the
model's x0 estimate (normalised latents), and two estimates that use no network: the previous latent, and the
posterior mean of the previous latent (prior variance = the measured mean squared change per step) and the noisy
input (noise tau/(1-tau)): a model whose error at low tau is above that posterior mean ignores its input there, and
a second denoise pass at that level cannot add detail (docs/experiments.md, "what was tried"; DESIGN §3, posterior
skip).

    OMP_NUM_THREADS=1 python benchmarks/x0_error.py --model default --data runs/default/data --quick   # ~20 s
    OMP_NUM_THREADS=1 python benchmarks/x0_error.py --model default --data runs/default/data           # ~1 min

Prints a table; the last line is one JSON object, also written to ``benchmarks/results/x0_error.json``
(``--quick``: ``x0_error_quick.json``; ``--results-dir``, ``--name`` to change).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_standard_args, machine_info, resolve_standard_args, rounded, set_threads, write_result  # noqa: E402

LEVELS = (1.0, 0.7, 0.5, 0.3, 0.2, 0.1)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="checkpoint directory or shipped name")
    parser.add_argument("--data", required=True, help="a dataset directory of the model's world (neuralsim collect)")
    parser.add_argument("--windows", type=int, default=None, help="windows of --steps steps (default 48; --quick 12)")
    parser.add_argument("--steps", type=int, default=8, help="steps per window")
    parser.add_argument("--seed", type=int, default=777, help="which windows (the dataset's window sampler)")
    parser.add_argument("--threads", type=int, default=None)
    add_standard_args(parser, "x0_error", quick_help="12 windows")
    args = parser.parse_args(argv)
    args.windows = args.windows if args.windows is not None else (12 if args.quick else 48)
    resolve_standard_args(parser, args, "x0_error")
    if args.windows < 1 or args.steps < 2:
        parser.error(f"--windows must be >= 1 and --steps >= 2, got {args.windows} and {args.steps}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads or 1)
    from neuralsim.data import Dataset
    from neuralsim.model import WorldModel
    from neuralsim.sampler import posterior_skip

    t0 = time.perf_counter()
    model = WorldModel.from_pretrained(args.model).float().eval()
    batch = next(Dataset(args.data).iter_windows(steps=args.steps, batch_size=args.windows, seed=args.seed))
    with torch.no_grad():
        latents = model.encode(batch["frames"])  # (B, 1 + steps, C, h, w), normalised
        x0, prev = latents[:, 1:], latents[:, :-1]
        change = float((x0 - prev).pow(2).mean())  # the prior variance of a frame around the one before
        result: dict[str, Any] = {"benchmark": "x0_error", "model": args.model, "data": args.data,
                                  "windows": args.windows, "steps": args.steps,
                                  "skip_prior_var": model.config.skip_prior_var, "copy_previous_mse": change}
        rows = []
        for tau in LEVELS:
            _, logs = model.streaming_loss(latents, batch["actions"], generator=torch.Generator().manual_seed(0),
                                           fixed_tau=tau)
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
            noisy = (1 - tau) * x0 + tau * noise
            posterior, _ = posterior_skip(prev, noisy, tau, change)
            post_mse = float((posterior - x0).pow(2).mean())
            key = f"{tau:g}".replace(".", "p")
            result[f"model_mse_tau{key}"] = logs["flow_next"]
            result[f"posterior_mse_tau{key}"] = post_mse
            rows.append((tau, logs["flow_next"], post_mse, change))
    print(f"\nx0 error of one denoise pass (normalised latents, {args.windows} windows of {args.steps} steps, "
          f"model {args.model}):", file=sys.stderr)
    print(f"{'tau':>6s} {'model':>9s} {'posterior':>10s} {'previous':>9s}", file=sys.stderr)
    for tau, m, post, prev_mse in rows:
        print(f"{tau:6.2f} {m:9.4f} {post:10.4f} {prev_mse:9.4f}", file=sys.stderr)
    result["seconds"] = time.perf_counter() - t0
    result["machine"] = machine_info()
    result = rounded(result)
    write_result(result, args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
