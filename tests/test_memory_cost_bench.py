"""benchmarks/memory_cost.py: the frame memory's step time per held real frame."""

from __future__ import annotations

import json

import pytest

from conftest import load_script, save_tiny_checkpoint


def test_memory_cost_times_every_held_frame_count_and_writes_its_json(tmp_path):
    script = load_script("benchmarks/memory_cost.py", "memory_cost_bench")
    model_dir = save_tiny_checkpoint(tmp_path / "m", frames_per_latent=1, frame_memory_width=4,
                                     frame_memory_depth_width=4, frame_memory_gate="seen")
    result = script.main(["--model", str(model_dir), "--frames", "1", "3", "--batch", "1", "2", "--context", "5",
                          "--steps", "2", "--repeats", "1", "--results-dir", str(tmp_path), "--name", "cost"])
    assert [(r["batch"], r["memory_frames"]) for r in result["rows"]] == [(1, 1), (1, 3), (2, 1), (2, 3)]
    assert all(r["step_ms"] > 0 and r["init_ms"] > 0 for r in result["rows"])
    assert [r["step_vs_first"] for r in result["rows"] if r["memory_frames"] == 1] == [1.0, 1.0]
    assert json.loads((tmp_path / "cost.json").read_text())["rows"] == result["rows"]


def test_memory_cost_refuses_a_model_without_a_memory_and_bad_counts(tmp_path):
    script = load_script("benchmarks/memory_cost.py", "memory_cost_bench")
    plain = save_tiny_checkpoint(tmp_path / "plain")
    with pytest.raises(SystemExit, match="no frame memory"):
        script.main(["--model", str(plain), "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        script.main(["--model", str(plain), "--frames", "0", "--results-dir", str(tmp_path)])
