"""examples/finetune_depth.py: the frame memory's depth net trained on the room's true depth, the rest unchanged."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, load_script, make_tiny_model, model_weights

SCRIPT = ROOT / "examples" / "finetune_depth.py"


@pytest.mark.mujoco
def test_frames_with_labels_is_seeded_and_refuses_an_unknown_label(tmp_path):
    from neuralsim.data import collect, frames_with_labels

    data = tmp_path / "room"
    collect("NeuralSimRoom-v0", data, episodes=1, max_steps=5, image_size=32, progress=False)
    frames, depth = frames_with_labels(data, "depth_map", 12, first_seed=3)
    assert frames.shape == (12, 32, 32, 3) and frames.dtype == np.uint8 and depth.shape == (12, 32, 32)
    assert np.isfinite(depth).all() and (depth > 0).all()
    again, again_depth = frames_with_labels(data, "depth_map", 12, first_seed=3)
    assert (again == frames).all() and (again_depth == depth).all()  # seeded: the same frames every run
    with pytest.raises(ValueError, match="has no camera_pose_of_the_moon"):
        frames_with_labels(data, "camera_pose_of_the_moon", 4, first_seed=0)
    with pytest.raises(ValueError, match="count must be >= 1"):
        frames_with_labels(data, "depth_map", 0, first_seed=0)
    sticky, _ = frames_with_labels(data, "depth_map", 12, first_seed=3, policy="sticky")
    assert sticky.shape == frames.shape and (sticky[0] == frames[0]).all()  # the same layout and start
    assert not (sticky == frames).all()  # seen under other actions
    with pytest.raises(ValueError, match="policy must be one of random, sticky, explore"):
        frames_with_labels(data, "depth_map", 4, first_seed=0, policy="dance")


def _room_and_depth_model(tmp_path):
    """A one-episode room dataset and a tiny model with a depth-aware frame memory (width 4), saved under tmp_path."""
    from neuralsim.data import collect

    data = tmp_path / "room"
    collect("NeuralSimRoom-v0", data, episodes=1, max_steps=8, image_size=32, progress=False)
    base = tmp_path / "base"
    make_tiny_model(frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4).save_pretrained(base)
    return data, base


@pytest.mark.mujoco
def test_finetune_depth_trains_the_depth_net_alone_toward_the_true_depth(tmp_path):
    data, base = _room_and_depth_model(tmp_path)
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(SCRIPT), "--model", str(base), "--data", str(data), "--frames", "32",
                    "--steps", "60", "--batch-size", "8", "--lr", "3e-3", "--out", str(out)],
                   check=True, capture_output=True, text=True)
    before, after = model_weights(base), model_weights(out)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("frame_memory.depth.") for k in changed)  # the depth net, nothing else
    log = [line.split(",") for line in (out / "depth_finetune.csv").read_text().splitlines()[1:]]
    assert float(log[-1][1]) < float(log[0][1])  # the log-depth error fell
    record = json.loads((out / "config.json").read_text())["provenance"]["depth_finetune"]
    assert record["frames"] == 32 and record["steps"] == 60 and record["policies"] is None and "before" not in record


@pytest.mark.mujoco
def test_collect_depth_frames_splits_the_frames_over_policies(tmp_path):
    from neuralsim.data import collect

    data = tmp_path / "room"
    collect("NeuralSimRoom-v0", data, episodes=1, max_steps=5, image_size=32, progress=False)
    script = load_script(SCRIPT, "finetune_depth_under_test")
    frames, depth = script.collect_depth_frames(str(data), 7, 3, ("explore", "sticky"))
    assert frames.shape == (7, 32, 32, 3) and depth.shape == (7, 32, 32) and depth.dtype == np.float32
    explore, _ = script.collect_depth_frames(str(data), 4, 3)
    assert (frames[:4] == explore).all()  # the first policy's share: its frames alone, as without --policies


def test_finetune_depth_needs_a_model_with_a_depth_net(tmp_path, dataset):
    base = tmp_path / "base"
    make_tiny_model(frames_per_latent=1).save_pretrained(base)
    bad = subprocess.run([sys.executable, str(SCRIPT), "--model", str(base), "--data", str(dataset), "--steps", "1",
                          "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode != 0 and "--model needs a frame memory with a depth net" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_loss_weights_mark_depth_edges_and_object_pixels():
    script = load_script(SCRIPT, "finetune_depth_weights")
    log_depth = torch.zeros(1, 8, 8)
    log_depth[:, :, 4:] = math.log(2.0)  # a wall twice as far on the right half: an edge between columns 3 and 4
    objects = torch.zeros(1, 8, 8, dtype=torch.bool)
    objects[:, 0, 0] = True
    w = script.loss_weights(log_depth, objects, edge_weight=3.0, object_weight=5.0)
    assert torch.equal(w[0, 4, 2:6], torch.full((4,), 4.0))  # within a pixel of the pixels on either side
    assert float(w[0, 4, 1]) == 1.0 and float(w[0, 4, 6]) == 1.0  # flat depth elsewhere
    assert float(w[0, 0, 0]) == 6.0  # an object pixel, away from the edge
    assert torch.equal(script.loss_weights(log_depth, None, 0.0, 0.0), torch.ones(1, 8, 8))  # the plain L1


@pytest.mark.mujoco
def test_finetune_depth_can_start_a_wider_net_with_weighted_mirrored_batches(tmp_path):
    from neuralsim.model import WorldModel

    data, base = _room_and_depth_model(tmp_path)
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(SCRIPT), "--model", str(base), "--data", str(data), "--frames", "32",
                    "--steps", "40", "--batch-size", "8", "--lr", "3e-3", "--width", "6", "--edge-weight", "2",
                    "--object-weight", "2", "--flip", "--out", str(out)], check=True, capture_output=True, text=True)
    model = WorldModel.from_pretrained(out)
    assert model.config.frame_memory_depth_width == 6 and model.frame_memory.depth.down1[0].out_channels == 6
    record = json.loads((out / "config.json").read_text())["provenance"]["depth_finetune"]
    assert record["width"] == 6 and record["edge_weight"] == 2 and record["object_weight"] == 2 and record["flip"]
    before, after = model_weights(base), model_weights(out)
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("frame_memory.depth."))
    bad = subprocess.run([sys.executable, str(SCRIPT), "--model", str(base), "--data", str(data), "--width", "-1",
                          "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode != 0 and "--width, --refine, --edge-weight and --object-weight must be >= 0" in bad.stderr


def test_a_full_resolution_correction_starts_as_a_no_op_and_is_validated():
    from neuralsim.config import WorldModelConfig
    from neuralsim.frame_memory import DepthNet

    torch.manual_seed(0)
    plain = DepthNet(4)
    grown = DepthNet(4, refine=3)
    missing, unexpected = grown.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and set(missing) == {"refine.0.weight", "refine.0.bias", "refine.2.weight", "refine.2.bias"}
    frame = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(grown(frame), plain(frame))  # its last layer starts at zero
    with torch.no_grad():
        grown.refine[-1].bias.fill_(0.5)  # trained, it changes the depth at full resolution
    assert grown(frame).shape == (2, 16, 16) and not torch.allclose(grown(frame), plain(frame))
    with pytest.raises(ValueError, match="frame_memory_depth_refine"):
        WorldModelConfig(frame_memory_depth_refine=4)  # no depth net to correct
    with pytest.raises(ValueError, match="frame_memory_depth_refine"):
        WorldModelConfig(camera=True, frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4,
                         frame_memory_depth_refine=-1)


@pytest.mark.mujoco
def test_finetune_depth_can_add_a_full_resolution_correction(tmp_path):
    from neuralsim.model import WorldModel

    data, base = _room_and_depth_model(tmp_path)
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(SCRIPT), "--model", str(base), "--data", str(data), "--frames", "32",
                    "--steps", "30", "--batch-size", "8", "--lr", "3e-3", "--refine", "5", "--out", str(out)],
                   check=True, capture_output=True, text=True)
    model = WorldModel.from_pretrained(out)
    assert model.config.frame_memory_depth_refine == 5 and model.frame_memory.depth.refine[0].out_channels == 5
    assert json.loads((out / "config.json").read_text())["provenance"]["depth_finetune"]["refine"] == 5
    before, after = model_weights(base), model_weights(out)
    assert set(after) - set(before) == {k for k in after if k.startswith("frame_memory.depth.refine.")}
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("frame_memory.depth."))
    again = subprocess.run([sys.executable, str(SCRIPT), "--model", str(out), "--data", str(data), "--refine", "7",
                            "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert again.returncode != 0 and "has a correction of width 5 already" in again.stderr
