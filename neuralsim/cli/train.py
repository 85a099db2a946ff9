"""``neuralsim train autoencoder|dynamics|all``: the options of :class:`neuralsim.train.TrainConfig`, then
:func:`neuralsim.train.train` (single process, or DDP under ``torchrun``)."""

from __future__ import annotations

import argparse
import json

from neuralsim.cli.errors import CLIError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from neuralsim.train import STAGES, TrainConfig

    d = TrainConfig()
    p.add_argument("stage", choices=STAGES + ("all",), help="what to train")
    p.add_argument("--data", required=True, help="dataset directory from `neuralsim collect`")
    p.add_argument("--out", required=True, help="output directory (model + checkpoints + logs)")
    p.add_argument("--preset", default=d.preset, help=f"model size preset (default {d.preset!r})")
    p.add_argument("--init", default=None, help="start from this checkpoint (e.g. a trained autoencoder)")
    p.add_argument("--steps", type=int, default=d.steps, help="optimisation steps (of dynamics, for 'all')")
    p.add_argument("--ae-steps", type=int, default=None, help="autoencoder steps for 'all' (default steps/2)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--window", type=int, default=d.window, help="env steps per training window")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (dynamics; also autoencoder without --ae-lr)")
    p.add_argument("--ae-lr", type=float, default=None, help="peak learning rate of the autoencoder stage")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--dtype", default=d.dtype, choices=("auto", "float32", "bfloat16"),
                   help="autocast dtype; auto = bf16 only where native")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--sample-every", type=int, default=d.sample_every, help="sample GIF period (0 = never)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--stop-after", type=int, default=None, help="end this run after N steps of the stage "
                                                                 "(time boxing; continue later with --resume)")
    p.add_argument("--self-forcing", type=float, default=d.self_forcing,
                   help="dynamics: fraction of batches trained on the model's own rollout as history (0 = teacher "
                        "forcing only; e.g. 0.5 to fine-tune a trained model against drift)")
    p.add_argument("--self-forcing-frames", type=int, default=d.self_forcing_frames,
                   help=f"the longest own rollout used as history, in latent frames (default {d.self_forcing_frames})")
    p.add_argument("--still-windows", type=float, default=d.still_windows,
                   help="dynamics: fraction of windows replaced by their first frame held under the zero action "
                        "(reward 0), for worlds where the zero action does nothing, such as the room (default 0)")
    p.add_argument("--latent-cache", default=None, metavar="DIR",
                   help="dynamics: keep the encoded dataset in DIR (named by a fingerprint of the autoencoder and the "
                        "data) and reuse it in later runs instead of encoding again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="override a model config field, e.g. --set width=256 (repeatable)")


def run(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from neuralsim.train import StopTraining, TrainConfig, rank, train

    overrides = {}
    for item in args.set:
        if "=" not in item:
            raise CLIError(f"--set expects FIELD=JSON, got {item!r}")
        key, value = item.split("=", 1)
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    cfg = TrainConfig(stage=args.stage, data=args.data, out=args.out, preset=args.preset, init=args.init,
                      steps=args.steps, ae_steps=args.ae_steps, batch_size=args.batch_size, window=args.window,
                      lr=args.lr, ae_lr=args.ae_lr, seed=args.seed, dtype=args.dtype, checkpoint_every=args.checkpoint_every,
                      sample_every=args.sample_every, resume=args.resume, progress=not args.no_progress,
                      stop_after=args.stop_after, self_forcing=args.self_forcing,
                      self_forcing_frames=args.self_forcing_frames, config_overrides=overrides,
                      latent_cache_dir=args.latent_cache, still_windows=args.still_windows)
    try:
        out = train(cfg)  # TrainingError (a ValueError) before any work: the user's error
    except StopTraining as stop:
        print(f"stopped after step {stop.args[0]} (--stop-after); continue with --resume")
        return 0
    if rank() == 0:
        print(f"model written to {out} (load with WorldModel.from_pretrained({str(out)!r}))")
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # leave together: a rank tearing gloo down while another still talks to it aborts
        dist.destroy_process_group()
    return 0
