"""What an env offers the core through a documented method, not an import: the collection-policy hook.

The core never imports an env (``envs/`` sits above it); it finds an env by its Gymnasium id and asks
``env.unwrapped`` for what only the env knows. Both sides import this module, which imports nothing of neuralsim:
``neuralsim.data.collection`` (``collect``, ``make_policy``) calls the hook, and an env's own policies
(``neuralsim.envs.room_policies``) subclass :class:`CollectionPolicy`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gymnasium as gym
    import numpy as np

#: The method an env (``env.unwrapped``) may define to offer its own collection policies: called without
#: arguments, it returns ``{"explore": cls, "scripted": cls}`` (either key may be absent), each ``cls`` a
#: :class:`CollectionPolicy` subclass built without arguments. ``NeuralSimRoomEnv.collection_policies`` is one.
POLICY_HOOK = "collection_policies"


class CollectionPolicy:
    """A data-collection policy: ``reset`` at every episode with its own generator, then ``act``.

    The base of the generic policies of :mod:`neuralsim.data.collection` and of those an env offers through
    ``collection_policies()`` (:data:`POLICY_HOOK`): a subclass is built without arguments, and draws its randomness
    from ``self.rng`` only, so episode ``i`` of a collection is the same whatever the number of workers.
    """

    def reset(self, env: gym.Env, rng: np.random.Generator) -> None:
        self.env, self.rng = env, rng

    def act(self, obs: Any, info: dict[str, Any]) -> Any:
        raise NotImplementedError
