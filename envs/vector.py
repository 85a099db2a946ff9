"""``WorldModelVectorEnv``: N dreams in one batched world-model forward (the ``vector_entry_point`` of ``SanaWM-v0``).

    >>> import gymnasium as gym, neuralsim
    >>> envs = gym.make_vec("SanaWM-v0", num_envs=64, vectorization_mode="vector_entry_point")

Every step runs the model once on the whole batch (``[N, C, h, w]`` latent frames), so the cost of
a step is that of one forward at batch N rather than N forwards. Episodes end per env (predicted
termination, or truncation at ``max_episode_steps``) and restart with gymnasium's ``NEXT_STEP``
autoreset: the step after a done returns that env's reset observation with reward 0 and
terminated/truncated False. ``reset(options={"reset_mask": mask})`` restarts only the masked envs.
"""

from __future__ import annotations

import os
from copy import deepcopy
from typing import Any, Sequence

import numpy as np
import torch
from gymnasium import error as gym_error
from gymnasium import logger
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from neuralsim.envs.world_model_env import (RewardFn, decodes_frames, make_session, observation_space, observations,
                                            parse_options)
from neuralsim.session import StartInputs


class WorldModelVectorEnv(VectorEnv):
    """``num_envs`` independent dreams of one world model, stepped in a single batched forward.

    Same model, spaces, options and info as :class:`neuralsim.envs.WorldModelEnv` (see its
    docstring for the spec), batched:

    * ``single_observation_space``: ``Box(0, 255, (H, W, 3), uint8)`` (rgb) or ``Box(float32, (C, h, w))``
      (latent); ``observation_space``: the same with a leading ``num_envs`` axis.
    * ``single_action_space``: the checkpoint's action space; ``action_space``: batched
      (``Box((N, A))`` or ``MultiDiscrete([n] * N)``).
    * ``step(actions)`` -> ``(obs [N, ...], rewards [N] float64, terminated [N] bool, truncated [N] bool,
      info)``; ``info``: ``"step"`` ``[N]`` int, ``"predicted_reward"`` / ``"termination_prob"`` ``[N]``
      float32, ``"frames"`` uint8 ``[N, k, H, W, 3]`` (when decoded), each with a ``"_key"`` mask that
      is False for envs that were autoreset in this step.
    * ``reset(seed=int, options=...)``: one seed for the batch (a ``torch.Generator`` and
      ``np_random`` shared by all envs, so the same seed and actions replay bit-identically at the
      same torch thread count; another ``num_threads`` may change a rare pixel by one level: float
      sums split by thread, see :class:`~neuralsim.envs.WorldModelEnv`'s Starting State).
      Resets of some envs (autoreset, ``reset_mask``) draw their noise from a generator of their
      own, so they do not shift the others' noise: rows never interact.
      ``options``: ``"reset_mask"`` (bool ``[N]``: reset only these envs; the others keep their
      state), ``"image"`` (``(H, W, 3)`` for every reset env, or one per reset env:
      ``(n, H, W, 3)`` / ``(n, T, H, W, 3)``), ``"prompt"`` (str or list of n str), ``"actions"``,
      ``"resize"``.

    Args:
        num_envs: batch size N.
        model, checkpoint, obs_type, latent_source, denoise_steps, max_episode_steps, reward_fn, device, dtype,
            random_weights, num_threads, compile, start_frames, start_descriptions: as
            :class:`~neuralsim.envs.WorldModelEnv`.
        render_mode: ``None`` or ``"rgb_array"`` (``render()`` returns a tuple of N frames).
        return_frames: put the decoded chunks in ``info["frames"]`` (rgb obs decode them anyway).

    Example:
        >>> import neuralsim
        >>> from neuralsim.envs import WorldModelVectorEnv
        >>> envs = WorldModelVectorEnv(16, model="default")
        >>> obs, info = envs.reset(seed=0)
        >>> obs.shape
        (16, 64, 64, 3)
        >>> obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        model: Any = "default",
        *,
        checkpoint: str | os.PathLike | None = None,
        obs_type: str = "rgb",
        latent_source: str = "dynamics",
        denoise_steps: int | None = None,
        max_episode_steps: int | None = 200,
        reward_fn: RewardFn | None = None,
        render_mode: str | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "auto",
        random_weights: bool = False,
        return_frames: bool = True,
        num_threads: int | str | None = "auto",
        compile: bool = False,
        start_frames: np.ndarray | None = None,
        start_descriptions: Sequence[str] | None = None,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs <= 0:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool) or not isinstance(
                max_episode_steps, (int, np.integer)) or max_episode_steps <= 0):
            raise ValueError(f"max_episode_steps must be a positive int or None (no limit), got {max_episode_steps!r}")
        if reward_fn is not None and not callable(reward_fn):
            raise TypeError(f"reward_fn must be callable(obs, action, next_obs, info) -> float, got {type(reward_fn).__name__}")
        self.session = make_session(model, checkpoint=checkpoint, obs_type=obs_type, latent_source=latent_source,
                                    denoise_steps=denoise_steps, device=device, dtype=dtype,
                                    random_weights=random_weights, num_threads=num_threads, compile=compile,
                                    batch_size=int(num_envs), start_frames=start_frames,
                                    start_descriptions=start_descriptions)
        self.obs_type, self.latent_source = obs_type, latent_source
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.reward_fn = reward_fn
        self.return_frames = bool(return_frames)
        # the views a prompt draws around the start show only in decoded frames (neuralsim.model.WorldModel.init_state)
        # a termination detector judges the frames an env decodes anyway (dynamics latents: the reward model's ending)
        self._decode = self.return_frames or decodes_frames(obs_type, latent_source) or render_mode is not None
        self.session.draw_views = self.session.judge_frames = self._decode
        self.single_observation_space = observation_space(self.session, obs_type)
        self.single_action_space = self.session.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        self._state: Any = None
        self._generator: torch.Generator | None = None
        self._obs: np.ndarray | None = None
        self._frames: np.ndarray | None = None  # last rgb frame per env [N, H, W, 3]
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self._autoreset = np.zeros(self.num_envs, dtype=np.bool_)

    @property
    def model(self) -> Any:
        """The world model (``WorldModel`` or ``SanaWMBackend``)."""
        return self.session.model

    @property
    def config(self) -> Any:
        return self.session.config

    # -------------------------------------------------------------------- reset

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Reset all envs (or only ``options["reset_mask"]``); returns ``(obs [N, ...], info)``."""
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an int or None (one seed for the whole batch), got {type(seed).__name__}")
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
        # Everything is validated before super().reset reseeds np_random: a rejected reset changes nothing.
        options = dict(options or {})
        mask = self._check_reset_mask(options.pop("reset_mask", None))
        n = int(mask.sum())
        parsed = parse_options(self.session, options, n)
        if seed is not None:
            super().reset(seed=int(seed))  # sets self._np_random
        full = bool(mask.all())
        if full or seed is not None or self._generator is None:
            generator = start_generator = self.session.generator(self.np_random)
        else:  # a partial reset draws its noise apart, so the other envs' noise stream is untouched
            generator, start_generator = self._generator, self.session.generator(self.np_random)
        new_state, rgb, start_info = self.session.start(n, start_generator, parsed, rng=self.np_random)
        obs = observations(self.obs_type, self.latent_source, self.session, new_state.latent, rgb)
        if full:
            self._state = new_state
            self._obs, self._frames = obs, rgb
        else:
            self._state = self.session.merge(self._state, mask, new_state)
            self._obs, self._frames = self._obs.copy(), self._frames.copy()
            self._obs[mask], self._frames[mask] = obs, rgb
        self._generator = generator
        self._steps[mask] = 0
        self._autoreset[mask] = False
        start_index = np.full(self.num_envs, -1, dtype=np.int64)
        start_index[mask] = start_info["start_index"]
        prompts = np.full(self.num_envs, "", dtype=object)
        prompts[mask] = start_info["prompt"]
        info = {"step": self._steps.copy(), "_step": mask.copy(), "start_index": start_index, "_start_index": mask.copy(),
                "prompt": prompts, "_prompt": mask.copy()}
        return self._obs.copy(), info

    def _check_reset_mask(self, mask: Any) -> np.ndarray:
        if mask is None:
            return np.ones(self.num_envs, dtype=np.bool_)
        if not isinstance(mask, np.ndarray):
            raise TypeError(f"options['reset_mask'] must be a numpy array, got {type(mask).__name__}")
        if mask.shape != (self.num_envs,):
            raise ValueError(f"options['reset_mask'] must have shape ({self.num_envs},), got {mask.shape}")
        if mask.dtype != np.bool_:
            raise TypeError(f"options['reset_mask'] must have dtype=np.bool_, got {mask.dtype}")
        if not mask.any():
            raise ValueError(f"options['reset_mask'] must contain at least one True value, got {mask}")
        if self._state is None and not mask.all():
            raise gym_error.ResetNeeded("options['reset_mask'] resets some envs of a running batch; call reset() "
                                        "without a mask first")
        return mask

    # -------------------------------------------------------------------- step

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Step all envs in one batched forward (NEXT_STEP autoreset of the envs done in the last step)."""
        if self._state is None:
            raise gym_error.ResetNeeded("WorldModelVectorEnv.step() called before reset(); call envs.reset(seed=...) first")
        valid = self.session.check_actions(actions, self.num_envs, name="actions")
        # Snapshot the RNGs so that an error anywhere below leaves the batch exactly as it was.
        gen_state = self._generator.get_state()
        np_state = deepcopy(self.np_random.bit_generator.state)
        try:
            return self._step(valid)
        except BaseException:
            self._generator.set_state(gen_state)
            self.np_random.bit_generator.state = np_state
            raise

    def _step(self, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        session = self.session
        out = session.step(self._state, valid, self._generator, decode=self._decode)
        state, frames = out.state, out.frames
        rgb = self._frames if frames is None else frames[:, -1]
        obs = np.ascontiguousarray(observations(self.obs_type, self.latent_source, session, out.latent, rgb))
        steps = self._steps + 1
        terminated = out.termination_prob > 0.5
        truncated = steps >= self.max_episode_steps if self.max_episode_steps is not None else np.zeros_like(terminated)
        stepped = ~self._autoreset
        info: dict[str, Any] = {
            "predicted_reward": out.reward, "_predicted_reward": stepped.copy(),
            "termination_prob": out.termination_prob, "_termination_prob": stepped.copy(),
        }
        if frames is not None and self.return_frames:
            info["frames"], info["_frames"] = frames, stepped.copy()
        if self.reward_fn is None:
            rewards = out.reward.astype(np.float64)
        else:
            rewards = np.zeros(self.num_envs, dtype=np.float64)
            for i in np.flatnonzero(stepped):
                env_info = {key: value[i] for key, value in info.items() if not key.startswith("_")}
                env_info["step"] = int(steps[i])
                action = valid[i] if session.action_spec["type"] == "box" else int(valid[i])
                value = self.reward_fn(self._obs[i], action, obs[i], env_info)
                try:
                    rewards[i] = float(value)
                except (TypeError, ValueError):
                    raise TypeError(f"reward_fn must return a float, got {type(value).__name__}") from None

        if self._autoreset.any():  # NEXT_STEP: the envs done last step restart now, reward 0, not done
            mask = self._autoreset
            new_state, new_rgb, _ = session.start(int(mask.sum()), session.generator(self.np_random), StartInputs(),
                                                  rng=self.np_random)
            new_obs = observations(self.obs_type, self.latent_source, session, new_state.latent, new_rgb)
            state = session.merge(state, mask, new_state)
            obs, rgb = obs.copy(), rgb.copy()
            obs[mask], rgb[mask] = new_obs, new_rgb
            rewards[mask] = 0.0
            terminated[mask] = False
            truncated[mask] = False
            steps[mask] = 0
        info["step"], info["_step"] = steps.copy(), np.ones(self.num_envs, dtype=np.bool_)

        self._state, self._obs, self._frames, self._steps = state, np.ascontiguousarray(obs), rgb, steps
        self._autoreset = terminated | truncated
        return self._obs.copy(), rewards, terminated.copy(), truncated.copy(), info

    # -------------------------------------------------------------------- render / close

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode is None:
            logger.warn("render() called without a render_mode; pass render_mode='rgb_array'")
            return None
        if self._frames is None:
            return tuple(np.zeros((*self.session.image_size, 3), np.uint8) for _ in range(self.num_envs))
        return tuple(frame.copy() for frame in self._frames)

    def close_extras(self, **kwargs: Any) -> None:
        self._state = None
