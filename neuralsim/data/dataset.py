"""The dataset format: the shard writer and reader, the manifest, training windows, resume.

A dataset is a directory::

    manifest.json               {"format": "neuralsim-dataset", "version": 1, "env_id", "env_kwargs",
                                 "image_size": [H, W], "resize": "pad"|"crop"|"squash" (absent:
                                 squash), "native_image_size": [h, w], "action_spec", "frames_per_step": K, "policy",
                                 "seed", "shards": [{"file", "episodes", "steps", "frames", "sha256",
                                 "bytes"}], "episodes", "steps", "poses": bool,
                                 "target_positions": bool (absent: false), "camera", "task", ...}
    shard-000000.safetensors    concatenated episodes (below)
    shard-000001.safetensors

A shard holds ``frames`` uint8 ``[N_frames, H, W, 3]``, ``actions`` float32 ``[N_steps, A]`` (Box) or
int64 ``[N_steps]`` (Discrete), ``rewards`` float32 ``[N_steps]``, ``terminated`` / ``truncated`` bool
``[N_steps]``, ``frame_offsets`` / ``step_offsets`` int64 ``[E + 1]``, optionally ``poses`` float32
``[N_frames, 4, 4]`` and ``target_positions`` float32 ``[N_frames, 3]``, and the metadata ``descriptions`` / ``seeds`` (JSON lists, one per episode).
An episode of ``n`` steps has ``1 + n * K`` frames: the first observation alone, then ``K`` frames
per step while the action is held (the env is stepped ``K`` times; rewards are summed). When an
episode ends inside a step, the remaining frames of that step repeat the last frame.

Shards are written atomically (temp file, fsync, ``os.replace``) and only then listed in the
manifest (rewritten atomically), so a killed collection loses at most the episodes of the shard
being filled; ``collect(..., resume=True)`` checks the listed shards (size and sha256) and
continues at the next episode (:mod:`neuralsim.data.collection`). Everything on disk is JSON or
safetensors: nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from neuralsim import actions as A
from neuralsim.checkpoints import atomic_write
from neuralsim.images import RESIZE_MODES, parse_image_size

logger = logging.getLogger(__name__)

FORMAT = "neuralsim-dataset"
VERSION = 1
#: The optional per-frame arrays a shard may hold, and the shape of one frame's entry.
PER_FRAME_EXTRAS = {"poses": (4, 4), "target_positions": (3,)}
MANIFEST = "manifest.json"
#: The temporaries a ShardWriter makes (checkpoints.atomic_write: ``.<file>.<8 random chars>.tmp``); on resume
#: only names of exactly this form are deleted, never a user's ``notes.tmp.csv`` or ``shard-NOTES.md``.
_OWN_TEMP = re.compile(r"\.(manifest\.json|shard-\d{6}\.safetensors)\.[a-z0-9_]{8}\.tmp")
_SHARD_NAME = re.compile(r"shard-\d{6}\.safetensors")
#: The lock a ShardWriter holds (``fcntl.flock``) on its dataset directory while it writes: a second writer (two
#: ``collect`` runs on one directory) is refused. The kernel drops it when the process ends, SIGKILL included.
LOCK = ".neuralsim.lock"


#: Manifest fields added after version 1 was fixed: their meaning when absent (None: unknown, not compared).
_LEGACY_MANIFEST: dict[str, Any] = {"resize": "squash", "native_image_size": None}


class DatasetError(ValueError):
    """A dataset on disk is missing, torn, corrupted or does not fit what it is used for."""


# ---------------------------------------------------------------------------------------------
# Small helpers: atomic files, hashing, resizing
# Small helpers: atomic files, hashing


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either the old file or the complete new one."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()



# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------


_ST_DTYPES = {np.dtype(np.uint8): "U8", np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.float32): "F32",
              np.dtype(np.float64): "F64", np.dtype(np.bool_): "BOOL"}


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """Serialise to the safetensors format with a deterministic byte layout.

    ``safetensors.numpy.save`` orders the metadata map differently in every process, so equal data
    would hash differently; here tensors are sorted by name and the header JSON is ordered.
    """
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    chunks, offset = [], 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        if arr.dtype not in _ST_DTYPES:
            raise TypeError(f"tensor {name!r} has dtype {arr.dtype}; supported: {sorted(str(d) for d in _ST_DTYPES)}")
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _ST_DTYPES[arr.dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # align the data to 8 bytes, as safetensors does
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)


def _lock_directory(path: Path) -> int | None:
    """Take the exclusive writer lock on dataset ``path`` (held until the fd is closed or the process ends)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no lock
        return None
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise DatasetError(f"{path} is being written by another process (it holds {path / LOCK}); wait for that "
                           "collect to end or stop it, or write into another directory") from None
    return fd


def _shard_name(index: int) -> str:
    return f"shard-{index:06d}.safetensors"


