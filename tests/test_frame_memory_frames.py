"""A frame memory that holds several real context frames (``config.frame_memory_frames``): a turn back shows again
what an earlier context frame saw and the last one never did."""

import math

import numpy as np
import pytest
import torch

from conftest import make_tiny_model
from neuralsim.config import WorldModelConfig
from neuralsim.frame_memory import memory_frame_indices

TURN = np.array([0.0, 0.0, 1.0, 0.0], np.float32)  # yaw only: the rotation warp places every remembered pixel


def test_memory_frame_indices_spread_back_through_the_context():
    assert memory_frame_indices(16, 1) == []
    assert memory_frame_indices(16, 3) == [0, 7]  # beside the last (15): the first and one halfway
    assert memory_frame_indices(16, 4) == [0, 5, 10]
    assert memory_frame_indices(1, 3) == [0, 0]  # a one-frame context repeats the last frame
    with pytest.raises(ValueError, match="context_frames"):
        memory_frame_indices(0, 3)


def test_config_rejects_memory_frames_without_a_memory_or_below_one():
    with pytest.raises(ValueError, match="frame_memory_frames"):
        WorldModelConfig.from_preset("tiny", frame_memory_frames=2)  # no frame memory
    with pytest.raises(ValueError, match="frame_memory_frames"):
        WorldModelConfig.from_preset("tiny", frames_per_latent=1, frame_memory_width=4, frame_memory_frames=0)


def _turned_context(model, steps: int = 4):
    """A red first frame, then ``steps`` blue frames, each turned 30 degrees further (120 in all: the last frame
    sees none of the first's view)."""
    H, W = model.config.image_size
    frames = np.zeros((1, 1 + steps, H, W, 3), np.uint8)
    frames[:, 0, ..., 0] = 255
    frames[:, 1:, ..., 2] = 255
    return frames, np.repeat(TURN[None, None], steps, axis=1)


def _dream_back(frames_held: int, steps: int = 4):
    model = make_tiny_model(frames_per_latent=1, frame_memory_width=4, frame_memory_gate="seen",
                            camera_rotation_speed_deg=30.0, frame_memory_frames=frames_held)
    frames, actions = _turned_context(model, steps)
    g = torch.Generator().manual_seed(0)
    state = model.init_state(1, frames=frames, actions=actions, generator=g)
    for _ in range(steps):  # turn back to where the first frame was taken
        latent, state = model.step(state, -TURN[None], generator=g)
    return model, state, model.decode(latent[:, None], first_frame=False, context=state)[0, 0].numpy()


def test_an_earlier_context_frame_is_remembered_with_its_pose():
    model, state, _ = _dream_back(3)
    frames, actions = _turned_context(model)
    assert state.memory_earlier.shape == (1, 2, 3, *model.config.image_size)
    assert state.memory_earlier_pose.shape == (1, 2, 4, 4) and state.memory_earlier_pose.dtype == torch.float64
    red = torch.tensor([1.0, -1.0, -1.0])[:, None, None]
    torch.testing.assert_close(state.memory_earlier[0, 0], red.expand(3, *model.config.image_size))  # frame 0
    # frame 2 (two turns before the last): its camera 60 degrees from the last frame's, in that frame
    pose = state.memory_earlier_pose[0, 1]
    assert abs(float(torch.rad2deg(torch.arccos((pose[0, 0] + pose[1, 1] + pose[2, 2] - 1) / 2))) - 60.0) < 1e-6
    assert torch.allclose(pose[:3, 3], torch.zeros(3, dtype=pose.dtype))
    merged = state.merge(np.array([True]), state.clone())  # every field keeps the batch first
    torch.testing.assert_close(merged.memory_earlier, state.memory_earlier)


def test_turning_back_shows_the_first_context_frame_again_only_when_the_memory_holds_it():
    *_, one = _dream_back(1)
    *_, three = _dream_back(3)
    is_red = lambda img: (img[..., 0] > 250) & (img[..., 2] < 5)
    assert is_red(three).mean() > 0.9  # back at the first frame's pose: its pixels, wherever the warp sees them
    assert is_red(one).mean() < 0.05  # the last frame alone (blue, 120 degrees away) never saw that view


