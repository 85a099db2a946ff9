"""Collection: record episodes of any pixel Gymnasium env into a dataset (:mod:`neuralsim.data.dataset`).

``collect`` steps one env per worker process (spawned), resizes its frames (:func:`neuralsim.images.resize_frame`)
and hands whole episodes to a :class:`~neuralsim.data.dataset.ShardWriter`. Episode ``i`` always uses env seed
``seed + i`` and a policy generator seeded by ``(seed, i)``, so the data do not depend on the number of workers.

Policies: ``random`` and ``explore`` (sticky random) work on any env; an env may offer its own ``explore`` and
``scripted`` policies through a ``collection_policies()`` method (:data:`~neuralsim.hooks.POLICY_HOOK`; the room
does, from ``neuralsim.envs.room_policies``), so this module never imports an env. Several names joined by commas
(``"explore,scripted,sticky"``) collect a mixture: each episode draws one of them (:class:`MixedPolicy`). The hook and the policies' base,
:class:`~neuralsim.hooks.CollectionPolicy`, live in :mod:`neuralsim.hooks`, below both (re-exported here).
"""

from __future__ import annotations

import inspect
import logging
import math
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import gymnasium as gym
import numpy as np

from neuralsim import actions as A
from neuralsim.checkpoints import ensure_writable_dir
from neuralsim.data.dataset import _LEGACY_MANIFEST, Dataset, ShardWriter
from neuralsim.hooks import POLICY_HOOK, CollectionPolicy  # the env hook and its base class (re-exported)
from neuralsim.images import RESIZE_MODES, parse_image_size, resize_frame

logger = logging.getLogger(__name__)

POLICIES = ("random", "sticky", "explore", "scripted", "turn", "keys", "seek")
#: Policies only an env offers (through POLICY_HOOK): no generic version exists.
ENV_ONLY_POLICIES = ("scripted", "turn", "keys", "seek")
#: ``collect``'s default stored frame size: the size of the shipped model and the ``default`` preset.
DEFAULT_IMAGE_SIZE = (64, 64)


# ---------------------------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------------------------


def _sample_space(space: gym.Space, rng: np.random.Generator) -> Any:
    if isinstance(space, gym.spaces.Discrete):
        return np.int64(space.start + rng.integers(space.n))
    low = np.where(np.isfinite(space.low), space.low, -1.0)
    high = np.where(np.isfinite(space.high), space.high, 1.0)
    return rng.uniform(low, high).astype(space.dtype)


class RandomPolicy(CollectionPolicy):
    """Uniform random actions."""

    def act(self, obs: Any, info: dict[str, Any]) -> Any:
        return _sample_space(self.env.action_space, self.rng)


class StickyRandomPolicy(CollectionPolicy):
    """Random actions held for a while (exploration fallback for any env): repeat with ``p_repeat``."""

    def __init__(self, p_repeat: float = 0.8) -> None:
        self.p_repeat = p_repeat

    def reset(self, env: gym.Env, rng: np.random.Generator) -> None:
        super().reset(env, rng)
        self.action: Any = None

    def act(self, obs: Any, info: dict[str, Any]) -> Any:
        if self.action is None or self.rng.random() >= self.p_repeat:
            self.action = _sample_space(self.env.action_space, self.rng)
        return self.action


class SavedPolicyActor(CollectionPolicy):
    """A policy saved by :func:`neuralsim.policy.save_policy`, sampling its actions with the episode's generator."""

    def __init__(self, path: str | Path, env: gym.Env) -> None:
        from neuralsim.policy import is_saved_policy, load_policy

        if not is_saved_policy(path):
            raise ValueError(f"policy {str(path)!r} is not a saved policy directory (policy.json + model.safetensors, "
                             "written by neuralsim.policy.save_policy)")
        self.policy = load_policy(path)
        self.policy.check_env_spaces(env.observation_space, env.action_space)

    def act(self, obs: Any, info: dict[str, Any]) -> Any:
        return self.policy.act(obs, deterministic=False, rng=self.rng)


