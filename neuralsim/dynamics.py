"""The causal dynamics transformer: SANA-WM's hybrid of frame-wise gated-delta-rule and softmax blocks.

Follows SANA-WM (arXiv 2605.15178; diffusers ``SanaWMTransformer3DModel``), made causal over frames
with a constant-size streaming state:

- Tokens: one per latent pixel (patch 1); the tokens of one latent frame are processed together,
  across frames the model is causal.
- Gated delta rule (GDN) blocks, per head a state ``S ∈ R^{Dk×(Dv+1)}`` (values plus a normaliser
  column ``z``). Per latent frame ``t``: ``S' = γ_t S_{t-1}``, ``S_t = S' + β_t Σ_s k_s (v_s − S'ᵀk_s)ᵀ``
  over the frame's tokens ``s``, output ``o = S_tᵀq / max(zᵀq, 1)``. ``γ_t, β_t`` per head per frame
  from the frame's mean token (``γ = exp(−exp(A_log)·softplus(W_a x̄ + dt_bias))``, init ``γ≈0.993``;
  ``β = σ(W_b x̄ + 5)``). q, k: RMSNorm per head, ReLU; keys scaled by ``1/√(D·S)`` so
  ``‖Σ_s β k_s k_sᵀ‖ ≤ 1`` (the update is contractive: SANA-WM's algebraic key scaling).
  SANA-WM divides by ``zᵀq + ε``; the floor at 1 keeps the division bounded when a query meets
  little stored mass. Keys first pass a short causal depthwise conv *over frames, per token
  position* (our choice for the frame-wise rule; identity-initialised). No RoPE in GDN blocks (a
  learned spatial position embedding is added to the input tokens).
- Softmax blocks: full attention within the current frame plus a bounded cache of earlier frames:
  ``attention_sink_frames`` first frames + the ``attention_window`` most recent ones. 2-D RoPE over
  (h, w); time enters as a learned per-head bias per cache slot (same frame / distance 1..window /
  sink i), so long rollouts never meet unseen time offsets.
- Conditioning: adaLN-single from ``t_emb(τ_t) + action_emb(a_{t−1})`` per frame (a learned null
  action for the first frame or unknown actions); Plücker rays (camera worlds) embedded per token,
  added after attention in every block (``plucker_proj``) and, with ``camera_branch``, fed to a
  second set of attention heads (SANA-WM's camera branch); prompt by cross-attention.
- GLU conv FFN (1×1 → depthwise 3×3 → GLU → 1×1) plus an optional causal temporal conv.
- Zero-initialised output projections, so every block starts as the identity.

One computation, two schedules, through the same blocks: ``forward`` runs ``T`` frames at once from a cache
(``None`` = empty; training, context frames), streaming runs one frame at a time. Only the GDN core differs
(the chunked parallel scan for ``T > 1``, the one-step recurrent update for one frame), and a streaming frame
reads a few terms that :meth:`DynamicsTransformer.prepare_frame` computes once per frame instead of once per
denoise pass (action and Plücker embeddings, the key conv's taps over past frames, the attention bias against
the cache); ``forward_frame`` then runs each pass, the new cache built only by the committing one.
tests/test_model.py checks streaming against the teacher-forced parallel forward, tests/test_perf_equivalence.py
``WorldModel.step``'s prepared passes against ``forward``. Streaming state per block (all fixed size):
``{"S", "conv"}`` (GDN), ``{"k", "v", "frame"}`` (softmax), ``{"ffn"}`` (temporal conv tail).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from neuralsim.config import WorldModelConfig

Cache = dict[str, torch.Tensor]

# ---------------------------------------------------------------------------------------------
# Gated delta rule, frame-wise: reference (recurrent) and parallel (chunked scan) forms
# ---------------------------------------------------------------------------------------------


def gdn_recurrent(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, beta: torch.Tensor, gamma: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame-wise gated delta rule, one frame at a time (the reference).

    Args:
        q, k: ``[B, H, T, S, Dk]`` (S tokens per frame); v: ``[B, H, T, S, Dv]``.
        beta, gamma: ``[B, H, T]`` write strength and decay per frame.
        state: ``[B, H, Dk, Dv]`` or ``None`` (zeros).

    Returns:
        ``(o [B, H, T, S, Dv], final state [B, H, Dk, Dv])`` with ``o_t = q_t S_t`` (raw, un-normalised).
    """
    B, H, T, S, Dk = k.shape
    if state is None:
        state = k.new_zeros(B, H, Dk, v.shape[-1])
    outs = []
    for t in range(T):
        o, state = gdn_frame(q[:, :, t], k[:, :, t], v[:, :, t], beta=beta[:, :, t], gamma=gamma[:, :, t], state=state)
        outs.append(o)
    return torch.stack(outs, dim=2), state


