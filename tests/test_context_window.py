"""config.context_window: a rollout's recurrent context restarts from its last frame once it holds that many frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_model
from neuralsim.config import WorldModelConfig

ACTION = np.array([0.5, 0.0, 0.8, -0.3], np.float32)  # forward while turning: the camera pose moves


def _start(model, rows: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    frames = np.random.default_rng(seed).integers(0, 256, (rows, 1, 32, 32, 3), dtype=np.uint8)
    return model.init_state(rows, frames=frames, generator=g), g


def _steps(model, state, g, n: int):
    latents = []
    for _ in range(n):
        latent, state = model.step(state, np.tile(ACTION, (state.batch_size, 1)), generator=g)
        latents.append(latent)
    return torch.stack(latents, 1), state


def test_a_full_context_restarts_exactly_as_a_new_one_from_its_last_frame():
    """Without context noise (no random draws in the commit), the restarted row's state is the one init_state builds
    from that latent alone (cache, camera, step), and the row whose context is not full is untouched."""
    model = make_tiny_model(context_noise=0.0)
    state, g = _start(model)
    _, state = _steps(model, state, g, 2)  # both rows: 3 frames in the context
    fresh_row, _ = _start(model, rows=2, seed=1)  # row 1 starts over: 1 frame in its context
    state = state.merge(np.array([False, True]), fresh_row)
    assert state.step.tolist() == [3, 1]

    g_on, g_off = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    model.config.context_window = 3
    latent, restarted = model.step(state, np.tile(ACTION, (2, 1)), generator=g_on)
    model.config.context_window = 0
    latent_off, kept = model.step(state, np.tile(ACTION, (2, 1)), generator=g_off)
    torch.testing.assert_close(latent, latent_off)  # the frame is sampled against the old context either way

    assert restarted.step.tolist() == [1, 2]
    alone = model.init_state(1, latents=latent[:1, None])
    for got, want in zip(restarted.cache, alone.cache):
        for key in want:
            torch.testing.assert_close(got[key][:1], want[key], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(restarted.c2w[0], torch.eye(4, dtype=torch.float64))
    for got, want in zip(restarted.cache, kept.cache):  # row 1 (2 frames < 3) goes on as without a window
        for key in want:
            torch.testing.assert_close(got[key][1:], want[key][1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(restarted.c2w[1], kept.c2w[1])


@pytest.mark.parametrize("denoise_steps", [1, 2])
def test_a_long_rollout_never_holds_more_than_the_window(denoise_steps):
    model = make_tiny_model(context_window=4)
    state, g = _start(model)
    steps = []
    for _ in range(12):
        _, state = model.step(state, np.tile(ACTION, (2, 1)), generator=g, denoise_steps=denoise_steps)
        steps.append(state.step.tolist())
    assert max(max(s) for s in steps) == 4 and [1, 1] in steps
    latents, _ = _steps(model, state, g, 2)
    assert torch.isfinite(latents).all()


def test_the_window_is_off_by_default_and_leaves_rollouts_unchanged():
    a, b = make_tiny_model(), make_tiny_model(context_window=1000)
    assert a.config.context_window == 0
    (sa, ga), (sb, gb) = _start(a), _start(b)
    torch.testing.assert_close(_steps(a, sa, ga, 5)[0], _steps(b, sb, gb, 5)[0])


@pytest.mark.parametrize("bad", [-1, 2.5, True, "16"])
def test_context_window_is_validated(bad):
    with pytest.raises((TypeError, ValueError), match="context_window"):
        WorldModelConfig(context_window=bad)


def test_a_restart_keeps_the_frame_memory_where_it_was_relative_to_the_camera():
    """The restarted context's poses count from its first frame again; the memory's pose moves with them, so the
    camera's pose relative to the memory (what its warp and its gate's distance read) goes on as without a restart."""
    from neuralsim.frame_memory import relative_pose

    walk_and_turn = np.array([[0.7, 0.2, 0.5, 0.0]], np.float32)  # no pitch: a restart levels the camera
    runs = []
    for window in (0, 3):
        model = make_tiny_model(frames_per_latent=1, frame_memory_width=4, context_window=window)
        frames = np.random.default_rng(0).integers(0, 256, (1, 1, 32, 32, 3), dtype=np.uint8)
        state, g = model.init_state(1, frames=frames, generator=torch.Generator().manual_seed(0)), None
        rel = []
        for _ in range(7):
            _, state = model.step(state, walk_and_turn)
            rel.append(relative_pose(state.memory_c2w, state.c2w))
        runs.append((state, torch.stack(rel)))
    (kept, rel_kept), (restarted, rel_restarted) = runs
    assert not torch.allclose(restarted.c2w, kept.c2w)  # the restarted context's poses count from a later frame
    torch.testing.assert_close(rel_restarted, rel_kept, atol=1e-9, rtol=1e-9)
