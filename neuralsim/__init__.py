"""neuralsim: a Gymnasium-compatible neural simulator.

A latent world model (SANA-WM's architecture, scaled to a laptop CPU) learns the dynamics of a
world from video and actions; ``gym.make("SanaWM-v0")`` lets an RL agent live and train inside it.
Importing the package registers the environments and has no other side effects.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "WorldModel", "WorldModelConfig"]


def __getattr__(name: str):
    # Lazy: `import neuralsim` (and env registration) must not import torch-heavy modules.
    if name == "WorldModel":
        from neuralsim.model import WorldModel

        return WorldModel
    if name == "WorldModelConfig":
        from neuralsim.config import WorldModelConfig

        return WorldModelConfig
    raise AttributeError(f"module 'neuralsim' has no attribute {name!r}")


def _map_source_checkout() -> None:
    # Installed, envs/ and agents/ are neuralsim.envs / neuralsim.agents (setuptools package-dir). Imported
    # straight from a source checkout (python run from the repository root), they sit beside this package:
    # search the repository root for those two subpackages too.
    from pathlib import Path

    here = Path(__file__).resolve().parent
    root = here.parent
    if not (here / "envs").is_dir() and (root / "envs" / "registration.py").is_file():
        __path__.append(str(root))  # type: ignore[name-defined]


def _register() -> None:
    from neuralsim.envs.registration import register_envs

    register_envs()


_map_source_checkout()
_register()
