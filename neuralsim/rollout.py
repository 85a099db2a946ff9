"""Dream rollouts: ``neuralsim rollout`` to a video, or to a dataset of synthetic episodes.

A rollout starts from a real frame of the checkpoint's start set, an image file, or a prompt; it is
driven by a key-DSL string (camera worlds, or Discrete key-set worlds) or a random policy. Video
output is GIF or MP4 (imageio); directory output writes episodes in the same shard format as
``neuralsim collect`` (frames, actions, predicted rewards/terminations, prompt), so the dream is a
source of labelled data for other models.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuralsim import actions as act
from neuralsim.checkpoints import atomic_write
from neuralsim.data import resize_frame

VIDEO_SUFFIXES = (".gif", ".mp4")


def load_start_frames(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """The start set shipped with a checkpoint: uint8 ``[N, H, W, 3]`` frames and their descriptions."""
    from safetensors import safe_open

    file = Path(path) / "start_frames.safetensors"
    if not file.is_file():
        return np.zeros((0,), dtype=np.uint8), []
    try:
        with safe_open(str(file), framework="np") as f:
            if "frames" not in f.keys():
                raise ValueError(f"{file} has no 'frames' tensor (it holds {sorted(f.keys())[:8]}); expected uint8 "
                                 "[N, H, W, 3] frames written by `neuralsim train`")
            header = f.get_slice("frames")
            dtype, shape = header.get_dtype(), tuple(header.get_shape())
            if dtype != "U8" or len(shape) != 4 or shape[-1] != 3:  # checked from the header, before any read
                raise ValueError(f"{file}: 'frames' must be uint8 [N, H, W, 3], got {dtype} {list(shape)}")
            frames = f.get_tensor("frames")
            meta = f.metadata() or {}
    except ValueError:
        raise
    except Exception as exc:  # safetensors' own errors for a torn or foreign file
        raise ValueError(f"{file} is not a valid safetensors file ({' '.join(str(exc).split())}); it may be torn") from None
    try:
        descriptions = json.loads(meta.get("descriptions", "[]"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: metadata 'descriptions' is not valid JSON ({exc})") from None
    if not (isinstance(descriptions, list) and all(isinstance(d, str) for d in descriptions)
            and len(descriptions) in (0, len(frames))):
        raise ValueError(f"{file}: metadata 'descriptions' must be a JSON list of {len(frames)} strings (one per frame), "
                         f"got {str(descriptions)[:120]}")
    return frames, descriptions


def read_image(path: str | Path, size: tuple[int, int], resize: bool | str = True) -> np.ndarray:
    """Read an image file as uint8 ``[H, W, 3]``, resized to ``size`` when it has another size.

    Args:
        path: the image file (any format imageio reads; grey is repeated to RGB, alpha is dropped).
        size: ``(H, W)`` the model expects.
        resize: ``False`` (another size is an error), ``True`` (squash) or a mode of
            :func:`neuralsim.data.resize_frame`: ``"pad"``, ``"crop"`` or ``"squash"``; pass the model's
            :func:`neuralsim.envs.world_model_env.resize_mode_of` so the image is fitted as its training frames were.

    Returns:
        uint8 ``[H, W, 3]`` with ``(H, W)`` = ``size``.
    """
    import imageio.v3 as iio

    try:
        image = np.asarray(iio.imread(path))
    except Exception as exc:  # imageio raises many types for unreadable files
        raise ValueError(f"--image {str(path)!r} could not be read as an image ({exc})") from None
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"--image {str(path)!r} has shape {image.shape}; expected H×W×3 (RGB) or H×W×4")
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.shape[:2] != tuple(size):
        if not resize:
            raise ValueError(f"image has size {image.shape[:2]}, the model expects {tuple(size)}")
        mode = "squash" if resize is True else str(resize)
        # The same area resampling and aspect handling as `collect`, so images look like training data.
        image = resize_frame(image, size, mode=mode)
    return image


def actions_from_string(keys: str, spec: dict, frames_per_step: int) -> np.ndarray:
    """Key DSL -> one action per env step (an env step holds its action for ``frames_per_step`` frames)."""
    if spec["type"] == "discrete":
        per_frame = act.action_string_to_discrete(keys)
    elif spec["type"] == "box" and act.action_dim(spec) == act.CAMERA_ACTION_DIM:
        per_frame = act.action_string_to_vectors(keys)
    else:
        raise ValueError(f"--actions: a key-DSL string needs a camera world (Box(4)) or a Discrete key-set world; "
                         f"this model's action space is {spec}")
    return per_frame[::frames_per_step]


def write_video(path: str | Path, frames: np.ndarray, fps: int = 15) -> None:
    """Write uint8 ``[T, H, W, 3]`` to GIF or MP4, atomically."""
    import imageio.v3 as iio

    path = Path(path)
    if path.suffix.lower() == ".gif":
        atomic_write(path, lambda tmp: iio.imwrite(tmp, frames, extension=".gif", duration=1000 / fps, loop=0))
    else:
        try:
            atomic_write(path, lambda tmp: iio.imwrite(tmp, frames, extension=".mp4", fps=fps, codec="libx264",
                                                       macro_block_size=1))
        except Exception as exc:
            raise RuntimeError(f"writing MP4 needs imageio-ffmpeg: pip install 'neuralsim[video]' ({exc})") from None


@torch.inference_mode()
def dream(model: Any, steps: int, *, start: np.ndarray | None = None, prompt: str | None = None,
          actions: np.ndarray | None = None, seed: int = 0, denoise_steps: int | None = None) -> dict:
    """Roll a world model out for ``steps`` env steps from one start.

    Args:
        model: a ``WorldModel``.
        start: uint8 ``[H, W, 3]`` first frame (or None to generate it from ``prompt``).
        actions: ``[steps, ...]`` actions; None = uniformly random from the action space (seeded).

    Returns:
        dict with ``frames`` uint8 ``[1 + steps*k, H, W, 3]``, ``actions``, ``rewards`` ``[steps]``,
        ``terminated`` ``[steps]`` (predicted), ``seconds``.
    """
    spec = model.config.action_spec
    generator = torch.Generator().manual_seed(seed)
    if actions is None:
        space = act.spec_to_space(spec)
        space.seed(seed)
        actions = np.stack([space.sample() for _ in range(steps)])
    actions = np.asarray(actions)[:steps]
    frames_in = None if start is None else torch.from_numpy(np.ascontiguousarray(start))[None, None]
    t0 = time.perf_counter()
    state = model.init_state(1, frames=frames_in, prompt=prompt, generator=generator)
    first = model.decode(state.latent[:, None])[0] if start is None else torch.from_numpy(start)[None]
    chunks, rewards, terminated = [first.cpu().numpy()], [], []
    for t in range(len(actions)):
        latent, state = model.step(state, actions[t : t + 1], generator=generator, denoise_steps=denoise_steps)
        chunk = model.decode(latent[:, None], first_frame=False)[0]
        chunks.append(chunk[-model.config.frames_per_latent :].cpu().numpy())
        rewards.append(float(state.reward[0]))
        terminated.append(bool(state.termination_prob[0] > 0.5))
    seconds = time.perf_counter() - t0
    return {"frames": np.concatenate(chunks), "actions": actions, "rewards": np.asarray(rewards, np.float32),
            "terminated": np.asarray(terminated, bool), "seconds": seconds}


# ------------------------------------------------------------------------------------ CLI


def add_rollout_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="model name (see `neuralsim info`) or checkpoint directory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", help="start from this image file (fitted to the model's size as its training frames "
                                     "were: padded, cropped or squashed, per the checkpoint's provenance)")
    src.add_argument("--prompt", help="start from a text prompt (the model generates the first frame)")
    src.add_argument("--start-index", type=int, default=None, help="start frame index in the checkpoint's start set")
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


def parse_start_inputs(image: str | None, prompt: str | None, *, image_size: tuple[int, int], num_start_frames: int,
                       start_index: int | None, checkpoint: str | Path, resize: str = "squash") -> np.ndarray | None:
    """Check the CLI's start of a dream (``--image`` / ``--prompt`` / the start set); shared by rollout and play.

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
        CLIError: an unreadable image, an invalid prompt, or (without either) an empty start set or
            a ``--start-index`` outside it.
    """
    from neuralsim.cli import CLIError
    from neuralsim.text import validate_prompts

    frame = None
    if image is not None:
        try:
            frame = read_image(image, tuple(image_size), resize=resize)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    if prompt is not None:
        try:
            validate_prompts(prompt, name="--prompt")
        except (TypeError, ValueError) as exc:
            raise CLIError(str(exc)) from None
    if frame is None and prompt is None:
        if num_start_frames == 0:
            raise CLIError(f"{checkpoint} has no start_frames.safetensors; pass --image FILE or --prompt TEXT")
        if start_index is not None and not 0 <= start_index < num_start_frames:
            raise CLIError(f"--start-index must be in [0, {num_start_frames}), got {start_index}")
    return frame


def run_rollout(args: argparse.Namespace) -> int:
    from neuralsim.checkpoints import ASSETS_DIR, resolve_checkpoint
    from neuralsim.cli import CLIError, writable_dir, writable_file
    from neuralsim.envs.world_model_env import resize_mode_of
    from neuralsim.model import WorldModel

    from neuralsim.limits import MAX_DENOISE_STEPS

    for name in ("steps", "episodes", "fps", "scale", "denoise_steps"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise CLIError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.denoise_steps is not None and args.denoise_steps > MAX_DENOISE_STEPS:
        raise CLIError(f"--denoise-steps must be at most {MAX_DENOISE_STEPS}, got {args.denoise_steps}")
    if args.steps is not None and args.steps > act.MAX_ACTION_FRAMES:  # actions and frames are kept in memory
        raise CLIError(f"--steps must be at most {act.MAX_ACTION_FRAMES}, got {args.steps}")
    to_video = Path(args.out).suffix.lower() in VIDEO_SUFFIXES
    if not to_video and Path(args.out).suffix:
        raise CLIError(f"--out {args.out!r}: expected FILE.gif, FILE.mp4 or a directory")
    try:
        path = resolve_checkpoint(args.model, "--model")
        model = WorldModel.from_pretrained(path).eval()
    except (ValueError, FileNotFoundError) as exc:  # also torn or mismatched weights
        if args.model == "default" and not (ASSETS_DIR / "default").is_dir():
            raise CLIError("no default model is shipped in this install yet (neuralsim/assets/default is missing); "
                           "train one with `neuralsim train all --data DIR --out DIR` and pass --model DIR") from None
        raise CLIError(f"--model {args.model!r}: {exc}" if "--model" not in str(exc) else str(exc)) from None
    cfg = model.config
    k = cfg.frames_per_latent
    starts, descriptions = load_start_frames(path)

    try:
        keyed = None if args.actions is None else actions_from_string(args.actions, cfg.action_spec, k)
    except ValueError as exc:
        raise CLIError(f"--actions: {exc}") from None
    steps = args.steps or (len(keyed) if keyed is not None else 64)
    image = parse_start_inputs(args.image or None, args.prompt, image_size=tuple(cfg.image_size),
                               num_start_frames=len(starts), start_index=args.start_index, checkpoint=path,
                               resize=resize_mode_of(cfg))  # as the model's training frames were (squash if unrecorded)
    # Every input is valid: only now create the output location (a failed run leaves nothing behind).
    if to_video:
        writable_file(args.out, "--out", VIDEO_SUFFIXES)
    else:
        writable_dir(args.out, "--out")

    episodes = []
    rng = np.random.default_rng(args.seed)
    for e in range(args.episodes if not to_video else 1):
        prompt, start = args.prompt, None
        if image is not None:
            start = image
        elif args.prompt is None:
            index = args.start_index if args.start_index is not None else int(rng.integers(len(starts)))
            start = starts[index]
            prompt = descriptions[index] if index < len(descriptions) else None
        try:
            result = dream(model, steps, start=start, prompt=prompt, actions=keyed, seed=args.seed + e,
                           denoise_steps=args.denoise_steps)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        except FloatingPointError as exc:  # NaN/inf weights: no GIF of black frames, no exit 0
            raise CLIError(f"--model {args.model!r}: {exc}") from None
        result["description"] = prompt or ""
        episodes.append(result)

    if to_video:
        frames = episodes[0]["frames"]
        if args.scale > 1:
            frames = np.repeat(np.repeat(frames, args.scale, axis=1), args.scale, axis=2)
        write_video(args.out, frames, fps=args.fps)
    else:
        from neuralsim.data import ShardWriter

        writer = ShardWriter(args.out, {"env_id": f"dream:{path}", "image_size": list(cfg.image_size),
                                         "action_spec": cfg.action_spec, "frames_per_step": k, "policy":
                                         "keys" if keyed is not None else "random", "seed": args.seed})
        for ep in episodes:
            terminated = ep["terminated"]
            writer.add_episode(frames=ep["frames"], actions=ep["actions"], rewards=ep["rewards"], terminated=terminated,
                               truncated=~terminated & (np.arange(len(terminated)) == len(terminated) - 1),
                               description=ep["description"])
        writer.close()
    total_steps = sum(len(ep["rewards"]) for ep in episodes)
    seconds = sum(ep["seconds"] for ep in episodes)
    print(json.dumps({"model": str(path), "out": args.out, "episodes": len(episodes), "steps": total_steps,
                      "frames": int(sum(len(ep["frames"]) for ep in episodes)), "seconds": round(seconds, 3),
                      "steps_per_s": round(total_steps / max(seconds, 1e-9), 1),
                      "mean_predicted_reward": round(float(np.mean([ep["rewards"].mean() for ep in episodes])), 4)}))
    return 0
