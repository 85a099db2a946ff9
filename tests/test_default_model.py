"""The shipped default model (neuralsim/assets/default): it installs with the package and works out of the box."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import neuralsim  # noqa: F401  (registers the envs)
from neuralsim.checkpoints import ASSETS_DIR, shipped_models
from neuralsim.model import WorldModel

ROOT = Path(__file__).resolve().parent.parent


def test_default_model_is_shipped_inside_the_package():
    assert "default" in shipped_models()
    files = {p.name: p.stat().st_size for p in (ASSETS_DIR / "default").iterdir()}
    assert set(files) == {"config.json", "model.safetensors", "start_frames.safetensors"}
    # "a few MB": the dream's weights are 7.7 MB in fp16, the prompt-start generator 5.2 MB more, the view generator
    # (the views around a prompted start) 5.3 MB more, the termination detector 0.4 MB more
    assert sum(files.values()) < 20 * 2**20
    config = json.loads((ASSETS_DIR / "default" / "config.json").read_text())
    assert config["provenance"]["env_id"] == "NeuralSimRoom-v0"


def test_default_model_matches_the_room():
    model = WorldModel.from_pretrained("default")
    assert model.config.image_size == (64, 64) and model.config.camera
    assert gym.spaces.Box(-1, 1, (4,), np.float32) == __import__("neuralsim.actions", fromlist=["x"]).spec_to_space(
        model.config.action_spec)
    assert model.config.latent_scale != 1.0  # latent normalisation was fitted


@pytest.mark.mujoco
def test_default_models_camera_moves_as_the_rooms():
    """The shipped config states the room's camera: its speeds, field of view and velocity servo (the frame memory
    warps the last real frame by the pose this makes)."""
    pytest.importorskip("mujoco")
    from neuralsim.camera import servo_config_fields

    config = WorldModel.from_pretrained("default").config
    room = gym.make("NeuralSimRoom-v0").unwrapped
    spec = room.camera_spec
    room.close()
    assert (config.camera_translation_speed, config.camera_rotation_speed_deg, config.camera_fovy_deg) == (
        spec["translation_speed"], spec["rotation_speed_deg"], spec["fovy_deg"])
    servo = servo_config_fields(spec)
    assert servo and all(getattr(config, k) == pytest.approx(v) for k, v in servo.items())


def test_gym_make_sanawm_runs_out_of_the_box():
    env = gym.make("SanaWM-v0")
    obs, info = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    for _ in range(4):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert np.isfinite(reward) and isinstance(terminated, bool) and isinstance(truncated, bool)
    assert 10 < obs.mean() < 245  # a picture, not a blank frame
    env.close()


def test_readme_main_job(tmp_path):
    out = tmp_path / "dream.gif"
    result = subprocess.run([sys.executable, "-m", "neuralsim", "rollout", "--model", "default", "--actions",
                             "w-24,l-16,w-24", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert stats["steps"] == 64 and out.stat().st_size > 0


def test_example_random_agent_runs_on_the_default_model():
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "random_agent.py"), "--steps", "8"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
