"""benchmarks/prompt_fidelity.py: labels from the room's state, sentence scoring, one-word swaps, a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load_script

pytestmark = pytest.mark.mujoco  # needs the room


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/prompt_fidelity.py", "prompt_fidelity_bench")


def test_labels_follow_the_rooms_state(bench):
    from neuralsim.envs.room import FLOOR_COLOURS, OBJECT_COLOURS, WALL_COLOURS

    env = bench.room()
    env.reset(seed=9_000_000)
    floor, wall, box = bench.labels_of(env)
    layout, pixels = env.unwrapped.layout, env.unwrapped.visible_pixels()
    assert FLOOR_COLOURS[floor] == layout["floor_colour"]
    assert WALL_COLOURS[wall] in layout["wall_colours"].values()
    assert pixels["floor"] > 0 and sum(pixels[w] for w in ("north", "east", "south", "west")) > 0
    # the object label is the colour of the largest box in view (this layout shows its black box in the middle)
    boxes = {name: pixels[name] for name in ("box0", "box1", "box2")}
    largest = max(boxes, key=boxes.get)
    assert boxes[largest] >= bench.MIN_BOX_PIXELS
    assert OBJECT_COLOURS[box] == layout["object_colours"][1 + int(largest[-1])]
    env.close()


def test_scoring_and_word_swaps(bench):
    data = {"labels": np.array([[0, 1, 2], [3, 4, 10]]), "named_walls": [[1, 5, 6, 7], [0, 2, 5, 6]],
            "named_boxes": [[2, 3, 4], [5, 6, 7]]}
    # floors right; walls: named, then not; boxes: a named one, then none in view (a miss)
    s = bench.score(np.array([[0, 5, 2], [3, 4, 10]]), data)
    assert s == {"floor": 1.0, "wall": 0.5, "object": 0.5, "object_shown": 0.5, "mean": 0.75, "mean_all": 2 / 3}
    text = "a room with a checkered purple floor, a red north wall; a purple ball near the red wall; target: the purple ball"
    assert bench.swap_word(text, "purple", "green", "floor").startswith("a room with a checkered green floor")
    assert bench.swap_word(text, "purple", "green", "ball").count("green ball") == 2
    assert "purple floor" in bench.swap_word(text, "purple", "green", "ball")


def test_a_tiny_run_writes_every_figure(bench, tmp_path):
    result = bench.main(["--quick", "--layouts", "6", "--probe-layouts", "50", "--results-dir", str(tmp_path),
                         "--name", "pf", "--sheet", str(tmp_path / "sheet.png")])
    for key in ("attribute_accuracy", "attribute_accuracy_real", "attribute_accuracy_t16",
                "attribute_accuracy_unconditional", "floor_swap_follows", "behind_wall_accuracy", "behind_wall_accuracy_no_prompt", "object_accuracy", "object_accuracy_real",
                "object_accuracy_t16", "attribute_accuracy_all", "attribute_accuracy_all_real"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["odd_prompts_ok"] == result["odd_prompts"] == len(bench.ODD_PROMPTS)
    assert json.loads((tmp_path / "pf.json").read_text())["layouts"] == 6
    assert (tmp_path / "sheet.png").stat().st_size > 0
