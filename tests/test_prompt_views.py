"""The views around a start drawn from its prompt (``config.prompt_view_channels``, ``neuralsim train views``): the
frame memory holds them below the real frames, so a turn shows what the sentence names where no frame looked."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, train_config
from neuralsim.config import WorldModelConfig
from neuralsim.prompt_start import PromptStart
from neuralsim.train import TrainingError, train, view_pairs

TURN = np.array([0.0, 0.0, 1.0, 0.0], np.float32)  # yaw right, 30 degrees a step in these models
PROMPT = "a room with a red floor"


def _views_model(frames_held: int = 1, **overrides):
    model = make_tiny_model(frames_per_latent=1, frame_memory_width=4, frame_memory_gate="seen",
                            camera_rotation_speed_deg=30.0, frame_memory_frames=frames_held, prompt_view_channels=32,
                            prompt_start_steps=2, **overrides)
    with torch.no_grad():  # its zero-initialised output layers made random: the views depend on the prompt
        for name, p in model.prompt_views.named_parameters():
            if name.startswith("out.") or name.endswith(("conv2.weight", "proj.weight")):
                torch.nn.init.normal_(p, std=0.1)
    return model


def _start(model, batch: int = 1) -> np.ndarray:
    H, W = model.config.image_size
    frames = np.zeros((batch, 1, H, W, 3), np.uint8)
    frames[..., 2] = 255  # blue
    return frames


def _angle_deg(pose: torch.Tensor) -> float:
    return float(torch.rad2deg(torch.arccos(((pose[0, 0] + pose[1, 1] + pose[2, 2] - 1) / 2).clamp(-1, 1))))


@pytest.mark.parametrize("fields", [{"prompt_view_channels": 32},  # no frame memory to hold the views
                                    {"frames_per_latent": 1, "frame_memory_width": 4, "prompt_view_channels": 24},
                                    {"frames_per_latent": 1, "frame_memory_width": 4, "prompt_view_channels": 32,
                                     "prompt_view_yaws_deg": [0.0]},
                                    {"frames_per_latent": 1, "frame_memory_width": 4, "prompt_view_channels": 32,
                                     "prompt_view_yaws_deg": [270.0]},
                                    {"frames_per_latent": 1, "frame_memory_width": 4, "prompt_view_channels": 32,
                                     "prompt_view_yaws_deg": []}])
def test_bad_view_fields_are_refused_naming_the_field(fields):
    with pytest.raises((ValueError, TypeError), match="prompt_view"):
        WorldModelConfig.from_preset("tiny", **fields)


def test_view_fields_round_trip_through_json():
    config = WorldModelConfig.from_preset("tiny", frames_per_latent=1, frame_memory_width=4, prompt_view_channels=32,
                                          prompt_view_yaws_deg=[180.0, -90.0])
    again = WorldModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.prompt_view_yaws_deg == (180.0, -90.0)


def test_a_view_generator_needs_its_reference_and_a_start_generator_refuses_one():
    views = PromptStart((4, 4, 4), 32, max_tokens=16, vocab=512, text_hidden=32, blocks=1, reference=True)
    start = PromptStart((4, 4, 4), 32, max_tokens=16, vocab=512, text_hidden=32, blocks=1)
    with pytest.raises(ValueError, match="reference"):
        views.sample(["a room"], steps=1)
    with pytest.raises(ValueError, match="reference"):
        views.sample(["a room"], steps=1, reference=torch.zeros(1, 4, 4, 2), yaw=torch.zeros(1))
    with pytest.raises(ValueError, match="reference"):
        start.sample(["a room"], steps=1, reference=torch.zeros(1, 4, 4, 4), yaw=torch.zeros(1))
    out = views.sample(["a room", None], torch.Generator().manual_seed(0), steps=2,
                       reference=torch.zeros(2, 4, 4, 4), yaw=torch.tensor([math.pi, -math.pi / 2]))
    assert out.shape == (2, 4, 4, 4) and bool(torch.isfinite(out).all())


def test_a_view_generator_started_from_a_prompt_start_first_draws_what_it_draws():
    torch.manual_seed(0)
    start = PromptStart((4, 4, 4), 32, max_tokens=16, vocab=512, text_hidden=32, blocks=1)
    for p in start.parameters():  # no zero-initialised layer: every weight matters
        torch.nn.init.normal_(p, std=0.1)
    views = PromptStart((4, 4, 4), 32, max_tokens=16, vocab=512, text_hidden=32, blocks=1, reference=True)
    views.init_from(start)
    prompts = ["a red room", "a blue room"]
    ref, yaw = torch.randn(2, 4, 4, 4), torch.tensor([math.pi, 0.5])
    torch.testing.assert_close(views.sample(prompts, torch.Generator().manual_seed(3), 2, reference=ref, yaw=yaw),
                               start.sample(prompts, torch.Generator().manual_seed(3), 2))
    with pytest.raises(ValueError, match="init_from"):
        start.init_from(views)
    with pytest.raises(ValueError, match="size"):
        PromptStart((4, 4, 4), 64, max_tokens=16, vocab=512, text_hidden=32, blocks=1, reference=True).init_from(start)


def test_a_view_generator_learns_which_reference_and_yaw_draw_which_view():
    torch.manual_seed(0)
    gen = PromptStart((4, 4, 4), 32, max_tokens=16, vocab=512, text_hidden=32, blocks=2, reference=True)
    # the view turned 180 degrees is the negative of the reference; turned 90 degrees, a flat 0.5
    refs = torch.cat([torch.full((16, 4, 4, 4), 1.0), torch.full((16, 4, 4, 4), -1.0)])
    yaws = torch.tensor([math.pi, math.pi / 2] * 16)
    targets = torch.where(yaws[:, None, None, None] > 2, -refs, torch.full_like(refs, 0.5))
    opt = torch.optim.Adam(gen.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        loss, logs = gen.loss(targets, ["a room"] * 32, g, reference=refs, yaw=yaws)
        opt.zero_grad()
        loss.backward()
        opt.step()
    gen.eval()
    out = gen.sample(["a room"] * 3, torch.Generator().manual_seed(1), steps=8,
                     reference=torch.stack([torch.full((4, 4, 4), 1.0), torch.full((4, 4, 4), -1.0),
                                            torch.full((4, 4, 4), 1.0)]),
                     yaw=torch.tensor([math.pi, math.pi, math.pi / 2]))
    assert float(out[0].mean()) < -0.7 and float(out[1].mean()) > 0.7 and abs(float(out[2].mean()) - 0.5) < 0.3
    assert logs["view_mse"] < 0.3


def test_view_pairs_are_one_place_at_two_headings_with_the_turn_between_them():
    def pose(yaw_deg: float, x: float = 0.0) -> np.ndarray:
        a = math.radians(yaw_deg)  # turned right about +Y (down): forward (0, 0, 1) -> (sin a, 0, cos a)
        p = np.eye(4)
        p[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
        p[0, 3] = x
        return p

    poses = np.stack([pose(4.0 * t) for t in range(46)] + [pose(0.0, x=1.0)])  # a half turn, then a step away
    pairs = view_pairs(poses, 10_000, np.random.default_rng(0))
    assert pairs and all(i != 46 and j != 46 for i, j, _ in pairs)  # the frame a metre away pairs with none
    for i, j, yaw in pairs:
        assert abs(math.degrees(yaw)) >= 20 - 1e-6
        assert math.isclose(math.remainder(math.degrees(yaw) - 4.0 * (j - i), 360), 0, abs_tol=1e-6)
    few = view_pairs(poses, 12, np.random.default_rng(0))
    assert len(few) == 12 and max(abs(math.degrees(y)) for *_, y in few) > 150  # spread over the whole turn


def test_a_start_with_a_prompt_holds_its_views_below_the_real_frames():
    model = _views_model(frames_held=3)
    state = model.init_state(2, frames=_start(model, 2), prompt=[PROMPT, None], generator=torch.Generator().manual_seed(0))
    V = len(model.config.prompt_view_yaws_deg)
    assert state.memory_earlier.shape == (2, V + 2, 3, *model.config.image_size)
    angles = [_angle_deg(state.memory_earlier_pose[0, j]) for j in range(V)]
    assert angles == pytest.approx([abs(y) for y in model.config.prompt_view_yaws_deg], abs=1e-6)
    # the view turned 90 degrees to the right looks along the start's +x
    assert float(state.memory_earlier_pose[0, 0, 0, 2]) == pytest.approx(1.0)
    eye = torch.eye(4, dtype=torch.float64)
    assert all(torch.equal(state.memory_earlier_pose[1, j], eye) for j in range(V + 2))  # no prompt: no views
    assert not torch.equal(state.memory_earlier[0, 0], state.memory_frame[0])  # a drawn view, not the start frame
    merged = state.merge(np.array([False, True]), model.init_state(1, frames=_start(model), prompt=PROMPT,
                                                                      generator=torch.Generator().manual_seed(1)))
    assert merged.memory_earlier.shape == state.memory_earlier.shape  # a reset with a prompt merges into any row


def test_turning_around_shows_the_view_and_a_start_without_a_prompt_dreams_as_before():
    with_views, without = _views_model(), make_tiny_model(
        frames_per_latent=1, frame_memory_width=4, frame_memory_gate="seen", camera_rotation_speed_deg=30.0)
    without.load_state_dict({k: v for k, v in with_views.state_dict().items() if not k.startswith("prompt_views.")})
    ends = {}
    for name, model, prompt in (("views", with_views, [PROMPT, None]), ("plain", without, [PROMPT, None])):
        g = torch.Generator().manual_seed(0)
        state = model.init_state(2, frames=_start(model, 2), prompt=prompt, generator=g)
        g = torch.Generator().manual_seed(5)  # the same dream noise after the reset
        for _ in range(6):  # 180 degrees
            latent, state = model.step(state, np.repeat(TURN[None], 2, 0), generator=g)
        ends[name] = model.decode(latent[:, None], first_frame=False, context=state)[:, 0]
        if name == "views":
            behind = ((state.memory_earlier[0, 1].permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8)
    # turned around, the frame is the view drawn 180 degrees away wherever its warp lands
    close = (ends["views"][0].int() - behind.int()).abs().max(dim=-1).values <= 2
    assert float(close.float().mean()) > 0.8
    assert not torch.equal(ends["views"][0], ends["plain"][0])
    torch.testing.assert_close(ends["views"][1], ends["plain"][1], rtol=0, atol=0)  # no prompt, no views


def _turn_dataset(path, episodes: int = 4, steps: int = 12):
    import gymnasium as gym

    from neuralsim.actions import space_to_spec
    from neuralsim.data import ShardWriter

    spec = space_to_spec(gym.spaces.Box(-1, 1, (4,), np.float32))
    with ShardWriter(path, {"env_id": "synthetic-turn", "image_size": [32, 32], "action_spec": spec,
                            "frames_per_step": 1}, episodes_per_shard=4) as writer:
        for e in range(episodes):
            frames, poses = [], []
            for t in range(steps + 1):
                a = math.radians(30.0 * t)
                frames.append(np.full((32, 32, 3), (20 * t + 40 * e) % 256, np.uint8))
                p = np.eye(4, dtype=np.float32)
                p[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
                poses.append(p)
            actions = np.tile(TURN, (steps, 1))
            writer.add_episode(np.stack(frames), actions, np.zeros(steps, np.float32), np.zeros(steps, bool),
                               np.r_[np.zeros(steps - 1, bool), True], f"a room of shade {e}", poses=np.stack(poses))
    return path


def test_train_views_adds_a_generator_trains_only_it_and_logs(tmp_path):
    from neuralsim.model import WorldModel

    data = _turn_dataset(tmp_path / "turn")
    memory = {"camera": True, "config_overrides": {"frames_per_latent": 1, "frame_memory_width": 4}}
    base = train(train_config(data, tmp_path / "base", **memory))
    before = WorldModel.from_pretrained(base)
    assert before.prompt_views is None
    out = train(train_config(data, tmp_path / "views", stage="views", init=str(base), steps=3, window=1, view_pairs=8))
    after = WorldModel.from_pretrained(out)
    assert after.prompt_views is not None and after.config.prompt_view_channels == 128  # no prompt start to copy
    kept = before.state_dict()
    for k, v in after.state_dict().items():
        if not k.startswith("prompt_views."):
            assert torch.equal(v, kept[k]), k  # nothing else moved
    rows = (out / "logs" / "views.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and "view_mse" in rows[0] and len(rows) == 4


def test_train_views_refuses_data_without_poses_and_a_model_without_a_memory(dataset, tmp_path):
    base = train(train_config(dataset, tmp_path / "base"))
    with pytest.raises(TrainingError, match="poses"):
        train(train_config(dataset, tmp_path / "v", stage="views", init=str(base), window=1))
    data = _turn_dataset(tmp_path / "turn")
    plain = train(train_config(data, tmp_path / "plain", camera=True, config_overrides={"frames_per_latent": 1}))
    with pytest.raises(TrainingError, match="prompt_view_channels"):
        train(train_config(data, tmp_path / "v2", stage="views", init=str(plain), window=1))
    with pytest.raises(TrainingError, match="--view-pairs"):
        train(train_config(data, tmp_path / "v3", stage="views", init=str(plain), window=1, view_pairs=0))


@pytest.mark.parametrize("obs_type,render_mode,drawn", [("rgb", None, True), ("latent", None, False),
                                                        ("latent", "rgb_array", True)])
def test_an_env_draws_the_views_only_where_it_decodes_frames(tmp_path, obs_type, render_mode, drawn):
    from neuralsim.envs import WorldModelEnv

    _views_model().save_pretrained(tmp_path / "m")
    env = WorldModelEnv(model=str(tmp_path / "m"), obs_type=obs_type, render_mode=render_mode)
    env.reset(seed=0, options={"image": _start(env.session.model)[0, 0], "prompt": PROMPT})
    poses = env._state.memory_earlier_pose[0, : len(env.session.model.config.prompt_view_yaws_deg)]
    assert bool((poses != torch.eye(4, dtype=poses.dtype)).any()) == drawn  # else the identity: no views held
    env.close()


def test_a_pitched_start_draws_no_views():
    model = _views_model()
    g = torch.Generator().manual_seed(0)
    # a one-frame context pitched up 4 steps of 30 degrees: 120 degrees, far past the level the views need
    H, W = model.config.image_size
    frames = np.zeros((2, 5, H, W, 3), np.uint8)
    actions = np.zeros((2, 4, 4), np.float32)
    actions[1, :, 3] = 0.5  # the second row pitches up 60 degrees; the first stays level
    state = model.init_state(2, frames=frames, actions=actions, prompt=PROMPT, generator=g)
    V = len(model.config.prompt_view_yaws_deg)
    eye = torch.eye(4, dtype=torch.float64)
    assert not torch.equal(state.memory_earlier_pose[0, 0], eye)
    assert all(torch.equal(state.memory_earlier_pose[1, j], eye) for j in range(V))
