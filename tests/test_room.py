"""NeuralSimRoom-v0: the spec in its docstring, Gymnasium conformance, determinism, key semantics, physics, task."""

from __future__ import annotations

import doctest
import math
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("mujoco")

import gymnasium as gym  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402

import neuralsim  # noqa: E402,F401
from neuralsim import actions as A  # noqa: E402
from neuralsim.envs import room as room_module  # noqa: E402
from neuralsim.envs.room import NeuralSimRoomEnv  # noqa: E402

pytestmark = pytest.mark.mujoco


def make(**kwargs) -> NeuralSimRoomEnv:
    return gym.make("NeuralSimRoom-v0", **kwargs).unwrapped


def open_space_seed(env: NeuralSimRoomEnv, clearance: float = 1.6) -> int:
    """First seed whose objects are all ``clearance`` away from the room centre."""
    for seed in range(200):
        env.reset(seed=seed, options={"agent_xy": (0.0, 0.0)})
        if np.all(np.linalg.norm(env.privileged_state()["objects"], axis=1) > clearance):
            return seed
    raise AssertionError("no open-space seed")


@pytest.fixture(scope="module")
def env():
    e = make(render_mode="rgb_array")
    yield e
    e.close()


# ---------------------------------------------------------------------------------------------- spec


def test_docstring_documents_the_real_spaces():
    doc = NeuralSimRoomEnv.__doc__
    for heading in ("Description", "Action Space", "Observation Space", "Rewards", "Starting State", "Episode End", "Arguments", "Version History"):
        assert f"## {heading}" in doc
    cont, disc, small = make(), make(action_type="discrete"), make(image_size=(48, 80))
    assert str(cont.action_space) == "Box(-1.0, 1.0, (4,), float32)" and str(cont.action_space) in doc
    assert str(disc.action_space) == f"Discrete({len(A.DISCRETE_KEYSETS)})" and str(disc.action_space) in doc
    assert str(cont.observation_space) == "Box(0, 255, (64, 64, 3), uint8)" and str(cont.observation_space) in doc
    assert small.observation_space.shape == (48, 80, 3)
    table = [line for line in doc.splitlines() if line.strip().startswith("| keys")][0]
    assert [c.strip() for c in table.split("|")[2:-1]] == [k or "none" for k in A.DISCRETE_KEYSETS]
    assert f"{cont.translation_speed} m" in doc and f"{cont.rotation_speed_deg:g}°" in doc
    assert f"``max_episode_steps`` ({NeuralSimRoomEnv().max_episode_steps})" in doc
    assert f"``reach_radius`` ({cont.reach_radius:g})" in doc and f"(default {cont.success_pixels})" in doc
    for e in (cont, disc, small):
        e.close()


def test_docstring_example_runs():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(NeuralSimRoomEnv, "NeuralSimRoomEnv", globs={}):
        runner.run(test)
    assert runner.failures == 0 and runner.tries >= 5


@pytest.mark.parametrize("kwargs", [{"render_mode": "rgb_array"}, {"action_type": "discrete", "image_size": (48, 80)}, {},
                                    {"soft_body": True}])
def test_check_env(kwargs):
    e = make(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails
        check_env(e)
    e.close()


def test_argument_errors():
    with pytest.raises(ValueError, match="action_type"):
        make(action_type="keys")
    with pytest.raises(ValueError, match="image_size"):
        make(image_size=(64,))
    with pytest.raises(ValueError, match="render_mode"):
        NeuralSimRoomEnv(render_mode="human")
    with pytest.raises(ValueError, match="max_episode_steps"):
        NeuralSimRoomEnv(max_episode_steps=0)
    with pytest.raises(ValueError, match="ball_start"):
        NeuralSimRoomEnv(ball_start="rolling")
    e = make()
    with pytest.raises(RuntimeError, match="reset"):
        e.step(np.zeros(4, np.float32))
    e.reset(seed=0)
    with pytest.raises(ValueError, match="action must be 4 finite floats"):
        e.step(np.zeros(3))
    with pytest.raises(ValueError, match="agent_xy"):
        e.reset(seed=0, options={"agent_xy": (10.0, 0.0)})
    with pytest.raises(ValueError, match="unknown keys"):
        e.reset(seed=0, options={"spawn": 1})
    e.close()
    d = make(action_type="discrete")
    d.reset(seed=0)
    with pytest.raises(ValueError, match=r"integer in \[0, 11\)"):
        d.step(11)
    d.close()


def test_missing_mujoco_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "mujoco", None)
    with pytest.raises(ImportError, match=r'pip install "neuralsim\[mujoco\]"'):
        room_module._import_mujoco()