class MixedPolicy(CollectionPolicy):
    """Each episode acts with one of ``policies``, drawn uniformly from the episode's generator at reset (so an
    episode's policy, like its actions, depends only on ``(seed, index)``, not on the number of workers).

    A reward model or a localizer trained on one policy's views is biased on the views another brings (a policy that
    heads for the target sees it near far more often than one that explores); a mixture covers both."""

    def __init__(self, policies: list[CollectionPolicy]) -> None:
        if not policies:
            raise ValueError("MixedPolicy needs at least one policy")
        self.policies = list(policies)
        self.current: CollectionPolicy = self.policies[0]

    def reset(self, env: gym.Env, rng: np.random.Generator) -> None:
        super().reset(env, rng)
        self.current = self.policies[int(rng.integers(len(self.policies)))]
        self.current.reset(env, rng)

    def act(self, obs: Any, info: dict[str, Any]) -> Any:
        return self.current.act(obs, info)


def policy_names(policy: str) -> list[str]:
    """The policies a ``collect`` policy string names: one name or path, or several joined by commas."""
    return [part.strip() for part in policy.split(",")] if "," in policy else [policy]


def env_policies(env: gym.Env) -> dict[str, type[CollectionPolicy]]:
    """The collection policies ``env`` offers through :data:`POLICY_HOOK` (``{}`` when it offers none)."""
    offer = getattr(env.unwrapped, POLICY_HOOK, None)
    return dict(offer()) if callable(offer) else {}


def make_policy(policy: str, env: gym.Env) -> CollectionPolicy:
    """The collection policy ``policy`` for ``env``.

    Args:
        policy: ``"random"`` (uniform), ``"sticky"`` (:class:`StickyRandomPolicy`: uniform actions held for a
            while), ``"explore"`` (the env's own explore policy when it offers one through
            :data:`POLICY_HOOK`, else :class:`StickyRandomPolicy`), ``"scripted"`` (only an env that offers one:
            the room's heads for its target), ``"turn"`` (only an env that offers one: the room's turns on the
            spot, one way, the whole episode: views of one place at many headings, ``neuralsim train views``' data),
            ``"keys"`` (only an env that offers one: the room holds its walk-and-turn key sets a while each, walls or
            not, as an agent does), ``"seek"`` (only an env that offers one: the room's heads for its target on those
            key sets, straying now and then, as a trained agent does) or the directory of a saved policy
            (:class:`SavedPolicyActor`);
            several of these joined by commas: a :class:`MixedPolicy` of them.
        env: the env the policy acts in.

    Raises:
        ValueError: an unknown policy, or ``"scripted"`` / ``"turn"`` / ``"keys"`` / ``"seek"`` for an env that offers
            none.
    """
    names = policy_names(policy)
    if len(names) > 1:
        return MixedPolicy([make_policy(name, env) for name in names])
    if policy == "random":
        return RandomPolicy()
    if policy == "sticky":
        return StickyRandomPolicy()
    if policy == "explore":
        return env_policies(env).get("explore", StickyRandomPolicy)()
    if policy in ENV_ONLY_POLICIES:
        offered = env_policies(env).get(policy)
        if offered is None:
            raise ValueError(f"policy {policy!r} needs an env that offers one through {POLICY_HOOK}() (as "
                             f"NeuralSimRoom-v0 does), got {env.spec.id if env.spec else env}")
        return offered()
    if Path(policy).exists():
        return SavedPolicyActor(policy, env)
    raise ValueError(f"policy must be one of {', '.join(POLICIES)} or the path of a saved policy, got {policy!r}")


