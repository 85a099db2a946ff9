"""What holds PPO back in the real room: seeing the target, or the control problem? PPO on thirteen observations.

    python benchmarks/ppo_observation.py [--quick] [--timesteps 102400] [--observations rgb,rgb-impala,bar,state]
                                         [--task target_colour="red"] [--seed 0] [--model default] [--out FILE]
    python benchmarks/ppo_observation.py --observations latent,latent-per-cell \
                                         --out benchmarks/results/ppo_observation_latent.json
    python benchmarks/ppo_observation.py --observations latent-probed --out benchmarks/results/ppo_observation_probed.json
    python benchmarks/ppo_observation.py --observations latent-dreamed --out benchmarks/results/ppo_observation_dreamed.json
    python benchmarks/ppo_observation.py --observations latent-measured --out benchmarks/results/ppo_observation_measured.json
    python benchmarks/ppo_observation.py --observations latent-tracker --out benchmarks/results/ppo_observation_tracker.json
    python benchmarks/ppo_observation.py --observations latent-measure --out benchmarks/results/ppo_observation_measure.json
    python benchmarks/ppo_observation.py --observations latent-decoder-stem \
                                         --out benchmarks/results/ppo_observation_decoder_stem.json
    python benchmarks/ppo_observation.py --observations decoded --out benchmarks/results/ppo_observation_decoded.json

PPO is trained in ``NeuralSimRoom-v0`` exactly as the transfer benchmark trains it in the real world
(`agents.transfer`: the walk-and-turn keys, 16 envs, ``PPO_KWARGS``, SB3's ``CnnPolicy`` on 64×64 images, its
``MlpPolicy`` on vectors and latents) for ``--timesteps`` env steps, once per observation; only what the agent sees, and how, differs:

- ``rgb``: the camera frames through SB3's default ``NatureCNN`` (8×8 stride-4 first layer);
- ``rgb-impala``: the camera frames through :class:`neuralsim.policy.ImpalaCNN` (3×3 filters on every pixel, then
  pooling), what the transfer benchmark's agents use;
- ``bar``: an oracle image, black but for a white vertical bar at the image column of the target's centre, taller
  as the target nears (none when the centre is out of the field of view; occlusion ignored): the task's information
  with nothing to find in it;
- ``state``: an oracle vector ``[cos, sin]`` of the target's bearing and its distance (``MlpPolicy``);
- ``latent``: the frames through the world model's encoder (``--model``; ``VecLatentObservation``), what a
  latent-observation agent sees in the dream, with :class:`neuralsim.policy.LatentCNN` (``MlpPolicy``, the transfer
  benchmark's ``--obs latent`` agents);
- ``latent-per-cell``: the same latents through ``benchmarks/latent_probe.py``'s per-cell net (two 1x1 convs, then
  two 3x3, no stride), which reads the target's column from latents better than ``LatentCNN`` there;
- ``latent-probed``: the per-cell net (:class:`neuralsim.policy.LatentCellCNN`) pretrained first, supervised, as
  ``latent_probe.py`` trains it (whether the target is in view and its column, 20,000 real-room frames of other
  layouts, 8 epochs; the simulator's labels), then trained on by PPO: whether PPO learns from latents once its
  extractor already reads the target;
- ``latent-dreamed``: the same net taught the same way on labels the world model gives itself
  (:func:`neuralsim.agents.pretrain.pretrain_latent_extractor`: 20,000 latent frames of its own dreams, each labelled
  by the dream's target tracker), ``neuralsim eval transfer --obs latent --pretrain-on dream``;
- ``latent-measured``: the same net taught on the room's frames (no reward read), each labelled by the model's
  target tracker measuring it (``pretrain_latent_extractor(..., env="NeuralSimRoom-v0")``), what
  ``neuralsim eval transfer --obs latent`` does;
- ``latent-tracker``: the model's target tracker's localizer (its convs and heat map, trained with the model), then a
  linear layer, all trained on by PPO;
- ``latent-measure``: ``LatentCNN``'s features beside the tracker's frozen measurement of the target (its
  ``(forward, right)`` and confidence);
- ``latent-decoder-stem``: the same latents through the model's decoder up to its first upsampling (frozen), then
  ``ImpalaCNN`` (trained): the decoder's first features, at a third of a full decode's cost;
- ``decoded``: the frames through the model's encoder and back through its decoder (what the latents hold, as
  pixels; no frame memory), with ``ImpalaCNN``: whether PPO could learn from what the autoencoder keeps.

Rewards, episodes and the policy's head are the same, so if ``bar`` and ``state`` learn where ``rgb`` does not, what
holds PPO back is finding the target in the frames. Per observation the table gives the mean return of the
training's first episodes (the untrained policy), the mean of the last 100 training episodes, their episode
length and the env steps after which the running mean (100 episodes) first went 5 above the first. The last line
is one JSON object, also written to benchmarks/results/ppo_observation.json (``--quick``: ppo_observation_quick.json,
a smoke run, not a figure); ``--task OPTION=JSON`` sets a task option of the room (its ``TASK_OPTIONS``).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

import neuralsim  # noqa: F401  (registers the envs)
from neuralsim.agents.sb3 import VecLatentObservation
from neuralsim.agents.transfer import PPO_KWARGS, QUICK_PPO_KWARGS, WALK_AND_TURN, parse_task_options
from neuralsim.agents.wrappers import KeySetActions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_info, rounded, write_result  # noqa: E402

OBSERVATIONS = ("rgb", "rgb-impala", "bar", "state", "latent", "latent-per-cell", "latent-probed", "latent-dreamed",
                "latent-measured",
                "latent-tracker", "latent-measure",
                "latent-decoder-stem", "decoded")
#: frames of the real room the ``latent-probed`` extractor is pretrained on, and its epochs (``latent_probe``'s)
PROBED_FRAMES, PROBED_EPOCHS = 20_000, 8
#: what a run without --observations trains (the world model's observations take a model and are asked by name)
DEFAULT_OBSERVATIONS = OBSERVATIONS[:4]


def target_in_camera(info: dict[str, Any]) -> np.ndarray:
    """The target's centre in the camera's OpenCV axes (+X right, +Y down, +Z forward), from the room's ``info``."""
    pose = np.asarray(info["pose"], dtype=np.float64)
    return pose[:3, :3].T @ (np.asarray(info["target_position"], dtype=np.float64) - pose[:3, 3])


