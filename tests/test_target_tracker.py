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
from neuralsim.reward import TargetTracker
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


def _tracker_model():
    from neuralsim.model import WorldModel

    base = make_tiny_model()
    torch.manual_seed(1)
    rebuilt = WorldModel(base.config.replace(reward_model_channels=8, reward_model_kind="target",
                                             reward_task={**TASK, "velocity_gain": 100.0, "acceleration_limit": 33.666,
                                                          "frame_time": 0.05, "substeps": 5}))
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


def test_train_reward_kind_target_takes_the_task_from_the_data(dataset, tmp_path):
    from neuralsim.model import WorldModel

    tasked = tmp_path / "tasked"  # the data of a camera world whose env states its task (as the room's)
    shutil.copytree(dataset, tasked)
    manifest = json.loads((tasked / "manifest.json").read_text())
    manifest["task"] = TASK
    manifest["camera"] = {"translation_speed": 0.08, "rotation_speed_deg": 4.0, "fovy_deg": 70.0, "velocity_gain": 100.0,
                          "acceleration_limit": 33.666, "frame_time": 0.05, "substeps": 5}
    (tasked / "manifest.json").write_text(json.dumps(manifest))
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
    assert env.task_spec == {**TASK, "contact_distance": pytest.approx(0.27)}
    spec = env.camera_spec
    rm = TargetTracker(16, 4, 8, env.task_spec, translation_speed=spec["translation_speed"],
                       rotation_speed_deg=spec["rotation_speed_deg"],
                       response=TranslationResponse(spec["velocity_gain"], spec["acceleration_limit"], spec["frame_time"],
                                                    spec["substeps"]))

    def where() -> torch.Tensor:  # the ball in the agent's frame: (forward, right)
        delta = env.data.xpos[env._obj_body[env._target], :2] - env.data.xpos[env._agent_body, :2]
        c, s = math.cos(env._yaw), math.sin(env._yaw)
        return torch.tensor([delta[0] * c + delta[1] * s, delta[0] * s - delta[1] * c], dtype=torch.float32)

    env.reset(seed=3)
    ball = env.model.body_dofadr[env._obj_body[env._target]]
    for _ in range(20):  # past the ball's bounces
        env.step(np.zeros(4, np.float32))
    env.data.qvel[ball : ball + 6] = 0.0  # then held: it would roll on (about 0.024 m per step here)
    mem = torch.cat([where(), torch.zeros(2)])[None]
    latent = torch.zeros(1, 16, 8, 8)
    for a in [[1, 0, 0, 0]] * 4 + [[0, 0, 1, 0]] * 3 + [[0.5, 0.5, -1, 0]] * 3 + [[0, 0, 0, 0]] * 2:
        action = torch.tensor([a], dtype=torch.float32)
        _, _, mem = rm.step(latent, latent, action, mem)
        env.step(np.asarray(a, np.float32))
        assert (mem[0, :2] - where()).norm().item() < 0.05
    env.close()


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
    with pytest.raises(InputError, match="offsets label a target tracker"):
        recurrent.reward_loss(latents, actions, rewards, done, offsets=torch.ones(2, 3, 2))


@pytest.mark.mujoco
def test_reward_prediction_benchmark_on_a_tiny_tracker(tiny_checkpoint, tmp_path):
    """benchmarks/reward_prediction.py (2 seeds per policy, ~10 s): the fidelity benchmark's reward keys, the trust
    override recorded; the override refused on a model without a tracker."""
    pytest.importorskip("mujoco")
    from conftest import load_script

    bench = load_script("benchmarks/reward_prediction.py", "reward_prediction_bench")
    _tracker_model().save_pretrained(tmp_path / "tracker")
    result = bench.main(["--model", str(tmp_path / "tracker"), "--seeds", "2", "--reward-dream-trust", "0.5",
                         "--results-dir", str(tmp_path), "--name", "rp"])
    assert result["reward_source"] == "reward model (target)" and result["reward_dream_trust"] == 0.5
    for key in ("reward_corr_t1_16", "termination_f1", "termination_positives",
                "reward_corr_t1_16_explore", "termination_f1_scripted"):
        assert key in result, key
    assert json.loads((tmp_path / "rp.json").read_text())["benchmark"] == "reward_prediction"
    with pytest.raises(SystemExit, match="needs a model with a target tracker"):
        bench.main(["--model", str(tiny_checkpoint), "--seeds", "1", "--reward-dream-trust", "0.5",
                    "--results-dir", str(tmp_path)])
