"""``neuralsim eval``: evaluations that need the RL side (``eval transfer``: policy transfer from dream to real).

The benchmark is :func:`neuralsim.agents.transfer.run_transfer_benchmark`; this module reads its options into a
:class:`~neuralsim.agents.transfer.TransferConfig`, checks them and the outputs before any work, and prints the
table and the JSON line. ``benchmarks/transfer.py`` reuses :func:`add_transfer_arguments` and :func:`run_transfer`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from neuralsim.checkpoints import ensure_writable_dir, ensure_writable_file
from neuralsim.cli.errors import CLIError


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="evaluation", metavar="EVALUATION", required=True)
    t = sub.add_parser("transfer", help="PPO trained in the dream vs in the real room, evaluated in the real room",
                       description="Train SB3 PPO only in SanaWM-v0 and, with the same budget, directly in "
                                   "NeuralSimRoom-v0; evaluate both and a random policy in the real room.")
    add_transfer_arguments(t)


def run(args: argparse.Namespace) -> int:
    return run_transfer(args)


def add_transfer_arguments(t: argparse.ArgumentParser) -> None:
    from neuralsim.agents.transfer import TransferConfig

    d = TransferConfig()
    t.add_argument("--model", default=d.model, help="world model name or checkpoint dir (default: default)")
    t.add_argument("--timesteps", type=int, default=None, help=f"PPO env steps in each world (default {d.timesteps:,})")
    t.add_argument("--seeds", type=int, default=None, help=f"training seeds (default {d.seeds})")
    t.add_argument("--episodes", type=int, default=None, help=f"real evaluation episodes per seed (default {d.episodes})")
    t.add_argument("--num-envs", type=int, default=None, help=f"parallel envs while training (default {d.num_envs})")
    t.add_argument("--checkpoints", type=int, default=None, help=f"policies saved along each training (default {d.checkpoints})")
    t.add_argument("--max-episode-steps", type=int, default=None, help=f"episode limit (default {d.max_episode_steps})")
    t.add_argument("--workdir", default=None, help=f"where policies and GIFs go (default {d.workdir}; with --quick a new "
                                                  "temporary directory, so a smoke run leaves nothing in the current one)")
    t.add_argument("--out", default=None, help="results JSON (default WORKDIR/transfer.json; transfer-quick.json with --quick)")
    t.add_argument("--keys", default=None, help="discrete key-set actions in both worlds, comma-separated (default "
                                               f"{','.join(d.keys)}: walk and turn), or 'box' for the continuous "
                                               "Box(4) camera actions")
    t.add_argument("--obs", choices=("rgb", "latent"), default=d.obs,
                   help="what the agents observe: rgb frames (default) or the world model's latent frames (the dream "
                        "skips its decoder; real frames go through the checkpoint's encoder)")
    t.add_argument("--rgb-extractor", choices=("impala", "nature"), default=d.rgb_extractor,
                   help="the rgb policy's CNN: impala (default: neuralsim.policy.ImpalaCNN, sees a few-pixel target) "
                        "or nature (SB3's NatureCNN)")
    t.add_argument("--latent-extractor", choices=("auto", "pretrained", "cells", "cnn"), default=d.latent_extractor,
                   help="with --obs latent, the policy's CNN: pretrained (neuralsim.policy.LatentCellCNN taught where "
                        "the dream's target is before PPO, neuralsim.agents.pretrain; needs a model with a target "
                        "tracker), cells (LatentCellCNN) or cnn (LatentCNN), both from PPO alone; auto (default): "
                        "pretrained where the model has a target tracker, else cnn")
    t.add_argument("--pretrain-on", choices=("real", "dream"), default=d.pretrain_on,
                   help="what the pretrained latent extractor is taught on, labelled by the model's target tracker: real "
                        "(default: frames of the real env, no reward read) or dream (the model's own dreams)")
    t.add_argument("--latent-source", choices=("dynamics", "frames"), default=d.latent_source,
                   help="with --obs latent, where the dream's latent observations come from: dynamics (default: the "
                        "latent frames the dynamics commit, nothing decoded; its agents did not transfer to the room) "
                        "or frames (the dream's decoded frames, with the frame memory's correction, encoded again as "
                        "the real env's are: a decode and an encode per dream step)")
    t.add_argument("--task", action="append", default=[], metavar="OPTION=JSON",
                   help="a task option of the real env (its TASK_OPTIONS) for both worlds, e.g. ball_start='\"thrown\"'; "
                        "repeatable (default: the env's TRANSFER_TASK, the room's ball at rest)")
    t.add_argument("--dream-starts", type=int, default=None,
                   help=f"the dream's training episodes start from the first frames of this many real layouts of the "
                        f"task (default {d.dream_starts}; 0: from the checkpoint's start set)")
    t.add_argument("--compile", action="store_true", help="the dream envs with compile=True (torch.compile of the "
                   "world model's step: faster after up to a minute of compiling, which the dream's wall clock counts)")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run in --workdir: a world and seed "
                   "whose training finished there with the same budget and settings is not trained again")
    t.add_argument("--quick", action="store_true", help="tiny budgets: the whole pipeline in a few minutes (not a score)")


def config_from_args(args: argparse.Namespace):
    """The :class:`~neuralsim.agents.transfer.TransferConfig` of parsed ``eval transfer`` options."""
    from neuralsim.agents.transfer import TransferConfig, parse_task_options

    overrides = {k: getattr(args, k) for k in ("timesteps", "seeds", "episodes", "num_envs", "checkpoints", "max_episode_steps",
                                               "dream_starts")
                 if getattr(args, k, None) is not None}
    if getattr(args, "task", None):  # none given: the env's transfer task (TransferConfig.real_task None)
        overrides["real_task"] = parse_task_options(args.task)
    workdir = args.workdir
    if workdir is None:
        workdir = tempfile.mkdtemp(prefix="neuralsim-transfer-quick-") if args.quick else TransferConfig.workdir
    base = dict(model=args.model, workdir=workdir, obs=getattr(args, "obs", None) or "rgb",
                compile=bool(getattr(args, "compile", False)), resume=bool(getattr(args, "resume", False)),
                rgb_extractor=getattr(args, "rgb_extractor", None) or TransferConfig.rgb_extractor,
                latent_extractor=getattr(args, "latent_extractor", None) or TransferConfig.latent_extractor,
                pretrain_on=getattr(args, "pretrain_on", None) or TransferConfig.pretrain_on,
                latent_source=getattr(args, "latent_source", None) or TransferConfig.latent_source, **overrides)
    if getattr(args, "keys", None):
        base["keys"] = None if args.keys == "box" else tuple(args.keys.split(","))
    base["out"] = args.out if args.out is not None else str(Path(workdir) / ("transfer-quick.json" if args.quick
                                                                              else "transfer.json"))
    return TransferConfig.quick_config(**base) if args.quick else TransferConfig(**base)


def run_transfer(args: argparse.Namespace) -> int:
    """``neuralsim eval transfer``: prints the table, then the results as one JSON line."""
    from neuralsim.agents.transfer import check_task_options, format_table, real_env_spec, run_transfer_benchmark
    from neuralsim.checkpoints import resolve_checkpoint

    try:
        cfg = config_from_args(args)
        cfg.validate(cli=True)
        resolve_checkpoint(cfg.model, "--model")
        check_task_options(real_env_spec(cfg.model, {})[0], cfg.real_task)
    except FileNotFoundError as exc:  # a missing checkpoint is the user's error here (ValueError already is)
        raise CLIError(str(exc)) from None
    ensure_writable_file(cfg.out, "--out", (".json",))
    ensure_writable_dir(cfg.workdir, "--workdir")
    results = run_transfer_benchmark(cfg, log=lambda msg: print(msg, flush=True))
    print(format_table(results))
    print(f"results: {cfg.out}; policies and GIF: {cfg.workdir}")
    print(json.dumps(results))
    return 0
