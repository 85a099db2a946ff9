"""The frame-wise gated delta rule: recurrent reference vs parallel form, an outside oracle, stability."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import load_script
from neuralsim.dynamics import gated_delta_rule, gdn_parallel, gdn_recurrent



def _inputs(B=2, H=3, T=8, S=5, D=8, Dv=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = F.relu(torch.randn(B, H, T, S, D, generator=g))
    k = F.relu(torch.randn(B, H, T, S, D, generator=g)) * (D * S) ** -0.5  # the model's key scaling
    v = torch.randn(B, H, T, S, Dv, generator=g)
    beta = torch.rand(B, H, T, generator=g)
    gamma = torch.rand(B, H, T, generator=g) * 0.2 + 0.8
    state = torch.randn(B, H, D, Dv, generator=g) * 0.1
    return q, k, v, beta, gamma, state


def _rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-12)).item()


@pytest.mark.parametrize("T,chunk", [(1, 4), (7, 4), (16, 16), (70, 16), (96, 21)])
def test_parallel_matches_recurrent(T, chunk):
    q, k, v, beta, gamma, state = _inputs(T=T)
    o_ref, s_ref = gdn_recurrent(q, k, v, beta=beta, gamma=gamma, state=state)
    o_par, s_par = gdn_parallel(q, k, v, beta=beta, gamma=gamma, state=state, chunk_size=chunk)
    assert _rel_rms(o_par, o_ref) < 1e-5
    assert _rel_rms(s_par, s_ref) < 1e-5


def test_split_sequence_equals_whole():
    """Running T frames, or T1 then T2 from the carried state, gives the same outputs (streaming)."""
    q, k, v, beta, gamma, _ = _inputs(T=12)
    o_all, s_all = gated_delta_rule(q, k, v, beta=beta, gamma=gamma, chunk_size=5)
    o1, s1 = gated_delta_rule(q[:, :, :5], k[:, :, :5], v[:, :, :5], beta=beta[:, :, :5], gamma=gamma[:, :, :5])
    outs, s = [o1], s1
    for t in range(5, 12):  # then frame by frame (recurrent form)
        o, s = gated_delta_rule(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1],
                                beta=beta[:, :, t : t + 1], gamma=gamma[:, :, t : t + 1], state=s)
        outs.append(o)
    assert _rel_rms(torch.cat(outs, dim=2), o_all) < 1e-5
    assert _rel_rms(s, s_all) < 1e-5


def test_frame_rule_reads_decayed_state_for_all_tokens():
    """Within a frame all tokens read the same decayed state S' (not token-by-token updates)."""
    q, k, v, beta, gamma, state = _inputs(B=1, H=1, T=1, S=3, D=4, Dv=2)
    decayed = gamma[0, 0, 0] * state[0, 0]
    expected = decayed.clone()
    for s in range(3):
        ks, vs = k[0, 0, 0, s], v[0, 0, 0, s]
        expected += beta[0, 0, 0] * torch.outer(ks, vs - decayed.T @ ks)
    _, new = gdn_recurrent(q, k, v, beta=beta, gamma=gamma, state=state)
    torch.testing.assert_close(new[0, 0], expected, rtol=1e-5, atol=1e-6)


def test_long_rollout_state_stays_bounded():
    """Key scaling keeps the update contractive: 2,000 frames of unit-scale inputs stay finite and bounded."""
    q, k, v, beta, gamma, _ = _inputs(B=1, H=2, T=2000, S=16, D=16, Dv=16, seed=3)
    gamma = torch.ones_like(gamma)  # worst case: no decay at all
    beta = torch.ones_like(beta)
    o, s = gdn_parallel(q, k, v, beta=beta, gamma=gamma, chunk_size=64)
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    assert s.abs().max() < 100


def _load_fla_naive():
    """fla's naive reference, loaded by file path (fla's package __init__ needs triton, absent on CPU)."""
    spec = importlib.util.find_spec("fla")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "ops" / "gated_delta_rule" / "naive.py"
    if not path.is_file():
        return None
    return load_script(path, "_fla_gdn_naive").naive_recurrent_gated_delta_rule


def test_one_token_per_frame_matches_fla_oracle():
    naive = _load_fla_naive()
    if naive is None:
        pytest.skip("fla (flash-linear-attention / fla-core) not installed: dev-only oracle")
    q, k, v, beta, gamma, state = _inputs(B=2, H=3, T=40, S=1, D=8, Dv=6, seed=5)
    ours, s_ours = gdn_parallel(q, k, v, beta=beta, gamma=gamma, state=state, chunk_size=16)
    # fla layout: [B, T, H, K]; g = log γ; no extra query scaling.
    o_fla, s_fla = naive(q[:, :, :, 0].transpose(1, 2), k[:, :, :, 0].transpose(1, 2), v[:, :, :, 0].transpose(1, 2),
                         beta.transpose(1, 2), gamma.log().transpose(1, 2), scale=1.0, initial_state=state,
                         output_final_state=True)
    assert _rel_rms(ours[:, :, :, 0], o_fla.transpose(1, 2)) < 1e-5
    assert _rel_rms(s_ours, s_fla) < 1e-5


def test_autocast_bf16_runs_in_fp32():
    q, k, v, beta, gamma, state = _inputs(T=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        o, s = gated_delta_rule(q.bfloat16(), k.bfloat16(), v.bfloat16(), beta=beta, gamma=gamma, state=state)
    assert o.dtype == torch.bfloat16 and s.dtype == torch.float32
    o_ref, _ = gated_delta_rule(q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(), beta=beta,
                                gamma=gamma, state=state)
    assert _rel_rms(o.float(), o_ref) < 1e-2
