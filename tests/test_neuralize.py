"""Neuralize envs neuralsim never names, end to end through the CLI, as a user would.

collect (``MODULE:ID``, ``--env-kwargs``, frames of another size and aspect) -> ``train all`` on a tiny
budget -> ``register_checkpoint`` + ``gym.make`` -> a few hundred steps of SB3 PPO in the dream.
A MuJoCo locomotion env rendered with ``render_mode="rgb_array"`` ([mujoco] extra) and an Atari game
(``ale_py:ALE/Breakout-v5``, [atari] extra; the ROMs ship inside ale-py's wheel).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "neuralsim", *args], capture_output=True, text=True, timeout=900, cwd=cwd)
    assert result.returncode == 0, f"neuralsim {' '.join(args)} failed:\n{result.stderr[-4000:]}"
    assert "Traceback" not in result.stderr and "error" not in result.stderr.lower(), result.stderr[-2000:]
    return result


def neuralize(tmp_path: Path, env: str, env_kwargs: dict, dream_id: str, *, max_steps: int = 24) -> tuple[dict, object]:
    """collect -> train -> gym.make(dream_id) -> SB3 PPO; returns (the dataset's manifest, the dream env)."""
    import gymnasium as gym
    from stable_baselines3 import PPO

    from neuralsim.envs import register_checkpoint

    data, run = tmp_path / "data", tmp_path / "run"
    collected = cli("collect", "--env", env, "--env-kwargs", json.dumps(env_kwargs), "--episodes", "3",
                    "--max-steps", str(max_steps), "--policy", "random", "--out", str(data), "--no-progress", cwd=tmp_path)
    summary = json.loads(collected.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 3 and summary["image_size"] == [64, 64]
    cli("train", "all", "--data", str(data), "--out", str(run), "--preset", "tiny", "--ae-steps", "3", "--steps", "3",
        "--batch-size", "2", "--window", "4", "--checkpoint-every", "3", "--sample-every", "0", "--no-progress", cwd=tmp_path)
    manifest = json.loads((data / "manifest.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert config["provenance"]["env_id"] == env and config["provenance"]["resize"] == manifest["resize"] == "pad"

    register_checkpoint(dream_id, str(run), max_episode_steps=32)
    dream = gym.make(dream_id)
    real = gym.make(env.rpartition(":")[2], **env_kwargs)
    assert dream.action_space == real.action_space  # the dream is driven exactly like the env it learned
    real.close()
    assert dream.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    obs, _ = dream.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    model = PPO("CnnPolicy", dream, n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(256)  # a few hundred env steps of real PPO in the dream
    assert model.num_timesteps >= 256
    return manifest, dream


@pytest.mark.mujoco
def test_neuralize_a_mujoco_env_rendered_as_rgb_array(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes MUJOCO_LOG.TXT into the working directory when it warns
    # 96x64 frames (3:2) from render(): padded to 64x64, not squashed.
    manifest, dream = neuralize(tmp_path, "Hopper-v5", {"width": 96, "height": 64}, "HopperDream-v0")
    assert manifest["native_image_size"] == [64, 96] and manifest["env_kwargs"]["render_mode"] == "rgb_array"
    dream.close()


@pytest.mark.atari
def test_neuralize_an_atari_game(tmp_path, monkeypatch):
    pytest.importorskip("ale_py", reason="needs the [atari] extra (ale-py)")
    monkeypatch.chdir(tmp_path)
    manifest, dream = neuralize(tmp_path, "ale_py:ALE/Breakout-v5", {"frameskip": 4, "repeat_action_probability": 0.0},
                                "BreakoutDream-v0", max_steps=32)
    assert manifest["native_image_size"] == [210, 160]  # 210x160 frames, padded to 64x64 (aspect kept)
    assert dream.action_space.n == 4
    dream.close()