def test_a_one_frame_context_dreams_as_a_one_frame_memory_does():
    outputs = []
    for frames_held in (1, 3):
        model = make_tiny_model(frames_per_latent=1, frame_memory_width=4, frame_memory_gate="seen",
                                camera_rotation_speed_deg=30.0, frame_memory_frames=frames_held)
        frames, _ = _turned_context(model, steps=0)
        g = torch.Generator().manual_seed(0)
        state = model.init_state(1, frames=frames, generator=g)
        latent, state = model.step(state, TURN[None], generator=g)
        outputs.append(model.decode(latent[:, None], first_frame=False, context=state))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


def _yaw_pose(deg: float, forward: float = 0.0) -> torch.Tensor:
    a = math.radians(deg)
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    pose[2, 3] = forward
    return pose


@pytest.mark.parametrize("depth_width", [0, 8])
def test_rows_that_cannot_see_the_memory_are_skipped_and_the_rest_blend_as_before(depth_width):
    from neuralsim.frame_memory import FrameMemory

    torch.manual_seed(0)
    memory = FrameMemory(8, fovy_deg=70.0, translation_speed=0.08, depth_width=depth_width, gate="seen").eval()
    # turned 10 and 60 degrees (overlap), 120 and 180 degrees (no view in common), walked 3 m (past its range)
    rels = torch.stack([_yaw_pose(10), _yaw_pose(60), _yaw_pose(120), _yaw_pose(180), _yaw_pose(0, forward=3.0)])
    frame, remembered = torch.rand(5, 3, 32, 32) * 2 - 1, torch.rand(5, 3, 32, 32) * 2 - 1
    depth = None if not depth_width else torch.full((5, 32, 32), 2.0)
    see = memory.may_see(rels, depth, 32, 32)
    assert see.tolist() == [True, True, False, False, False]
    with torch.no_grad():
        out, gate = memory(frame, remembered, rels, depth)
        full, full_gate = memory._blend(frame, remembered, rels, depth, "seen")  # every row, as before the test
    torch.testing.assert_close(out, full)
    torch.testing.assert_close(gate, full_gate)
    assert torch.equal(out[2:], frame[2:]) and float(gate[2:].abs().max()) == 0.0
    if depth_width:  # with depth the test projects the memory's points: walked past them and turned back, it sees them
        wall = torch.full((1, 32, 32), 1.0)
        assert bool(memory.may_see(_yaw_pose(180, forward=1.5)[None], wall, 32, 32)[0])
        assert not bool(memory.may_see(_yaw_pose(180, forward=0.5)[None], wall, 32, 32)[0])  # still behind it


def test_the_depth_warps_shortcuts_give_the_reference_computation_bit_for_bit():
    """The splat's z-buffer on the depths' int32 bits, its separable 3x3 minimum, the separable 3x3 sums of the
    pinhole closing and the feathering, and one splat per call for both may_see and the warp: each equals the plain
    computation it replaces."""
    import torch.nn.functional as F

    from neuralsim.camera import _min3x3, project_depth, splat_depth, splat_lands
    from neuralsim.frame_memory import FrameMemory, _box_sum3

    torch.manual_seed(0)
    B, H, W = 6, 24, 32
    depth = 0.5 + 3 * torch.rand(B, H, W)
    rels = torch.stack([_yaw_pose(a, forward=f) for a, f in
                        [(0, 0.0), (5, 0.3), (-20, 0.1), (40, -0.2), (120, 0.0), (180, 0.5)]]).float()
    rels[:, 0, 3] = torch.linspace(-0.2, 0.2, B)
    # the float z-buffer, as splat_depth wrote it before: the four pixels around each point, nearest wins
    u, v, z, front = project_depth(rels, depth, 70.0)
    miss = B * H * W
    ref = torch.full((miss + 1,), math.inf)
    u0, v0 = u.floor().long(), v.floor().long()
    for dv in (0, 1):
        for du in (0, 1):
            ok = front & (u0 + du >= 0) & (u0 + du <= W - 1) & (v0 + dv >= 0) & (v0 + dv <= H - 1)
            index = torch.where(ok, (v0 + dv) * W + u0 + du + (torch.arange(B) * H * W)[:, None], miss)
            ref.scatter_reduce_(0, index.reshape(-1), z.reshape(-1), reduce="amin")
    ref = ref[:-1].reshape(B, H, W)
    assert torch.equal(splat_depth(rels, depth, 70.0, fill=0), ref)
    padded = F.pad(ref[:, None], (1, 1, 1, 1), value=math.inf)[:, 0]
    nine = torch.stack([padded[:, dy:dy + H, dx:dx + W] for dy in range(3) for dx in range(3)]).amin(0)
    assert torch.equal(_min3x3(ref), nine)
    assert torch.equal(torch.isfinite(ref).flatten(1).any(1), splat_lands(rels, depth, 70.0))
    seen = (torch.rand(B, 1, H, W) < 0.6).float()
    assert torch.equal(_box_sum3(seen) >= 5, F.avg_pool2d(seen, 3, stride=1, padding=1) >= 5 / 9)
    gate = torch.rand(B, 1, H, W)
    torch.testing.assert_close(_box_sum3(gate) / _box_sum3(torch.ones_like(gate[:1])),
                               F.avg_pool2d(gate, 3, stride=1, padding=1, count_include_pad=False), rtol=1e-6, atol=1e-7)
    memory = FrameMemory(8, fovy_deg=70.0, translation_speed=0.08, depth_width=8).eval()
    frame, remembered = torch.rand(B, 3, H, W) * 2 - 1, torch.rand(B, 3, H, W) * 2 - 1
    with torch.no_grad():
        out, out_gate = memory(frame, remembered, rels, depth)
        see = memory.may_see(rels, depth, H, W)  # the test may_see makes alone, and each row's blend alone
        for b in range(B):
            if see[b]:
                one, one_gate = memory._blend(frame[b:b + 1], remembered[b:b + 1], rels[b:b + 1], depth[b:b + 1], "learned")
            else:
                one, one_gate = frame[b:b + 1], torch.zeros_like(frame[b:b + 1, :1])
            torch.testing.assert_close(out[b:b + 1], one, rtol=0, atol=1e-6)
            torch.testing.assert_close(out_gate[b:b + 1], one_gate, rtol=0, atol=1e-6)
    assert see.tolist() != [True] * B and see.any()  # both kinds of rows


