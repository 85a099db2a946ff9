"""WorldModel: streaming == teacher-forced parallel forward, constant state, camera, validation, losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neuralsim.camera import CameraIntegrator, plucker_rays
from neuralsim.config import WorldModelConfig
from neuralsim.model import WorldModel, WorldState, camera_intrinsics, camera_step, describe, plucker_rays_torch



def _model(seed: int = 0, **overrides) -> WorldModel:
    torch.manual_seed(seed)  # tests may seed globally; the library never does
    model = WorldModel(WorldModelConfig.from_preset("tiny", **overrides)).eval()
    # Zero-initialised output projections make a fresh model the identity; perturb every weight so the
    # equivalence tests exercise all paths (attention, temporal convs, camera branch, heads).
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _frames(B: int, T: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (B, T, size, size, 3), dtype=np.uint8)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the central property: parallel (training) path == streaming (env) path -------------------


@pytest.mark.parametrize("T", [1, 3, 11])
def test_teacher_forced_parallel_equals_streaming(T):
    model = _model()
    dyn, cfg = model.dynamics, model.config
    B, S, C = 2, cfg.tokens_per_frame, cfg.token_channels
    g = _gen(1)
    x = torch.randn(B, T, S, C, generator=g)
    prev = torch.randn(B, T, S, C, generator=g)
    tau = torch.rand(B, T, generator=g)
    actions = torch.rand(B, T - 1, 4, generator=g) * 2 - 1
    action, known, rays, _, _, rel, _, _ = model._sequence_conditioning(B, T, actions.numpy(), "actions")
    tokens, mask = model._encode_text(["a red ball near the blue wall", None], B)
    text = dyn.text_kv(tokens)
    with torch.no_grad():
        v_par, f_par, cache_par = dyn(x, tau, start=torch.zeros(B, dtype=torch.long), action=action, action_known=known,
                                      rays=rays, text=text, text_mask=mask, prev=prev, rel_rays=rel)
        cache = dyn.empty_cache(B)
        v_seq, f_seq = [], []
        for t in range(T):
            sl = slice(t, t + 1)
            v, f, cache = dyn(x[:, sl], tau[:, sl], start=torch.full((B,), t), action=action[:, sl],
                              action_known=known[:, sl], rays=rays[:, sl], text=text, text_mask=mask, cache=cache,
                              prev=prev[:, sl], rel_rays=rel[:, sl])
            v_seq.append(v)
            f_seq.append(f)
    torch.testing.assert_close(torch.cat(v_seq, 1), v_par, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cat(f_seq, 1), f_par, rtol=1e-4, atol=1e-5)
    for a, b in zip(cache, cache_par):  # the final streaming state agrees too
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_context_in_one_pass_equals_frame_by_frame_commits():
    """init_state commits T context frames in one parallel pass; committing them one by one gives the same state."""
    model = _model(context_noise=0.0)  # no noise so both routes see identical inputs
    B, fr = 2, _frames(2, 5)
    acts = np.random.default_rng(0).uniform(-1, 1, (B, 4, 4)).astype(np.float32)
    whole = model.init_state(B, frames=fr, actions=acts)
    part = model.init_state(B, frames=fr[:, :3], actions=acts[:, :2])
    rest = model.init_state(B, frames=fr, actions=acts)  # reference for the remaining 2 frames' inputs
    assert whole.step.tolist() == [5, 5]
    for a, b in zip(whole.cache, rest.cache):
        for key in a:
            torch.testing.assert_close(a[key], b[key])
    assert part.step.tolist() == [3, 3]
    torch.testing.assert_close(whole.c2w, rest.c2w)


def test_step_is_deterministic_given_generator_and_seed_matters():
    model = _model()
    fr, act = _frames(2, 1), np.zeros((2, 4), np.float32)
    s1 = model.init_state(2, frames=fr, generator=_gen(0))
    s2 = model.init_state(2, frames=fr, generator=_gen(0))
    l1, _ = model.step(s1, act, generator=_gen(5))
    l2, _ = model.step(s2, act, generator=_gen(5))
    l3, _ = model.step(s2, act, generator=_gen(6))
    assert torch.equal(l1, l2)
    assert not torch.equal(l1, l3)


def test_step_returns_new_state_and_leaves_input_untouched():
    model = _model()
    state = model.init_state(2, frames=_frames(2, 1), generator=_gen())
    before = state.clone()
    _, new = model.step(state, np.zeros((2, 4), np.float32), generator=_gen())
    assert isinstance(new, WorldState) and new is not state and new.step.tolist() == [2, 2]
    for a, b in zip(state.cache, before.cache):
        for key in a:
            assert torch.equal(a[key], b[key])


def test_state_size_is_constant_in_episode_length():
    model = _model()
    state = model.init_state(1, frames=_frames(1, 1), generator=_gen())
    g, act = _gen(1), np.zeros((1, 4), np.float32)
    sizes = {}
    for t in range(1, 201):
        act = np.random.default_rng(t).uniform(-1, 1, (1, 4)).astype(np.float32)
        _, state = model.step(state, act, generator=g, denoise_steps=1)
        if t in (10, 200):
            sizes[t] = state.nbytes()
    assert sizes[10] == sizes[200]
    assert torch.isfinite(state.latent).all()
    softmax = [c for c in state.cache if "frame" in c][0]
    assert softmax["frame"][0].tolist() == [0, 199, 200]  # sink frame 0 + the window of the 2 latest frames


# --- state API ---------------------------------------------------------------------------------


def test_merge_clone_nbytes():
    model = _model()
    a = model.init_state(3, frames=_frames(3, 1, seed=1), prompt="a room", generator=_gen())
    _, a = model.step(a, np.zeros((3, 4), np.float32), generator=_gen())
    b = model.init_state(3, frames=_frames(3, 1, seed=2), generator=_gen())
    m = a.merge(torch.tensor([True, False, True]), b)
    assert m.step.tolist() == [1, 2, 1]
    assert torch.equal(m.latent[1], a.latent[1]) and torch.equal(m.latent[0], b.latent[0])
    assert torch.equal(m.text_mask[0], b.text_mask[0]) and torch.equal(m.c2w[1], a.c2w[1])
    assert m.batch_size == 3 and m.nbytes() == a.nbytes()
    c = a.clone()
    c.latent.add_(1)
    assert not torch.equal(c.latent, a.latent)
    with pytest.raises(ValueError, match="mask"):
        a.merge(torch.tensor([True, False]), b)
    # a merged batch with rows at different steps keeps stepping
    latent, m2 = model.step(m, np.zeros((3, 4), np.float32), generator=_gen())
    assert m2.step.tolist() == [2, 3, 2] and torch.isfinite(latent).all()


# --- camera ----------------------------------------------------------------------------------


def test_camera_step_matches_camera_integrator():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (80, 3, 4))
    actions[:, 0, 3] = 1.0  # keep pitching up on row 0 to hit the ±85° clamp
    integrators = [CameraIntegrator(0.07, 2.0) for _ in range(3)]
    c2w = torch.eye(4, dtype=torch.float64).repeat(3, 1, 1)
    pitch = torch.zeros(3, dtype=torch.float64)
    for a in actions:
        c2w, pitch = camera_step(c2w, pitch, torch.from_numpy(a), translation_speed=0.07, rotation_speed_deg=2.0)
        expected = np.stack([cam.step(a[i]) for i, cam in enumerate(integrators)])
        np.testing.assert_allclose(c2w.numpy(), expected, atol=1e-9)
    assert math.isclose(pitch[0].item(), integrators[0].pitch)


def test_plucker_rays_match_actions_module():
    c2w = np.stack([CameraIntegrator().step([1, 0.5, -0.3, 0.8]) for _ in range(2)])
    h, w, fov = 4, 6, 60.0
    ours = plucker_rays_torch(torch.from_numpy(c2w), h, w, fov).numpy()
    ref = plucker_rays(np.array([camera_intrinsics(h, w, fov)] * 2), c2w, h, w)
    np.testing.assert_allclose(ours, ref.reshape(2, h * w, 6), atol=1e-6)


def test_step_integrates_camera_pose():
    model = _model(camera_translation_speed=0.1)
    state = model.init_state(1, frames=_frames(1, 1), generator=_gen())
    for _ in range(3):
        _, state = model.step(state, np.array([[1.0, 0, 0, 0]], np.float32), generator=_gen())
    np.testing.assert_allclose(state.c2w[0, :3, 3].numpy(), [0, 0, 0.3], atol=1e-9)  # +Z is forward


# --- frames_per_latent, discrete actions, prompts ---------------------------------------------


def test_temporal_packing_encode_decode_causal():
    model = _model(frames_per_latent=2)
    fr = _frames(2, 5)  # 1 + 2*2 frames -> 3 latent frames
    lat = model.encode(fr)
    assert lat.shape == (2, 3, 8, 4, 4) and lat.dtype == torch.float32
    torch.testing.assert_close(model.encode(fr[:, :3]), lat[:, :2])  # causal: later frames don't change earlier latents
    assert torch.equal(model.encode(fr), lat)  # deterministic
    assert model.decode(lat).shape == (2, 5, 32, 32, 3)
    state = model.init_state(2, frames=fr, actions=np.zeros((2, 2, 4), np.float32), generator=_gen())
    latent, state = model.step(state, np.zeros((2, 4), np.float32), generator=_gen())
    assert model.decode(latent[:, None], first_frame=False).shape == (2, 2, 32, 32, 3)
    with pytest.raises(ValueError, match="T = 1 \\+ n\\*2"):
        model.encode(_frames(2, 4))


def test_discrete_actions_and_prompt_only_start():
    model = _model(action_spec={"type": "discrete", "n": 11, "start": 0})
    state = model.init_state(2, prompt=["a red ball near the blue wall", "a green box"], generator=_gen())
    assert state.step.tolist() == [1, 1] and state.latent.abs().sum() > 0
    latent, state = model.step(state, np.array([1, 9]), generator=_gen())
    assert latent.shape == (2, 8, 4, 4)
    assert state.c2w[0, 2, 3] > 0  # "w" moved forward
    with pytest.raises(ValueError, match="actions"):
        model.step(state, np.array([1, 11]), generator=_gen())
    with pytest.raises(TypeError, match="actions"):
        model.step(state, np.array([0.5, 1.0]), generator=_gen())


def test_non_camera_world():
    model = _model(camera=False, camera_branch=False,
                   action_spec={"type": "box", "shape": [2], "low": [-2, -2], "high": [2, 2], "dtype": "float32"})
    state = model.init_state(2, frames=_frames(2, 2), actions=np.ones((2, 1, 2), np.float32), generator=_gen())
    assert state.c2w is None
    latent, state = model.step(state, np.full((2, 2), 1.5, np.float32), generator=_gen())
    assert torch.isfinite(latent).all()


def test_prompt_validation():
    model = _model()
    with pytest.raises(TypeError, match="prompt"):
        model.init_state(1, prompt=b"a red ball")
    with pytest.raises(ValueError, match="empty"):
        model.init_state(1, prompt="   ")
    with pytest.raises(ValueError, match="4096"):
        model.init_state(1, prompt="x" * 5000)
    with pytest.raises(ValueError, match="prompt"):
        model.init_state(2, prompt=["a", "b", "c"])
    model.init_state(1, prompt="a red\x00 ball\n near\tthe wall", generator=_gen())  # control chars become spaces


# --- input validation ---------------------------------------------------------------------------


def test_bad_inputs_raise_value_errors_naming_the_argument():
    model = _model()
    state = model.init_state(2, frames=_frames(2, 1), generator=_gen())
    with pytest.raises(ValueError, match="frames.*uint8"):
        model.encode(_frames(2, 1).astype(np.float32))
    with pytest.raises(ValueError, match="frames.*shape"):
        model.encode(_frames(2, 1, size=16))
    with pytest.raises(ValueError, match="frames.*shape"):
        model.encode(_frames(2, 1)[:, 0])
    with pytest.raises(ValueError, match="actions"):
        model.step(state, np.zeros((3, 4), np.float32))  # batch mismatch with the state
    with pytest.raises(ValueError, match="actions"):
        model.step(state, np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        model.step(state, np.full((2, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="actions"):
        model.step(state, np.full((2, 4), 3.0, np.float32))  # outside Box(-1, 1)
    with pytest.raises(ValueError, match="actions"):
        model.init_state(2, frames=_frames(2, 3), actions=np.zeros((2, 1, 4), np.float32))  # needs (2, 2, 4)
    with pytest.raises(ValueError, match="batch_size"):
        model.init_state(3, frames=_frames(2, 1))
    with pytest.raises(ValueError, match="batch_size"):
        model.init_state(0)
    with pytest.raises(ValueError, match="denoise_steps"):
        model.step(state, np.zeros((2, 4), np.float32), denoise_steps=0)
    with pytest.raises(ValueError, match="state"):
        model.step("not a state", np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="latents"):
        model.decode(torch.zeros(2, 1, 3, 4, 4))


def test_non_finite_latent_raises_at_that_step():
    model = _model()
    state = model.init_state(1, frames=_frames(1, 1), generator=_gen())
    with torch.no_grad():
        model.dynamics.final_layer.linear.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="step 1"):
        model.step(state, np.zeros((1, 4), np.float32), generator=_gen())


# --- precision -----------------------------------------------------------------------------------


def test_bf16_autocast_path_runs():
    model = _model()
    fr, act = _frames(2, 3), np.zeros((2, 2, 4), np.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        state = model.init_state(2, frames=fr, actions=act, prompt="a room", generator=_gen())
        latent, state = model.step(state, np.zeros((2, 4), np.float32), generator=_gen())
        frames = model.decode(latent[:, None], first_frame=False)
        loss, logs = model.dynamics_loss(model.encode(fr), act, np.zeros((2, 2)), np.zeros((2, 2), bool), None, _gen())
    loss.backward()
    assert latent.dtype == torch.float32 and torch.isfinite(latent).all()
    assert state.cache[0]["S"].dtype == torch.float32  # the recurrent state stays fp32
    assert frames.dtype == torch.uint8 and math.isfinite(logs["loss"])
    ref_state = model.init_state(2, frames=fr, actions=act, prompt="a room", generator=_gen())
    ref_latent, _ = model.step(ref_state, np.zeros((2, 4), np.float32), generator=_gen())
    assert (latent - ref_latent).pow(2).mean().sqrt() < 0.1 * ref_latent.pow(2).mean().sqrt() + 0.05


# --- losses and heads -----------------------------------------------------------------------------


def test_losses_backprop_to_every_trainable_part():
    model = _model()
    fr = _frames(2, 4)
    loss, logs = model.autoencoder_loss(fr, generator=_gen())
    loss.backward()
    assert set(logs) >= {"loss", "l1", "mse", "ssim", "psnr"}
    assert all(p.grad is not None for p in model.autoencoder.parameters())
    model.zero_grad()
    rewards = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    term = np.array([[False, False, True], [False, False, False]])
    loss, logs = model.dynamics_loss(model.encode(fr), np.zeros((2, 3, 4), np.float32), rewards, term,
                                     ["a red ball", "a blue box"], generator=_gen())
    loss.backward()
    assert {"flow", "reward_mse", "termination_bce", "loss"} <= set(logs)
    for name in ("dynamics", "reward_head", "termination_head", "text_encoder"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name
    discrete = _model(action_spec={"type": "discrete", "n": 11, "start": 0})
    loss, logs = discrete.dynamics_loss(discrete.encode(fr), np.array([[1, 9, 0], [2, 3, 4]]), generator=_gen())
    assert math.isfinite(logs["flow"]) and "reward_mse" not in logs
    with pytest.raises(ValueError, match="actions"):
        discrete.dynamics_loss(discrete.encode(fr), np.zeros((2, 3, 4), np.float32), generator=_gen())
    same, _ = model.dynamics_loss(model.encode(fr), np.zeros((2, 3, 4), np.float32), rewards, term, None, _gen(3))
    again, _ = model.dynamics_loss(model.encode(fr), np.zeros((2, 3, 4), np.float32), rewards, term, None, _gen(3))
    assert same.item() == again.item()


def test_training_reduces_flow_loss_quickly():
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig.from_preset("tiny"))
    lat = torch.randn(4, 4, 8, 4, 4) * 0.5
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g, first = _gen(), None
    for i in range(30):
        loss, logs = model.dynamics_loss(lat, np.zeros((4, 3, 4), np.float32), np.ones((4, 3)), np.zeros((4, 3), bool),
                                         None, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else logs["flow"]
    assert logs["flow"] < 0.8 * first


def test_heads_fill_state():
    model = _model()
    state = model.init_state(2, frames=_frames(2, 1), generator=_gen())
    _, state = model.step(state, np.zeros((2, 4), np.float32), generator=_gen())
    reward, prob = model.predict_reward_termination(state)
    assert reward.shape == (2,) and prob.shape == (2,) and ((prob >= 0) & (prob <= 1)).all()
    off = _model(reward_head=False, termination_head=False)
    _, s = off.step(off.init_state(1, frames=_frames(1, 1), generator=_gen()), np.zeros((1, 4), np.float32))
    assert s.reward.tolist() == [0.0] and s.termination_prob.tolist() == [0.0]


def test_set_latent_normalization_roundtrip():
    model = _model()
    fr = _frames(1, 1)
    raw = model.encode(fr)
    model.set_latent_normalization(2.0, [0.5] * 8)
    torch.testing.assert_close(model.encode(fr), (raw - 0.5) * 2.0)
    assert model.config.latent_scale == 2.0 and model.config.latent_shift == (0.5,) * 8


def test_describe_counts_and_builds_on_meta():
    d = describe("default")
    p = d["parameters"]
    assert p["total"] == p["autoencoder"] + p["dynamics"] + p["text"] + p["heads"]
    assert p["total"] == WorldModel(WorldModelConfig.from_preset("default")).num_parameters()
    assert d["weights_bytes_bf16"] == 2 * p["total"] and d["tokens_per_latent_frame"] == 16
    assert describe("paper-2.6b")["parameters"]["dynamics"] > 2.5e9
    for overrides in ({}, {"camera": False, "camera_branch": False}):
        model = _model(**overrides)
        state = model.init_state(1, frames=_frames(1, 1), generator=_gen())
        assert describe(model.config)["state_bytes_per_env_fp32"] == state.nbytes()


# --- sampler, fused commit, text ----------------------------------------------------------------


def test_sampling_schedules():
    from neuralsim.sampler import diffusion_forcing_levels, sampling_timesteps

    assert sampling_timesteps(2).tolist() == [1.0, 0.5, 0.0]
    torch.testing.assert_close(sampling_timesteps(3, end=0.05), torch.tensor([1.0, 0.525, 0.05, 0.0]))
    assert sampling_timesteps(1, end=0.05).tolist() == [1.0, 0.0]
    tau = diffusion_forcing_levels(64, 8, generator=_gen(), context_noise=0.05, clean_context_prob=1.0)
    assert tau.shape == (64, 8) and (tau >= 0).all() and (tau <= 1).all()
    assert (tau[:, 0] <= 0.1).all()  # every sequence starts with a context prefix when clean_context_prob=1
    assert torch.equal(tau, diffusion_forcing_levels(64, 8, generator=_gen(), context_noise=0.05, clean_context_prob=1.0))


@pytest.mark.parametrize("fused,steps,passes", [(True, 2, 2), (True, 3, 3), (True, 1, 2), (False, 2, 3)])
def test_commit_pass_count(fused, steps, passes):
    model = _model(fused_commit=fused)
    state = model.init_state(1, frames=_frames(1, 1), generator=_gen())
    calls = []
    handle = model.dynamics.register_forward_hook(lambda *a: calls.append(1))
    try:
        latent, new = model.step(state, np.zeros((1, 4), np.float32), generator=_gen(), denoise_steps=steps)
    finally:
        handle.remove()
    assert len(calls) == passes and new.step.tolist() == [2] and torch.isfinite(latent).all()


def test_hash_tokenizer_is_stable_and_truncates():
    from neuralsim.text import START_ID, hash_tokenize

    ids, mask = hash_tokenize(["a red ball", "A RED ball!", "one two three four five six seven eight nine"], vocab=257,
                              max_tokens=8)
    assert ids[0, 0] == START_ID and mask[0].tolist() == [True] * 4 + [False] * 4
    assert torch.equal(ids[0, :4], ids[1, :4]) and ids[1, 4] != 0  # case-insensitive; "!" is a token
    assert mask[2].all()  # truncated to max_tokens
    again, _ = hash_tokenize(["a red ball"], vocab=257, max_tokens=8)
    assert torch.equal(again[0], ids[0])


def test_module_docstring_example_runs():
    import neuralsim.model as mod

    g = torch.Generator().manual_seed(0)
    model = WorldModel(WorldModelConfig.from_preset("tiny"))
    state = model.init_state(2, frames=np.zeros((2, 1, 32, 32, 3), np.uint8), generator=g)
    latent, state = model.step(state, np.zeros((2, 4), np.float32), generator=g)
    assert model.decode(latent[:, None], first_frame=False).shape == (2, 1, 32, 32, 3)
    assert "init_state" in mod.__doc__


# --- the direct path from the last frame (prev_frame_input, x0_residual, patch_size) -------------------------------


def _stepped(model, seed: int = 0, steps: int = 3):
    g = _gen(seed)
    frames = np.random.default_rng(seed).integers(0, 256, (2, 2, 32, 32, 3), dtype=np.uint8)
    state = model.init_state(2, frames=frames, actions=np.zeros((2, 1, 4), np.float32), generator=g)
    latents = []
    for t in range(steps):
        latent, state = model.step(state, np.full((2, 4), 0.5 * (-1) ** t, np.float32), generator=g)
        latents.append(latent)
    return state, torch.stack(latents, 1)


def test_patchify_round_trips_and_a_patched_model_saves_and_loads(tmp_path):
    cfg = WorldModelConfig.from_preset("tiny", frames_per_latent=1, patch_size=2)
    torch.manual_seed(0)
    model = WorldModel(cfg).eval()
    torch.nn.init.normal_(model.dynamics.final_layer.linear.weight, std=0.05)
    assert cfg.token_grid == (2, 2) and cfg.tokens_per_frame == 4 and cfg.token_channels == 4 * cfg.latent_channels
    latents = torch.randn(2, 3, *model.latent_shape)
    tokens = model._tokens(latents)
    assert tokens.shape == (2, 3, 4, 4 * cfg.latent_channels)
    torch.testing.assert_close(model._untokens(tokens), latents, rtol=0, atol=0)
    # a token holds one 2x2 patch: token 1 is rows 0-1, columns 2-3 of the latent grid
    torch.testing.assert_close(tokens[0, 0, 1].view(cfg.latent_channels, 2, 2), latents[0, 0, :, 0:2, 2:4])
    model.save_pretrained(tmp_path / "m")
    again = WorldModel.from_pretrained(tmp_path / "m")
    _, a = _stepped(model)
    _, b = _stepped(again)
    torch.testing.assert_close(a, b)


def test_x0_residual_model_copies_the_last_frame_at_init():
    """Zero-initialised output: "nothing changes" is what an untrained x0_residual model does, at any action."""
    cfg = WorldModelConfig.from_preset("tiny", frames_per_latent=1)
    assert cfg.prev_frame_input and cfg.prediction == "x0_residual"
    model = WorldModel(cfg).eval()
    g = _gen(0)
    frames = np.random.default_rng(0).integers(0, 256, (2, 1, 32, 32, 3), dtype=np.uint8)
    state = model.init_state(2, frames=frames, generator=g)
    start = state.latent.clone()
    for t in range(4):
        latent, state = model.step(state, np.ones((2, 4), np.float32), generator=g)
        torch.testing.assert_close(latent, start, rtol=0, atol=1e-6)


def test_the_posterior_skip_keeps_one_step_sampling_and_follows_the_input_at_low_noise():
    """skip_prior_var > 0: the x0 estimate's skip blends the previous latent with the noisy input. At tau = 1 it is
    the previous latent (a one-step model's samples do not change); at low noise the estimate follows the input
    (the weights are the same, only the parameterisation differs)."""
    from conftest import make_tiny_model

    plain = make_tiny_model(frames_per_latent=1).eval()
    blended = make_tiny_model(frames_per_latent=1, skip_prior_var=0.1).eval()
    plain.config = plain.config.replace(denoise_steps=1)
    blended.config = blended.config.replace(denoise_steps=1)
    _, a = _stepped(plain)
    _, b = _stepped(blended)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    x, base, out = torch.randn(2, 1, 4, 8), torch.randn(2, 1, 4, 8), torch.randn(2, 1, 4, 8)
    torch.testing.assert_close(blended._x0_estimate(out, x, 1.0, base), base + out)
    low = blended._x0_estimate(out, x, torch.full((2, 1), 1e-4), base)
    torch.testing.assert_close(low, x, rtol=0, atol=1e-2)  # tau -> 0: the input itself
    # at a middle level it lies between the previous latent and the input (output zero)
    mid = blended._x0_estimate(torch.zeros_like(out), x, 0.3, base)
    torch.testing.assert_close(mid, (0.09 * base + 0.1 * 0.7 * x) / (0.1 * 0.49 + 0.09))  # (tau² base + v(1-tau) x) / a
    loss, _ = blended.streaming_loss(torch.randn(2, 3, *blended.latent_shape), np.zeros((2, 2, 4), np.float32),
                                     generator=_gen(0), one_step_fraction=0.0)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match=r"skip_prior_var=-1.0 is invalid: expected a finite float >= 0"):
        WorldModelConfig.from_preset("tiny", skip_prior_var=-1.0)


def test_ray_ablation_changes_the_dream_and_is_off_by_default():
    model = _model()
    torch.nn.init.normal_(model.dynamics.ray_embedder.weight, std=0.5)
    assert model.ablate_rays is False
    _, with_rays = _stepped(model)
    model.ablate_rays = True
    _, without = _stepped(model)
    model.ablate_rays = False
    _, again = _stepped(model)
    assert not torch.allclose(with_rays, without)
    torch.testing.assert_close(with_rays, again)


def test_velocity_models_keep_their_behaviour():
    """Fields added later default to off: a config without them is the first shipped model's architecture."""
    cfg = WorldModelConfig.from_preset("tiny", prev_frame_input=False, prediction="velocity")
    model = WorldModel(cfg).eval()
    assert model.dynamics.prev_embedder is None and model.dynamics.ray_embedder is None
    _, latents = _stepped(model)  # streams and trains without the relative rays (not even computed)
    assert torch.isfinite(latents).all() and model._sequence_conditioning(2, 3, None, "actions")[5] is None
    loss, _ = model.dynamics_loss(torch.randn(2, 3, *model.latent_shape), np.zeros((2, 2, 4), np.float32))
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="prediction"):
        WorldModelConfig.from_preset("tiny", prev_frame_input=False, prediction="x0_residual")
    with pytest.raises(ValueError, match="patch_size"):
        WorldModelConfig.from_preset("tiny", patch_size=3)


