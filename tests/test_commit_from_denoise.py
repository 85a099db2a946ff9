"""Commit from the denoise pass (config.commit_from_denoise): the tau = 1 pass that draws a frame also writes the state,
so a one-step env step runs the network once instead of twice; the new frame reaches the next step through the direct
path (prev_frame_input)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, train_config
from neuralsim.config import WorldModelConfig
from neuralsim.model import InputError
from neuralsim.train import _with_overrides, train

MOVE = np.array([0.8, 0.0, 0.6, 0.0], np.float32)


def _pair(**config):
    """The tiny model at one denoise step, and the same weights committing from the denoise pass."""
    model = _with_overrides(make_tiny_model(), {"denoise_steps": 1, **config}).eval()
    return model, _with_overrides(model, {"commit_from_denoise": True}).eval()


def _start(model, frames: int = 1):
    raw = np.random.default_rng(0).integers(0, 256, (2, 1 + 2 * (frames - 1), 32, 32, 3), dtype=np.uint8)
    acts = np.tile(MOVE, (2, frames - 1, 1)) if frames > 1 else None
    return model.init_state(2, frames=raw, actions=acts, generator=torch.Generator().manual_seed(0))


def _passes(model) -> list[int]:
    calls = []
    handle = model.dynamics.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def test_one_network_pass_per_env_step():
    model, fast = _pair()
    for m, expected in ((model, 2), (fast, 1)):
        state = _start(m)
        calls, handle = _passes(m)
        try:
            m.step(state, np.tile(MOVE, (2, 1)), generator=torch.Generator().manual_seed(1))
        finally:
            handle.remove()
        assert len(calls) == expected


def test_the_frame_is_the_same_and_the_state_is_the_denoise_pass():
    model, fast = _pair()
    state = _start(model)
    a, after_a = model.step(state, np.tile(MOVE, (2, 1)), generator=torch.Generator().manual_seed(1))
    b, after_b = fast.step(state, np.tile(MOVE, (2, 1)), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # the same pass draws the frame
    assert any(not torch.equal(x["S"], y["S"]) for x, y in zip(after_a.cache, after_b.cache) if "S" in x)
    assert after_b.step.tolist() == after_a.step.tolist()
    # a rollout goes on, deterministic given the generator
    g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    c, _ = fast.step(after_b, np.zeros((2, 4), np.float32), generator=g1)
    d, _ = fast.step(after_b, np.zeros((2, 4), np.float32), generator=g2)
    torch.testing.assert_close(c, d, rtol=0, atol=0)


def test_a_restarting_context_still_commits_its_frame_clean():
    """Rows whose context is full (context_window) start a new one from the frame, as a context's first frame is
    committed (its own pass); the other rows keep the denoise pass's state."""
    model, fast = _pair(context_window=3)
    full = _start(model, frames=3)  # step 3: full
    fresh = _start(model, frames=1)  # step 1
    state = full.merge(np.array([True, False]), fresh)  # row 0 fresh, row 1 full
    _, ref = model.step(state, np.tile(MOVE, (2, 1)), generator=torch.Generator().manual_seed(1))
    _, got = fast.step(state, np.tile(MOVE, (2, 1)), generator=torch.Generator().manual_seed(1))
    assert got.step.tolist() == [2, 1]
    for x, y in zip(ref.cache, got.cache):
        for key in x:
            torch.testing.assert_close(y[key][1], x[key][1])  # the restarted row: the same clean commit
    assert any(not torch.equal(x["S"][0], y["S"][0]) for x, y in zip(ref.cache, got.cache) if "S" in x)


def test_losses_refuse_what_sampling_never_does():
    _, fast = _pair()
    latents = torch.randn(2, 4, *fast.latent_shape)
    actions = np.tile(MOVE, (2, 3, 1))
    loss, logs = fast.streaming_loss(latents, actions, generator=torch.Generator().manual_seed(0), one_step_fraction=1.0)
    assert torch.isfinite(loss) and logs["flow"] > 0
    loss.backward()  # the state written by the denoise pass carries gradient to later frames
    with pytest.raises(InputError, match="one_step_fraction must be 1"):
        fast.streaming_loss(latents, actions, one_step_fraction=0.5)
    with pytest.raises(InputError, match="trains with streaming_loss"):
        fast.dynamics_loss(latents, actions)


def test_config_is_validated():
    with pytest.raises(ValueError, match=r"commit_from_denoise=True is invalid: expected False unless prev_frame_input"):
        WorldModelConfig.from_preset("tiny", commit_from_denoise=True, prev_frame_input=False, prediction="velocity",
                                     refiner_channels=0, refiner_reads_changes=False)


def test_train_sets_it_on_a_continued_model(dataset, tmp_path):
    base = train(train_config(dataset, tmp_path / "base"))
    out = train(train_config(dataset, tmp_path / "more", stage="dynamics", init=str(base), steps=2, streaming=True,
                             one_step_fraction=1.0, config_overrides={"commit_from_denoise": True}))
    assert json.loads((out / "config.json").read_text())["commit_from_denoise"] is True