# ---------------------------------------------------------------------------------------------- determinism


def rollout(seed: int, n: int = 40, **kwargs) -> tuple[list[np.ndarray], list[float], list[str]]:
    e = make(**kwargs)
    obs, info = e.reset(seed=seed)
    rng = np.random.default_rng(seed)
    frames, rewards = [obs], []
    for _ in range(n):
        obs, r, term, trunc, info = e.step(rng.uniform(-1, 1, 4).astype(np.float32))
        frames.append(obs)
        rewards.append(r)
        if term or trunc:
            break
    e.close()
    return frames, rewards, [info["description"]]


def test_same_seed_same_bits_other_seed_other_world():
    a, b, c = rollout(7), rollout(7), rollout(8)
    assert len(a[0]) == len(b[0]) and all(np.array_equal(x, y) for x, y in zip(a[0], b[0]))
    assert a[1] == b[1] and a[2] == b[2]
    assert not np.array_equal(a[0][0], c[0][0]) and a[2] != c[2]


def test_unseeded_reset_draws_a_new_layout(env):
    _, info0 = env.reset(seed=0)
    _, info1 = env.reset()
    _, info0_again = env.reset(seed=0)
    assert info0["description"] != info1["description"]
    assert info0["description"] == info0_again["description"]


def test_discrete_keys_equal_continuous_key_vectors():
    keys = "w-6,wl-4,a-3,i-2,j-5,s-2,d-3,k-2,wj-3,none-2"
    cont, disc = make(), make(action_type="discrete")
    oc, _ = cont.reset(seed=3)
    od, _ = disc.reset(seed=3)
    assert np.array_equal(oc, od)
    fc, rc, *_ = cont.step_keys(keys)
    fd, rd, *_ = disc.step_keys(keys)
    assert np.array_equal(fc, fd) and np.array_equal(rc, rd)
    cont.close()
    disc.close()


# ---------------------------------------------------------------------------------------------- camera & keys


def relative(p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    return np.linalg.inv(p0.astype(np.float64)) @ p1.astype(np.float64)


def test_info_contents(env):
    obs, info = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    assert set(info) >= {"description", "target", "pose", "camera", "intrinsics", "target_distance", "success"}
    assert info["target"] in info["description"] and info["description"].endswith(f"target: {info['target']}")
    assert any(f"{c} ball" in info["description"] for c in room_module.COLOURS)
    pose = info["pose"]
    assert pose.shape == (4, 4) and pose.dtype == np.float32
    np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-5)
    assert np.linalg.det(pose[:3, :3]) == pytest.approx(1.0, abs=1e-5)
    assert pose[1, 3] == pytest.approx(-room_module.CAMERA_HEIGHT)  # +Y is down: the camera is above the floor
    np.testing.assert_array_equal(info["camera"], A.pose_to_camera_vector(pose, info["intrinsics"]))
    assert info["intrinsics"][2:].tolist() == [32.0, 32.0]
    assert info["target_distance"] > 1.0 and info["success"] is False
    np.testing.assert_array_equal(env.render(), obs)


