"""The camera's translation response: the world's velocity servo (ramp from rest, coast after a release) in the
world model's camera kinematics and action input, matched against the real room."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neuralsim.camera import TranslationResponse, translation_response
from neuralsim.config import WorldModelConfig
from neuralsim.model import WorldModel

ROOM = TranslationResponse(velocity_gain=100.0, acceleration_limit=33.666, frame_time=0.05, substeps=5)


def _respond(actions, response=ROOM):
    v, out = torch.zeros(1, 2, dtype=torch.float64), []
    for a in actions:
        eff, v = translation_response(v, torch.tensor([a], dtype=torch.float64), response, translation_speed=0.08,
                                      rotation_speed_deg=4.0)
        out.append(eff[0].numpy())
    return np.array(out), v


def test_ramp_coast_and_stop():
    eff, v = _respond([[1, 0, 0, 0]] * 4 + [[0, 0, 0, 0]] * 3)
    assert 0.4 < eff[0, 0] < 0.8  # a step from rest covers part of a full step
    assert abs(eff[3, 0] - 1) < 1e-3  # then the commanded speed
    assert 0.2 < eff[4, 0] < 0.6 and eff[5, 0] < 0.05 and abs(eff[6, 0]) < 1e-3  # the coast after letting go
    assert abs(v).max() < 1e-3
    assert np.all(eff[:, 1] == 0) and np.all(eff[:, 2:] == 0)  # yaw and pitch untouched, no sideways drift


def test_yaw_carries_the_velocity_into_the_new_heading():
    # walking forward, then turning right while letting go: the coast goes on along the old heading, which the
    # turned camera sees partly to its left (negative strafe)
    eff, _ = _respond([[1, 0, 0, 0]] * 4 + [[0, 0, 1, 0]])
    assert eff[-1, 0] > 0.2 and eff[-1, 1] < 0 and eff[-1, 2] == 1


def test_unlimited_fast_servo_is_the_instant_dsl():
    fast = TranslationResponse(velocity_gain=1e6, acceleration_limit=0.0, frame_time=0.05, substeps=5)
    acts = np.random.default_rng(0).uniform(-1, 1, (6, 4))
    acts[:, 2] = 0  # (a turn moves the velocity into the new heading)
    eff, _ = _respond(acts.tolist(), fast)
    np.testing.assert_allclose(eff, acts, atol=1e-4)


def _model(**overrides) -> WorldModel:
    torch.manual_seed(0)
    return WorldModel(WorldModelConfig.from_preset("tiny", camera_translation_speed=0.08, camera_rotation_speed_deg=4.0,
                                                   **overrides)).eval()


def _frames(B: int, T: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (B, T, 32, 32, 3), dtype=np.uint8)


def test_model_coasts_after_a_release_and_feeds_the_motion_it_made():
    model = _model(camera_velocity_gain=100.0, camera_acceleration_limit=33.666)
    gen = torch.Generator().manual_seed(0)
    state = model.init_state(1, frames=_frames(1, 1), generator=gen)
    assert state.velocity is not None and float(state.velocity.abs().max()) == 0  # an episode starts at rest
    w, idle = np.array([[1, 0, 0, 0]], np.float32), np.zeros((1, 4), np.float32)
    for _ in range(3):
        _, state = model.step(state, w, generator=gen)
    z = float(state.c2w[0, 2, 3])
    assert 0.08 * 2 < z < 0.08 * 3  # the first step covered part of a step
    _, state = model.step(state, idle, generator=gen)
    assert float(state.c2w[0, 2, 3]) > z + 0.01  # the camera coasts on under the idle action
    # the network's action input is the motion made: the coast reads as a partial forward step
    walk_then_idle = np.array([[[1, 0, 0, 0]] * 3 + [[0, 0, 0, 0]]], np.float32)
    action, *_, velocity = model._sequence_conditioning(1, 5, walk_then_idle, "actions")
    assert 0.4 < float(action[0, 1, 0]) < 0.8 and 0.2 < float(action[0, 4, 0]) < 0.6
    torch.testing.assert_close(velocity, state.velocity)  # the parallel path and the streaming steps agree


def test_context_then_steps_equal_one_longer_context():
    """init_state's velocity after its context actions is the streaming steps' velocity: a rollout continues the
    context's motion exactly."""
    model = _model(camera_velocity_gain=100.0, camera_acceleration_limit=33.666)
    acts = np.random.default_rng(1).uniform(-1, 1, (2, 4, 4)).astype(np.float32)
    whole = model.init_state(2, frames=_frames(2, 5), actions=acts)
    part = model.init_state(2, frames=_frames(2, 3), actions=acts[:, :2])
    for t in (2, 3):
        _, part = model.step(part, acts[:, t], generator=torch.Generator().manual_seed(t))
    torch.testing.assert_close(part.velocity, whole.velocity)
    torch.testing.assert_close(part.c2w, whole.c2w)


