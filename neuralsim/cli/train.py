"""``neuralsim train autoencoder|dynamics|all``: :func:`neuralsim.train.train` from the command line.

The options are generated from :class:`neuralsim.train.TrainConfig` (:mod:`neuralsim.cli.options`): every field is
an option with the field's name, type, default and comment. :data:`OPTIONS` holds only what the command line adds:
the positional stage, the required ``--data``/``--out``, the two flags named otherwise (``--latent-cache``,
``--set``), choices, and help for the fields that carry no comment.
"""

from __future__ import annotations

import argparse
import json

from neuralsim.cli.options import Option, add_dataclass_arguments, dataclass_from_args


def parse_set(items: list[str]) -> dict:
    """``--set FIELD=JSON`` (repeatable) as the ``config_overrides`` dict; a value that is not JSON stays a string."""
    overrides = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects FIELD=JSON, got {item!r}")
        key, value = item.split("=", 1)
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


#: What the command line adds to TrainConfig's fields (everything else comes from the dataclass).
OPTIONS = {
    "stage": Option(positional=True, choices=("autoencoder", "dynamics", "reward", "prompt", "memory", "views",
                                              "termination", "all"),
                    help="what to train (all = autoencoder, then dynamics; reward: the reward model of --init; "
                         "prompt: the generator of first frames from descriptions of --init; memory: the frame memory "
                         "of --init, on its own dreams of the data; views: the generator of the views around a start "
                         "from its description, on frames of one place at two headings, e.g. --policy turn data; "
                         "termination: a detector of the frame that ends an episode, on --init's own dreams of the "
                         "data's episodes with their real endings)"),
    "reward_kind": Option(choices=("recurrent", "target")),
    "critic_reads": Option(choices=("latents", "frames")),
    "data": Option(required=True, help="dataset directory from `neuralsim collect`"),
    "out": Option(required=True, help="output directory (model + checkpoints + logs)"),
    "preset": Option(help="model size preset (see `neuralsim info --preset NAME`)"),
    "init": Option(help="start from this checkpoint (e.g. a trained autoencoder)"),
    "batch_size": Option(help="training windows per optimisation step (per process under torchrun)"),
    "lr": Option(help="peak learning rate (dynamics; also autoencoder without --ae-lr)"),
    "seed": Option(help="seed of the initial weights, the data order and the noise"),
    "dtype": Option(choices=("auto", "float32", "bfloat16"), help="autocast dtype; auto = bf16 on a GPU that has it, fp32 on a CPU (bf16 autocast trains slower there)"),
    "weight_decay": Option(help="AdamW weight decay"),
    "warmup": Option(help="learning-rate warmup steps"),
    "min_lr_ratio": Option(help="final learning rate of the cosine schedule, as a fraction of the peak"),
    "grad_clip": Option(help="gradient norm clip"),
    "ema_decay": Option(help="decay of the EMA weights (what is exported)"),
    "checkpoint_every": Option(help="steps between resumable checkpoints"),
    "sample_every": Option(help="sample GIF period (0 = never)"),
    "log_every": Option(help="steps between log lines"),
    "keep_checkpoints": Option(help="resumable checkpoints kept"),
    "resume": Option(help="continue from the last checkpoint in --out"),
    "progress": Option(help="progress bar"),
    "stop_after": Option(help="end this run after N steps of the stage (time boxing; continue later with --resume)"),
    "self_forcing": Option(help="dynamics: fraction of batches trained on the model's own rollout as history (0 = "
                                "teacher forcing only; e.g. 0.5 to fine-tune a trained model against drift); reward: "
                                "fraction of windows whose second half the model dreams (real rewards as targets)"),
    "latent_cache_dir": Option(flags=("--latent-cache",), metavar="DIR",
                               help="dynamics: keep the encoded dataset in DIR (named by a fingerprint of the "
                                    "autoencoder and the data) and reuse it in later runs instead of encoding again"),
    "config_overrides": Option(flags=("--set",), append=True, metavar="FIELD=JSON", parse=parse_set,
                               help="override a model config field, e.g. --set width=256 (repeatable)"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from neuralsim.train import TrainConfig

    add_dataclass_arguments(p, TrainConfig, OPTIONS)


def run(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from neuralsim.train import StopTraining, TrainConfig, rank, train

    cfg = dataclass_from_args(TrainConfig, args, OPTIONS)
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
