"""Image utilities: area resampling of rgb frames to a model's size, and the ``image_size`` argument parser.

Pure numpy, no state beyond a small cache of resampling matrices. Used wherever real frames meet a model: dataset
collection (:mod:`neuralsim.data`), ``WorldModelEnv.reset(options={"image": ...})``, rollouts, ``neuralsim play``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: How a frame of another aspect ratio becomes ``image_size``: ``pad`` (keep the aspect, black borders),
#: ``crop`` (keep the aspect, cut the sides), ``squash`` (stretch). Datasets without the field were squashed.
RESIZE_MODES = ("pad", "crop", "squash")


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` weights of area (box-filter) resampling along one axis."""
    edges = np.arange(n_out + 1, dtype=np.float64) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    pixels = np.arange(n_in, dtype=np.float64)[None]
    overlap = np.clip(np.minimum(hi, pixels + 1) - np.maximum(lo, pixels), 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


_AREA_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _fit_aspect(frame: np.ndarray, H: int, W: int, mode: str) -> np.ndarray:
    """Pad (black, centred) or centre-crop ``frame`` ``[h, w, C]`` to the aspect ratio ``H : W``."""
    h, w = frame.shape[:2]
    if h * W == w * H:
        return frame
    wider = w * H > h * W  # the frame is wider than the target
    if mode == "pad":
        if wider:
            new_h = int(round(w * H / W))
            top = (new_h - h) // 2
            return np.pad(frame, ((top, new_h - h - top), (0, 0), (0, 0)))
        new_w = int(round(h * W / H))
        left = (new_w - w) // 2
        return np.pad(frame, ((0, 0), (left, new_w - w - left), (0, 0)))
    if wider:  # crop
        new_w = max(1, int(round(h * W / H)))
        left = (w - new_w) // 2
        return frame[:, left:left + new_w]
    new_h = max(1, int(round(w * H / W)))
    top = (h - new_h) // 2
    return frame[top:top + new_h]


def resize_frame(frame: np.ndarray, size: Sequence[int], *, mode: str = "squash") -> np.ndarray:
    """Area-resample an rgb frame ``[h, w, 3]`` uint8 to ``size = (H, W)`` (pure numpy, anti-aliased).

    Args:
        frame: ``[h, w, 3]`` uint8.
        size: ``(H, W)``.
        mode: what to do when ``h : w`` differs from ``H : W``: ``"pad"`` (black borders, centred),
            ``"crop"`` (centre crop) or ``"squash"`` (stretch). One of :data:`RESIZE_MODES`.

    Returns:
        ``[H, W, 3]`` uint8 (``frame`` itself when it already has that size).
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    H, W = int(size[0]), int(size[1])
    if tuple(frame.shape[:2]) == (H, W):
        return frame
    if mode != "squash":
        frame = _fit_aspect(frame, H, W, mode)
    h, w = frame.shape[:2]
    if (h, w) == (H, W):
        return frame
    for key in ((h, H), (w, W)):
        if key not in _AREA_CACHE:
            _AREA_CACHE[key] = _area_matrix(*key)
    rows, cols = _AREA_CACHE[(h, H)], _AREA_CACHE[(w, W)]
    out = np.einsum("Hh,hwc->Hwc", rows, frame.astype(np.float32))
    out = np.einsum("Ww,Hwc->HWc", cols, out)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def parse_image_size(value: Any, name: str = "image_size") -> tuple[int, int] | None:
    """An ``image_size`` argument -> ``(height, width)``, or None for None (the source's own size).

    Args:
        value: an int (square), ``(height, width)``, or a string ``"64"`` / ``"64x96"`` (``×`` allowed).
        name: what to call it in an error (``--image-size`` on the command line).

    Raises:
        ValueError: naming ``name`` and the value, for anything but positive sizes.
    """
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.lower().replace("×", "x").split("x")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"{name} must be an int or HxW like 64 or 64x96, got {value!r}") from None
        value = nums[0] if len(nums) == 1 else tuple(nums)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(f"{name} must be a positive int or (height, width) of positive ints, got {value!r}")
    return int(value[0]), int(value[1])