def gdn_frame(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, beta: torch.Tensor, gamma: torch.Tensor, state: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame of the rule (the body of :func:`gdn_recurrent`).

    Args:
        q, k: ``[B, H, S, Dk]``; v: ``[B, H, S, Dv]``; beta, gamma: ``[B, H]``; state: ``[B, H, Dk, Dv]``.

    Returns:
        ``(o [B, H, S, Dv], new state [B, H, Dk, Dv])``.
    """
    decayed = gamma[:, :, None, None] * state  # S' = γ S                (B, H, Dk, Dv)
    delta = v - k @ decayed  # v_s − S'ᵀ k_s                               (B, H, S, Dv)
    state = decayed + beta[:, :, None, None] * (k.transpose(-1, -2) @ delta)  # (B, H, Dk, Dv)
    return q @ state, state


def gdn_parallel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, beta: torch.Tensor, gamma: torch.Tensor,
    state: torch.Tensor | None = None, chunk_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same rule for training: all token work in parallel, frames scanned in parallel per chunk.

    Each frame is an affine map of the state, ``S_t = A_t S_{t-1} + U_t`` with
    ``A_t = γ_t (I − β_t K_tᵀK_t)`` and ``U_t = β_t K_tᵀV_t`` (built for all frames at once). Inside a
    chunk the maps are composed by a Hillis-Steele prefix scan (log2(chunk) batched matmuls),
    chunks are chained sequentially, and ``o_t = q_t S_t`` is read out for all frames at once.
    Same arguments and returns as :func:`gdn_recurrent`.
    """
    B, H, T, S, Dk = k.shape
    if state is None:
        state = k.new_zeros(B, H, Dk, v.shape[-1])
    kb = k * beta[..., None, None]  # β k                          (B, H, T, S, Dk)
    eye = torch.eye(Dk, device=k.device, dtype=k.dtype)
    A = gamma[..., None, None] * (eye - kb.transpose(-1, -2) @ k)  # (B, H, T, Dk, Dk)
    U = kb.transpose(-1, -2) @ v  # (B, H, T, Dk, Dv)
    states = []
    for c0 in range(0, T, chunk_size):
        A_c, U_c = A[:, :, c0 : c0 + chunk_size], U[:, :, c0 : c0 + chunk_size]
        n, offset = A_c.shape[2], 1
        while offset < n:  # inclusive prefix composition: (A, U)_t ∘ (A, U)_{t-offset}
            U_c = torch.cat([U_c[:, :, :offset], A_c[:, :, offset:] @ U_c[:, :, :-offset] + U_c[:, :, offset:]], dim=2)
            A_c = torch.cat([A_c[:, :, :offset], A_c[:, :, offset:] @ A_c[:, :, :-offset]], dim=2)
            offset *= 2
        S_c = A_c @ state[:, :, None] + U_c  # states after each frame of the chunk  (B, H, n, Dk, Dv)
        states.append(S_c)
        state = S_c[:, :, -1]
    return q @ torch.cat(states, dim=2), state  # (B, H, T, S, Dk) @ (B, H, T, Dk, Dv)


def gated_delta_rule(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, beta: torch.Tensor, gamma: torch.Tensor,
    state: torch.Tensor | None = None, chunk_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch in fp32 (autocast off): one frame → recurrent form, several → parallel form.

    (flash-linear-attention's kernels implement the *token*-wise rule, which equals this frame-wise
    one only for one token per frame, so they are not used here.)
    """
    dtype = v.dtype
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v, beta, gamma = (t.float() for t in (q, k, v, beta, gamma))
        state = None if state is None else state.float()
        if k.shape[2] == 1:
            o, state = gdn_recurrent(q, k, v, beta=beta, gamma=gamma, state=state)
        else:
            o, state = gdn_parallel(q, k, v, beta=beta, gamma=gamma, state=state, chunk_size=chunk_size)
    return o.to(dtype), state


# ---------------------------------------------------------------------------------------------
# Small pieces
# ---------------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x * (1 + scale) + shift``."""
    return torch.addcmul(shift, x, 1 + scale)


class RMSNorm(nn.Module):
    """RMSNorm over the last dim, computed in the input's dtype (autocast-friendly)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


def rope_2d(height: int, width: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables over a ``height × width`` token grid: ``(cos, sin)`` each ``[S, head_dim/2]``.

    Half of the rotated pairs follow the row index, half the column index.
    """
    quarter = head_dim // 4
    freqs = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))  # (D/4,)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij")
    angles = torch.cat([ys.reshape(-1, 1) * freqs, xs.reshape(-1, 1) * freqs], dim=-1)  # (S, D/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on the last dim of ``x [..., S, D]``."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class TimestepEmbedder(nn.Module):
    """Noise level τ ∈ [0, 1] → sinusoidal features of 1000·τ → MLP."""

    def __init__(self, width: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, tau: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=tau.device, dtype=torch.float32) / half)
        args = (tau.float() * 1000.0)[..., None] * freqs  # (..., half)
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1))


class CausalFrameConv(nn.Module):
    """Depthwise causal conv over frames, per token position: ``y_t = Σ_i w_i ⊙ x_{t−K+1+i}``.

    Identity at init (last tap 1). Streaming keeps the last ``K−1`` input frames as a tail.
    """

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        weight = torch.zeros(channels, kernel)
        weight[:, -1] = 1.0
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor, tail: torch.Tensor | None, past: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x [B, T, S, C]``, ``tail [B, K−1, S, C]`` (None = zeros) → ``(y, new tail)``.

        ``past``: for one frame (``T = 1``), :meth:`past` of ``tail``, shared by every denoise pass of the frame.
        """
        K, T = self.kernel, x.shape[1]
        if K == 1:
            return x * self.weight[:, 0], None
        if tail is None:
            tail = x.new_zeros(x.shape[0], K - 1, *x.shape[2:])
        xx = torch.cat([tail.to(x.dtype), x], dim=1)  # (B, K−1+T, S, C)
        if past is None:
            y = (xx.unfold(1, K, 1) * self.weight).sum(-1)  # windows (B, T, S, C, K) · taps (C, K)
        else:
            y = past + x * self.weight[:, -1]
        return y, xx[:, T:].float()

    def past(self, tail: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The taps over the tail ``[B, K−1, S, C]`` (K > 1), ``Σ_{i<K−1} w_i ⊙ x_{t−K+1+i}``: the part of the
        next frame's output that does not depend on the frame itself → ``[B, 1, S, C]`` in ``dtype``."""
        w, tail = self.weight.t(), tail.to(dtype)  # one row per tap  (K, C)
        past = tail[:, 0] * w[0]
        for i in range(1, self.kernel - 1):
            past = past + tail[:, i] * w[i]
        return past[:, None]


