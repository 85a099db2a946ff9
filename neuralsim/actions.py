"""Actions: the SANA-WM camera key DSL, the canonical camera action, and space specs.

The key DSL is the one of diffusers' ``pipelines.sana_wm.cam_utils`` (SANA-WM): comma-separated
``<keys>-<frames>`` segments, keys from ``wasdijkl``, ``none-N`` for idle. ``"w-80,jw-40"`` is
80 frames forward, then 40 frames forward while yawing left.

    w / s   forward / back        a / d   strafe left / right
    i / k   pitch up / down       j / l   yaw left / right

Camera worlds in neuralsim use one canonical continuous action vector
``[forward, strafe_right, yaw_right, pitch_up]`` in ``[-1, 1]``; a key set is the vector with
±1 entries, so the DSL, the ``Box`` interface and the ``Discrete`` key-set interface are the same
motion. Poses integrate exactly as ``cam_utils.action_string_to_c2w`` (OpenCV axes: +X right,
+Y down, +Z forward; translation on the horizontal XZ plane; pitch clamped), scaled by the
magnitude of each action component: that math (poses, Plücker rays) is :mod:`neuralsim.camera`'s.

This module is shared by the real room (``neuralsim.envs.room``), the native world model and the
official-model backend, so all three agree on what a key means.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np

from neuralsim.limits import MAX_SPACE_ELEMENTS, _is_int

ALLOWED_KEYS = frozenset("wasdijkl")
DEFAULT_TRANSLATION_SPEED = 0.05  # units per frame (cam_utils default)
DEFAULT_ROTATION_SPEED_DEG = 1.2  # degrees per frame (cam_utils default)
DEFAULT_PITCH_LIMIT_DEG = 85.0

#: Names of the canonical camera action vector components.
CAMERA_ACTION_NAMES = ("forward", "strafe_right", "yaw_right", "pitch_up")
CAMERA_ACTION_DIM = len(CAMERA_ACTION_NAMES)

#: Most frames one key-DSL string may expand to (an hour at 25 fps is 90,000). ``"w-100000000"`` is 11
#: characters; expanded, it is one object per frame (tens of GB), so the total is checked before expanding.
MAX_ACTION_FRAMES = 100_000

#: The Discrete key-set interface: index -> keys held for that step.
DISCRETE_KEYSETS: tuple[str, ...] = ("", "w", "s", "a", "d", "j", "l", "i", "k", "wj", "wl")
# Walk and turn: the transfer benchmark's agents' keys (and the room's "keys" collection policy's)
WALK_AND_TURN: tuple[str, ...] = ("w", "j", "l", "wj", "wl")


def parse_action_string(action: str) -> list[frozenset[str]]:
    """Parse a key-DSL string into the set of keys held on each frame.

    Accepts the strings diffusers' ``cam_utils._parse_action_string`` accepts (whitespace ignored, the
    full-width comma ``，`` allowed, keys case-insensitive) and rejects the same ones, with one bound of
    its own: at most :data:`MAX_ACTION_FRAMES` frames in all (checked before anything is expanded).

    Args:
        action: e.g. ``"w-80,jw-40"`` or ``"none-8"``.

    Returns:
        One ``frozenset`` of keys per frame (empty set = idle).

    Raises:
        ValueError: naming the offending segment and the expected form.
    """
    if not isinstance(action, str):
        raise TypeError(f"action must be a key-DSL string like 'w-80,jw-40', got {type(action).__name__}")
    cleaned = "".join(action.replace("，", ",").split())
    if not cleaned:
        raise ValueError("action string is empty; expected '<keys>-<frames>' segments like 'w-80,jw-40'")
    segments: list[tuple[frozenset[str], int]] = []
    total = 0
    for segment in cleaned.split(","):
        if not segment or "-" not in segment:
            raise ValueError(f"Invalid action segment {segment[:40]!r}: expected '<keys>-<duration>' (keys from wasdijkl or 'none').")
        keys_part, duration = segment.rsplit("-", 1)
        if not duration.isdigit():
            raise ValueError(f"Action segment {segment[:40]!r} has a non-positive duration {duration[:20]!r}; expected a positive integer.")
        try:  # str.isdigit accepts '²', which int() refuses; past 4,300 digits int() refuses too
            n = int(duration) if len(duration) <= 4000 else MAX_ACTION_FRAMES + 1
        except ValueError:
            raise ValueError(f"Action segment {segment[:40]!r} has a duration {duration[:20]!r} that is not a decimal "
                             "integer; expected a positive integer.") from None
        if n <= 0:
            raise ValueError(f"Action segment {segment[:40]!r} has a non-positive duration {duration[:20]!r}; expected a positive integer.")
        total += n
        if total > MAX_ACTION_FRAMES:
            raise ValueError(f"action string expands to more than MAX_ACTION_FRAMES={MAX_ACTION_FRAMES} frames "
                             f"(at segment {segment[:40]!r}); split the rollout into shorter strings")
        keys_lower = keys_part.lower()
        if keys_lower == "none":
            keys: frozenset[str] = frozenset()
        else:
            bad = sorted({c for c in keys_lower if c not in ALLOWED_KEYS})
            if bad:
                raise ValueError(
                    f"Action segment {segment[:40]!r} contains unknown keys {bad[:20]}; allowed: {''.join(sorted(ALLOWED_KEYS))}."
                )
            keys = frozenset(keys_lower)
        segments.append((keys, n))
    return [keys for keys, n in segments for _ in range(n)]


def keys_to_vector(keys: Sequence[str] | frozenset[str] | str) -> np.ndarray:
    """Map held keys to the canonical camera action ``[forward, strafe_right, yaw_right, pitch_up]``."""
    held = set(keys)
    return np.array(
        [
            float("w" in held) - float("s" in held),
            float("d" in held) - float("a" in held),
            float("l" in held) - float("j" in held),
            float("i" in held) - float("k" in held),
        ],
        dtype=np.float32,
    )


def keysets_to_vectors(keysets: Sequence[Sequence[str] | frozenset[str] | str] = DISCRETE_KEYSETS) -> np.ndarray:
    """Key sets -> ``[len(keysets), 4]`` float32 canonical camera actions, one row per key set (a new array).

    Without an argument, the Discrete interface's table: row ``i`` is the camera motion of Discrete action ``i``
    (:data:`DISCRETE_KEYSETS`), for the real room, both model families and the room's collection policies alike.
    """
    return np.stack([keys_to_vector(k) for k in keysets])


def released(actions: Any) -> np.ndarray:
    """Box actions ``[..., T, A]`` → ``[..., T]`` bool: step t lets the keys go (an all-zero action right after a
    non-zero one; the first step of the sequence never does)."""
    a = np.asarray(actions)
    idle = (a.reshape(*a.shape[:-1], -1) == 0).all(axis=-1)
    out = np.zeros_like(idle)
    out[..., 1:] = idle[..., 1:] & ~idle[..., :-1]
    return out


def discrete_to_vectors(actions: Any, start: int = 0) -> np.ndarray:
    """Discrete key-set actions ``[N]`` (ints in ``[start, start + len(DISCRETE_KEYSETS))``) -> ``[N, 4]`` float32
    canonical camera actions: the rows of :func:`keysets_to_vectors`'s Discrete table."""
    return keysets_to_vectors()[np.asarray(actions) - start]


