"""benchmarks/fidelity.py: its metrics on known inputs, the room's object mask, and the whole script on the tiny checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import load_script


def _load_fidelity():
    return load_script("benchmarks/fidelity.py", "fidelity_bench")


def test_pooled_psnr_is_not_flattered_by_identical_frames():
    F = _load_fidelity()
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    b = a.copy()
    b[1:] = np.clip(b[1:].astype(int) + rng.integers(-20, 21, b[1:].shape), 0, 255).astype(np.uint8)
    s = F.psnr_stats(b, a)
    assert s["mean"] > 50  # one identical frame (148 dB) drags the mean up
    mse = ((b.astype(float) - a) ** 2).mean()
    assert s["pooled"] == pytest.approx(10 * math.log10(255**2 / mse))
    assert s["pooled"] < 30
    mask = np.zeros((4, 16, 16), bool)
    assert F.masked_psnr(b, a, mask) is None
    mask[0] = True
    assert F.masked_psnr(b, a, mask) > 140  # only the identical frame's pixels


def test_reward_metrics_split_the_progress_from_the_timing_of_the_success():
    """A dream whose progress is exact but whose success bonus comes two steps late: the progress Pearson is 1, the
    whole-reward Pearson is not, the delay is 2 steps; an episode the dream never ends counts as missed."""
    F = _load_fidelity()
    rng = np.random.default_rng(0)
    steps = F.REWARD_STEPS
    progress = rng.normal(0, 0.3, (3, steps))
    real_end = np.zeros((3, steps), bool)
    real_end[0, 5:] = True  # reaches the target at step 5 and stays
    real_end[1, 9] = True  # at step 9; the dream never ends this one
    dream_end = np.zeros((3, steps))
    dream_end[0, 7:] = 1.0
    valid = np.cumsum(real_end, axis=1) - real_end == 0
    p = {"real_rewards": progress + 10.0 * real_end, "dream_rewards": progress + 10.0 * dream_end,
         "real_terminated": real_end, "dream_termination": dream_end, "valid": valid}
    m = F.reward_metrics({"scripted": p})
    assert m["reward_corr_t1_16_progress"] == pytest.approx(1.0)
    assert m["reward_corr_t1_16"] < 0.9
    assert m["termination_delay_median"] == 2.0 and m["termination_missed"] == 1
    assert m["termination_within_1_step"] == 0.0


def test_episode_bootstrap_brackets_the_figure_and_is_reproducible():
    F = _load_fidelity()
    rng = np.random.default_rng(3)
    episodes = []
    for _ in range(40):  # a dream that ends 30 of 40 real successes on the right step, 10 one step early
        real = np.zeros(8, bool)
        real[-1] = True
        dream = real.copy() if len(episodes) < 30 else np.roll(real, -1)
        episodes.append((rng.normal(size=8), real, dream))
    f1 = lambda x, real, dream: F.f1_score(dream, real)  # noqa: E731
    point = f1(*(np.concatenate(c) for c in zip(*episodes)))
    low, high = F.episode_bootstrap(episodes, f1)
    assert low < point < high and 0.0 <= low and high <= 1.0
    assert F.episode_bootstrap(episodes, f1) == [low, high]  # a fixed seed
    assert F.episode_bootstrap(episodes, f1, level=0.5)[1] - F.episode_bootstrap(episodes, f1, level=0.5)[0] < high - low
    assert F.episode_bootstrap([], f1) is None
    never = [(x, np.zeros(8, bool), d) for x, _, d in episodes]  # no positive: F1 undefined in every resample
    assert F.episode_bootstrap(never, f1) is None


def test_reward_metrics_give_the_pooled_figures_intervals():
    F = _load_fidelity()
    rng = np.random.default_rng(4)
    steps = F.REWARD_STEPS
    real_end = np.zeros((12, steps), bool)
    real_end[np.arange(12), rng.integers(2, steps, 12)] = True
    dream_end = np.roll(real_end, rng.integers(-1, 2), axis=1).astype(float)
    progress = rng.normal(0, 0.3, (12, steps))
    valid = np.cumsum(real_end, axis=1) - real_end == 0
    m = F.reward_metrics({"scripted": {"real_rewards": progress + 10.0 * real_end,
                                       "dream_rewards": progress + 10.0 * dream_end, "real_terminated": real_end,
                                       "dream_termination": dream_end, "valid": valid}})
    for key in ("reward_corr_t1_16", "termination_f1"):
        low, high = m[f"{key}_ci90"]
        assert low <= m[key] <= high
    assert F.format_interval(m["termination_f1_ci90"]).startswith("[90 % CI ") and F.format_interval(None) == ""


@pytest.mark.parametrize("true_shift", [-3.0, -1.5, 2.25])
def test_horizontal_shift_recovers_a_known_shift(true_shift):
    F = _load_fidelity()
    rng = np.random.default_rng(1)
    wide = rng.integers(0, 256, (3, 48, 96, 3)).astype(np.float64)
    wide = (wide + np.roll(wide, 1, 2) + np.roll(wide, 2, 2)) / 3  # smooth a little: interpolation stays accurate
    x = np.arange(16, 80)
    prev = wide[:, :, x].round().astype(np.uint8)
    src = x - true_shift  # nxt(x) = prev(x - d)
    lo = np.floor(src).astype(int)
    frac = src - lo
    nxt = (wide[:, :, lo] * (1 - frac)[:, None] + wide[:, :, lo + 1] * frac[:, None]).round().astype(np.uint8)
    assert F.horizontal_shift(prev, nxt, max_shift=6.0) == pytest.approx(true_shift, abs=0.2)


def test_turned_last_frame_moves_as_the_camera_turns():
    """The geometry-only baseline: `l` held 2 steps shifts the image left by about 2 × tan(4°) × focal pixels."""
    import types

    F = _load_fidelity()
    from neuralsim.config import WorldModelConfig

    cfg = WorldModelConfig.from_preset("tiny", image_size=(64, 64))
    model = types.SimpleNamespace(config=cfg)
    rng = np.random.default_rng(2)
    wide = rng.integers(0, 256, (2, 64, 64, 3)).astype(np.float64)
    last = ((wide + np.roll(wide, 1, 2) + np.roll(wide, 2, 2)) / 3).round().astype(np.uint8)
    yaw = np.zeros((2, 2, 4), np.float32)
    yaw[..., 2] = 1.0
    still = F.turned_last_frames(model, last, yaw[:, :0], np.zeros((2, 2, 4), np.float32), [1, 2], 1)
    assert np.array_equal(still[2], last)
    turned = F.turned_last_frames(model, last, yaw[:, :0], yaw, [1, 2], 1)
    focal = 32 / math.tan(math.radians(cfg.camera_fovy_deg) / 2)
    expected = -2 * math.tan(math.radians(cfg.camera_rotation_speed_deg)) * focal  # content moves left
    assert F.horizontal_shift(last, turned[2], max_shift=10.0) == pytest.approx(expected, abs=0.6)


def test_sharpness_and_scores():
    F = _load_fidelity()
    sharp = np.zeros((1, 16, 16, 3), np.uint8)
    sharp[:, :, 8:] = 255
    blurry = np.repeat(np.linspace(0, 255, 16).astype(np.uint8)[None, None, :, None], 16, 1).repeat(3, 3)
    assert F.sharpness(sharp)[0] > 5 * F.sharpness(blurry)[0]
    assert F.f1_score(np.array([1, 0, 1]), np.array([1, 0, 0])) == pytest.approx(2 / 3)
    assert F.f1_score(np.array([1, 0]), np.array([0, 0])) is None
    assert F.pearson(np.ones(4), np.arange(4)) is None


@pytest.mark.mujoco
def test_room_object_mask_marks_objects_and_leaves_frames_unchanged():
    import gymnasium as gym

    import neuralsim  # noqa: F401

    env = gym.make("NeuralSimRoom-v0", soft_body=True).unwrapped
    ref = gym.make("NeuralSimRoom-v0", soft_body=True).unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.object_mask()
    obs, _ = env.reset(seed=3)
    assert np.array_equal(obs, ref.reset(seed=3)[0])
    seen = seen_target = seen_others = 0
    for _ in range(30):
        obs, *_ = env.step(np.array([0, 0, 1, 0], np.float32))
        mask = env.object_mask()
        assert mask.shape == obs.shape[:2] and mask.dtype == bool
        seen += int(mask.sum())
        assert np.array_equal(obs, ref.step(np.array([0, 0, 1, 0], np.float32))[0])  # rendering the mask changes no frame
        if mask.any():  # object pixels carry object colours, not the floor's
            assert not np.array_equal(obs[mask].mean(0).round(), obs[~mask].mean(0).round())
        target = env.object_mask(target_only=True)  # the target alone: some of the objects' pixels
        assert target.dtype == bool and not (target & ~mask).any()
        seen_target += int(target.sum())
        seen_others += int((mask & ~target).sum())
    assert seen > 0 and seen_target > 0 and seen_others > 0
    env.close()
    ref.close()


@pytest.mark.mujoco
def test_named_episode_draws_the_named_actions_and_masks_the_asked_steps():
    import gymnasium as gym

    import neuralsim  # noqa: F401

    fidelity = _load_fidelity()
    env = gym.make("NeuralSimRoom-v0").unwrapped
    kw = dict(reach=0.3, raw_frames=3)
    sticky = fidelity.named_episode("sticky", env, 5, 6, 2, mask_steps=[0, 4], **kw)
    random = fidelity.named_episode("random", env, 5, 6, 2, **kw)  # the reward protocol's name for the same actions
    assert np.array_equal(sticky["actions"], fidelity.sticky_actions(np.random.default_rng(5), 6, 4))
    assert np.array_equal(sticky["obs"], random["obs"]) and np.array_equal(sticky["actions"], random["actions"])
    assert sticky["obs"].shape == (7, *env.observation_space.shape) and sticky["raw"].shape[0] == 3
    assert sorted(sticky["masks"]) == [0, 4] and random["masks"] == {}
    explore = fidelity.named_episode("explore", env, 5, 6, 2, **kw)  # the collection policy, which sees the room
    assert explore["actions"].shape == (6, 4) and not np.array_equal(explore["actions"], sticky["actions"])
    with pytest.raises(ValueError):
        fidelity.named_episode("no-such-policy", env, 5, 6, 2, **kw)
    env.close()


@pytest.mark.mujoco
def test_fidelity_script_on_tiny_checkpoint(tiny_checkpoint, tmp_path):
    """The whole benchmark (2 seeds, short long rollout; ~15 s) on the tiny checkpoint: every documented key is there
    and finite or None; strips and JSON are written beside each other (a named run), nothing in the repository."""
    import json

    F = _load_fidelity()
    result = F.main(["--model", str(tiny_checkpoint), "--quick", "--seeds", "2", "--long-steps", "20",
                     "--results-dir", str(tmp_path), "--name", "fid"])
    keys = ["ae_psnr_pooled", "ae_object_psnr", "idle_drop_db_t1", "idle_drop_db_t16", "yaw_shift_ratio",
            "yaw_shift_ratio_l", "yaw_shift_ratio_j", "revisit_psnr_vs_real", "long_rollout_finite",
            "long_rollout_collapsed", "reward_corr_t1_16", "termination_f1", "device", "dtype", "cpu_capability",
            "seeds", "denoise_steps", "model", "seconds", "ablation_no_rays_yaw_shift_ratio",
            "turn_around_psnr", "ablation_no_prompt_turn_around_psnr", "turn_around_prompt_gain_db",
            "turn_around_prompt_wins", "idle_dream_t1_psnr_pooled", "idle_copy_start_ae_t1_psnr_pooled",
            "idle_ae_real_t1_psnr_pooled", "idle_dream_t1_vs_start_ae_psnr_pooled", "idle_frozen_drop_db_t1",
            "idle_frozen_drop_db_t16", "idle_dream_t16_vs_start_ae_psnr_pooled"]
    for proto in ("explore", "sticky"):
        for h in (1, 4, 16, 64):
            keys += [f"psnr_pooled_{proto}_t{h}", f"psnr_mean_{proto}_t{h}", f"psnr_median_{proto}_t{h}",
                     f"copy_last_pooled_{proto}_t{h}", f"copy_last_ae_pooled_{proto}_t{h}", f"object_psnr_{proto}_t{h}",
                     f"copy_last_turned_pooled_{proto}_t{h}",
                     f"ssim_{proto}_t{h}", f"sharpness_vs_ae_{proto}_t{h}"]
        for h in (1, 4, 16):
            keys += [f"ablation_{v}_psnr_pooled_{proto}_t{h}" for v in ("no_actions", "no_rays", "no_prompt")]
    missing = [k for k in keys if k not in result]
    assert not missing
    for k in keys:
        v = result[k]
        assert v is None or isinstance(v, (str, bool)) or math.isfinite(v), (k, v)
    assert result["psnr_pooled_explore_t1"] is not None and result["seeds"] == 2
    k = result["frames_per_latent"]  # the room turns 4 degrees a room step: about 180 degrees in all
    assert abs(result["turn_around_steps"] * k * 4 - 180) <= 4 * k
    # the reward gates judge the room's default task (the ball at rest); the thrown ball is reported beside them
    assert result["reward_task"] == {"ball_start": "rest"} and set(result["reward_gates"]) == {"reward_corr_t1_16", "termination_f1"}
    assert set(result["ball_thrown"]) == set(F.THROWN_KEYS) and result["ball_thrown"]["termination_positives"] >= 0
    assert set(result["gates"]) >= {"idle_drop_db_t1", "yaw_shift_ratio", "ae_psnr_pooled", "long_rollout_ok"}
    assert all(set(g) == {"value", "threshold", "pass"} for g in result["gates"].values())
    assert json.loads((tmp_path / "fid.json").read_text())["psnr_pooled_sticky_t16"] == result["psnr_pooled_sticky_t16"]
    for proto in ("explore", "sticky"):
        assert (tmp_path / f"fid_strip_{proto}.png").stat().st_size > 0  # a named run: beside its JSON, not docs/


@pytest.mark.mujoco
def test_autoencoder_only_gives_the_full_runs_autoencoder_figures_without_dreaming(tiny_checkpoint, tmp_path,
                                                                                    monkeypatch):
    F = _load_fidelity()
    common = ["--model", str(tiny_checkpoint), "--quick", "--seeds", "2", "--results-dir", str(tmp_path)]
    full = F.main(common + ["--long-steps", "20", "--name", "fid"])
    monkeypatch.setattr(F, "dream_rollout", lambda *a, **k: pytest.fail("--autoencoder-only dreamed"))
    only = F.main(common + ["--autoencoder-only"])
    for key in ("ae_psnr_pooled", "ae_psnr_mean", "ae_object_psnr", "ae_sharpness_ratio"):
        assert only[key] == full[key], key
    assert only["autoencoder_only"] and "gates" not in only and "psnr_pooled_explore_t1" not in only
    assert (tmp_path / "fidelity_autoencoder_quick.json").exists()  # its own name: never the published fidelity.json


def test_a_diverging_long_rollout_is_reported_not_raised(tiny_checkpoint, monkeypatch):
    """The model refuses a non-finite state (FloatingPointError); the benchmark records where and goes on."""
    from neuralsim.model import WorldModel

    F = _load_fidelity()
    model = WorldModel.from_pretrained(tiny_checkpoint).eval()
    calls = {"n": 0}
    real_step = F.DreamSession.step

    def step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise FloatingPointError("the world model produced a non-finite latent")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(F.DreamSession, "step", step)
    start = np.zeros((32, 32, 3), np.uint8) + 100
    r = F.long_rollout(model, start, "a room", 10, real_std=40.0, dream_seed=0, denoise_steps=None)
    assert r["long_rollout_finite"] is False and r["long_rollout_collapsed"] is True
    assert r["long_rollout_diverged_at_step"] == 4


def test_a_saturated_long_rollout_counts_as_collapsed(monkeypatch):
    """A dream stuck at a frame of 0s and 255s (std ~127, mean ~128) is finite, but it is a collapse."""
    from types import SimpleNamespace

    import torch

    F = _load_fidelity()
    frame = np.where(np.random.default_rng(0).random((1, 1, 16, 16, 3)) < 0.5, 0, 255).astype(np.uint8)

    class Session:
        def __init__(self, model, dtype):
            pass

        def generator(self, seed):
            return None

        def start(self, *args, **kwargs):
            return None, None, None

        def step(self, state, actions, g, decode, denoise_steps):
            return SimpleNamespace(state=None, latent=torch.zeros(1, 4), frames=frame)

    monkeypatch.setattr(F, "DreamSession", Session)
    r = F.long_rollout(None, frame[0, 0], "a room", 10, real_std=40.0, dream_seed=0, denoise_steps=None)
    assert r["long_rollout_finite"] is True and r["long_rollout_collapsed"] is True
    assert r["long_rollout_frame_stats"][0]["std"] > F.SATURATED_STD


def _fake_long_rollout(monkeypatch, dream_frames, dream_rms, real_frames, real_rms):
    """long_rollout with a fake dream (frames, latent RMS per step) and a fake real room (frames; its latents' RMS)."""
    from types import SimpleNamespace

    import torch

    F = _load_fidelity()
    steps = len(dream_frames)

    class Session:
        def __init__(self, model, dtype):
            self.t = 0

        def generator(self, seed):
            return None

        def start(self, *args, **kwargs):
            return None, None, None

        def step(self, state, actions, g, decode, denoise_steps):
            self.t += 1
            latent = torch.full((1, 4), float(dream_rms[self.t - 1]))
            return SimpleNamespace(state=None, latent=latent, frames=dream_frames[self.t - 1][None, None])

    class Model:
        def encode(self, frames):
            return torch.stack([torch.full((1, 4), float(real_rms[i])) for i in range(len(frames))])

    monkeypatch.setattr(F, "DreamSession", Session)
    monkeypatch.setattr(F, "real_episode", lambda *a, **k: {"obs": np.concatenate([real_frames[:1], real_frames])})
    monkeypatch.setattr(F, "LONG_CHECKPOINTS", steps)
    return F.long_rollout(Model(), dream_frames[0], "a room", steps, real_std=40.0, dream_seed=0, denoise_steps=None,
                          env=object(), seed=0)


def test_a_dream_as_flat_as_the_real_room_is_not_a_collapse(monkeypatch):
    """The real room shows flat frames too (a wall up close); a dream degenerate no more often is not collapsed."""
    rng = np.random.default_rng(0)
    textured = rng.integers(40, 200, (10, 16, 16, 3), dtype=np.uint8)
    flat = np.full((16, 16, 3), 90, np.uint8)
    real, dream = textured.copy(), textured.copy()
    real[[2, 5]] = flat  # the real room: 2 of 10 flat
    dream[[3, 7, 8]] = flat  # the dream: 3 of 10 (within the 0.1 margin)
    r = _fake_long_rollout(monkeypatch, dream, np.ones(10), real, np.ones(10))
    assert r["long_rollout_real_degenerate_share"] == 0.2 and r["long_rollout_degenerate_share"] == 0.3
    assert r["long_rollout_collapsed"] is False and r["long_rollout_frame_stats"][2]["real_std"] == 0.0


def test_a_dream_whose_latents_leave_the_data_range_collapses(monkeypatch):
    """Frames in a plausible range but latents at 3x the real room's RMS: out of the data the model was trained on."""
    rng = np.random.default_rng(0)
    frames = rng.integers(40, 200, (10, 16, 16, 3), dtype=np.uint8)
    r = _fake_long_rollout(monkeypatch, frames, np.full(10, 3.3), frames, np.full(10, 1.1))
    assert r["long_rollout_latent_rms_limit"] == pytest.approx(2.2)
    assert r["long_rollout_degenerate_share"] == 1.0 and r["long_rollout_collapsed"] is True