class CausalTemporalConv(nn.Module):
    """Full causal conv over frames (a ``C×C`` matrix per tap), zero-initialised: ``y_t = Σ_i W_i x_{t−K+1+i}``.

    The causal counterpart of SANA-WM's ``t_conv`` at the FFN output.
    """

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.weight = nn.Parameter(torch.zeros(kernel, channels, channels))

    def forward(self, x: torch.Tensor, tail: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        K, T = self.kernel, x.shape[1]
        if tail is None and K > 1:
            tail = x.new_zeros(x.shape[0], K - 1, *x.shape[2:])
        xx = x if K == 1 else torch.cat([tail.to(x.dtype), x], dim=1)  # (B, K−1+T, S, C)
        y = sum(F.linear(xx[:, i : i + T], self.weight[i]) for i in range(K))
        return y, (xx[:, T:].float() if K > 1 else None)


# ---------------------------------------------------------------------------------------------
# Attention (GDN or softmax), cross-attention, FFN, block
# ---------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Self-attention of a block: ``kind="gdn"`` (frame-wise gated delta rule) or ``"softmax"`` (bounded cache).

    With ``camera_branch`` a second set of heads (own q/k/v/out projections, fed by the tokens plus
    the Plücker embedding) runs through the same mixer, sharing the GDN gates.
    """

    def __init__(self, config: WorldModelConfig, kind: str) -> None:
        super().__init__()
        d, H = config.width, config.num_heads
        self.kind, self.heads, self.head_dim = kind, H, d // H
        self.camera_branch = config.camera_branch
        n_heads = H * (2 if self.camera_branch else 1)  # heads through the mixer
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.q_norm = RMSNorm(self.head_dim, eps=1e-6)
        self.k_norm = RMSNorm(self.head_dim, eps=1e-6)
        self.output_gate = nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        if self.camera_branch:
            self.q_proj_cam, self.k_proj_cam, self.v_proj_cam = (nn.Linear(d, d) for _ in range(3))
            self.q_norm_cam = RMSNorm(self.head_dim, eps=1e-6)
            self.k_norm_cam = RMSNorm(self.head_dim, eps=1e-6)
            self.out_proj_cam = nn.Linear(d, d)
            nn.init.zeros_(self.out_proj_cam.weight)
            nn.init.zeros_(self.out_proj_cam.bias)
        if kind == "gdn":
            self.chunk_size = config.gdn_chunk_size
            self.conv_k = CausalFrameConv(n_heads * self.head_dim, config.conv_k_size)
            self.beta_proj = nn.Linear(d, H)
            nn.init.constant_(self.beta_proj.bias, 5.0)  # writes start strong (β ≈ 0.993)
            self.gate_proj = nn.Linear(d, H)
            nn.init.zeros_(self.gate_proj.bias)
            self.A_log = nn.Parameter(torch.zeros(H))
            self.dt_bias = nn.Parameter(torch.full((H,), -5.0))  # γ = exp(−softplus(−5)) ≈ 0.993: long memory
        else:
            self.sink, self.window = config.attention_sink_frames, config.attention_window
            self.slot_bias = nn.Parameter(torch.zeros(n_heads, 1 + self.window + self.sink))
            cos, sin = rope_2d(*config.token_grid, self.head_dim)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, h: torch.Tensor, *, cam: torch.Tensor | None, cache: Cache | None, start: torch.Tensor,
                commit: bool = True) -> tuple[torch.Tensor, Cache | None]:
        """``h [B, T, S, d]`` (modulated tokens), ``cam`` the camera-branch input → ``(out [B, T, S, d], new cache)``.

        ``cache``: the block's state (None = empty), or for one streaming frame :meth:`prepare_frame`'s context
        (the state plus the terms every denoise pass of the frame shares). The new cache is built only when
        ``commit`` (else None).
        """
        B, T, S, d = h.shape
        H, D = self.heads, self.head_dim
        cache = {} if cache is None else cache
        q, k, v = self.qkv(h).chunk(3, dim=-1)  # each (B, T, S, d)
        if self.camera_branch:
            q = torch.cat([q, self.q_proj_cam(cam)], dim=-1)  # (B, T, S, 2d)
            k = torch.cat([k, self.k_proj_cam(cam)], dim=-1)
            v = torch.cat([v, self.v_proj_cam(cam)], dim=-1)
        new_cache: Cache = {}
        if self.kind == "gdn":  # the tail keeps the raw (pre-conv) keys
            k, conv_tail = self.conv_k(k, cache.get("conv"), cache.get("conv_past"))
            if conv_tail is not None:
                new_cache["conv"] = conv_tail
        q, k, v = (t.view(B, T, S, -1, D) for t in (q, k, v))  # (B, T, S, nh, D)
        if self.camera_branch:  # separate norms for the main and the camera heads
            q = torch.cat([self.q_norm(q[..., :H, :]), self.q_norm_cam(q[..., H:, :])], dim=3)
            k = torch.cat([self.k_norm(k[..., :H, :]), self.k_norm_cam(k[..., H:, :])], dim=3)
        else:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.permute(0, 3, 1, 2, 4) for t in (q, k, v))  # (B, nh, T, S, D)
        if self.kind == "gdn":
            o, new_cache["S"] = self._gdn(q, k, v, h, cache.get("S"))
        else:
            q, k = apply_rope(q, self.rope_cos, self.rope_sin), apply_rope(k, self.rope_cos, self.rope_sin)
            o = self._softmax(q, k, v, cache, start)
            if commit:
                new_cache.update(self._update_cache(cache, k, v, start))
        o = o.permute(0, 2, 3, 1, 4)  # (B, T, S, nh, D)
        out = self.proj(o[..., :H, :].reshape(B, T, S, d) * F.silu(self.output_gate(h)))
        if self.camera_branch:
            out = out + self.out_proj_cam(o[..., H:, :].reshape(B, T, S, d))
        return out, (new_cache if commit else None)

    def prepare_frame(self, cache: Cache, start: torch.Tensor, dtype: torch.dtype) -> Cache:
        """The cache plus what every denoise pass of the next frame shares, computed once per frame.

        GDN: the key conv's taps over the past frames (``conv_past``); softmax: the attention bias of the new
        frame against the cache (``bias``). ``dtype``: the activations' dtype (the autocast dtype, else fp32).
        """
        ctx = dict(cache)
        if self.kind == "gdn":
            if self.conv_k.kernel > 1:
                ctx["conv_past"] = self.conv_k.past(cache["conv"], dtype)
        else:
            ctx["bias"] = self.attention_bias(cache["frame"], start, 1, cache["k"].shape[3])
        return ctx

    def _gdn(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, h: torch.Tensor, state: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """``q, k, v [B, nh, T, S, D]``, ``h [B, T, S, d]`` (for the gates) → ``(o [B, nh, T, S, D], new state)``."""
        B, nh, T, S, D = q.shape
        q = F.relu(q)
        k = F.relu(k) * (D * S) ** -0.5  # algebraic key scaling: Σ_s β‖k_s‖² ≤ 1
        pooled = h.mean(dim=2)  # frame mean token                        (B, T, d)
        beta = torch.sigmoid(self.beta_proj(pooled))  # (B, T, H)
        gamma = torch.exp(-self.A_log.exp() * F.softplus(self.gate_proj(pooled) + self.dt_bias))  # (B, T, H)
        repeat = nh // self.heads  # the camera heads share the gates
        beta, gamma = (g.transpose(1, 2).repeat(1, repeat, 1) for g in (beta, gamma))  # (B, nh, T)
        v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # values + normaliser column   (B, nh, T, S, D+1)
        o, state = gated_delta_rule(q, k, v1, beta=beta, gamma=gamma, state=state, chunk_size=self.chunk_size)
        return o[..., :D] / o[..., D:].clamp_min(1.0), state  # Sᵀq / max(zᵀq, 1)

    def slot_bias_mask(self, q_frame: torch.Tensor, k_frame: torch.Tensor) -> torch.Tensor:
        """Additive attention bias between frames: ``q_frame [B, Tq]``, ``k_frame [B, Tk]`` (absolute
        indices, −1 = empty slot) → ``[B, nh, Tq, Tk]``, ``−inf`` where a frame may not look.

        Frame t sees: itself, the sink frames (< ``sink``) before it, and the ``window`` frames before it.
        """
        dist = q_frame[:, :, None] - k_frame[:, None, :]  # (B, Tq, Tk)
        kf = k_frame[:, None, :].expand_as(dist)
        is_sink = (kf >= 0) & (kf < self.sink)
        allowed = (kf >= 0) & ((dist == 0) | ((dist > 0) & (is_sink | (dist <= self.window))))
        slot = torch.where(dist == 0, 0, torch.where(is_sink, 1 + self.window + kf, dist))
        slot = slot.clamp(0, self.slot_bias.shape[1] - 1)
        bias = self.slot_bias[:, slot].permute(1, 0, 2, 3)  # (B, nh, Tq, Tk)
        return bias.masked_fill(~allowed[:, None], float("-inf"))

    def attention_bias(self, cache_frames: torch.Tensor | None, start: torch.Tensor, T: int, S: int) -> torch.Tensor:
        """Token-level bias of ``T`` new frames from ``start [B]`` against the cache's frames ``[B, slots]`` (None =
        no cache) and themselves → ``[B, nh, T*S, (slots+T)*S]``."""
        new_frames = start[:, None] + torch.arange(T, device=start.device)  # (B, T)
        k_frame = new_frames if cache_frames is None else torch.cat([cache_frames, new_frames], dim=1)  # (B, Tk)
        bias = self.slot_bias_mask(new_frames, k_frame)  # (B, nh, T, Tk)
        return bias.repeat_interleave(S, dim=2).repeat_interleave(S, dim=3)

    def _softmax(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: Cache, start: torch.Tensor
                 ) -> torch.Tensor:
        """``q, k, v [B, nh, T, S, D]`` (rotated) attend to the cached frames and the new ones → ``o`` alike."""
        B, nh, T, S, D = q.shape
        keys, values, bias = k, v, cache.get("bias")
        if "k" in cache:
            keys = torch.cat([cache["k"].to(k.dtype), k], dim=2)  # (B, nh, slots+T, S, D)
            values = torch.cat([cache["v"].to(v.dtype), v], dim=2)
        if bias is None:
            bias = self.attention_bias(cache.get("frame"), start, T, S)  # (B, nh, T*S, Tk*S)
        o = F.scaled_dot_product_attention(q.flatten(2, 3), keys.flatten(2, 3), values.flatten(2, 3),
                                           attn_mask=bias.to(q.dtype))  # (B, nh, T*S, D)
        return o.view(B, nh, T, S, D)

    def empty_cache(self, batch_size: int, tokens: int, device, heads: int) -> Cache:
        slots = self.sink + self.window
        return {"k": torch.zeros(batch_size, heads, slots, tokens, self.head_dim, device=device),
                "v": torch.zeros(batch_size, heads, slots, tokens, self.head_dim, device=device),
                "frame": torch.full((batch_size, slots), -1, dtype=torch.long, device=device)}

    def _update_cache(self, cache: Cache, k: torch.Tensor, v: torch.Tensor, start: torch.Tensor) -> Cache:
        """Write the new frames: frame i < sink goes to sink slot i, later ones slide into the window."""
        B, nh, T, S, D = k.shape
        if "k" not in cache:
            cache = self.empty_cache(B, S, k.device, nh)
        new_frames = start[:, None] + torch.arange(T, device=k.device)  # (B, T)
        k, v = k.float(), v.float()
        sink_k, sink_v, sink_f = cache["k"][:, :, : self.sink], cache["v"][:, :, : self.sink], cache["frame"][:, : self.sink]
        if self.sink:
            sink_ids = torch.arange(self.sink, device=k.device)[None]  # (1, sink)
            pos = sink_ids - start[:, None]  # where sink frame i sits among the new frames   (B, sink)
            take = (pos >= 0) & (pos < T)
            index = pos.clamp(0, T - 1)[:, None, :, None, None].expand(B, nh, self.sink, S, D)
            sink_k = torch.where(take[:, None, :, None, None], k.gather(2, index), sink_k)
            sink_v = torch.where(take[:, None, :, None, None], v.gather(2, index), sink_v)
            sink_f = torch.where(take, sink_ids.expand(B, -1), sink_f)
        # window: the last `window` frames that are not sink frames (invalid entries only ever sit on the left)
        win_k = torch.cat([cache["k"][:, :, self.sink :], k], dim=2)[:, :, T:]  # (B, nh, window, S, D)
        win_v = torch.cat([cache["v"][:, :, self.sink :], v], dim=2)[:, :, T:]
        win_f = torch.cat([cache["frame"][:, self.sink :], torch.where(new_frames >= self.sink, new_frames, -1)], dim=1)[:, T:]
        return {"k": torch.cat([sink_k, win_k], dim=2), "v": torch.cat([sink_v, win_v], dim=2),
                "frame": torch.cat([sink_f, win_f], dim=1)}


class CrossAttention(nn.Module):
    """Image tokens attend to the prompt tokens (keys/values precomputed once per episode)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.q_linear = nn.Linear(width, width)
        self.kv_linear = nn.Linear(width, 2 * width)
        self.q_norm = RMSNorm(self.head_dim, eps=1e-6)
        self.k_norm = RMSNorm(self.head_dim, eps=1e-6)
        self.proj = nn.Linear(width, width)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def text_kv(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded prompt ``y [B, L, d]`` → ``(k, v)`` each ``[B, nh, L, hd]``."""
        B, L, _ = y.shape
        k, v = self.kv_linear(y).view(B, L, 2, self.heads, self.head_dim).unbind(2)  # (B, L, nh, hd)
        return self.k_norm(k).transpose(1, 2), v.transpose(1, 2)

    def single_key_output(self, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The output for any query when every row of ``mask [B, L]`` has exactly one token (a dream without a
        prompt: the null token): the softmax over one key is 1, so every token gets that token's value, projected
        → ``[B, 1, 1, d]``. Computed once per frame, it replaces the attention (the same numbers)."""
        B, nh, L, hd = v.shape
        index = mask.float().argmax(dim=1)  # the one token of each row
        value = v[torch.arange(B, device=v.device), :, index]  # (B, nh, hd)
        dtype = torch.get_autocast_dtype(v.device.type) if torch.is_autocast_enabled(v.device.type) else v.dtype
        return self.proj(value.to(dtype).reshape(B, 1, 1, nh * hd))

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, S, d = x.shape
        q = self.q_norm(self.q_linear(x).view(B, T * S, self.heads, self.head_dim)).transpose(1, 2)  # (B, nh, T*S, hd)
        o = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask[:, None, None, :])
        return self.proj(o.transpose(1, 2).reshape(B, T, S, d))


