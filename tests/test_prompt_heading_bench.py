"""benchmarks/prompt_heading.py: the clause names the wall the room's camera faces; a tiny end-to-end run."""

from __future__ import annotations

import json
import math

import pytest

from conftest import load_script

pytestmark = pytest.mark.mujoco  # needs the room


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/prompt_heading.py", "prompt_heading_bench")


def test_the_prompts_carry_the_start_heading(bench):
    env = bench.room()
    _, info = env.reset(seed=9_000_001, options={"agent_yaw": math.pi / 2})
    colour = env.unwrapped.layout["wall_colours"]["north"]
    env.close()
    text = info["description"]
    assert text.endswith(f"; the camera starts facing the {colour} north wall")
    assert bench.sentence(text, math.pi / 2, "wall") == text
    assert bench.sentence(text, math.pi / 2, "compass") == bench.without_view(text) + "; the camera starts facing north"
    assert "camera" not in bench.without_view(text)


def test_a_tiny_run_writes_every_figure(bench, tmp_path):
    result = bench.main(["--layouts", "4", "--steps", "2", "--eval", "3", "--probe-layouts", "20",
                         "--results-dir", str(tmp_path), "--name", "ph"])
    for view in ("here", "behind"):
        for key in (f"probe_real_{view}", f"wall_accuracy_{view}", f"wall_accuracy_{view}_plain",
                    f"wall_accuracy_{view}_shipped", f"floor_accuracy_{view}"):
            assert 0.0 <= result[key] <= 1.0, key
    assert json.loads((tmp_path / "ph.json").read_text())["steps"] == 2


def test_plain_fraction_leaves_the_clause_out_of_that_share_and_keeps_the_headings(bench):
    frames, with_clause = bench.collect(3, 0, "wall", 0.0)
    same_frames, plain = bench.collect(3, 0, "wall", 1.0)
    assert all("camera starts facing" in p for p in with_clause)
    # only the start-heading frames (the first of each layout's two) lose it: a plain sentence describes the start view
    assert plain == [bench.without_view(p) if i % 2 == 0 else p for i, p in enumerate(with_clause)]
    assert (frames == same_frames).all()  # the same headings whatever the fraction
    with pytest.raises(SystemExit):
        bench.parse_args(["--plain-fraction", "1.5"])
