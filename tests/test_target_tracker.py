"""The target tracker (neuralsim.reward.TargetTracker; config.reward_model_kind="target") and `train reward --reward-kind`."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, train_config
from neuralsim.camera import TranslationResponse, translation_response
from neuralsim.config import WorldModelConfig
from neuralsim.reward import TargetTracker, quarter_turns, room_places
from neuralsim.train import TrainingError, train

TASK = {"kind": "reach_target", "progress_reward_scale": 10.0, "success_bonus": 10.0, "reach_radius": 0.9,
        "contact_distance": 0.27}
SERVO = TranslationResponse(100.0, 33.666, 0.05, 5)


def tracker(response=None, dream_trust=0.0, channels=8, latent_channels=4) -> TargetTracker:
    torch.manual_seed(0)
    return TargetTracker(latent_channels, 4, channels, TASK, translation_speed=0.08, rotation_speed_deg=4.0,
                         response=response, dream_trust=dream_trust)


def memory(forward: float, right: float = 0.0) -> torch.Tensor:
    return torch.tensor([[forward, right, 0.0, 0.0]])


def test_the_camera_moves_the_estimate_and_progress_is_the_distance_it_closes():
    rm = tracker()
    latent = torch.randn(1, 4, 8, 8)
    walk = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    reward, logit, mem = rm.step(latent, latent, walk, memory(2.0))
    torch.testing.assert_close(mem[0, :2], torch.tensor([1.92, 0.0]))
    assert reward.item() == pytest.approx(10 * 0.08 + 10 * torch.sigmoid(logit).item(), abs=1e-5)
    # a right turn swings a target ahead to the left (negative right), closing no distance
    turn = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    _, _, mem = rm.step(latent, latent, turn, memory(2.0))
    a = math.radians(4.0)
    torch.testing.assert_close(mem[0, :2], torch.tensor([2 * math.cos(a), -2 * math.sin(a)]))
    # strafing right past a target on the right: it comes to the front
    _, _, mem = rm.step(latent, latent, torch.tensor([[0.0, 1.0, 0.0, 0.0]]), memory(0.0, 1.0))
    torch.testing.assert_close(mem[0, :2], torch.tensor([0.0, 0.92]))


def test_the_target_is_pushed_not_passed():
    rm = tracker()
    latent = torch.randn(1, 4, 8, 8)
    reward, logit, mem = rm.step(latent, latent, torch.tensor([[1.0, 0.0, 0.0, 0.0]]), memory(0.3))
    assert mem[0, :2].norm().item() == pytest.approx(0.27)
    assert (reward - 10 * (logit > 0).float()).item() == pytest.approx(10 * 0.03, abs=1e-5)


def test_with_the_servo_a_step_from_rest_moves_what_the_room_moves():
    rm = tracker(response=SERVO)
    latent = torch.randn(1, 4, 8, 8)
    walk = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    effective, velocity = translation_response(torch.zeros(1, 2, dtype=torch.float64), walk, SERVO, translation_speed=0.08,
                                               rotation_speed_deg=4.0)
    _, _, mem = rm.step(latent, latent, walk, memory(2.0))
    assert 0.56 < effective[0, 0].item() < 0.71  # the room's range from rest
    assert mem[0, 0].item() == pytest.approx(2.0 - 0.08 * effective[0, 0].item(), abs=1e-6)
    torch.testing.assert_close(mem[0, 2:], velocity[0].float())
    _, _, mem2 = rm.step(latent, latent, torch.zeros(1, 4), mem)  # let go: it coasts on
    assert mem2[0, 0] < mem[0, 0]


def test_dreamed_frames_only_predict_shown_frames_measure():
    rm = tracker()
    a, b = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    walk = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert torch.equal(rm.step(a, a, walk, memory(2.0))[2], rm.step(a, b, walk, memory(2.0))[2])
    trusting = tracker(dream_trust=1.0)
    assert not torch.equal(trusting.step(a, a, walk, memory(2.0))[2], trusting.step(a, b, walk, memory(2.0))[2])
    seq_a = rm(torch.stack([a, a], 1), walk[:, None])
    seq_b = rm(torch.stack([a, b], 1), walk[:, None])
    assert not torch.equal(seq_a[2], seq_b[2])  # a shown frame moves the estimate


def test_a_dream_that_measures_pays_its_progress_once():
    """A dream that measures (trust 1) a blurred target '2 m ahead' on every frame pays nothing for walking on (the farm
    a policy found when only the camera's motion paid), and the progress of any dream telescopes to the change of the
    estimated distance; a nearer measurement is taken."""
    rm = tracker(dream_trust=1.0)
    rm.measure = lambda latent: (torch.tensor([[2.0, 0.0]]), torch.ones(1))
    walk, latent = torch.tensor([[1.0, 0.0, 0.0, 0.0]]), torch.zeros(1, 4, 8, 8)
    progress = lambda reward, mem: (reward - rm.bonus_value * (rm._termination(mem[:, :2]) > 0)).item()  # noqa: E731
    mem, paid = memory(2.0), 0.0
    for _ in range(100):
        reward, _, mem = rm.step(latent, latent, walk, mem)
        paid += progress(reward, mem)
    assert abs(paid) < 1e-4
    rm.measure = lambda latent: (torch.tensor([[1.0, 0.5]]), torch.ones(1))
    reward, _, mem = rm.step(latent, latent, torch.zeros(1, 4), memory(2.0))
    torch.testing.assert_close(mem[:, :2], torch.tensor([[1.0, 0.5]]))
    assert progress(reward, mem) == pytest.approx(rm.scale * (2.0 - math.hypot(1.0, 0.5)), abs=1e-4)


def test_a_dream_pays_the_bonus_only_on_the_step_that_ends_it():
    """Hovering just outside the reach band (P(success) under 0.5: the dream goes on) pays no part of the bonus; the
    step that ends the dream (P > 0.5) pays all of it, as the room pays its bonus on the ending step."""
    rm = tracker()
    latent, still = torch.zeros(1, 4, 8, 8), torch.zeros(1, 4)
    hover = rm.reach + 0.05  # 0.05 m outside reach, straight ahead: P = sigmoid(-sharpness * 0.05), about 0.27
    reward, logit, _ = rm.step(latent, latent, still, memory(hover))
    assert 0.05 < torch.sigmoid(logit).item() < 0.5 and reward.item() == pytest.approx(0.0, abs=1e-6)
    reward, logit, _ = rm.step(latent, latent, still, memory(rm.reach - 0.1))
    assert torch.sigmoid(logit).item() > 0.5 and reward.item() == pytest.approx(rm.bonus_value, abs=1e-6)


def test_a_sequence_continued_from_its_memory_equals_the_whole():
    rm = tracker(response=SERVO)
    latents, actions = torch.randn(2, 6, 4, 8, 8), torch.rand(2, 5, 4) * 2 - 1
    rewards, logits, mem = rm(latents, actions)
    assert rewards.shape == logits.shape == (2, 5) and mem.shape == (2, 4)
    r2, l2, m2 = rm(latents[:, 2:], actions[:, 2:], memory=rm(latents[:, :3], actions[:, :2])[2])
    torch.testing.assert_close(r2, rewards[:, 2:])
    torch.testing.assert_close(m2, mem)


def test_it_learns_where_the_target_is_from_rewards_alone():
    """A toy world whose latent says where the target is (two channels: its forward and right offsets): trained on
    the progress rewards only, the tracker's rewards on held-out episodes follow the true ones."""

    def episodes(n, seed):
        rng = np.random.default_rng(seed)
        T = 12
        pos = np.stack([rng.uniform(1.0, 3.0, n), rng.uniform(-1.0, 1.0, n)], -1)
        actions = np.zeros((n, T - 1, 4), np.float32)
        actions[..., 0] = rng.uniform(0, 1, (n, T - 1))
        actions[..., 2] = rng.uniform(-1, 1, (n, T - 1))
        latents = np.zeros((n, T, 4, 8, 8), np.float32)
        rewards = np.zeros((n, T - 1), np.float32)
        p = pos.copy()
        for t in range(T):
            latents[:, t, 0], latents[:, t, 1] = p[:, 0, None, None] - 2, p[:, 1, None, None]
            if t == T - 1:
                break
            th = math.radians(4.0) * actions[:, t, 2]
            q = np.stack([p[:, 0] * np.cos(th) + p[:, 1] * np.sin(th), p[:, 1] * np.cos(th) - p[:, 0] * np.sin(th)], -1)
            q[:, 0] -= 0.08 * actions[:, t, 0]
            rewards[:, t] = 10 * (np.linalg.norm(p, axis=-1) - np.linalg.norm(q, axis=-1))
            p = q
        return torch.from_numpy(latents), torch.from_numpy(actions), torch.from_numpy(rewards)

    rm = tracker(channels=16)
    latents, actions, rewards = episodes(64, 0)
    done = torch.zeros_like(rewards, dtype=torch.bool)
    opt = torch.optim.Adam(rm.parameters(), lr=3e-3)
    for _ in range(150):
        loss, _ = rm.loss(latents, actions, rewards, done)
        opt.zero_grad()
        loss.backward()
        opt.step()
    test_latents, test_actions, test_rewards = episodes(32, 1)
    with torch.no_grad():
        predicted = rm(test_latents, test_actions)[0] - 10 * torch.sigmoid(rm(test_latents, test_actions)[1])
    corr = np.corrcoef(predicted.flatten().numpy(), test_rewards.flatten().numpy())[0, 1]
    assert corr > 0.9, corr


def _tracker_model(**task):
    from neuralsim.model import WorldModel

    base = make_tiny_model()
    torch.manual_seed(1)
    rebuilt = WorldModel(base.config.replace(reward_model_channels=8, reward_model_kind="target",
                                             reward_task={**TASK, "velocity_gain": 100.0, "acceleration_limit": 33.666,
                                                          "frame_time": 0.05, "substeps": 5, **task}))
    rebuilt.load_state_dict(base.state_dict(), strict=False)
    return rebuilt.eval()


def test_the_dream_reports_the_trackers_reward_and_it_survives_a_save(tmp_path):
    from neuralsim.model import WorldModel

    model = _tracker_model()
    assert isinstance(model.reward_model, TargetTracker) and model.reward_model.response is not None
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32, 3), dtype=np.uint8)
    actions = np.tile(np.array([[[0.5, 0.0, 0.8, -0.3]]], np.float32), (2, 1, 1))
    state = model.init_state(2, frames=frames, actions=actions, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, ref_logit, mem = model.reward_model(model.encode(frames), torch.as_tensor(actions))
    torch.testing.assert_close(state.reward, ref[:, -1])
    torch.testing.assert_close(state.reward_memory, mem)
    _, new = model.step(state, np.tile(np.array([[1.0, 0.0, 0.0, 0.0]], np.float32), (2, 1)), torch.Generator().manual_seed(1))
    assert new.reward.shape == (2,) and torch.isfinite(new.reward).all()
    model.save_pretrained(tmp_path / "m")
    again = WorldModel.from_pretrained(tmp_path / "m")
    assert again.config.reward_model_kind == "target" and again.config.reward_task == model.config.reward_task
    torch.testing.assert_close(again.reward_model_sequence(model.encode(frames), actions)[0], ref)


@pytest.mark.parametrize("fields, match", [
    ({"reward_model_kind": "gru"}, "reward_model_kind"),
    ({"reward_model_channels": 8, "reward_model_kind": "target"}, "reward_task"),
    ({"reward_model_channels": 8, "reward_model_kind": "target", "reward_task": {"success_bonus": 10}}, "reward_task"),
    ({"reward_dream_trust": 1.5}, "reward_dream_trust"),
    ({"reward_task": [1, 2]}, "reward_task"),
])
def test_bad_tracker_configs_are_refused(fields, match):
    with pytest.raises((ValueError, TypeError), match=match):
        WorldModelConfig.from_preset("tiny", **fields)


def _tasked_data(dataset: Path, dest: Path) -> tuple[Path, dict]:
    """A copy of ``dataset`` whose manifest states a camera world's task (as the room's): (dir, manifest)."""
    shutil.copytree(dataset, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["task"] = TASK
    manifest["camera"] = {"translation_speed": 0.08, "rotation_speed_deg": 4.0, "fovy_deg": 70.0, "velocity_gain": 100.0,
                          "acceleration_limit": 33.666, "frame_time": 0.05, "substeps": 5}
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest, manifest


def test_train_reward_kind_target_takes_the_task_from_the_data(dataset, tmp_path):
    from neuralsim.model import WorldModel

    tasked, manifest = _tasked_data(dataset, tmp_path / "tasked")
    base = train(train_config(tasked, tmp_path / "base"))
    with pytest.raises(TrainingError, match="--reward-kind target needs data whose env states"):
        train(train_config(dataset, tmp_path / "no_task", stage="reward", init=str(base), reward_kind="target"))
    with pytest.raises(TrainingError, match="--reward-kind must be"):
        train(train_config(tasked, tmp_path / "bad", stage="reward", init=str(base), reward_kind="gru"))
    out = train(train_config(tasked, tmp_path / "tr", stage="reward", init=str(base), reward_kind="target", steps=3))
    model = WorldModel.from_pretrained(out)
    assert isinstance(model.reward_model, TargetTracker)
    with pytest.raises(TrainingError, match="pass --reward-kind target to continue it"):  # not silently the other kind
        train(train_config(tasked, tmp_path / "again", stage="reward", init=str(out), steps=1))
    assert model.config.reward_task == {**TASK, "velocity_gain": 100.0, "acceleration_limit": 33.666, "frame_time": 0.05,
                                        "substeps": 5}
    assert not model.reward_model.walls and not hasattr(model.reward_model, "locate_room")
    # the data now states the room's walls: continuing the tracker takes the task and adds the room head, every
    # trained weight kept
    manifest["task"] = {**TASK, "walkable_half_extent": 2.35}
    (tasked / "manifest.json").write_text(json.dumps(manifest))
    walled = WorldModel.from_pretrained(train(train_config(tasked, tmp_path / "walls", stage="reward", init=str(out),
                                                           reward_kind="target", steps=1, lr=1e-9)))
    assert walled.reward_model.walls == 2.35 and walled.reward_model.memory_size == 8
    for name, value in model.reward_model.state_dict().items():
        torch.testing.assert_close(walled.reward_model.state_dict()[name], value)


@pytest.mark.mujoco
def test_on_the_room_the_camera_carries_the_target_where_it_really_goes(tmp_path):
    """The room's task_spec (recorded by `collect`) and camera servo: a tracker told where the ball is moves its
    estimate with the camera as the real ball moves relative to the agent (walk, turn, strafe, release). The room's
    ball starts with a bounce and a roll; here it is held still (the tracker takes targets to stay put)."""
    pytest.importorskip("mujoco")
    import gymnasium as gym

    import neuralsim.envs  # noqa: F401
    from neuralsim.data import collect

    summary = collect("NeuralSimRoom-v0", tmp_path / "room", episodes=1, max_steps=2, progress=False)
    manifest = json.loads((tmp_path / "room" / "manifest.json").read_text())
    env = gym.make("NeuralSimRoom-v0").unwrapped
    assert summary["episodes"] == 1 and manifest["task"] == env.task_spec
    assert env.task_spec == {**TASK, "contact_distance": pytest.approx(0.27), "walkable_half_extent": pytest.approx(2.35),
                             "ball_start": "rest"}
    spec = env.camera_spec
    rm = TargetTracker(16, 4, 8, env.task_spec, translation_speed=spec["translation_speed"],
                       rotation_speed_deg=spec["rotation_speed_deg"],
                       response=TranslationResponse(spec["velocity_gain"], spec["acceleration_limit"], spec["frame_time"],
                                                    spec["substeps"]))

    def where() -> torch.Tensor:  # the ball in the agent's frame: (forward, right)
        delta = env.data.xpos[env._obj_body[env._target], :2] - env.data.xpos[env._agent_body, :2]
        c, s = math.cos(env._yaw), math.sin(env._yaw)
        return torch.tensor([delta[0] * c + delta[1] * s, delta[0] * s - delta[1] * c], dtype=torch.float32)

    def hold_the_ball() -> None:  # it would roll on (about 0.024 m per step here)
        ball = env.model.body_dofadr[env._obj_body[env._target]]
        env.data.qvel[ball : ball + 6] = 0.0

    latent = torch.zeros(1, 16, 8, 8)
    env.reset(seed=3)
    for _ in range(20):  # past the ball's bounces
        *_, info = env.step(np.zeros(4, np.float32))
    hold_the_ball()
    mem = torch.cat([where(), torch.zeros(2), room_places(torch.as_tensor(info["pose"]))])[None]
    for a in [[1, 0, 0, 0]] * 4 + [[0, 0, 1, 0]] * 3 + [[0.5, 0.5, -1, 0]] * 3 + [[0, 0, 0, 0]] * 2:
        action = torch.tensor([a], dtype=torch.float32)
        _, _, mem = rm.step(latent, latent, action, mem)
        *_, info = env.step(np.asarray(a, np.float32))
        assert (mem[0, :2] - where()).norm().item() < 0.05
        assert (mem[0, 4:] - room_places(torch.as_tensor(info["pose"]))).norm().item() < 0.05
    # into a wall: 0.4 m from the east wall facing it, 30 steps of walking cover 2.4 m; the wall stops the agent at
    # the walkable half extent and the tracker stops there too; then turning and walking along the wall
    _, info = env.reset(seed=3, options={"agent_xy": (1.95, 0.0), "agent_yaw": 0.0})
    for _ in range(20):
        *_, info = env.step(np.zeros(4, np.float32))
    hold_the_ball()
    mem = torch.cat([where(), torch.zeros(2), room_places(torch.as_tensor(info["pose"]))])[None]
    for i, a in enumerate([[1, 0, 0, 0]] * 30 + [[0, 0, 1, 0]] * 10 + [[1, 0, 0, 0]] * 5):
        _, _, mem = rm.step(latent, latent, torch.tensor([a], dtype=torch.float32), mem)
        *_, info = env.step(np.asarray(a, np.float32))
        hold_the_ball()
        truth = room_places(torch.as_tensor(info["pose"]))
        # pressed to the wall the agent slides slower than it would walk (the wall's friction, which the tracker
        # leaves out): 0.08 m of 0.13 over the last 5 steps
        tolerance = 0.05 if i < 40 else 0.1
        assert (mem[0, 4:] - truth).norm().item() < tolerance and (mem[0, :2] - where()).norm().item() < tolerance
    assert max(abs(truth[0].item()), abs(truth[1].item())) == pytest.approx(env.task_spec["walkable_half_extent"], abs=0.02)
    env.close()


def walled(response=None) -> TargetTracker:
    torch.manual_seed(0)
    return TargetTracker(4, 4, 8, {**TASK, "walkable_half_extent": 2.35}, translation_speed=0.08,
                         rotation_speed_deg=4.0, response=response)


def test_walls_stop_the_camera_and_the_target_stops_coming_closer():
    rm = walled(SERVO)
    assert rm.memory_size == 8 and rm.initial_memory(3, "cpu").shape == (3, 8)
    latent = torch.randn(1, 4, 8, 8)
    # 0.1 m from the +x wall facing it (heading +x), the target 3 m to the right: walking on gains 0.1 m at most
    mem = torch.tensor([[0.0, 3.0, 0.0, 0.0, 2.25, 0.0, 1.0, 0.0]])
    walk = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    for _ in range(30):
        _, _, mem = rm.step(latent, latent, walk, mem)
    torch.testing.assert_close(mem[0, 4:6], torch.tensor([2.35, 0.0]))
    torch.testing.assert_close(mem[0, :2], torch.tensor([-0.1, 3.0]))
    assert mem[0, 2].item() == 0.0  # the servo's velocity into the wall is gone: turning away starts from rest
    # along the wall it still moves: strafing right (the camera's right is -z when facing +x)
    _, _, side = rm.step(latent, latent, torch.tensor([[1.0, 1.0, 0.0, 0.0]]), mem)
    assert side[0, 4].item() == pytest.approx(2.35) and side[0, 5].item() < 0 and side[0, 1].item() < 3.0
    # a right turn turns the heading with the target: 90 degrees of turns face -z, the target now ahead
    turn = torch.tensor([[0.0, 0.0, 0.5, 0.0]])  # 2 degrees a step
    for _ in range(45):
        _, _, mem = rm.step(latent, latent, turn, mem)
    torch.testing.assert_close(mem[0, 6:8], torch.tensor([0.0, -1.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(mem[0, :2], torch.tensor([3.0, 0.1]), atol=1e-5, rtol=0)
    # without the walls' number the tracker is as before: 4 numbers of memory, no room head
    assert tracker().memory_size == 4 and not hasattr(tracker(), "locate_room")


def test_room_places_and_their_quarter_turns():
    from neuralsim.reward import nearest_quarter, quarter_turns, room_places

    yaw = math.radians(30)  # OpenCV axes: a yaw about +y turns forward (+z) toward +x
    pose = torch.eye(4)
    pose[:3, :3] = torch.tensor([[math.cos(yaw), 0.0, math.sin(yaw)], [0.0, 1.0, 0.0],
                                 [-math.sin(yaw), 0.0, math.cos(yaw)]])
    pose[:3, 3] = torch.tensor([1.0, -0.6, -2.0])
    place = room_places(pose)
    torch.testing.assert_close(place, torch.tensor([1.0, -2.0, math.sin(yaw), math.cos(yaw)]))
    turns = quarter_turns(place[None])[0]
    assert turns.shape == (4, 4)
    torch.testing.assert_close(quarter_turns(turns[3:])[0, 1], place)  # four quarter turns come back
    torch.testing.assert_close(turns[:, :2].norm(dim=-1), place[:2].norm().expand(4))  # same distance from the centre
    noisy = turns[2:3] + 0.05
    torch.testing.assert_close(nearest_quarter(place[None], noisy), turns[2:3])


def test_the_room_head_learns_the_agents_place_up_to_a_quarter_turn():
    rm = walled()
    # a toy "frame": the place drawn into the latent's channels, one of the square's four equivalents at random
    torch.manual_seed(1)
    place = torch.cat([torch.rand(64, 2) * 4.6 - 2.3, torch.nn.functional.normalize(torch.randn(64, 2), dim=-1)], -1)
    shown = quarter_turns(place)[torch.arange(64), torch.randint(0, 4, (64,))]
    latents = shown[:, None, :, None, None].expand(64, 2, 4, 8, 8).contiguous()
    actions, rewards, done = torch.zeros(64, 1, 4), torch.zeros(64, 1), torch.zeros(64, 1, dtype=torch.bool)
    places = place[:, None].expand(64, 2, 4)
    opt = torch.optim.Adam(rm.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss, logs = rm.loss(latents, actions, rewards, done, places=places)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = logs if first is None else first
    assert logs["room_error_m"] < 0.3 * first["room_error_m"] and logs["room_heading_error_deg"] < 15


def test_target_offsets_read_the_pose_and_ignore_pitch():
    from neuralsim.reward import target_offsets

    pose = torch.eye(4)  # identity: +Z forward, +X right (OpenCV axes)
    pose[:3, 3] = torch.tensor([1.0, -0.6, 2.0])
    target = torch.tensor([1.5, 0.0, 4.0])
    torch.testing.assert_close(target_offsets(pose, target), torch.tensor([2.0, 0.5]))
    pitch = math.radians(20)  # looking down: the horizontal frame is the same
    tilted = pose.clone()
    tilted[:3, :3] = torch.tensor([[1.0, 0.0, 0.0], [0.0, math.cos(pitch), math.sin(pitch)],
                                   [0.0, -math.sin(pitch), math.cos(pitch)]])
    torch.testing.assert_close(target_offsets(tilted, target), torch.tensor([2.0, 0.5]))


def test_datasets_carry_target_positions_per_frame(tmp_path):
    import gymnasium as gym

    from neuralsim.actions import space_to_spec
    from neuralsim.data import Dataset, ShardWriter

    spec = space_to_spec(gym.spaces.Box(-1, 1, (4,), np.float32))
    rng = np.random.default_rng(0)
    targets = [rng.normal(size=(6, 3)).astype(np.float32) for _ in range(3)]
    with ShardWriter(tmp_path / "d", {"env_id": "x", "image_size": [16, 16], "action_spec": spec, "frames_per_step": 1},
                     episodes_per_shard=2) as writer:
        for e in range(3):
            writer.add_episode(np.zeros((6, 16, 16, 3), np.uint8), np.zeros((5, 4), np.float32), np.zeros(5), np.zeros(5),
                               np.eye(5, dtype=bool)[-1], "x", target_positions=targets[e])
        with pytest.raises(ValueError, match="target_positions must be given for every episode"):
            writer.add_episode(np.zeros((6, 16, 16, 3), np.uint8), np.zeros((5, 4), np.float32), np.zeros(5),
                               np.zeros(5), np.eye(5, dtype=bool)[-1], "x")
        with pytest.raises(ValueError, match=r"target_positions must have shape \(6, 3\)"):
            writer.add_episode(np.zeros((6, 16, 16, 3), np.uint8), np.zeros((5, 4), np.float32), np.zeros(5),
                               np.zeros(5), np.eye(5, dtype=bool)[-1], "x", target_positions=np.zeros((6, 2)))
    data = Dataset(tmp_path / "d")
    assert data.has_target_positions and not data.has_poses
    np.testing.assert_array_equal(data.episode(2)["target_positions"], targets[2])
    batch = next(data.iter_windows(steps=3, batch_size=4, seed=0))
    for e, s, got in zip(batch["episode"], batch["start"], batch["target_positions"]):
        np.testing.assert_array_equal(got, targets[e][s : s + 4])
    assert data.verify()["episodes"] == 3


def test_reward_loss_checks_its_labels():
    from neuralsim.model import InputError

    model = _tracker_model()
    latents = model.encode(np.zeros((2, 5, 32, 32, 3), np.uint8))  # 3 latent frames (2 raw frames per step)
    actions, rewards, done = np.zeros((2, 2, 4), np.float32), np.zeros((2, 2)), np.zeros((2, 2), bool)
    loss, logs = model.reward_loss(latents, actions, rewards, done, offsets=torch.ones(2, 3, 2))
    assert torch.isfinite(loss) and "locate_loss" in logs and "confidence_bce" in logs
    with pytest.raises(InputError, match=r"offsets must have shape \(2, 3, 2\)"):
        model.reward_loss(latents, actions, rewards, done, offsets=torch.ones(2, 4, 2))
    recurrent = make_tiny_model()
    from neuralsim.model import WorldModel

    recurrent = WorldModel(recurrent.config.replace(reward_model_channels=8, reward_model_hidden=16)).eval()
    with pytest.raises(InputError, match="offsets and places label a target tracker"):
        recurrent.reward_loss(latents, actions, rewards, done, offsets=torch.ones(2, 3, 2))


def test_a_tracker_trains_the_same_weights_whatever_the_dynamics_holds(dataset, tmp_path):
    """It learns on real latents alone, so the recipe's fast schedule trains it from the fresh model beside the
    dynamics and merges it in after (examples/make_default_model.py, `tracker_beside`)."""
    from neuralsim.model import WorldModel

    tasked, _ = _tasked_data(dataset, tmp_path / "tasked")
    trained = train(train_config(tasked, tmp_path / "base"))
    other = WorldModel.from_pretrained(trained)
    with torch.no_grad():  # other dynamics, the same encoder
        for name, weight in other.named_parameters():
            if not name.startswith(("autoencoder.", "reward_model.")):
                weight.add_(0.1 * torch.randn_like(weight))
    other.save_pretrained(tmp_path / "other")
    trackers = [WorldModel.from_pretrained(train(train_config(tasked, tmp_path / f"tracker_{name}", stage="reward",
                                                              init=str(init), reward_kind="target", steps=3)))
                for name, init in (("trained", trained), ("other", tmp_path / "other"))]
    first, second = (t.reward_model.state_dict() for t in trackers)
    for name, value in first.items():
        torch.testing.assert_close(second[name], value, rtol=0, atol=0)


@pytest.mark.mujoco
def test_reward_prediction_benchmark_on_a_tiny_tracker(tiny_checkpoint, tmp_path):
    """benchmarks/reward_prediction.py (2 seeds per policy, ~10 s): the fidelity benchmark's reward keys, the trust
    override recorded; the override refused on a model without a tracker."""
    pytest.importorskip("mujoco")
    from conftest import load_script

    bench = load_script("benchmarks/reward_prediction.py", "reward_prediction_bench")
    _tracker_model().save_pretrained(tmp_path / "tracker")
    result = bench.main(["--model", str(tmp_path / "tracker"), "--seeds", "2", "--reward-dream-trust", "0.5",
                         "--ball-start", "rest", "--results-dir", str(tmp_path), "--name", "rp"])
    assert result["reward_source"] == "reward model (target)" and result["reward_dream_trust"] == 0.5
    assert result["ball_start"] == "rest"
    for key in ("reward_corr_t1_16", "termination_f1", "termination_positives",
                "reward_corr_t1_16_explore", "termination_f1_scripted", "reward_corr_t1_16_true_start",
                "termination_f1_true_start"):
        assert key in result, key
    assert json.loads((tmp_path / "rp.json").read_text())["benchmark"] == "reward_prediction"
    # each ball start has its own results file by default (in sequence, one run overwrote the other's figures); the
    # room's default task (the ball at rest) keeps the plain name
    assert bench.parse_args([]).ball_start == "rest"
    assert [bench.parse_args(ball).name for ball in ([], ["--ball-start", "thrown"], ["--ball-start", "thrown", "--quick"])] \
        == ["reward_prediction", "reward_prediction_ball_thrown", "reward_prediction_ball_thrown_quick"]
    with pytest.raises(SystemExit, match="needs a model with a target tracker"):
        bench.main(["--model", str(tiny_checkpoint), "--seeds", "1", "--reward-dream-trust", "0.5",
                    "--results-dir", str(tmp_path)])


def test_tracker_range_rows_bin_by_true_range_and_compare_believed_to_true():
    from conftest import load_script

    bench = load_script("benchmarks/tracker_range.py", "tracker_range_bench")
    true = np.array([[0.5, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    believed = np.array([[0.6, 0.0], [1.1, 0.0], [0.0, 2.0], [0.0, 2.4]])  # 20 % / 10 % long, 90° off, 20 % short
    rows = bench.range_errors(believed, true)
    assert [r["episodes"] for r in rows] == [1, 1, 1, 1] and rows[-1]["range_m"] == [2.5, None]
    assert [r["range_ratio_median"] for r in rows] == pytest.approx([1.2, 1.1, 1.0, 0.8])
    assert rows[0]["range_abs_error_mean"] == pytest.approx(0.1) and rows[2]["bearing_error_median_deg"] == pytest.approx(90)
    assert rows[3]["bearing_error_median_deg"] == pytest.approx(0, abs=1e-9)


@pytest.mark.mujoco
def test_tracker_range_benchmark_on_a_tiny_tracker(tiny_checkpoint, tmp_path):
    """benchmarks/tracker_range.py (1 seed per policy): one row per range bin, every episode in one of them; a model
    without a tracker refused."""
    pytest.importorskip("mujoco")
    from conftest import load_script

    bench = load_script("benchmarks/tracker_range.py", "tracker_range_bench")
    _tracker_model().save_pretrained(tmp_path / "tracker")
    result = bench.main(["--model", str(tmp_path / "tracker"), "--seeds", "1", "--threads", "1",
                         "--results-dir", str(tmp_path), "--name", "tr"])
    assert len(result["rows"]) == len(bench.RANGE_BINS) and sum(r["episodes"] for r in result["rows"]) == 3
    assert json.loads((tmp_path / "tr.json").read_text())["benchmark"] == "tracker_range"
    with pytest.raises(SystemExit, match="no target tracker"):
        bench.main(["--model", str(tiny_checkpoint), "--seeds", "1", "--results-dir", str(tmp_path)])


@pytest.mark.mujoco
def test_tracker_kinematics_benchmark_scores_the_room_from_the_true_start(tmp_path):
    """benchmarks/tracker_kinematics.py (2 episodes per policy, 40 steps): rows per policy with and without walls;
    a model without walls refused."""
    pytest.importorskip("mujoco")
    from conftest import load_script

    bench = load_script("benchmarks/tracker_kinematics.py", "tracker_kinematics_bench")
    _tracker_model(walkable_half_extent=2.35).save_pretrained(tmp_path / "walled")
    result = bench.main(["--model", str(tmp_path / "walled"), "--episodes", "2", "--max-steps", "40",
                         "--out", str(tmp_path / "tk.json")])
    assert [r["policy"] for r in result["rows"]] == ["random", "forward", "turn", "explore"]
    forward = result["rows"][1]
    assert forward["walls_return"] >= forward["no_walls_return"]  # a wall can only stop a walk away from the target
    assert json.loads((tmp_path / "tk.json").read_text())["benchmark"] == "tracker_kinematics"
    _tracker_model().save_pretrained(tmp_path / "open")
    with pytest.raises(SystemExit, match="needs a target tracker with walls"):
        bench.main(["--model", str(tmp_path / "open"), "--episodes", "2", "--out", str(tmp_path / "x.json")])


# ------------------------------------------------------------------------------------ range calibration


def test_a_range_calibration_fitted_on_held_out_frames_undoes_a_readings_bias():
    """fit_range_calibration: per bin of measured range (from min_range on), the median true / measured range."""
    from neuralsim.reward import fit_range_calibration

    rng = np.random.default_rng(0)
    truth_range = rng.uniform(0.5, 3.5, 4000)
    bearing = rng.uniform(-0.5, 0.5, 4000)
    truth = torch.tensor(np.stack([truth_range * np.cos(bearing), truth_range * np.sin(bearing)], -1))
    measured = truth * torch.tensor(np.where(truth_range < 2.0, 1.25, 1.0))[:, None]  # reads 25 % long when near
    weight = torch.full((4000,), 0.9)
    weight[:100] = 0.1  # unsure readings do not count
    measured[:100] *= 5
    knots = fit_range_calibration(measured, weight, truth, min_range=0.9)
    assert knots[0][0] >= 0.9 and all(a[0] < b[0] for a, b in zip(knots[:-1], knots[1:]))
    for r, factor in knots:
        if r < 1.95:
            assert factor == pytest.approx(0.8, abs=0.01)
        elif r > 2.6:
            assert factor == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError, match="needs >= 20 confident readings in at least two range bins"):
        fit_range_calibration(measured[:30], weight[:30], truth[:30])


def test_a_calibrated_tracker_maps_its_readings_at_inference_and_keeps_its_weights(tmp_path):
    from neuralsim.model import WorldModel

    model = _tracker_model()
    knots = [[1.0, 0.8], [2.0, 0.9], [3.0, 1.0]]
    calibrated = WorldModel(model.config.replace(reward_range_calibration=knots))
    calibrated.load_state_dict(model.state_dict())
    calibrated.eval()
    latents = torch.randn(5, *model.latent_shape)
    with torch.no_grad():
        raw, w = model.reward_model.measure(latents)
        got, w2 = calibrated.reward_model.measure(latents)
    torch.testing.assert_close(w2, w)
    r = raw.norm(dim=-1)
    factor = torch.tensor(np.interp(r.numpy(), [1.0, 2.0, 3.0], [0.8, 0.9, 1.0]), dtype=raw.dtype)
    torch.testing.assert_close(got, raw * factor[:, None].clamp_min(0.27 / r[:, None]))  # then the contact clamp
    calibrated.reward_model.train()  # training reads the localizer as it is (the calibration is fitted after)
    with torch.no_grad():
        torch.testing.assert_close(calibrated.reward_model.measure(latents)[0], raw)
    calibrated.save_pretrained(tmp_path / "c")
    again = WorldModel.from_pretrained(tmp_path / "c")
    assert again.config.reward_range_calibration == knots
    assert set(again.state_dict()) == set(model.state_dict())  # config, not weights
    with torch.no_grad():
        torch.testing.assert_close(again.reward_model.measure(latents)[0], got)


@pytest.mark.parametrize("knots", [[[1.0, 0.8]], [[2.0, 0.8], [1.0, 0.9]], [[1.0, -0.8], [2.0, 0.9]], [[1.0, 0.8, 3.0], [2.0, 1.0]],
                                   "0.8"])
def test_bad_range_calibrations_are_refused(knots):
    with pytest.raises(ValueError, match="reward_range_calibration"):
        WorldModelConfig.from_preset("tiny", reward_range_calibration=knots)


def _calibration_data(path: Path, size: int = 32, episodes: int = 3, steps: int = 6) -> Path:
    """Episodes with camera poses and a target position per frame (as the room records them)."""
    import gymnasium as gym

    from neuralsim.actions import space_to_spec
    from neuralsim.data import ShardWriter

    rng = np.random.default_rng(1)
    spec = space_to_spec(gym.spaces.Box(-1, 1, (4,), np.float32))
    with ShardWriter(path, {"env_id": "synthetic", "image_size": [size, size], "action_spec": spec,
                            "frames_per_step": 1}, episodes_per_shard=2) as writer:
        for _ in range(episodes):
            poses = np.tile(np.eye(4, dtype=np.float32), (steps + 1, 1, 1))
            poses[:, 0, 3] = rng.uniform(-1, 1, steps + 1)  # walking sideways, looking along +z
            target = np.tile(np.array([[0.5, 0.1, 2.0]], np.float32), (steps + 1, 1))
            writer.add_episode(rng.integers(0, 256, (steps + 1, size, size, 3), dtype=np.uint8),
                               rng.uniform(-1, 1, (steps, 4)).astype(np.float32), np.zeros(steps, np.float32),
                               np.zeros(steps, bool), np.eye(steps, dtype=bool)[-1], "x", poses=poses,
                               target_positions=target)
    return path


def test_train_reward_fits_the_range_calibration_on_held_out_data(dataset, tmp_path, monkeypatch):
    from neuralsim import reward
    from neuralsim.model import WorldModel
    from neuralsim.reward import target_offsets

    tasked, _ = _tasked_data(dataset, tmp_path / "tasked")
    base = train(train_config(tasked, tmp_path / "base"))
    held_out = _calibration_data(tmp_path / "held_out")
    with pytest.raises(TrainingError, match="--calibration-data fits a target tracker's range calibration"):
        train(train_config(tasked, tmp_path / "x", stage="reward", init=str(base), calibration_data=str(held_out)))
    with pytest.raises(TrainingError, match="records no target positions and camera poses"):
        train(train_config(tasked, tmp_path / "y", stage="reward", init=str(base), reward_kind="target",
                           calibration_data=str(tasked)))
    seen = {}

    def fit(measured, weight, truth, **kw):  # an untrained localizer reads too few confident ranges to fit
        seen.update(measured=measured, truth=truth, **kw)
        return [[1.0, 0.9], [2.0, 1.0]]

    monkeypatch.setattr(reward, "fit_range_calibration", fit)
    kw = dict(stage="reward", init=str(base), reward_kind="target", steps=2)
    plain = WorldModel.from_pretrained(train(train_config(tasked, tmp_path / "plain", **kw)))
    out = train(train_config(tasked, tmp_path / "cal", calibration_data=str(held_out), **kw))
    model = WorldModel.from_pretrained(out)
    assert model.config.reward_range_calibration == [[1.0, 0.9], [2.0, 1.0]]
    assert model.reward_model.range_calibration == [(1.0, 0.9), (2.0, 1.0)]
    for name, value in plain.state_dict().items():  # the fit changes no weight
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)
    from neuralsim.data import Dataset

    ep = Dataset(held_out).episode(0)
    expected = target_offsets(torch.as_tensor(ep["poses"]), torch.as_tensor(ep["target_positions"]))
    assert seen["measured"].shape == (3 * 7, 2) and seen["min_range"] == TASK["reach_radius"]
    torch.testing.assert_close(seen["truth"][:7], expected)
    # continuing the tracker drops the calibration fitted to the localizer before (unless refitted)
    again = WorldModel.from_pretrained(train(train_config(tasked, tmp_path / "again", stage="reward", init=str(out),
                                                          reward_kind="target", steps=1)))
    assert again.config.reward_range_calibration is None