class GLUConvFFN(nn.Module):
    """SANA's GLUMBConv: 1×1 conv → SiLU → depthwise 3×3 → GLU (value · SiLU(gate)) → 1×1, plus a causal temporal conv."""

    def __init__(self, config: WorldModelConfig) -> None:
        super().__init__()
        d = config.width
        hidden = int(round(config.ffn_ratio * d))
        self.grid = config.token_grid
        self.inverted_conv = nn.Linear(d, 2 * hidden)  # a 1×1 conv on the token grid
        self.depth_conv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.point_conv = nn.Linear(hidden, d, bias=False)
        nn.init.zeros_(self.point_conv.weight)
        self.t_conv = CausalTemporalConv(d, config.ffn_temporal_kernel) if config.ffn_temporal_kernel > 0 else None

    def forward(self, x: torch.Tensor, tail: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, S, _ = x.shape
        y = F.silu(self.inverted_conv(x))  # (B, T, S, 2h)
        y = y.view(B * T, *self.grid, -1).permute(0, 3, 1, 2)  # (B*T, 2h, gh, gw)
        y = self.depth_conv(y).permute(0, 2, 3, 1).reshape(B, T, S, -1)  # (B, T, S, 2h)
        value, gate = y.chunk(2, dim=-1)
        y = self.point_conv(value * F.silu(gate))  # (B, T, S, d)
        if self.t_conv is None:
            return y, None
        y_t, tail = self.t_conv(y, tail)
        return y + y_t, tail


class Block(nn.Module):
    """adaLN-single block: self-attention (GDN or softmax) → Plücker injection → cross-attention → FFN."""

    def __init__(self, config: WorldModelConfig, index: int) -> None:
        super().__init__()
        d = config.width
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(config, "softmax" if index in config.softmax_blocks else "gdn")
        self.plucker_proj = nn.Linear(d, d) if config.camera else None
        self.cross_attn = CrossAttention(d, config.num_heads)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = GLUConvFFN(config)
        self.scale_shift_table = nn.Parameter(torch.randn(6, d) / d**0.5)

    def forward(self, x: torch.Tensor, t6: torch.Tensor, *, plucker: torch.Tensor | None,
                text: tuple[torch.Tensor, torch.Tensor], text_mask: torch.Tensor, cache: Cache | None,
                start: torch.Tensor, commit: bool = True) -> tuple[torch.Tensor, Cache | None]:
        """``x [B, T, S, d]``, ``t6 [B, T, 6, d]`` (adaLN-single per frame) → ``(x, new cache)``.

        ``cache``: the block's state (None = empty) or, for one streaming frame, :meth:`prepare_frame`'s context;
        the new cache is built only when ``commit`` (else None).
        """
        cache = {} if cache is None else cache
        mods = (self.scale_shift_table + t6).unsqueeze(2)  # (B, T, 1, 6, d)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods.unbind(3)  # each (B, T, 1, d)
        h = modulate(self.norm1(x), shift_msa, scale_msa)
        cam = h + plucker if self.attn.camera_branch else None
        a, new_cache = self.attn(h, cam=cam, cache=cache, start=start, commit=commit)
        x = x + gate_msa * a
        if self.plucker_proj is not None:
            x = x + (cache["plucker"] if "plucker" in cache else self.plucker_proj(plucker))
        x = x + (cache["cross"] if "cross" in cache else self.cross_attn(x, *text, text_mask))
        m, ffn_tail = self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp), cache.get("ffn"))
        if commit and ffn_tail is not None:
            new_cache["ffn"] = ffn_tail
        return x + gate_mlp * m, new_cache

    def prepare_frame(self, cache: Cache, *, plucker: torch.Tensor | None, start: torch.Tensor,
                      dtype: torch.dtype) -> Cache:
        """The attention's per-frame context plus the Plücker injection ``plucker_proj(plucker)`` (action-dependent,
        the same in every denoise pass)."""
        ctx = self.attn.prepare_frame(cache, start, dtype)
        if self.plucker_proj is not None:
            ctx["plucker"] = self.plucker_proj(plucker)
        return ctx