def test_yaw_and_pitch_follow_the_dsl_exactly():
    e = make()
    seed = open_space_seed(e)
    _, info = e.reset(seed=seed, options={"agent_xy": (0.0, 0.0), "agent_yaw": 0.3})
    p0 = info["pose"]
    keys = "l-5,i-4,j-9,k-2,i-30"  # the last segment runs into the ±85° pitch limit
    *_, info = e.step_keys(keys)
    expected = A.action_string_to_c2w(keys, rotation_speed_deg=e.rotation_speed_deg)[-1]
    np.testing.assert_allclose(relative(p0, info["pose"])[:3, :3], expected[:3, :3], atol=1e-4)
    assert math.degrees(e.privileged_state()["pitch"]) == pytest.approx(84.0)
    e.close()


@pytest.mark.parametrize("keys,axis,sign", [("w", 2, 1), ("s", 2, -1), ("d", 0, 1), ("a", 0, -1)])
def test_translation_keys_move_along_camera_axes(keys, axis, sign):
    e = make()
    seed = open_space_seed(e)
    _, info0 = e.reset(seed=seed, options={"agent_xy": (0.0, 0.0), "agent_yaw": 1.0})
    *_, info8 = e.step_keys(f"{keys}-8")
    move = relative(info0["pose"], info8["pose"])[:3, 3]
    full = 8 * e.translation_speed
    assert 0.85 * full < sign * move[axis] < 1.01 * full  # physical: a little lag from rest
    assert np.abs(np.delete(move, axis)).max() < 0.02 * full
    # Same direction as the DSL integrator.
    dsl = A.action_string_to_c2w(f"{keys}-8", translation_speed=e.translation_speed)[-1][:3, 3]
    assert np.dot(dsl, move) / (np.linalg.norm(dsl) * np.linalg.norm(move)) > 0.999
    e.close()


def test_walls_block_the_agent():
    e = make()
    e.reset(seed=0, options={"agent_xy": (e.room_half - 0.5, 0.0), "agent_yaw": 0.0})  # facing the east wall
    e.step_keys("w-40")
    x = e.privileged_state()["agent_xy"][0]
    assert e.room_half - room_module.AGENT_RADIUS - 0.03 < x < e.room_half
    e.close()


# ---------------------------------------------------------------------------------------------- physics & task


def test_ball_moves_and_boxes_can_be_pushed():
    e = make(ball_start="thrown")
    e.reset(seed=5)
    s0 = e.privileged_state()
    e.step_keys("none-20")
    s1 = e.privileged_state()
    assert np.linalg.norm(s1["objects"][0] - s0["objects"][0]) > 0.02  # a thrown ball rolls by itself
    np.testing.assert_allclose(s1["objects"][1:], s0["objects"][1:], atol=1e-3)  # boxes rest
    # Walk into box 1 from 1 m away, aiming at its centre.
    box = s1["objects"][1]
    direction = -box / max(np.linalg.norm(box), 1e-6)  # start on the room-centre side of the box
    start = box + direction * 1.0
    yaw = math.atan2(-direction[1], -direction[0])
    e.reset(seed=5, options={"agent_xy": tuple(start), "agent_yaw": yaw})
    before = e.privileged_state()["objects"][1].copy()
    e.step_keys("w-25")
    after = e.privileged_state()["objects"][1]
    assert np.linalg.norm(after - before) > 0.2
    e.close()


def test_ball_start_rest_keeps_the_seeds_room_and_the_ball_still():
    """The default task (since 2026-12-07) starts the ball still; ``ball_start="thrown"`` throws it in the same room."""
    thrown, rest = make(ball_start="thrown"), make()
    assert rest.ball_start == "rest" and thrown.ball_start == "thrown"
    _, info_thrown = thrown.reset(seed=5)
    _, info_rest = rest.reset(seed=5)
    assert {k: v for k, v in rest.layout.items() if not k.startswith("ball_")} == \
        {k: v for k, v in thrown.layout.items() if not k.startswith("ball_")}  # the same room and start
    assert info_rest["description"] == info_thrown["description"]
    assert rest.layout["ball_height"] == 0.0 and rest.layout["ball_velocity"] == [0.0, 0.0]
    s0 = rest.privileged_state()
    rest.step_keys("none-20")
    np.testing.assert_allclose(rest.privileged_state()["objects"][0], s0["objects"][0], atol=1e-3)  # the ball stays
    assert thrown.layout["ball_height"] > 0.0 or thrown.layout["ball_velocity"] != [0.0, 0.0]
    assert "ball_start" in NeuralSimRoomEnv.TASK_OPTIONS  # a task option: a world model of the room serves both
    thrown.close()
    rest.close()