def target_column(info: dict[str, Any], width: int) -> float | None:
    """The image column of the target's centre (the frame's ``intrinsics``), or None where it is behind the camera or
    outside an image ``width`` pixels wide."""
    x, _, z = target_in_camera(info)
    fx, _, cx, _ = np.asarray(info["intrinsics"], dtype=np.float64)
    u = cx + fx * x / z if z > 0 else -1.0
    return float(u) if 0 <= u < width else None


class _OracleObservation(gym.ObservationWrapper):
    """An observation made from the step's ``info`` (kept in ``self.info`` before ``observation`` is called)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.info: dict[str, Any] = {}

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, self.info = self.env.reset(**kwargs)
        return self.observation(obs), self.info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, self.info = self.env.step(action)
        return self.observation(obs), reward, terminated, truncated, self.info


class BarObservation(_OracleObservation):
    """Oracle image: a white bar at the target centre's image column, ``min(H, 0.6 H / distance)`` pixels tall."""

    def observation(self, obs: np.ndarray) -> np.ndarray:
        h, w = obs.shape[:2]
        image = np.zeros_like(obs)
        if (u := target_column(self.info, w)) is not None:
            half = int(min(h, 0.6 * h / max(float(self.info["target_distance"]), 0.3))) // 2
            col = int(u)
            image[h // 2 - half: h // 2 + half + 1, max(0, col - 2): col + 3] = 255
        return image


class StateObservation(_OracleObservation):
    """Oracle vector ``[cos(bearing), sin(bearing), distance]`` of the target (bearing: + to the right)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)

    def observation(self, obs: np.ndarray) -> np.ndarray:
        x, _, z = target_in_camera(self.info)
        bearing = np.arctan2(x, z)
        return np.array([np.cos(bearing), np.sin(bearing), self.info["target_distance"]], np.float32)


def probed_per_cell(model: str, seed: int, frames: int, epochs: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A :class:`~neuralsim.policy.LatentCellCNN` trained as ``latent_probe.py`` trains it (supervised: whether the target is in view and its
    column, from ``frames`` real-room frames through ``model``'s encoder, ``epochs`` epochs): its ``state_dict`` and
    the probe's held-out figures. The labels are the simulator's, which a user's env need not give: this asks whether
    an extractor that already reads the target lets PPO learn from latents, not how a user should pretrain one."""
    from gymnasium import spaces
    from latent_probe import collect, observations, probe

    from neuralsim.envs.latent import FrameEncoder
    from neuralsim.policy import LatentCellCNN

    encoder = FrameEncoder(model, dtype="float32")
    images, visible, column = collect(frames, tuple(encoder.image_size), seed + 1)  # not PPO's first layouts
    latents = observations(encoder, images)["latent"]
    torch.manual_seed(seed)
    net = LatentCellCNN(spaces.Box(-1e4, 1e4, tuple(latents.shape[1:]), np.float32))
    figures = probe(net, latents, torch.from_numpy(visible), torch.from_numpy(column), encoder.image_size[1],
                    epochs=epochs, seed=seed)
    return net.state_dict(), figures


class TrackerExtractor(BaseFeaturesExtractor):
    """SB3 features extractor over latent observations ``[C, h, w]``: the target tracker's localizer (its ``locate``
    net: two 3x3 convs and the 1x1 heat/offset head), its features and heat map flattened, then a linear layer."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 256, channels: int = 64) -> None:
        super().__init__(observation_space, features_dim)
        c, h, w = observation_space.shape
        silu = torch.nn.SiLU
        self.locate = torch.nn.Sequential(torch.nn.Conv2d(c, channels, 3, padding=1), silu(),
                                          torch.nn.Conv2d(channels, channels, 3, padding=1), silu(),
                                          torch.nn.Conv2d(channels, 3, 1))
        self.linear = torch.nn.Sequential(torch.nn.Linear((channels + 3) * h * w, features_dim), torch.nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        features = self.locate[:4](observations.float())
        return self.linear(torch.cat([features, self.locate[4](features)], 1).flatten(1))


class MeasureExtractor(BaseFeaturesExtractor):
    """SB3 features extractor over latent observations ``[C, h, w]``: ``LatentCNN``'s features (trained) and the
    world model's target tracker's measurement (frozen; ``TargetTracker.measure``: the target's (forward, right) in
    metres / 4 and its in-view confidence), side by side. The tracker is set after the policy is built."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 256) -> None:
        from neuralsim.policy import LatentCNN

        super().__init__(observation_space, features_dim + 3)
        self.cnn = LatentCNN(observation_space, features_dim)
        self.tracker: torch.nn.Module | None = None

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.tracker.eval()  # its range calibration applies in eval mode
            position, weight = self.tracker.measure(observations.float())
        return torch.cat([self.cnn(observations), position / 4, weight[:, None]], 1)


class DecoderStemExtractor(BaseFeaturesExtractor):
    """SB3 features extractor over latent observations ``[C, h, w]``: the world model's decoder up to its first
    upsampling (``conv_in`` and its first level, frozen: 48 x 16 x 16 features from the shipped model's 16 x 8 x 8
    latents), then :class:`~neuralsim.policy.ImpalaCNN` (trained)."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 256, model: str = "default") -> None:
        from neuralsim.model import WorldModel
        from neuralsim.policy import ImpalaCNN

        super().__init__(observation_space, features_dim)
        world_model = WorldModel.from_pretrained(model)
        decoder = world_model.autoencoder.decoder
        self.stem = torch.nn.Sequential(decoder.conv_in, decoder.levels[0]).requires_grad_(False)
        config = world_model.config
        # the observation's normalised latents back to the raw ones the decoder reads (as WorldModel.decode does)
        self.register_buffer("scale", torch.as_tensor(config.latent_scale, dtype=torch.float32).reshape(-1, 1, 1))
        self.register_buffer("shift", torch.as_tensor(config.latent_shift, dtype=torch.float32).reshape(-1, 1, 1))
        with torch.no_grad():
            shape = tuple(self.stem(torch.zeros(1, *observation_space.shape)).shape[1:])
        self.head = ImpalaCNN(gym.spaces.Box(-np.inf, np.inf, shape, np.float32), features_dim)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.stem(observations.float() / self.scale + self.shift)
        return self.head(features)


class VecDecodedObservation(VecLatentObservation):
    """``VecLatentObservation``'s latents (fp32) back through the model's decoder, all envs (and an ended env's
    ``terminal_observation``) in one forward per step: uint8 frames ``[H, W, 3]`` of the model's image size."""

    def __init__(self, venv: Any, model: str) -> None:
        super().__init__(venv, model, dtype="float32")
        self.observation_space = gym.spaces.Box(0, 255, (*self.encoder.image_size, 3), np.uint8)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        return self.encoder.session.decode(torch.from_numpy(latents)[:, None], first_frame=False)[:, 0]

    def reset(self) -> np.ndarray:
        return self.decode(super().reset())

    def step_wait(self) -> tuple:
        latents, rewards, dones, infos = super().step_wait()
        ended = [i for i, info in enumerate(infos) if "terminal_observation" in info]
        frames = self.decode(np.concatenate([latents, *(infos[i]["terminal_observation"][None] for i in ended)]))
        for j, i in enumerate(ended):
            infos[i]["terminal_observation"] = frames[self.num_envs + j]
        return frames[: self.num_envs], rewards, dones, infos


def train(observation: str, task: dict[str, Any], timesteps: int, num_envs: int, ppo: dict[str, Any], seed: int,
          model: str = "default", probed: tuple[int, int] = (PROBED_FRAMES, PROBED_EPOCHS)) -> dict[str, Any]:
    """Train PPO on one observation; the training episodes' returns and lengths, in order. ``probed``: frames and
    epochs of the ``latent-probed`` extractor's pretraining."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    oracle = {"bar": BarObservation, "state": StateObservation}.get(observation)

    def wrap(env: gym.Env) -> gym.Env:
        env = KeySetActions(env, WALK_AND_TURN)
        return env if oracle is None else oracle(env)

    venv = make_vec_env("NeuralSimRoom-v0", n_envs=num_envs, seed=seed, vec_env_cls=DummyVecEnv,
                        env_kwargs={"max_episode_steps": 200, **task}, wrapper_class=wrap)
    episodes: list[tuple[int, float, int]] = []  # (env steps at its end, return, length)

    class Episodes(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:  # Monitor's summary of an episode that just ended
                    episodes.append((self.num_timesteps, float(info["episode"]["r"]), int(info["episode"]["l"])))
            return True

    from neuralsim.agents.sb3 import latent_policy_kwargs, rgb_policy_kwargs

    weights, pretraining = None, None
    if observation == "latent-probed":
        t0 = time.perf_counter()
        weights, pretraining = probed_per_cell(model, seed, *probed)
        pretraining["seconds"] = time.perf_counter() - t0
    policy_kwargs = {"rgb-impala": rgb_policy_kwargs(), "latent": latent_policy_kwargs(),
                     "latent-per-cell": latent_policy_kwargs(extractor="cells"),
                     "latent-probed": latent_policy_kwargs(extractor="cells"),
                     "latent-dreamed": latent_policy_kwargs(extractor="cells"),
                     "latent-measured": latent_policy_kwargs(extractor="cells"),
                     "latent-tracker": {"features_extractor_class": TrackerExtractor},
                     "latent-measure": {"features_extractor_class": MeasureExtractor},
                     "latent-decoder-stem": {"features_extractor_class": DecoderStemExtractor,
                                             "features_extractor_kwargs": {"model": model}},
                     "decoded": rgb_policy_kwargs()}.get(observation)
    if observation.startswith("latent"):  # every env's frame through the encoder in one forward per step
        venv = VecLatentObservation(venv, model)
    elif observation == "decoded":
        venv = VecDecodedObservation(venv, model)
    algo = PPO("CnnPolicy" if observation in ("rgb", "rgb-impala", "bar", "decoded") else "MlpPolicy", venv, seed=seed,
               device="cpu", verbose=0, policy_kwargs=policy_kwargs, **ppo)
    if weights is not None:  # after the policy is built: its orthogonal init redraws every extractor layer
        algo.policy.features_extractor.load_state_dict(weights)
    if observation in ("latent-dreamed", "latent-measured"):  # taught by the world model's own labels
        from neuralsim.agents.pretrain import pretrain_latent_extractor

        t0 = time.perf_counter()
        pretraining = pretrain_latent_extractor(algo.policy.features_extractor, model, frames=probed[0], epochs=probed[1],
                                                # the room's frames from other layouts than PPO's first ones
                                                seed=seed + 1 if observation == "latent-measured" else seed,
                                                env="NeuralSimRoom-v0" if observation == "latent-measured" else None,
                                                env_kwargs=task)
        pretraining["seconds"] = time.perf_counter() - t0
    # the encoder's world model already holds the tracker (VecLatentObservation): copied, not loaded again
    if observation == "latent-tracker":
        algo.policy.features_extractor.locate.load_state_dict(venv.encoder.model.reward_model.locate.state_dict())
    if observation == "latent-measure":
        algo.policy.features_extractor.tracker = copy.deepcopy(venv.encoder.model.reward_model).requires_grad_(False)
    t0 = time.perf_counter()
    algo.learn(timesteps, callback=Episodes())
    wall = time.perf_counter() - t0
    venv.close()
    return {"episodes": episodes, "wall_s": wall, "env_steps": int(algo.num_timesteps),
            **({"pretraining": pretraining} if pretraining else {})}


def summarize(observation: str, run: dict[str, Any], window: int) -> dict[str, Any]:
    steps, returns, lengths = (np.array(v, dtype=np.float64) for v in zip(*run["episodes"])) if run["episodes"] else \
        (np.zeros(0),) * 3
    first = float(returns[:window].mean()) if len(returns) else float("nan")
    running = np.convolve(returns, np.ones(window) / window, mode="valid") if len(returns) >= window else np.zeros(0)
    above = np.flatnonzero(running > first + 5.0)
    return {"observation": observation, "episodes": int(len(returns)), "first_return": first,
            "final_return": float(returns[-window:].mean()) if len(returns) else float("nan"),
            "final_length": float(lengths[-window:].mean()) if len(lengths) else float("nan"),
            "steps_to_first_plus_5": int(steps[above[0] + window - 1]) if len(above) else None,
            "wall_s": run["wall_s"], "env_steps_per_s": run["env_steps"] / run["wall_s"],
            **({"pretraining": run["pretraining"]} if "pretraining" in run else {})}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=None, help="PPO env steps per observation (default 102,400; "
                                                                    "--quick 2,048)")
    parser.add_argument("--observations", default=",".join(DEFAULT_OBSERVATIONS),
                        help=f"comma-separated, from {', '.join(OBSERVATIONS)} (default {','.join(DEFAULT_OBSERVATIONS)})")
    parser.add_argument("--task", action="append", default=[], metavar="OPTION=JSON",
                        help="a task option of the room, e.g. target_colour=\"red\"; repeatable")
    parser.add_argument("--seed", type=int, default=0, help="PPO and layout seed (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one per heavy job)")
    parser.add_argument("--model", default="default",
                        help="the world model of the latent and decoded observations (default: the shipped one)")
    parser.add_argument("--quick", action="store_true", help="tiny budget, 4 envs: the pipeline in about a minute")
    parser.add_argument("--out", default=None, help="results JSON (default benchmarks/results/ppo_observation.json)")
    args = parser.parse_args(argv)
    timesteps = args.timesteps if args.timesteps is not None else (2048 if args.quick else 102_400)
    observations = [o.strip() for o in args.observations.split(",") if o.strip()]
    if not observations or set(observations) - set(OBSERVATIONS):
        parser.error(f"--observations must be comma-separated names from {', '.join(OBSERVATIONS)}, got {args.observations!r}")
    if timesteps < 1 or args.seed < 0 or args.threads < 1:
        parser.error("--timesteps and --threads must be >= 1 and --seed >= 0")
    try:
        task = parse_task_options(args.task)
    except ValueError as e:
        parser.error(str(e))
    try:
        gym.make("NeuralSimRoom-v0", **task).close()
    except (ValueError, TypeError) as e:
        parser.error(f"--task: {e}")
    torch.set_num_threads(args.threads)
    num_envs, ppo = (4, dict(QUICK_PPO_KWARGS)) if args.quick else (16, dict(PPO_KWARGS))
    window = 10 if args.quick else 100

    t0 = time.perf_counter()
    rows = []
    print(f"PPO in NeuralSimRoom-v0 {task or ''}, {timesteps:,} env steps per observation, {num_envs} envs, seed {args.seed}")
    print(f"{'observation':<12} {'first':>7} {'final':>7} {'length':>7} {'steps to +5':>12} {'steps/s':>8}")
    for observation in observations:
        run = train(observation, task, timesteps, num_envs, ppo, args.seed, args.model,
                    probed=(1000, 1) if args.quick else (PROBED_FRAMES, PROBED_EPOCHS))
        row = summarize(observation, run, window)
        rows.append(row)
        print(f"{observation:<12} {row['first_return']:>7.2f} {row['final_return']:>7.2f} {row['final_length']:>7.0f} "
              f"{str(row['steps_to_first_plus_5']):>12} {row['env_steps_per_s']:>8.0f}", flush=True)
    result = rounded({"benchmark": "ppo_observation", "quick": args.quick, "task": task, "timesteps": timesteps,
                      **({"model": args.model} if any(o.startswith("latent") or o == "decoded" for o in observations) else {}),
                      "num_envs": num_envs, "seed": args.seed, "keys": list(WALK_AND_TURN), "ppo": ppo,
                      "window": window, "rows": rows, "seconds": time.perf_counter() - t0, "machine": machine_info()})
    out = args.out or str(RESULTS_DIR / ("ppo_observation_quick.json" if args.quick else "ppo_observation.json"))
    write_result(result, out)
    return result


if __name__ == "__main__":
    main()
