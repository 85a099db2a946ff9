"""WorldModelEnv (SanaWM-v0) on a tiny randomly initialised checkpoint: API, spec, determinism, bad input, examples."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import types
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import neuralsim  # noqa: F401  (registers SanaWM-v0)
from neuralsim.envs import WorldModelEnv
from neuralsim.envs.world_model_env import resolve_dtype

from conftest import TINY_FRAMES_PER_STEP, make_tiny_model, tiny_sana_components

ROOT = Path(__file__).resolve().parent.parent
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
K = TINY_FRAMES_PER_STEP  # frames per latent frame (env step) of the test checkpoint


@pytest.fixture()
def ckpt(tiny_checkpoint) -> Path:
    """conftest's session-wide tiny checkpoint (read-only)."""
    return tiny_checkpoint


@pytest.fixture()
def env(ckpt):
    e = WorldModelEnv(str(ckpt), render_mode="rgb_array", max_episode_steps=50)
    yield e
    e.close()


def rollout(env, seed: int, steps: int = 4):
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        out += [obs, info["frames"], np.float64(reward)]
    return out


# ------------------------------------------------------------------------------------ spaces and spec


def test_spaces_come_from_the_checkpoint(env):
    cfg = env.unwrapped.config
    assert env.observation_space == gym.spaces.Box(0, 255, (*cfg.image_size, 3), np.uint8)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    assert env.unwrapped.frames_per_step == K


def test_latent_observation_space(ckpt):
    env = WorldModelEnv(str(ckpt), obs_type="latent")
    cfg = env.config
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == (cfg.latent_channels, *cfg.latent_size) and obs.dtype == np.float32
    assert obs in env.observation_space
    obs, *_, info = env.step(env.action_space.sample())
    assert obs.shape == env.observation_space.shape and "frames" not in info  # nothing decoded without render_mode
    *_, frames = env.step_keys("w-2")  # the key DSL always decodes its frames
    assert len(frames) == K and frames[0].shape == (*cfg.image_size, 3)


def test_docstring_is_the_spec(env):
    doc = WorldModelEnv.__doc__
    for heading in ("Description", "Action Space", "Observation Space", "Rewards", "Starting State", "Episode End",
                    "Arguments", "Version History"):
        assert f"## {heading}" in doc, heading
    assert ">>> obs, info = env.reset(seed=0)" in doc
    # The documented forms agree with the real spaces.
    assert "Box(0, 255, (H, W, 3), uint8)" in doc and env.observation_space.dtype == np.uint8
    assert str(env.action_space) in doc  # "Box(-1.0, 1.0, (4,), float32)"
    assert re.search(r"Box\(-1e4, 1e4, \(C, h, w\), float32\)", doc)
    lat = WorldModelEnv(env.unwrapped.model, obs_type="latent").observation_space
    assert (lat.low.min(), lat.high.max(), lat.dtype) == (-1e4, 1e4, np.float32)
    default = inspect.signature(WorldModelEnv).parameters["max_episode_steps"].default
    assert f"max_episode_steps``: truncation limit (default {default}" in doc and default == gym.spec("SanaWM-v0").max_episode_steps
    assert "Discrete(11)" in doc and len(neuralsim.actions.DISCRETE_KEYSETS) == 11


def test_gymnasium_check_env_without_warnings(ckpt, monkeypatch):
    from gymnasium.utils.env_checker import check_env

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # the "human" render mode opens a (headless) pygame window
    for obs_type in ("rgb", "latent"):
        env = gym.make("SanaWM-v0", model=str(ckpt), obs_type=obs_type, render_mode="rgb_array")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(env.unwrapped)
        env.close()


def test_gym_make_registered_id(ckpt):
    for limit in (None, 3, 300):  # gym.make's TimeLimit is the one limit: the env does not cut at its own 200
        env = gym.make("SanaWM-v0", model=str(ckpt), max_episode_steps=limit)
        obs, info = env.reset(seed=1)
        assert env.spec.id == "SanaWM-v0" and env.spec.max_episode_steps == (limit or 200)
        assert env.unwrapped.max_episode_steps is None
        assert obs.shape == env.observation_space.shape and info["step"] == 0 and info["model"] == str(ckpt)
    env = gym.make("SanaWM-v0", model=str(ckpt), max_episode_steps=3)
    env.reset(seed=0)
    truncated = [env.step(env.action_space.sample())[3] for _ in range(3)]
    assert truncated == [False, False, True]