def keyset_index(keysets: Sequence[str] = DISCRETE_KEYSETS) -> dict[frozenset[str], int]:
    """Held keys -> the index of their key set in ``keysets`` (default: the Discrete action of :data:`DISCRETE_KEYSETS`)."""
    return {frozenset(k): i for i, k in enumerate(keysets)}


def vector_to_keys(vector: Sequence[float], threshold: float = 0.5) -> str:
    """Inverse of :func:`keys_to_vector` (components beyond ``±threshold`` count as held keys)."""
    f, r, y, p = (float(x) for x in vector[:CAMERA_ACTION_DIM])
    keys = ""
    keys += "w" if f > threshold else "s" if f < -threshold else ""
    keys += "d" if r > threshold else "a" if r < -threshold else ""
    keys += "l" if y > threshold else "j" if y < -threshold else ""
    keys += "i" if p > threshold else "k" if p < -threshold else ""
    return keys


def action_string_to_vectors(action: str) -> np.ndarray:
    """Key DSL -> ``[N, 4]`` float32 canonical camera actions, one row per frame."""
    return keysets_to_vectors(parse_action_string(action))


def action_string_to_discrete(action: str) -> np.ndarray:
    """Key DSL -> ``[N]`` int64 indices into :data:`DISCRETE_KEYSETS`.

    Raises:
        ValueError: if a frame holds a key combination the Discrete interface does not have.
    """
    index = keyset_index()
    out = []
    for keys in parse_action_string(action):
        if keys not in index:
            raise ValueError(
                f"key combination {''.join(sorted(keys))!r} has no Discrete action; "
                f"available: {[k or 'none' for k in DISCRETE_KEYSETS]}"
            )
        out.append(index[keys])
    return np.asarray(out, dtype=np.int64)