# --- the previous frame warped by the camera's rotation (prev_frame_warp) -----------------------


def test_rotation_warp_is_identity_for_a_still_camera_and_follows_a_yaw():
    from neuralsim.model import camera_step, rotation_warp_grid, warp_latents

    x = torch.randn(2, 3, 4, 8, 8, generator=_gen(0))
    eye = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    grid = rotation_warp_grid(eye, 8, 8, 70.0)
    torch.testing.assert_close(warp_latents(x, grid[:, None].expand(2, 3, 8, 8, 2)), x, rtol=0, atol=1e-5)
    # Turning right ("l"): the new view's centre was right of centre in the previous view; rows stay put.
    new, _ = camera_step(eye, torch.zeros(2, dtype=torch.float64), torch.tensor([[0, 0, 1.0, 0]] * 2, dtype=torch.float64),
                         translation_speed=0.08, rotation_speed_deg=4.0)
    grid = rotation_warp_grid(new, 64, 64, 70.0)
    step_px = (grid[0, 32, 32, 0] - rotation_warp_grid(eye, 64, 64, 70.0)[0, 32, 32, 0]) * 63 / 2
    assert 2.5 < float(step_px) < 4.0  # tan(4°) * focal (45.7 px): 3.2 px at the centre
    assert abs(float(grid[0, 32, 32, 1] - rotation_warp_grid(eye, 64, 64, 70.0)[0, 32, 32, 1])) < 1e-3


