"""The one owner of checkpoint files: their names, formats, readers and writers, and the one atomic writer.

A checkpoint is a directory (diffusers-style)::

    config.json               {"_class_name": "WorldModel", "_neuralsim_version": ..., **WorldModelConfig fields}
                              (the training run's ``provenance`` is one of the fields)
    model.safetensors         the weights; one metadata key {"format": "pt"}, so equal weights give equal bytes
    start_frames.safetensors  optional start set: uint8 ``[N, H, W, 3]`` "frames" + metadata "descriptions"
                              (a JSON list of N strings)

Every module reads and writes these through the functions here (:func:`read_config` / :func:`write_config`,
:func:`read_weights` / :func:`write_weights`, :func:`read_start_frames` / :func:`write_start_frames`,
:func:`write_checkpoint`). Names (``"default"``) resolve to ``neuralsim/assets/<name>/``; ``"sana-wm-2.6b"`` is
the official model served through diffusers and needs a user-provided directory.

Every file neuralsim writes goes through :func:`atomic_write` (or :class:`StagedFile` for a file filled over
time): a temporary file in the same directory, flushed and fsynced, then ``os.replace`` and an fsync of the
directory. A crash leaves either the old file or the new one, never a torn one. ``tests/test_layers.py`` checks
that no other module calls ``os.replace`` / ``os.rename`` / ``tempfile.mkstemp`` / ``NamedTemporaryFile``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from neuralsim.config import OFFICIAL_MODEL_NAME, WorldModelConfig  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    import numpy as np
    import torch

# ------------------------------------------------------------------------------------------ names

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
START_FRAMES_NAME = "start_frames.safetensors"
#: The weights file's whole metadata. One key: safetensors orders a multi-key metadata map differently on every
#: call, which would make equal weights give different bytes (the version is in config.json).
WEIGHTS_METADATA = {"format": "pt"}

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL_NAME = "default"
#: Pickle-format weight files: refused by name, never opened (unpickling runs code from the file).
UNSAFE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
#: ``model="default"`` in an install that ships no default model; callers append what to do instead.
DEFAULT_MODEL_MISSING = (f"no default model is shipped in this install (neuralsim/assets/{DEFAULT_MODEL_NAME} "
                         "is missing)")

#: ``config.json`` fields that shape what a loaded model does, that no weight's shape pins down, and that every
#: ``config.json`` written by ``save_pretrained`` holds. A config.json without one is refused rather than filled
#: with the dataclass default, which is not what the model was trained with (issue 24 #11: a config without the
#: camera fields loaded with 0.05 / 1.2° / 45° instead of the room's 0.08 / 4° / 70° and dreamt other frames).
#: Fields added to ``WorldModelConfig`` later (``patch_size``, ``prev_frame_input``, ``prediction``,
#: ``ae_edge_weight``, ...) are not listed: their defaults are the behaviour of the checkpoints written before
#: them, so older checkpoints keep loading.
REQUIRED_CONFIG_FIELDS = (
    "image_size", "spatial_stride", "frames_per_latent", "latent_scale", "latent_shift", "num_heads",
    "softmax_blocks", "attention_sink_frames", "attention_window", "camera_branch", "action_spec", "camera",
    "camera_fovy_deg", "camera_translation_speed", "camera_rotation_speed_deg", "text_max_tokens",
    "denoise_steps", "context_noise", "fused_commit", "flow_shift",
)


def shipped_models() -> list[str]:
    """Names of the checkpoints shipped inside the package."""
    if not ASSETS_DIR.is_dir():
        return []
    return sorted(p.name for p in ASSETS_DIR.iterdir() if (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file())


def default_model_missing(name: Any) -> bool:
    """Whether ``name`` asks for the shipped default model and this install has none (see ``DEFAULT_MODEL_MISSING``)."""
    return (isinstance(name, (str, os.PathLike)) and os.fspath(name) == DEFAULT_MODEL_NAME
            and not (ASSETS_DIR / DEFAULT_MODEL_NAME).is_dir())


def available_models() -> dict[str, str]:
    """Every model name neuralsim knows, with where it comes from."""
    models = {name: str(ASSETS_DIR / name) for name in shipped_models()}
    models[OFFICIAL_MODEL_NAME] = "official SANA-WM via diffusers (extra [sana]); pass checkpoint=DIR with its weights"
    return models


def resolve_checkpoint(name_or_path: str | os.PathLike, argument: str = "model") -> Path:
    """Turn a shipped name, a checkpoint directory (or a file inside it) into the checkpoint directory.

    Raises:
        TypeError: not a str or path.
        ValueError: ``"sana-wm-2.6b"`` (served by ``neuralsim.sana_wm``), a pickle-format file offered
            (never unpickled), or a file that is not part of a checkpoint.
        FileNotFoundError: no such directory or shipped name (lists the shipped ones), or a missing file.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"{argument} must be a str or path, got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    if text == OFFICIAL_MODEL_NAME:
        raise ValueError(f"{argument}={text!r} is the official SANA-WM served through diffusers; load it with "
                         "neuralsim.sana_wm (extra [sana]), not as a native checkpoint")
    path = Path(text)
    if path.suffix.lower() in UNSAFE_SUFFIXES:
        raise ValueError(f"{argument}={text!r} is a pickle-format file; neuralsim never unpickles files (they can run "
                         "arbitrary code). Expected a checkpoint directory with config.json + model.safetensors")
    if path.is_file():
        if path.name not in (CONFIG_NAME, WEIGHTS_NAME):
            raise ValueError(f"{argument}={text!r} is a file; expected a checkpoint directory with config.json + "
                             "model.safetensors")
        path = path.parent
    if not path.is_dir():
        if os.sep not in text and (ASSETS_DIR / text).is_dir():
            path = ASSETS_DIR / text
        else:
            raise FileNotFoundError(f"{argument}={text!r}: no checkpoint directory and no shipped model of that name; "
                                    f"known models: {', '.join(available_models())}")
    if not (path / WEIGHTS_NAME).is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in UNSAFE_SUFFIXES)
        if pickles:
            raise ValueError(f"{argument}={text!r}: {path} has {pickles} but no model.safetensors; neuralsim never "
                             "unpickles (convert the weights to safetensors)")
        raise FileNotFoundError(f"{argument}={text!r}: {path} has no model.safetensors; expected config.json + "
                                "model.safetensors")
    if not (path / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{argument}={text!r}: {path} has no config.json; expected config.json + model.safetensors")
    return path


def checkpoint_fingerprint(name_or_path: str | os.PathLike, argument: str = "model") -> str:
    """What identifies the model a run used, whatever it was called: the SHA-256 (first 16 hex digits) of its
    config.json, model.safetensors and start set (``"default"`` today and after an install are other models)."""
    path = resolve_checkpoint(name_or_path, argument)
    digest = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME, START_FRAMES_NAME):
        file = path / name
        if file.is_file():
            digest.update(name.encode())
            with file.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def provenance_env(config: Any, source: str) -> tuple[str | None, dict[str, Any]]:
    """The source env a checkpoint records (``config.provenance`` ``env_id`` / ``env_kwargs``), checked as data.

    A checkpoint is data: nothing in it may choose code. ``gym.make("module:Id")`` imports ``module``, so an
    ``env_id`` read from a checkpoint must be an id already in ``gym.registry`` (registered by code the user
    imported), never the ``module:Id`` form; ``env_kwargs`` must be a JSON object with string keys.

    Args:
        config: a ``WorldModelConfig``, or the ``config.json`` dict.
        source: where the config came from, for messages (e.g. ``"config.json of 'ckpt/'"``).

    Returns:
        ``(env_id, env_kwargs)``; ``env_id`` is None when the checkpoint records no real env (none, or a
        ``dream:`` dataset).

    Raises:
        ValueError: the recorded id has a ``module:`` part, is not registered, or ``env_kwargs`` is not an object.
    """
    import gymnasium as gym

    provenance = config.get("provenance") if isinstance(config, dict) else getattr(config, "provenance", None)
    if not isinstance(provenance, dict):
        return None, {}
    env_id, env_kwargs = provenance.get("env_id"), provenance.get("env_kwargs") or {}
    if env_id is None or (isinstance(env_id, str) and (not env_id or env_id.startswith("dream:"))):
        return None, {}
    if not isinstance(env_id, str) or ":" in env_id:
        raise ValueError(f"{source}: provenance.env_id={env_id!r} is not a plain registered Gymnasium id; a "
                         "checkpoint is data and never chooses a module to import (the 'module:Id' form is "
                         "refused; import the env's package yourself)")
    if env_id not in gym.registry:
        raise ValueError(f"{source}: provenance.env_id={env_id!r} is not a registered Gymnasium id; import the "
                         "package that registers it first (a checkpoint never imports code)")
    if not isinstance(env_kwargs, dict) or not all(isinstance(k, str) for k in env_kwargs):
        raise ValueError(f"{source}: provenance.env_kwargs must be a JSON object of gym.make keyword arguments, "
                         f"got {type(env_kwargs).__name__}")
    return env_id, dict(env_kwargs)