@dataclass
class FrameContext:
    """What every pass over the same new frames shares, whatever their noise: built by
    :meth:`DynamicsTransformer.forward` for ``T`` frames, or once per env step for one frame by
    :meth:`DynamicsTransformer.prepare_frame`; read (never modified) by :meth:`DynamicsTransformer.forward_frame`.

    Attributes:
        start: ``[B]`` int64 index of the first new frame.
        cond: ``[B, T, d]`` action embedding (or the learned null action).
        plucker: ``[B, T, S, d]`` embedded Plücker rays (camera worlds) or None.
        token_input: the terms added, in this order, to every pass's embedded tokens: the position embedding
            ``[S, d]`` and :meth:`token_input` ``[B, T, S, d]`` if any (:meth:`prepare_frame` sums them once).
        blocks: per block its cache (None = empty); from :meth:`prepare_frame` plus the terms that depend only on
            the cache and the action (key-conv taps over past frames, attention bias, Plücker injection) and,
            without a prompt, the cross-attention's output (``"cross"``).
        text, text_mask: the prompt's per-block keys/values and mask (as in ``forward``).
    """

    start: torch.Tensor
    cond: torch.Tensor
    plucker: torch.Tensor | None
    token_input: list[torch.Tensor]
    blocks: list[Cache | None]
    text: list[tuple[torch.Tensor, torch.Tensor]]
    text_mask: torch.Tensor


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.scale_shift_table = nn.Parameter(torch.randn(2, width) / width**0.5)
        self.linear = nn.Linear(width, out_channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.scale_shift_table + c[:, :, None]).unsqueeze(2).unbind(3)  # each (B, T, 1, d)
        return self.linear(modulate(self.norm(x), shift, scale))


