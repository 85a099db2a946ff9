"""``neuralsim info``: versions, device, bf16 support and the available models, or the facts of a preset."""

from __future__ import annotations

import argparse
import json
import platform

from neuralsim import __version__
from neuralsim.cli.errors import CLIError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="describe a model preset (e.g. default, paper-2.6b) instead")
    p.add_argument("--json", action="store_true", help="print JSON")


def cpu_capability() -> str:
    """Alias of :func:`neuralsim.device.cpu_capability` (imported lazily: torch is heavy)."""
    from neuralsim.device import cpu_capability as capability

    return capability()


def native_bf16() -> bool:
    """True when bf16 matmuls run natively on the default device: :func:`neuralsim.device.bf16_is_native`."""
    from neuralsim.device import bf16_is_native

    return bf16_is_native()


def run(args: argparse.Namespace) -> int:
    import importlib.metadata as md

    import torch

    if args.preset:
        from neuralsim.config import WorldModelConfig
        from neuralsim.model import describe

        try:
            config = WorldModelConfig.from_preset(args.preset)
        except ValueError as exc:
            raise CLIError(f"--preset {args.preset!r}: {exc}") from None
        facts = describe(config)
        print(json.dumps(facts, indent=2) if args.json else format_facts(facts))
        return 0

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    from neuralsim.checkpoints import available_models

    facts = {
        "neuralsim": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": version("numpy"),
        "gymnasium": version("gymnasium"),
        "stable-baselines3": version("stable-baselines3"),
        "safetensors": version("safetensors"),
        "mujoco (extra [mujoco])": version("mujoco"),
        "diffusers (extra [sana])": version("diffusers"),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "cpu_capability": cpu_capability(),
        "bf16_native": native_bf16(),
        "models": available_models(),
    }
    print(json.dumps(facts, indent=2) if args.json else format_facts(facts))
    return 0


def format_facts(facts: dict, indent: int = 0) -> str:
    lines = []
    for key, value in facts.items():
        if isinstance(value, dict):
            lines.append(" " * indent + f"{key}:")
            lines.append(format_facts(value, indent + 2))
        else:
            lines.append(" " * indent + f"{key:<26}{'' if value is None else value}")
    return "\n".join(lines)
