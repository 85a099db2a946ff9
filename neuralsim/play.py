"""``neuralsim play``: drive a dream live with the keyboard, record it, replay it with ``neuralsim rollout``.

A pygame window (extra ``[play]``) shows the dream at ``--scale`` with a step counter, frames/s and the
model's predicted reward and termination. When the checkpoint records the Gymnasium env it learned
(``config.provenance["env_id"]``, e.g. ``NeuralSimRoom-v0``), the real env runs beside the dream: each
episode starts both from the real env's reset frame and sends them the same actions.

Keys (held keys combine; one env step holds its action for ``frames_per_latent`` frames)::

    camera worlds     w/s forward/back   a/d strafe   i/k pitch up/down   j/l yaw left/right
    Discrete worlds   number keys 0-9 select the action (key-set worlds also take the letters above)
    other Box worlds  arrows: left/right = dimension 0, down/up = dimension 1
    r reset   space/p pause   n or . single step (paused)   t cycle denoise steps   v real view   esc/q quit

Replay: every episode's actions are logged as a key-DSL string (``"w-24,jw-8"``), and play samples
exactly as ``neuralsim rollout`` does (episode ``e`` draws its noise from ``seed + e`` and its start
frame from ``np.random.default_rng(seed)``), so ``neuralsim rollout --seed S --start-index I --actions LOG``
reproduces the frames bit for bit. :class:`Player` is the loop, split for tests: :meth:`Player.step`
(held keys -> one env step), :meth:`Player.handle_event` (pygame events), :meth:`Player.tick` (one
iteration of the window loop) and :meth:`Player.run`.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
from collections import deque
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from neuralsim import actions as act

logger = logging.getLogger(__name__)

INSTALL_HINT = 'neuralsim play needs pygame: pip install -c constraints.txt "neuralsim[play]"'
VIDEO_SUFFIXES = (".mp4", ".gif")
SCREENSHOT_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tga")
NUMBER_KEYS = tuple("0123456789")
#: pygame key name -> command; none of them is an action key (wasdijkl, digits, arrows).
CONTROL_KEYS = {"r": "reset", "space": "pause", "p": "pause", "n": "step", ".": "step", "t": "denoise",
                "v": "view", "escape": "quit", "q": "quit"}
HELP_LINE = "r reset  space pause  n step  t denoise  v real  esc quit"


class NoDisplayError(RuntimeError):
    """SDL could not open a window (no X11/Wayland display, or only its offscreen fallback)."""


def import_pygame() -> Any:
    """pygame, imported only when a window is needed; ImportError with the install hint otherwise."""
    from neuralsim.runtime import quiet_headless_sdl

    quiet_headless_sdl()  # no SDL "XDG_RUNTIME_DIR is invalid" / ALSA noise headless; hides the banner
    try:
        import pygame
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    return pygame


# ---------------------------------------------------------------------------------------------- keys


def action_kind(spec: dict) -> str:
    """``"camera"`` (Box(4) canonical camera actions, driven by the key DSL), ``"discrete"`` or ``"box"``.

    Same criterion as ``neuralsim rollout --actions``: a 4-dim Box is a camera world.
    """
    if spec["type"] == "discrete":
        return "discrete"
    return "camera" if act.action_dim(spec) == act.CAMERA_ACTION_DIM else "box"


def keys_to_action(held: Sequence[str], spec: dict) -> np.ndarray | int:
    """Held keys (pygame key names, most recently pressed last) -> one action of the space ``spec``.

    Camera worlds: ``wasdijkl`` through :func:`neuralsim.actions.keys_to_vector`. Discrete worlds: the most
    recent number key below ``n``, else the held letters' key set in :data:`~neuralsim.actions.DISCRETE_KEYSETS`
    (else the most recent letter alone), else action 0 (idle). Other Box worlds: arrows push dimension 0
    (left/right) and 1 (down/up) to ±1 clipped to the bounds; everything else stays at 0 (clipped).
    """
    held = list(held)
    letters = [k for k in held if k in act.ALLOWED_KEYS]
    kind = action_kind(spec)
    if kind == "camera":
        return act.keys_to_vector(letters)
    if kind == "discrete":
        n, start = int(spec["n"]), int(spec.get("start", 0))
        for key in reversed(held):
            if key in NUMBER_KEYS and int(key) < n:
                return start + int(key)
        index = act.keyset_index(act.DISCRETE_KEYSETS[:n])
        for keys in (frozenset(letters), frozenset(letters[-1:])):
            if keys and keys in index:
                return start + index[keys]
        return start
    low, high = act.box_bounds(spec)
    vector = np.clip(np.zeros_like(low), low, high)
    for dim, negative, positive in ((0, "left", "right"), (1, "down", "up")):
        if dim < len(vector) and (positive in held) != (negative in held):
            vector[dim] = np.clip(1.0 if positive in held else -1.0, low[dim], high[dim])
    return vector.reshape(tuple(spec["shape"]))


def action_keys(action: Any, spec: dict) -> str | None:
    """The key set of one action for the key-DSL log (``""`` = idle), or None where the DSL cannot say it."""
    kind = action_kind(spec)
    if kind == "camera":
        vector = np.asarray(action, np.float32).reshape(-1)
        keys = act.vector_to_keys(vector)
        return keys if np.array_equal(act.keys_to_vector(keys), vector) else None
    if kind == "discrete" and int(spec.get("start", 0)) == 0 and 0 <= int(action) < len(act.DISCRETE_KEYSETS):
        return act.DISCRETE_KEYSETS[int(action)]
    return None


def keys_to_dsl(keys_per_step: Sequence[str], frames_per_step: int) -> str:
    """Per-step key sets -> the key-DSL string that ``neuralsim rollout --actions`` turns back into them.

    Each step is ``frames_per_step`` frames of its keys (rollout keeps every ``frames_per_step``-th frame).
    """
    if not keys_per_step:
        return ""
    vectors = act.keysets_to_vectors(keys_per_step)
    return act.vectors_to_action_string(np.repeat(vectors, frames_per_step, axis=0))


# ---------------------------------------------------------------------------------------------- outputs


class VideoRecorder:
    """Streams uint8 ``[H, W, 3]`` frames to FILE.mp4 (imageio-ffmpeg) or FILE.gif (Pillow).

    Frames go to a hidden temporary file beside ``path``; :meth:`close` finalises it and moves it into
    place atomically, so the file is valid whenever the session ends (window closed, Ctrl-C, an error).
    """

    def __init__(self, path: str | os.PathLike, fps: int = 15) -> None:
        self.path = Path(path)
        self.suffix = self.path.suffix.lower()
        if self.suffix not in VIDEO_SUFFIXES:
            raise ValueError(f"record path {str(self.path)!r} must end with .mp4 or .gif")
        self.fps, self.frames, self._closed = int(fps), 0, False
        from neuralsim.checkpoints import StagedFile

        self._staged = StagedFile(self.path, suffix=self.suffix)  # the writer picks the format by the extension
        self.tmp = self._staged.tmp
        try:
            if self.suffix == ".mp4":
                import imageio.v2 as iio2

                self._writer = iio2.get_writer(self.tmp, format="FFMPEG", mode="I", fps=self.fps, codec="libx264",
                                               macro_block_size=1)
            else:
                import imageio.v3 as iio

                self._writer = iio.imopen(self.tmp, "w", extension=".gif")
        except Exception as exc:
            self._staged.discard()
            raise RuntimeError(f"recording {self.suffix} needs imageio (MP4: imageio-ffmpeg, pip install "
                               f"'neuralsim[video]'): {exc}") from None

    def append(self, frame: np.ndarray) -> None:
        """Add one uint8 ``[H, W, 3]`` frame."""
        if self.suffix == ".mp4":
            self._writer.append_data(frame)
        else:
            self._writer.write(frame, is_batch=False, duration=1000 / self.fps, loop=0)
        self.frames += 1

    def close(self) -> None:
        """Finish the file (a session that recorded nothing leaves no file)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.close()
            if self.frames == 0:
                self._staged.discard()
                return
            self._staged.commit()
        except BaseException:
            self._staged.discard()
            raise


