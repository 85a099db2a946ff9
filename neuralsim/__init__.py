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


def _register() -> None:
    try:
        from neuralsim.envs.registration import register_envs
    except ImportError:  # envs not importable (e.g. partial source tree): registration is optional
        return
    register_envs()


_register()
