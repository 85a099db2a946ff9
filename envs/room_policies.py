"""The room's data-collection policies (``neuralsim collect --policy explore|scripted|turn|keys|seek`` on
``NeuralSimRoom-v0``).

They read the room's ground truth (:meth:`NeuralSimRoomEnv.privileged_state`), so they live beside the room; the
room offers them through :meth:`NeuralSimRoomEnv.collection_policies`, which :func:`neuralsim.data.make_policy`
asks for (the library never imports this module itself).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from neuralsim import actions as A
from neuralsim.hooks import CollectionPolicy


def _wrap(angle: float) -> float:
    return math.remainder(angle, 2 * math.pi)


class _RoomPolicy(CollectionPolicy):
    """Base of the room policies: canonical camera vectors -> the env's action type; uses privileged state."""

    def reset(self, env: gym.Env, rng: np.random.Generator) -> None:
        super().reset(env, rng)
        self.room = env.unwrapped
        self.rot = math.radians(self.room.rotation_speed_deg)
        self.keysets = A.keysets_to_vectors()

    def to_action(self, v: np.ndarray) -> Any:
        v = np.clip(np.asarray(v, dtype=np.float32), -1.0, 1.0)
        if isinstance(self.env.action_space, gym.spaces.Discrete):
            return np.int64(np.argmin(((self.keysets - v) ** 2).sum(axis=1)))
        return v

    def steer(self, state: dict[str, Any], xy: np.ndarray) -> tuple[float, float]:
        """``(yaw_right, forward)`` that turn toward ``xy`` and walk when roughly facing it."""
        delta = xy - state["agent_xy"]
        err = _wrap(math.atan2(delta[1], delta[0]) - state["agent_yaw"])  # > 0: target on the left
        yaw_right = float(np.clip(-err / self.rot, -1.0, 1.0))
        forward = 1.0 if abs(err) < 0.35 else (0.3 if abs(err) < 0.9 else 0.0)
        return yaw_right, forward

    def level_pitch(self, state: dict[str, Any]) -> float:
        return float(np.clip(-state["pitch"] / self.rot, -1.0, 1.0))


class RoomScriptedPolicy(_RoomPolicy):
    """Heads for the target: turn toward it, walk when facing it, keep the camera level."""

    def act(self, obs: Any, info: dict[str, Any]) -> Any:
        s = self.room.privileged_state()
        yaw_right, forward = self.steer(s, s["objects"][s["target"]])
        return self.to_action([forward, 0.0, yaw_right, self.level_pitch(s)])


class RoomTurnPolicy(_RoomPolicy):
    """Turns on the spot at full speed, one way (drawn per episode) for the whole episode, the camera level: the
    views of one place at every heading (``neuralsim train views`` pairs them by their poses)."""

    def reset(self, env: gym.Env, rng: np.random.Generator) -> None:
        super().reset(env, rng)
        self.direction = 1.0 if rng.random() < 0.5 else -1.0

    def act(self, obs: Any, info: dict[str, Any]) -> Any:
        return self.to_action([0.0, 0.0, self.direction, self.level_pitch(self.room.privileged_state())])


class RoomKeysPolicy(_RoomPolicy):
    """Holds one of the walk-and-turn key sets (``w``, ``j``, ``l``, ``wj``, ``wl``: the keys the transfer benchmark's
    agents press) for a while, walls or not: a new one, drawn uniformly, with probability ``1 / mean_hold`` each step.
    What a PPO agent's first policies do in the room, and what the explore policy never shows (its walks turn away
    at a wall): walking into a wall and standing against it, circling, turning on the spot."""

    def __init__(self, mean_hold: float = 48.0) -> None:
        if not mean_hold >= 1:
            raise ValueError(f"mean_hold must be a number of steps >= 1, got {mean_hold!r}")
        self.mean_hold = mean_hold

    def reset(self, env: gym.Env, rng: np.random.Generator) -> None:
        super().reset(env, rng)
        self.held: np.ndarray | None = None

    def act(self, obs: Any, info: dict[str, Any]) -> Any:
        if self.held is None or self.rng.random() < 1.0 / self.mean_hold:
            keys = A.WALK_AND_TURN[int(self.rng.integers(len(A.WALK_AND_TURN)))]
            self.held = A.keys_to_vector(keys)
        return self.to_action(self.held)


