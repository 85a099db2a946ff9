"""Where checkpoints live and how files are written safely.

A checkpoint is a directory: ``config.json`` + ``model.safetensors`` (diffusers-style). Names
(``"default"``) resolve to ``neuralsim/assets/<name>/``; ``"sana-wm-2.6b"`` is the official model
served through diffusers and needs a user-provided directory. Every write is atomic: a temporary
file in the same directory, flushed and fsynced, then ``os.replace`` — a crash leaves either the old
file or the new one, never a torn one.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
from neuralsim.config import OFFICIAL_MODEL_NAME as OFFICIAL_MODEL  # "sana-wm-2.6b"
UNSAFE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")

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
    return sorted(p.name for p in ASSETS_DIR.iterdir() if (p / "config.json").is_file() and (p / "model.safetensors").is_file())


def available_models() -> dict[str, str]:
    """Every model name neuralsim knows, with where it comes from."""
    models = {name: str(ASSETS_DIR / name) for name in shipped_models()}
    models[OFFICIAL_MODEL] = "official SANA-WM via diffusers (extra [sana]); pass checkpoint=DIR with its weights"
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
    if text == OFFICIAL_MODEL:
        raise ValueError(f"{argument}={text!r} is the official SANA-WM served through diffusers; load it with "
                         "neuralsim.sana_wm (extra [sana]), not as a native checkpoint")
    path = Path(text)
    if path.suffix.lower() in UNSAFE_SUFFIXES:
        raise ValueError(f"{argument}={text!r} is a pickle-format file; neuralsim never unpickles files (they can run "
                         "arbitrary code). Expected a checkpoint directory with config.json + model.safetensors")
    if path.is_file():
        if path.name not in ("config.json", "model.safetensors"):
            raise ValueError(f"{argument}={text!r} is a file; expected a checkpoint directory with config.json + "
                             "model.safetensors")
        path = path.parent
    if not path.is_dir():
        if os.sep not in text and (ASSETS_DIR / text).is_dir():
            path = ASSETS_DIR / text
        else:
            raise FileNotFoundError(f"{argument}={text!r}: no checkpoint directory and no shipped model of that name; "
                                    f"known models: {', '.join(available_models())}")
    if not (path / "model.safetensors").is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in UNSAFE_SUFFIXES)
        if pickles:
            raise ValueError(f"{argument}={text!r}: {path} has {pickles} but no model.safetensors; neuralsim never "
                             "unpickles (convert the weights to safetensors)")
        raise FileNotFoundError(f"{argument}={text!r}: {path} has no model.safetensors; expected config.json + "
                                "model.safetensors")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{argument}={text!r}: {path} has no config.json; expected config.json + model.safetensors")
    return path


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


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then atomically move the result to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes 0600, and so does safetensors' save_file, which replaces the file: set the usual mode after
        os.chmod(tmp, default_file_mode())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # make the rename itself durable
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _is_disk_full(exc) and not getattr(exc, "filename", None):  # name the file (write() errors name none)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise


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


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")

    atomic_write(path, write)


def atomic_save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata))