# ---------------------------------------------------------------------------------------------
# The transformer
# ---------------------------------------------------------------------------------------------


class DynamicsTransformer(nn.Module):
    """Predicts the flow-matching velocity of latent frames, causally, from a constant-size cache."""

    def __init__(self, config: WorldModelConfig) -> None:
        super().__init__()
        self.config = config
        d, C = config.width, config.token_channels
        self.x_embedder = nn.Linear(C, d)
        # prev_frame_input: the direct path from the last frame. Every token of frame t reads the clean latent of
        # frame t-1 at its position, the rays of frame t's camera seen from frame t-1's camera (where each pixel
        # comes from) and the action, not only through the recurrent memory and a global modulation.
        self.prev_embedder = self.ray_embedder = self.action_input = None
        if config.prev_frame_input:
            self.prev_embedder = nn.Linear(C, d)
            self.action_input = nn.Linear(config.action_dim, d)
            if config.camera:
                self.ray_embedder = nn.Linear(6 * config.frames_per_latent, d)
        self.pos_embed = nn.Parameter(torch.randn(config.tokens_per_frame, d) * 0.02)
        self.t_embedder = TimestepEmbedder(d)
        self.action_embedder = nn.Sequential(nn.Linear(config.action_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.null_action = nn.Parameter(torch.zeros(d))
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.plucker_embedder = None
        if config.camera:
            self.plucker_embedder = nn.Linear(6 * config.frames_per_latent, d)
            nn.init.zeros_(self.plucker_embedder.weight)
            nn.init.zeros_(self.plucker_embedder.bias)
        self.y_embedder = nn.Sequential(nn.Linear(config.text_width, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        self.attention_y_norm = RMSNorm(d, eps=1e-5)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.depth))
        self.final_layer = FinalLayer(d, C)

    def token_input(self, prev: torch.Tensor | None, rel_rays: torch.Tensor | None, action: torch.Tensor,
                    action_known: torch.Tensor) -> torch.Tensor | None:
        """The input of each token that does not depend on its noisy latent (``prev_frame_input``; else None).

        Args:
            prev: ``[B, T, S, C]`` the previous latent frame's tokens (zeros before the first frame).
            rel_rays: ``[B, T, S, 6k]`` Plücker rays of frame t's poses in frame t-1's camera, or None.
            action, action_known: as in :meth:`forward`.

        Returns:
            ``[B, T, S, d]`` or None.
        """
        if self.prev_embedder is None:
            return None
        if prev is None:
            raise TypeError("DynamicsTransformer with prev_frame_input needs prev (the previous latent frame's tokens)")
        act = torch.where(action_known[..., None], self.action_input(action), 0.0)  # (B, T, d)
        out = self.prev_embedder(prev) + act[:, :, None]
        if self.ray_embedder is not None and rel_rays is not None:
            out = out + self.ray_embedder(rel_rays)
        return out

    def text_kv(self, tokens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Prompt tokens ``[B, L, text_width]`` → per block cross-attention ``(k, v)`` (cache once per episode)."""
        y = self.attention_y_norm(self.y_embedder(tokens))  # (B, L, d)
        return [blk.cross_attn.text_kv(y) for blk in self.blocks]

    def empty_cache(self, batch_size: int, device: torch.device | str = "cpu") -> list[Cache]:
        """The streaming state before any frame (fp32 zeros; softmax slots marked empty)."""
        cfg, S, D = self.config, self.config.tokens_per_frame, self.config.head_dim
        nh = cfg.num_heads * (2 if cfg.camera_branch else 1)
        caches = []
        for blk in self.blocks:
            c: Cache = {}
            if blk.attn.kind == "gdn":
                c["S"] = torch.zeros(batch_size, nh, D, D + 1, device=device)
                if cfg.conv_k_size > 1:
                    c["conv"] = torch.zeros(batch_size, cfg.conv_k_size - 1, S, nh * D, device=device)
            else:
                c.update(blk.attn.empty_cache(batch_size, S, device, nh))
            if cfg.ffn_temporal_kernel > 1:
                c["ffn"] = torch.zeros(batch_size, cfg.ffn_temporal_kernel - 1, S, cfg.width, device=device)
            caches.append(c)
        return caches

    def forward(
        self,
        x: torch.Tensor,
        tau: torch.Tensor,
        *,
        start: torch.Tensor | None = None,
        action: torch.Tensor | None = None,
        action_known: torch.Tensor | None = None,
        rays: torch.Tensor | None = None,
        text: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        text_mask: torch.Tensor | None = None,
        cache: list[Cache] | None = None,
        frame: FrameContext | None = None,
        commit: bool = True,
        prev: torch.Tensor | None = None,
        rel_rays: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[Cache] | None]:
        """Velocity of ``T`` new latent frames given the cache of the frames before them.

        Args:
            x: noisy latent tokens ``[B, T, S, C]`` at noise levels ``tau [B, T]``.
            start: ``[B]`` int64 absolute index of the first new frame (frames already in ``cache``).
            action: ``[B, T, A]`` float, row t = the action that led to frame t; ``action_known [B, T]``
                bool (False → the learned null action: first frame, unknown actions).
            rays: ``[B, T, S, 6k]`` Plücker rays of the frames' raw poses (camera worlds) or None.
            text: per block ``(k, v)`` from :meth:`text_kv`; ``text_mask [B, L]`` bool.
            cache: per block state (:meth:`empty_cache` layout) or None for an empty one.
            frame, commit: instead of the inputs above, one new frame (``T = 1``) against the context of
                :meth:`prepare_frame` (same numbers, less work per denoise pass); the new cache only when ``commit``.
            prev, rel_rays: with ``prev_frame_input``, see :meth:`token_input`.

        Returns:
            ``(output [B, T, S, C] (the velocity, or the x0 correction for ``prediction="x0_residual"``), features [B, T, d] (token mean of the last hidden state, for the
            heads), new cache after these frames)``; with ``frame`` and ``commit=False`` features and cache are None.
        """
        if frame is None:
            if start is None or action is None or action_known is None or text is None or text_mask is None:
                raise TypeError("DynamicsTransformer.forward needs start, action, action_known, text and text_mask "
                                "(or frame= from prepare_frame)")
            frame = self._context(start=start, action=action, action_known=action_known, rays=rays, text=text,
                                  text_mask=text_mask, cache=cache, prev=prev, rel_rays=rel_rays)
        return self.forward_frame(x, tau, frame, commit=commit)

    def _context(self, *, start: torch.Tensor, action: torch.Tensor, action_known: torch.Tensor,
                 rays: torch.Tensor | None, text: list[tuple[torch.Tensor, torch.Tensor]], text_mask: torch.Tensor,
                 cache: list[Cache] | None, prev: torch.Tensor | None, rel_rays: torch.Tensor | None) -> FrameContext:
        """The inputs of :meth:`forward` that do not depend on the noisy frames, embedded (blocks: the raw caches)."""
        cond = torch.where(action_known[..., None], self.action_embedder(action), self.null_action)  # (B, T, d)
        plucker = self.plucker_embedder(rays) if self.plucker_embedder is not None else None  # (B, T, S, d)
        extra = self.token_input(prev, rel_rays, action, action_known)  # (B, T, S, d) or None
        return FrameContext(start=start, cond=cond, plucker=plucker,
                            token_input=[self.pos_embed] if extra is None else [self.pos_embed, extra],
                            blocks=[None] * len(self.blocks) if cache is None else list(cache), text=text,
                            text_mask=text_mask)

    # --- streaming ---------------------------------------------------------------------------------------------
    # Generating one latent frame runs the network `denoise_steps` times on the same frame against the same
    # cache; only the noisy input and the noise level change. `prepare_frame` computes what does not depend on
    # them once per frame (action and Plücker embeddings and their per-block projections, the key conv's taps
    # over past frames, the attention bias against the cache); `forward_frame` runs the passes (the same code as
    # `forward`) and builds the new cache only in the pass that commits.

    def prepare_frame(
        self,
        *,
        start: torch.Tensor,
        action: torch.Tensor,
        action_known: torch.Tensor,
        rays: torch.Tensor | None,
        text: list[tuple[torch.Tensor, torch.Tensor]],
        text_mask: torch.Tensor,
        cache: list[Cache],
        prev: torch.Tensor | None = None,
        rel_rays: torch.Tensor | None = None,
    ) -> FrameContext:
        """The shared part of every pass over the next frame (arguments as :meth:`forward` with ``T = 1``)."""
        device_type = action.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else torch.float32
        ctx = self._context(start=start, action=action, action_known=action_known, rays=rays, text=text,
                            text_mask=text_mask, cache=cache, prev=prev, rel_rays=rel_rays)
        ctx.blocks = [blk.prepare_frame(c, plucker=ctx.plucker, start=start, dtype=dtype)
                      for blk, c in zip(self.blocks, cache)]
        if bool((text_mask.sum(dim=1) == 1).all()):  # no prompt: the cross-attention is a constant per frame
            for blk, blk_ctx, (_, v) in zip(self.blocks, ctx.blocks, text):
                blk_ctx["cross"] = blk.cross_attn.single_key_output(v, text_mask)
        if len(ctx.token_input) == 2:  # one addition per pass instead of two
            ctx.token_input = [ctx.token_input[1] + self.pos_embed]
        return ctx

    def forward_frame(self, x: torch.Tensor, tau: torch.Tensor, ctx: FrameContext, *, commit: bool
                      ) -> tuple[torch.Tensor, torch.Tensor | None, list[Cache] | None]:
        """:meth:`forward` of ``x [B, T, S, C]`` at ``tau [B, T]`` against ``ctx`` (:meth:`prepare_frame`'s for one
        streaming frame, or the one :meth:`forward` builds).

        Returns:
            ``(output [B, T, S, C], features [B, T, d] or None, new cache or None)``: features and the new
            cache only when ``commit`` (the pass whose state update is kept).
        """
        c = self.t_embedder(tau) + ctx.cond  # (B, T, d)
        t6 = self.t_block(c).unflatten(-1, (6, -1))  # (B, T, 6, d)
        h = self.x_embedder(x)  # (B, T, S, d)
        for term in ctx.token_input:  # the position embedding, then the direct path (prepare_frame: summed once)
            h = h + term
        new_cache = []
        for blk, blk_ctx, text in zip(self.blocks, ctx.blocks, ctx.text):
            h, blk_cache = blk(h, t6, plucker=ctx.plucker, text=text, text_mask=ctx.text_mask, cache=blk_ctx,
                               start=ctx.start, commit=commit)
            new_cache.append(blk_cache)
        out = self.final_layer(h, c)
        return (out, h.mean(dim=2), new_cache) if commit else (out, None, None)