def action_string_to_actions(action: str, spec: dict, frames_per_step: int = 1) -> np.ndarray:
    """Key DSL -> one action per env step of a world whose action space is ``spec`` (:func:`space_to_spec` form).

    An env step holds its action for ``frames_per_step`` frames: each step takes the keys held on its first frame.

    Args:
        action: e.g. ``"w-24,l-16"``.
        spec: a camera world's ``Box(4)`` spec, or a Discrete key-set world's (:data:`DISCRETE_KEYSETS`).
        frames_per_step: video frames per env step (the world model's ``frames_per_latent``).

    Returns:
        ``[N]`` int64 key-set indices (Discrete) or ``[N, 4]`` float32 camera vectors (Box).

    Raises:
        ValueError: a malformed string (:func:`parse_action_string`), a key set without a Discrete action, or an
            action space the key DSL does not drive.
    """
    if spec["type"] == "discrete":
        per_frame = action_string_to_discrete(action)
    elif spec["type"] == "box" and action_dim(spec) == CAMERA_ACTION_DIM:
        per_frame = action_string_to_vectors(action)
    else:
        raise ValueError(f"the key DSL ({str(action)[:40]!r}) needs a camera world (Box(4) [forward, strafe_right, yaw_right, "
                         f"pitch_up]) or a Discrete key-set world; this action space is {spec}")
    return per_frame[::frames_per_step]


def vectors_to_action_string(vectors: np.ndarray) -> str:
    """``[N, 4]`` canonical actions -> a compact key-DSL string (run-length encoded)."""
    segments: list[list[Any]] = []
    for v in np.asarray(vectors).reshape(-1, CAMERA_ACTION_DIM):
        keys = vector_to_keys(v) or "none"
        if segments and segments[-1][0] == keys:
            segments[-1][1] += 1
        else:
            segments.append([keys, 1])
    return ",".join(f"{k}-{n}" for k, n in segments)


def action_string_to_c2w(
    action: str,
    *,
    translation_speed: float = DEFAULT_TRANSLATION_SPEED,
    rotation_speed_deg: float = DEFAULT_ROTATION_SPEED_DEG,
    pitch_limit_deg: float = DEFAULT_PITCH_LIMIT_DEG,
) -> np.ndarray:
    """Key DSL -> ``[N+1, 4, 4]`` float32 camera-to-world poses (same numbers as diffusers' ``cam_utils``), integrated by
    :class:`neuralsim.camera.CameraIntegrator`."""
    from neuralsim.camera import CameraIntegrator

    cam = CameraIntegrator(translation_speed, rotation_speed_deg, pitch_limit_deg)
    poses = [cam.c2w.copy()]
    for keys in parse_action_string(action):
        poses.append(cam.step(keys_to_vector(keys)))
    return np.stack(poses).astype(np.float32)


