"""The frame memory's floor net and its standing depth (``frame_memory_floor_net_width``): floor pixels at the floor's
depth, everything else standing where its column meets the floor; examples/finetune_floor.py trains the net."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, make_tiny_model, model_weights

from neuralsim.config import WorldModelConfig
from neuralsim.frame_memory import FloorNet, FrameMemory, standing_depth

SCRIPT = ROOT / "examples" / "finetune_floor.py"
INF = math.inf


def test_standing_depth_puts_the_floor_on_its_plane_and_stands_the_rest_on_it():
    # one column, top to bottom: above the horizon (no floor), a wall, a ball, the floor, a near object cut off
    floor = torch.tensor([INF, 6.0, 4.0, 3.0, 2.0, 1.5, 0.5, 0.4]).view(1, 8, 1)
    net = torch.tensor([7.0, 7.0, 7.0, 3.5, 2.5, 2.0, 0.9, 0.9]).view(1, 8, 1)
    is_floor = torch.tensor([False, False, False, False, False, True, False, False]).view(1, 8, 1)
    out = standing_depth(net, floor, is_floor, min_depth=1.0)[0, :, 0]
    # rows 0-4 stand where the floor shows at row 5 (1.5 m): the net's 7 m wall-like depth of the ball is gone
    assert out[:5].tolist() == [1.5] * 5
    assert out[5].item() == 1.5  # the floor pixel: the floor's depth
    # rows 6-7: no floor below them in the column: the net's depth, capped at the floor
    assert out[6:].tolist() == pytest.approx([0.5, 0.4])
    # a stand nearer than min_depth keeps the net's depth (capped): something the agent may be pushing
    near = standing_depth(net, floor, is_floor, min_depth=2.0)[0, :, 0]
    assert near[0].item() == 7.0 and near[3].item() == 3.0 and near[4].item() == 2.0 and near[5].item() == 1.5


def test_standing_depth_is_per_column_and_batched():
    torch.manual_seed(0)
    net = torch.rand(3, 16, 8) * 5 + 0.5
    floor = torch.linspace(10, 0.6, 16).view(1, 16, 1).expand(3, 16, 8).clone()
    floor[:, :4] = INF
    is_floor = torch.rand(3, 16, 8) < 0.3
    out = standing_depth(net, floor, is_floor, 0.0)
    for b in range(3):
        for c in range(8):
            col = standing_depth(net[b : b + 1, :, c : c + 1], floor[b : b + 1, :, c : c + 1],
                                 is_floor[b : b + 1, :, c : c + 1], 0.0)
            assert torch.equal(out[b, :, c], col[0, :, 0])
    assert torch.isfinite(out).all()  # a floor marked above the horizon is no floor: nothing becomes infinite
    below = is_floor & torch.isfinite(floor)
    assert torch.equal(out[below], floor[below])


def test_floor_net_shapes_and_the_memory_uses_it_only_with_a_pose():
    torch.manual_seed(0)
    net = FloorNet(4)
    frame = torch.rand(2, 3, 32, 32) * 2 - 1
    assert net(frame).shape == (2, 32, 32) and net(frame).dtype == torch.float32
    memory = FrameMemory(4, 70.0, 0.08, depth_width=4, gate="seen", floor_height=0.6, floor_net_width=4).eval()
    capped = FrameMemory(4, 70.0, 0.08, depth_width=4, gate="seen", floor_height=0.6).eval()
    capped.load_state_dict({k: v for k, v in memory.state_dict().items() if not k.startswith("floor_net.")})
    pose = torch.eye(4, dtype=torch.float64).expand(2, 4, 4)
    with torch.no_grad():
        assert torch.equal(memory.memory_depth(frame), capped.memory_depth(frame))  # no pose: the net's depth
        from neuralsim.camera import floor_depth

        floor = floor_depth(pose, 32, 32, 70.0, 0.6)
        expected = standing_depth(capped.depth(frame), floor, memory.floor_net(frame) > 0, 1.0)
        assert torch.equal(memory.memory_depth(frame, pose), expected)
    with pytest.raises(ValueError, match="floor_net_width"):
        FrameMemory(4, 70.0, 0.08, depth_width=4, floor_net_width=4)  # no floor
    with pytest.raises(ValueError, match="stand_min_depth"):
        FrameMemory(4, 70.0, 0.08, depth_width=4, floor_height=0.6, floor_net_width=4, stand_min_depth=-1.0)


def test_config_checks_the_floor_net_fields_by_name():
    base = dict(frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4)
    for bad in (-1, 1.5, True, "4"):
        with pytest.raises((TypeError, ValueError), match="frame_memory_floor_net_width"):
            WorldModelConfig(**base, frame_memory_floor_height=0.6, frame_memory_floor_net_width=bad)
    with pytest.raises(ValueError, match="frame_memory_floor_net_width"):
        WorldModelConfig(**base, frame_memory_floor_net_width=4)  # no floor
    for bad in (-0.1, float("nan"), float("inf"), True):
        with pytest.raises((TypeError, ValueError), match="frame_memory_stand_min_depth"):
            WorldModelConfig(**base, frame_memory_stand_min_depth=bad)
    cfg = WorldModelConfig(**base, frame_memory_floor_height=0.6, frame_memory_floor_net_width=4,
                           frame_memory_stand_min_depth=0.8)
    again = WorldModelConfig.from_dict(cfg.to_dict())
    assert again.frame_memory_floor_net_width == 4 and again.frame_memory_stand_min_depth == 0.8


def test_a_model_with_a_floor_net_saves_and_loads_it(tmp_path):
    model = make_tiny_model(frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4,
                            frame_memory_gate="seen", frame_memory_floor_height=0.05, frame_memory_floor_net_width=4)
    assert isinstance(model.frame_memory.floor_net, FloorNet)
    model.save_pretrained(tmp_path / "m")
    weights = model_weights(tmp_path / "m")
    assert any(k.startswith("frame_memory.floor_net.") for k in weights)
    from neuralsim.model import WorldModel

    loaded = WorldModel.from_pretrained(tmp_path / "m")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    H, W = model.config.image_size
    frames = np.random.default_rng(0).integers(0, 256, (1, 5, H, W, 3), dtype=np.uint8)
    walk = np.repeat(np.array([[[1.0, 0.0, 0.5, -0.5]]], np.float32), 4, axis=1)
    state = loaded.init_state(1, frames=frames, actions=walk, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(state.memory_depth).all() and state.memory_depth.shape == (1, H, W)


@pytest.mark.mujoco
def test_room_floor_mask_marks_the_floor_below_the_horizon():
    import gymnasium as gym

    import neuralsim.envs  # noqa: F401

    env = gym.make("NeuralSimRoom-v0", image_size=(32, 32)).unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.floor_mask()
    frame, _ = env.reset(seed=0)
    mask = env.floor_mask()
    assert mask.shape == (32, 32) and mask.dtype == bool
    assert not mask[:15].any()  # a level camera sees no floor above the horizon
    assert mask[-1].mean() > 0.5  # and mostly floor along the bottom row
    again, _ = env.reset(seed=0)
    assert (again == frame).all() and (env.floor_mask() == mask).all()  # rendering the mask changes no frame
    env.close()


@pytest.mark.mujoco
def test_finetune_floor_trains_the_floor_net_alone_and_sets_the_config(tmp_path):
    from neuralsim.data import collect
    from neuralsim.model import WorldModel

    data = tmp_path / "room"
    collect("NeuralSimRoom-v0", data, episodes=1, max_steps=8, image_size=32, progress=False)
    base = tmp_path / "base"
    make_tiny_model(frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4).save_pretrained(base)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(SCRIPT), "--model", str(base), "--data", str(data), "--frames", "32",
                             "--eval-frames", "8", "--width", "4", "--floor-height", "0.6", "--steps", "40",
                             "--batch-size", "8", "--flip", "--stand-min-depth", "1.2", "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    before, after = model_weights(base), model_weights(out)
    assert {k for k in before if not torch.equal(before[k], after[k])} == set()  # every weight it had, unchanged
    assert {k for k in after if k not in before} and all(k.startswith("frame_memory.floor_net.")
                                                          for k in after if k not in before)
    model = WorldModel.from_pretrained(out)
    assert model.config.frame_memory_floor_net_width == 4 and model.config.frame_memory_floor_height == 0.6
    assert model.config.frame_memory_stand_min_depth == 1.2 and model.frame_memory.stand_min_depth == 1.2
    held = model.config.provenance["floor_finetune"]["held_out"]
    assert 0.5 < held["pixel_accuracy"] <= 1.0  # better than a coin on 40 steps of a tiny room
    # bad input: one message naming the option
    bad = subprocess.run([sys.executable, str(SCRIPT), "--model", str(base), "--data", str(data), "--out",
                          str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode != 0 and "--floor-height" in bad.stderr