def test_the_warp_geometry_is_the_float64_projection_to_within_a_thousandth_of_a_pixel():
    """project_depth and reprojection_grid rotate every pixel's direction as a sum of a row and a column (one pass
    instead of a (pixels x 3) @ (3 x 3) product per camera): the same points as the plain product in float64."""
    from neuralsim.camera import _pixel_directions, camera_intrinsics, project_depth, reprojection_grid

    torch.manual_seed(1)
    B, H, W, fovy = 5, 24, 32, 70.0
    depth = 0.3 + 4 * torch.rand(B, H, W)
    rels = torch.stack([_yaw_pose(a, forward=f) for a, f in [(0, 0.0), (7, 0.2), (-35, 0.1), (90, -0.3), (170, 0.4)]])
    rels[:, 1, 3] = torch.linspace(-0.1, 0.1, B, dtype=rels.dtype)
    fx, fy, cx, cy = intrinsics = camera_intrinsics(H, W, fovy)
    dirs = _pixel_directions(H, W, intrinsics, torch.device("cpu"))  # (S, 3) float64
    R, t = rels[:, :3, :3].double(), rels[:, :3, 3].double()
    # project_depth: each remembered point, R^T (d dir - t), into the new camera's pixels
    points = (depth.reshape(B, -1, 1).double() * dirs - t[:, None]) @ R
    u, v, z, front = project_depth(rels, depth, fovy)
    torch.testing.assert_close(z, points[..., 2].float(), rtol=1e-5, atol=1e-5)
    zc = points[..., 2].clamp_min(1e-2)
    near = points[..., 2] > 0.1  # (behind the camera the pixels lie thousands of pixels off, float32's step there)
    assert (u - (fx * points[..., 0] / zc + cx))[near].abs().max() < 1e-3
    assert (v - (fy * points[..., 1] / zc + cy))[near].abs().max() < 1e-3
    assert torch.equal(front, points[..., 2] > 1e-2)
    # reprojection_grid: each new pixel, R (d dir) + t, into the previous view's grid_sample coordinates
    depth[0, :4] = math.inf  # unknown pixels move with the rotation alone
    for d in (depth, None):
        grid, far = reprojection_grid(rels, d, H, W, fovy)
        p = torch.einsum("bij,sj->bsi", R, dirs)
        if d is not None:
            dd = d.reshape(B, -1, 1).double()
            p = torch.where(torch.isfinite(dd), p * dd.nan_to_num(posinf=0) + t[:, None], p)
        pz = p[..., 2].clamp_min(1e-3)
        ref = torch.stack([(fx * p[..., 0] / pz + cx) / (W - 1) * 2 - 1, (fy * p[..., 1] / pz + cy) / (H - 1) * 2 - 1], -1)
        ahead = (p[..., 2] > 0.1).reshape(B, H, W)
        assert (grid - ref.reshape(B, H, W, 2).float())[ahead].abs().max() * (W - 1) / 2 < 1e-3  # in pixels
        if d is not None:
            known = torch.isfinite(d)
            torch.testing.assert_close(far[known], p[..., 2].reshape(B, H, W)[known].float(), rtol=1e-5, atol=1e-5)
            assert torch.isinf(far[~known]).all()
    still = torch.eye(4, dtype=torch.float64)[None]  # a still camera sees its previous frame in place
    grid, _ = reprojection_grid(still, None, H, W, fovy)
    xs, ys = torch.linspace(-1, 1, W), torch.linspace(-1, 1, H)
    torch.testing.assert_close(grid[0], torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1), rtol=0, atol=1e-6)


