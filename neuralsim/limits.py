"""Bounds on what a file may ask neuralsim to build or compute.

A checkpoint's ``config.json``, a ``policy.json`` or a key string is a few hundred bytes; without bounds it can ask
for a 20,000-block model (built before the weights are looked at), a billion Euler steps, or a 9 GB policy
network. Every number a file can set and that sizes work or memory *before* the weights are checked against it
has a ceiling here, well above every shipped preset (``paper-2.6b`` included), and the checks run before anything
is built. Sizes that the weights themselves must match (``width``, ``latent_channels``, ...) are bounded too, so
that building the module skeleton on the ``meta`` device stays cheap.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

#: Largest value of each ``WorldModelConfig`` field (ints, or floats for float fields; tuple fields: per entry).
CONFIG_LIMITS: dict[str, float] = {
    "image_size": 2048,
    "spatial_stride": 256,
    "frames_per_latent": 64,
    "latent_channels": 4096,
    "ae_channels": 8192,
    "ae_decoder_channels": 8192,
    "ae_blocks": 64,
    "ae_decoder_blocks": 64,
    "patch_size": 64,
    "refiner_channels": 8192,
    "reward_model_channels": 8192,
    "reward_model_hidden": 16384,
    "width": 16384,
    "depth": 256,
    "num_heads": 1024,
    "ffn_ratio": 64.0,
    "ffn_temporal_kernel": 64,
    "conv_k_size": 64,
    "gdn_chunk_size": 4096,
    "attention_sink_frames": 1024,
    "attention_window": 4096,
    "text_width": 16384,
    "text_max_tokens": 4096,
    "text_vocab": 1 << 20,
    "text_hidden": 16384,
    "text_layers": 64,
    "denoise_steps": 1000,
    "flow_shift": 1e4,
    "camera_fovy_deg": 180.0,
    "camera_translation_speed": 1e3,
    "camera_rotation_speed_deg": 360.0,
    "camera_velocity_gain": 1e6,
    "camera_acceleration_limit": 1e6,
    "camera_frame_time": 60.0,
    "camera_substeps": 1000,
    "reward_loss_weight": 1e6,
    "termination_loss_weight": 1e6,
    "ae_ssim_weight": 1e6,
    "ae_edge_weight": 1e6,
}

#: Tokens of one latent frame (``(H / spatial_stride / patch_size) * (W / ...)``): attention and caches scale
#: with it and no weight depends on it, so ``image_size`` alone could ask for any amount of work.
MAX_TOKENS_PER_FRAME = 4096

#: Largest seed a command line accepts (numpy's classic seed range; streams derive their seeds from it).
MAX_SEED = 2**32 - 1

#: Euler steps per latent frame a caller or config may ask for.
MAX_DENOISE_STEPS = int(CONFIG_LIMITS["denoise_steps"])

#: Largest action space a config or policy may describe (Box elements or Discrete actions).
MAX_ACTION_ELEMENTS = 65536

#: Largest space a stored spec may describe (``neuralsim.actions.spec_to_space``): observation elements (e.g.
#: 1024 x 1024 x 4), action elements or Discrete actions. A 500-byte ``policy.json`` once asked for a 9 GB network.
MAX_SPACE_ELEMENTS = 1 << 22


def _type_of(annotation: str) -> str:
    """The JSON kind a dataclass field annotation (a string under ``from __future__ import annotations``) takes."""
    a = annotation.replace(" ", "")
    if a in ("int", "float", "bool", "str", "dict"):
        return a
    if a.startswith("tuple[int"):
        return "ints"
    if a == "float|tuple[float,...]":
        return "float_or_floats"
    return "any"


def _is_int(v: Any) -> bool:  # JSON ints and numpy ints; never bools (True is an int to Python)
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_float(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and type(v).__name__ != "bool_"


def check_config_values(fields: dict[str, str], values: dict[str, Any], where: str = "WorldModelConfig") -> None:
    """Raise ``TypeError``/``ValueError`` naming the first field of ``values`` with a wrong JSON type, a NaN/inf, or a
    value beyond :data:`CONFIG_LIMITS`.

    Args:
        fields: field name -> annotation string (``dataclasses.fields``).
        values: the config values (a ``config.json`` dict before construction, or the fields after it).
        where: prefix of messages.
    """
    for name, annotation in fields.items():
        if name not in values:
            continue
        v, kind = values[name], _type_of(annotation)
        limit = CONFIG_LIMITS.get(name)
        if kind == "int":
            if not _is_int(v):
                raise TypeError(f"{where}.{name}={v!r} is invalid: expected an int, got {type(v).__name__}")
            items: list[Any] = [v]
        elif kind == "float":
            if not _is_float(v):
                raise TypeError(f"{where}.{name}={v!r} is invalid: expected a number, got {type(v).__name__}")
            if not math.isfinite(v):
                raise ValueError(f"{where}.{name}={v!r} is invalid: expected a finite number")
            items = [v]
        elif kind == "bool":
            if not isinstance(v, bool):
                raise TypeError(f"{where}.{name}={v!r} is invalid: expected true or false (a JSON bool), "
                                f"got {type(v).__name__}")
            items = []
        elif kind == "str":
            if not isinstance(v, str):
                raise TypeError(f"{where}.{name}={v!r} is invalid: expected a str, got {type(v).__name__}")
            items = []
        elif kind == "dict":
            if not isinstance(v, dict):
                raise TypeError(f"{where}.{name} is invalid: expected a JSON object, got {type(v).__name__}")
            items = []
        elif kind == "ints":
            if not isinstance(v, (list, tuple)) or not all(_is_int(x) for x in v):
                raise TypeError(f"{where}.{name}={v!r} is invalid: expected a list of ints")
            if len(v) > 64:
                raise ValueError(f"{where}.{name} has {len(v)} entries; expected at most 64")
            items = list(v)
        elif kind == "float_or_floats":
            seq = list(v) if isinstance(v, (list, tuple)) else [v]
            if not all(_is_float(x) for x in seq) or len(seq) > int(CONFIG_LIMITS["latent_channels"]):
                raise TypeError(f"{where}.{name} is invalid: expected a number or a list of numbers (one per "
                                "latent channel)")
            if not all(math.isfinite(x) for x in seq):
                raise ValueError(f"{where}.{name} is invalid: expected finite numbers, got NaN or inf")
            items = []
        else:
            items = []
        if limit is not None and any(x > limit for x in items):
            raise ValueError(f"{where}.{name}={v!r} is invalid: expected at most {limit:g} (neuralsim.limits."
                             "CONFIG_LIMITS; a config asks for bounded work before its weights are checked)")
    spec = values.get("action_spec")
    if isinstance(spec, dict):
        size = spec.get("n") if spec.get("type") == "discrete" else None
        if spec.get("type") == "box" and isinstance(spec.get("shape"), (list, tuple)) and all(_is_int(s) for s in spec["shape"]):
            size = math.prod(spec["shape"])
        if _is_int(size) and size > MAX_ACTION_ELEMENTS:
            raise ValueError(f"{where}.action_spec describes {size} actions/elements; expected at most "
                             f"MAX_ACTION_ELEMENTS={MAX_ACTION_ELEMENTS}")
