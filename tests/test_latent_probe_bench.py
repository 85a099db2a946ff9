"""benchmarks/latent_probe.py: its labels, its probe on a problem it must solve, and the script on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import load_script, make_tiny_model, save_tiny_checkpoint


def test_a_probe_learns_a_target_that_is_in_its_input():
    """A bright 2x2 square at a random column of a 16x16 image: the probe says where it is and when there is none."""
    script = load_script("benchmarks/latent_probe.py", "latent_probe_bench")
    g = torch.Generator().manual_seed(0)
    n = 2000
    visible = torch.rand(n, generator=g) < 0.5
    column = torch.randint(1, 15, (n,), generator=g).float()
    x = torch.rand(n, 3, 16, 16, generator=g) * 0.2
    for i in torch.nonzero(visible).flatten().tolist():
        c = int(column[i])
        x[i, :, 7:9, c - 1:c + 1] = 1.0
    column = torch.where(visible, column, torch.zeros(()))
    torch.manual_seed(0)
    row = script.probe(script.make_extractor("impala", (3, 16, 16)), x, visible, column, 16, epochs=10, seed=0)
    assert row["visible_accuracy"] > 0.95
    assert row["column_error_px"] < 1.0  # the mean column errs by about 3.5 px
    assert row["parameters"] > 0


@pytest.mark.mujoco
def test_latent_probe_script_on_a_tiny_model(tmp_path):
    """The whole script: labelled room frames at the model's size, the four probes, the JSON."""
    script = load_script("benchmarks/latent_probe.py", "latent_probe_bench")
    path = save_tiny_checkpoint(tmp_path / "tiny", model=make_tiny_model(frames_per_latent=1))
    result = script.main(["--model", str(path), "--quick", "--frames", "120", "--epochs", "1",
                          "--results-dir", str(tmp_path), "--name", "lp"])
    assert (tmp_path / "lp.json").is_file()
    assert result["frames"] == 120 and result["image_size"] == [32, 32]
    assert [(r["extractor"], r["reads"]) for r in result["rows"]] == [(n, r) for n, r, _ in script.PROBES]
    assert all(0 <= r["visible_accuracy"] <= 1 for r in result["rows"])


@pytest.mark.mujoco
def test_the_labels_are_the_targets_image_column():
    """Room frames at the asked size, the same for the same seed; a column inside the image where the target is in
    view, 0 elsewhere."""
    script = load_script("benchmarks/latent_probe.py", "latent_probe_bench")
    frames, visible, column = script.collect(300, (64, 64), seed=0)
    assert frames.shape == (300, 64, 64, 3) and frames.dtype == np.uint8
    assert visible.any() and not visible.all()
    assert np.all((column[visible] >= 0) & (column[visible] < 64)) and np.all(column[~visible] == 0)
    again = script.collect(300, (64, 64), seed=0)  # the seed decides the frames (the keys included)
    assert all(np.array_equal(a, b) for a, b in zip((frames, visible, column), again))


def test_latent_probe_refuses_bad_arguments(tmp_path):
    script = load_script("benchmarks/latent_probe.py", "latent_probe_bench")
    with pytest.raises(SystemExit):
        script.main(["--frames", "3", "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        script.main(["--model", str(tmp_path / "missing"), "--results-dir", str(tmp_path)])
