"""``neuralsim collect``: record rollouts of any pixel Gymnasium env into a dataset (:func:`neuralsim.data.collect`)."""

from __future__ import annotations

import argparse
import json
import sys

from neuralsim.cli.errors import CLIError


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of ``neuralsim collect`` to ``parser``."""
    from neuralsim.images import RESIZE_MODES

    parser.add_argument("--env", required=True,
                        help="Gymnasium id, e.g. NeuralSimRoom-v0 or CartPole-v1; MODULE:ID imports MODULE first, as "
                             "gym.make does (e.g. ale_py:ALE/Breakout-v5)")
    parser.add_argument("--episodes", type=int, required=True, help="total episodes the dataset should hold")
    parser.add_argument("--out", required=True, help="dataset directory (empty, or an interrupted one with --resume)")
    parser.add_argument("--policy", default="explore", help="random | sticky | explore | scripted | turn | keys | seek | PATH, or several joined by commas "
                        "(e.g. explore,scripted,sticky: each episode draws one) (default: explore)")
    parser.add_argument("--frames-per-step", type=int, default=1, help="env steps (frames) per recorded action (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="parallel collection processes (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="base seed: episode i uses seed + i (default 0)")
    parser.add_argument("--max-steps", type=int, default=None, help="recorded steps per episode at most (default: the env's limit)")
    parser.add_argument("--image-size", default="64",
                        help="stored frame size: 64 or HxW like 64x96, or 'native' for the env's own size (default 64: the "
                             "default model preset's size; train needs multiples of 16)")
    parser.add_argument("--resize", choices=RESIZE_MODES, default="pad",
                        help="frames of another aspect ratio: pad (default: keep the aspect, black borders), crop (keep "
                             "the aspect, cut the sides) or squash (stretch); recorded in the manifest")
    parser.add_argument("--env-kwargs", default=None, help='JSON object of gym.make keyword arguments, e.g. \'{"frameskip": 4}\'')
    parser.add_argument("--episodes-per-shard", type=int, default=16, help="episodes per shard file (default 16)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted collection in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``neuralsim collect`` from parsed arguments; prints a JSON summary."""
    import gymnasium as gym

    import neuralsim  # noqa: F401  (registers NeuralSimRoom-v0)
    from neuralsim.data import collect, validate_collect
    from neuralsim.images import parse_image_size

    env_kwargs = None
    if args.env_kwargs is not None:
        try:
            env_kwargs = json.loads(args.env_kwargs)
        except json.JSONDecodeError as err:
            raise CLIError(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r} ({err})") from None
    native = str(args.image_size).strip().lower() == "native"
    image_size = None if native else args.image_size
    try:
        validate_collect(  # ValueError naming the --option
            env_id=args.env, out=args.out, episodes=args.episodes, policy=args.policy,
            frames_per_step=args.frames_per_step, workers=args.workers, seed=args.seed, max_steps=args.max_steps,
            image_size=image_size, env_kwargs=env_kwargs, resume=args.resume,
            episodes_per_shard=args.episodes_per_shard, cli=True, resize=args.resize,
        )
        summary = collect(
            args.env, args.out, args.episodes, policy=args.policy, frames_per_step=args.frames_per_step,
            workers=args.workers, seed=args.seed, max_steps=args.max_steps, image_size=parse_image_size(image_size),
            env_kwargs=env_kwargs, resume=args.resume, episodes_per_shard=args.episodes_per_shard,
            progress=not args.no_progress, resize=args.resize,
        )
    except (TypeError, gym.error.Error) as err:  # gym.make refused --env-kwargs (or the env's own checks)
        raise CLIError(f"gym.make({args.env!r}, **--env-kwargs) failed: {err}") from None
    native_size, size = summary.get("native_image_size"), summary.get("image_size")
    if native_size and size and list(native_size) != list(size):
        how = {"pad": "aspect kept, black borders", "crop": "aspect kept, sides cut", "squash": "stretched"}[summary["resize"]]
        same_aspect = native_size[0] * size[1] == native_size[1] * size[0]
        print(f"neuralsim collect: note: {args.env} frames are {native_size[0]}x{native_size[1]}, stored at "
              f"{size[0]}x{size[1]}" + ("" if same_aspect else f" (--resize {summary['resize']}: {how})")
              + "; --image-size HxW or native to change", file=sys.stderr)
    print(json.dumps(summary))
    return 0
