"""``SanaWM-v0``: a Gymnasium environment whose dynamics are a learned latent world model (a dream).

The env serves a ``neuralsim.WorldModel`` checkpoint (or the official SANA-WM through
``neuralsim.sana_wm.SanaWMBackend``) through a :class:`neuralsim.session.DreamSession`: ``reset`` encodes a
start frame (or generates one from a prompt) into the model's constant-size streaming state, every ``step``
denoises the next latent frame conditioned on the action and commits it, and the decoder turns it back into
pixels. This module holds the Gymnasium side only: spaces, ``reset`` / ``step`` / ``render``, the reset
options; :class:`neuralsim.envs.vector.WorldModelVectorEnv` shares its helpers at batch N.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from neuralsim.device import bf16_is_native, resolve_dtype  # noqa: F401  (re-exported)
from neuralsim.session import DreamSession, StartInputs

#: Finite bound of the latent observation Box (normalised latents are O(1); the sampler clamps far below).
LATENT_BOUND = 1e4
RESET_OPTION_KEYS = ("image", "prompt", "actions", "resize")
#: Where a latent observation comes from (``obs_type="latent"``): ``"dynamics"``, the latent frame the dynamics
#: committed (nothing decoded: the fast path); ``"frames"``, the step's decoded frame (with the frame memory's
#: correction) encoded again, as :class:`neuralsim.envs.latent.LatentObservation` encodes a real frame (a decode and an
#: encode per step). Policies trained on "dynamics" latents did not transfer to the room; on "frames" they rank as the
#: room does (docs/performance.md, section 13).
LATENT_SOURCES = ("dynamics", "frames")

RewardFn = Callable[[np.ndarray, Any, np.ndarray, dict], float]


# ----------------------------------------------------------------------------------------------
# Helpers shared with the vector env
# ----------------------------------------------------------------------------------------------


def make_session(model: Any, *, obs_type: str, latent_source: str = "dynamics", start_frames: Any = None,
                 start_descriptions: Any = None, **kwargs: Any) -> DreamSession:
    """The env's :class:`~neuralsim.session.DreamSession` (``obs_type`` and ``latent_source`` checked first: they are
    the env's own), its start set replaced by ``start_frames`` (and ``start_descriptions``) when given."""
    if obs_type not in ("rgb", "latent"):
        raise ValueError(f"obs_type must be 'rgb' or 'latent', got {obs_type!r}")
    if latent_source not in LATENT_SOURCES:
        raise ValueError(f"latent_source must be one of {', '.join(map(repr, LATENT_SOURCES))}, got {latent_source!r}")
    if start_frames is None and start_descriptions is not None:
        raise ValueError("start_descriptions describe start_frames; pass start_frames too")
    session = DreamSession(model, **kwargs)
    if start_frames is not None:
        session.set_start_set(start_frames, start_descriptions)
    return session


def decodes_frames(obs_type: str, latent_source: str) -> bool:
    """Whether every step's frame is decoded for the observation (rgb, or latents encoded from the frames)."""
    return obs_type == "rgb" or latent_source == "frames"


def observation_space(session: DreamSession, obs_type: str) -> spaces.Box:
    """``Box(0, 255, (H, W, 3), uint8)`` (rgb) or ``Box(-LATENT_BOUND, LATENT_BOUND, (C, h, w), float32)`` (latent)."""
    if obs_type == "rgb":
        return spaces.Box(0, 255, (*session.image_size, 3), np.uint8)
    return spaces.Box(-LATENT_BOUND, LATENT_BOUND, session.latent_shape, np.float32)


def latent_obs(latent: torch.Tensor) -> np.ndarray:
    """A latent observation: ``[B, C, h, w]`` float32, clipped to ``±LATENT_BOUND``."""
    return latent.float().clamp(-LATENT_BOUND, LATENT_BOUND).cpu().numpy().astype(np.float32)


@torch.inference_mode()
def encoded_obs(session: DreamSession, frames: np.ndarray) -> np.ndarray:
    """Latent observations of rgb frames uint8 ``[B, H, W, 3]`` at the model's size: each frame encoded alone (the
    first-frame latent of ``WorldModel.encode``) in the session's precision, as :func:`latent_obs` -> ``[B, C, h, w]``."""
    with session.autocast():
        latents = session.model.encode(torch.from_numpy(np.ascontiguousarray(frames)[:, None]).to(session.device))
    return latent_obs(latents[:, 0])


def observations(obs_type: str, latent_source: str, session: DreamSession, latent: torch.Tensor,
                 rgb: np.ndarray | None) -> np.ndarray:
    """The env's observations of a batch: the frames ``rgb``, the committed ``latent`` or the frames encoded."""
    if obs_type == "rgb":
        return rgb
    return encoded_obs(session, rgb) if latent_source == "frames" else latent_obs(latent)