class RoomSeekPolicy(_RoomPolicy):
    """Heads for the target pressing only the walk-and-turn key sets (``w``, ``j``, ``l``, ``wj``, ``wl``), as the
    transfer benchmark's trained agents do, and strays now and then: with probability ``1 / mean_seek`` a step it
    holds a random key set for 4 to 24 steps, then seeks again. Its episodes end at the target far more often than
    the other policies' (a success, the room's termination): the approaches and endings a termination detector must
    learn to see under the agents' keys, which ``scripted`` (continuous steering) and ``keys`` (no aim) rarely show.

    Steering: turn on the spot (``j`` / ``l``) while the target's bearing is off by more than ``turn_deg``, walk and
    turn (``wj`` / ``wl``) while it is off by more than ``aim_deg``, walk straight (``w``) otherwise."""

    def __init__(self, mean_seek: float = 40.0, turn_deg: float = 35.0, aim_deg: float = 8.0) -> None:
        if not mean_seek >= 1:
            raise ValueError(f"mean_seek must be a number of steps >= 1, got {mean_seek!r}")
        if not 0 <= aim_deg <= turn_deg <= 180:
            raise ValueError(f"aim_deg and turn_deg must satisfy 0 <= aim_deg <= turn_deg <= 180, got {aim_deg!r}, "
                             f"{turn_deg!r}")
        self.mean_seek, self.turn, self.aim = mean_seek, math.radians(turn_deg), math.radians(aim_deg)

    def reset(self, env: gym.Env, rng: np.random.Generator) -> None:
        super().reset(env, rng)
        self.stray_left, self.held = 0, np.zeros(4, np.float32)

    def act(self, obs: Any, info: dict[str, Any]) -> Any:
        if self.stray_left == 0 and self.rng.random() < 1.0 / self.mean_seek:
            self.stray_left = int(self.rng.integers(4, 25))
            self.held = A.keys_to_vector(A.WALK_AND_TURN[int(self.rng.integers(len(A.WALK_AND_TURN)))])
        if self.stray_left > 0:
            self.stray_left -= 1
            return self.to_action(self.held)
        s = self.room.privileged_state()
        delta = s["objects"][s["target"]] - s["agent_xy"]
        err = _wrap(math.atan2(delta[1], delta[0]) - s["agent_yaw"])  # > 0: the target is on the left
        side = "j" if err > 0 else "l"
        keys = side if abs(err) > self.turn else ("w" + side if abs(err) > self.aim else "w")
        return self.to_action(A.keys_to_vector(keys))


