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


def test_the_clause_names_the_wall_in_view(bench):
    """From the room's centre, a camera at each quarter turn sees mostly the wall the clause names."""
    env = bench.PF.room()
    for yaw in (0.0, math.pi / 2, math.pi, -math.pi / 2):
        env.reset(seed=9_000_001, options={"agent_xy": (0.0, 0.0), "agent_yaw": yaw})
        pixels = env.unwrapped.visible_pixels()
        seen = max(("north", "east", "south", "west"), key=lambda w: pixels[w])
        assert bench.facing_wall(yaw) == seen, (yaw, pixels)
    colours = dict(env.unwrapped.layout["wall_colours"])
    env.close()
    text = bench.with_clause("a room", math.pi / 2 + 0.3, colours, "wall")
    assert text == f"a room; the camera faces the {colours['north']} north wall"
    assert bench.with_clause("a room", math.pi + 0.7, colours, "compass") == "a room; the camera faces west"


def test_a_tiny_run_writes_every_figure(bench, tmp_path):
    result = bench.main(["--layouts", "4", "--steps", "2", "--eval", "3", "--probe-layouts", "20",
                         "--results-dir", str(tmp_path), "--name", "ph"])
    for view in ("here", "behind"):
        for key in (f"probe_real_{view}", f"wall_accuracy_{view}", f"wall_accuracy_{view}_plain",
                    f"wall_accuracy_{view}_shipped", f"floor_accuracy_{view}"):
            assert 0.0 <= result[key] <= 1.0, key
    assert json.loads((tmp_path / "ph.json").read_text())["steps"] == 2
