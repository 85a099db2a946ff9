"""Gymnasium environments of neuralsim (installed as ``neuralsim.envs``).

``WorldModelEnv`` / ``WorldModelVectorEnv``: the dream (``SanaWM-v0``);
``NeuralSimRoom``: the real MuJoCo room (``NeuralSimRoom-v0``, needs the ``[mujoco]`` extra);
``LatentObservation`` / ``VectorLatentObservation``: a pixel env observed through a world model's encoder.
"""

from __future__ import annotations

__all__ = ["WorldModelEnv", "WorldModelVectorEnv", "NeuralSimRoomEnv", "LatentObservation", "VectorLatentObservation",
           "register_checkpoint"]


def __getattr__(name: str):
    if name == "WorldModelEnv":
        from neuralsim.envs.world_model_env import WorldModelEnv

        return WorldModelEnv
    if name == "WorldModelVectorEnv":
        from neuralsim.envs.vector import WorldModelVectorEnv

        return WorldModelVectorEnv
    if name == "NeuralSimRoomEnv":
        from neuralsim.envs.room import NeuralSimRoomEnv

        return NeuralSimRoomEnv
    if name in ("LatentObservation", "VectorLatentObservation"):
        from neuralsim.envs import latent

        return getattr(latent, name)
    if name == "register_checkpoint":
        from neuralsim.envs.registration import register_checkpoint

        return register_checkpoint
    raise AttributeError(f"module 'neuralsim.envs' has no attribute {name!r}")