class RealEnv:
    """The Gymnasium env a checkpoint learned from, stepped with the dream's actions.

    Frames come out as ``neuralsim collect`` recorded them (rgb observation or ``render()``, resized to the
    model's size), and one dream step is ``frames_per_step`` env steps with the action held; after the
    env's episode ends, its last frame is repeated.
    """

    def __init__(self, env_id: str, env_kwargs: dict, image_size: tuple[int, int], frames_per_step: int,
                 resize: str = "squash") -> None:
        from neuralsim.data import FrameRecorder  # the frame source and resizing `neuralsim collect` uses

        self.env_id = env_id
        self.recorder = FrameRecorder(env_id, env_kwargs, tuple(image_size), resize=resize)
        self.env = self.recorder.env
        self.frames_per_step = int(frames_per_step)
        self.ended, self.total_reward, self.last = False, 0.0, None

    @classmethod
    def for_model(cls, session: Any) -> tuple["RealEnv | None", str]:
        """The real env of a :class:`~neuralsim.session.DreamSession`'s checkpoint, or ``(None, why not)``."""
        from neuralsim.checkpoints import provenance_env

        try:  # a checkpoint is data: only an id already registered, never 'module:Id' (gym.make would import it)
            env_id, env_kwargs = provenance_env(session.config, "the checkpoint's config.json")
        except ValueError as exc:
            return None, str(exc)
        if env_id is None:
            return None, "the checkpoint records no source env (config.provenance.env_id)"
        try:
            # Frames resized as `collect` did for the model's dataset (provenance["resize"]).
            real = cls(env_id, env_kwargs, session.image_size, session.frames_per_step, resize=session.resize_mode)
            real.reset(seed=0)  # renders once: a missing GL backend shows up now, not mid-session
        except Exception as exc:  # unregistered id, missing extra (mujoco), no GL context, ...
            return None, f"{env_id} could not be created ({type(exc).__name__}: {exc})"
        spec = act.space_to_spec(real.env.action_space)
        if spec["type"] != session.action_spec["type"] or spec.get("shape") != session.action_spec.get("shape") \
                or spec.get("n") != session.action_spec.get("n"):
            real.close()
            return None, f"{env_id}'s action space {spec} differs from the model's {session.action_spec}"
        return real, env_id

    def reset(self, seed: int) -> np.ndarray:
        obs, _ = self.env.reset(seed=seed)
        self.ended, self.total_reward, self.last = False, 0.0, self.recorder.frame(obs)
        return self.last

    def step(self, action: Any) -> tuple[np.ndarray, float]:
        """-> (uint8 ``[frames_per_step, H, W, 3]``, summed reward)."""
        frames, reward = [], 0.0
        for _ in range(self.frames_per_step):
            if not self.ended:
                obs, r, terminated, truncated, _ = self.env.step(action)
                reward += float(r)
                self.ended = bool(terminated or truncated)
                self.last = self.recorder.frame(obs)
            frames.append(self.last)
        self.total_reward += reward
        return np.stack(frames), reward

    def close(self) -> None:
        self.env.close()


