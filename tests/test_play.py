"""`neuralsim play`: synthetic keys drive the dream; recording, key-DSL log, exact replay with `neuralsim rollout`.

Runs headless: conftest sets SDL_VIDEODRIVER=dummy, so pygame opens a window nobody sees and the tests post
key events to its queue.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

pygame = pytest.importorskip("pygame")

from conftest import TINY_FRAMES_PER_STEP, listing  # noqa: E402
from neuralsim import actions as act  # noqa: E402
from neuralsim.cli import main  # noqa: E402
from neuralsim.data import Dataset  # noqa: E402
from neuralsim.session import DreamSession  # noqa: E402
from neuralsim.play import Player, RealEnv, VideoRecorder, action_keys, keys_to_action, keys_to_dsl  # noqa: E402
from neuralsim.rollout import actions_from_string  # noqa: E402

K = TINY_FRAMES_PER_STEP
CAMERA = {"type": "box", "shape": [4], "low": [-1.0] * 4, "high": [1.0] * 4}


def key(kind: int, k: int) -> "pygame.event.Event":
    return pygame.event.Event(kind, key=k)


def advance(player: Player, *events, steps: int) -> None:
    """Post ``events``, then run the window loop until ``steps`` more env steps are taken."""
    for event in events:
        pygame.event.post(event)
    target = player.total_steps + steps
    while player.total_steps < target:
        assert player.tick()


def replay(command: str, out: Path) -> dict:
    """Run a replay command printed by play through `neuralsim rollout`, to a dataset (lossless); episode 0."""
    args = shlex.split(command)[1:]
    args[args.index("--out") + 1] = str(out)
    assert main(args) == 0
    return Dataset(out).episode(0)


def test_keys_map_to_actions_and_back_to_the_dsl():
    assert keys_to_action(["w", "l"], CAMERA).tolist() == [1, 0, 1, 0]
    assert keys_to_action(["s", "a", "k", "j", "x"], CAMERA).tolist() == [-1, -1, -1, -1]
    assert keys_to_action([], CAMERA).tolist() == [0, 0, 0, 0]
    discrete = {"type": "discrete", "n": len(act.DISCRETE_KEYSETS), "start": 0}
    assert keys_to_action(["3"], discrete) == 3 and keys_to_action(["w", "2", "7"], discrete) == 7  # latest digit
    assert keys_to_action(["w", "j"], discrete) == act.DISCRETE_KEYSETS.index("wj")
    assert keys_to_action(["w", "a"], discrete) == act.DISCRETE_KEYSETS.index("a")  # no "wa": the latest letter
    assert keys_to_action([], discrete) == 0 and keys_to_action(["9"], {"type": "discrete", "n": 4}) == 0
    box = {"type": "box", "shape": [2], "low": [-2.0, 0.0], "high": [2.0, 0.5]}
    assert keys_to_action(["right", "up"], box).tolist() == [1.0, 0.5]
    assert keys_to_action(["left", "down"], box).tolist() == [-1.0, 0.0]
    assert action_keys(np.zeros(2), box) is None
    # per-step keys -> DSL -> rollout's per-step actions: the same actions
    steps = ["w", "w", "wl", "", "jw", "k"]
    for k in (1, 3):
        dsl = keys_to_dsl(steps, k)
        replayed = actions_from_string(dsl, CAMERA, k)
        assert np.array_equal(replayed, np.stack([keys_to_action(list(s), CAMERA) for s in steps]))
        assert [action_keys(a, CAMERA) for a in replayed] == [act.vector_to_keys(act.keys_to_vector(s)) for s in steps]
    assert np.array_equal(actions_from_string(keys_to_dsl(["wj", "", "s"], 2), discrete, 2), [9, 0, 2])


def test_synthetic_keys_record_log_and_replay_exactly(tiny_checkpoint, tmp_path):
    session = DreamSession(str(tiny_checkpoint), dtype="float32")
    assert session.frames_per_step == K
    recorder = VideoRecorder(tmp_path / "session.mp4", fps=10)
    player = Player(session, seed=5, start_index=1, recorder=recorder, scale=2, fps=60, keep_frames=True,
                    model_arg=str(tiny_checkpoint))
    player.open_window()
    try:
        advance(player, key(pygame.KEYDOWN, pygame.K_w), steps=3)
        advance(player, key(pygame.KEYDOWN, pygame.K_l), steps=2)  # w + l held together
        advance(player, key(pygame.KEYUP, pygame.K_w), steps=1)
        advance(player, key(pygame.KEYUP, pygame.K_l), steps=1)  # nothing held: idle
        pygame.event.post(pygame.event.Event(pygame.QUIT))
        assert not player.tick()
    finally:
        commands = player.close(log=tmp_path / "session.txt")

    episode = player.episodes[0]
    assert episode["keys"] == ["w", "w", "w", "wl", "wl", "l", ""]
    frames = np.stack(episode["frames"])
    h, w = session.image_size
    assert frames.shape == (1 + 7 * K, h, w, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames[0], session.start_frames[1])
    assert (tmp_path / "session.txt").read_text() == "w-6,wl-4,l-2,none-2\n"
    video = iio.imread(tmp_path / "session.mp4", index=None)
    assert video.shape == (1 + 7 * K, 2 * h, 2 * w, 3)
    assert np.abs(video[-1].astype(int) - np.repeat(np.repeat(frames[-1], 2, 0), 2, 1)).mean() < 12  # lossy codec
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left

    # the printed replay command: `neuralsim rollout` reproduces every frame and predicted reward
    assert "--start-index 1" in commands[0] and "--seed 5" in commands[0]
    replayed = replay(commands[0], tmp_path / "replay")
    assert np.array_equal(replayed["frames"], frames)
    assert np.allclose(replayed["rewards"], episode["rewards"])
    assert player.summary(commands)["episodes"][0]["exact_replay"]


def test_reset_pause_single_step_and_denoise_keys(tiny_checkpoint):
    session = DreamSession(str(tiny_checkpoint), dtype="float32")
    player = Player(session, seed=0, scale=1, fps=60)
    player.open_window()
    try:
        advance(player, key(pygame.KEYDOWN, pygame.K_d), steps=2)
        first_seed = player.episode["seed"]
        default = player.denoise_steps
        for event in (key(pygame.KEYDOWN, pygame.K_r), key(pygame.KEYDOWN, pygame.K_t),
                      key(pygame.KEYDOWN, pygame.K_SPACE)):
            pygame.event.post(event)
        for _ in range(6):  # paused: the loop draws but takes no step
            assert player.tick()
        assert len(player.episodes) == 2 and player.episode["seed"] == first_seed + 1 and player.episode["keys"] == []
        assert player.paused and player.denoise_steps != default
        advance(player, key(pygame.KEYDOWN, pygame.K_n), steps=1)  # single step while paused, d still held
        assert player.episode["keys"] == ["d"] and player.episode["denoise_steps"] == [player.denoise_steps]
        pygame.event.post(key(pygame.KEYDOWN, pygame.K_ESCAPE))
        assert not player.tick()
    finally:
        player.close()
    summary = player.summary()
    assert summary["steps"] == 3 and [e["steps"] for e in summary["episodes"]] == [2, 1]
    assert "--denoise-steps" in summary["episodes"][1]["replay"]


def test_window_closed_mid_recording_leaves_a_valid_file(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    original = Player.step

    def step_then_close_window(self, held=None):
        result = original(self, held)
        if self.total_steps == 3:
            pygame.event.post(pygame.event.Event(pygame.QUIT))  # the user closes the window
        return result

    monkeypatch.setattr(Player, "step", step_then_close_window)
    out = tmp_path / "rec" / "session.gif"
    assert main(["play", "--model", str(tiny_checkpoint), "--record", str(out), "--log", str(tmp_path / "keys.txt"),
                 "--fps", "60", "--scale", "2", "--seed", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["record"] == str(out)
    video = iio.imread(out, index=None)
    h, w = DreamSession(str(tiny_checkpoint)).image_size
    assert video.shape[1:] == (2 * h, 2 * w, 3) and 2 <= len(video) <= 1 + 3 * K  # (GIF merges equal frames)
    assert (tmp_path / "keys.txt").read_text() == f"none-{3 * K}\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["session.gif"]


@pytest.mark.mujoco
def test_default_model_side_by_side_with_the_real_room(tmp_path, capsys):
    """The shipped model came from NeuralSimRoom-v0: both run with the same actions; the log replays exactly."""
    session = DreamSession("default", dtype="float32")
    real, why = RealEnv.for_model(session)
    if real is None:
        pytest.skip(f"no real room here: {why}")
    script = session.keys_to_actions("w-3,l-2,jw-2")
    player = Player(session, seed=1, real=real, script=script, keep_frames=True, scale=1)
    try:
        first = player.reset()
        assert np.array_equal(first, real.last)  # the dream starts from the real frame
        while player.step() is not None:
            pass
    finally:
        commands = player.close(log=tmp_path / "keys.txt")
    assert player.total_steps == 7 and player.dsl() == "w-3,l-2,wj-2"
    assert "--image" in commands[0] and (tmp_path / "keys.ep0.png").is_file()
    replayed = replay(commands[0], tmp_path / "replay")
    assert np.array_equal(replayed["frames"], np.stack(player.episodes[0]["frames"]))

    # the CLI, headless: recording = dream | real side by side
    out = tmp_path / "side.mp4"
    assert main(["play", "--headless", "--actions", "w-3,l-2", "--record", str(out), "--scale", "2",
                 "--screenshot", str(tmp_path / "shot.png")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["episodes"][0]["start"]["real"] == "NeuralSimRoom-v0" and summary["steps"] == 5
    h, w = session.image_size
    assert iio.imread(out, index=None).shape == (1 + 5 * session.frames_per_step, 2 * h, 2 * 2 * w, 3)
    assert iio.imread(tmp_path / "shot.png").shape[1] >= 2 * 2 * w  # the window: both panels + HUD


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no-such-model"], "no-such-model"),
        (["--image", "/nonexistent.png"], "could not be read"),
        (["--actions", "w-4,x-2"], "unknown keys"),
        (["--record", "out.avi"], "must end with .mp4 or .gif"),
        (["--scale", "0"], "--scale must be a positive integer"),
        (["--headless", "--record", "out.mp4"], "--headless has no keyboard"),
        (["--headless", "--steps", "3"], "--headless shows nothing"),
        (["--start-index", "99"], "--start-index must be in"),
    ],
)
def test_bad_input_is_reported(tiny_checkpoint, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    if "--model" not in args:
        args = ["--model", str(tiny_checkpoint), *args]
    with pytest.raises(SystemExit) as exit_info:
        main(["play", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert listing(tmp_path) == []


@pytest.mark.skipif(sys.platform != "linux", reason="SDL's display fallback is Linux-specific")
def test_no_display_suggests_record_and_rollout(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    for name in ("SDL_VIDEODRIVER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "never.mp4"
    with pytest.raises(SystemExit) as exit_info:
        main(["play", "--model", str(tiny_checkpoint), "--record", str(out)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "no display available" in err
    assert "--headless" in err and "--record" in err and "neuralsim rollout" in err
    assert not out.exists()


def test_missing_pygame_names_the_extra(tiny_checkpoint, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pygame", None)  # `import pygame` raises ImportError
    with pytest.raises(SystemExit):
        main(["play", "--model", str(tiny_checkpoint)])
    assert 'pip install -c constraints.txt "neuralsim[play]"' in capsys.readouterr().err
