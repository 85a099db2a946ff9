"""benchmarks/object_error.py: the split of the object pixels by the frame memory's gate, and the script on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import load_script, save_tiny_checkpoint


def test_split_puts_each_object_pixel_in_one_part_and_its_error_with_it():
    script = load_script("benchmarks/object_error.py", "object_error_bench")
    real = np.zeros((2, 4, 4, 3), np.uint8)
    dream = real.copy()
    objects = np.zeros((2, 4, 4), bool)
    objects[:, :2] = True  # 16 object pixels
    gate = np.zeros((2, 4, 4))
    gate[:, 0] = 1.0  # the first row: the memory's
    gate[:, 1, :2] = 0.5  # half the second row: the seam; the rest of it: the dream's
    dream[1, 1, 3] = 10  # one wrong pixel, in the dream's part of the second room
    out = script.split_object_error(real, dream, objects, gate)
    assert out["object_pixels"] == 16
    assert (out["memory_pixel_share"], out["seam_pixel_share"], out["dream_pixel_share"]) == (0.5, 0.25, 0.25)
    assert out["dream_error_share"] == 1.0 and out["memory_error_share"] == 0.0 and out["dream_error_top2_seeds"] == 1.0
    assert out["memory_psnr"] > 90 and out["dream_psnr"] == pytest.approx(10 * np.log10(255**2 / (100 / 4)))
    assert out["object_psnr"] == pytest.approx(10 * np.log10(255**2 / (100 / 16)))


@pytest.mark.mujoco
def test_object_error_script_on_a_tiny_model_with_a_depth_memory(tmp_path):
    """The whole script (1 seed): the three parts cover the object pixels and their error, the overall figure is
    fidelity.py's; a model without a frame memory is refused."""
    from conftest import make_tiny_model

    script = load_script("benchmarks/object_error.py", "object_error_bench")
    model = make_tiny_model(frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4)
    path = save_tiny_checkpoint(tmp_path / "tiny", model=model)
    result = script.main(["--model", str(path), "--seeds", "1", "--horizon", "2", "--threads", "1",
                          "--results-dir", str(tmp_path), "--name", "oe"])
    assert (tmp_path / "oe.json").is_file() and result["horizon"] == 2
    assert result["object_pixels"] > 0  # the first held-out room shows objects two steps in
    assert sum(result[f"{p}_pixel_share"] for p in script.PARTS) == pytest.approx(1.0, abs=1e-3)
    assert result["object_psnr"] == pytest.approx(result["fidelity_object_psnr"], abs=1e-3)
    with pytest.raises(SystemExit, match="no frame memory"):
        script.main(["--model", str(save_tiny_checkpoint(tmp_path / "plain")), "--seeds", "1",
                     "--results-dir", str(tmp_path)])