def test_off_by_default_and_validated():
    model = _model()
    state = model.init_state(1, frames=_frames(1, 1))
    assert state.velocity is None
    with pytest.raises(ValueError, match="camera_velocity_gain"):
        WorldModelConfig.from_preset("tiny", camera_velocity_gain=-1.0)
    with pytest.raises(ValueError, match="camera_substeps"):
        WorldModelConfig.from_preset("tiny", camera_substeps=0)


@pytest.mark.mujoco
def test_matches_the_real_rooms_motion():
    """The room's camera_spec describes its servo: a walk, a release, a half-speed walk and a strafe along a world
    axis move the camera as translation_response says (the instant DSL is off by up to 0.44 of a step)."""
    pytest.importorskip("mujoco")
    import gymnasium as gym

    import neuralsim.envs  # noqa: F401

    env = gym.make("NeuralSimRoom-v0").unwrapped
    spec = env.camera_spec
    response = TranslationResponse(spec["velocity_gain"], spec["acceleration_limit"], spec["frame_time"],
                                   spec["substeps"])
    env.reset(seed=5, options={"agent_yaw": 0.0})  # along a world axis the room's per-axis limit is the model's
    seq = [[1, 0, 0, 0]] * 3 + [[0, 0, 0, 0]] * 2 + [[0.5, 0, 0, 0]] * 2 + [[0, 0, 0, 0]]
    v = torch.zeros(1, 2, dtype=torch.float64)
    prev = env.data.qpos[:2].copy()
    worst = worst_instant = 0.0
    for a in seq:
        env.step(np.array(a, np.float32))
        moved = (env.data.qpos[:2] - prev) / spec["translation_speed"]
        prev = env.data.qpos[:2].copy()
        forward = np.array([math.cos(env._yaw), math.sin(env._yaw)])
        real = np.array([moved @ forward, moved @ np.array([forward[1], -forward[0]])])
        eff, v = translation_response(v, torch.tensor([a], dtype=torch.float64), response,
                                      translation_speed=spec["translation_speed"],
                                      rotation_speed_deg=spec["rotation_speed_deg"])
        worst = max(worst, float(np.abs(eff[0, :2].numpy() - real).max()))
        worst_instant = max(worst_instant, float(np.abs(np.array(a[:2]) - real).max()))
    env.close()
    assert worst < 0.05 and worst_instant > 0.3


def test_servo_config_fields_state_an_envs_servo_as_the_models_config():
    """A dataset manifest's "camera" (the env's camera_spec) → the config fields that turn the servo on."""
    from neuralsim.camera import servo_config_fields

    room = {"translation_speed": 0.08, "rotation_speed_deg": 4.0, "fovy_deg": 70.0, "velocity_gain": 100.0,
            "acceleration_limit": 33.666, "frame_time": 0.05, "substeps": 5.0}
    fields = servo_config_fields(room)
    assert fields == {"camera_velocity_gain": 100.0, "camera_acceleration_limit": 33.666, "camera_frame_time": 0.05,
                      "camera_substeps": 5}
    assert isinstance(fields["camera_substeps"], int)
    model = WorldModel(WorldModelConfig.from_preset("tiny", **fields))
    assert model._translation_response() == ROOM
    # no servo stated (an env that moves at the commanded speed at once, or no camera at all): nothing to set
    assert servo_config_fields(None) == {} and servo_config_fields({"translation_speed": 0.08}) == {}
    assert servo_config_fields({**room, "velocity_gain": 0.0}) == {}
    # the same spec read as the servo itself (what a target tracker's reward_task holds): all four keys or none
    from neuralsim.camera import TranslationResponse

    assert TranslationResponse.from_spec(room) == ROOM
    assert TranslationResponse.from_spec({**room, "velocity_gain": 0.0}) is None
    assert TranslationResponse.from_spec({k: v for k, v in room.items() if k != "substeps"}) is None
    assert TranslationResponse.from_spec(None) is None