def parse_options(session: DreamSession, options: dict | None, batch_size: int) -> StartInputs:
    """Validate reset options for ``batch_size`` envs (errors name ``options['...']``) -> checked start inputs.

    ``image``: ``(H, W, 3)`` or ``(T, H, W, 3)`` (a context clip); for batches also one per env ``(n, H, W, 3)`` /
    ``(n, T, H, W, 3)``. ``prompt``: str or list of n str. ``actions``: between the clip's latent frames.
    ``resize``: a bool (``True``: the model's recorded mode) or ``"pad"`` / ``"crop"`` / ``"squash"``.
    """
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict or None, got {type(options).__name__}")
    unknown = sorted(set(options) - set(RESET_OPTION_KEYS))
    if unknown:
        raise ValueError(f"options has unknown keys {unknown}; expected some of {list(RESET_OPTION_KEYS)}")
    resize = options.get("resize", False)
    if not isinstance(resize, (bool, np.bool_)) and not (isinstance(resize, str) and resize in ("pad", "crop", "squash")):
        raise TypeError(f"options['resize'] must be a bool or one of 'pad', 'crop', 'squash', got "
                        f"{type(resize).__name__} {repr(resize)[:60]}")
    if resize is True or isinstance(resize, np.bool_) and resize:
        resize = session.resize_mode
    return session.check_start(batch_size, image=options.get("image"), prompt=options.get("prompt"),
                               actions=options.get("actions"), resize=resize or False,
                               max_ndim=4 if batch_size == 1 else 5, names="options[{!r}]")


# ----------------------------------------------------------------------------------------------
# The env
# ----------------------------------------------------------------------------------------------


