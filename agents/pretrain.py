"""Teach a latent policy's features extractor where the target is, before RL.

PPO alone does not learn the room's task from latent observations: the latents hold the target (decoded, they teach
the same task as frames do), but a small conv net trained by PPO's gradients alone never starts reading a ball a few
pixels across inside one latent cell (docs/performance.md, section 11). Taught first, supervised, whether the target
is in view and at which image column, the same net lets PPO learn it (section 12, ``benchmarks/ppo_observation.py``).

The labels come from the world model, not from the simulator: a model with a target tracker
(:class:`neuralsim.reward.TargetTracker`, the reward model of the shipped one) reads the target off a latent frame.
:func:`env_target_labels` encodes frames of a pixel env (random walk-and-turn keys, no reward read) and labels each
with the tracker's measurement; :func:`dream_target_labels` labels frames of the model's own dreams with the tracker's
estimate there (no env needed; it taught PPO less well, section 12). :func:`pretrain_latent_extractor` trains an
extractor on either, with a linear head it then drops:

    >>> from stable_baselines3 import PPO
    >>> from neuralsim.agents.sb3 import latent_policy_kwargs, make_sb3_env
    >>> from neuralsim.agents.pretrain import pretrain_latent_extractor
    >>> venv = make_sb3_env(model="default", num_envs=16, obs_type="latent")                      # doctest: +SKIP
    >>> agent = PPO("MlpPolicy", venv, policy_kwargs=latent_policy_kwargs(extractor="cells"))   # doctest: +SKIP
    >>> pretrain_latent_extractor(agent.policy.features_extractor, "default", env="NeuralSimRoom-v0")  # doctest: +SKIP
    >>> agent.learn(100_000)                                                                     # doctest: +SKIP

Call it after the algorithm is built: SB3's policy redraws every layer of its extractor (orthogonal init) when it
builds itself, so weights set before are lost.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import numpy as np
import torch

from neuralsim.actions import WALK_AND_TURN


def has_target_tracker(model: Any) -> bool:
    """Whether ``model`` (a native checkpoint's name or directory, or a loaded model or session) has a target tracker
    as its reward model, so that :func:`dream_target_labels` can label its dreams. Reads only the config of a name or
    directory; False for one that is not a native checkpoint."""
    from neuralsim.reward import TargetTracker

    if not isinstance(model, (str, os.PathLike)):
        inner = getattr(model, "model", model)  # a DreamSession's model, or the model itself
        return isinstance(getattr(inner, "reward_model", None), TargetTracker)
    from neuralsim.checkpoints import read_config, resolve_checkpoint

    try:
        config = read_config(resolve_checkpoint(model))
    except (ValueError, OSError):
        return False
    return bool(config.reward_model_channels) and config.reward_model_kind == "target"


def _check_collection(frames: Any, num_envs: Any, episode_steps: Any, walk: Any, keys: Any) -> None:
    for name, value in (("frames", frames), ("num_envs", num_envs), ("episode_steps", episode_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if isinstance(walk, bool) or not isinstance(walk, (int, float)) or not 0.0 <= walk <= 1.0:
        raise ValueError(f"walk must be a probability in [0, 1], got {walk!r}")
    if isinstance(keys, str) or not keys or any(not isinstance(k, str) or not k or set(k) - set("wsadijkl") for k in keys):
        raise ValueError(f"keys must be a list of key sets over 'wsadijkl' (e.g. ['w', 'j', 'l']), got {keys!r}")


def _tracker_session(model: Any) -> Any:
    """A float32 :class:`~neuralsim.session.DreamSession` of ``model``, checked to have a target tracker."""
    from neuralsim.reward import TargetTracker
    from neuralsim.session import as_session

    session = as_session(model, dtype="float32")
    tracker = getattr(session.model, "reward_model", None)
    if not isinstance(tracker, TargetTracker):
        raise ValueError(f"model must have a target tracker (neuralsim.reward.TargetTracker) as its reward model to label "
                         f"the target, got {type(tracker).__name__}")
    return session


def _column(tracker: Any, offsets: torch.Tensor) -> torch.Tensor:
    """The image column of target offsets ``[N, 2]`` (forward, right), in half image widths from the centre."""
    return (offsets[:, 1] / (offsets[:, 0].clamp(min=1e-3) * tracker.view_tan)).clamp(-1.5, 1.5).float()


def dream_target_labels(model: Any = "default", frames: int = 20_000, *, num_envs: int = 32, episode_steps: int = 50,
                        walk: float = 0.3, keys: Sequence[str] = WALK_AND_TURN, seed: int = 0,
                        latent_source: str = "dynamics") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latent frames of the model's own dreams, each labelled with the dream's estimate of the target.

    ``num_envs`` dreams from the model's start set, ``episode_steps`` steps each, a random key of ``keys`` per step
    (``keys[0]`` with probability ``walk``, else any), fp32; the latent observations as ``WorldModelEnv(obs_type=
    "latent", latent_source=...)`` shows them: ``"dynamics"`` (nothing decoded) or ``"frames"`` (the decoded frames
    encoded again).

    Args:
        model: a shipped model name, a checkpoint directory or a :class:`~neuralsim.session.DreamSession`; its reward
            model must be a target tracker.
        frames: how many latent frames (labelled) to return.

    Returns:
        ``(latents [frames, C, h, w], visible [frames] bool, column [frames])``, float32: the dream's latent
        observations, whether the tracker's estimate is in view (:meth:`~neuralsim.reward.TargetTracker.in_view`) and
        its image column in ``[-1, 1]`` (left edge to right edge, clamped to ±1.5; meaningful where visible).

    Raises:
        ValueError: a bad count or probability, or a model without a target tracker.
    """
    from neuralsim.actions import keys_to_vector
    from neuralsim.envs.world_model_env import LATENT_SOURCES, observations

    _check_collection(frames, num_envs, episode_steps, walk, keys)
    if latent_source not in LATENT_SOURCES:
        raise ValueError(f"latent_source must be one of {', '.join(map(repr, LATENT_SOURCES))}, got {latent_source!r}")
    session = _tracker_session(model)
    tracker = session.model.reward_model
    flags = session.judge_frames, session.draw_views
    decode = latent_source == "frames"  # the dream as the env with that source runs it (its frames judged, views drawn)
    session.judge_frames = session.draw_views = decode
    actions = np.stack([keys_to_vector(k) for k in keys]).astype(np.float32)
    rng = np.random.default_rng(seed)
    generator = session.generator(seed)
    latents, visible, column = [], [], []
    collected = 0
    try:
        while collected < frames:
            state, rgb, _ = session.start(num_envs, generator, rng=rng)
            for _ in range(episode_steps):
                offsets = state.reward_memory[:, :2].float()  # (forward, right) of the target, metres, camera frame
                shown = observations("latent", latent_source, session, state.latent, rgb)  # what the agent is shown
                latents.append(torch.from_numpy(shown))
                visible.append(tracker.in_view(offsets))
                column.append(_column(tracker, offsets))
                collected += num_envs
                if collected >= frames:
                    break
                chosen = np.where(rng.random(num_envs) < walk, 0, rng.integers(len(keys), size=num_envs))
                out = session.step(state, actions[chosen], generator, decode=decode)
                state, rgb = out.state, None if out.frames is None else out.frames[:, -1]
    finally:  # a caller's session is handed back as it came
        session.judge_frames, session.draw_views = flags
    return torch.cat(latents)[:frames].contiguous(), torch.cat(visible)[:frames], torch.cat(column)[:frames]


def env_target_labels(model: Any, env: Any, frames: int = 20_000, *, episode_steps: int = 50, walk: float = 0.3,
                      keys: Sequence[str] = WALK_AND_TURN, seed: int = 0, env_kwargs: dict[str, Any] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frames of a pixel env (no reward read) through the model's encoder, each labelled by the model's target tracker
    measuring it: the labels of :func:`dream_target_labels`, read off the env's frames instead of dreamed ones.

    Episodes of ``episode_steps`` steps from ``env.reset(seed=seed)`` on, a random key of ``keys`` per step (``keys[0]``
    with probability ``walk``; the env's canonical camera actions, ``Box(4)``; any other action space is sampled).
    A frame is labelled "in view" where the tracker is more than half confident and its estimate lies in the view.

    Args:
        model: a shipped model name, a checkpoint directory or a :class:`~neuralsim.session.DreamSession` with a
            target tracker.
        env: a registered env id (made with ``env_kwargs``) or a Gymnasium env of rgb frames (not closed here).

    Returns:
        ``(latents [frames, C, h, w], visible [frames] bool, column [frames] in [-1, 1])``, as :func:`dream_target_labels`.
    """
    import gymnasium as gym

    from neuralsim.actions import keys_to_vector
    from neuralsim.envs.latent import FrameEncoder

    _check_collection(frames, 1, episode_steps, walk, keys)
    session = _tracker_session(model)
    tracker = session.model.reward_model
    own = isinstance(env, str)
    real = gym.make(env, **(env_kwargs or {})) if own else env
    encoder = FrameEncoder(session.model, dtype="float32")
    actions = np.stack([keys_to_vector(k) for k in keys]).astype(np.float32)
    box4 = isinstance(real.action_space, gym.spaces.Box) and real.action_space.shape == (4,)
    real.action_space.seed(seed)
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    obs, _ = real.reset(seed=seed)
    steps = 0
    while len(images) < frames:
        images.append(np.asarray(obs))
        steps += 1
        action = actions[0 if rng.random() < walk else rng.integers(len(keys))] if box4 else real.action_space.sample()
        obs, _, terminated, truncated, _ = real.step(action)
        if terminated or truncated or steps % episode_steps == 0:
            obs, _ = real.reset()
    if own:
        real.close()
    latents = torch.from_numpy(np.concatenate([encoder(np.stack(images[i:i + 256])) for i in range(0, frames, 256)]))
    with torch.no_grad():
        was_training = tracker.training
        position, weight = tracker.eval().measure(latents)  # its range calibration applies in eval mode
        tracker.train(was_training)
    visible = (weight > 0.5) & tracker.in_view(position)
    return latents, visible, _column(tracker, position)


def pretrain_latent_extractor(extractor: torch.nn.Module, model: Any = "default", *, frames: int = 20_000,
                              epochs: int = 8, lr: float = 3e-4, batch_size: int = 128, seed: int = 0,
                              env: Any = None, env_kwargs: dict[str, Any] | None = None,
                              data: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                              latent_source: str = "dynamics") -> dict[str, Any]:
    """Train ``extractor`` (in place) with a linear head to tell, from a latent frame, whether the target is in view
    and at which column, as the model's target tracker says; the head is dropped.

    Args:
        extractor: an SB3 features extractor over latents (``features_dim`` attribute), e.g.
            ``agent.policy.features_extractor`` once the agent is built.
        model: the world model whose tracker labels the frames.
        frames, epochs, lr, batch_size, seed: the data and the Adam schedule; 10 % of the frames are held out.
        env: frames of this pixel env (an id, made with ``env_kwargs``, or an env), labelled by the tracker
            (:func:`env_target_labels`), what an agent that will act there should be taught on; None: frames of the
            model's own dreams (:func:`dream_target_labels`), no env needed. Measured in the room
            (``benchmarks/ppo_observation.py``, one seed each): taught on the room's frames PPO learned the task
            (``latent-measured``), taught on dreams it did in one run of two (``latent-dreamed``).
        data: ``(latents, visible, column)`` already made by :func:`dream_target_labels` (then ``model`` and
            ``frames`` are unused): one dreaming for several extractors.
        latent_source: with ``env=None``, the dreams' latent observations (:func:`dream_target_labels`).

    Returns:
        ``{"frames", "epochs", "visible_share", "visible_accuracy", "column_error", "label_s", "train_s"}``: the held-out
        accuracy of "in view" and the mean column error (in half image widths) where it is in view.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    width = getattr(extractor, "features_dim", None)
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"extractor must be a features extractor with a positive int features_dim, got "
                         f"{type(extractor).__name__}")
    t0 = time.perf_counter()
    if data is not None:
        latents, visible, column = data
    elif env is not None:
        latents, visible, column = env_target_labels(model, env, frames, seed=seed, env_kwargs=env_kwargs)
    else:
        latents, visible, column = dream_target_labels(model, frames, seed=seed, latent_source=latent_source)
    label_s = time.perf_counter() - t0
    if len(latents) < 10:
        raise ValueError(f"pretraining needs at least 10 labelled frames, got {len(latents)}")
    device = next(extractor.parameters()).device
    latents, visible, column = latents.to(device), visible.to(device).float(), column.to(device)
    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(width, 2).to(device)
    with torch.no_grad():  # the head's init from the seed alone, not from torch's global state
        bound = 1 / width ** 0.5
        head.weight.copy_(torch.rand(head.weight.shape, generator=generator) * 2 * bound - bound)
        head.bias.zero_()
    split = max(1, int(0.9 * len(latents)))
    t1 = time.perf_counter()
    out = fit_target_readout(extractor, head, latents, visible, column, split=split, epochs=epochs, lr=lr,
                             batch_size=batch_size, generator=generator)
    seen = visible[split:].bool()
    return {"frames": len(latents), "epochs": epochs, "visible_share": float(visible.mean()),
            "visible_accuracy": float(((out[:, 0] > 0) == seen).float().mean()) if len(out) else None,
            "column_error": float((out[seen, 1] - column[split:][seen]).abs().mean()) if bool(seen.any()) else None,
            "label_s": label_s, "train_s": time.perf_counter() - t1}


def fit_target_readout(extractor: torch.nn.Module, head: torch.nn.Module, inputs: torch.Tensor, visible: torch.Tensor,
                       column: torch.Tensor, *, split: int, epochs: int, lr: float = 3e-4, batch_size: int = 128,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Train ``extractor`` and ``head`` (in place; Adam) to read, from each of the first ``split`` ``inputs``, whether
    the target is in view (``visible``, logit ``[:, 0]``, binary cross-entropy) and its ``column`` (``[:, 1]``, squared
    error where in view); returns the outputs ``[n - split, 2]`` on the rest, the held-out rows. ``generator``: the
    batches' order (None: torch's global generator). Shared by :func:`pretrain_latent_extractor` and
    ``benchmarks/latent_probe.py``."""
    visible = visible.float()
    optimizer = torch.optim.Adam([*extractor.parameters(), *head.parameters()], lr=lr)
    was_training = extractor.training
    extractor.train()
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in torch.randperm(split, generator=generator).split(batch_size):
                out, seen = head(extractor(inputs[idx])), visible[idx]
                loss = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], seen) + \
                    (seen * (out[:, 1] - column[idx]) ** 2).sum() / seen.sum().clamp(min=1)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    extractor.train(was_training)
    with torch.no_grad():
        rows = [head(extractor(inputs[i:i + 512])) for i in range(split, len(inputs), 512)]
    return torch.cat(rows) if rows else inputs.new_zeros(0, 2)


__all__ = ["dream_target_labels", "env_target_labels", "fit_target_readout", "has_target_tracker",
           "pretrain_latent_extractor"]
