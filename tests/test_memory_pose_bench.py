"""benchmarks/memory_pose.py: the frame memory's pose against the room's, with and without the camera's servo."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import load_script, save_tiny_checkpoint


def test_object_warp_psnr_scores_only_the_object_pixels_the_warp_sees():
    script = load_script("benchmarks/memory_pose.py", "memory_pose_bench")

    class Still:  # a warp that returns the memory and sees its left half
        def warp(self, memory, rel, depth):
            seen = torch.zeros(memory.shape[0], 1, *memory.shape[-2:], dtype=torch.bool)
            seen[..., :2] = True
            return memory, seen

    real = np.zeros((1, 4, 4, 3), np.uint8)
    memory = torch.full((1, 3, 4, 4), -1.0)  # pixel value 0 everywhere
    memory[..., 3] = 1.0  # the right column is wrong, but unseen
    objects = np.zeros((1, 4, 4), bool)
    assert script.object_warp_psnr(Still(), memory, None, None, real, objects) is None  # no object pixel
    objects[0, :, 1:] = True
    assert script.object_warp_psnr(Still(), memory, None, None, real, objects) > 90  # the seen ones are right
    memory[0, :, 0, 1] = 1.0 - 20 / 127.5  # one of the 4 seen object pixels at 235 in every channel (real: 0)
    psnr = script.object_warp_psnr(Still(), memory, None, None, real, objects)
    assert psnr == pytest.approx(10 * np.log10(255 ** 2 / (235.0 ** 2 / 4)), abs=1e-3)


@pytest.mark.mujoco
def test_memory_pose_script_on_a_tiny_model_with_a_depth_memory(tmp_path):
    """The whole script (1 seed): both cameras' pose errors and object figures; the servo's pose is nearer the room's
    after a few steps; a model without a frame memory is refused."""
    from conftest import make_tiny_model

    script = load_script("benchmarks/memory_pose.py", "memory_pose_bench")
    model = make_tiny_model(frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4,
                            camera_translation_speed=0.08, camera_rotation_speed_deg=4.0, camera_fovy_deg=70.0)
    path = save_tiny_checkpoint(tmp_path / "tiny", model=model)
    result = script.main(["--model", str(path), "--seeds", "1", "--results-dir", str(tmp_path), "--name", "mp"])
    assert (tmp_path / "mp.json").is_file() and result["servo"]["camera_velocity_gain"] > 0
    for h in script.HORIZONS:
        for camera in script.CAMERAS:
            assert result[f"translation_error_max_{camera}_t{h}"] >= result[f"translation_error_mean_{camera}_t{h}"] >= 0
        assert result[f"room_translation_mean_t{h}"] >= 0
    assert result["translation_error_mean_servo_t4"] < result["translation_error_mean_commanded_t4"]
    with pytest.raises(SystemExit, match="no frame memory"):
        script.main(["--model", str(save_tiny_checkpoint(tmp_path / "plain")), "--seeds", "1",
                     "--results-dir", str(tmp_path)])


@pytest.mark.mujoco
def test_memory_pose_scores_the_last_remembered_frame_of_a_memory_of_several(tmp_path):
    """A memory of three frames is called three times a dream step (the earlier frames first): the pose scored is the
    last context frame's, so the servo's pose error stays a few millimetres, not the distance to an earlier frame
    (the script read an earlier frame's call once the shipped memory held three frames, until 2026-12-07)."""
    from conftest import make_tiny_model

    script = load_script("benchmarks/memory_pose.py", "memory_pose_bench")
    model = make_tiny_model(frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4, frame_memory_frames=3,
                            camera_translation_speed=0.08, camera_rotation_speed_deg=4.0, camera_fovy_deg=70.0)
    path = save_tiny_checkpoint(tmp_path / "tiny3", model=model)
    result = script.main(["--model", str(path), "--seeds", "2", "--results-dir", str(tmp_path), "--name", "mp3"])
    for h in script.HORIZONS:
        assert result[f"translation_error_max_servo_t{h}"] < 0.05  # the earlier frames lie 0.2-1 m away
        assert result[f"translation_error_mean_servo_t{h}"] < result[f"room_translation_mean_t{h}"]