def test_fixed_target():
    e = make(target="box1")
    for seed in range(5):
        _, info = e.reset(seed=seed)
        assert e.layout["target"] == 2 and info["target"].endswith(" box") and info["description"].endswith(info["target"])
    e.close()
    with pytest.raises(ValueError, match=r"target must be None \(drawn per layout\) or one of \['ball', 'box0'"):
        make(target="sofa")


def _target_pixels(e) -> int:
    seg = e._renderer.render_segmentation(e.model, e.data, e._scene_option)
    return int((seg[..., 0] == e._obj_geom[e._target]).sum())


def test_default_task_is_the_ball_started_in_view():
    e = make()
    seen = 0
    for seed in range(20):
        _, info = e.reset(seed=seed)
        s = e.privileged_state()
        delta = s["objects"][s["target"]] - s["agent_xy"]
        off = math.degrees(math.remainder(math.atan2(delta[1], delta[0]) - s["agent_yaw"], 2 * math.pi))
        assert e.layout["target"] == 0 and info["target"].endswith(" ball") and abs(off) <= 25.0 + 1e-6
        seen += _target_pixels(e) > 0
    assert seen >= 18  # a box may stand in front of it
    e.close()


def test_start_view_none_and_target_none_give_the_earlier_rooms():
    """``target=None, start_view_deg=None`` draws the layouts of earlier datasets; ``start_view_deg`` changes only the
    start heading of a seed's room."""
    old, new = make(target=None, start_view_deg=None), make(target=None)
    for seed in range(5):
        _, a = old.reset(seed=seed)
        _, b = new.reset(seed=seed)
        assert a["description"] == b["description"]
        assert {k: v for k, v in old.layout.items() if k != "agent_yaw"} == {k: v for k, v in new.layout.items() if k != "agent_yaw"}
    old.close()
    new.close()
    for bad in (-1.0, 181, "25", True):
        with pytest.raises(ValueError, match="start_view_deg must be None"):
            make(start_view_deg=bad)


def test_soft_body_same_layout_and_deforms_when_pushed():
    soft, plain = make(soft_body=True), make()
    _, info = soft.reset(seed=4)
    plain.reset(seed=4)
    assert {k: v for k, v in soft.layout.items() if not k.startswith("soft") and k != "description"} == \
        {k: v for k, v in plain.layout.items() if k != "description"}  # drawn last: the rest of the room is unchanged
    assert f"a {soft.layout['soft_colour']} soft cube" in info["description"] or \
        f"an {soft.layout['soft_colour']} soft cube" in info["description"]
    cube = np.asarray(soft.layout["soft_position"])
    direction = -cube / max(np.linalg.norm(cube), 1e-6)  # walk at it from the room-centre side
    start = cube + direction * 0.8
    soft.reset(seed=4, options={"agent_xy": tuple(start), "agent_yaw": math.atan2(-direction[1], -direction[0])})
    rest = soft.data.flexvert_xpos.copy()
    edges = lambda v: np.linalg.norm(v[None] - v[:, None], axis=-1)[np.triu_indices(8, 1)]  # noqa: E731
    frames, squash = [], 0.0
    for _ in range(25):
        frames.append(soft.step(np.array([1, 0, 0, 0], np.float32))[0])
        squash = max(squash, np.abs(edges(soft.data.flexvert_xpos) - edges(rest)).max())
    assert np.linalg.norm(soft.data.flexvert_xpos.mean(0)[:2] - rest.mean(0)[:2]) > 0.1  # pushed
    assert squash > 0.05  # and squashed: distances between its vertices changed by centimetres
    again = make(soft_body=True)
    again.reset(seed=4, options={"agent_xy": tuple(start), "agent_yaw": math.atan2(-direction[1], -direction[0])})
    np.testing.assert_array_equal(again.step_keys("w-25")[0], np.stack(frames))  # deterministic
    for e in (soft, plain, again):
        e.close()


