"""benchmarks/detector_real_frames.py: the termination detector's F1 on real frames of new rooms."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load_script, save_tiny_checkpoint


def test_f1_row_counts_hits_against_the_truth():
    script = load_script("benchmarks/detector_real_frames.py", "detector_real_frames_bench")
    fired = np.array([True, True, False, False, True])
    truth = np.array([True, False, True, False, False])
    row = script.f1_row(fired, truth)
    assert row == {"f1": 2 * 1 / (3 + 2), "precision": 1 / 3, "recall": 1 / 2, "positives": 2, "fired": 3, "frames": 5}
    assert script.f1_row(np.zeros(3, bool), np.zeros(3, bool))["f1"] == 0.0  # nothing to find, nothing fired


def test_detector_real_frames_scores_every_set_and_writes_its_json(tmp_path):
    script = load_script("benchmarks/detector_real_frames.py", "detector_real_frames_bench")
    model_dir = save_tiny_checkpoint(tmp_path / "m", reward_model_channels=8, termination_detector_channels=8)
    result = script.main(["--model", str(model_dir), "--episodes", "1", "--results-dir", str(tmp_path), "--name", "drf"])
    assert set(result["sets"]) == {f"{p}/{b}" for p in script.POLICIES for b in script.BALL_STARTS}
    assert result["frames"] == sum(row["frames"] for row in result["sets"].values()) > 0
    assert result["positives"] == sum(row["positives"] for row in result["sets"].values())
    assert 0.0 <= result["f1"] <= 1.0
    assert json.loads((tmp_path / "drf.json").read_text())["frames"] == result["frames"]


def test_detector_real_frames_refuses_a_model_without_a_detector_and_bad_counts(tmp_path):
    script = load_script("benchmarks/detector_real_frames.py", "detector_real_frames_bench")
    with pytest.raises(SystemExit, match="no termination detector"):
        script.main(["--model", str(save_tiny_checkpoint(tmp_path / "plain")), "--episodes", "1",
                     "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        script.main(["--episodes", "0", "--results-dir", str(tmp_path)])
