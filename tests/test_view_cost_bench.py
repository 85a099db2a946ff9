"""benchmarks/view_cost.py: reset and step time with the views around a prompted start drawn and not."""

from __future__ import annotations

import json

import pytest

from conftest import load_script, save_tiny_checkpoint


def test_view_cost_times_both_ways_and_writes_its_json(tmp_path):
    script = load_script("benchmarks/view_cost.py", "view_cost_bench")
    model_dir = save_tiny_checkpoint(tmp_path / "m", frames_per_latent=1, frame_memory_width=4,
                                     frame_memory_gate="seen", prompt_view_channels=32, prompt_start_steps=2)
    result = script.main(["--model", str(model_dir), "--batch", "2", "--steps", "2", "--resets", "2",
                          "--results-dir", str(tmp_path), "--name", "cost"])
    assert [r["views"] for r in result["rows"]] == [False, True]
    assert all(r["reset_ms"] > 0 and r["step_ms"] > 0 and r["env_steps_per_s"] > 0 for r in result["rows"])
    written = json.loads((tmp_path / "cost.json").read_text())
    assert result["reset_ratio"] > 0 and [r["views"] for r in written["rows"]] == [False, True]


def test_view_cost_refuses_a_model_without_views(tmp_path):
    script = load_script("benchmarks/view_cost.py", "view_cost_bench")
    with pytest.raises(SystemExit, match="no view generator"):
        script.main(["--model", str(save_tiny_checkpoint(tmp_path / "plain")), "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        script.main(["--model", "default", "--steps", "0", "--results-dir", str(tmp_path)])