def pose_to_camera_vector(c2w: np.ndarray, intrinsics: Sequence[float]) -> np.ndarray:
    """The 20-number SANA-WM camera form: the flattened 4×4 c2w followed by ``fx, fy, cx, cy``."""
    return np.concatenate([np.asarray(c2w, dtype=np.float32).reshape(16), np.asarray(intrinsics, dtype=np.float32)])


# ---------------------------------------------------------------------------------------------
# Space specs: how a checkpoint, a dataset manifest or a policy.json stores a Gymnasium space (JSON).
# ---------------------------------------------------------------------------------------------

#: The dtypes a Box spec may name (numeric only: ``object`` or strings would not describe an array of numbers).
SPEC_DTYPES = ("uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64")


def space_to_spec(space: Any, name: str = "action_space", *, compact: bool = False) -> dict:
    """Gymnasium ``Box``/``Discrete`` -> a JSON-serialisable dict (checkpoints, dataset manifests, ``policy.json``).

    ``{"type": "discrete", "n", "start"}`` or ``{"type": "box", "shape", "low", "high", "dtype"}``, bounds one
    number per element (row-major).

    Args:
        space: the space to store.
        name: what to call it in an error.
        compact: store a uniform bound once as a number (an image space is a few bytes, not 12,288 numbers);
            :func:`spec_to_space` reads both forms.

    Raises:
        ValueError: naming ``name``, for any other kind of space.
    """
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return {"type": "discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.Box):
        low = np.asarray(space.low, dtype=np.float64).reshape(-1)
        high = np.asarray(space.high, dtype=np.float64).reshape(-1)

        def bound(values: np.ndarray) -> float | list[float]:
            return float(values[0]) if compact and values.size and (values == values[0]).all() else values.tolist()

        return {"type": "box", "shape": list(space.shape), "low": bound(low), "high": bound(high),
                "dtype": str(space.dtype)}
    raise ValueError(f"{name} {space!r} is not supported; expected a gymnasium Box or Discrete space")


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def spec_to_space(spec: Any, name: str = "action_spec") -> Any:
    """Inverse of :func:`space_to_spec`; every field is checked before anything is allocated (specs come from files).

    A Box's ``low``/``high`` is a number (uniform) or a list of one number per element; ``dtype`` is one of
    :data:`SPEC_DTYPES` (``float32`` when absent); at most :data:`~neuralsim.limits.MAX_SPACE_ELEMENTS` elements or
    Discrete actions.

    Raises:
        ValueError: naming ``name`` and the field (``name.shape``, ``name.low``, ...).
    """
    from gymnasium import spaces

    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "discrete":
        n, start = spec.get("n"), spec.get("start", 0)
        if not _is_int(n) or not 1 <= n <= MAX_SPACE_ELEMENTS:
            raise ValueError(f"{name}.n must be an int in [1, {MAX_SPACE_ELEMENTS}], got {n!r}")
        if not _is_int(start) or abs(start) > 2**62:
            raise ValueError(f"{name}.start must be an int, got {start!r}")
        return spaces.Discrete(int(n), start=int(start))
    if kind == "box":
        shape = spec.get("shape")
        if not isinstance(shape, (list, tuple)) or len(shape) > 4 or not all(_is_int(d) and d >= 1 for d in shape):
            raise ValueError(f"{name}.shape must be a list of at most 4 positive ints, got {shape!r}")
        size = int(np.prod(shape, dtype=np.float64))
        if size > MAX_SPACE_ELEMENTS:
            raise ValueError(f"{name}.shape {list(shape)} has {size} elements; at most "
                             f"MAX_SPACE_ELEMENTS={MAX_SPACE_ELEMENTS}")
        if spec.get("dtype", "float32") not in SPEC_DTYPES:
            raise ValueError(f"{name}.dtype must be a numeric numpy dtype name like 'float32' or 'uint8', "
                             f"got {spec.get('dtype')!r}")
        shape, dtype = tuple(int(d) for d in shape), np.dtype(spec.get("dtype", "float32"))

        def bound(key: str) -> np.ndarray:
            value = spec.get(key)
            if isinstance(value, (list, tuple)) and len(value) == size and all(_is_number(v) for v in value):
                array = np.asarray(value, dtype=np.float64).reshape(shape)
            elif _is_number(value):
                array = np.full(shape, float(value))
            else:
                raise ValueError(f"{name}.{key} must be a number or a list of {size} numbers (one per element)")
            if np.isnan(array).any():
                raise ValueError(f"{name}.{key} contains NaN")
            return array.astype(dtype)

        low, high = bound("low"), bound("high")
        if (low > high).any():
            raise ValueError(f"{name}: low must be <= high everywhere")
        return spaces.Box(low=low, high=high, shape=shape, dtype=dtype)
    raise ValueError(f"{name} must be {{'type': 'box'|'discrete', ...}}, got {str(spec)[:200]}")


def action_dim(spec: dict) -> int:
    """Length of the float vector the model is conditioned on (one-hot for Discrete)."""
    if spec["type"] == "discrete":
        return int(spec["n"])
    return int(np.prod(spec["shape"]))


def box_bounds(spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """A Box spec's ``(low, high)``, each ``[action_dim]`` float32 (a compact spec's one number repeated)."""
    n = action_dim(spec)
    return tuple(np.broadcast_to(np.asarray(spec[key], dtype=np.float32).reshape(-1), (n,)).copy()  # type: ignore[return-value]
                 for key in ("low", "high"))


def validate_actions(actions: Any, spec: dict, batch_size: int | None = None, name: str = "actions") -> np.ndarray:
    """Check a batch of actions against a spec; returns ``[B, n]`` float32 (Box) or ``[B]`` int64 (Discrete).

    Raises:
        ValueError / TypeError naming ``name``, the received shape/dtype and the expected form.
    """
    arr = np.asarray(actions.detach().cpu() if hasattr(actions, "detach") else actions)
    if spec["type"] == "discrete":
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1 or (batch_size is not None and arr.shape[0] != batch_size):
            raise ValueError(f"{name} must have shape ({batch_size if batch_size is not None else 'B'},) of integers, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise TypeError(f"{name} must be integers in [{spec.get('start', 0)}, {spec.get('start', 0) + spec['n']}), got dtype {arr.dtype}")
        lo = spec.get("start", 0)
        if arr.size and (arr.min() < lo or arr.max() >= lo + spec["n"]):
            raise ValueError(f"{name} must be integers in [{lo}, {lo + spec['n']}), got values in [{arr.min()}, {arr.max()}]")
        return arr.astype(np.int64)
    n = action_dim(spec)
    if arr.ndim == 1 and batch_size in (None, 1) and arr.shape[0] == n:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != n or (batch_size is not None and arr.shape[0] != batch_size):
        raise ValueError(f"{name} must have shape ({batch_size if batch_size is not None else 'B'}, {n}) of floats, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must be a float array, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; expected finite floats in [low, high]")
    low, high = (bound.reshape(1, n) for bound in box_bounds(spec))
    if np.any(arr < low - 1e-6) or np.any(arr > high + 1e-6):
        raise ValueError(f"{name} out of the action space: expected values in [{low.min()}, {high.max()}], got [{arr.min()}, {arr.max()}]")
    return arr


def actions_to_vectors(actions: np.ndarray, spec: dict) -> np.ndarray:
    """Validated actions -> ``[B, action_dim]`` float32 conditioning vectors (one-hot for Discrete)."""
    if spec["type"] == "discrete":
        out = np.zeros((len(actions), spec["n"]), dtype=np.float32)
        out[np.arange(len(actions)), np.asarray(actions) - spec.get("start", 0)] = 1.0
        return out
    return np.asarray(actions, dtype=np.float32).reshape(len(actions), -1)


def __getattr__(name: str):
    # The camera math lives in neuralsim.camera (torch); its former names here import it only when asked for, so
    # importing this module (the real room, configs, datasets) stays free of torch.
    if name in ("CameraIntegrator", "plucker_rays"):
        from neuralsim import camera

        return getattr(camera, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