def _is_neuralsim_shard(path: Path) -> bool:
    """True when ``path`` is a regular file whose safetensors header says ``format: neuralsim-shard``."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n)) if 0 < n <= 1 << 24 else {}
    except (OSError, ValueError):
        return False
    return isinstance(header, dict) and (header.get("__metadata__") or {}).get("format") == "neuralsim-shard"


def _load_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    if not file.is_file():
        raise DatasetError(f"{file} not found: {path} is not a neuralsim dataset (run `neuralsim collect` first)")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{file} is not valid JSON ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{file}: 'format' must be {FORMAT!r}, got {manifest.get('format') if isinstance(manifest, dict) else manifest!r}")
    if manifest.get("version") != VERSION or not _is_count(manifest.get("version")):  # True == 1 to Python
        raise DatasetError(f"{file}: unsupported dataset version {manifest.get('version')!r}; this neuralsim reads version {VERSION}")
    required = ("image_size", "action_spec", "frames_per_step", "shards", "episodes", "steps")
    missing = [k for k in required if k not in manifest]
    if missing:
        raise DatasetError(f"{file} lacks the fields {missing}")
    _check_manifest_fields(file, manifest)
    return manifest


def _is_count(value: Any, minimum: int = 0) -> bool:
    """A JSON integer (never a bool or a float) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_manifest_fields(file: Path, m: dict[str, Any]) -> None:
    """Type-check every field neuralsim reads from a manifest; errors name ``file`` and the field.

    A manifest is data from disk: a ``null``, a string or a nested list where a count belongs must give a
    :class:`DatasetError` naming the field, never a bare ``TypeError`` from deep inside the reader.
    """
    from neuralsim.limits import MAX_ACTION_ELEMENTS

    def bad(field: str, value: Any, expected: str) -> DatasetError:
        return DatasetError(f"{file}: {field} must be {expected}, got {value!r}"[:600])

    size = m["image_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_count(v, 1) for v in size)):
        raise bad("image_size", size, "[height, width] of positive integers")
    native = m.get("native_image_size")
    if native is not None and not (isinstance(native, list) and len(native) == 2 and all(_is_count(v, 1) for v in native)):
        raise bad("native_image_size", native, "null or [height, width] of positive integers")
    if not _is_count(m["frames_per_step"], 1):
        raise bad("frames_per_step", m["frames_per_step"], "a positive integer")
    for field in ("episodes", "steps"):
        if not _is_count(m[field]):
            raise bad(field, m[field], "a non-negative integer")
    spec = m["action_spec"]
    if not isinstance(spec, dict):
        raise bad("action_spec", spec, "an object like {'type': 'box'|'discrete', ...}")
    try:
        elements = A.action_dim(spec) if spec.get("type") in ("box", "discrete") else 0
        if elements > MAX_ACTION_ELEMENTS:
            raise ValueError(f"{elements} action elements; expected at most MAX_ACTION_ELEMENTS={MAX_ACTION_ELEMENTS}")
        A.spec_to_space(spec)
    except Exception as err:  # KeyError, TypeError, ValueError, OverflowError from numpy/gymnasium: all one answer
        raise DatasetError(f"{file}: action_spec {spec!r} is not a valid action space ({type(err).__name__}: {err})"[:600]) from None
    if "resize" in m and m["resize"] not in RESIZE_MODES:
        raise bad("resize", m["resize"], f"one of {', '.join(RESIZE_MODES)}")
    for name in PER_FRAME_EXTRAS:
        if name in m and not isinstance(m[name], bool):
            raise bad(name, m[name], "true or false")
    for field, kind, expected in (("env_id", str, "a string"), ("env_kwargs", dict, "an object"),
                                  ("policy", str, "a string"), ("camera", dict, "an object"),
                                  ("task", dict, "an object")):
        if m.get(field) is not None and not isinstance(m[field], kind):
            raise bad(field, m[field], f"{expected} or null")
    for field in ("seed", "max_steps", "episodes_per_shard"):
        if m.get(field) is not None and not _is_count(m[field]):
            raise bad(field, m[field], "a non-negative integer or null")
    shards = m["shards"]
    if not isinstance(shards, list):
        raise bad("shards", shards, "a list of shard entries")
    for i, entry in enumerate(shards):
        where = f"shards[{i}]"
        if not isinstance(entry, dict):
            raise bad(where, entry, "an object {'file', 'episodes', 'steps', 'frames', 'sha256', 'bytes'}")
        name = entry.get("file")
        if not isinstance(name, str) or not _SHARD_NAME.fullmatch(name):
            raise bad(f"{where}.file", name, "a shard file name inside the dataset directory, like 'shard-000000.safetensors'")
        for field, minimum in (("episodes", 1), ("steps", 1), ("frames", 1), ("bytes", 0)):
            if not _is_count(entry.get(field), minimum):
                raise bad(f"{where}.{field}", entry.get(field), f"an integer >= {minimum}")
        digest = entry.get("sha256")
        if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise bad(f"{where}.sha256", digest, "64 lowercase hex digits")


def _shard_path(path: Path, entry: dict[str, Any]) -> Path:
    """The file of a manifest shard entry, refused if it (or a symlink it is) leaves the dataset directory."""
    name = str(entry.get("file", ""))
    file = path / name
    if not _SHARD_NAME.fullmatch(name) or not file.resolve().is_relative_to(path.resolve()):
        raise DatasetError(f"shard {file} listed in {path / MANIFEST} leaves the dataset directory {path}; "
                           "expected a shard file inside it")
    return file


def _check_shard_file(path: Path, entry: dict[str, Any], full: bool) -> None:
    file = path / str(entry.get("file", ""))
    if not entry.get("file") or not file.is_file():
        raise DatasetError(f"shard {file} listed in {path / MANIFEST} is missing")
    _shard_path(path, entry)
    size = file.stat().st_size
    if "bytes" in entry and size != int(entry["bytes"]):
        raise DatasetError(f"shard {file} is torn or corrupted: {size} bytes, the manifest says {entry['bytes']}")
    if full and _sha256_file(file) != entry.get("sha256"):
        raise DatasetError(f"shard {file} is corrupted: its sha256 does not match the manifest")


class ShardWriter:
    """Writes episodes into safetensors shards and keeps ``manifest.json`` up to date.

    Used by :func:`collect` and by anything else that produces episodes (e.g. dream rollouts).

    Args:
        out: dataset directory (created; must be empty unless ``resume``).
        manifest_fields: top-level manifest fields; needs ``image_size`` ``[H, W]``, ``action_spec``
            (:func:`neuralsim.actions.space_to_spec`) and ``frames_per_step``; ``env_id``,
            ``env_kwargs``, ``policy``, ``seed`` and any extra JSON fields are stored as given.
        episodes_per_shard: episodes buffered before a shard is written.
        resume: continue the dataset in ``out``: listed shards are verified (size, sha256), leftover
            temp files and unlisted shards are removed; ``manifest_fields`` must match the manifest.

    Example:
        >>> with ShardWriter("data/mine", {"image_size": [64, 64], "action_spec": spec, "frames_per_step": 1}) as w:
        ...     w.add_episode(frames, actions, rewards, terminated, truncated, "a red ball")
    """

    def __init__(
        self,
        out: str | Path,
        manifest_fields: dict[str, Any],
        *,
        episodes_per_shard: int = 16,
        resume: bool = False,
    ) -> None:
        if not isinstance(episodes_per_shard, (int, np.integer)) or episodes_per_shard <= 0:
            raise ValueError(f"episodes_per_shard must be a positive integer, got {episodes_per_shard!r}")
        for key in ("image_size", "action_spec", "frames_per_step"):
            if key not in manifest_fields:
                raise ValueError(f"manifest_fields must contain {key!r}; got keys {sorted(manifest_fields)}")
        self.path = Path(out)
        self.episodes_per_shard = int(episodes_per_shard)
        fields = json.loads(json.dumps(manifest_fields))  # JSON-normalised (tuples -> lists)
        self.image_size = tuple(int(s) for s in fields["image_size"])
        self.frames_per_step = int(fields["frames_per_step"])
        self.action_spec = fields["action_spec"]
        A.spec_to_space(self.action_spec)  # raises on an invalid spec
        self._lock: int | None = None
        try:
            self._open_directory(fields, resume)
        except BaseException:
            self._unlock()  # now, not when the garbage collector gets to it: a caller may look at the directory
            raise
        self._buffer: list[dict[str, Any]] = []

    def _open_directory(self, fields: dict[str, Any], resume: bool) -> None:
        """Lock the dataset directory, then start it (empty) or check and recover it (``resume``)."""
        existing = self.path.is_dir() and any(p.name != LOCK for p in self.path.iterdir())
        if existing and resume and (self.path / MANIFEST).exists():
            self._lock = _lock_directory(self.path)  # before reading: another writer may be mid-shard
            self.manifest = _load_manifest(self.path)
            for key, value in fields.items():
                if key in ("shards", "episodes", "steps", "format", "version"):
                    continue
                if key in _LEGACY_MANIFEST and key not in self.manifest:  # a dataset from before the field existed
                    if _LEGACY_MANIFEST[key] is None:
                        continue
                    self.manifest[key] = _LEGACY_MANIFEST[key]
                if self.manifest.get(key) != value:
                    raise ValueError(
                        f"resume: the dataset in {self.path} was collected with {key}={self.manifest.get(key)!r}, "
                        f"got {key}={value!r}; use the same settings or a new directory"
                    )
            self._recover()
        elif existing:
            hint = "it has no manifest.json to resume from" if resume else "pass resume=True (--resume) to continue it"
            raise ValueError(f"out directory {self.path} is not empty; {hint}, or choose an empty directory")
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = _lock_directory(self.path)
            if (self.path / MANIFEST).exists():  # another writer started here between the check and the lock
                self._unlock()
                raise ValueError(f"out directory {self.path} is not empty; pass resume=True (--resume) to continue it, "
                                 "or choose an empty directory")
            self.manifest = {"format": FORMAT, "version": VERSION, **fields, "shards": [], "episodes": 0, "steps": 0}
            self._write_manifest()

    # -- recovery

    def _recover(self) -> None:
        """Delete what an interrupted writer provably left: its temp files, and the one shard it had written but
        not yet listed (the next index, with a neuralsim shard header). Anything else is the user's and stays."""
        listed = {s["file"] for s in self.manifest["shards"]}
        for entry in self.manifest["shards"]:
            _check_shard_file(self.path, entry, full=True)
        pending = _shard_name(len(self.manifest["shards"]))
        for file in sorted(self.path.iterdir()):
            if _OWN_TEMP.fullmatch(file.name) and file.is_file() and not file.is_symlink():
                logger.info("resume: removing the leftover temp file %s", file)
                file.unlink()
            elif _SHARD_NAME.fullmatch(file.name) and file.name not in listed:
                if file.name != pending or not _is_neuralsim_shard(file):
                    raise ValueError(f"resume: {file} is not listed in {self.path / MANIFEST} and is not the shard an "
                                     "interrupted collect was writing; move it out of the dataset directory")
                # Written but killed before the manifest listed it: its episodes are collected again.
                logger.info("resume: removing the unlisted shard %s", file)
                file.unlink()

    @property
    def num_episodes(self) -> int:
        """Episodes written to listed shards plus those buffered."""
        return int(self.manifest["episodes"]) + len(self._buffer)

    @property
    def num_steps(self) -> int:
        return int(self.manifest["steps"]) + sum(len(e["rewards"]) for e in self._buffer)

    # -- writing

    def add_episode(
        self,
        frames: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        description: str,
        poses: np.ndarray | None = None,
        seed: int | None = None,
        target_positions: np.ndarray | None = None,
    ) -> None:
        """Buffer one episode; a shard is written every ``episodes_per_shard`` episodes.

        Args:
            frames: ``[1 + n * K, H, W, 3]`` uint8.
            actions: ``[n, *action_shape]`` (Box) or ``[n]`` integers (Discrete).
            rewards, terminated, truncated: ``[n]``.
            description: text of the episode (layout description, env id...).
            poses: optional ``[1 + n * K, 4, 4]`` camera-to-world per frame.
            seed: the env seed of the episode.
            target_positions: optional ``[1 + n * K, 3]`` the task target's position per frame, in the poses' world
                axes (the room's ``info["target_position"]``; a target-tracking reward model learns to find it).
        """
        rewards = np.asarray(rewards, dtype=np.float32).reshape(-1)
        n = len(rewards)
        K = self.frames_per_step
        H, W = self.image_size
        frames = np.asarray(frames)
        if n < 1:
            raise ValueError("rewards must hold at least one step, got an empty array")
        if frames.dtype != np.uint8 or frames.shape != (1 + n * K, H, W, 3):
            raise ValueError(f"frames must be uint8 of shape {(1 + n * K, H, W, 3)} (1 + steps * frames_per_step), got {frames.dtype} {frames.shape}")
        acts = A.validate_actions(np.asarray(actions).reshape(n, -1) if self.action_spec["type"] == "box" else actions, self.action_spec, batch_size=n)
        terminated = np.asarray(terminated).reshape(-1).astype(bool)
        truncated = np.asarray(truncated).reshape(-1).astype(bool)
        if terminated.shape != (n,) or truncated.shape != (n,):
            raise ValueError(f"terminated and truncated must have shape ({n},), got {terminated.shape} and {truncated.shape}")
        if not isinstance(description, str):
            raise TypeError(f"description must be a str, got {type(description).__name__}")
        if poses is not None:
            poses = np.asarray(poses, dtype=np.float32)
            if poses.shape != (1 + n * K, 4, 4):
                raise ValueError(f"poses must have shape {(1 + n * K, 4, 4)}, got {poses.shape}")
        if target_positions is not None:
            target_positions = np.asarray(target_positions, dtype=np.float32)
            if target_positions.shape != (1 + n * K, 3):
                raise ValueError(f"target_positions must have shape {(1 + n * K, 3)}, got {target_positions.shape}")
        for name, value in (("poses", poses), ("target_positions", target_positions)):
            has = self.manifest.get(name)
            if has is None and self._buffer:
                has = self._buffer[0][name] is not None
            if has is not None and has != (value is not None):
                raise ValueError(f"{name} must be given for every episode of a dataset or for none; this dataset has "
                                 f"{'them' if has else 'none'}")
        self._buffer.append(
            {"frames": frames, "actions": acts, "rewards": rewards, "terminated": terminated, "truncated": truncated,
             "description": description, "poses": poses, "target_positions": target_positions,
             "seed": None if seed is None else int(seed)}
        )
        if len(self._buffer) >= self.episodes_per_shard:
            self.flush()

    def flush(self) -> None:
        """Write the buffered episodes as one shard, then list it in the manifest."""
        if not self._buffer:
            return
        eps = self._buffer
        frame_offsets = np.cumsum([0] + [len(e["frames"]) for e in eps]).astype(np.int64)
        step_offsets = np.cumsum([0] + [len(e["rewards"]) for e in eps]).astype(np.int64)
        tensors = {
            "frames": np.concatenate([e["frames"] for e in eps]),
            "actions": np.concatenate([e["actions"] for e in eps]),
            "rewards": np.concatenate([e["rewards"] for e in eps]),
            "terminated": np.concatenate([e["terminated"] for e in eps]),
            "truncated": np.concatenate([e["truncated"] for e in eps]),
            "frame_offsets": frame_offsets,
            "step_offsets": step_offsets,
        }
        for name in PER_FRAME_EXTRAS:
            if eps[0][name] is not None:
                tensors[name] = np.concatenate([e[name] for e in eps])
            if name == "poses" or eps[0][name] is not None:  # older readers know only poses: no key when absent
                self.manifest[name] = eps[0][name] is not None
        metadata = {
            "format": "neuralsim-shard",
            "version": str(VERSION),
            "descriptions": json.dumps([e["description"] for e in eps]),
            "seeds": json.dumps([e["seed"] for e in eps]),
        }
        data = safetensors_bytes(tensors, metadata)
        name = _shard_name(len(self.manifest["shards"]))
        _atomic_write(self.path / name, data)
        self.manifest["shards"].append(
            {"file": name, "episodes": len(eps), "steps": int(step_offsets[-1]), "frames": int(frame_offsets[-1]),
             "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        )
        self.manifest["episodes"] = int(self.manifest["episodes"]) + len(eps)
        self.manifest["steps"] = int(self.manifest["steps"]) + int(step_offsets[-1])
        self._buffer = []
        self._write_manifest()

    def _write_manifest(self) -> None:
        _atomic_write(self.path / MANIFEST, (json.dumps(self.manifest, indent=1) + "\n").encode())

    def close(self) -> None:
        """Write the last (possibly smaller) shard and release the directory's writer lock."""
        try:
            self.flush()
        finally:
            self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the only fd drops the flock
            self._lock = None

    def __del__(self) -> None:  # a writer dropped after an error (collect interrupted, __init__ refused)
        if getattr(self, "_lock", None) is not None:
            self._unlock()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self._unlock()


# ---------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------


class Dataset:
    """Read-only view of a dataset directory; shards are opened lazily (memory-mapped, small LRU).

    Args:
        path: dataset directory (``manifest.json`` + shards).
        cache_shards: how many shards to keep open.
        verify_on_load: hash each shard (sha256) the first time it is read, so a corrupted shard
            raises :class:`DatasetError` instead of being read silently.

    Raises:
        DatasetError: missing/invalid manifest, missing or torn shard (size mismatch).
    """

    def __init__(self, path: str | Path, *, cache_shards: int = 4, verify_on_load: bool = True) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise DatasetError(f"dataset path {self.path} is not a directory")
        self.manifest = _load_manifest(self.path)
        m = self.manifest
        try:
            self.image_size: tuple[int, int] = (int(m["image_size"][0]), int(m["image_size"][1]))
            self.frames_per_step = int(m["frames_per_step"])
            self.action_spec: dict[str, Any] = m["action_spec"]
            A.spec_to_space(self.action_spec)
        except (TypeError, ValueError, KeyError, IndexError) as err:
            raise DatasetError(f"{self.path / MANIFEST}: invalid image_size/frames_per_step/action_spec ({err})") from err
        #: how frames of another aspect became ``image_size`` (datasets from before the field: squashed)
        self.resize: str = m.get("resize", _LEGACY_MANIFEST["resize"])
        if self.resize not in RESIZE_MODES:
            raise DatasetError(f"{self.path / MANIFEST}: resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        self.cache_shards = max(1, int(cache_shards))
        self.verify_on_load = verify_on_load
        self._open: OrderedDict[int, Any] = OrderedDict()
        self._verified: set[int] = set()
        # Per-episode index: (shard, local episode) and step counts; read from the small offset tensors.
        shard_of, local, steps, descriptions, seeds = [], [], [], [], []
        self._offsets: list[tuple[np.ndarray, np.ndarray]] = []
        for s, entry in enumerate(m["shards"]):
            _check_shard_file(self.path, entry, full=False)
            handle = self._handle(s, verify=False)
            try:
                frame_offsets = np.asarray(handle.get_tensor("frame_offsets"), dtype=np.int64)
                step_offsets = np.asarray(handle.get_tensor("step_offsets"), dtype=np.int64)
                meta = handle.metadata() or {}
                descs = json.loads(meta.get("descriptions", "[]"))
                shard_seeds = json.loads(meta.get("seeds", "null")) or [None] * int(entry["episodes"])
                if not (isinstance(descs, list) and all(isinstance(d, str) for d in descs)):
                    raise ValueError(f"metadata 'descriptions' must be a JSON list of strings, got {str(descs)[:80]!r}")
                if not (isinstance(shard_seeds, list) and all(v is None or _is_count(abs(v) if isinstance(v, int) else v) for v in shard_seeds)
                        and len(shard_seeds) == int(entry["episodes"])):
                    raise ValueError(f"metadata 'seeds' must be a JSON list of {entry['episodes']} integers or "
                                     f"nulls, got {str(shard_seeds)[:80]!r}")
            except Exception as err:  # safetensors / JSON errors: the shard is not what the manifest says
                raise DatasetError(f"shard {self.path / entry['file']} is corrupted ({err})") from err
            E = int(entry["episodes"])
            if (
                len(frame_offsets) != E + 1 or len(step_offsets) != E + 1 or len(descs) != E
                or int(step_offsets[-1]) != int(entry["steps"]) or int(frame_offsets[-1]) != int(entry["frames"])
                or np.any(np.diff(step_offsets) < 1)
                or np.any(np.diff(frame_offsets) != 1 + np.diff(step_offsets) * self.frames_per_step)
            ):
                raise DatasetError(f"shard {self.path / entry['file']} is corrupted: its offsets do not match the manifest")
            self._check_shapes(handle, entry)
            self._offsets.append((frame_offsets, step_offsets))
            shard_of += [s] * E
            local += list(range(E))
            steps += np.diff(step_offsets).tolist()
            descriptions += descs
            seeds += list(shard_seeds)
        if len(steps) != int(m["episodes"]) or sum(steps) != int(m["steps"]):
            raise DatasetError(f"{self.path / MANIFEST}: totals (episodes={m['episodes']}, steps={m['steps']}) do not match its shards")
        self._shard_of = np.asarray(shard_of, dtype=np.int64)
        self._local = np.asarray(local, dtype=np.int64)
        self.episode_steps = np.asarray(steps, dtype=np.int64)
        self.descriptions: list[str] = descriptions
        self.seeds: list[int | None] = seeds

    def _check_shapes(self, handle: Any, entry: dict[str, Any]) -> None:
        """Frame size and action shape of a shard (from its header, no data read) must match the manifest."""
        H, W = self.image_size
        per_step = () if self.action_spec["type"] == "discrete" else (A.action_dim(self.action_spec),)
        expected = {"frames": (int(entry["frames"]), H, W, 3), "actions": (int(entry["steps"]), *per_step)}
        for name, shape in expected.items():
            try:
                got = tuple(handle.get_slice(name).get_shape())
            except Exception as err:  # a missing tensor
                raise DatasetError(f"shard {self.path / entry['file']} is corrupted: no {name!r} tensor ({err})") from err
            if got != shape:
                raise DatasetError(f"shard {self.path / entry['file']}: {name!r} has shape {got}, but {self.path / MANIFEST} "
                                   f"implies {shape} (image_size={[H, W]}, action_spec={self.action_spec})")

    # -- properties

    @property
    def num_episodes(self) -> int:
        return len(self.episode_steps)

    @property
    def num_steps(self) -> int:
        return int(self.episode_steps.sum())

    @property
    def has_poses(self) -> bool:
        """Whether shards hold per-frame camera ``poses``."""
        return bool(self.manifest.get("poses", False))

    @property
    def has_target_positions(self) -> bool:
        """Whether shards hold the task target's position per frame (``target_positions``)."""
        return bool(self.manifest.get("target_positions", False))

    def __len__(self) -> int:
        return self.num_episodes

    def __repr__(self) -> str:
        return (f"Dataset({str(self.path)!r}, env_id={self.manifest.get('env_id')!r}, episodes={self.num_episodes}, "
                f"steps={self.num_steps}, image_size={self.image_size}, frames_per_step={self.frames_per_step})")

    # -- shard access

    def _handle(self, s: int, verify: bool = True) -> Any:
        from safetensors import safe_open

        file = self.path / self.manifest["shards"][s]["file"]
        if verify and self.verify_on_load and s not in self._verified:
            _check_shard_file(self.path, self.manifest["shards"][s], full=True)
            self._verified.add(s)
        if s in self._open:
            self._open.move_to_end(s)
            return self._open[s]
        try:
            handle = safe_open(str(file), framework="np")
        except Exception as err:
            raise DatasetError(f"shard {file} is torn or corrupted ({err})") from err
        self._open[s] = handle
        while len(self._open) > self.cache_shards:
            self._open.popitem(last=False)
        return handle

    def _read(self, s: int, name: str, start: int, stop: int) -> np.ndarray:
        try:
            return np.asarray(self._handle(s).get_slice(name)[start:stop])
        except DatasetError:
            raise
        except Exception as err:
            raise DatasetError(f"shard {self.path / self.manifest['shards'][s]['file']}: cannot read {name!r} ({err})") from err

    def _check_index(self, i: int) -> int:
        if not isinstance(i, (int, np.integer)) or not -self.num_episodes <= i < self.num_episodes:
            raise IndexError(f"episode index must be an int in [0, {self.num_episodes}), got {i!r}")
        return int(i) % self.num_episodes

    def episode(self, i: int) -> dict[str, Any]:
        """Episode ``i``: ``frames`` ``[1 + n*K, H, W, 3]`` uint8, ``actions``, ``rewards``, ``terminated``,
        ``truncated`` (``[n]``), ``poses`` and ``target_positions`` (if recorded), ``description``, ``seed``."""
        i = self._check_index(i)
        s, j = int(self._shard_of[i]), int(self._local[i])
        fo, so = self._offsets[s]
        out: dict[str, Any] = {
            "frames": self._read(s, "frames", fo[j], fo[j + 1]),
            "actions": self._read(s, "actions", so[j], so[j + 1]),
            "rewards": self._read(s, "rewards", so[j], so[j + 1]),
            "terminated": self._read(s, "terminated", so[j], so[j + 1]).astype(bool),
            "truncated": self._read(s, "truncated", so[j], so[j + 1]).astype(bool),
            "description": self.descriptions[i],
            "seed": self.seeds[i],
        }
        for name in self._extras():
            out[name] = self._read(s, name, fo[j], fo[j + 1])
        return out

    def _extras(self) -> tuple[str, ...]:
        """The optional per-frame arrays the shards hold."""
        return tuple(name for name in PER_FRAME_EXTRAS if self.manifest.get(name, False))

    def step_column(self, name: str) -> np.ndarray:
        """A per-step array of every episode, in episode order, without reading any frame: ``"actions"``
        ``[num_steps, ...]``, ``"rewards"`` ``[num_steps]`` float32, ``"terminated"`` / ``"truncated"`` bool."""
        if name not in ("actions", "rewards", "terminated", "truncated"):
            raise ValueError(f"name must be 'actions', 'rewards', 'terminated' or 'truncated', got {name!r}")
        parts = [self._read(s, name, 0, int(self._offsets[s][1][-1])) for s in range(len(self._offsets))]
        out = np.concatenate(parts) if parts else np.zeros((0,), np.float32)
        return out.astype(bool) if name in ("terminated", "truncated") else out

    def _focus_windows(self, steps: int, counts: np.ndarray, focus: np.ndarray | None, fraction: float,
                       at: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray, tuple[int, int]] | None:
        """``iter_windows``' focus steps as (episode, step in episode) of episodes a window fits in, and the checked
        ``focus_at``; None without focus."""
        if focus is None or fraction == 0:
            return None
        if isinstance(fraction, bool) or not (isinstance(fraction, (int, float)) and 0.0 <= fraction <= 1.0):
            raise ValueError(f"focus_fraction must be a fraction in [0, 1], got {fraction!r}")
        lo, hi = (0, steps) if at is None else at
        if not (isinstance(lo, (int, np.integer)) and isinstance(hi, (int, np.integer)) and 0 <= lo < hi <= steps):
            raise ValueError(f"focus_at must be (lo, hi) with 0 <= lo < hi <= steps = {steps}, got {at!r}")
        focus = np.asarray(focus)
        if focus.ndim != 1 or focus.dtype.kind not in "iu" or (focus < 0).any() or (focus >= self.num_steps).any():
            raise ValueError(f"focus must be a 1-D array of step indices in [0, {self.num_steps}), got {focus!r}")
        first_step = np.concatenate([[0], np.cumsum(self.episode_steps)])
        episodes = np.searchsorted(first_step, focus, side="right") - 1
        keep = counts[episodes] > 0
        if not keep.any():
            raise DatasetError(f"no focus step of {self.path} lies in an episode of at least {steps} steps")
        episodes = episodes[keep]
        return episodes, focus[keep] - first_step[episodes], (int(lo), int(hi))

    def verify(self) -> dict[str, Any]:
        """Check every shard (size, sha256, tensor shapes); returns a summary.

        Raises:
            DatasetError: naming the first bad file.
        """
        H, W = self.image_size
        for s, entry in enumerate(self.manifest["shards"]):
            file = self.path / entry["file"]
            _check_shard_file(self.path, entry, full=True)
            self._verified.add(s)
            handle = self._handle(s)
            n_frames, n_steps = int(entry["frames"]), int(entry["steps"])
            expected = {"frames": (n_frames, H, W, 3), "rewards": (n_steps,), "terminated": (n_steps,), "truncated": (n_steps,)}
            if self.action_spec["type"] == "discrete":
                expected["actions"] = (n_steps,)
            else:
                expected["actions"] = (n_steps, A.action_dim(self.action_spec))
            for name in self._extras():
                expected[name] = (n_frames, *PER_FRAME_EXTRAS[name])
            for name, shape in expected.items():
                got = tuple(handle.get_slice(name).get_shape())
                if got != shape:
                    raise DatasetError(f"shard {file}: {name!r} has shape {got}, expected {shape}")
        return {"path": str(self.path), "shards": len(self.manifest["shards"]), "episodes": self.num_episodes, "steps": self.num_steps}

    def validate_for(self, image_size: int | Sequence[int], action_spec: dict[str, Any]) -> None:
        """Check that a model configured for ``image_size`` / ``action_spec`` can train on this dataset.

        Raises:
            DatasetError: naming both sides of the mismatch.
        """
        size = parse_image_size(image_size, "image_size")
        if size != self.image_size:
            raise DatasetError(f"dataset {self.path} has image_size {list(self.image_size)}, the model expects {list(size)}")
        mine, theirs = self.action_spec, action_spec
        same = isinstance(theirs, dict) and mine.get("type") == theirs.get("type")
        if same and mine["type"] == "discrete":
            same = int(mine["n"]) == int(theirs["n"]) and int(mine.get("start", 0)) == int(theirs.get("start", 0))
        elif same:
            same = (
                list(mine["shape"]) == list(theirs["shape"])
                and np.allclose(mine["low"], theirs["low"]) and np.allclose(mine["high"], theirs["high"])
            )
        if not same:
            raise DatasetError(f"dataset {self.path} has action_spec {mine}, the model expects {theirs}")

    def iter_windows(self, steps: int, batch_size: int, seed: int, start_index: int = 0, *,
                     focus: np.ndarray | None = None, focus_fraction: float = 0.0,
                     focus_at: tuple[int, int] | None = None) -> Iterator[dict[str, Any]]:
        """Infinite iterator of training windows, uniform over all valid (episode, start step) pairs.

        Batch number ``i`` (counting from 0) depends only on ``(seed, i)``: pass ``start_index=i`` to
        resume a training stream exactly. A window starts at a step boundary and spans ``steps`` steps.

        With ``focus`` (step indices in :meth:`step_column` order, e.g. the steps where a player lets go of the
        keys) each window is, with chance ``focus_fraction``, drawn around one of them instead: a uniformly drawn
        focus step falls at a window step uniform in ``focus_at = (lo, hi)`` (default: anywhere), as far as the
        episode's ends allow. Rare events a model must learn are then seen often; the uniform windows are drawn
        exactly as without ``focus``.

        Yields:
            ``frames`` uint8 ``[B, 1 + steps*K, H, W, 3]``, ``actions`` ``[B, steps, A]`` float32 (Box) or
            ``[B, steps]`` int64 (Discrete), ``rewards`` float32 ``[B, steps]``, ``terminated`` /
            ``truncated`` bool ``[B, steps]``, ``descriptions`` (list of B str), ``episode`` / ``start``
            int64 ``[B]``, and ``poses`` float32 ``[B, 1 + steps*K, 4, 4]`` when recorded.
        """
        for name, value, lo in (("steps", steps, 1), ("batch_size", batch_size, 1), ("seed", seed, 0), ("start_index", start_index, 0)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
        counts = np.maximum(self.episode_steps - steps + 1, 0)
        cumulative = np.cumsum(counts)
        total = int(cumulative[-1]) if len(cumulative) else 0
        if total == 0:
            longest = int(self.episode_steps.max()) if self.num_episodes else 0
            raise DatasetError(f"no episode of {self.path} has {steps} steps (the longest has {longest}); use a smaller steps")
        focused = self._focus_windows(steps, counts, focus, focus_fraction, focus_at)
        K = self.frames_per_step
        extras = self._extras()
        i = int(start_index)
        while True:
            rng = np.random.default_rng([int(seed), i])
            draws = rng.integers(total, size=batch_size)
            episodes = np.searchsorted(cumulative, draws, side="right")
            starts = draws - (cumulative[episodes] - counts[episodes])
            if focused is not None:  # drawn after the uniform windows: those stay as they are without focus
                rows = rng.random(batch_size) < focus_fraction
                pick = rng.integers(len(focused[0]), size=batch_size)
                offset = rng.integers(focused[2][0], focused[2][1], size=batch_size)
                e_f, t_f = focused[0][pick], focused[1][pick]
                s_f = np.clip(t_f - offset, 0, counts[e_f] - 1)
                episodes, starts = np.where(rows, e_f, episodes), np.where(rows, s_f, starts)
            batch: dict[str, list[Any]] = {k: [] for k in ("frames", "actions", "rewards", "terminated", "truncated", *extras)}
            for e, t in zip(episodes.tolist(), starts.tolist()):
                s, j = int(self._shard_of[e]), int(self._local[e])
                fo, so = self._offsets[s]
                f0, s0 = int(fo[j]) + t * K, int(so[j]) + t
                batch["frames"].append(self._read(s, "frames", f0, f0 + steps * K + 1))
                for name in ("actions", "rewards", "terminated", "truncated"):
                    batch[name].append(self._read(s, name, s0, s0 + steps))
                for name in extras:
                    batch[name].append(self._read(s, name, f0, f0 + steps * K + 1))
            out: dict[str, Any] = {k: np.stack(v) for k, v in batch.items() if v}
            out["terminated"] = out["terminated"].astype(bool)
            out["truncated"] = out["truncated"].astype(bool)
            out["descriptions"] = [self.descriptions[e] for e in episodes.tolist()]
            out["episode"] = episodes.astype(np.int64)
            out["start"] = starts.astype(np.int64)
            yield out
            i += 1