def test_prev_frame_warp_needs_the_direct_path_and_the_camera():
    with pytest.raises(ValueError, match="prev_frame_warp"):
        WorldModelConfig.from_preset("tiny", camera=False, camera_branch=False, prev_frame_warp=True)
    with pytest.raises(ValueError, match="prev_frame_warp"):
        WorldModelConfig.from_preset("tiny", prev_frame_input=False, prediction="velocity", prev_frame_warp=True)


def test_prev_frame_warp_changes_nothing_while_the_camera_is_still_and_something_when_it_turns():
    plain, warped = _model(3), _model(3, prev_frame_warp=True)
    warped.load_state_dict(plain.state_dict())
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32, 3), dtype=np.uint8)
    outs = {}
    for name, model in (("plain", plain), ("warped", warped)):
        for label, act in (("still", 0.0), ("turn", 1.0)):
            actions = np.zeros((2, 2, 4), np.float32)
            actions[..., 2] = act
            state = model.init_state(2, frames=frames, actions=actions, generator=_gen(1))
            step = np.zeros((2, 4), np.float32)
            step[:, 2] = act
            outs[name, label] = model.step(state, step, generator=_gen(2))[0]
    torch.testing.assert_close(outs["plain", "still"], outs["warped", "still"], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(outs["plain", "turn"], outs["warped", "turn"], atol=1e-3)