def test_register_checkpoint(ckpt):
    from neuralsim.envs import register_checkpoint

    register_checkpoint("TinyDreamTest-v0", str(ckpt), max_episode_steps=4, denoise_steps=1)
    env = gym.make("TinyDreamTest-v0")
    env.reset(seed=0)
    assert env.spec.max_episode_steps == 4 and env.unwrapped.session.denoise_steps == 1
    envs = gym.make_vec("TinyDreamTest-v0", num_envs=2, vectorization_mode="vector_entry_point")
    assert envs.max_episode_steps == 4 and envs.session.denoise_steps == 1


# ------------------------------------------------------------------------------------ stepping


def test_step_returns_the_documented_tuple(env):
    obs, info = env.reset(seed=0)
    assert info["start_index"] in (0, 1, 2) and info["prompt"]
    obs, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
    assert obs.dtype == np.uint8 and obs.shape == env.observation_space.shape
    assert isinstance(reward, float) and type(terminated) is bool and type(truncated) is bool
    assert info["frames"].shape == (K, *obs.shape) and info["frames"].dtype == np.uint8
    assert np.array_equal(info["frames"][-1], obs) and np.array_equal(env.render(), obs)
    assert info["step"] == 1 and reward == info["predicted_reward"] and 0.0 <= info["termination_prob"] <= 1.0


def test_same_seed_same_actions_bit_identical_frames(env, ckpt):
    a, b = rollout(env, 3), rollout(WorldModelEnv(str(ckpt)), 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = rollout(env, 4)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_step_before_reset_raises(ckpt):
    env = WorldModelEnv(str(ckpt))
    with pytest.raises(gym.error.ResetNeeded, match="before reset"):
        env.step(env.action_space.sample())


def test_truncation_and_predicted_termination(ckpt):
    env = WorldModelEnv(str(ckpt), max_episode_steps=3)
    env.reset(seed=0)
    dones = [env.step(env.action_space.sample())[2:4] for _ in range(3)]
    assert dones == [(False, False), (False, False), (False, True)]
    ending = WorldModelEnv(make_tiny_model(termination_bias=6.0))  # the head predicts "done" everywhere
    ending.reset(seed=0)
    _, _, terminated, truncated, info = ending.step(ending.action_space.sample())
    assert terminated and not truncated and info["termination_prob"] > 0.5


def test_reward_fn_overrides_the_reward_head(ckpt):
    seen = []

    def reward_fn(obs, action, next_obs, info):
        seen.append((obs.shape, action.shape, next_obs.shape, info["predicted_reward"]))
        return 2.5

    env = WorldModelEnv(str(ckpt), reward_fn=reward_fn)
    env.reset(seed=0)
    _, reward, *_ = env.step(env.action_space.sample())
    assert reward == 2.5 and seen[0][:3] == ((32, 32, 3), (4,), (32, 32, 3))
    with pytest.raises(TypeError, match="reward_fn"):
        WorldModelEnv(str(ckpt), reward_fn=3)


def test_step_keys_drives_the_camera(env):
    env.reset(seed=0)
    obs, reward, terminated, truncated, info, frames = env.step_keys("w-4,l-2")  # 6 frames = 3 env steps of 2
    assert info["step"] == 3 and len(frames) == 6 and np.array_equal(frames[-1], obs)
    with pytest.raises(ValueError, match="unknown keys"):
        env.step_keys("x-8")


@pytest.mark.parametrize("capability, flags, native", [("AVX2", (), False), ("AVX512", (), False),
                                                         ("AVX512", ("amx_bf16", "avx512_bf16"), True),
                                                         ("AVX512_BF16", (), True), ("AMX", (), True),
                                                         ("unknown", (), False), ("unknown", ("bf16",), True)])
def test_auto_dtype_is_decided_in_one_place(monkeypatch, capability, flags, native):
    import neuralsim.device as device
    from neuralsim import cli, sana_wm, train
    from neuralsim.envs import world_model_env

    assert world_model_env.resolve_dtype is device.resolve_dtype and world_model_env.bf16_is_native is device.bf16_is_native
    assert train.resolve_dtype is device.resolve_dtype and sana_wm.resolve_dtype is device.resolve_dtype
    monkeypatch.setattr(device, "cpu_capability", lambda: capability)
    monkeypatch.setattr(device, "cpu_bf16_flags", lambda: flags)
    cpu = torch.device("cpu")
    expected = torch.bfloat16 if native else torch.float32
    assert device.bf16_is_native(cpu) is native and cli.cpu_capability() == capability
    assert device.resolve_dtype("auto", cpu) == expected
    if not torch.cuda.is_available():
        assert cli.native_bf16() is native
    assert device.resolve_dtype("fp32", cpu) == device.resolve_dtype("float32", cpu) == torch.float32
    assert device.resolve_dtype(torch.bfloat16, cpu) == device.resolve_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(train.TrainingError, match="--dtype must be auto, float32 or bfloat16, got 'float16'"):
        train.validate(train.TrainConfig(dtype="float16"))  # training autocasts to bf16 only: refused before any work
    with pytest.raises(ValueError, match="dtype must be 'auto'.*got 'int8'"):
        device.resolve_dtype("int8", cpu)


def test_dtypes(ckpt):
    from neuralsim.device import bf16_is_native

    assert resolve_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if bf16_is_native("cpu") else torch.float32)
    env = WorldModelEnv(str(ckpt), dtype="bfloat16")  # autocast path: tiny, so fast even without native bf16
    env.reset(seed=0)
    obs, *_ = env.step(env.action_space.sample())
    assert obs in env.observation_space
    with pytest.raises(ValueError, match="dtype"):
        WorldModelEnv(str(ckpt), dtype="int8")
    with pytest.raises(ValueError, match="float16 needs a CUDA"):
        WorldModelEnv(str(ckpt), dtype="float16")