class WorldModelEnv(gym.Env):
    """A dream: a learned latent world model (SANA-WM's architecture) as a Gymnasium environment.

    ## Description

    The dynamics, the pixels, the reward and the end of an episode all come from a world model
    trained on video and actions of a real environment (by default the MuJoCo room of
    ``NeuralSimRoom-v0``; any checkpoint from ``neuralsim train`` works). ``reset`` encodes a start
    frame into the model's constant-size streaming state (or generates the first frame from a text
    prompt); every ``step`` denoises the next latent frame (``frames_per_latent`` video frames, the
    action held for all of them, like Atari frame-skip) in ``denoise_steps`` Euler steps, commits it
    to the state and decodes it. Memory and time per step do not grow with the episode length.

    ## Action Space

    The action space stored in the checkpoint (the world the model learned). For the camera worlds
    of the default model: ``Box(-1.0, 1.0, (4,), float32)``, the canonical camera action
    ``[forward, strafe_right, yaw_right, pitch_up]``; Discrete key-set worlds use
    ``Discrete(11)`` (:data:`neuralsim.actions.DISCRETE_KEYSETS`). ``env.unwrapped.step_keys("w-8,l-16")``
    drives either with SANA-WM's key DSL (one action per env step of ``frames_per_latent`` frames).

    ## Observation Space

    ``obs_type="rgb"`` (default): ``Box(0, 255, (H, W, 3), uint8)``, the last decoded frame of the
    step, ``(H, W) = config.image_size`` (64×64 for the default model). ``obs_type="latent"``:
    ``Box(-1e4, 1e4, (C, h, w), float32)``, a normalised latent frame (``C = latent_channels``,
    ``h, w = H, W / spatial_stride``): with ``latent_source="dynamics"`` (default) the latent frame the
    dynamics committed, nothing decoded unless ``render_mode`` is set (the fast path); with
    ``latent_source="frames"`` the step's decoded frame, with the frame memory's correction, encoded
    again, as :class:`~neuralsim.envs.latent.LatentObservation` encodes a real env's frame (a decode and an
    encode per step). Policies trained on the dynamics' latents did not transfer to the real room;
    trained on the frames' they did (README, "Latent observations").

    ``info`` of ``step``: ``"frames"`` (uint8 ``[k, H, W, 3]``, the decoded chunk of the step, when
    decoded), ``"step"`` (int, steps since reset), ``"model"`` (str), ``"predicted_reward"`` (float,
    the model's reward prediction), ``"termination_prob"`` (float). ``info`` of ``reset``: ``"step"`` (0),
    ``"model"``, ``"prompt"`` (str, empty if none), ``"start_index"`` (int index in the start set, -1
    if the start came from ``options``).

    ## Rewards

    The model's reward prediction, trained on the real env's rewards: its reward model
    (:mod:`neuralsim.reward`, added by ``neuralsim train reward``) when the checkpoint has one, else
    the dynamics' reward head; or ``reward_fn(obs, action, next_obs, info) -> float`` when given
    (``info`` holds the predicted reward). The shipped ``default`` model has a target tracker
    (:class:`~neuralsim.reward.TargetTracker`) for the room's default task: it locates the ball and the
    agent's place in the room in the start frame and pays ``10 ×`` the distance the camera's own motion
    closes toward the ball (the room's walls stop that motion, as in the room), plus the success bonus
    (10) on the step the episode ends (predicted success: ``termination_prob > 0.5``).
    A checkpoint may instead have a recurrent net over the latent frames (``--reward-kind recurrent``).

    ## Starting State

    ``reset(seed, options)``: ``options={"image": uint8 (H, W, 3) or (T, H, W, 3)}`` starts from
    that frame or clip (T = 1 + m·k; ``"actions"``: the m actions between its latent frames;
    ``"resize": True`` resizes a differently sized image the way the model's training frames were,
    ``provenance["resize"]``: ``"pad"``, ``"crop"`` or ``"squash"``, or name the mode), ``{"prompt": str}`` generates the first
    frame from text (text-conditioned models), both together condition the image start on the
    prompt. Without either, a frame is drawn with ``self.np_random`` from the start set: the checkpoint's
    (real frames, with their descriptions as prompt when the model is text-conditioned), or ``start_frames``
    when given (e.g. first frames of *your* task's env, so the dream's episodes start as the real ones). With a prompt, a
    model with a view generator (the shipped one) also draws the views turned ±90° and 180° from the start and its
    frame memory shows them when the camera turns there (rgb observations or a ``render_mode`` only). All
    sampling noise comes from a ``torch.Generator`` seeded from ``self.np_random`` in ``reset``:
    the same seed and actions give bit-identical frames on a CPU *at the same torch thread count*.
    Another ``num_threads`` may change a rare pixel by one level (measured: the shipped model, a
    4-env batch, 6 steps, 1 vs 2 threads: 6 pixels in a million differ, by 1/255): MKL's matmuls and
    ATen's reductions split their sums by thread, and float addition is not associative (the
    difference stays with oneDNN disabled). Pin ``num_threads`` (or ``OMP_NUM_THREADS``) to reproduce a run.

    ## Episode End

    Terminated when the model's predicted termination probability exceeds 0.5. Truncated after
    ``max_episode_steps`` steps (default 200). ``WorldModelEnv(...)`` truncates itself;
    ``gym.make("SanaWM-v0", max_episode_steps=N)`` leaves it to gymnasium's ``TimeLimit`` (200 unless
    N is given), as for any registered env, so ``env.spec.max_episode_steps`` is the limit.

    ## Arguments

    ```python
    >>> import gymnasium as gym
    >>> import neuralsim
    >>> env = gym.make("SanaWM-v0", render_mode="rgb_array")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, obs.dtype
    ((64, 64, 3), dtype('uint8'))
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> info["frames"].shape[1:], info["step"]
    ((64, 64, 3), 1)
    >>> env.close()

    ```

    * ``model``: a shipped model name (``"default"``), a checkpoint directory (``config.json`` +
      ``model.safetensors`` [+ ``start_frames.safetensors``]), a ``WorldModel`` instance, or
      ``"sana-wm-2.6b"`` (the official SANA-WM through diffusers; needs the ``[sana]`` extra).
    * ``checkpoint``: for ``model="sana-wm-2.6b"``, the directory of its diffusers-format weights.
    * ``obs_type``: ``"rgb"`` or ``"latent"``.
    * ``latent_source``: where latent observations come from, ``"dynamics"`` (default) or ``"frames"``
      (see Observation Space; unused with rgb observations).
    * ``denoise_steps``: Euler steps per latent frame (default: the model's).
    * ``max_episode_steps``: truncation limit (default 200; None: no limit).
    * ``start_frames``: uint8 ``(N, H, W, 3)``, the start set resets draw from instead of the checkpoint's
      (resized to the model's size if needed); ``start_descriptions``: their N descriptions (the prompts of a
      text-conditioned model; default none).
    * ``reward_fn``: ``callable(obs, action, next_obs, info) -> float`` replacing the model's reward prediction.
    * ``render_mode``: ``None``, ``"rgb_array"`` (``render()`` returns the last frame) or
      ``"human"`` (a pygame window; needs the ``[play]`` extra).
    * ``device``: ``"cpu"`` (default) or ``"cuda"``.
    * ``dtype``: ``"auto"`` (bf16 autocast only where bf16 is native: CUDA or AVX512-BF16/AMX CPUs;
      fp32 elsewhere, and fp32 for this single env on a CPU, where bf16 is slower at batch 1; the vector
      env picks bf16 from ``neuralsim.device.AUTO_BF16_MIN_BATCH_CPU`` envs), ``"float32"``, ``"bfloat16"``.
    * ``random_weights``: build the named preset (``"default"``, ``"tiny"``, ...) or the official
      architecture with random weights (timing, plumbing).
    * ``num_threads``: torch CPU threads (process-wide). ``"auto"`` (default): ``NEURALSIM_NUM_THREADS``
      if set; else, unless ``OMP_NUM_THREADS`` is set, lower torch's count to half the CPUs (1 to 4),
      which keeps a busy 2-core laptop fast; an int sets it; ``None`` leaves torch alone
      (:func:`neuralsim.runtime.apply_thread_policy`).
    * ``compile``: run the native model's per-frame pass through ``torch.compile``
      (``WorldModel.compile_streaming``; off by default): the first step compiles (15-60 s, less once inductor's
      on-disk cache holds the code; needs a C++ compiler), later steps of a single env run about 1.5x faster (16 envs: up to 1.1x; 64: none)
      (README "Performance"); the same seed still gives the same rollout, within float rounding of eager.

    ## Version History

    * v0: initial version.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 15}

    def __init__(
        self,
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
        num_threads: int | str | None = "auto",
        compile: bool = False,
        start_frames: np.ndarray | None = None,
        start_descriptions: Sequence[str] | None = None,
    ) -> None:
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
                                    batch_size=1, start_frames=start_frames, start_descriptions=start_descriptions)
        self.obs_type, self.latent_source = obs_type, latent_source
        self.render_mode = render_mode
        self._decode = decodes_frames(obs_type, latent_source) or render_mode is not None
        # the views a prompt draws around the start show only in decoded frames (neuralsim.model.WorldModel.init_state);
        # a termination detector judges the frames an env decodes anyway (dynamics latents: the reward model's ending)
        self.session.draw_views = self.session.judge_frames = self._decode
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self._limit_owner: str | None = None  # "env" or "TimeLimit", decided at the first reset
        self.reward_fn = reward_fn
        self.observation_space = observation_space(self.session, obs_type)
        self.action_space = self.session.action_space
        self._state: Any = None
        self._generator: torch.Generator | None = None
        self._obs: np.ndarray | None = None
        self._frame: np.ndarray | None = None  # last rgb frame, for render()
        self._steps = 0
        self._needs_reset = True
        self._warned_done = False
        self._window: Any = None
        self._clock: Any = None

    # -------------------------------------------------------------------- properties

    @property
    def model(self) -> Any:
        """The world model (``WorldModel`` or ``SanaWMBackend``)."""
        return self.session.model

    @property
    def config(self) -> Any:
        return self.session.config

    @property
    def frames_per_step(self) -> int:
        return self.session.frames_per_step

    # -------------------------------------------------------------------- gym API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        # Options first: a rejected reset must not reseed np_random (the next valid reset() continues as if
        # the failed call never happened), then the usual super().reset(seed=seed).
        parsed = parse_options(self.session, options, 1)
        super().reset(seed=seed)
        if self.spec is not None and self._limit_owner is None:
            # Made by gym.make from an id with a registered limit: gymnasium's TimeLimit (200, or gym.make's
            # max_episode_steps=N; -1 = none) truncates, so this env does not cut episodes itself.
            registered = gym.registry.get(self.spec.id)
            self._limit_owner = "TimeLimit" if registered is not None and registered.max_episode_steps else "env"
            if self._limit_owner == "TimeLimit":
                self.max_episode_steps = None
        generator = self.session.generator(self.np_random)
        state, rgb, start_info = self.session.start(1, generator, parsed, rng=self.np_random)
        self._state, self._generator = state, generator
        self._obs, self._frame = observations(self.obs_type, self.latent_source, self.session, state.latent, rgb)[0], rgb[0]
        self._steps, self._needs_reset, self._warned_done = 0, False, False
        if self.render_mode == "human":
            self._render_human()
        info = {"step": 0, "model": self.session.model_name, "prompt": start_info["prompt"][0],
                "start_index": int(start_info["start_index"][0])}
        return self._obs.copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self._step(action, decode=self._decode)

    def _step(self, action: Any, *, decode: bool) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._state is None:
            raise gym.error.ResetNeeded("WorldModelEnv.step() called before reset(); call env.reset(seed=...) first")
        if self._needs_reset and not self._warned_done:
            gym.logger.warn("step() called after the episode ended (terminated or truncated); the dream goes on, "
                            "but call env.reset() to start a new episode")
            self._warned_done = True
        actions = self.session.check_actions(action, 1, name="action", single=True)
        # Nothing is committed until the step (model and reward_fn) succeeded: an error leaves the episode as it was.
        gen_state = self._generator.get_state()
        try:
            out = self.session.step(self._state, actions, self._generator, decode=decode)
            frame = None if out.frames is None else out.frames[:, -1]
            obs = np.ascontiguousarray(observations(self.obs_type, self.latent_source, self.session, out.latent, frame)[0])
            term_prob = float(out.termination_prob[0])
            info: dict[str, Any] = {"step": self._steps + 1, "model": self.session.model_name,
                                    "predicted_reward": float(out.reward[0]), "termination_prob": term_prob}
            if out.frames is not None:
                info["frames"] = out.frames[0]
            if self.reward_fn is None:
                reward = info["predicted_reward"]
            else:
                user_action = actions[0] if self.session.action_spec["type"] == "box" else int(actions[0])
                reward = self._user_reward(self._obs, user_action, obs, info)
        except BaseException:
            self._generator.set_state(gen_state)
            raise
        self._state, self._obs = out.state, obs
        if out.frames is not None:
            self._frame = out.frames[0, -1]
        self._steps += 1
        terminated = term_prob > 0.5
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        self._needs_reset = terminated or truncated
        if self.render_mode == "human":
            self._render_human()
        return self._obs.copy(), reward, terminated, truncated, info

    def _user_reward(self, obs: Any, action: Any, next_obs: Any, info: dict) -> float:
        value = self.reward_fn(obs, action, next_obs, info)  # type: ignore[misc]
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"reward_fn must return a float, got {type(value).__name__}") from None

    def step_keys(self, keys: str) -> tuple[np.ndarray, float, bool, bool, dict, list[np.ndarray]]:
        """Drive a camera (or Discrete key-set) world with SANA-WM's key DSL.

        One action per env step: ``"w-8"`` at ``frames_per_latent=8`` is one step forward; a segment
        shorter than a step is held for the whole step (the key set of each step's first frame).
        Stops early when the episode ends.

        Args:
            keys: e.g. ``"w-16,l-8"`` (w/s forward/back, a/d strafe, j/l yaw, i/k pitch, ``none-N`` idle).

        Returns:
            ``(obs, reward, terminated, truncated, info, frames)`` of the last step, with ``frames`` the
            list of all decoded ``[H, W, 3]`` frames of the steps taken.
        """
        actions = self.session.keys_to_actions(keys)
        if self.session.action_spec["type"] == "box":
            low, high = self.action_space.low, self.action_space.high  # type: ignore[attr-defined]
            actions = np.clip(actions, low, high)
        frames: list[np.ndarray] = []
        result: tuple = ()
        for a in actions:
            result = self._step(a if self.session.action_spec["type"] == "box" else int(a), decode=True)
            frames.extend(list(result[4]["frames"]))
            if result[2] or result[3]:
                break
        return (*result, frames)  # type: ignore[return-value]

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' to gym.make")
            return None
        if self._frame is None:
            return None if self.render_mode == "human" else np.zeros((*self.session.image_size, 3), np.uint8)
        if self.render_mode == "rgb_array":
            return self._frame.copy()
        self._render_human()
        return None

    def _render_human(self) -> None:
        from neuralsim.runtime import quiet_headless_sdl

        quiet_headless_sdl()  # no SDL "XDG_RUNTIME_DIR is invalid" / ALSA noise headless; hides the banner
        try:
            import pygame
        except ImportError as exc:
            raise gym.error.DependencyNotInstalled('render_mode="human" needs pygame: '
                                                   'pip install "neuralsim[play]"') from exc
        if self._frame is None:
            return
        h, w = self.session.image_size
        scale = max(1, 512 // max(h, w))
        if self._window is None:
            pygame.display.init()  # display only: no audio or other subsystems
            self._window = pygame.display.set_mode((w * scale, h * scale))
            pygame.display.set_caption(f"neuralsim dream: {self.session.model_name}")
            self._clock = pygame.time.Clock()
        surface = pygame.surfarray.make_surface(np.repeat(np.repeat(self._frame, scale, 0), scale, 1).swapaxes(0, 1))
        self._window.blit(surface, (0, 0))
        pygame.event.pump()
        pygame.display.flip()
        self._clock.tick(self.metadata["render_fps"])

    def close(self) -> None:
        if self._window is not None:
            import pygame

            pygame.display.quit()
            self._window = None
        self._state = None
        super().close()
