"""benchmarks/termination_cost.py: a vector env's step with the termination detector judging and not."""

from __future__ import annotations

import json

import pytest

from conftest import load_script, save_tiny_checkpoint


def test_termination_cost_times_both_ways_for_both_observations_and_writes_its_json(tmp_path):
    script = load_script("benchmarks/termination_cost.py", "termination_cost_bench")
    model_dir = save_tiny_checkpoint(tmp_path / "m", reward_model_channels=8, termination_detector_channels=8)
    result = script.main(["--model", str(model_dir), "--batch", "2", "--steps", "2", "--results-dir", str(tmp_path),
                          "--name", "cost"])
    assert [(r["obs"], r["judged"]) for r in result["rows"]] == [("rgb", False), ("rgb", True), ("latent", False),
                                                                 ("latent", True)]
    assert all(r["step_ms"] > 0 and r["env_steps_per_s"] > 0 for r in result["rows"])
    written = json.loads((tmp_path / "cost.json").read_text())
    assert written["step_ratio_latent"] > 0 and written["step_ratio_rgb"] > 0


def test_termination_cost_refuses_a_model_without_a_detector(tmp_path):
    script = load_script("benchmarks/termination_cost.py", "termination_cost_bench")
    with pytest.raises(SystemExit, match="no termination detector"):
        script.main(["--model", str(save_tiny_checkpoint(tmp_path / "plain")), "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        script.main(["--model", "default", "--steps", "0", "--results-dir", str(tmp_path)])