def test_reaching_the_target_terminates_with_bonus():
    e = make()
    _, info = e.reset(seed=2)
    d0 = info["target_distance"]
    total, steps = 0.0, 0
    while True:
        s = e.privileged_state()
        delta = s["objects"][s["target"]] - s["agent_xy"]
        err = math.remainder(math.atan2(delta[1], delta[0]) - s["agent_yaw"], 2 * math.pi)
        yaw_right = float(np.clip(-err / math.radians(e.rotation_speed_deg), -1, 1))
        _, r, term, trunc, info = e.step(np.array([1.0 if abs(err) < 0.3 else 0.0, 0.0, yaw_right, 0.0], np.float32))
        total += r
        steps += 1
        if term or trunc:
            break
    assert term and not trunc and info["success"] and info["target_distance"] <= e.reach_radius
    assert r >= e.success_bonus - 1.0
    assert total == pytest.approx(e.progress_reward_scale * (d0 - info["target_distance"]) + e.success_bonus, rel=1e-4)
    e.close()


def test_success_needs_the_target_in_view():
    """Within reach_radius with the ball behind the camera the episode goes on; turned to face it, it ends, and the
    frame of that step shows the ball (success_pixels); success_pixels=None is the distance alone."""
    e = make()
    e.reset(seed=5)
    ball = np.asarray(e.privileged_state()["objects"][0])
    away = ball / max(np.linalg.norm(ball), 1e-6)  # toward the wall behind the ball seen from the centre: free floor
    start = ball - 0.7 * away  # 0.7 m from the ball, on the room-centre side
    facing_away = math.atan2(-away[1], -away[0])
    e.reset(seed=5, options={"agent_xy": tuple(start), "agent_yaw": facing_away})
    e.data.qvel[e._obj_qvel[0] : e._obj_qvel[0] + 6] = 0.0  # the ball stays put (it starts rolling)
    _, _, term, _, info = e.step(np.zeros(4, np.float32))
    assert info["target_distance"] <= e.reach_radius and e.visible_pixels()["ball"] == 0 and not term
    for _ in range(60):  # turn toward it
        _, r, term, _, info = e.step(np.array([0.0, 0.0, 1.0, 0.0], np.float32))
        if term:
            break
    assert term and info["success"] and r >= e.success_bonus - 1.0
    assert e.visible_pixels()["ball"] >= e.success_pixels
    blind = make(success_pixels=None)
    blind.reset(seed=5, options={"agent_xy": tuple(start), "agent_yaw": facing_away})
    assert blind.step(np.zeros(4, np.float32))[2]  # the distance alone ends it
    with pytest.raises(ValueError, match="success_pixels must be None"):
        make(success_pixels=0)
    e.close()
    blind.close()


@pytest.mark.parametrize("via_make", [False, True])
def test_truncation_at_max_episode_steps(via_make):
    e = gym.make("NeuralSimRoom-v0", max_episode_steps=5) if via_make else NeuralSimRoomEnv(max_episode_steps=5)
    e.reset(seed=0)
    results = [e.step(np.zeros(4, np.float32)) for _ in range(5)]
    assert [r[3] for r in results] == [False] * 4 + [True] and not any(r[2] for r in results)
    e.close()
    e = NeuralSimRoomEnv(max_episode_steps=None)
    e.reset(seed=0)
    assert not any(e.step(np.zeros(4, np.float32))[3] for _ in range(210))
    e.close()