def frames_with_labels(data: str | os.PathLike, label: str, count: int, first_seed: int,
                       policy: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``count`` frames of the env that collected the dataset ``data``, under its collection policy (or ``policy``, a
    :func:`make_policy` name: the same world seen under other actions), and beside each
    what the env's ``label()`` method returns for the same state (the room's ``object_mask``, ``depth_map``):
    ``(frames [N, H, W, 3] uint8, labels [N, ...])``. Episodes of the dataset's length, seeded ``first_seed``,
    ``first_seed + 1``, ... (the same frames every run): labels that no dataset stores, for fine-tunes that need them.

    Raises:
        ValueError: the env cannot be made here, has no callable ``label``, draws frames of another size than the
            dataset's, or ``count`` is not positive.
    """
    manifest = Dataset(data).manifest
    env_id = manifest["env_id"]
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    try:
        env = gym.make(env_id, **manifest.get("env_kwargs", {}))
    except gym.error.Error as e:
        raise ValueError(f"data's env {env_id!r} cannot be made here: {e}") from None
    try:
        if not callable(getattr(env.unwrapped, label, None)):
            raise ValueError(f"label must name a method of data's env (as NeuralSimRoom-v0's object_mask or "
                             f"depth_map), {env_id!r} has no {label}()")
        actor = make_policy(policy or manifest.get("policy", "explore"), env)
        frames, labels, episode = [], [], 0
        while len(frames) < count:
            episode_seed = first_seed + episode
            obs, info = env.reset(seed=episode_seed)
            actor.reset(env, np.random.default_rng(episode_seed))
            for _ in range(int(manifest.get("max_steps", 200))):
                frames.append(obs)
                labels.append(getattr(env.unwrapped, label)())
                if len(frames) == count:
                    break
                obs, _, terminated, truncated, info = env.step(actor.act(obs, info))
                if terminated or truncated:
                    break
            episode += 1
    finally:
        env.close()
    if tuple(frames[0].shape[:2]) != tuple(manifest["image_size"]):
        raise ValueError(f"data's env draws {frames[0].shape[:2]} frames, the dataset holds {manifest['image_size']}")
    return np.stack(frames), np.stack(labels)


# ---------------------------------------------------------------------------------------------
# Collection
# ---------------------------------------------------------------------------------------------


#: Namespaces of well-known env packages that gymnasium 1.x no longer imports by itself: the module to name.
_KNOWN_NAMESPACES = {"ALE": "ale_py"}


def env_spec(env_id: str, *, name: str = "env_id") -> gym.envs.registration.EnvSpec:
    """The ``EnvSpec`` of a Gymnasium id, accepting ``"module:id"`` exactly as ``gym.make`` does.

    ``"ale_py:ALE/Breakout-v5"`` imports ``ale_py`` (which registers its envs) and looks up
    ``ALE/Breakout-v5``.

    Args:
        env_id: ``"ID"`` or ``"MODULE:ID"``.
        name: the argument's name in error messages (``--env`` on the CLI).

    Raises:
        ValueError: one line: the module cannot be imported, or gymnasium's own error for the id plus a hint.
    """
    module, _, bare = env_id.rpartition(":")
    if module:
        import importlib

        try:
            importlib.import_module(module)
        except ImportError as err:
            extra = ' (Atari: pip install "neuralsim[atari]")' if module == "ale_py" else ""
            raise ValueError(f"{name} {env_id!r}: cannot import module {module!r} ({err}); install the package that "
                             f"provides it{extra}") from None
    try:
        return gym.spec(bare)
    except gym.error.Error as err:
        gym_message = " ".join(str(err).split())
        namespace = bare.split("/")[0] if "/" in bare else None
        if module:
            hint = f"importing {module!r} did not register {bare!r} (gymnasium.pprint_registry() lists what is registered)"
        elif namespace in _KNOWN_NAMESPACES:
            hint = f"its package registers it on import: --env {_KNOWN_NAMESPACES[namespace]}:{bare}"
        else:
            hint = ("if another package provides it, name the module that registers it, as gym.make accepts: "
                    "MODULE:ID, e.g. ale_py:ALE/Breakout-v5")
        raise ValueError(f"{name} {env_id!r} is not a registered Gymnasium id: gymnasium says: {gym_message} "
                         f"Hint: {hint}") from None


def _accepts_kwarg(env_id: str, name: str) -> bool:
    try:
        entry = env_spec(env_id).entry_point
        fn = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
        return name in inspect.signature(fn).parameters
    except Exception:  # unknown or exotic entry points: assume not
        return False


def _is_image_space(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3 and space.shape[-1] == 3


class FrameRecorder:
    """One env + its frame source (rgb observation or ``render()``) + resizing; runs whole episodes.

    Args:
        env_id: Gymnasium id (``"MODULE:ID"`` accepted, as ``gym.make``).
        env_kwargs: ``gym.make`` keyword arguments (``render_mode="rgb_array"`` is added when frames
            come from ``render()``).
        image_size: ``(H, W)`` frames are resized to, or ``None`` for the env's own size.
        resize: how a frame of another aspect becomes ``image_size``: one of :data:`RESIZE_MODES`
            (a dataset's ``manifest["resize"]``, a model's ``provenance["resize"]``).
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], image_size: tuple[int, int] | None,
                 resize: str = "squash") -> None:
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
        self.env_id, self.env_kwargs, self.image_size, self.resize = env_id, dict(env_kwargs), image_size, resize
        from neuralsim.runtime import quiet_headless_sdl

        quiet_headless_sdl()  # classic-control renderers import pygame
        self.env = gym.make(env_id, **self.env_kwargs)
        self.from_obs = _is_image_space(self.env.observation_space)
        if not self.from_obs and self.env.render_mode != "rgb_array":
            if "render_mode" in self.env_kwargs:
                raise ValueError(
                    f"env {env_id!r} has no rgb observations and env_kwargs render_mode={self.env_kwargs['render_mode']!r}; "
                    "frames need render_mode='rgb_array'"
                )
            self.env.close()
            self.env_kwargs["render_mode"] = "rgb_array"
            self.env = gym.make(env_id, **self.env_kwargs)

    def frame(self, obs: Any) -> np.ndarray:
        frame = np.asarray(obs if self.from_obs else self.env.render())
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"env {self.env_id!r} produced frames of shape {frame.shape}; expected (H, W, 3) rgb")
        frame = frame.astype(np.uint8, copy=False)
        return resize_frame(frame, self.image_size, mode=self.resize) if self.image_size else frame

    def episode(self, policy: CollectionPolicy, index: int, seed: int, frames_per_step: int, max_steps: int) -> dict[str, Any]:
        env, K = self.env, frames_per_step
        env_seed = seed + index
        obs, info = env.reset(seed=env_seed)
        policy.reset(env, np.random.default_rng([seed, index]))
        frames = [self.frame(obs)]
        poses = [info["pose"]] if "pose" in info else None
        targets = [info["target_position"]] if "target_position" in info else None  # a task target's place
        description = info.get("description", self.env_id)
        actions, rewards, terminated, truncated = [], [], [], []
        for _ in range(max_steps):
            action = policy.act(obs, info)
            total, term, trunc = 0.0, False, False
            for _k in range(K):
                if term or trunc:  # ended inside the step: repeat the last frame
                    frames.append(frames[-1])
                    if poses is not None:
                        poses.append(poses[-1])
                    if targets is not None:
                        targets.append(targets[-1])
                    continue
                obs, reward, term, trunc, info = env.step(action)
                total += float(reward)
                frames.append(self.frame(obs))
                if poses is not None:
                    poses.append(info["pose"])
                if targets is not None:
                    targets.append(info["target_position"])
            actions.append(action)
            rewards.append(total)
            terminated.append(bool(term))
            truncated.append(bool(trunc))
            if term or trunc:
                break
        else:
            truncated[-1] = not terminated[-1]  # cut at max_steps
        return {
            "frames": np.stack(frames),
            "actions": np.asarray(actions),
            "rewards": np.asarray(rewards, dtype=np.float32),
            "terminated": np.asarray(terminated, dtype=bool),
            "truncated": np.asarray(truncated, dtype=bool),
            "description": str(description),
            "poses": None if poses is None else np.stack(poses).astype(np.float32),
            "target_positions": None if targets is None else np.stack(targets).astype(np.float32),
            "seed": env_seed,
        }


