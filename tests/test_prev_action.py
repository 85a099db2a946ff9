"""The previous action's input (config.prev_action_input): the direct path also reads the action before this one, so
motion that outlives the keys (the room's last slide after a release) can be predicted from the inputs of a step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, model_weights, train_config
from neuralsim.config import WorldModelConfig
from neuralsim.train import _with_overrides, train

MOVE = np.array([0.8, 0.0, 0.6, 0.0], np.float32)  # forward while turning
IDLE = np.zeros(4, np.float32)


def _with_prev_action(model, scale: float | None = None):
    """``model`` with the input added (as ``train --init ... --set prev_action_input=true``); ``scale``: random
    weights of that size instead of the zero start."""
    rebuilt = _with_overrides(model, {"prev_action_input": True}).eval()
    if scale is not None:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(3)
            rebuilt.dynamics.prev_action_input.weight.normal_(std=scale)
    return rebuilt


def _rollout(model, actions: list[np.ndarray], seed: int = 0) -> tuple[torch.Tensor, object]:
    g = torch.Generator().manual_seed(seed)
    frames = np.random.default_rng(0).integers(0, 256, (2, 1, 32, 32, 3), dtype=np.uint8)
    state = model.init_state(2, frames=frames, generator=g)
    latents = []
    for a in actions:
        latent, state = model.step(state, np.tile(a, (2, 1)), generator=g)
        latents.append(latent)
    return torch.stack(latents, 1), state


def test_the_added_input_changes_nothing_until_trained():
    model = make_tiny_model()
    added = _with_prev_action(model)
    actions = [MOVE, MOVE, IDLE]
    torch.testing.assert_close(_rollout(added, actions)[0], _rollout(model, actions)[0], rtol=0, atol=0)
    latents = torch.randn(2, 4, *model.latent_shape)
    moves = np.tile(MOVE, (2, 3, 1))
    for loss in ("dynamics_loss", "streaming_loss"):
        a, _ = getattr(model, loss)(latents, moves, generator=torch.Generator().manual_seed(0))
        b, _ = getattr(added, loss)(latents, moves, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_an_idle_step_after_motion_differs_from_an_idle_step_after_rest():
    model = _with_prev_action(make_tiny_model(), scale=0.5)
    after_motion, state = _rollout(model, [MOVE, IDLE])
    after_rest, _ = _rollout(model, [IDLE, IDLE])
    torch.testing.assert_close(state.last_action, torch.zeros(2, 4))  # the state carries the step's action
    assert (after_motion[:, 1] - after_rest[:, 1]).abs().max() > 1e-3
    _, state = _rollout(model, [MOVE])
    torch.testing.assert_close(state.last_action, torch.from_numpy(np.tile(MOVE, (2, 1))))


def test_parallel_pass_equals_streaming_with_the_previous_action():
    """The training pass shifts the window's actions; streaming passes the state's: the same numbers."""
    model = _with_prev_action(make_tiny_model(), scale=0.5)
    dyn, cfg = model.dynamics, model.config
    B, T, S, C = 2, 4, cfg.tokens_per_frame, cfg.token_channels
    g = torch.Generator().manual_seed(1)
    x, prev = torch.randn(B, T, S, C, generator=g), torch.randn(B, T, S, C, generator=g)
    tau = torch.rand(B, T, generator=g)
    actions = (torch.rand(B, T - 1, 4, generator=g) * 2 - 1).numpy()
    action, known, rays, _, _, rel, _ = model._sequence_conditioning(B, T, actions, "actions")
    tokens, mask = model._encode_text(None, B)
    text = dyn.text_kv(tokens)
    with torch.no_grad():
        out_par, _, _ = dyn(x, tau, start=torch.zeros(B, dtype=torch.long), action=action, action_known=known,
                            rays=rays, text=text, text_mask=mask, prev=prev, rel_rays=rel)
        cache, outs, last = dyn.empty_cache(B), [], torch.zeros(B, 1, 4)
        for t in range(T):
            sl = slice(t, t + 1)
            frame = dyn.prepare_frame(start=torch.full((B,), t), action=action[:, sl], action_known=known[:, sl],
                                      rays=rays[:, sl], text=text, text_mask=mask, cache=cache, prev=prev[:, sl],
                                      rel_rays=rel[:, sl], prev_action=last)
            out, _, cache = dyn(x[:, sl], tau[:, sl], frame=frame, commit=True)
            outs.append(out)
            last = action[:, sl] * known[:, sl, None]
    torch.testing.assert_close(torch.cat(outs, 1), out_par, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="needs prev_action"):
        dyn.prepare_frame(start=torch.zeros(B, dtype=torch.long), action=action[:, :1], action_known=known[:, :1],
                          rays=rays[:, :1], text=text, text_mask=mask, cache=dyn.empty_cache(B), prev=prev[:, :1],
                          rel_rays=rel[:, :1])


def test_context_and_merge_carry_the_last_action():
    model = _with_prev_action(make_tiny_model(), scale=0.5)
    frames = np.random.default_rng(0).integers(0, 256, (2, 1, 32, 32, 3), dtype=np.uint8)
    acts = np.stack([np.stack([MOVE, IDLE]), np.stack([IDLE, MOVE])])  # (2, 2, 4)
    state = model.init_state(2, frames=frames[:, :1])
    torch.testing.assert_close(state.last_action, torch.zeros(2, 4))  # a lone first frame: nothing before it
    frames = np.random.default_rng(0).integers(0, 256, (2, 1 + 2 * 2, 32, 32, 3), dtype=np.uint8)
    state = model.init_state(2, frames=frames, actions=acts)
    torch.testing.assert_close(state.last_action, torch.from_numpy(acts[:, -1]))
    fresh = model.init_state(2, frames=frames[:, :1])
    merged = state.merge(np.array([True, False]), fresh)
    torch.testing.assert_close(merged.last_action, torch.stack([torch.zeros(4), torch.from_numpy(MOVE)]))


def test_config_is_validated():
    with pytest.raises(ValueError, match=r"prev_action_input=True is invalid: expected False unless prev_frame_input"):
        WorldModelConfig.from_preset("tiny", prev_action_input=True, prev_frame_input=False, prediction="velocity",
                                     refiner_channels=0, refiner_reads_changes=False)


def test_train_init_adds_the_input_and_trains_it(dataset, tmp_path):
    base = train(train_config(dataset, tmp_path / "base"))
    out = train(train_config(dataset, tmp_path / "more", stage="dynamics", init=str(base), steps=2,
                             config_overrides={"prev_action_input": True}))
    assert json.loads((out / "config.json").read_text())["prev_action_input"] is True
    weights = model_weights(out)
    assert weights["dynamics.prev_action_input.weight"].abs().sum() > 0  # trained from its zero start