def test_the_memory_range_is_a_config_field_that_keeps_the_memory_longer():
    """``frame_memory_range_steps``: 0 keeps each memory's default range; a longer one keeps a walked-away camera's
    memory pixels (the default's gate has closed by then); bad values are refused naming the field."""
    from neuralsim.frame_memory import DEPTH_MAX_TRANSLATION_STEPS, MAX_TRANSLATION_STEPS, FrameMemory

    assert FrameMemory(4, 70.0, 0.08).max_translation_steps == MAX_TRANSLATION_STEPS
    assert FrameMemory(4, 70.0, 0.08, depth_width=4).max_translation_steps == DEPTH_MAX_TRANSLATION_STEPS
    torch.manual_seed(0)
    default = FrameMemory(4, 70.0, 0.08, depth_width=4, gate="seen").eval()
    longer = FrameMemory(4, 70.0, 0.08, depth_width=4, gate="seen", range_steps=64).eval()
    longer.load_state_dict(default.state_dict())
    frame, remembered = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    walked = _yaw_pose(0, forward=-30 * 0.08)[None].float()  # 30 full-speed steps back: the whole memory in view
    depth = torch.full((1, 32, 32), 2.0)
    with torch.no_grad():
        kept, gate_default = default(frame, remembered, walked, depth)
        _, gate_longer = longer(frame, remembered, walked, depth)
    assert torch.equal(kept, frame) and float(gate_default.max()) == 0.0  # past the default's 24 steps
    assert float(gate_longer.max()) == 1.0
    with pytest.raises(ValueError, match="range_steps must be 0"):
        FrameMemory(4, 70.0, 0.08, range_steps=2)
    model = make_tiny_model(frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4,
                            frame_memory_range_steps=64.0)
    assert model.frame_memory.max_translation_steps == 64.0
    for bad in (2.0, -1.0, float("nan"), True):
        with pytest.raises((TypeError, ValueError), match="frame_memory_range_steps"):
            WorldModelConfig(frames_per_latent=1, frame_memory_width=4, frame_memory_range_steps=bad)
    with pytest.raises(ValueError, match="frame_memory_range_steps"):
        WorldModelConfig(frame_memory_range_steps=64.0)  # no memory


def test_floor_depth_is_where_each_ray_meets_the_floor():
    """``camera.floor_depth``: a level camera ``h`` above the floor sees it at depth ``h * fy / (v - cy)`` on row
    ``v`` below the centre and nowhere above; looking straight down, at ``h`` in the middle; a camera lower in the
    world (+y is down) sees it nearer."""
    from neuralsim.camera import camera_intrinsics, floor_depth

    H, W, fovy, h = 16, 16, 70.0, 0.6
    fx, fy, cx, cy = camera_intrinsics(H, W, fovy)
    level = torch.eye(4, dtype=torch.float64)[None]
    d = floor_depth(level, H, W, fovy, h)
    assert d.shape == (1, H, W) and d.dtype == torch.float32
    for v in range(H):
        if v > cy:
            assert torch.allclose(d[0, v], torch.full((W,), h * fy / (v - cy)))
        else:
            assert torch.isinf(d[0, v]).all()
    down = torch.eye(4, dtype=torch.float64)
    c, s = math.cos(math.pi / 2), math.sin(math.pi / 2)  # pitched 90 degrees down: the optical axis along world +y
    down[:3, :3] = torch.tensor([[1.0, 0, 0], [0, c, s], [0, -s, c]], dtype=torch.float64)
    d = floor_depth(torch.stack([down, level[0]]), 17, 17, fovy, h)  # odd size: a pixel on the axis
    assert float(d[0, 8, 8]) == pytest.approx(h)
    lower = level.clone()
    lower[0, 1, 3] = 0.2  # 0.2 below the start camera
    assert torch.allclose(floor_depth(lower, H, W, fovy, h)[0, -1], floor_depth(level, H, W, fovy, h - 0.2)[0, -1])


