"""benchmarks/target_motion.py: the memory's target moved by its motion, as an oracle of what following it is worth."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import load_script, make_tiny_model, save_tiny_checkpoint


def _tiny(**overrides):
    return make_tiny_model(frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4,
                           reward_model_channels=8, termination_detector_channels=8, **overrides)


def _dream_state(model, batch=2, seed=0):
    from neuralsim.session import DreamSession

    session = DreamSession(model, dtype="float32")
    g = session.generator(seed)
    H, W = model.config.image_size
    frames = np.random.default_rng(seed).integers(0, 256, (batch, 3, H, W, 3), dtype=np.uint8)
    state, _, _ = session.start(batch, g, image=frames, actions=np.full((batch, 2, 4), 0.5, np.float32))
    return session.step(state, np.array([[1.0, 0.0, 0.3, 0.0]] * batch, np.float32), g)


def test_compose_with_no_target_pixels_is_the_models_own_frame():
    script = load_script("benchmarks/target_motion.py", "target_motion_helpers")
    model = _tiny().eval()
    out = _dream_state(model)
    H, W = model.config.image_size
    with torch.inference_mode():
        frame = script.compose(model, out.latent, out.state, torch.zeros(2, H, W, dtype=torch.bool), torch.ones(2, 3))
    assert frame.dtype == torch.uint8 and tuple(frame.shape) == (2, H, W, 3)
    assert torch.equal(frame, torch.as_tensor(out.frames[:, -1]))


def test_compose_draws_the_cut_out_target_where_its_motion_takes_it():
    script = load_script("benchmarks/target_motion.py", "target_motion_moved")
    model = _tiny().eval()
    out = _dream_state(model, batch=1)
    H, W = model.config.image_size
    mask = torch.zeros(1, H, W, dtype=torch.bool)
    mask[:, H // 2 - 2:H // 2 + 2, W // 2 - 2:W // 2 + 2] = True
    with torch.inference_mode():
        still = script.compose(model, out.latent, out.state, mask, torch.zeros(1, 3))
        # a sideways move of half the target's depth shifts its pixels by about fx / 2: the frame changes
        shift = torch.tensor([[0.5 * float(out.state.memory_depth[0, H // 2, W // 2]), 0.0, 0.0]])
        moved = script.compose(model, out.latent, out.state, mask, shift)
    assert not torch.equal(still, moved)


def test_displacements_are_the_targets_motion_in_the_last_cameras_axes():
    script = load_script("benchmarks/target_motion.py", "target_motion_moves")
    T, last, steps = 12, 7, 4
    turn = np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], np.float64)  # a camera turned a quarter: its +z is world +x
    poses = np.tile(np.eye(4), (1, T, 1, 1))
    poses[0, :, :3, :3] = turn
    targets = np.zeros((1, T, 3))
    targets[0, :, 0] = 0.1 * np.arange(T)  # 0.1 m a frame along world +x: straight ahead of the camera
    targets[0, :, 1] = 0.05 * np.arange(T)  # and down (a fall the velocity mode leaves out)
    still = script.displacements(poses, targets, last, steps, "still")
    true = script.displacements(poses, targets, last, steps, "true")
    velocity = script.displacements(poses, targets, last, steps, "velocity")
    assert tuple(true.shape) == (steps, 1, 3) and not still.any()
    np.testing.assert_allclose(true[:, 0, 2], 0.1 * np.arange(1, steps + 1), atol=1e-6)  # ahead: the camera's +z
    np.testing.assert_allclose(true[:, 0, 1], 0.05 * np.arange(1, steps + 1), atol=1e-6)
    gain = np.cumsum(script.DECAY ** np.arange(1, steps + 1))
    np.testing.assert_allclose(velocity[:, 0, 2], 0.1 * gain, atol=1e-6)
    assert not velocity[:, 0, 1].any()  # horizontal
    with pytest.raises(ValueError, match="mode"):
        script.displacements(poses, targets, last, steps, "teleport")


@pytest.mark.mujoco
def test_target_motion_on_a_tiny_model_writes_every_mode(tmp_path):
    path = save_tiny_checkpoint(tmp_path / "tiny", model=_tiny())
    script = load_script("benchmarks/target_motion.py", "target_motion_bench")
    result = script.main(["--model", str(path), "--seeds", "1", "--results-dir", str(tmp_path), "--name", "m"])
    assert set(result["modes"]) == set(script.MODES) and result["seeds"] == 1
    for row in result["modes"].values():
        assert row["target_psnr"] is None or np.isfinite(row["target_psnr"])
        assert row["termination_predicted"] >= 0
    assert json.loads((tmp_path / "m.json").read_text())["ball_start"] == "thrown"
    with pytest.raises(SystemExit, match="frame memory with a depth net"):
        script.main(["--model", str(save_tiny_checkpoint(tmp_path / "plain", model=make_tiny_model(frames_per_latent=1))),
                     "--seeds", "1", "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        script.main(["--model", str(path), "--seeds", "0", "--results-dir", str(tmp_path)])
