"""`neuralsim rollout`: video and dataset outputs from a checkpoint, driven by keys or a random policy."""

from __future__ import annotations

import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from conftest import save_tiny_checkpoint
from neuralsim.data import Dataset, resize_frame
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


def test_overlap_process_and_none_write_the_same_video(tiny_checkpoint, tmp_path):
    """Where the frames are decoded (a second thread, a child process, in order) changes nothing in the video."""
    videos = []
    for overlap in ("thread", "process", "none"):
        out = tmp_path / f"{overlap}.gif"
        result = run("--model", str(tiny_checkpoint), "--actions", "w-4,l-4", "--out", str(out), "--overlap", overlap)
        assert result.returncode == 0, result.stderr
        videos.append(iio.imread(out))
    assert all(np.array_equal(v, videos[0]) for v in videos[1:])


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
    serial = dream(model, 4, start=start, seed=1, overlap=False)  # decoding on one thread: the same rollout
    assert np.array_equal(serial["frames"], a["frames"]) and np.array_equal(serial["rewards"], a["rewards"])
    assert np.array_equal(serial["terminated"], a["terminated"]) and a["terminated"].dtype == bool
    child = dream(model, 4, start=start, seed=1, overlap="process")  # decoding in a child process: the same too
    assert np.array_equal(child["frames"], a["frames"]) and np.array_equal(child["rewards"], a["rewards"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no-such-model", "--steps", "2"], "no-such-model"),
        (["--steps", "-3"], "--steps must be a positive integer"),
        (["--actions", "w-4,x-2"], "unknown keys"),
        (["--image", "/nonexistent.png"], "could not be read"),
        (["--overlap", "processes"], "--overlap: invalid choice"),
    ],
)
def test_bad_input_is_reported(tiny_checkpoint, tmp_path, args, message):
    if "--model" not in args:
        args = ["--model", str(tiny_checkpoint), *args]
    result = run(*args, "--out", str(tmp_path / "x.gif"))
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "x.gif").exists()


@pytest.mark.parametrize("recorded", ["pad", "crop", "squash", None])
def test_image_is_fitted_as_the_models_training_frames_were(tmp_path, recorded):
    """--image of another aspect is padded / cropped / squashed per ``provenance["resize"]`` (squash if unrecorded)."""
    from neuralsim.cli import build_parser
    from neuralsim.config import WorldModelConfig

    config = WorldModelConfig.from_preset("tiny", frames_per_latent=2)
    if recorded is not None:
        config.provenance = {**config.provenance, "resize": recorded}  # as `train` records the dataset's mode
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", WorldModel(config).eval())
    h, w = config.image_size
    wide = np.full((h, 2 * w, 3), 255, np.uint8)  # 1:2, white in the middle half, red at the sides
    wide[:, : w // 2] = wide[:, -(w // 2):] = (255, 0, 0)
    iio.imwrite(tmp_path / "wide.png", wide)

    out = tmp_path / "dream"
    args = build_parser().parse_args(["rollout", "--model", str(checkpoint), "--image", str(tmp_path / "wide.png"),
                                      "--steps", "1", "--out", str(out)])
    assert args.func(args) == 0
    start = Dataset(out).episode(0)["frames"][0]  # the start frame, stored losslessly

    mode = recorded or "squash"
    assert np.array_equal(start, resize_frame(wide, (h, w), mode=mode))
    black_rows = (start == 0).all(axis=(1, 2))
    red = (start == (255, 0, 0)).all(axis=-1)
    if mode == "pad":  # aspect kept: black bars above and below, the whole image (red sides too) in between
        assert black_rows[: h // 4].all() and black_rows[-(h // 4):].all() and red[h // 2].any()
    elif mode == "crop":  # aspect kept: the centre square, all white, the red sides cut
        assert not black_rows.any() and not red.any()
    else:  # stretched: no bars, the red sides squeezed in
        assert not black_rows.any() and red[:, 0].all() and red[:, -1].all()


def test_key_dsl_holds_one_action_per_step():
    spec = {"type": "box", "shape": [4], "low": [-1] * 4, "high": [1] * 4}
    actions = actions_from_string("w-4,l-2", spec, frames_per_step=2)
    assert actions.shape == (3, 4) and actions[0, 0] == 1 and actions[2, 2] == 1
    with pytest.raises(ValueError, match="camera world"):
        actions_from_string("w-2", {"type": "box", "shape": [2], "low": [-1] * 2, "high": [1] * 2}, 1)