# Worker process state (spawned processes: each builds its own env and OpenGL context).
_WORKER: dict[str, Any] = {}


def _die_with_parent(parent_pid: int | None) -> None:
    """Make a collect worker end when the collect process does, however it ends.

    A SIGKILLed parent cannot shut its pool down: its workers (and the resource tracker) would wait forever on
    the task pipe while holding the parent's stdout/stderr, so a caller reading that output hangs. On Linux the
    kernel sends the worker SIGKILL when its parent dies (``PR_SET_PDEATHSIG``); a parent already gone by now
    ends the worker at once. Elsewhere this is a no-op (the parent's own shutdown path still ends the pool).
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no libc symbol: keep the portable behaviour
            pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def _worker_init(env_id: str, env_kwargs: dict[str, Any], image_size: tuple[int, int] | None, policy: str,
                 task: dict[str, Any]) -> None:
    _die_with_parent(task.get("parent_pid"))
    recorder = FrameRecorder(env_id, env_kwargs, image_size, resize=task.get("resize", "squash"))
    _WORKER.update(recorder=recorder, policy=make_policy(policy, recorder.env), task=task)


def _worker_episode(index: int) -> dict[str, Any]:
    t = _WORKER["task"]
    return _WORKER["recorder"].episode(_WORKER["policy"], index, t["seed"], t["frames_per_step"], t["max_steps"])


def _reraise_broken_pool(results: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    from concurrent.futures.process import BrokenProcessPool

    try:
        yield from results
    except BrokenProcessPool as err:
        raise RuntimeError(
            "collect: a worker process died (see its traceback above). Workers are spawned: the calling script must be "
            "importable and guard its entry point with `if __name__ == '__main__':`, and the env must be registered on "
            "import; or use workers=1."
        ) from err


def _check_positive(value: Any, name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def validate_collect(
    *, env_id: Any, out: Any, episodes: Any, policy: Any, frames_per_step: Any, workers: Any, seed: Any,
    max_steps: Any, image_size: Any, env_kwargs: Any, resume: bool, episodes_per_shard: Any, cli: bool = False,
    resize: Any = "pad",
) -> tuple[int, int] | None:
    """Check :func:`collect`'s arguments before any work (the arguments of the same names).

    Args:
        cli: name the arguments as ``neuralsim collect``'s options (``--max-steps``) in errors.

    Returns:
        The stored frame size ``(H, W)`` (:func:`neuralsim.images.parse_image_size`), None for the env's own.

    Raises:
        ValueError: naming the argument (``--option`` with ``cli``) and what was expected.
    """

    def n(name: str) -> str:
        return "--" + name.replace("_", "-") if cli else name

    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"{n('env') if cli else 'env_id'} must be a Gymnasium id like 'CartPole-v1', got {env_id!r}")
    _check_positive(episodes, n("episodes"))
    _check_positive(frames_per_step, n("frames_per_step"))
    _check_positive(workers, n("workers"))
    _check_positive(max_steps, n("max_steps"), allow_none=True)
    _check_positive(episodes_per_shard, n("episodes_per_shard"))
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"{n('seed')} must be a non-negative integer, got {seed!r}")
    if not isinstance(policy, str) or not all(p in POLICIES or (p and Path(p).exists()) for p in policy_names(policy)):
        raise ValueError(f"{n('policy')} must be one of {', '.join(POLICIES)} or the path of a saved policy, or several "
                         f"of these joined by commas (a mixture: each episode draws one), got {policy!r}")
    if env_kwargs is not None and not isinstance(env_kwargs, dict):
        raise ValueError(f"{n('env_kwargs')} must be a dict (JSON object), got {env_kwargs!r}")
    size = parse_image_size(image_size, n("image_size"))
    if resize not in RESIZE_MODES:
        raise ValueError(f"{n('resize')} must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    out_path = Path(out)
    ensure_writable_dir(out_path, n("out"), create=False)  # made by collect() once every input is valid
    if out_path.is_dir() and any(out_path.iterdir()) and not resume:
        raise ValueError(f"{n('out')} {str(out_path)!r} is not empty; pass {n('resume')} to continue a collection there, or choose an empty directory")
    env_spec(env_id, name=n("env") if cli else "env_id")  # "module:id" imports module, as gym.make does
    return size


def collect(
    env_id: str,
    out: str | Path,
    episodes: int,
    policy: str = "explore",
    frames_per_step: int = 1,
    workers: int = 1,
    seed: int = 0,
    max_steps: int | None = None,
    image_size: int | tuple[int, int] | None = DEFAULT_IMAGE_SIZE,
    env_kwargs: dict[str, Any] | None = None,
    resume: bool = False,
    episodes_per_shard: int = 16,
    progress: bool = True,
    resize: str = "pad",
) -> dict[str, Any]:
    """Record ``episodes`` episodes of ``env_id`` into the dataset directory ``out``.

    Args:
        env_id: any Gymnasium id with rgb observations or ``render_mode="rgb_array"``; ``"module:id"``
            (e.g. ``"ale_py:ALE/Breakout-v5"``) imports ``module`` first, exactly as ``gym.make`` does.
        out: dataset directory (empty, or an interrupted collection with ``resume=True``).
        episodes: total number of episodes the dataset should hold.
        policy: ``"random"``, ``"sticky"``, ``"explore"`` (room: coverage-oriented modes; other envs: sticky random
            actions), ``"scripted"`` (room: heads for the target) or the directory of a policy saved by
            :func:`neuralsim.policy.save_policy` (actions sampled from it, seeded per episode); several joined by
            commas (``"explore,scripted,sticky"``): each episode draws one of them (:class:`MixedPolicy`).
        frames_per_step: ``K``: the env is stepped ``K`` times per recorded action (action held).
        workers: processes collecting in parallel (episode ``i`` always uses env seed ``seed + i``).
        seed: base seed.
        max_steps: recorded steps per episode at most (default: the env's own limit).
        image_size: stored ``(H, W)`` (or an int), default 64×64 (the default model preset's size);
            ``None`` keeps the env's own frame size. Envs with an ``image_size`` argument render at it,
            others are area-resized as ``resize`` says.
        env_kwargs: keyword arguments of ``gym.make``.
        resume: continue an interrupted collection in ``out``.
        episodes_per_shard: episodes per shard file.
        progress: show a tqdm bar with steps/s.
        resize: frames of another aspect ratio than ``image_size``: ``"pad"`` (default: black borders,
            nothing cut, nothing stretched), ``"crop"`` (centre crop) or ``"squash"`` (stretch).
            Recorded as ``manifest["resize"]`` and used again wherever real frames meet the model
            (``neuralsim play``'s real panel, ``WorldModelEnv.reset(options={"image": ..., "resize": True})``).

    Returns:
        Summary: ``out``, ``episodes`` (in the dataset), ``collected`` (this run), ``steps``,
        ``seconds``, ``steps_per_s``, ``env_steps_per_s``, ``shards``.
    """
    size = validate_collect(
        env_id=env_id, out=out, episodes=episodes, policy=policy, frames_per_step=frames_per_step, workers=workers,
        seed=seed, max_steps=max_steps, image_size=image_size, env_kwargs=env_kwargs, resume=resume,
        episodes_per_shard=episodes_per_shard, resize=resize,
    )
    out = Path(out)
    kwargs = dict(env_kwargs or {})
    resize_to = size
    if size is not None and "image_size" not in kwargs and _accepts_kwarg(env_id, "image_size"):
        kwargs["image_size"] = list(size)  # the env renders at the requested size itself
        resize_to = None
    recorder = FrameRecorder(env_id, kwargs, resize_to, resize=resize)
    kwargs = recorder.env_kwargs  # may have gained render_mode="rgb_array"
    env = recorder.env
    pol = make_policy(policy, env)  # checks the policy fits the env
    first, _ = env.reset(seed=int(seed))
    native_shape = np.asarray(first if recorder.from_obs else env.render()).shape
    frame_shape = recorder.frame(first).shape
    if max_steps is None:
        max_steps = (env.spec.max_episode_steps if env.spec else None) or getattr(env.unwrapped, "max_episode_steps", None)
        if not max_steps:
            raise ValueError(f"max_steps is required: env {env_id!r} has no episode step limit")
        max_steps = int(math.ceil(max_steps / frames_per_step))
    fields = {
        "env_id": env_id,
        "env_kwargs": kwargs,
        "image_size": [int(frame_shape[0]), int(frame_shape[1])],
        "native_image_size": [int(native_shape[0]), int(native_shape[1])],  # the env's own frames
        "resize": resize,  # how frames of another aspect became image_size (absent in old datasets: squash)
        "action_spec": A.space_to_spec(env.action_space),
        "frames_per_step": int(frames_per_step),
        "policy": policy,
        "seed": int(seed),
        "max_steps": int(max_steps),
        "episodes_per_shard": int(episodes_per_shard),
    }
    # Camera worlds describe their camera motion per step (the world model's Plücker conditioning uses it).
    camera = getattr(env.unwrapped, "camera_spec", None)
    if camera is not None:
        fields["camera"] = {k: float(v) for k, v in dict(camera).items()}
    task = getattr(env.unwrapped, "task_spec", None)  # a task stated in numbers (the room's reward), for reward models
    if task is not None:
        fields["task"] = dict(task)
    writer = ShardWriter(out, fields, episodes_per_shard=episodes_per_shard, resume=resume)
    start = writer.num_episodes
    todo = list(range(start, episodes))
    if start:
        logger.info("resuming %s at episode %d of %d", out, start, episodes)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), unit="ep", desc=f"collect {env_id}", disable=not progress, dynamic_ncols=True)
    t0, steps, env_steps = time.perf_counter(), 0, 0
    pool: ProcessPoolExecutor | None = None
    try:
        if workers > 1 and len(todo) > 1:
            recorder.env.close()
            ctx = mp.get_context("spawn")  # never fork a process holding an OpenGL context
            task = {"seed": int(seed), "frames_per_step": int(frames_per_step), "max_steps": int(max_steps), "resize": resize,
                    "parent_pid": os.getpid()}  # workers die with this process (_die_with_parent)
            pool = ProcessPoolExecutor(
                min(workers, len(todo)), mp_context=ctx, initializer=_worker_init, initargs=(env_id, kwargs, resize_to, policy, task)
            )
            results: Iterator[dict[str, Any]] = pool.map(_worker_episode, todo)  # in episode order
        else:
            results = (recorder.episode(pol, i, int(seed), int(frames_per_step), int(max_steps)) for i in todo)
        for ep in _reraise_broken_pool(results):
            writer.add_episode(ep["frames"], ep["actions"], ep["rewards"], ep["terminated"], ep["truncated"],
                               ep["description"], poses=ep["poses"], seed=ep["seed"],
                               target_positions=ep["target_positions"])
            steps += len(ep["rewards"])
            env_steps += len(ep["frames"]) - 1
            bar.update(1)
            bar.set_postfix(steps_per_s=f"{steps / max(time.perf_counter() - t0, 1e-9):.0f}")
        writer.close()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        recorder.env.close()
    seconds = time.perf_counter() - t0
    return {
        "out": str(out),
        "episodes": writer.num_episodes,
        "collected": len(todo),
        "resumed_from": start,
        "steps": steps,
        "env_steps": env_steps,
        "seconds": round(seconds, 3),
        "steps_per_s": round(steps / max(seconds, 1e-9), 1),
        "env_steps_per_s": round(env_steps / max(seconds, 1e-9), 1),
        "shards": len(writer.manifest["shards"]),
        "image_size": list(writer.manifest["image_size"]),
        "native_image_size": writer.manifest.get("native_image_size"),
        "resize": writer.manifest.get("resize", _LEGACY_MANIFEST["resize"]),
    }
