"""Policy transfer: PPO trained only in the dream vs directly in the real world, both evaluated in the real world.

This is the benchmark behind ``neuralsim eval transfer`` and ``examples/train_ppo_in_dream.py``:

1. Train SB3 PPO (``CnnPolicy`` with :class:`~neuralsim.policy.ImpalaCNN` on the 64×64 rgb frames; with ``obs="latent"`` an ``MlpPolicy`` with
   :class:`~neuralsim.policy.LatentCNN` on the model's latent frames, the real env's frames encoded by the
   checkpoint's encoder through :class:`~neuralsim.envs.latent.LatentObservation`, so no dream frame is
   decoded for the agent) for ``timesteps`` env steps inside the dream
   (``SanaWM-v0``'s batched ``WorldModelVectorEnv``: the world model's reward and termination heads
   are the only task signal), and with the same budget directly in the real env the model learned
   (``NeuralSimRoom-v0``, read from the checkpoint's provenance), for each of ``seeds`` seeds.
   Policies are saved along the way with :func:`neuralsim.policy.save_policy`. The task is the real env's
   ``TRANSFER_TASK`` (the room's: the ball at rest at reset) unless ``real_task`` names one, and the dream's training
   episodes start from first frames of that task (``dream_starts`` layouts), so both worlds' episodes start alike.
2. Evaluate the final policies, a random policy and two scripted ones in the real env over
   ``episodes`` held-out layouts per seed: mean ± std return, success rate.
3. Transfer score ``(dream - random) / (real - random)`` of mean real-world returns.
4. Dream-vs-real agreement: every policy (checkpoints along both trainings, random, scripted) is also
   evaluated *in the dream*, started from the same real first frames and descriptions; the
   Spearman rank correlation of their dream and real returns says whether the dream ranks policies
   as the real world does. For the policy where they disagree most, a GIF shows the same start in
   both worlds side by side.

Everything is written under ``workdir`` (policies, GIFs, each training's run record ``run.json``) and the figures
to ``out`` (JSON), the last printed line being that JSON object. ``resume=True`` (``--resume``) continues an
interrupted run: a world and seed whose training finished in ``workdir`` with the same settings is not trained again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from neuralsim import actions as A

#: Evaluation layouts are drawn from seeds at and above this one (collection and training use small seeds).
EVAL_SEED = 500_000
#: The dream's training starts are the real task's first frames at seeds from this one on (apart from evaluation's).
DREAM_START_SEED = 300_000
#: PPO hyper-parameters for 64×64 rgb and ~10^5 steps (SB3 Atari-style defaults, shorter rollouts).
PPO_KWARGS: dict[str, Any] = dict(n_steps=128, batch_size=256, n_epochs=4, learning_rate=2.5e-4, ent_coef=0.01,
                                  gamma=0.99, gae_lambda=0.95, clip_range=0.2, vf_coef=0.5, max_grad_norm=0.5)
QUICK_PPO_KWARGS: dict[str, Any] = {**PPO_KWARGS, "n_steps": 32, "batch_size": 64, "n_epochs": 1}

ActFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


REWARD_STEPS = 16  # steps of every agreement episode over which the dream's reward is compared with the real one
#: The transfer benchmark's default action set: none of pitch or strafe, which the room's task does not need.
WALK_AND_TURN = A.WALK_AND_TURN


#: the seeds of the latent extractor's teaching (real-env layouts apart from the evaluation's and the trainings')
PRETRAIN_SEED = 700_000
#: TransferConfig.latent_extractor's choices
LATENT_EXTRACTOR_CHOICES = ("auto", "pretrained", "cells", "cnn")


@dataclass
class TransferConfig:
    """Budgets of the transfer benchmark (``--quick``: :meth:`quick`)."""

    model: str = "default"
    timesteps: int = 100_000
    seeds: int = 3
    episodes: int = 20
    num_envs: int = 16
    checkpoints: int = 3
    max_episode_steps: int = 200
    eval_seed: int = EVAL_SEED
    workdir: str = "runs/transfer"
    out: str = "benchmarks/results/transfer.json"  # quick runs: transfer-quick.json (a smoke run, not a score)
    ppo: dict[str, Any] = field(default_factory=lambda: dict(PPO_KWARGS))
    # Discrete key-set actions in both worlds (agents.wrappers); None: the continuous Box(4). Walk and turn by default:
    # with pitch in the action set PPO learned to look at the floor or ceiling, in both worlds.
    keys: tuple[str, ...] | None = WALK_AND_TURN
    obs: str = "rgb"  # "latent": the agent observes latent frames (dream: obs_type="latent"; real: LatentObservation)
    # The rgb policy's features extractor: "impala" (neuralsim.policy.ImpalaCNN, sees the room's few-pixel ball) or
    # "nature" (SB3's NatureCNN, which did not learn the room's task: benchmarks/ppo_observation.py).
    rgb_extractor: str = "impala"
    # The latent policy's features extractor (obs="latent"): "pretrained" (neuralsim.policy.LatentCellCNN taught where
    # the target is before PPO by the model's target tracker, agents.pretrain, the same in both worlds: PPO alone does
    # not learn the room's task from latents with either extractor), "cells" (LatentCellCNN, PPO alone),
    # "cnn" (LatentCNN, PPO alone) or "auto": "pretrained" where the model has a target tracker, else "cnn".
    latent_extractor: str = "auto"
    # What the "pretrained" extractor is taught on, labelled by the model's target tracker: "real" (frames of the real
    # env, walk-and-turn keys, no reward read: taught so, PPO learned the room's task from latents) or "dream" (the
    # model's own dreams, no real env: in one run of two); how many frames, and the epochs.
    pretrain_on: str = "real"
    pretrain_frames: int = 20_000
    pretrain_epochs: int = 8
    # Where the dream's latent observations come from (obs="latent"; envs.world_model_env.LATENT_SOURCES): "dynamics",
    # the latent frames the dynamics commit (nothing decoded; its dream-trained agents did not transfer,
    # transfer_latent_taught.json), or "frames", the dream's decoded frames with the frame memory's correction encoded
    # again, as the real env's frames are (a decode and an encode per dream step; they transfer,
    # transfer_latent_frames.json).
    latent_source: str = "dynamics"
    compile: bool = False  # the dream envs with compile=True (WorldModel.compile_streaming; timed in the dream's wall_s)
    # Continue an interrupted run in the same workdir: a world and seed whose training finished there (its final policy
    # and run record, RUN_RECORD, written with the same budget and PPO settings) is not trained again.
    resume: bool = False
    # Task options of the real env (names from its class's TASK_OPTIONS, e.g. {"start_view_deg": None}) for its training
    # and evaluation; {}: the env's default task; None: the env's TRANSFER_TASK (the room's: the ball at rest, see
    # transfer_task). The dream's task is the one its reward prediction learned, from the real task's first frames.
    real_task: dict[str, Any] | None = None
    # The dream's training episodes start from the first frames of this many real layouts of the task (seeds from
    # DREAM_START_SEED on), so they start as the real ones do; 0: from the checkpoint's start set.
    dream_starts: int = 256
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides: Any) -> "TransferConfig":
        base = dict(timesteps=512, seeds=1, episodes=3, num_envs=4, checkpoints=2, max_episode_steps=40,
                    pretrain_frames=256, pretrain_epochs=1,
                    out="benchmarks/results/transfer-quick.json", ppo=dict(QUICK_PPO_KWARGS), quick=True)
        return cls(**{**base, **overrides})

    def validate(self, cli: bool = False) -> None:
        """Raise ``ValueError`` naming the field (``--option`` when ``cli``) for a bad budget."""
        opt = lambda name: f"--{name.replace('_', '-')}" if cli else name  # noqa: E731
        for name in ("timesteps", "seeds", "episodes", "num_envs", "checkpoints", "max_episode_steps", "pretrain_frames",
                     "pretrain_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{opt(name)} must be a positive integer, got {value!r}")
        if self.keys is not None and (not self.keys or any(not isinstance(k, str) or set(k) - set("wsadijkl")
                                                           for k in self.keys)):
            raise ValueError(f"{opt('keys')} must be comma-separated key sets over 'wsadijkl' (e.g. w,j,l,wj,wl), "
                             f"got {list(self.keys)!r}")
        if isinstance(self.dream_starts, bool) or not isinstance(self.dream_starts, int) or self.dream_starts < 0:
            raise ValueError(f"{opt('dream_starts')} must be a non-negative integer, got {self.dream_starts!r}")
        for name in ("compile", "resume"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{opt(name)} must be a bool, got {getattr(self, name)!r}")
        if self.real_task is not None and (not isinstance(self.real_task, dict)
                                           or not all(isinstance(k, str) for k in self.real_task)):
            raise ValueError(f"{opt('real_task')} must be None or a dict of the real env's task options (e.g. "
                             f"{{'start_view_deg': None}}), got {self.real_task!r}")
        if self.obs not in ("rgb", "latent"):
            raise ValueError(f"{opt('obs')} must be 'rgb' or 'latent', got {self.obs!r}")
        if self.rgb_extractor not in ("impala", "nature"):
            raise ValueError(f"{opt('rgb_extractor')} must be 'impala' or 'nature', got {self.rgb_extractor!r}")
        from neuralsim.envs.world_model_env import LATENT_SOURCES

        if self.latent_source not in LATENT_SOURCES:
            raise ValueError(f"{opt('latent_source')} must be one of {', '.join(LATENT_SOURCES)}, got "
                             f"{self.latent_source!r}")
        if self.pretrain_on not in ("real", "dream"):
            raise ValueError(f"{opt('pretrain_on')} must be 'real' or 'dream', got {self.pretrain_on!r}")
        if self.latent_extractor not in LATENT_EXTRACTOR_CHOICES:
            raise ValueError(f"{opt('latent_extractor')} must be one of {', '.join(LATENT_EXTRACTOR_CHOICES)}, got "
                             f"{self.latent_extractor!r}")
        rollout = self.num_envs * int(self.ppo["n_steps"])
        if self.timesteps < rollout:
            raise ValueError(f"{opt('timesteps')} must be at least {opt('num_envs')} x n_steps = {rollout} (one PPO "
                             f"rollout), got {self.timesteps}")


# ---------------------------------------------------------------------------------------------- worlds


def env_class_of(env_id: str) -> Any:
    """The class (or creator) a registered env id makes, without making the env."""
    entry = gym.spec(env_id).entry_point  # a registered id: code the user imported
    return gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry


def env_task_options(env_id: str) -> tuple[str, ...]:
    """The keyword arguments of a registered env that choose its task, not its world (its class's ``TASK_OPTIONS``;
    the room's target, start heading, reward and success test), without making the env."""
    return tuple(getattr(env_class_of(env_id), "TASK_OPTIONS", ()))


def transfer_task(env_id: str) -> dict[str, Any]:
    """The task options the transfer benchmark gives ``env_id`` by default: its class's ``TRANSFER_TASK`` ({} where
    it has none). The room's is ``{"ball_start": "rest"}``: a thrown ball's velocity is not in the first frame, and
    the dream starts from one frame, so it could not know where the ball goes (docs/experiments.md "The thrown
    ball")."""
    return dict(getattr(env_class_of(env_id), "TRANSFER_TASK", {}))


def parse_task_options(items: list[str], name: str = "--task") -> dict[str, Any]:
    """``--task OPTION=JSON`` arguments (repeatable) as a dict of env task options; ``ValueError`` names a bad one."""
    task: dict[str, Any] = {}
    for item in items:
        option, _, value = item.partition("=")
        try:
            task[option] = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{name} must be OPTION=JSON (e.g. start_view_deg=null or ball_start=\"rest\"), "
                             f"got {item!r}") from None
    return task


def check_task_options(env_id: str, task: dict[str, Any] | None, name: str = "--task") -> None:
    """``ValueError`` (naming ``name``) where ``task`` sets an option ``env_id`` does not list in its ``TASK_OPTIONS``."""
    options = env_task_options(env_id)
    unknown = sorted(set(task or {}) - set(options))
    if unknown:
        raise ValueError(f"{name}: {env_id} has no task option {', '.join(unknown)} (its TASK_OPTIONS: "
                         f"{', '.join(options) or 'none'})")


def real_env_spec(model: str, task: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The real env a world model was trained on (its checkpoint's provenance), default ``NeuralSimRoom-v0``.

    The world comes from the data, the task from the env: keyword arguments the env class names in ``TASK_OPTIONS``
    (the room's target and start heading: they choose the task, not the world) are dropped, so the agents face the
    env's task whatever task the data was collected under: ``task`` (a :attr:`TransferConfig.real_task`; ``{}``: the
    env's default task), or with None the env's transfer task (:func:`transfer_task`)."""
    from neuralsim.checkpoints import CONFIG_NAME, provenance_env, read_config, resolve_checkpoint

    directory = resolve_checkpoint(model)
    # never 'module:Id' from a file
    env_id, env_kwargs = provenance_env(read_config(directory), str(directory / CONFIG_NAME))
    env_id = env_id or "NeuralSimRoom-v0"  # no env in the provenance: the room
    task = transfer_task(env_id) if task is None else task
    options = set(env_task_options(env_id))  # provenance_env checked the id is registered
    return env_id, {**{k: v for k, v in env_kwargs.items() if k not in options}, **task}


def wrap_real_env(env: gym.Env, keysets: tuple[str, ...] | None = None, encoder: Any = None) -> gym.Env:
    """The real env as the agent sees it: ``keysets``: discrete key-set actions
    (:class:`~neuralsim.agents.wrappers.KeySetActions`); ``encoder``: a :class:`~neuralsim.envs.latent.FrameEncoder`,
    latent observations (:class:`~neuralsim.envs.latent.LatentObservation`, outermost)."""
    from neuralsim.agents.wrappers import KeySetActions
    from neuralsim.envs.latent import LatentObservation

    if keysets is not None:
        env = KeySetActions(env, keysets)
    return env if encoder is None else LatentObservation(env, encoder=encoder)


def make_real_venv(env_id: str, env_kwargs: dict[str, Any], num_envs: int, seed: int, max_episode_steps: int,
                   keysets: tuple[str, ...] | None = None, encoder: Any = None) -> Any:
    """SB3 ``DummyVecEnv`` of the real env (``Monitor`` per env, ``TimeLimit(max_episode_steps)``; ``keysets``: as
    :func:`wrap_real_env`; ``encoder``: latent observations, all envs' frames encoded in one forward per step by
    :class:`~neuralsim.agents.sb3.VecLatentObservation`)."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = make_vec_env(env_id, n_envs=num_envs, seed=seed, vec_env_cls=DummyVecEnv,
                        env_kwargs={**env_kwargs, "max_episode_steps": max_episode_steps} if env_id == "NeuralSimRoom-v0"
                        else env_kwargs, wrapper_class=wrap_real_env, wrapper_kwargs={"keysets": keysets})
    if encoder is None:
        return venv
    from neuralsim.agents.sb3 import VecLatentObservation

    return VecLatentObservation(venv, encoder=encoder)


def make_dream_venv(model: str, num_envs: int, seed: int, max_episode_steps: int, obs_type: str = "rgb",
                    compile: bool = False, starts: tuple[np.ndarray, list[str]] | None = None,
                    latent_source: str = "dynamics") -> Any:
    """SB3 ``VecEnv`` over the batched dream (one model forward per step for all envs; ``obs_type="latent"``:
    latent observations from ``latent_source``, ``"dynamics"``: nothing decoded; ``compile``: the env's
    ``compile=True``; ``starts``: ``(frames, descriptions)``, the start set its resets draw from instead of the
    checkpoint's)."""
    from neuralsim.agents.sb3 import make_sb3_env

    frames, descriptions = starts if starts is not None else (None, None)
    return make_sb3_env(model=model, num_envs=num_envs, seed=seed, max_episode_steps=max_episode_steps, obs_type=obs_type,
                        latent_source=latent_source, compile=compile, start_frames=frames, start_descriptions=descriptions)


def dream_start_set(cfg: TransferConfig) -> tuple[np.ndarray, list[str]] | None:
    """The first frames and descriptions of ``cfg.dream_starts`` layouts of the real task (seeds from
    :data:`DREAM_START_SEED`): where the dream's training episodes start; None for ``dream_starts=0``."""
    if not cfg.dream_starts:
        return None
    env_id, env_kwargs = real_env_spec(cfg.model, cfg.real_task)
    return real_starts(env_id, env_kwargs, [DREAM_START_SEED + i for i in range(cfg.dream_starts)])


# ---------------------------------------------------------------------------------------------- training


RUN_RECORD = "run.json"  # a finished training's record in its directory (what --resume reuses)


def latent_extractor_of(cfg: TransferConfig) -> str:
    """``cfg.latent_extractor`` with ``"auto"`` resolved by the model (:func:`~neuralsim.agents.pretrain.has_target_tracker`)."""
    if cfg.latent_extractor != "auto":
        return cfg.latent_extractor
    from neuralsim.agents.pretrain import has_target_tracker

    return "pretrained" if has_target_tracker(cfg.model) else "cnn"


def training_key(world: str, cfg: TransferConfig, seed: int) -> dict[str, Any]:
    """What makes two trainings the same (a run record is reused only for the same key). A dream's also holds its
    model's fingerprint: a model installed under the same name (``"default"``) is another dream; so does the room's
    on latent observations (they come through the model's encoder). The room's on frames never reads the model: its
    key names none, so another ``--model`` reuses it."""
    from neuralsim.checkpoints import checkpoint_fingerprint

    key = {"world": world, "seed": seed, "model": cfg.model, "timesteps": cfg.timesteps, "num_envs": cfg.num_envs,
           "checkpoints": cfg.checkpoints, "max_episode_steps": cfg.max_episode_steps, "ppo": dict(cfg.ppo),
           "keys": None if cfg.keys is None else list(cfg.keys), "obs": cfg.obs, "rgb_extractor": cfg.rgb_extractor,
           "compile": cfg.compile, "real_env_kwargs": real_env_spec(cfg.model, cfg.real_task)[1]}
    if cfg.obs == "latent":
        key["latent_extractor"] = latent_extractor_of(cfg)
        if key["latent_extractor"] == "pretrained":
            key["pretrain"] = [cfg.pretrain_on, cfg.pretrain_frames, cfg.pretrain_epochs]
        # the room's latents are its frames encoded whatever the dream's source (unless it is taught on dreams)
        if world == "dream" or (key["latent_extractor"] == "pretrained" and cfg.pretrain_on == "dream"):
            key["latent_source"] = cfg.latent_source
    if world == "dream":
        key["dream_starts"] = cfg.dream_starts
    if world == "dream" or cfg.obs == "latent":
        key["model_fingerprint"] = checkpoint_fingerprint(cfg.model)
    else:
        del key["model"]
    return key


def finished_training(world: str, cfg: TransferConfig, seed: int, out_dir: Path) -> dict[str, Any] | None:
    """The run record of a training of the same key finished in ``out_dir`` with every policy it lists, or None."""
    path = Path(out_dir) / RUN_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    key = json.loads(json.dumps(training_key(world, cfg, seed)))
    recorded = record.get("key") if isinstance(record, dict) else None
    if isinstance(recorded, dict) and "model" not in key:  # a record of the room on frames written when keys named it
        recorded = {k: v for k, v in recorded.items() if k != "model"}
    if recorded != key:
        return None
    if not all(Path(p["path"], "policy.json").is_file() for p in record.get("policies", [])):
        return None
    return record["run"] if isinstance(record.get("run"), dict) else None


def train_ppo(world: str, cfg: TransferConfig, seed: int, out_dir: Path, encoder: Any = None) -> dict[str, Any]:
    """Train PPO for ``cfg.timesteps`` env steps in ``world`` (``"dream"`` or ``"real"``), saving policies along the way.

    With ``cfg.obs == "latent"`` the real env is observed through ``encoder`` (a
    :class:`~neuralsim.envs.latent.FrameEncoder` of ``cfg.model``; built here when None).

    Returns:
        ``{"world", "seed", "wall_s", "env_steps", "env_steps_per_s", "rollout_env_steps_per_s",
        "policies": [{"path", "steps"}...]}`` (the last policy is the final one), and ``"pretraining"`` (what
        :func:`~neuralsim.agents.pretrain.pretrain_latent_extractor` returned, timed apart from ``wall_s``) for a taught
        latent extractor.
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    from neuralsim.policy import save_policy

    latent = cfg.obs == "latent"
    if world == "dream":
        venv = make_dream_venv(cfg.model, cfg.num_envs, seed, cfg.max_episode_steps, obs_type=cfg.obs, compile=cfg.compile,
                               starts=dream_start_set(cfg), latent_source=cfg.latent_source)
        if cfg.keys is not None:
            from neuralsim.agents.wrappers import KeySetVecActions

            venv = KeySetVecActions(venv, cfg.keys)
    elif world == "real":
        env_id, env_kwargs = real_env_spec(cfg.model, cfg.real_task)
        if latent and encoder is None:
            from neuralsim.envs.latent import FrameEncoder

            encoder = FrameEncoder(cfg.model)
        venv = make_real_venv(env_id, env_kwargs, cfg.num_envs, seed, cfg.max_episode_steps, keysets=cfg.keys,
                              encoder=encoder if latent else None)
    else:
        raise ValueError(f"world must be 'dream' or 'real', got {world!r}")
    rollout = cfg.num_envs * int(cfg.ppo["n_steps"])
    total_rollouts = max(1, cfg.timesteps // rollout)
    save_at = sorted({max(1, round(total_rollouts * (i + 1) / cfg.checkpoints)) for i in range(cfg.checkpoints)})
    saved: list[dict[str, Any]] = []

    class Along(BaseCallback):
        """Saves the policy after the chosen rollouts; times rollout collection apart from the updates."""

        def __init__(self) -> None:
            super().__init__()
            self.rollouts, self.rollout_s, self.t0 = 0, 0.0, 0.0

        def _on_rollout_start(self) -> None:
            self.t0 = time.perf_counter()
            if self.rollouts in save_at:  # the update after rollout n has run: policy n is final for it
                path = save_policy(self.model, out_dir / f"step-{self.num_timesteps:07d}",
                                   metadata={"world": world, "seed": seed, "steps": int(self.num_timesteps), "model": cfg.model})
                saved.append({"path": str(path), "steps": int(self.num_timesteps)})

        def _on_rollout_end(self) -> None:
            self.rollout_s += time.perf_counter() - self.t0
            self.rollouts += 1

        def _on_step(self) -> bool:
            return True

    callback = Along()
    pretraining = None
    if latent:
        from neuralsim.agents.sb3 import latent_policy_kwargs

        choice = latent_extractor_of(cfg)
        algo = PPO("MlpPolicy", venv, seed=seed, device="cpu", verbose=0,
                   policy_kwargs=latent_policy_kwargs(extractor="cnn" if choice == "cnn" else "cells"), **cfg.ppo)
        if choice == "pretrained":  # after PPO(...): building the policy redraws its extractor
            from neuralsim.agents.pretrain import pretrain_latent_extractor

            # the same teaching in both worlds (the same frames and seed): they differ only in where PPO runs
            env_id, env_kwargs = real_env_spec(cfg.model, cfg.real_task) if cfg.pretrain_on == "real" else (None, None)
            pretraining = pretrain_latent_extractor(algo.policy.features_extractor, cfg.model, frames=cfg.pretrain_frames,
                                                    epochs=cfg.pretrain_epochs, seed=PRETRAIN_SEED + seed, env=env_id,
                                                    env_kwargs=env_kwargs, latent_source=cfg.latent_source)
    else:
        from neuralsim.agents.sb3 import rgb_policy_kwargs

        policy_kwargs = rgb_policy_kwargs() if cfg.rgb_extractor == "impala" else None
        algo = PPO("CnnPolicy", venv, seed=seed, device="cpu", verbose=0, policy_kwargs=policy_kwargs, **cfg.ppo)
    t0 = time.perf_counter()
    algo.learn(total_rollouts * rollout, callback=callback)
    wall = time.perf_counter() - t0
    final = save_policy(algo, out_dir / "final",
                        metadata={"world": world, "seed": seed, "steps": int(algo.num_timesteps), "model": cfg.model})
    saved.append({"path": str(final), "steps": int(algo.num_timesteps)})
    venv.close()
    run = {"world": world, "seed": seed, "wall_s": wall, "env_steps": int(algo.num_timesteps),
           "env_steps_per_s": algo.num_timesteps / wall, "rollout_env_steps_per_s": algo.num_timesteps / max(callback.rollout_s, 1e-9),
           "policies": saved, **({"pretraining": pretraining} if pretraining else {})}
    from neuralsim.checkpoints import atomic_write_json

    atomic_write_json(out_dir / RUN_RECORD, {"key": training_key(world, cfg, seed), "run": run, "policies": saved})
    return run


# ---------------------------------------------------------------------------------------------- policies


def saved_policy_fn(path: str | os.PathLike) -> ActFn:
    """A saved policy acting deterministically (the usual PPO evaluation)."""
    from neuralsim.policy import load_policy

    policy = load_policy(path)
    return lambda obs, rng: policy.act_batch(obs, deterministic=True)


def random_policy_fn(action_space: gym.Space) -> ActFn:
    def act(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if isinstance(action_space, gym.spaces.Discrete):
            return action_space.start + rng.integers(action_space.n, size=len(obs))
        return rng.uniform(action_space.low, action_space.high, size=(len(obs), *action_space.shape)).astype(action_space.dtype)

    return act


def constant_policy_fn(keys: str, action_space: gym.Space, keysets: tuple[str, ...] | None = None) -> ActFn:
    """A scripted policy holding one key combination (``"w"``: walk forward; ``"l"``: turn on the spot); ``keysets``:
    the discrete key sets the action space stands for (default: the room's ``DISCRETE_KEYSETS``)."""
    if isinstance(action_space, gym.spaces.Discrete):
        action: Any = tuple(keysets or A.DISCRETE_KEYSETS).index(keys) + action_space.start
    else:
        action = A.keys_to_vector(keys).astype(action_space.dtype)
    return lambda obs, rng: np.stack([np.asarray(action)] * len(obs))


# ---------------------------------------------------------------------------------------------- evaluation


def real_starts(env_id: str, env_kwargs: dict[str, Any], seeds: list[int]) -> tuple[np.ndarray, list[str]]:
    """First frames and descriptions of the real env at ``seeds`` (the dream starts from them)."""
    env = gym.make(env_id, **env_kwargs)
    frames, prompts = [], []
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        frames.append(np.asarray(obs))
        prompts.append(str(info.get("description", "")))
    env.close()
    return np.stack(frames), prompts


def evaluate_real(act: ActFn, env_id: str, env_kwargs: dict[str, Any], seeds: list[int], max_steps: int,
                  rng_seed: int = 0, record: int | None = None, keysets: tuple[str, ...] | None = None,
                  encoder: Any = None, trace: int = 0) -> dict[str, Any]:
    """Run one episode per seed in the real env, all episodes stepped in lockstep (batched policy forwards).

    ``encoder``: observe latent frames through :class:`~neuralsim.envs.latent.LatentObservation` (as
    :func:`wrap_real_env`).

    Returns:
        ``{"returns", "successes", "lengths"}`` (lists, one per seed) and, if ``record`` is an index,
        ``"frames"`` of that episode (rgb; with ``encoder``, the frames as encoded); with ``trace > 0``,
        ``"trace"``: the first ``trace`` steps of every episode, ``{"actions": [n, trace, ...], "rewards": [n, trace],
        "terminated": [n, trace], "valid": [n, trace]}`` (valid: the episode had not ended before the step).
    """
    envs = [wrap_real_env(gym.make(env_id, **env_kwargs), keysets, encoder) for _ in seeds]
    pixels = (lambda i, o: o.copy()) if encoder is None else (lambda i, o: envs[i].frame.copy())  # noqa: E731
    obs = np.stack([env.reset(seed=s)[0] for env, s in zip(envs, seeds)])
    rng = np.random.default_rng(rng_seed)
    n = len(seeds)
    returns, lengths = np.zeros(n), np.zeros(n, dtype=int)
    success, active = np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
    frames = [pixels(record, obs[record])] if record is not None else None
    traced: dict[str, list[np.ndarray]] = {"actions": [], "rewards": [], "terminated": [], "valid": []}
    for t in range(max_steps):
        actions = act(obs, rng)
        step_rewards, step_ended = np.zeros(n, np.float32), np.zeros(n, bool)
        if t < trace:
            traced["actions"].append(np.asarray(actions).copy())
            traced["valid"].append(active.copy())
        for i in np.flatnonzero(active):
            o, r, term, trunc, info = envs[i].step(actions[i])
            obs[i] = o
            returns[i] += r
            lengths[i] += 1
            success[i] |= bool(info.get("success", term))
            active[i] = not (term or trunc)
            step_rewards[i], step_ended[i] = r, term
        if t < trace:
            traced["rewards"].append(step_rewards)
            traced["terminated"].append(step_ended)
        if frames is not None and lengths[record] > len(frames) - 1:
            frames.append(pixels(record, obs[record]))
        if not active.any():
            break
    for env in envs:
        env.close()
    out = {"returns": returns.tolist(), "successes": success.tolist(), "lengths": lengths.tolist()}
    if frames is not None:
        out["frames"] = np.stack(frames)
    if trace and traced["actions"]:
        out["trace"] = {k: np.stack(v, axis=1) for k, v in traced.items()}
    return out


def replay_in_dream(model: str, starts: np.ndarray, prompts: list[str], actions: np.ndarray, seed: int = 0,
                    keysets: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Open loop: the dream from each real first frame and description under the actions the real episode took
    (``[n, T, ...]``, as the policy gave them), nothing decoded. Returns the dream's predicted ``rewards [n, T]`` and
    ``termination_prob [n, T]`` (a row that the dream ends early keeps being stepped: the actions are fixed)."""
    from neuralsim.agents.wrappers import keyset_vectors
    from neuralsim.session import DreamSession

    n, T = actions.shape[:2]
    session = DreamSession(model)
    vectors = None if keysets is None else keyset_vectors(keysets, session.action_space, name="model")
    generator = session.generator(seed)
    # Real frames of another size than the model's are resized as its dataset's were (as evaluate_dream does).
    inputs = session.check_start(n, image=starts, prompt=prompts, resize=True)
    state, _, _ = session.start(n, generator, inputs)
    rewards, probs = [], []
    for t in range(T):
        a = actions[:, t]
        if vectors is not None:
            a = vectors[np.asarray(a, dtype=np.int64)]
        out = session.step(state, np.ascontiguousarray(a, np.float32), generator, decode=False)
        state = out.state
        rewards.append(out.reward)
        probs.append(out.termination_prob)
    return {"rewards": np.stack(rewards, 1), "termination_prob": np.stack(probs, 1)}


def reward_agreement(real_traces: list[dict[str, np.ndarray]], dream: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Pearson of the dream's predicted vs the real reward over the traced steps (steps 1-16 of every episode, each
    policy's actions replayed open loop), and the termination F1 (probability > 0.5 vs the real episode ending),
    steps after an episode's end left out."""
    real_r = np.concatenate([t["rewards"][t["valid"]] for t in real_traces])
    dream_r = np.concatenate([d["rewards"][t["valid"]] for t, d in zip(real_traces, dream)])
    real_t = np.concatenate([t["terminated"][t["valid"]] for t in real_traces])
    dream_t = np.concatenate([d["termination_prob"][t["valid"]] > 0.5 for t, d in zip(real_traces, dream)])
    corr = float(np.corrcoef(real_r, dream_r)[0, 1]) if real_r.std() > 0 and dream_r.std() > 0 else None
    tp = int((real_t & dream_t).sum())
    f1 = 2 * tp / (2 * tp + int((dream_t & ~real_t).sum()) + int((~dream_t & real_t).sum())) if real_t.any() else None
    return {"reward_corr_t1_16": None if corr is None else round(corr, 4),
            "termination_f1": None if f1 is None else round(f1, 4), "reward_steps": int(len(real_r)),
            "termination_positives": int(real_t.sum()), "termination_predicted": int(dream_t.sum())}


def evaluate_dream(act: ActFn, model: str, starts: np.ndarray, prompts: list[str], max_steps: int, seed: int = 0,
                   record: int | None = None, keysets: tuple[str, ...] | None = None, obs_type: str = "rgb",
                   latent_source: str = "dynamics") -> dict[str, Any]:
    """The same episodes in the dream: every env starts from a real first frame and its description.

    ``obs_type="latent"``: the policy observes latent frames from ``latent_source``; with ``"dynamics"`` nothing is
    decoded, except the ``record``ed episode's frames.
    """
    from neuralsim.agents.wrappers import keyset_vectors
    from neuralsim.envs.vector import WorldModelVectorEnv

    n = len(starts)
    latent = obs_type == "latent"
    venv = WorldModelVectorEnv(n, model=model, max_episode_steps=max_steps, obs_type=obs_type, latent_source=latent_source,
                               return_frames=not latent or record is not None)
    vectors = None if keysets is None else keyset_vectors(keysets, venv.single_action_space, name="model")
    # Real frames of another size than the model's are resized as its dataset's were (provenance["resize"]).
    obs, _ = venv.reset(seed=seed, options={"image": starts, "prompt": prompts, "resize": True})
    rng = np.random.default_rng(seed)
    returns, lengths = np.zeros(n), np.zeros(n, dtype=int)
    success, active = np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
    frames = None
    if record is not None:  # latent obs: the start frame as the dream saw it (resized to the model's size)
        from neuralsim.images import resize_frame

        session = venv.session
        frames = [resize_frame(starts[record], session.image_size, mode=session.resize_mode).copy() if latent
                  else obs[record].copy()]
    while active.any():
        actions = act(obs, rng)
        if vectors is not None:  # discrete key sets -> the dream's camera vectors
            actions = vectors[np.asarray(actions, dtype=np.int64)]
        obs, rewards, terminated, truncated, info = venv.step(actions)
        returns[active] += rewards[active]
        lengths[active] += 1
        success[active] |= terminated[active]
        if frames is not None and active[record]:
            frames.append(info["frames"][record, -1].copy() if latent else obs[record].copy())
        active &= ~(terminated | truncated)
    venv.close()
    out = {"returns": returns.tolist(), "successes": success.tolist(), "lengths": lengths.tolist()}
    if frames is not None:
        out["frames"] = np.stack(frames)
    return out


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (ties get their average rank); NaN when either side is constant."""

    def ranks(values: list[float]) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):  # average rank for ties
            r[v == value] = r[v == value].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def side_by_side_gif(path: Path, real: np.ndarray, dream: np.ndarray, scale: int = 2, fps: int = 15) -> Path:
    """Real | dream frames of one episode as a GIF (the shorter episode holds its last frame)."""
    from neuralsim.rollout import write_video

    n = max(len(real), len(dream))
    pad = lambda f: np.concatenate([f, np.repeat(f[-1:], n - len(f), axis=0)])  # noqa: E731
    gap = np.full((n, real.shape[1], 2, 3), 255, np.uint8)
    video = np.concatenate([pad(real), gap, pad(dream)], axis=2)
    video = video.repeat(scale, axis=1).repeat(scale, axis=2)
    write_video(path, video, fps=fps)
    return path


def summary(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(len(v))}


# ---------------------------------------------------------------------------------------------- the benchmark


def run_transfer_benchmark(cfg: TransferConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, evaluate, compare; returns the results dict (also written to ``cfg.out``)."""
    from neuralsim.checkpoints import atomic_write_json

    cfg.validate()
    t_start = time.perf_counter()
    env_id, env_kwargs = real_env_spec(cfg.model, cfg.real_task)
    eval_kwargs = {**env_kwargs, "max_episode_steps": cfg.max_episode_steps} if env_id == "NeuralSimRoom-v0" else env_kwargs
    probe = gym.make(env_id, **eval_kwargs)
    action_space = probe.action_space if cfg.keys is None else gym.spaces.Discrete(len(cfg.keys))
    probe.close()
    keys = cfg.keys
    encoder = None
    if cfg.obs == "latent":  # one encoder for every real env of the run (training and evaluation)
        from neuralsim.envs.latent import FrameEncoder

        encoder = FrameEncoder(cfg.model)
    workdir = Path(cfg.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    # 1. Training: same budget in both worlds, for every seed.
    runs: dict[str, list[dict[str, Any]]] = {"dream": [], "real": []}
    for seed in range(cfg.seeds):
        for world in ("dream", "real"):
            out_dir = workdir / f"{world}-seed{seed}"
            run = finished_training(world, cfg, seed, out_dir) if cfg.resume else None
            if run is not None:
                log(f"PPO in the {world} (seed {seed}): finished in {out_dir} before ({run['wall_s']:.0f} s), reused")
            else:
                log(f"training PPO in the {world} (seed {seed}, {cfg.timesteps:,} env steps, {cfg.num_envs} envs)...")
                run = train_ppo(world, cfg, seed, out_dir, encoder=encoder)
            log(f"  {run['wall_s']:.0f} s, {run['env_steps_per_s']:.0f} env-steps/s overall, "
                f"{run['rollout_env_steps_per_s']:.0f} during rollouts")
            runs[world].append(run)

    # 2. Real-world evaluation of the final policies, random and scripted, on held-out layouts.
    eval_seeds = [[cfg.eval_seed + 1000 * s + e for e in range(cfg.episodes)] for s in range(cfg.seeds)]
    scripted = {f"scripted: {name}": constant_policy_fn(k, action_space, keys)
                for name, k in (("forward", "w"), ("turn", "l")) if keys is None or k in keys}
    methods: dict[str, list[tuple[ActFn, int]]] = {  # name -> (policy, evaluation seed block) per training seed
        "PPO in dream": [(saved_policy_fn(r["policies"][-1]["path"]), s) for s, r in enumerate(runs["dream"])],
        "PPO in real": [(saved_policy_fn(r["policies"][-1]["path"]), s) for s, r in enumerate(runs["real"])],
        "random": [(random_policy_fn(action_space), s) for s in range(cfg.seeds)],
        **{name: [(fn, s) for s in range(cfg.seeds)] for name, fn in scripted.items()},
    }
    rows = []
    for name, instances in methods.items():
        log(f"evaluating {name} in the real env ({cfg.seeds} x {cfg.episodes} episodes)...")
        returns, successes = [], []
        for act, s in instances:
            res = evaluate_real(act, env_id, eval_kwargs, eval_seeds[s], cfg.max_episode_steps, rng_seed=s, keysets=keys,
                                encoder=encoder)
            returns += res["returns"]
            successes += res["successes"]
        row = {"method": name, "return": summary(returns), "success_rate": float(np.mean(successes))}
        world = {"PPO in dream": "dream", "PPO in real": "real"}.get(name)
        if world:
            row.update(train_wall_s=summary([r["wall_s"] for r in runs[world]]),
                       train_env_steps_per_s=summary([r["env_steps_per_s"] for r in runs[world]]),
                       rollout_env_steps_per_s=summary([r["rollout_env_steps_per_s"] for r in runs[world]]))
            taught = [r["pretraining"] for r in runs[world] if "pretraining" in r]
            if taught and len(taught) == len(runs[world]):  # the extractor's teaching, before (not in) train_wall_s
                row["pretrain_s"] = summary([p["label_s"] + p["train_s"] for p in taught])
                if all(p["visible_accuracy"] is not None for p in taught):
                    row["pretrain_visible_accuracy"] = summary([p["visible_accuracy"] for p in taught])
        rows.append(row)
    mean = {row["method"]: row["return"]["mean"] for row in rows}
    gap = mean["PPO in real"] - mean["random"]
    # Undefined unless real training beat random: the score's denominator is what there was to transfer.
    score = (mean["PPO in dream"] - mean["random"]) / gap if gap > 1e-9 else float("nan")

    # 3. Dream-vs-real agreement over policies of varied quality (seed 0's checkpoints, random, scripted).
    agree_seeds = eval_seeds[0]
    starts, prompts = real_starts(env_id, eval_kwargs, agree_seeds)
    candidates = agreement_candidates(runs["dream"][0]["policies"], runs["real"][0]["policies"], action_space, keys)
    agreement, rho, rewards = measure_agreement(cfg, candidates, env_id, eval_kwargs, agree_seeds, starts, prompts,
                                                encoder=encoder, log=log)

    # 4. Where dream and real disagree most (returns scaled by their spread), the same start in both, side by side.
    spread = lambda k: max(np.ptp([a[k] for a in agreement]), 1e-9)  # noqa: E731
    worst = max(agreement, key=lambda a: abs(a["real_return"] / spread("real_return") - a["dream_return"] / spread("dream_return")))
    real_ep = evaluate_real(worst["_act"], env_id, eval_kwargs, agree_seeds[:1], cfg.max_episode_steps, rng_seed=7, record=0,
                           keysets=keys, encoder=encoder)
    dream_ep = evaluate_dream(worst["_act"], cfg.model, starts[:1], prompts[:1], cfg.max_episode_steps, seed=7, record=0,
                              keysets=keys, obs_type=cfg.obs, latent_source=cfg.latent_source)
    gif = side_by_side_gif(workdir / "disagreement.gif", real_ep["frames"], dream_ep["frames"])
    for a in agreement:
        del a["_act"]

    results = {
        "benchmark": "transfer", "quick": cfg.quick, "model": cfg.model, "real_env": env_id, "obs": cfg.obs, "compile": cfg.compile,
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out", "workdir", "resume")},
        "real_env_kwargs": env_kwargs,  # the real task as resolved (real_task None: the env's TRANSFER_TASK)
        "rows": rows, "transfer_score": None if math.isnan(score) else round(score, 3),
        "dream_vs_real_training_speed": round(rows[0]["train_env_steps_per_s"]["mean"] / rows[1]["train_env_steps_per_s"]["mean"], 3),
        "agreement": agreement, "spearman": None if math.isnan(rho) else round(rho, 3),
        "spearman_ci90": spearman_interval(agreement),
        # The dream's reward along the real episodes of the agreement's policies (their first REWARD_STEPS actions,
        # replayed open loop from the same real first frames): the reward model as the PPO agent meets it.
        **rewards,
        # real_return / dream_return: the policy's means in the agreement table (what "largest" was judged on);
        # the GIF shows one of those episodes (the first start), whose own returns are gif_real/dream_return.
        "disagreement_gif": {"path": str(gif), "policy": worst["policy"], "seed": agree_seeds[0],
                             "real_return": worst["real_return"], "dream_return": worst["dream_return"],
                             "episodes": len(agree_seeds),
                             "gif_real_return": float(real_ep["returns"][0]), "gif_dream_return": float(dream_ep["returns"][0])},
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    atomic_write_json(cfg.out, results)
    return results


def agreement_candidates(dream_policies: list[dict[str, Any]], real_policies: list[dict[str, Any]],
                         action_space: gym.Space, keys: tuple[str, ...] | None) -> list[tuple[str, ActFn]]:
    """The agreement's policies of varied quality: the saved ones along a dream and a room training (``[{"path",
    "steps"}...]``, a run record's ``policies``), random, and the scripted ones the key sets allow (always forward,
    turning on the spot)."""
    candidates: list[tuple[str, ActFn]] = []
    for world, policies in (("dream", dream_policies), ("real", real_policies)):
        for p in policies:
            candidates.append((f"PPO in {world} @ {p['steps']:,}", saved_policy_fn(p["path"])))
    candidates.append(("random", random_policy_fn(action_space)))
    candidates += [(f"scripted: {name}", constant_policy_fn(k, action_space, keys))
                   for name, k in (("forward", "w"), ("turn", "l")) if keys is None or k in keys]
    return candidates


def measure_agreement(cfg: TransferConfig, candidates: list[tuple[str, ActFn]], env_id: str, eval_kwargs: dict[str, Any],
                      seeds: list[int], starts: Any, prompts: Any, encoder: Any = None,
                      log: Callable[[str], None] = print) -> tuple[list[dict[str, Any]], float, dict[str, Any]]:
    """Each candidate's mean return in the real env and in ``cfg.model``'s dream from the same starts (``seeds``), and
    the dream's reward along each one's real episodes, its first ``REWARD_STEPS`` actions replayed open loop.

    Returns:
        ``(rows, spearman, reward_agreement)``: a row per candidate (``policy``, ``real_return``, ``dream_return``,
        ``real_success``, ``dream_success``, each episode's ``real_returns`` / ``dream_returns`` in start order, and
        ``_act``, the policy, for the caller to drop), the rank correlation of the two mean returns
        (:func:`spearman_interval` gives its interval from the rows), and :func:`reward_agreement`'s figures.
    """
    keys = cfg.keys
    agreement, traces, replays = [], [], []
    for name, act in candidates:
        log(f"agreement: {name} in the real env and in the dream...")
        real = evaluate_real(act, env_id, eval_kwargs, seeds, cfg.max_episode_steps, rng_seed=7, keysets=keys,
                             encoder=encoder, trace=REWARD_STEPS)
        traces.append(real["trace"])  # the reward prediction, open loop on the real episode's actions
        replays.append(replay_in_dream(cfg.model, starts, prompts, real["trace"]["actions"], seed=7, keysets=keys))
        dream = evaluate_dream(act, cfg.model, starts, prompts, cfg.max_episode_steps, seed=7, keysets=keys,
                               obs_type=cfg.obs, latent_source=cfg.latent_source)
        agreement.append({"policy": name, "real_return": float(np.mean(real["returns"])),
                          "dream_return": float(np.mean(dream["returns"])),
                          "real_success": float(np.mean(real["successes"])), "dream_success": float(np.mean(dream["successes"])),
                          "real_returns": [float(r) for r in real["returns"]],
                          "dream_returns": [float(r) for r in dream["returns"]], "_act": act})
    rho = spearman([a["real_return"] for a in agreement], [a["dream_return"] for a in agreement])
    return agreement, rho, reward_agreement(traces, replays)


def spearman_interval(rows: list[dict[str, Any]], *, resamples: int = 1000, level: float = 0.9, seed: int = 0
                      ) -> list[float] | None:
    """The ``level`` percentile interval ``[low, high]`` of the agreement's Spearman ρ over the starts resampled with
    replacement (``rows`` as :func:`measure_agreement` returns them, with ``real_returns`` / ``dream_returns``; a fixed
    ``seed``). Every policy is scored on the same starts in both worlds, so one draw of start indices serves all of
    them: the interval says how far another set of starts may move ρ (policies whose returns lie close swap ranks
    easily). None with fewer than 2 policies or where ρ is undefined in more than half the draws."""
    if len(rows) < 2:
        return None
    real = [np.asarray(r["real_returns"], np.float64) for r in rows]
    dream = [np.asarray(r["dream_returns"], np.float64) for r in rows]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        pick_real = rng.integers(0, len(real[0]), len(real[0]))
        # the starts are shared (paired) where both worlds ran the same number of episodes
        pick_dream = pick_real if len(dream[0]) == len(real[0]) else rng.integers(0, len(dream[0]), len(dream[0]))
        rho = spearman([r[pick_real].mean() for r in real], [d[pick_dream].mean() for d in dream])
        if not math.isnan(rho):
            values.append(rho)
    if len(values) < resamples / 2:
        return None
    tail = 100 * (1 - level) / 2
    return [round(float(np.percentile(values, tail)), 3), round(float(np.percentile(values, 100 - tail)), 3)]


def format_table(results: dict[str, Any]) -> str:
    lines = [f"transfer benchmark: world model {results['model']!r}, real env {results['real_env']}, "
             f"{results['config']['timesteps']:,} PPO env steps x {results['config']['seeds']} seeds, "
             f"{results['config']['episodes']} real episodes per seed, {results.get('obs', 'rgb')} observations",
             f"{'method':<20}{'real return':>18}{'success':>9}{'train wall s':>14}{'train env-steps/s':>19}"]
    for row in results["rows"]:
        ret = f"{row['return']['mean']:.2f} ± {row['return']['std']:.2f}"
        wall = f"{row['train_wall_s']['mean']:.0f}" if "train_wall_s" in row else "-"
        sps = f"{row['train_env_steps_per_s']['mean']:.0f}" if "train_env_steps_per_s" in row else "-"
        lines.append(f"{row['method']:<20}{ret:>18}{row['success_rate']:>9.2f}{wall:>14}{sps:>19}")
    score = results["transfer_score"]
    lines.append(f"transfer score (dream - random) / (real - random): {'n/a (real PPO did not beat random)' if score is None else score}")
    lines.append(f"dream training speed / real training speed: {results['dream_vs_real_training_speed']}x")
    lines.append("")
    lines.append(f"{'policy (agreement)':<28}{'real return':>13}{'dream return':>14}")
    for a in results["agreement"]:
        lines.append(f"{a['policy']:<28}{a['real_return']:>13.2f}{a['dream_return']:>14.2f}")
    interval = results.get("spearman_ci90")
    lines.append(f"Spearman rank correlation dream vs real: {results['spearman']}"
                 + ("" if interval is None else f" (90 % interval, the starts resampled: {interval[0]}–{interval[1]})"))
    if "reward_corr_t1_16" in results:
        lines.append(f"dream reward vs real over steps 1-{REWARD_STEPS} (the agreement policies' real actions, open loop): "
                     f"Pearson {results['reward_corr_t1_16']}, termination F1 {results['termination_f1']} "
                     f"({results['termination_positives']} real endings, {results['termination_predicted']} predicted)")
    g = results["disagreement_gif"]
    lines.append(f"largest disagreement: {g['policy']} (mean return real {g['real_return']:.2f}, dream "
                 f"{g['dream_return']:.2f}, as in the table); GIF of its first episode (seed {g['seed']}: real "
                 f"{g['gif_real_return']:.2f}, dream {g['gif_dream_return']:.2f}) -> {g['path']}")
    return "\n".join(lines)


__all__ = ["TransferConfig", "train_ppo", "evaluate_real", "evaluate_dream", "spearman", "spearman_interval",
           "run_transfer_benchmark", "format_table"]
