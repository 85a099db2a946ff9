"""benchmarks/memory_warp.py and the room's depth map it scores the frame memory's learned depth against."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import load_script, save_tiny_checkpoint


@pytest.mark.mujoco
def test_room_depth_map_follows_the_floor_plane_and_leaves_frames_unchanged():
    import gymnasium as gym

    import neuralsim  # noqa: F401
    from neuralsim.camera import camera_intrinsics

    env = gym.make("NeuralSimRoom-v0", target=None, start_view_deg=None).unwrapped
    ref = gym.make("NeuralSimRoom-v0", target=None, start_view_deg=None).unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.depth_map()
    obs, info = env.reset(seed=1_000_001)
    depth = env.depth_map()
    assert np.array_equal(obs, ref.reset(seed=1_000_001)[0])  # rendering depth changes no frame
    assert depth.shape == obs.shape[:2] and depth.dtype == np.float32 and bool((depth > 0).all())
    # The bottom rows see the floor: depth = camera height / the ray's downward slope (a level camera).
    H, W = depth.shape
    _, fy, _, cy = camera_intrinsics(H, W, float(np.degrees(2 * math.atan(H / 2 / info["intrinsics"][1]))))
    height = -float(info["pose"][1, 3])  # OpenCV axes: +Y down, the floor at y = 0
    floor = ~env.object_mask()[-1]
    expected = height / ((H - 1 - cy) / fy)
    assert np.median(np.abs(depth[-1][floor] / expected - 1)) < 0.03
    assert np.array_equal(env.step(np.zeros(4, np.float32))[0], ref.step(np.zeros(4, np.float32))[0])
    env.close()
    ref.close()


@pytest.mark.mujoco
def test_memory_warp_script_on_a_tiny_model_with_a_depth_memory(tmp_path):
    """The whole benchmark (1 seed) on a tiny one-frame-per-step model with a depth-aware frame memory: every
    documented key is there; the true depth's warp of the next frame beats the rotation's."""
    from conftest import make_tiny_model

    model = make_tiny_model(frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4)
    path = save_tiny_checkpoint(tmp_path / "tiny", model=model)
    script = load_script("benchmarks/memory_warp.py", "memory_warp_bench")
    result = script.main(["--model", str(path), "--seeds", "1", "--results-dir", str(tmp_path)])
    for protocol in ("explore", "sticky"):
        assert 0 <= result[f"depth_delta125_{protocol}"] <= 1 and result[f"depth_abs_rel_{protocol}"] > 0
        for warp in ("rotation", "learned", "true"):
            for h in script.HORIZONS:
                assert 0 <= result[f"{warp}_seen_{protocol}_t{h}"] <= 1
    assert result["true_psnr_explore_t1"] > result["rotation_psnr_explore_t1"]
    # the same warps over the object pixels (the first held-out room shows objects): finite dB, the depth's AbsRel there
    assert all(np.isfinite(result[f"{w}_object_psnr_explore_t1"]) for w in ("rotation", "learned", "true"))
    assert result["depth_abs_rel_objects_explore"] > 0
    assert (tmp_path / "memory_warp.json").is_file()