def test_a_floor_caps_the_remembered_depth_beyond_it_and_nothing_else():
    """``frame_memory_floor_height``: the depth net's depth, capped where the ray meets the floor when the frame's pose
    is given; unchanged without a floor or a pose; the field is checked, naming it."""
    from neuralsim.camera import floor_depth
    from neuralsim.frame_memory import FrameMemory

    torch.manual_seed(0)
    plain = FrameMemory(4, 70.0, 0.08, depth_width=4, gate="seen").eval()
    floored = FrameMemory(4, 70.0, 0.08, depth_width=4, gate="seen", floor_height=0.6).eval()
    floored.load_state_dict(plain.state_dict())
    frame, pose = torch.rand(2, 3, 32, 32) * 2 - 1, torch.eye(4, dtype=torch.float64).expand(2, 4, 4)
    with torch.no_grad():
        free, capped = plain.memory_depth(frame), floored.memory_depth(frame, pose)
        assert torch.equal(floored.memory_depth(frame), free)  # no pose: no cap
        assert torch.equal(plain.memory_depth(frame, pose), free)  # no floor: no cap
    floor = floor_depth(pose, 32, 32, 70.0, 0.6)
    assert torch.equal(capped, torch.minimum(free, floor))
    assert torch.equal(capped[:, :16], free[:, :16])  # above the horizon nothing changes
    assert bool((capped < free).any())  # the net's far floor pixels come back to the floor
    with pytest.raises(ValueError, match="floor_height"):
        FrameMemory(4, 70.0, 0.08, floor_height=0.6)  # no depth net: no depth to cap
    with pytest.raises(ValueError, match="floor_height"):
        FrameMemory(4, 70.0, 0.08, depth_width=4, floor_height=-1.0)
    for bad in (-0.5, float("nan"), float("inf"), True, "0.6"):
        with pytest.raises((TypeError, ValueError), match="frame_memory_floor_height"):
            WorldModelConfig(frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4,
                             frame_memory_floor_height=bad)
    with pytest.raises(ValueError, match="frame_memory_floor_height"):
        WorldModelConfig(frames_per_latent=1, frame_memory_width=4, frame_memory_floor_height=0.6)  # no depth net


def test_a_models_remembered_frames_respect_its_floor():
    """Through ``init_state``: every remembered frame's depth (the last and the earlier ones) lies on or before the
    floor seen from that frame's pose, and the config round-trips the field."""
    from neuralsim.camera import floor_depth

    model = make_tiny_model(frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4,
                            frame_memory_gate="seen", frame_memory_frames=3, frame_memory_floor_height=0.05)
    assert WorldModelConfig.from_dict(model.config.to_dict()).frame_memory_floor_height == 0.05
    H, W = model.config.image_size
    frames = np.random.default_rng(0).integers(0, 256, (1, 5, H, W, 3), dtype=np.uint8)
    walk = np.repeat(np.array([[[1.0, 0.0, 0.5, -0.5]]], np.float32), 4, axis=1)  # forward, turning, pitching down
    state = model.init_state(1, frames=frames, actions=walk, generator=torch.Generator().manual_seed(0))
    fovy = model.config.camera_fovy_deg
    last = floor_depth(state.memory_c2w, H, W, fovy, 0.05)
    assert bool((state.memory_depth <= last).all()) and bool(torch.isfinite(last).any())
    earlier_c2w = state.memory_c2w.double()[:, None] @ state.memory_earlier_pose  # the earlier frames' own poses
    earlier = floor_depth(earlier_c2w.flatten(0, 1), H, W, fovy, 0.05).view_as(state.memory_earlier_depth)
    assert bool((state.memory_earlier_depth <= earlier).all())
