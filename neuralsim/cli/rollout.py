"""``neuralsim rollout``: dream from a start frame, an image or a prompt, to a GIF/MP4 or to dream episodes.

The dreaming itself is :func:`neuralsim.rollout.dream` over a :class:`neuralsim.session.DreamSession`; this module
reads the options, checks them before any work, and writes the outputs. :func:`add_start_arguments`,
:func:`open_session` and :func:`parse_start_inputs` are shared with ``neuralsim play``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neuralsim.checkpoints import ensure_writable_dir, ensure_writable_file
from neuralsim.cli.errors import CLIError, check_positive

if TYPE_CHECKING:
    from neuralsim.session import DreamSession


def add_start_arguments(p: argparse.ArgumentParser) -> None:
    """--model [--checkpoint] and where the dream starts (--image | --prompt | --start-index): shared by rollout and
    play."""
    p.add_argument("--model", default="default", help="model name (see `neuralsim info`) or checkpoint directory")
    p.add_argument("--checkpoint", default=None, help="with --model sana-wm-2.6b: the directory of its weights in "
                                                      "diffusers format (extra [sana])")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", help="start from this image file (fitted to the model's size as its training frames "
                                     "were: padded, cropped or squashed, per the checkpoint's provenance)")
    src.add_argument("--prompt", help="start from a text prompt (the model generates the first frame)")
    src.add_argument("--start-index", type=int, default=None, help="start frame index in the checkpoint's start set")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_start_arguments(p)
    drive = p.add_mutually_exclusive_group()
    drive.add_argument("--actions", help="key-DSL string, e.g. 'w-40,l-20,d-10' (w/s forward/back, a/d strafe, "
                                         "j/l yaw, i/k pitch)")
    drive.add_argument("--policy", choices=("random",), help="drive with a random policy for --steps")
    p.add_argument("--steps", type=int, default=None, help="env steps (default: length of --actions, else 64)")
    p.add_argument("--episodes", type=int, default=1, help="with --out DIR: number of dream episodes to write")
    p.add_argument("--out", required=True, help="FILE.gif | FILE.mp4 (a video) or DIR (dream episodes as shards)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--denoise-steps", type=int, default=None, help="Euler steps per frame (default: the model's)")
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--scale", type=int, default=4, help="video upscaling factor (nearest), for visibility")
    p.add_argument("--overlap", choices=("thread", "process", "none"), default="thread",
                   help="where each step's frame is decoded while the dynamics draws the next ones: a second thread "
                        "(default), shared with a child process (a native model on the CPU; 2-4 s to start; the "
                        "fastest for long rollouts, with --compile above all), or none (in order); the same frames "
                        "either way")
    p.add_argument("--compile", action="store_true",
                   help="run a native model's per-frame pass through torch.compile (15-80 s of compiling first; the "
                        "frames differ from eager by float rounding; needs a C++ compiler)")


def open_session(args: argparse.Namespace, missing_hint: str, **kwargs: Any) -> DreamSession:
    """The fp32 :class:`~neuralsim.session.DreamSession` of ``--model`` (and ``--checkpoint``); a model that cannot
    be loaded is a :class:`CLIError` naming ``--model`` (``missing_hint`` follows the missing-default message)."""
    from neuralsim.checkpoints import (DEFAULT_MODEL_MISSING, OFFICIAL_MODEL_NAME, default_model_missing,
                                       resolve_checkpoint)
    from neuralsim.session import DreamSession

    official = args.model == OFFICIAL_MODEL_NAME
    if args.checkpoint is not None and not official:
        raise CLIError(f"--checkpoint is for --model {OFFICIAL_MODEL_NAME}; pass a neuralsim checkpoint as --model DIR")
    if official and args.checkpoint is None:
        raise CLIError(f"--model {OFFICIAL_MODEL_NAME} needs --checkpoint DIR: the official weights in diffusers "
                       "format (e.g. a local copy of Efficient-Large-Model/SANA-WM_bidirectional-diffusers)")
    try:
        model = args.model if official else resolve_checkpoint(args.model, "--model")
        return DreamSession(model, checkpoint=args.checkpoint, dtype="float32", **kwargs)  # fp32: exact replays
    except ImportError as exc:  # the [sana] extra
        raise CLIError(str(exc)) from None
    except (ValueError, TypeError, FileNotFoundError) as exc:  # also torn or mismatched weights
        if default_model_missing(args.model):
            raise CLIError(f"{DEFAULT_MODEL_MISSING}; {missing_hint}") from None
        raise CLIError(str(exc) if "--model" in str(exc) else f"--model {args.model!r}: {exc}") from None


def parse_start_inputs(image: str | None, prompt: str | None, *, image_size: tuple[int, int], num_start_frames: int,
                       start_index: int | None, checkpoint: str | Path, resize: str = "squash") -> np.ndarray | None:
    """Check the start of a dream (``--image`` / ``--prompt`` / the start set); shared by rollout and play.

    Args:
        image: the ``--image`` path, or None.
        prompt: the ``--prompt`` text, or None.
        image_size: ``(H, W)`` the model expects; the image is resized to it (see ``resize``).
        num_start_frames: how many frames the checkpoint's start set holds.
        start_index: the ``--start-index``, or None.
        checkpoint: the checkpoint directory, named in the "no start frames" message.
        resize: how an image of another size becomes ``image_size`` (``"pad"``, ``"crop"`` or ``"squash"``):
            the model's recorded mode, ``resize_mode_of(model.config)``.

    Returns:
        The ``--image`` as uint8 ``[H, W, 3]``, or None without ``--image``.

    Raises:
        ValueError: an unreadable image or an invalid prompt (the library's message).
        CLIError: without either, an empty start set or a ``--start-index`` outside it.
    """
    from neuralsim.rollout import read_image
    from neuralsim.text import validate_prompts

    frame = None
    if image is not None:
        frame = read_image(image, tuple(image_size), resize=resize)
    if prompt is not None:
        validate_prompts(prompt, name="--prompt")
    if frame is None and prompt is None:
        if num_start_frames == 0:
            raise CLIError(f"{checkpoint} has no start_frames.safetensors; pass --image FILE or --prompt TEXT")
        if start_index is not None and not 0 <= start_index < num_start_frames:
            raise CLIError(f"--start-index must be in [0, {num_start_frames}), got {start_index}")
    return frame


def run(args: argparse.Namespace) -> int:
    from neuralsim.actions import MAX_ACTION_FRAMES
    from neuralsim.limits import MAX_DENOISE_STEPS
    from neuralsim.rollout import VIDEO_SUFFIXES, dream, write_video

    check_positive(args, "steps", "episodes", "fps", "scale", "denoise_steps",
                   at_most={"denoise_steps": MAX_DENOISE_STEPS, "steps": MAX_ACTION_FRAMES})  # kept in memory
    to_video = Path(args.out).suffix.lower() in VIDEO_SUFFIXES
    if not to_video and Path(args.out).suffix:
        raise CLIError(f"--out {args.out!r}: expected FILE.gif, FILE.mp4 or a directory")
    from neuralsim.checkpoints import OFFICIAL_MODEL_NAME

    if args.model == OFFICIAL_MODEL_NAME and (args.compile or args.overlap == "process"):
        raise CLIError(f"--{'compile' if args.compile else 'overlap process'} is for a native model; --model "
                       f"{OFFICIAL_MODEL_NAME} runs eagerly in this process (use --overlap thread)")
    session = open_session(args, "train one with `neuralsim train all --data DIR --out DIR` and pass --model DIR",
                           compile=args.compile)
    source = session.checkpoint_dir or Path(args.checkpoint)
    k = session.frames_per_step
    starts, descriptions = session.start_frames, session.start_descriptions

    try:
        keyed = None if args.actions is None else session.keys_to_actions(args.actions)
    except ValueError as exc:
        raise CLIError(f"--actions: {exc}") from None
    steps = args.steps or (len(keyed) if keyed is not None else 64)
    image = parse_start_inputs(args.image or None, args.prompt, image_size=session.image_size,
                               num_start_frames=len(starts), start_index=args.start_index, checkpoint=source,
                               resize=session.resize_mode)  # as the model's training frames were (squash if unrecorded)
    # Every input is valid: only now create the output location (a failed run leaves nothing behind).
    if to_video:
        ensure_writable_file(args.out, "--out", VIDEO_SUFFIXES)
    else:
        ensure_writable_dir(args.out, "--out")

    episodes = []
    rng = np.random.default_rng(args.seed)
    try:
        for e in range(args.episodes if not to_video else 1):
            prompt, start = args.prompt, None
            if image is not None:
                start = image
            elif args.prompt is None:
                index = args.start_index if args.start_index is not None else int(rng.integers(len(starts)))
                start = starts[index]
                prompt = descriptions[index] if index < len(descriptions) else None
            try:
                result = dream(session, steps, start=start, prompt=prompt, actions=keyed, seed=args.seed + e,
                               denoise_steps=args.denoise_steps, overlap={"none": False}.get(args.overlap, args.overlap))
            except FloatingPointError as exc:  # NaN/inf weights: no GIF of black frames, no exit 0
                raise CLIError(f"--model {args.model!r}: {exc}") from None
            result["description"] = prompt or ""
            episodes.append(result)
    finally:
        session.close()  # the decoding process of --overlap process, if one was started

    if to_video:
        frames = episodes[0]["frames"]
        if args.scale > 1:
            frames = np.repeat(np.repeat(frames, args.scale, axis=1), args.scale, axis=2)
        write_video(args.out, frames, fps=args.fps)
    else:
        from neuralsim.data import ShardWriter

        writer = ShardWriter(args.out, {"env_id": f"dream:{source}", "image_size": list(session.image_size),
                                         "action_spec": session.action_spec, "frames_per_step": k, "policy":
                                         "keys" if keyed is not None else "random", "seed": args.seed})
        for ep in episodes:
            terminated = ep["terminated"]
            writer.add_episode(frames=ep["frames"], actions=ep["actions"], rewards=ep["rewards"], terminated=terminated,
                               truncated=~terminated & (np.arange(len(terminated)) == len(terminated) - 1),
                               description=ep["description"])
        writer.close()
    total_steps = sum(len(ep["rewards"]) for ep in episodes)
    seconds = sum(ep["seconds"] for ep in episodes)
    print(json.dumps({"model": str(source), "out": args.out, "episodes": len(episodes), "steps": total_steps,
                      "frames": int(sum(len(ep["frames"]) for ep in episodes)), "seconds": round(seconds, 3),
                      "steps_per_s": round(total_steps / max(seconds, 1e-9), 1),
                      "mean_predicted_reward": round(float(np.mean([ep["rewards"].mean() for ep in episodes])), 4)}))
    return 0
