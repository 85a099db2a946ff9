"""``neuralsim play``: drive a dream live with the keyboard (:class:`neuralsim.play.Player` over a
:class:`neuralsim.session.DreamSession`), record it, log it."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from neuralsim.checkpoints import ensure_writable_file
from neuralsim.cli.errors import CLIError, check_positive
from neuralsim.cli.rollout import add_start_arguments, open_session, parse_start_inputs

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_start_arguments(p)
    p.add_argument("--seed", type=int, default=0,
                   help="sampling seed, as `neuralsim rollout --seed` (episode e: seed+e)")
    p.add_argument("--scale", type=int, default=8, help="window and recording upscaling factor (nearest)")
    p.add_argument("--fps", type=int, default=15, help="display frames per second (and of the recording)")
    p.add_argument("--denoise-steps", type=int, default=None, help="Euler steps per frame (default: the model's; "
                                                                     "key t cycles 1/2/4)")
    p.add_argument("--record", help="record the session to FILE.mp4 or FILE.gif (dream | real, upscaled)")
    p.add_argument("--log", help="write each episode's actions as a key-DSL line to FILE (replay with "
                                 "`neuralsim rollout --actions`)")
    p.add_argument("--actions", help="drive with a key-DSL script instead of the keyboard, e.g. 'w-24,l-16'")
    p.add_argument("--steps", type=int, default=None, help="end the session after N env steps")
    p.add_argument("--no-real", action="store_true", help="no side-by-side real env even if the model came from one")
    p.add_argument("--headless", action="store_true", help="no window (SDL dummy driver); needs --actions or --steps "
                                                           "and an output (--record, --log or --screenshot)")
    p.add_argument("--screenshot", help="save the window to FILE.png when the session ends")


def run(args: argparse.Namespace) -> int:
    from neuralsim.play import (SCREENSHOT_SUFFIXES, VIDEO_SUFFIXES, NoDisplayError, Player, RealEnv, VideoRecorder,
                                import_pygame)

    from neuralsim.limits import MAX_DENOISE_STEPS

    check_positive(args, "steps", "fps", "scale", "denoise_steps", at_most={"denoise_steps": MAX_DENOISE_STEPS})
    if args.record is not None and Path(args.record).suffix.lower() not in VIDEO_SUFFIXES:
        raise CLIError(f"--record {args.record!r} must end with .mp4 or .gif")
    if args.screenshot is not None and Path(args.screenshot).suffix.lower() not in SCREENSHOT_SUFFIXES:
        raise CLIError(f"--screenshot {args.screenshot!r} must end with one of {', '.join(SCREENSHOT_SUFFIXES)}")
    if args.headless and args.actions is None and args.steps is None:
        raise CLIError("--headless has no keyboard: drive it with --actions 'w-24,l-16' (or idle for --steps N)")
    if args.headless and not (args.record or args.log or args.screenshot):
        raise CLIError("--headless shows nothing: pass --record FILE.mp4|.gif, --log FILE or --screenshot FILE.png")
    try:
        import_pygame()
    except ImportError as exc:
        raise CLIError(str(exc)) from None

    session = open_session(args, "pass --model DIR", num_threads="auto")  # fp32, as rollout
    model_arg = str(Path(args.model).resolve()) if Path(args.model).is_dir() else args.model
    checkpoint_arg = None if args.checkpoint is None else str(Path(args.checkpoint).resolve())

    image = parse_start_inputs(args.image, args.prompt, image_size=session.image_size,
                               num_start_frames=len(session.start_frames), start_index=args.start_index,
                               checkpoint=session.checkpoint_dir or checkpoint_arg,
                               resize=session.resize_mode)  # as the model's training frames were (squash if unrecorded)
    if args.prompt is not None and not session.text_conditioned:
        raise CLIError(f"--prompt: model {args.model!r} has no text conditioning; start from --image FILE instead")
    script = None
    if args.actions is not None:
        try:
            script = session.keys_to_actions(args.actions)
        except ValueError as exc:
            raise CLIError(f"--actions: {exc}") from None

    real = None
    if not args.no_real and image is None and args.prompt is None and args.start_index is None:
        real, why = RealEnv.for_model(session)
        if real is None:
            logger.info("play: no side-by-side real env: %s", why)
    player = Player(session, seed=args.seed, denoise_steps=args.denoise_steps, image=image, image_path=None if
                    args.image is None else str(Path(args.image).resolve()), prompt=args.prompt,
                    start_index=args.start_index, real=real, script=script, max_steps=args.steps, scale=args.scale,
                    fps=args.fps, model_arg=model_arg, checkpoint_arg=checkpoint_arg)
    try:
        player.open_window(headless=args.headless)
    except NoDisplayError as exc:
        if real is not None:
            real.close()
        raise CLIError(f"no display available for the play window ({exc}). Without a window: "
                       "`neuralsim play --headless --actions 'w-24,l-16' --record out.mp4`, or "
                       "`neuralsim rollout --actions 'w-24,l-16' --out out.mp4`") from None
    commands: list = []
    try:
        # Every input is valid and the window is open: only now create outputs.
        for option, value in (("--record", args.record), ("--log", args.log), ("--screenshot", args.screenshot)):
            if value is not None:
                ensure_writable_file(value, option, [Path(value).suffix.lower()])
        if args.record is not None:
            try:
                player.recorder = VideoRecorder(args.record, fps=args.fps)
            except RuntimeError as exc:
                raise CLIError(f"--record: {exc}") from None
        player.reset()
        player.run()
    finally:
        commands = player.close(log=args.log, screenshot=args.screenshot)
    print(json.dumps({**player.summary(commands if args.log else None), "log": args.log}))
    return 0
