"""The speed paths give the numbers of the reference paths (issue 9: fast, with fidelity kept).

- ``WorldModel.step`` runs the per-frame twin of the dynamics (``DynamicsTransformer.prepare_frame`` +
  ``forward_frame``: per-step work done once, the new cache built only in the committing pass);
  ``model.fast_streaming = False`` runs the reference ``DynamicsTransformer.forward``. A 50-step rollout of
  the shipped model must agree to 1e-5 (latents, rewards, termination, the whole streaming state), with a
  prompt and without one (then the cross-attention is computed once per frame: one token, softmax 1).
- ``WorldModel.decode`` hands the decoder channels-last tensors (``channels_last_decode``).
- ``WorldModel.compile_streaming()`` (optional, slow to compile): deterministic and close to eager.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tiny_model

from neuralsim.model import WorldModel, tree_leaves

ATOL = 1e-5


def _rollout(model: WorldModel, *, fast: bool, steps: int, batch: int = 2, seed: int = 0, denoise_steps=None,
             frames: bool = True, prompts=None):
    """Latents, rewards, termination probabilities of ``steps`` steps, and the final state."""
    model.fast_streaming = fast
    cfg = model.config
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.image_size
    context = rng.integers(0, 256, (batch, 1, h, w, 3), dtype=np.uint8) if frames else None
    actions = rng.uniform(-1, 1, (steps, batch, cfg.action_dim)).astype(np.float32)
    out = []
    try:
        with torch.inference_mode():
            state = model.init_state(batch, frames=context, prompt=prompts, generator=g, denoise_steps=denoise_steps)
            for t in range(steps):
                latent, state = model.step(state, actions[t], generator=g, denoise_steps=denoise_steps)
                out.append(torch.cat([latent.flatten(1), state.reward[:, None], state.termination_prob[:, None]], 1))
    finally:
        model.fast_streaming = True
    return torch.stack(out), state


def _assert_same(a, b, atol=ATOL):
    """Equal up to float32 rounding: ``atol`` for values up to 1, relative beyond (float error scales with the value;
    the shipped model's recurrent caches hold values near 4 after 50 steps)."""
    (xa, sa), (xb, sb) = a, b
    assert torch.isfinite(xa).all()
    tol = lambda t: atol * max(1.0, t.abs().max().item())  # noqa: E731
    assert (xa - xb).abs().max().item() <= tol(xb), (xa - xb).abs().max().item()
    leaves_a, leaves_b = tree_leaves(sa.cache), tree_leaves(sb.cache)
    assert len(leaves_a) == len(leaves_b)
    for ta, tb in zip(leaves_a, leaves_b):
        assert ta.shape == tb.shape and ta.dtype == tb.dtype
        assert (ta.float() - tb.float()).abs().max().item() <= tol(tb.float()), (ta.float() - tb.float()).abs().max().item()
    assert torch.equal(sa.step, sb.step)


@pytest.fixture(scope="module")
def shipped():
    return WorldModel.from_pretrained("default")


@pytest.mark.parametrize("prompts", [["a red ball near the blue wall", None], None],
                         ids=["prompt", "no-prompt"])  # no prompt: the cross-attention is one constant per frame
def test_fast_step_equals_reference_on_shipped_model(shipped, prompts):
    ref = _rollout(shipped, fast=False, steps=50, prompts=prompts)
    fast = _rollout(shipped, fast=True, steps=50, prompts=prompts)
    _assert_same(fast, ref)


def test_channels_last_decode_equals_reference(shipped):
    latents = torch.randn(3, 2, *shipped.latent_shape, generator=torch.Generator().manual_seed(0))
    scale, shift = shipped._latent_affine(shipped.device)
    with torch.inference_mode():
        reference = shipped.autoencoder.decode(latents / scale + shift, first_frame=False).float()
        z = (latents / scale + shift).permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
        fast = shipped.autoencoder.decode(z, first_frame=False).float()
        assert (fast - reference).abs().max().item() <= ATOL
        shipped.channels_last_decode = False
        frames_ref = shipped.decode(latents, first_frame=False)
        shipped.channels_last_decode = True
        frames = shipped.decode(latents, first_frame=False)
    assert frames.shape == frames_ref.shape and frames.is_contiguous()
    assert (frames.int() - frames_ref.int()).abs().max().item() <= 1  # uint8 rounding of equal floats


def test_bf16_channels_last_decode_normalises_in_nchw_as_accurately(shipped):
    """Under bf16 autocast the channels-last decoder's GroupNorms run on NCHW copies (10x faster kernels): frames
    as close to the fp32 decode as the channels-last bf16 GroupNorm's, within a bf16 rounding of them."""
    import torch.nn.functional as F

    from neuralsim import autoencoder as AE

    latents = torch.randn(4, 1, *shipped.latent_shape, generator=torch.Generator().manual_seed(0))
    scale, shift = shipped._latent_affine(shipped.device)
    z = (latents / scale + shift).permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    plain = lambda norm, x: F.silu(norm(x))  # noqa: E731  (the GroupNorm on the layout it is given)
    with torch.inference_mode():
        fp32 = shipped.autoencoder.decode(z, first_frame=False).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = shipped.autoencoder.decode(z, first_frame=False).float()
            original, AE._norm_silu = AE._norm_silu, plain
            try:
                slow = shipped.autoencoder.decode(z, first_frame=False).float()
            finally:
                AE._norm_silu = original
    assert (fast - fp32).abs().mean() <= 1.05 * (slow - fp32).abs().mean()
    assert (fast - slow).abs().max() <= 0.05 and (fast - slow).abs().mean() <= 2e-3
    x = torch.randn(2, 8, 4, 4).bfloat16().contiguous(memory_format=torch.channels_last)
    norm = torch.nn.GroupNorm(2, 8)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = AE._norm_silu(norm, x)
    assert out.is_contiguous(memory_format=torch.channels_last) and out.dtype == torch.bfloat16  # the layout kept


@pytest.mark.parametrize("overrides,denoise_steps", [
    ({}, None),  # tiny: camera branch, temporal FFN conv, key conv 3, sink 1, window 2, fused commit
    ({"fused_commit": False}, 2),  # separate commit pass
    ({}, 1),  # one step: separate commit pass
    ({}, 3),
    ({"attention_sink_frames": 0, "conv_k_size": 1, "ffn_temporal_kernel": 0, "camera_branch": False}, None),
    ({"attention_sink_frames": 2, "attention_window": 1, "conv_k_size": 4}, None),
])
def test_fast_step_equals_reference_tiny(overrides, denoise_steps):
    model = make_tiny_model(**overrides)
    ref = _rollout(model, fast=False, steps=8, batch=3, denoise_steps=denoise_steps)
    fast = _rollout(model, fast=True, steps=8, batch=3, denoise_steps=denoise_steps)
    _assert_same(fast, ref)


def test_fast_step_equals_reference_prompt_only_start():
    model = make_tiny_model()
    kwargs = dict(steps=5, batch=2, frames=False, prompts=["a green box", None])
    _assert_same(_rollout(model, fast=True, **kwargs), _rollout(model, fast=False, **kwargs))


def test_fast_step_bf16_autocast_matches_reference():
    model = make_tiny_model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = _rollout(model, fast=False, steps=3, batch=2)
        fast = _rollout(model, fast=True, steps=3, batch=2)
    _assert_same(fast, ref, atol=1e-3)  # the same bf16 ops, in a different order in a few places


@pytest.mark.parametrize("sink,window", [(1, 2), (0, 3), (2, 1), (1, 0)])
def test_the_softmax_cache_keeps_the_sink_frames_and_the_latest_window(sink, window):
    """The cache after frames written several at a time (a context) and one at a time (streaming): the first
    ``sink`` frames in their slots, then the latest ``window`` frames oldest first (-1 where none yet)."""
    from neuralsim.dynamics import Attention

    model = make_tiny_model(attention_sink_frames=sink, attention_window=window)
    attn = Attention(model.config, "softmax")
    B, S, nh, D = 2, 3, attn.heads, attn.head_dim
    start = torch.tensor([0, 0])
    cache = None
    written = 0
    for T in (3, 1, 2, 1, 1, 5, 1):  # frames written per call
        frames = torch.arange(written, written + T, dtype=torch.float32)
        k = frames.view(1, 1, T, 1, 1).expand(B, nh, T, S, D)  # each frame's keys hold its index
        cache = attn._update_cache(cache or {}, k, -k, start + written)
        written += T
        expected = list(range(min(sink, written)))
        expected += [-1] * (sink - len(expected))
        later = [f for f in range(written) if f >= sink][-window:] if window else []
        expected += [-1] * (window - len(later)) + later
        assert cache["frame"].tolist() == [expected] * B
        for slot, f in enumerate(expected):
            if f >= 0:
                assert (cache["k"][:, :, slot] == f).all() and (cache["v"][:, :, slot] == -f).all()


def test_every_pass_is_a_module_call():
    """Forward hooks on the dynamics see each denoise pass of the fast path (profilers rely on it)."""
    model = make_tiny_model()
    calls = []
    handle = model.dynamics.register_forward_hook(lambda *a: calls.append(1))
    try:
        _rollout(model, fast=True, steps=2, batch=1)
    finally:
        handle.remove()
    assert len(calls) == 1 + 2 * 2  # context pass + (2 fused passes) x 2 steps


def test_compile_streaming_argument_checked():
    model = make_tiny_model()
    with pytest.raises(TypeError, match="enabled"):
        model.compile_streaming("yes")
    assert model.compile_streaming(False)._compiled_frame is None and model._compiled_parts == {}
    from neuralsim.session import DreamSession

    with pytest.raises(TypeError, match="compile"):
        DreamSession(model, compile="yes")


@pytest.mark.slow
# inductor's own use of torch.jit.script_method warns in torch 2.13; nothing of ours calls it
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("parts", [{}, {"refiner_channels": 8, "reward_model_channels": 8}])
def test_compile_streaming_is_deterministic_and_close_to_eager(parts):
    """With a refiner and a reward model (the shipped model's), their compiled step parts too."""
    model, other = make_tiny_model(**parts), make_tiny_model(**parts)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # another model: the tiny one starts with zero output projections, so add noise
        for p in other.dynamics.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    eager, eager_other = _rollout(model, fast=True, steps=4, batch=2), _rollout(other, fast=True, steps=4, batch=2)
    assert (eager[0] - eager_other[0]).abs().max() > 1e-3
    model.compile_streaming()
    other.compile_streaming()
    try:
        first = _rollout(model, fast=True, steps=4, batch=2)
        second = _rollout(model, fast=True, steps=4, batch=2)
        compiled_other = _rollout(other, fast=True, steps=4, batch=2)
        with torch.no_grad():  # weights changed in place (a training step) are read by the compiled code too
            for p in model.dynamics.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        changed = _rollout(model, fast=True, steps=4, batch=2)
        model.compile_streaming(False)
        eager_changed = _rollout(model, fast=True, steps=4, batch=2)
    finally:
        model.compile_streaming(False)
        other.compile_streaming(False)
    assert torch.equal(first[0], second[0])
    _assert_same(first, eager, atol=1e-4)
    _assert_same(compiled_other, eager_other, atol=1e-4)  # two models share the code, each reads its own weights
    _assert_same(changed, eager_changed, atol=1e-4)


@pytest.mark.parametrize("prompt", [None, "a red ball"])
def test_a_partial_reset_keeps_the_prompt_keys_and_values_in_a_fresh_states_layout(prompt):
    """A compiled pass guards on its inputs' strides: a state merged by a row's reset must hand it the prompt's
    keys/values laid out as a fresh state does (they were transposed views before, contiguous after a merge, and the
    shipped model's pass recompiled mid-run, 6 s, at the first autoreset of a 16- or 64-env dream)."""
    model = make_tiny_model()
    fresh = model.init_state(3, prompt=[prompt] * 3)
    merged = fresh.merge(np.array([False, True, False]), model.init_state(1, prompt=[prompt]))
    for a, b in zip(tree_leaves(fresh.text_kv) + [fresh.text_mask], tree_leaves(merged.text_kv) + [merged.text_mask]):
        assert a.stride() == b.stride() and a.is_contiguous()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_env_compiles_the_frame_pass_twice_per_batch_size():
    """``compile=True``: two graphs of the per-frame pass (denoise, commit) per batch size, whatever follows: context
    restarts, episode ends (autoreset of some rows), partial resets. The compiled pass gets its cache in one layout
    (``canonical_layout``), whatever made it; a stride mismatch used to recompile (about 15 s for the shipped model)
    mid-episode."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from neuralsim.dynamics import DynamicsTransformer
    from neuralsim.envs import WorldModelVectorEnv

    torch._dynamo.reset()
    model = make_tiny_model(context_window=3)
    env = WorldModelVectorEnv(2, model=model, compile=True, max_episode_steps=5, return_frames=False, num_threads=None)
    try:
        env.reset(seed=0)
        env.action_space.seed(0)
        for _ in range(12):  # context restarts every 3 frames, both episodes end at step 5
            env.step(env.action_space.sample())
        env.reset(seed=1, options={"reset_mask": np.array([True, False])})
        for _ in range(3):
            env.step(env.action_space.sample())
        assert len(_debug_get_cache_entry_list(DynamicsTransformer.forward_frame.__code__)) == 2
        # the work around the pass, compiled too: the pass's per-frame context for both kinds, the camera once
        assert len(_debug_get_cache_entry_list(DynamicsTransformer.prepare_frame.__code__)) == 2
        assert len(_debug_get_cache_entry_list(WorldModel._advance_camera.__code__)) == 1
    finally:
        model.compile_streaming(False)
        env.close()
