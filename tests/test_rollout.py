"""`neuralsim rollout`: video and dataset outputs from a checkpoint, driven by keys or a random policy."""

from __future__ import annotations

import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from neuralsim.data import Dataset
from neuralsim.model import WorldModel
from neuralsim.rollout import actions_from_string, dream


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neuralsim", "rollout", *args], capture_output=True, text=True,
                          timeout=300, env={"OMP_NUM_THREADS": "1", **__import__("os").environ})


def test_keys_to_gif_with_stats_line(tiny_checkpoint, tmp_path):
    out = tmp_path / "dream.gif"
    result = run("--model", str(tiny_checkpoint), "--actions", "w-4,l-2", "--out", str(out), "--scale", "2")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    k = WorldModel.from_pretrained(tiny_checkpoint).config.frames_per_latent
    assert stats["steps"] == 3 and stats["frames"] == 1 + 3 * k  # "w-4,l-2" = 6 frames = 3 steps of k=2 frames
    video = iio.imread(out)
    assert video.shape == (1 + 3 * k, 64, 64, 3)


def test_random_episodes_to_a_dataset(tiny_checkpoint, tmp_path):
    out = tmp_path / "dream-data"
    result = run("--model", str(tiny_checkpoint), "--policy", "random", "--steps", "5", "--episodes", "2",
                 "--out", str(out))
    assert result.returncode == 0, result.stderr
    ds = Dataset(out)
    assert ds.num_episodes == 2 and ds.num_steps == 10
    episode = ds.episode(1)
    assert episode["frames"].shape[0] == 1 + 5 * ds.frames_per_step
    assert ds.manifest["env_id"].startswith("dream:")


def test_dream_is_deterministic_per_seed(tiny_checkpoint):
    model = WorldModel.from_pretrained(tiny_checkpoint)
    start = np.zeros((*model.config.image_size, 3), np.uint8)
    a = dream(model, 4, start=start, seed=1)
    b = dream(model, 4, start=start, seed=1)
    c = dream(model, 4, start=start, seed=2)
    assert np.array_equal(a["frames"], b["frames"])
    assert not np.array_equal(a["frames"], c["frames"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no-such-model", "--steps", "2"], "no-such-model"),
        (["--steps", "-3"], "--steps must be a positive integer"),
        (["--actions", "w-4,x-2"], "unknown keys"),
        (["--image", "/nonexistent.png"], "could not be read"),
    ],
)
def test_bad_input_is_reported(tiny_checkpoint, tmp_path, args, message):
    if "--model" not in args:
        args = ["--model", str(tiny_checkpoint), *args]
    result = run(*args, "--out", str(tmp_path / "x.gif"))
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "x.gif").exists()


def test_key_dsl_holds_one_action_per_step():
    spec = {"type": "box", "shape": [4], "low": [-1] * 4, "high": [1] * 4}
    actions = actions_from_string("w-4,l-2", spec, frames_per_step=2)
    assert actions.shape == (3, 4) and actions[0, 0] == 1 and actions[2, 2] == 1
    with pytest.raises(ValueError, match="camera world"):
        actions_from_string("w-2", {"type": "box", "shape": [2], "low": [-1] * 2, "high": [1] * 2}, 1)
