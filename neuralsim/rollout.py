"""Dream rollouts: ``neuralsim rollout`` to a video, or to a dataset of synthetic episodes.

A rollout starts from a real frame of the checkpoint's start set, an image file, or a prompt; it is
driven by a key-DSL string (camera worlds, or Discrete key-set worlds) or a random policy. Video
output is GIF or MP4 (imageio); directory output writes episodes in the same shard format as
``neuralsim collect`` (frames, actions, predicted rewards/terminations, prompt), so the dream is a
source of labelled data for other models.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from neuralsim import actions as act
from neuralsim.actions import action_string_to_actions as actions_from_string  # noqa: F401  (public name, re-exported)
from neuralsim.checkpoints import atomic_write
from neuralsim.checkpoints import read_start_frames as load_start_frames  # noqa: F401  (public name, re-exported)
from neuralsim.images import resize_frame
from neuralsim.session import DreamSession, as_session

VIDEO_SUFFIXES = (".gif", ".mp4")


def read_image(path: str | Path, size: tuple[int, int], resize: bool | str = True) -> np.ndarray:
    """Read an image file as uint8 ``[H, W, 3]``, resized to ``size`` when it has another size.

    Args:
        path: the image file (any format imageio reads; grey is repeated to RGB, alpha is dropped).
        size: ``(H, W)`` the model expects.
        resize: ``False`` (another size is an error), ``True`` (squash) or a mode of
            :func:`neuralsim.images.resize_frame`: ``"pad"``, ``"crop"`` or ``"squash"``; pass the model's
            :attr:`neuralsim.session.DreamSession.resize_mode` so the image is fitted as its training frames were.

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


def dream(model: Any, steps: int, *, start: np.ndarray | None = None, prompt: str | None = None,
          actions: np.ndarray | None = None, seed: int = 0, denoise_steps: int | None = None,
          overlap: bool | str = True) -> dict:
    """Roll a world model out for ``steps`` env steps from one start, with the noise of
    ``torch.Generator().manual_seed(seed)`` (what ``neuralsim play`` records and ``neuralsim rollout`` replays).

    Args:
        model: a :class:`~neuralsim.session.DreamSession`, or a ``WorldModel`` / ``SanaWMBackend`` (served in fp32).
        start: uint8 ``[H, W, 3]`` first frame (or None to generate it from ``prompt``).
        actions: ``[steps, ...]`` actions; None = uniformly random from the action space (seeded).
        denoise_steps: Euler steps of every env step (None: the session's); a generated first frame uses the
            session's.
        overlap: where the frames are decoded while the dynamics runs on: ``"thread"`` (True), ``"process"`` (a
            native model on the CPU) or False (in order); the same frames either way (:meth:`DreamSession.rollout`).

    Returns:
        dict with ``frames`` uint8 ``[1 + steps*k, H, W, 3]``, ``actions``, ``rewards`` ``[steps]``,
        ``terminated`` ``[steps]`` (predicted), ``seconds``.
    """
    session = as_session(model, dtype="float32")
    generator = DreamSession.generator(seed)
    if actions is None:
        space = act.spec_to_space(session.action_spec)
        space.seed(seed)
        actions = np.stack([space.sample() for _ in range(steps)])
    actions = np.asarray(actions)[:steps]
    t0 = time.perf_counter()
    state, first, _ = session.start(1, generator, image=None if start is None else start[None, None],
                                    prompt=None if prompt is None else [prompt])
    # each step's frame is decoded beside the dynamics drawing the next ones (the same frames as stepping)
    try:
        out = session.rollout(state, actions[None], generator, denoise_steps=denoise_steps, overlap=overlap)
    finally:
        if session is not model:  # a session made here for a bare model: end its decoding process now
            session.close()
    return {"frames": np.concatenate([first, out.frames[0]]), "actions": actions, "rewards": out.rewards[0],
            "terminated": out.termination_prob[0] > 0.5, "seconds": time.perf_counter() - t0}
