"""benchmarks/approach.py: the room's seek episodes replayed in the dream, their endings compared."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load_script, make_tiny_model, save_tiny_checkpoint


def test_target_pixels_count_the_red_target():
    script = load_script("benchmarks/approach.py", "approach_helpers")
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    frames[1, 2:4, 2:5] = (190, 30, 25)  # the room's red, a little off as a dream draws it
    frames[1, 6, 6] = (30, 200, 30)
    assert script.target_pixels(frames).tolist() == [0, 6]


@pytest.mark.mujoco
def test_approach_on_a_tiny_model_writes_every_figure(tmp_path):
    model = make_tiny_model(frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4,
                            reward_model_channels=8, termination_detector_channels=8)
    path = save_tiny_checkpoint(tmp_path / "tiny", model=model)
    script = load_script("benchmarks/approach.py", "approach_bench")
    for oracle, ball in (([], "thrown"), (["--oracle-depth"], "rest")):
        result = script.main(["--model", str(path), "--episodes", "2", "--results-dir", str(tmp_path),
                              "--name", "a", "--strips", str(tmp_path / "strips.png"), "--ball-start", ball, *oracle])
        assert result["successes"] == 2 and result["oracle_depth"] == bool(oracle)  # seek reaches the ball
        assert result["ball_start"] == ball
        for key in ("detector_fires_real", "dream_ends", "end_psnr", "end_object_psnr", "target_growth_real",
                    "target_growth_dream", "target_growth_ratio_median"):
            assert result[key] is not None and np.isfinite(result[key]), key
        assert [r["seed"] for r in result["rows"]] == [script.FIRST_SEED, script.FIRST_SEED + 1]
        assert json.loads((tmp_path / "a.json").read_text())["episodes"] == 2 and (tmp_path / "strips.png").exists()
    # each ball start has its own results file by default (in sequence, one run overwrote the other's figures); the
    # room's default task (the ball at rest) keeps the plain name
    assert script.parse_args([]).ball_start == "rest"
    assert [script.parse_args(ball).name for ball in ([], ["--ball-start", "thrown"], ["--ball-start", "thrown", "--quick"])] \
        == ["approach", "approach_ball_thrown", "approach_ball_thrown_quick"]
    with pytest.raises(SystemExit, match="frames_per_latent 1"):
        script.main(["--model", str(save_tiny_checkpoint(tmp_path / "k2")), "--episodes", "1",
                     "--results-dir", str(tmp_path)])
    no_depth = save_tiny_checkpoint(tmp_path / "nodepth", model=make_tiny_model(frames_per_latent=1))
    with pytest.raises(SystemExit, match="--oracle-depth"):
        script.main(["--model", str(no_depth), "--episodes", "1", "--oracle-depth", "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        script.main(["--episodes", "0", "--results-dir", str(tmp_path)])