class RoomExplorePolicy(_RoomPolicy):
    """Coverage-oriented exploration of the room: persistent random modes.

    Modes (drawn with the weights below, each held for a random duration): cruise (walk with a slow
    drift), turn on the spot, approach an object and push it (so contacts happen), strafe, look
    up/down and back, revisit (replay the last actions reversed and negated, returning near an
    earlier pose), idle (exactly zero actions: a person who lets go of the keys, so a world model
    learns that a still camera sees a still room), slow (small held speeds, as a careful player),
    sticky (sticky-random actions over all four axes, the motion of a random agent). Walls ahead
    interrupt walking modes with a turn.
    """

    MODES = ("cruise", "turn", "approach", "strafe", "look", "revisit", "idle", "slow", "sticky")
    WEIGHTS = (0.22, 0.13, 0.2, 0.08, 0.05, 0.08, 0.10, 0.07, 0.07)

    def reset(self, env: gym.Env, rng: np.random.Generator) -> None:
        super().reset(env, rng)
        self.mode, self.left, self.history, self.plan = "", 0, [], []
        self.params: dict[str, Any] = {}

    def _start(self, mode: str, state: dict[str, Any]) -> None:
        rng = self.rng
        self.mode, self.params, self.plan = mode, {}, []
        if mode == "cruise":
            self.left = int(rng.integers(10, 40))
            self.params = {"forward": rng.uniform(0.5, 1.0), "drift": rng.uniform(-0.3, 0.3)}
        elif mode == "turn":
            self.left = int(rng.integers(4, 20))
            self.params = {"yaw": rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.0), "forward": rng.choice([0.0, rng.uniform(0.0, 0.4)])}
        elif mode == "approach":
            self.left = 80
            self.params = {"object": int(rng.integers(len(state["objects"]))), "push": int(rng.integers(3, 15))}
        elif mode == "strafe":
            self.left = int(rng.integers(5, 20))
            self.params = {"strafe": rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0), "forward": rng.uniform(-0.3, 0.5)}
        elif mode == "look":
            n = int(rng.integers(3, 9))
            sign = rng.choice([-1.0, 1.0])
            self.plan = [np.array([0, 0, 0, sign], np.float32)] * n + [np.array([0, 0, 0, -sign], np.float32)] * n
            self.left = len(self.plan)
        elif mode == "revisit":
            n = min(len(self.history), int(rng.integers(10, 40)))
            self.plan = [-v for v in reversed(self.history[-n:])] if n else []
            self.left = len(self.plan)
        elif mode == "slow":
            self.left = int(rng.integers(5, 25))
            self.params = {"v": rng.uniform(-0.3, 0.3, size=3) * (rng.random(3) < 0.6)}
        elif mode == "sticky":
            self.left = int(rng.integers(10, 40))
            self.params = {"v": rng.uniform(-1.0, 1.0, size=4)}
        else:  # idle
            self.left = int(rng.integers(4, 17))

    def _wall_ahead(self, state: dict[str, Any], forward: float, strafe: float) -> bool:
        yaw = state["agent_yaw"]
        c, s = math.cos(yaw), math.sin(yaw)
        direction = np.array([forward * c + strafe * s, forward * s - strafe * c])
        norm = float(np.linalg.norm(direction))
        if norm < 1e-6:
            return False
        probe = state["agent_xy"] + direction / norm * 0.6
        return bool(np.any(np.abs(probe) > state["room_half"] - 0.2))

    def act(self, obs: Any, info: dict[str, Any]) -> Any:
        s = self.room.privileged_state()
        if self.left <= 0:
            self._start(self.MODES[int(self.rng.choice(len(self.MODES), p=self.WEIGHTS))], s)
        self.left -= 1
        p = self.params
        pitch = self.level_pitch(s) * 0.5
        if self.mode == "cruise":
            v = np.array([p["forward"], 0.0, p["drift"], pitch])
        elif self.mode == "turn":
            v = np.array([p["forward"], 0.0, p["yaw"], pitch])
        elif self.mode == "approach":
            target = s["objects"][p["object"]]
            yaw_right, forward = self.steer(s, target)
            if np.linalg.norm(target - s["agent_xy"]) < s["object_radii"][p["object"]] + 0.3:
                p["push"] -= 1  # in contact: keep pushing for a few steps
                if p["push"] <= 0:
                    self.left = 0
            v = np.array([forward, 0.0, yaw_right, pitch])
        elif self.mode == "strafe":
            v = np.array([p["forward"], p["strafe"], 0.0, pitch])
        elif self.mode in ("look", "revisit"):
            v = self.plan[len(self.plan) - self.left - 1] if self.plan else np.zeros(4)
        elif self.mode == "slow":
            v = np.array([*p["v"], pitch])
        elif self.mode == "sticky":
            if self.rng.random() > 0.9:  # persistence 0.9, as a sticky-random agent
                p["v"] = self.rng.uniform(-1.0, 1.0, size=4)
            v = p["v"].copy()
        else:
            v = np.zeros(4)
        if self.mode in ("cruise", "strafe", "turn", "slow") and self._wall_ahead(s, float(v[0]), float(v[1])):
            self._start("turn", s)
            v = np.array([0.0, 0.0, self.params["yaw"], pitch])
        v = np.asarray(v, dtype=np.float64)
        if self.mode not in ("look", "revisit", "idle", "sticky"):
            v[:3] += self.rng.normal(0.0, 0.1, size=3)
        v = np.clip(v, -1.0, 1.0).astype(np.float32)
        self.history.append(v)
        del self.history[:-64]
        return self.to_action(v)
