"""Numerical safety of the streaming state: the gated-delta-rule recurrence stays bounded over 10,000 frames
under random and adversarial inputs; a NaN/inf is caught at the step where it appears (FloatingPointError).

Why the GDN state is bounded (see ``neuralsim.dynamics``): per frame ``S' = γ S``,
``S = (I − β KᵀK) S' + β KᵀV`` with ReLU(RMSNorm(k)) keys scaled by ``1/√(D·S)``, so
``‖β KᵀK‖ ≤ 1`` while the key-norm weight is ≤ 1 (true at init): the homogeneous part never expands
and the state converges towards a least-squares fit of the values. The tests drive it with the worst
gates (``γ = 1``: no decay, ``β = 1``) and max-magnitude, constant, alternating and random inputs, and
check that the bound really depends on the key scaling (without it the same inputs overflow).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neuralsim.dynamics import gated_delta_rule
from neuralsim.envs import WorldModelEnv, WorldModelVectorEnv
from neuralsim.model import WorldModel

B, H, S, D = 4, 2, 16, 16  # rows (scenarios), heads, tokens per frame, head dim: the tiny preset's GDN
FRAMES = 10_000
CHUNK = 500
ROWS = ("random", "max-magnitude constant", "alternating extremes", "huge random")


def _keys(raw: torch.Tensor, weight: float = 1.0, scaled: bool = True) -> torch.Tensor:
    """As ``Attention._gdn``: RMSNorm per head (weight), ReLU, algebraic key scaling ``1/√(D·S)``."""
    k = F.relu(F.rms_norm(raw, (D,), eps=1e-6) * weight)
    return k * (D * S) ** -0.5 if scaled else k


def _drive(frames: int, *, beta: float, gamma: float, key_weight: float = 1.0, scaled: bool = True, seed: int = 0):
    """Run the frame-wise rule one frame at a time (recurrent form) through ``frames`` frames, 4 scenarios as rows.

    Returns ``(peaks, norms, limit, vmax)``: max |S| per row after each chunk ``[chunks, B]``, the per-head
    Frobenius norm of the constant row's state after each chunk ``[chunks, H]``, that row's least-squares
    limit ``‖K⁺V‖_F`` per head ``[H]``, and max |v| per row ``[B]``.
    """
    g = torch.Generator().manual_seed(seed)
    pattern = torch.sign(torch.randn(H, 1, S, D, generator=g))  # a fixed ±1 pattern: max-magnitude input
    state, peaks, norms, vmax = None, [], [], torch.zeros(B)
    for _ in range(frames // CHUNK):
        sign = torch.where(torch.arange(CHUNK) % 2 == 0, 1.0, -1.0).view(CHUNK, 1, 1)  # alternate every frame
        raw = torch.randn(B, H, CHUNK, S, D, generator=g)
        raw[1] = pattern * 1e3  # the same extreme frame forever (keys are normalised: the magnitude goes into v)
        raw[2] = pattern * sign * 1e3
        raw[3] = raw[3] * 1e4
        v = torch.randn(B, H, CHUNK, S, D, generator=g)
        v[1] = 1e4
        v[2] = 1e4 * sign
        v[3] = v[3] * 1e4
        v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # values + normaliser column, as the block
        q = _keys(torch.randn(B, H, CHUNK, S, D, generator=g))
        k = _keys(raw, key_weight, scaled)
        full = torch.full((B, H, CHUNK), 1.0)
        _, state = gated_delta_rule(q, k, v1, beta=full * beta, gamma=full * gamma, state=state,
                                    chunk_size=1)  # chunk_size=1: exact per-frame recurrence
        finite = torch.isfinite(state).flatten(1).all(1)
        peaks.append(torch.where(finite, state.abs().flatten(1).amax(1), torch.inf))
        norms.append(torch.linalg.matrix_norm(state[1]))
        vmax = torch.maximum(vmax, v1.abs().flatten(1).amax(1))
    # Constant keys K [S, D] and values V [S, D+1] per head: from S_0 = 0 the iterates approach K⁺V from below,
    # ‖S_t‖_F <= ‖K⁺V‖_F for any β, γ in (0, 1] (in the eigenbasis of KᵀK each component is a partial sum of a
    # geometric series that converges to, at most, that of K⁺V).
    K, V = k[1, :, 0].double(), v1[1, :, 0].double()  # (H, S, D), (H, S, D+1)
    limit = torch.linalg.matrix_norm(torch.linalg.pinv(K) @ V).float()
    return torch.stack(peaks), torch.stack(norms), limit, vmax


@pytest.mark.parametrize("beta, gamma", [(1.0, 1.0), (0.993, 0.993), (0.5, 0.9)],
                         ids=["worst-no-decay", "init-gates", "mid-gates"])
@pytest.mark.parametrize("seed", [0, 1])
def test_gdn_recurrence_bounded_for_10k_frames(beta, gamma, seed):
    peaks, norms, limit, vmax = _drive(FRAMES, beta=beta, gamma=gamma, seed=seed)
    assert torch.isfinite(peaks).all()
    # Max-magnitude constant input: never above its analytic least-squares limit, at any gates.
    assert (norms <= limit * (1 + 1e-4) + 1e-3).all(), (norms.amax(0), limit)
    half = len(peaks) // 2
    for row, name in enumerate(ROWS):
        first, second = float(peaks[:half, row].max()), float(peaks[half:, row].max())
        # Every scenario stays within a fixed multiple of its largest value (at worst ~40x, alternating keys, γ = 1) ...
        assert second <= 100 * float(vmax[row]), (name, second, float(vmax[row]))
        # ... and the stationary random inputs do not drift (their peak is an extreme value: it creeps up ~10%).
        if "random" in name:
            assert second <= 1.5 * first, (name, first, second)


@pytest.mark.parametrize("key_weight, scaled", [(1.0, False), (3.0, True)], ids=["no-key-scaling", "key-norm-weight-3"])
def test_the_bound_depends_on_key_scaling(key_weight, scaled):
    """The same inputs overflow when ‖βKᵀK‖ can exceed 1: the test above is not vacuous. (A trained key-norm
    weight above 1 breaks the bound too; the model then stops with FloatingPointError, see below.)"""
    peaks, *_ = _drive(CHUNK, beta=1.0, gamma=1.0, key_weight=key_weight, scaled=scaled)
    assert not torch.isfinite(peaks).all()


# ------------------------------------------------------------------------------------ the full model


def _adversarial_start(model: WorldModel) -> np.ndarray:
    """Start frames with extreme latents: noise, a 0/255 checkerboard, all white, all black."""
    h, w = model.config.image_size
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    checker = ((np.indices((h, w)).sum(0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, -1)
    return np.stack([noise, checker, np.full((h, w, 3), 255, np.uint8), np.zeros((h, w, 3), np.uint8)])[:, None]


def _adversarial_actions(t: int, rng: np.random.Generator) -> np.ndarray:
    """Row 0 uniform random, row 1 random corners (each component ±1), row 2 all +1, row 3 all −1."""
    return np.stack([rng.uniform(-1, 1, 4), rng.choice([-1.0, 1.0], 4), np.ones(4), -np.ones(4)]).astype(np.float32)


def _rollout(model: WorldModel, steps: int, denoise_steps: int) -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    state = model.init_state(4, frames=_adversarial_start(model), generator=g, denoise_steps=denoise_steps)
    state_peak, latent_peak = [], []
    for t in range(steps):
        latent, state = model.step(state, _adversarial_actions(t, rng), generator=g, denoise_steps=denoise_steps)
        # step() raises FloatingPointError on any NaN/inf in latent, reward, termination or state.
        state_peak.append(max(float(c["S"].abs().max()) for c in state.cache if "S" in c))
        latent_peak.append(float(latent.abs().max()))
    return {"state": np.array(state_peak), "latent": np.array(latent_peak)}


def _check_bounded(run: dict[str, np.ndarray]) -> None:
    half = len(run["state"]) // 2
    assert np.isfinite(run["state"]).all() and np.isfinite(run["latent"]).all()
    assert run["latent"].max() < 1e4  # the env's latent observation bound
    assert run["state"][half:].max() <= 1.5 * run["state"][:half].max() + 1.0, (run["state"][:half].max(), run["state"][half:].max())


def test_full_model_adversarial_rollout_short(tiny_checkpoint):
    _check_bounded(_rollout(WorldModel.from_pretrained(tiny_checkpoint), steps=200, denoise_steps=1))


@pytest.mark.slow
def test_full_model_adversarial_rollout_2000_steps(tiny_checkpoint):
    _check_bounded(_rollout(WorldModel.from_pretrained(tiny_checkpoint), steps=2_000, denoise_steps=None))


@pytest.mark.slow
def test_gdn_block_module_bounded_for_10k_frames(tiny_checkpoint):
    """The real GDN attention module (key conv, norms, camera heads, gates from the pooled frame) streamed
    10,000 frames with the worst gates (no decay, β = 1) and random / max-magnitude / alternating inputs."""
    model = WorldModel.from_pretrained(tiny_checkpoint)
    attn = copy.deepcopy(next(b.attn for b in model.dynamics.blocks if b.attn.kind == "gdn"))
    with torch.no_grad():
        attn.A_log.fill_(-30.0)  # γ = exp(−e^−30 · softplus(·)) = 1
        attn.beta_proj.weight.zero_()
        attn.beta_proj.bias.fill_(30.0)  # β = 1
    d, S_ = model.config.width, model.config.tokens_per_frame
    g = torch.Generator().manual_seed(0)
    pattern = torch.sign(torch.randn(1, 1, S_, d, generator=g)) * 1e3
    cache, peaks, vmax = None, [], 0.0
    with torch.no_grad():
        for t in range(FRAMES):
            h = torch.cat([torch.randn(1, 1, S_, d, generator=g), pattern, pattern * (-1) ** t,
                           torch.randn(1, 1, S_, d, generator=g) * 1e4])  # (4, 1, S, d)
            out, cache = attn(h, cam=h, cache=cache, start=torch.full((4,), t))
            if t % 100 == 0:
                assert torch.isfinite(out).all() and torch.isfinite(cache["S"]).all(), t
                peaks.append(cache["S"].abs().flatten(1).amax(1))
                vmax = max(vmax, float(attn.qkv(h).abs().max()), float(attn.v_proj_cam(h).abs().max()))
    peaks = torch.stack(peaks)
    half = len(peaks) // 2
    assert float(peaks.max()) <= 100 * vmax, (float(peaks.max()), vmax)
    # The random rows (0, 3) are stationary: no drift. (The constant rows still approach their least-squares limit.)
    first, second = peaks[:half, [0, 3]].amax(0), peaks[half:, [0, 3]].amax(0)
    assert (second <= 1.5 * first).all(), (first, second)


# ------------------------------------------------------------------------------------ NaN is caught where it appears


@pytest.fixture()
def model(tiny_checkpoint) -> WorldModel:
    return WorldModel.from_pretrained(tiny_checkpoint)


def _start(model: WorldModel, steps: int):
    g = torch.Generator().manual_seed(0)
    state = model.init_state(1, frames=np.zeros((1, 1, 32, 32, 3), np.uint8), generator=g)
    for _ in range(steps):
        _, state = model.step(state, np.zeros((1, 4), np.float32), generator=g)
    return state, g


@pytest.mark.parametrize("poison, part", [
    (lambda m: m.dynamics.blocks[0].attn.qkv.weight, "latent"),
    (lambda m: m.autoencoder.encoder.stem.weight, None),
    (lambda m: m.reward_head.net[-1].weight, "reward"),
    (lambda m: m.termination_head.net[-1].bias, "termination"),
], ids=["dynamics-weight", "encoder-weight", "reward-head", "termination-head"])
def test_nan_weight_raises_at_that_step(model, poison, part):
    state, g = _start(model, 5)
    param = poison(model)
    g_before, original = g.get_state(), param.detach().clone()
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    if part is None:  # the encoder: step() does not use it; encode/init_state (where it enters) stop
        model.step(state, np.zeros((1, 4), np.float32), generator=g)
        frames = np.zeros((1, 1, 32, 32, 3), np.uint8)
        for call in (lambda: model.encode(frames), lambda: model.init_state(1, frames=frames)):
            with pytest.raises(FloatingPointError, match="autoencoder produced non-finite latents"):
                call()
        return
    with pytest.raises(FloatingPointError, match=rf"non-finite {part} at step 6; .*the state passed in is unchanged"):
        model.step(state, np.zeros((1, 4), np.float32), generator=g)
    # Repair the weight, rewind the noise: the same step from the same (unchanged) state works and matches a clean run.
    with torch.no_grad():
        param.copy_(original)
    g.set_state(g_before)
    latent, _ = model.step(state, np.zeros((1, 4), np.float32), generator=g)
    ref_state, ref_g = _start(model, 5)
    ref, _ = model.step(ref_state, np.zeros((1, 4), np.float32), generator=ref_g)
    assert torch.equal(latent, ref)


def test_nan_in_the_state_raises_at_the_next_step(model):
    state, g = _start(model, 3)
    corrupt = copy.deepcopy(state)
    gdn = next(c for c in corrupt.cache if "S" in c)
    gdn["S"][0, 0, 0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"non-finite \w+ at step 4"):
        model.step(corrupt, np.zeros((1, 4), np.float32), generator=g)


def test_divergence_is_caught_not_propagated(tiny_checkpoint):
    """Key-norm weights of 4 and no decay make the recurrence expand (‖βKᵀK‖ > 1): the state overflows
    within ~60 steps while the normalised output still looks fine. step() stops at the overflow."""
    model = WorldModel.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        for blk in model.dynamics.blocks:
            if blk.attn.kind == "gdn":
                blk.attn.A_log.fill_(-30.0)
                for name in ("k_norm", "k_norm_cam"):
                    if hasattr(blk.attn, name):
                        getattr(blk.attn, name).weight.fill_(4.0)
    g = torch.Generator().manual_seed(0)
    state = model.init_state(1, frames=np.zeros((1, 1, 32, 32, 3), np.uint8), generator=g)
    with pytest.raises(FloatingPointError, match=r"non-finite \w+ at step \d+"):
        for _ in range(500):
            latent, state = model.step(state, np.ones((1, 4), np.float32), generator=g, denoise_steps=1)
            assert torch.isfinite(latent).all()  # every step before the error is finite


def test_envs_surface_the_error_and_stay_usable(tiny_checkpoint):
    """A FloatingPointError in env.step commits nothing (state, step count, noise stream)."""
    model = WorldModel.from_pretrained(tiny_checkpoint)
    weight = model.dynamics.blocks[0].attn.qkv.weight
    original = weight.detach().clone()
    # the references start the same way (a model instance has no start set: its first frame is generated)
    reference = WorldModel.from_pretrained(tiny_checkpoint)
    env, ref = WorldModelEnv(model, max_episode_steps=None), WorldModelEnv(reference, max_episode_steps=None)
    venv = WorldModelVectorEnv(2, model=model, max_episode_steps=None)
    vref = WorldModelVectorEnv(2, model=reference, max_episode_steps=None)
    for e in (env, ref):
        e.reset(seed=1)
        e.step(np.zeros(4, np.float32))
    for e in (venv, vref):
        e.reset(seed=1)
        e.step(np.zeros((2, 4), np.float32))
    with torch.no_grad():
        weight.view(-1)[0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite latent"):
        env.step(np.ones(4, np.float32))
    with pytest.raises(FloatingPointError, match="non-finite latent"):
        venv.step(np.ones((2, 4), np.float32))
    with torch.no_grad():
        weight.copy_(original)
    obs, *_, info = env.step(np.ones(4, np.float32))
    assert np.array_equal(obs, ref.step(np.ones(4, np.float32))[0]) and info["step"] == 2
    vobs, *_, vinfo = venv.step(np.ones((2, 4), np.float32))
    assert np.array_equal(vobs, vref.step(np.ones((2, 4), np.float32))[0]) and vinfo["step"].tolist() == [2, 2]


def test_soak_script_smoke(tiny_checkpoint, tmp_path):
    """benchmarks/soak.py end to end on the tiny checkpoint (a few steps), so the script cannot rot."""
    from conftest import load_script

    soak = load_script("benchmarks/soak.py", "soak")
    result = soak.main(["--model", str(tiny_checkpoint), "--num-envs", "2", "--steps", "12", "--max-episode-steps", "4",
                        "--obs-type", "latent", "--out", str(tmp_path / "soak.json")])
    assert result["nonfinite_total"] == 0 and result["errors_total"] == 0 and result["episodes_ended"] >= 2
    assert (tmp_path / "soak.json").is_file()