def ensure_writable_dir(path: str | os.PathLike, option: str, error: type[Exception] = ValueError, *,
                        create: bool = True) -> Path:
    """Create ``path`` if needed and check it is a writable directory; otherwise raise ``error`` naming ``option``.

    With ``create=False`` nothing is created: the nearest existing ancestor must be a writable directory (so a
    command can check its ``--out`` with its other inputs and make it only once they are all valid).
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise error(f"{option} {str(p)!r} exists and is not a directory; expected a directory path")
    if not create:
        probe = p.absolute()
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise error(f"{option} {str(p)!r} cannot be created: {str(probe)!r} is not a directory; expected a "
                        "writable directory")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise error(f"{option} {str(p)!r} is not writable (no write permission on {str(probe)!r}); expected a "
                        "writable directory")
        return p
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"{option} {str(p)!r} cannot be created ({exc.strerror}); expected a writable directory") from None
    if not os.access(p, os.W_OK):
        raise error(f"{option} {str(p)!r} is not writable; expected a writable directory")
    return p


def ensure_writable_file(path: str | os.PathLike, option: str, suffixes: Sequence[str],
                         error: type[Exception] = ValueError) -> Path:
    """Check an output file's suffix is one of ``suffixes`` and make its parent a writable directory.

    Raises ``error`` naming ``option`` otherwise (see :func:`ensure_writable_dir`).
    """
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise error(f"{option} {str(p)!r} must end with one of {', '.join(suffixes)}")
    ensure_writable_dir(p.parent if str(p.parent) else ".", option, error)
    return p


# ------------------------------------------------------------------------------------ config.json


def write_config(directory: str | os.PathLike, class_name: str, config: WorldModelConfig | Mapping[str, Any]) -> None:
    """Write ``directory/config.json``: ``{"_class_name", "_neuralsim_version", **fields}``, atomically.

    Args:
        directory: the checkpoint directory (created if needed).
        class_name: the model class that reads it back (``"WorldModel"``).
        config: a ``WorldModelConfig`` or its ``to_dict()``.
    """
    from neuralsim import __version__

    fields = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    atomic_write_json(Path(directory) / CONFIG_NAME,
                      {"_class_name": class_name, "_neuralsim_version": __version__, **fields})


def read_config(directory: str | os.PathLike, class_name: str = "WorldModel") -> WorldModelConfig:
    """Read ``directory/config.json`` as data and build its ``WorldModelConfig``, checked before any model is built.

    Args:
        directory: a checkpoint directory (see :func:`resolve_checkpoint` for names).
        class_name: the class the config must describe (a config without ``_class_name`` is accepted).

    Raises:
        ValueError: not a JSON object, of another class, without a field of ``REQUIRED_CONFIG_FIELDS``, or with a
            field of the wrong type or outside ``neuralsim.limits`` (the file is named).
        FileNotFoundError: no config.json.
    """
    file = Path(directory) / CONFIG_NAME
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file} is not valid JSON ({exc}); expected the config.json written by save_pretrained") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{file} must hold a JSON object (the model config), got {type(payload).__name__}")
    found = payload.get("_class_name", class_name)
    if found != class_name:
        raise ValueError(f"{file} describes a {found!r}, not a {class_name}")
    missing = [name for name in REQUIRED_CONFIG_FIELDS if name not in payload]
    if missing:  # no default stands in for what the model was trained with
        raise ValueError(f"{file} lacks field(s) {missing}, which shape what the model does and have no safe default; "
                         "expected the complete config.json written by save_pretrained")
    try:
        return WorldModelConfig.from_dict({k: v for k, v in payload.items() if not k.startswith("_")})
    except (TypeError, ValueError) as exc:  # types, NaN and neuralsim.limits bounds: checked before building
        raise ValueError(f"{file}: {exc}") from None


# ------------------------------------------------------------------------------------ weights


def _torn(file: Path, exc: BaseException) -> ValueError:
    return ValueError(f"{file} is not a valid safetensors file ({exc}); it may be torn (an interrupted copy) or "
                      "corrupted: copy or save the checkpoint again")


def count_weights(directory: str | os.PathLike) -> int:
    """How many tensors ``directory/model.safetensors`` holds, from its header alone (no tensor is read).

    Raises:
        ValueError: not a valid safetensors file (torn or corrupted).
    """
    from safetensors import SafetensorError, safe_open

    file = Path(directory) / WEIGHTS_NAME
    try:
        with safe_open(str(file), framework="pt") as f:
            return len(list(f.keys()))
    except SafetensorError as exc:
        raise _torn(file, exc) from None


def read_weights(directory: str | os.PathLike, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of ``directory/model.safetensors`` (safetensors: no code runs on load), on ``device`` (cpu).

    Raises:
        ValueError: not a valid safetensors file (torn or corrupted).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(directory) / WEIGHTS_NAME
    try:
        return load_file(str(file), device=str(device or "cpu"))
    except SafetensorError as exc:
        raise _torn(file, exc) from None


def write_weights(directory: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                  metadata: dict[str, str] | None = WEIGHTS_METADATA) -> None:
    """Write ``directory/model.safetensors`` atomically (moved to the CPU, contiguous; ``WEIGHTS_METADATA``)."""
    atomic_save_safetensors(Path(directory) / WEIGHTS_NAME, tensors, metadata=metadata)


def write_checkpoint(directory: str | os.PathLike, class_name: str, config: WorldModelConfig | Mapping[str, Any],
                     tensors: Mapping[str, torch.Tensor], *,
                     weights_metadata: dict[str, str] | None = WEIGHTS_METADATA) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into ``directory`` (created if needed); returns it.

    Each file is atomic; weights first, config last. Other files in the directory (a start set, optimizer
    state) are left alone.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_weights(directory, tensors, metadata=weights_metadata)
    write_config(directory, class_name, config)
    return directory


# ------------------------------------------------------------------------------------ start set


def read_start_frames(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """The start set shipped with a checkpoint: uint8 ``[N, H, W, 3]`` frames and their descriptions.

    A checkpoint without ``start_frames.safetensors`` gives an empty ``(0,)`` array and ``[]``.

    Raises:
        ValueError: no ``frames`` tensor, not uint8 ``[N, H, W, 3]`` (checked from the header, before any
            read), a torn file, or ``descriptions`` metadata that is not a JSON list of N strings.
    """
    import numpy as np
    from safetensors import safe_open

    file = Path(path) / START_FRAMES_NAME
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


def write_start_frames(directory: str | os.PathLike, frames: np.ndarray, descriptions: Sequence[str]) -> None:
    """Write ``directory/start_frames.safetensors`` atomically: the env's default start set.

    Args:
        directory: the checkpoint directory (created if needed).
        frames: uint8 ``[N, H, W, 3]``.
        descriptions: one string per frame (``""`` where there is none).

    Raises:
        ValueError: frames not uint8 ``[N, H, W, 3]``, or not one description per frame.
    """
    import numpy as np
    from safetensors.numpy import save_file

    frames = np.ascontiguousarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    descriptions = list(descriptions)
    if len(descriptions) != len(frames) or not all(isinstance(d, str) for d in descriptions):
        raise ValueError(f"descriptions must be one string per frame ({len(frames)} frames), got "
                         f"{str(descriptions)[:120]}")
    metadata = {"descriptions": json.dumps(descriptions)}
    atomic_write(Path(directory) / START_FRAMES_NAME, lambda tmp: save_file({"frames": frames}, tmp, metadata=metadata))


# ------------------------------------------------------------------------------------ the atomic writer


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagedFile:
    """A hidden temporary file beside ``path`` (``.<name>.<8 random chars><suffix>``) that :meth:`commit` makes
    ``path`` atomically; :meth:`discard` removes it.

    :func:`atomic_write` is this for a file written in one call; use the class directly for a file filled over
    time (a video recorder). The temporary file has the usual mode (``default_file_mode``), as ``path`` will.

    Args:
        path: the final file; its directory must exist.
        suffix: the temporary file's suffix (a writer that picks its format by extension needs the real one).
    """

    def __init__(self, path: str | os.PathLike, suffix: str = ".tmp") -> None:
        self.path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=suffix, dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        os.chmod(self.tmp, default_file_mode())  # mkstemp makes 0600

    def commit(self) -> None:
        """fsync the temporary file, move it onto ``path`` and fsync the directory (the rename is durable)."""
        # safetensors' save_file replaces the file with a 0600 one: set the usual mode again
        os.chmod(self.tmp, default_file_mode())
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)

    def discard(self) -> None:
        """Remove the temporary file (nothing if it is gone)."""
        self.tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then atomically move the result to ``path`` (its directory is created if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = StagedFile(path)
    try:
        write(str(staged.tmp))
        staged.commit()
    except BaseException as exc:
        staged.discard()
        if _is_disk_full(exc) and not getattr(exc, "filename", None):  # name the file (write() errors name none)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise


def publish_dir(staging: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move a complete staging directory (its files written with :func:`atomic_write`) onto ``final``.

    An existing ``final`` is removed first; the rename is made durable with an fsync of the parent directory.
    """
    staging, final = Path(staging), Path(final)
    _fsync_dir(staging)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    _fsync_dir(final.parent)


def _is_disk_full(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT, also as safetensors' Rust ``IoError(Os { code: 28, ... })`` text."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    text = str(exc)
    return type(exc).__name__ == "SafetensorError" and ("code: 28" in text or "No space left" in text)


def default_file_mode() -> int:
    """``0o666 & ~umask``: the mode ``open(path, "w")`` gives a new file (config.json's), e.g. 0644."""
    try:  # Linux: read the umask without changing it (os.umask(0) would race with other threads creating files)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON (2 spaces, key order kept, a final newline) to ``path`` atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")

    atomic_write(path, write)


def atomic_save_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any],
                            metadata: dict[str, str] | None = None) -> None:
    """Write torch ``tensors`` as a safetensors file atomically (moved to the CPU, contiguous)."""
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp,
                                             metadata=metadata))