def test_auto_dtype_is_fp32_for_small_cpu_batches(ckpt, monkeypatch):
    """On a native-bf16 CPU, "auto" gives bf16 only from AUTO_BF16_MIN_BATCH_CPU rows (smaller batches are faster in
    fp32): the single env and a small vector env dream in fp32, a large one in bf16; explicit dtypes are kept."""
    import neuralsim.device as device
    from neuralsim.envs import WorldModelVectorEnv
    from neuralsim.session import DreamSession

    monkeypatch.setattr(device, "cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(device, "cpu_bf16_flags", lambda: ("amx_bf16", "avx512_bf16"))
    cpu, n = torch.device("cpu"), device.AUTO_BF16_MIN_BATCH_CPU
    assert device.resolve_dtype("auto", cpu) == torch.bfloat16  # batch unknown: as before
    assert device.resolve_dtype("auto", cpu, batch_size=1) == device.resolve_dtype("auto", cpu, batch_size=n - 1) \
        == torch.float32
    assert device.resolve_dtype("auto", cpu, batch_size=n) == torch.bfloat16
    assert device.resolve_dtype("bfloat16", cpu, batch_size=1) == torch.bfloat16
    for bad in (0, -1, 1.5, True, "4"):
        with pytest.raises(ValueError, match="batch_size must be a positive int or None"):
            device.resolve_dtype("auto", cpu, batch_size=bad)
    assert WorldModelEnv(str(ckpt)).session.dtype == torch.float32
    assert WorldModelEnv(str(ckpt), dtype="bfloat16").session.dtype == torch.bfloat16
    assert WorldModelVectorEnv(2, model=str(ckpt)).session.dtype == torch.float32
    assert WorldModelVectorEnv(n, model=str(ckpt)).session.dtype == torch.bfloat16
    assert DreamSession(str(ckpt)).dtype == torch.bfloat16 and DreamSession(str(ckpt), batch_size=1).dtype == torch.float32
    with pytest.raises(ValueError, match="batch_size"):
        DreamSession(str(ckpt), batch_size=0)
    # with bf16 emulated, "auto" is fp32 at every batch
    monkeypatch.setattr(device, "cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(device, "cpu_bf16_flags", lambda: ())
    assert device.resolve_dtype("auto", cpu, batch_size=n) == torch.float32


def test_model_instance_and_render_modes(ckpt, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    env = WorldModelEnv(make_tiny_model(), render_mode="human")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    assert env.render() is None
    env.close()
    env.close()  # closing twice is fine
    with pytest.raises(ValueError, match="render_mode"):
        WorldModelEnv(str(ckpt), render_mode="ansi")


# ------------------------------------------------------------------------------------ reset options


def test_reset_from_image_and_context_clip(env):
    h, w = env.observation_space.shape[:2]
    image = np.full((h, w, 3), 77, np.uint8)
    obs, info = env.reset(seed=0, options={"image": image})
    assert np.array_equal(obs, image) and info["start_index"] == -1 and info["prompt"] == ""
    clip = np.random.default_rng(1).integers(0, 256, (1 + 2 * K, h, w, 3), dtype=np.uint8)
    obs, _ = env.reset(seed=0, options={"image": clip, "actions": np.zeros((2, 4), np.float32), "prompt": "a box"})
    assert np.array_equal(obs, clip[-1])
    big = np.zeros((2 * h + 3, w + 5, 3), np.uint8)
    obs, _ = env.reset(options={"image": big, "resize": True})
    assert obs.shape == (h, w, 3)


def test_reset_resizes_a_real_frame_as_the_training_frames_were(monkeypatch):
    import neuralsim.session as data  # the session checks (and fits) start images

    model = make_tiny_model()
    model.config.provenance = {**(model.config.provenance or {}), "resize": "pad"}  # as `collect` recorded it
    env = WorldModelEnv(model)
    assert env.session.resize_mode == "pad"
    modes = []
    real_resize = data.resize_frame
    monkeypatch.setattr(data, "resize_frame", lambda f, size, *, mode="squash": modes.append(mode) or real_resize(f, size, mode=mode))
    wide = np.full((40, 80, 3), 200, np.uint8)
    env.reset(seed=0, options={"image": wide, "resize": True})
    env.reset(seed=0, options={"image": wide, "resize": "crop"})
    assert modes == ["pad", "crop"]
    with pytest.raises(TypeError, match=r"options\['resize'\] must be a bool or one of 'pad', 'crop', 'squash'"):
        env.reset(options={"image": wide, "resize": "stretch"})


def test_reset_from_prompt_generates_the_first_frame(env):
    obs, info = env.reset(seed=0, options={"prompt": "a red ball near the blue wall"})
    assert obs.shape == env.observation_space.shape and info["prompt"] == "a red ball near the blue wall"
    again, _ = env.reset(seed=0, options={"prompt": "a red ball near the blue wall"})
    assert np.array_equal(obs, again)


@pytest.mark.parametrize("options, error, match", [
    ({"image": np.zeros((16, 16, 3), np.uint8)}, ValueError, r"options\['image'\] has size \(16, 16\).*resize"),
    ({"image": np.zeros((32, 32, 4), np.uint8)}, ValueError, r"options\['image'\] must have 3 channels"),
    ({"image": np.zeros((32, 32, 3), np.float32)}, TypeError, r"options\['image'\] must have dtype uint8"),
    ({"image": np.zeros((32, 32), np.uint8)}, ValueError, r"options\['image'\] must be a uint8 numpy array of shape"),
    ({"image": [[0, 1, 2]]}, TypeError, r"options\['image'\] must be a uint8 numpy array"),
    ({"image": np.zeros((2, 32, 32, 3), np.uint8)}, ValueError, r"T=2 frames.*1 \+ n\*2"),
    ({"image": np.zeros((3, 32, 32, 3), np.uint8), "actions": np.zeros((2, 3))}, ValueError, r"options\['actions'\] must have shape \(1, 4\)"),
    ({"image": np.zeros((3, 32, 32, 3), np.uint8), "actions": np.full((1, 4), 9.0)}, ValueError, r"options\['actions'\] out of the action space"),
    ({"actions": np.zeros((1, 4))}, ValueError, r"options\['actions'\] are the actions between"),
    ({"prompt": ""}, ValueError, r"options\['prompt'\] is empty"),
    ({"prompt": "   "}, ValueError, r"options\['prompt'\] is empty"),
    ({"prompt": "x" * 5000}, ValueError, r"options\['prompt'\] is 5000 bytes"),
    ({"prompt": 3}, TypeError, r"options\['prompt'\] must be a str"),
    ({"prompt": b"abc"}, TypeError, r"options\['prompt'\] must be a str"),
    ({"resize": "yes"}, TypeError, r"options\['resize'\] must be a bool"),
    ({"imgae": np.zeros((32, 32, 3), np.uint8)}, ValueError, r"unknown keys \['imgae'\]"),
])
def test_bad_reset_options(env, options, error, match):
    with pytest.raises(error, match=match):
        env.reset(seed=0, options=options)


@pytest.mark.parametrize("action, error, match", [
    (np.full(4, 2.0, np.float32), ValueError, r"action out of the action space"),
    (np.array([0.0, np.nan, 0.0, 0.0], np.float32), ValueError, r"action contains NaN"),
    (np.zeros(3, np.float32), ValueError, r"action must have shape \(4,\)"),
    (np.zeros((1, 4), np.float32), ValueError, r"action must have shape \(4,\)"),
    ("w-8", TypeError, r"step_keys"),
    (None, TypeError, r"action must be an element"),
    (np.array(["a", "b", "c", "d"]), TypeError, r"action must be numeric"),
])
def test_bad_actions_raise_and_leave_the_episode_intact(env, action, error, match):
    env.reset(seed=5)
    env.step(np.zeros(4, np.float32))
    with pytest.raises(error, match=match):
        env.step(action)
    after = env.step(np.ones(4, np.float32))[0]
    env.reset(seed=5)
    env.step(np.zeros(4, np.float32))
    assert np.array_equal(after, env.step(np.ones(4, np.float32))[0])


def test_model_argument_errors(ckpt):
    from neuralsim.checkpoints import ASSETS_DIR

    with pytest.raises(ValueError, match=r"known models: .*sana-wm-2\.6b"):
        WorldModelEnv("no-such-model")
    if not (ASSETS_DIR / "default").is_dir():
        with pytest.raises(ValueError, match="no default model is shipped"):
            WorldModelEnv()
    with pytest.raises(ValueError, match=r"checkpoint=DIR.*random_weights=True"):
        WorldModelEnv("sana-wm-2.6b")
    with pytest.raises(ValueError, match="checkpoint= is only for model='sana-wm-2.6b'"):
        WorldModelEnv(str(ckpt), checkpoint=str(ckpt))
    with pytest.raises(ValueError, match="preset name"):
        WorldModelEnv(str(ckpt), random_weights=True)
    with pytest.raises(ValueError, match="obs_type"):
        WorldModelEnv(str(ckpt), obs_type="pixels")
    with pytest.raises(ValueError, match="denoise_steps"):
        WorldModelEnv(str(ckpt), denoise_steps=0)
    with pytest.raises(ValueError, match="max_episode_steps"):
        WorldModelEnv(str(ckpt), max_episode_steps=0)
    with pytest.raises(TypeError, match="model must be"):
        WorldModelEnv(3.5)
    with pytest.raises(ValueError, match="pickle"):
        WorldModelEnv(str(ckpt / "weights.pt"))


def test_random_weights_preset():
    env = WorldModelEnv("tiny", random_weights=True, denoise_steps=1)
    obs, info = env.reset(seed=0)  # no start set: the first frame is generated
    assert obs.shape == (32, 32, 3) and info["start_index"] == -1 and "random weights" in info["model"]


# ------------------------------------------------------------------------------------ wrappers and adapters


class _ImageSequenceClip:
    """Stand-in for ``moviepy.video.io.ImageSequenceClip`` (writes a GIF with imageio)."""

    def __init__(self, frames, fps):
        self.frames, self.fps = frames, fps

    def write_videofile(self, path, logger=None):
        import imageio.v3 as iio

        iio.imwrite(path, np.stack(self.frames), extension=".gif", duration=1000 / self.fps)


def test_record_video(ckpt, tmp_path, monkeypatch):
    try:
        import moviepy  # noqa: F401
    except ImportError:  # RecordVideo needs moviepy (not a neuralsim dependency): exercise it through a stand-in
        fake = types.ModuleType("moviepy")
        sub = types.ModuleType("moviepy.video.io.ImageSequenceClip")
        sub.ImageSequenceClip = _ImageSequenceClip
        for name, module in {"moviepy": fake, "moviepy.video": types.ModuleType("moviepy.video"),
                             "moviepy.video.io": types.ModuleType("moviepy.video.io"),
                             "moviepy.video.io.ImageSequenceClip": sub}.items():
            monkeypatch.setitem(sys.modules, name, module)
    env = gym.wrappers.RecordVideo(gym.make("SanaWM-v0", model=str(ckpt), render_mode="rgb_array", max_episode_steps=5),
                                   str(tmp_path / "videos"), episode_trigger=lambda e: True, disable_logger=True)
    env.reset(seed=0)
    for _ in range(5):
        *_, terminated, truncated, _ = env.step(env.action_space.sample())
    assert truncated
    env.close()
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert videos and videos[0].stat().st_size > 0


def test_rllib_creator_without_ray(ckpt):
    from neuralsim.agents import rllib

    env = rllib.env_creator({"model": str(ckpt), "max_episode_steps": 3})
    assert isinstance(env.unwrapped, WorldModelEnv) and env.unwrapped.max_episode_steps == 3
    # RLlib's torch conv encoders take float frames: rgb comes as float32 in [0, 1] unless float_obs=False
    assert env.observation_space == gym.spaces.Box(0.0, 1.0, (32, 32, 3), np.float32)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and 0.0 <= obs.min() and obs.max() <= 1.0
    raw = rllib.env_creator({"model": str(ckpt), "float_obs": False})
    assert isinstance(raw, WorldModelEnv) and raw.observation_space.dtype == np.uint8
    try:
        import ray  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"neuralsim\[rllib\]"):
            rllib.register_rllib_env()
    else:
        assert rllib.register_rllib_env("SanaWM-test-v0") == "SanaWM-test-v0"


def test_official_backend_through_the_env():
    """model=<SanaWMBackend> (tiny random diffusers components): the same env API, 8 frames per step."""
    for module in ("diffusers", "transformers", "tokenizers"):
        pytest.importorskip(module)
    from neuralsim.sana_wm import SanaWMBackend

    backend = SanaWMBackend(**tiny_sana_components(), image_size=(64, 96), intrinsics=(48.0, 48.0, 48.0, 32.0),
                            denoise_steps=1, guidance_scale=1.0, max_sequence_length=16)
    env = WorldModelEnv(backend, max_episode_steps=2)
    assert env.observation_space.shape == (64, 96, 3) and env.action_space == gym.spaces.Discrete(11)
    with pytest.raises(ValueError, match="needs a start frame"):
        env.reset(seed=0)
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    obs, info = env.reset(seed=0, options={"image": image, "prompt": "a red ball"})
    assert np.array_equal(obs, image)
    obs, reward, terminated, truncated, info = env.step(1)
    assert info["frames"].shape == (8, 64, 96, 3) and reward == 0.0 and not terminated
    *_, truncated, info, frames = env.step_keys("w-8")
    assert truncated and len(frames) == 8


# ------------------------------------------------------------------------------------ examples


@pytest.mark.parametrize("script, extra", [
    ("random_agent.py", ["--num-envs", "4", "--steps", "3"]),
    ("reset_from_image.py", ["--keys", "w-4"]),
    ("reset_from_prompt.py", ["--keys", "w-2,l-2"]),
])
def test_examples_run(ckpt, tmp_path, script, extra):
    out = [] if script == "random_agent.py" else ["--out", str(tmp_path / "dream.gif")]
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--model", str(ckpt), *extra, *out],
                          capture_output=True, text=True, timeout=120, env=ONE_THREAD_ENV)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["model"] == str(ckpt)
    if out:
        assert (tmp_path / "dream.gif").stat().st_size > 0


def test_example_default_model_error_is_clear(tmp_path):
    from neuralsim.checkpoints import ASSETS_DIR

    if (ASSETS_DIR / "default").is_dir():
        pytest.skip("the default model is shipped")
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "random_agent.py")], capture_output=True, text=True,
                          timeout=120, env=ONE_THREAD_ENV)
    assert proc.returncode == 2 and "no default model is shipped" in proc.stderr


def test_cpu_bf16_flags_are_read_from_the_os():
    from neuralsim.device import NATIVE_BF16_CPU_FLAGS, cpu_bf16_flags

    flags = cpu_bf16_flags()
    assert isinstance(flags, tuple) and set(flags) <= set(NATIVE_BF16_CPU_FLAGS)
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return
    listed = {w for line in text.splitlines() if line.split(":")[0].strip() in ("flags", "Features")
              for w in line.split(":", 1)[1].split()}
    assert set(flags) == listed & set(NATIVE_BF16_CPU_FLAGS)