# ---------------------------------------------------------------------------------------------- player


class Player:
    """A live dream session: held keys -> actions -> dream (and real) frames, shown, recorded and logged.

    Args:
        session: the dream (:class:`neuralsim.session.DreamSession`), run at batch 1.
        seed: episode ``e`` samples with ``torch.Generator().manual_seed(seed + e)`` and draws its start
            frame from ``np.random.default_rng(seed)``, as ``neuralsim rollout --seed`` does.
        denoise_steps: Euler steps per env step (None: the model's); the ``t`` key cycles it. A generated first
            frame uses the session's, as ``neuralsim rollout`` does.
        image: uint8 ``[H, W, 3]`` start frame (``image_path``: its file, for the replay command).
        prompt: start from a text prompt (the model generates the first frame).
        start_index: start from this frame of the checkpoint's start set.
        real: a :class:`RealEnv` run side by side; episodes start from its reset frame.
        script: per-step actions (e.g. ``session.keys_to_actions("w-24")``) driving the session instead of
            the keyboard; the session ends when they run out.
        max_steps: end the session after this many env steps.
        scale: window and recording upscaling (nearest). fps: display frames per second.
        recorder: a :class:`VideoRecorder` receiving every frame (dream | real, upscaled).
        model_arg: how to name the model in replay commands (``checkpoint_arg``: its ``--checkpoint``, if any).
        keep_frames: keep every dream frame of each episode in ``episodes[e]["frames"]`` (tests).
    """

    def __init__(self, session: Any, *, seed: int = 0, denoise_steps: int | None = None, image: np.ndarray | None = None,
                 image_path: str | None = None, prompt: str | None = None, start_index: int | None = None,
                 real: RealEnv | None = None, script: np.ndarray | None = None, max_steps: int | None = None,
                 scale: int = 8, fps: int = 15, recorder: VideoRecorder | None = None, model_arg: str = "default",
                 checkpoint_arg: str | None = None, keep_frames: bool = False) -> None:
        if sum(x is not None for x in (image, prompt, start_index)) > 1:
            raise ValueError("pass at most one of image, prompt and start_index")
        if real is not None and (image is not None or prompt is not None or start_index is not None):
            raise ValueError("real= starts each episode from the real env's frame; do not pass image, prompt or "
                             "start_index with it")
        self.session, self.seed, self.real = session, int(seed), real
        self.image, self.image_path, self.prompt, self.start_index = image, image_path, prompt, start_index
        self.script, self.max_steps = script, max_steps
        self.scale, self.fps, self.recorder = int(scale), int(fps), recorder
        self.model_arg, self.checkpoint_arg, self.keep_frames = model_arg, checkpoint_arg, keep_frames
        self.spec, self.k = session.action_spec, session.frames_per_step
        self.rng = np.random.default_rng(self.seed)
        self.default_denoise = int(denoise_steps or session.config.denoise_steps)
        self.denoise_steps = self.default_denoise
        self.episodes: list[dict] = []
        self.held: dict[str, None] = {}  # keys held now, in press order
        self.paused = self.single_step = self.finished = False
        self.show_real = real is not None
        self.total_steps, self.script_pos = 0, 0
        self.queue: deque = deque()  # (dream frame, real frame | None) still to show
        self.shown: tuple[np.ndarray, np.ndarray | None] | None = None
        self.last: dict[str, Any] = {}
        self.step_seconds: deque = deque(maxlen=30)
        self.tick_times: deque = deque(maxlen=30)
        self.state: Any = None
        self.generator: torch.Generator | None = None
        self.pg: Any = None
        self.screen: Any = None
        self.font: Any = None
        self.headless = False
        self.driver: str | None = None
        self.started = time.perf_counter()

    # ------------------------------------------------------------------ the dream

    @property
    def episode(self) -> dict:
        return self.episodes[-1]

    def reset(self) -> np.ndarray:
        """Start a new episode (seed ``seed + e``); returns its first frame."""
        e = len(self.episodes)
        seed = self.seed + e
        self.generator = self.session.generator(seed)  # as rollout.dream: the noise of episode e
        image, prompts, start = self.image, None, {}
        real_frame = None
        if self.real is not None:
            image = real_frame = self.real.reset(seed)
            start = {"real": self.real.env_id, "real_seed": seed}
        elif image is not None:
            start = {"image": self.image_path or "<array>"}
        elif self.prompt is not None:
            prompts, start = [self.prompt], {"prompt": self.prompt}
        else:
            frames, descriptions = self.session.start_frames, self.session.start_descriptions
            if len(frames) == 0:
                raise ValueError(f"{self.session.model_name} has no start frames; pass image= or prompt=")
            index = self.start_index if self.start_index is not None else int(self.rng.integers(len(frames)))
            image = frames[index]
            prompts = [descriptions[index]] if index < len(descriptions) else None  # as rollout: its description
            start = {"start_index": index}
        self.state, rgb, _ = self.session.start(1, self.generator, image=None if image is None else image[None, None],
                                                prompt=prompts)
        first = np.ascontiguousarray(rgb[0])
        self.episodes.append({"seed": seed, "start": start, "start_frame": first, "keys": [], "actions": [],
                              "denoise_steps": [], "rewards": [], "frames": [first] if self.keep_frames else None})
        self.last = {"predicted_reward": 0.0, "termination_prob": 0.0, "real_reward": 0.0}
        self.queue.clear()
        self._emit(first, real_frame)
        return first

    def step(self, held: Sequence[str] | None = None) -> dict | None:
        """One env step: the script's next action, else the action of ``held`` keys (default: the keys held now).

        Returns:
            dict with ``frames`` (uint8 ``[k, H, W, 3]``), ``action``, ``keys``, ``predicted_reward``,
            ``termination_prob`` (and ``real_frames``, ``real_reward`` with a real env); None when the
            session is over.
        """
        if self.state is None:
            self.reset()
        if self.finished:
            return None
        if self.script is not None:
            action = self.script[self.script_pos]
            self.script_pos += 1
        else:
            action = keys_to_action(list(self.held) if held is None else list(held), self.spec)
        actions = self.session.check_actions(action, 1, name="action", single=True)
        t0 = time.perf_counter()
        out = self.session.step(self.state, actions, self.generator, denoise_steps=self.denoise_steps)
        self.step_seconds.append(time.perf_counter() - t0)
        self.state = out.state
        frames = out.frames[0]
        result = {"frames": frames, "action": action, "keys": action_keys(action, self.spec),
                  "predicted_reward": float(out.reward[0]), "termination_prob": float(out.termination_prob[0])}
        real_frames = None
        if self.real is not None:
            value = actions[0] if self.spec["type"] == "box" else int(actions[0])
            real_frames, result["real_reward"] = self.real.step(value)
            result["real_frames"] = real_frames
        ep = self.episode
        ep["keys"].append(result["keys"])
        ep["actions"].append(np.asarray(action).tolist())
        ep["denoise_steps"].append(self.denoise_steps)
        ep["rewards"].append(result["predicted_reward"])
        if ep["frames"] is not None:
            ep["frames"].extend(frames)
        self.last = {**result, "real_reward": result.get("real_reward", 0.0)}
        self.total_steps += 1
        self.queue.clear()
        for i in range(len(frames)):
            self._emit(frames[i], None if real_frames is None else real_frames[i])
        if (self.max_steps is not None and self.total_steps >= self.max_steps) or \
                (self.script is not None and self.script_pos >= len(self.script)):
            self.finished = True
        return result

    def _emit(self, dream: np.ndarray, real: np.ndarray | None) -> None:
        """A new frame: to the recording now, to the window in turn."""
        if self.recorder is not None:
            frame = dream if real is None else np.concatenate([dream, real], axis=1)
            if self.scale > 1:
                frame = np.repeat(np.repeat(frame, self.scale, axis=0), self.scale, axis=1)
            self.recorder.append(np.ascontiguousarray(frame))
        self.queue.append((dream, real))

    def command(self, name: str) -> None:
        """A control key: ``reset``, ``pause``, ``step`` (one step while paused), ``denoise``, ``view``."""
        if name == "reset":
            self.reset()
        elif name == "pause":
            self.paused = not self.paused
        elif name == "step":
            self.single_step = self.paused
        elif name == "denoise":
            choices = sorted({1, 2, 4, self.default_denoise})
            self.denoise_steps = next((c for c in choices if c > self.denoise_steps), choices[0])
        elif name == "view" and self.real is not None:
            self.show_real = not self.show_real
            if self.screen is not None:
                self.screen = self.pg.display.set_mode(self.window_size())

    # ------------------------------------------------------------------ the log

    def dsl(self, e: int = -1) -> str | None:
        """Episode ``e``'s actions as a key-DSL string (None if the action space has no DSL)."""
        keys = self.episodes[e]["keys"]
        return None if any(k is None for k in keys) else keys_to_dsl(keys, self.k)

    def replay_command(self, e: int = -1, image_path: str | None = None) -> str | None:
        """The ``neuralsim rollout`` command that reproduces episode ``e`` (None if it cannot)."""
        ep, dsl = self.episodes[e], self.dsl(e)
        if not dsl:
            return None
        start = ep["start"]
        cmd = ["neuralsim", "rollout", "--model", self.model_arg, "--seed", str(ep["seed"])]
        if self.checkpoint_arg is not None:
            cmd += ["--checkpoint", self.checkpoint_arg]
        if "start_index" in start:
            cmd += ["--start-index", str(start["start_index"])]
        elif "prompt" in start:
            cmd += ["--prompt", start["prompt"]]
        else:
            path = image_path or (start.get("image") if start.get("image") != "<array>" else None)
            if path is None:
                return None
            cmd += ["--image", path]
        if len(set(ep["denoise_steps"])) == 1 and ep["denoise_steps"][0] != int(self.session.config.denoise_steps):
            cmd += ["--denoise-steps", str(ep["denoise_steps"][0])]
        return shlex.join(cmd + ["--actions", dsl, "--out", f"replay-ep{len(self.episodes) + e if e < 0 else e}.mp4"])

    def write_log(self, path: str | os.PathLike) -> list[str | None]:
        """Write one key-DSL line per episode that took steps (real-env starts also get ``PATH.epN.png``).

        Returns:
            the replay command of every episode (None where it cannot be replayed).
        """
        from neuralsim.checkpoints import atomic_write

        import imageio.v3 as iio

        path = Path(path)
        lines, commands = [], []
        for e, ep in enumerate(self.episodes):
            image_path = None
            if "real" in ep["start"] and ep["keys"]:
                png = path.with_name(f"{path.stem}.ep{e}.png")
                atomic_write(png, lambda tmp, f=ep["start_frame"]: iio.imwrite(tmp, f, extension=".png"))
                image_path = str(png.resolve())
            commands.append(self.replay_command(e, image_path))
            if ep["keys"]:
                lines.append(self.dsl(e) or json.dumps(ep["actions"]))
        text = "\n".join(lines) + ("\n" if lines else "")
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        return commands

    def summary(self, commands: list[str | None] | None = None) -> dict:
        """What the session did: steps, speed, and per episode its seed, start, actions and replay command."""
        episodes = []
        for e, ep in enumerate(self.episodes):
            command = commands[e] if commands is not None else self.replay_command(e)
            episodes.append({"seed": ep["seed"], "start": ep["start"], "steps": len(ep["keys"]),
                             "actions": self.dsl(e) if self.dsl(e) is not None else ep["actions"],
                             # one DSL string and one denoise setting: `rollout` can repeat it exactly (real-env
                             # starts need the start frame that --log saves)
                             "exact_replay": self.dsl(e) is not None and len(set(ep["denoise_steps"])) <= 1,
                             "replay": command})
        mean_step = float(np.mean(self.step_seconds)) if self.step_seconds else 0.0
        return {"model": self.model_arg, "seed": self.seed, "steps": self.total_steps, "video_driver": self.driver,
                "seconds": round(time.perf_counter() - self.started, 3),
                "dream_steps_per_s": round(1.0 / mean_step, 1) if mean_step else None,
                "record": None if self.recorder is None else str(self.recorder.path), "episodes": episodes}

    # ------------------------------------------------------------------ the window

    def window_size(self) -> tuple[int, int]:
        h, w = self.session.image_size
        panels = 2 if self.show_real and self.real is not None else 1
        width = max(w * self.scale * panels, 320)
        return width, h * self.scale + 4 * 18 + 8

    def open_window(self, *, headless: bool = False) -> None:
        """Open the pygame window (``headless``: SDL's dummy driver, nothing shown).

        Raises:
            ImportError: pygame is missing (with the install hint).
            NoDisplayError: SDL has no display to open a window on.
        """
        pg = self.pg = import_pygame()
        self.headless = headless
        if headless:
            os.environ["SDL_VIDEODRIVER"] = "dummy"
        # SDL would draw the window through an OpenGL renderer of its own, which takes the thread's GL
        # context from the real env's MuJoCo renderer (EGL_BAD_ACCESS); a software framebuffer is plenty here.
        os.environ.setdefault("SDL_FRAMEBUFFER_ACCELERATION", "0")
        requested = os.environ.get("SDL_VIDEODRIVER", "").strip().lower()
        try:
            pg.display.init()
            driver = self.driver = pg.display.get_driver()
            if driver in ("offscreen", "dummy") and requested != driver:
                raise pg.error(f"no X11/Wayland display found (SDL fell back to its {driver!r} driver)")
            self.screen = pg.display.set_mode(self.window_size())
        except pg.error as exc:
            pg.display.quit()
            raise NoDisplayError(str(exc)) from None
        pg.display.set_caption(f"neuralsim play: {self.model_arg}")
        pg.font.init()
        self.font = pg.font.Font(None, 20)

    def handle_event(self, event: Any) -> bool:
        """One pygame event; False when the session should end (window closed, esc/q)."""
        pg = self.pg
        if event.type == pg.QUIT:
            return False
        if event.type == getattr(pg, "WINDOWFOCUSLOST", -1):
            self.held.clear()  # key-up events are lost while another window has focus
        elif event.type == pg.KEYDOWN:
            name = pg.key.name(event.key)
            command = CONTROL_KEYS.get(name)
            if command == "quit":
                return False
            if command is not None:
                self.command(command)
            else:
                self.held.pop(name, None)
                self.held[name] = None
        elif event.type == pg.KEYUP:
            self.held.pop(pg.key.name(event.key), None)
        return True

    def tick(self) -> bool:
        """One iteration of the window loop: events, a step when the last one is shown, draw. False = end."""
        if self.state is None:
            self.reset()
        for event in self.pg.event.get():
            if not self.handle_event(event):
                return False
        if not self.queue:
            if self.finished:
                return False
            if not self.paused or self.single_step:
                self.single_step = False
                self.step()
        if self.queue:
            self.shown = self.queue.popleft()
        self.tick_times.append(time.perf_counter())
        self.draw()
        return True

    def run(self) -> None:
        """Loop :meth:`tick` at ``fps`` (as fast as possible when headless) until the session ends."""
        clock = self.pg.time.Clock()
        while self.tick():
            if not self.headless:
                clock.tick(self.fps)

    def draw(self) -> None:
        pg, screen = self.pg, self.screen
        if screen is None or self.shown is None:
            return
        h, w = self.session.image_size
        pw, ph = w * self.scale, h * self.scale
        screen.fill((18, 18, 22))
        panels = [("dream", self.shown[0])]
        if self.show_real and self.real is not None and self.shown[1] is not None:
            panels.append((f"real {self.real.env_id}" + (" (episode ended)" if self.real.ended else ""), self.shown[1]))
        for i, (label, frame) in enumerate(panels):
            surface = pg.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
            screen.blit(pg.transform.scale(surface, (pw, ph)), (i * pw, 0))
            screen.blit(self.font.render(label, True, (255, 255, 255), (0, 0, 0)), (i * pw + 4, 4))
        fps = (len(self.tick_times) - 1) / max(self.tick_times[-1] - self.tick_times[0], 1e-9) \
            if len(self.tick_times) > 1 else 0.0
        rate = 1.0 / float(np.mean(self.step_seconds)) if self.step_seconds else 0.0
        last, ep = self.last, self.episode
        term = last.get("termination_prob", 0.0)
        keys = "".join(self.held) if self.script is None else f"script {self.script_pos}/{len(self.script)}"
        lines = [
            (f"step {len(ep['keys'])}  episode {len(self.episodes) - 1}  {fps:4.1f} frames/s  dream {rate:.0f} steps/s",
             (230, 230, 230)),
            (f"reward {last.get('predicted_reward', 0.0):+.3f} (sum {sum(ep['rewards']):+.2f})  "
             f"termination {term:.2f}" + ("  TERMINATED" if term > 0.5 else "")
             + (f"  real {self.real.total_reward:+.2f}" if self.real is not None else ""),
             (255, 120, 120) if term > 0.5 else (230, 230, 230)),
            (f"denoise {self.denoise_steps}  keys {keys or '-'}" + ("  PAUSED" if self.paused else "")
             + ("  REC" if self.recorder is not None else ""), (230, 230, 230)),
            (HELP_LINE, (150, 150, 160)),
        ]
        for i, (text, colour) in enumerate(lines):
            screen.blit(self.font.render(text, True, colour), (6, ph + 6 + i * 18))
        pg.display.flip()

    def close(self, *, log: str | os.PathLike | None = None, screenshot: str | os.PathLike | None = None) -> list:
        """End the session: screenshot, recording, log, real env, window (each even if another fails).

        Returns:
            the replay commands written with the log (empty without ``log``).
        """
        commands: list = []
        try:
            if screenshot is not None and self.screen is not None:
                self.pg.image.save(self.screen, str(screenshot))
        finally:
            try:
                if self.recorder is not None:
                    self.recorder.close()
            finally:
                try:
                    if log is not None and self.episodes:
                        commands = self.write_log(log)
                finally:
                    if self.real is not None:
                        self.real.close()
                    if self.screen is not None:
                        self.pg.display.quit()
                        self.screen = None
        return commands