def test_render_modes():
    e = make()
    obs, _ = e.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert e.render() is None
    e.close()
    e = make(render_mode="rgb_array", image_size=(48, 80))
    obs, info = e.reset(seed=0)
    frame = e.render()
    assert frame.shape == (48, 80, 3) and np.array_equal(frame, obs) and frame is not obs
    assert info["intrinsics"][2:].tolist() == [40.0, 24.0]
    e.close()


def test_target_colour_makes_the_target_the_only_thing_of_that_colour():
    """``target_colour`` paints the target and takes the colour from every wall and other object; positions, the start
    and the rest of the draws stay those of the seed's room."""
    coloured, plain = make(target_colour="red"), make(target_colour=None)
    for seed in range(300):
        _, info = coloured.reset(seed=seed)
        plain.reset(seed=seed)
        layout = coloured.layout
        assert info["target"] == "the red ball"
        others = [c for i, c in enumerate(layout["object_colours"]) if i != layout["target"]]
        assert "red" not in others and "red" not in layout["wall_colours"].values() and layout["floor_colour"] != "red"
        assert set(layout["wall_colours"].values()) <= set(room_module.WALL_COLOURS)  # a wall never gets an object's black
        assert set(layout["object_colours"]) <= set(room_module.OBJECT_COLOURS)
        assert layout["floor_colour"] not in [*layout["wall_colours"].values(), *layout["object_colours"]]
        assert layout["object_positions"] == plain.layout["object_positions"]
        assert layout["agent_position"] == plain.layout["agent_position"] and layout["agent_yaw"] == plain.layout["agent_yaw"]
    coloured.close()
    plain.close()
    for bad in ("grey", "Red", 3):  # grey: a floor colour, so it cannot be made unique
        with pytest.raises(ValueError, match="target_colour must be None"):
            make(target_colour=bad)


def test_describe_view_states_the_wall_the_camera_starts_facing():
    """``describe_view=True`` ends the description with the wall the camera faces at reset (an ``agent_yaw`` option
    included); from the room's centre that wall fills most of the view at every quarter turn. Off: no clause, the
    same room."""
    plain, described = make(), make(describe_view=True)
    _, info_plain = plain.reset(seed=9_000_001)
    for yaw, wall in ((0.0, "east"), (math.pi / 2, "north"), (math.pi, "west"), (-math.pi / 2, "south")):
        assert room_module.facing_wall(yaw + 0.3) == wall
        obs, info = described.reset(seed=9_000_001, options={"agent_xy": (0.0, 0.0), "agent_yaw": yaw})
        pixels = described.visible_pixels()
        assert max(room_module.WALLS, key=lambda w: pixels[w]) == wall
        colour = described.layout["wall_colours"][wall]
        assert info["description"] == info_plain["description"] + f"; the camera starts facing the {colour} {wall} wall"
    assert "camera" not in info_plain["description"]
    with pytest.raises(ValueError, match="describe_view"):
        make(describe_view="yes")
    plain.close(), described.close()


def test_a_dataset_states_its_ball_start_and_resuming_one_of_the_earlier_default_is_refused(tmp_path):
    """Datasets collected before 2026-12-07 threw the ball without saying so (their ``task`` has no ``ball_start``);
    continuing one under today's default (the ball at rest) would mix two starts in one dataset, so it is refused."""
    import json

    from neuralsim.data import collect

    out = tmp_path / "room"
    collect("NeuralSimRoom-v0", out, episodes=1, max_steps=2, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"]["ball_start"] == "rest" and manifest["env_kwargs"].get("ball_start") is None
    del manifest["task"]["ball_start"]  # as a dataset of the earlier default reads
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="collected with task="):
        collect("NeuralSimRoom-v0", out, episodes=2, max_steps=2, progress=False, resume=True)
    assert json.loads((out / "manifest.json").read_text())["episodes"] == 1  # nothing added
