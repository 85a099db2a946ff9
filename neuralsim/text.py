"""Prompt encoding: a small offline text encoder behind a pluggable interface.

SANA-WM conditions on Gemma-2-2B tokens (2304 wide, 300 tokens). neuralsim's native model must run
offline on a CPU, so it ships :class:`HashTextEncoder`: a word-hash tokenizer (no vocabulary file,
stable across machines), an embedding and a tiny pre-norm transformer, trained jointly with the
dynamics. Anything implementing :class:`TextEncoder` (``encode(list[str]) -> (tokens, mask)``) can
be plugged into ``WorldModel(config, text_encoder=...)`` instead, e.g. a frozen pretrained encoder.

Prompt rules (:func:`validate_prompts`): a prompt must be a ``str`` (``bytes`` → ``TypeError``), not
empty or blank (``ValueError``), at most :data:`MAX_PROMPT_BYTES` bytes of UTF-8 (``ValueError``),
encodable as UTF-8 (a lone surrogate → ``ValueError``).
Control characters (Unicode category ``Cc``: newlines, tabs, NUL, escapes) are replaced by spaces.
Prompts longer than ``max_tokens`` tokens are truncated.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Protocol, Sequence, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Longest accepted prompt, in bytes of UTF-8.
MAX_PROMPT_BYTES = 4096

PAD_ID = 0
START_ID = 1
_WORD_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@runtime_checkable
class TextEncoder(Protocol):
    """What the world model needs from a prompt encoder."""

    width: int  # token width handed to the dynamics
    max_tokens: int  # L

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``prompts`` (validated) -> ``(tokens [B, L, width] float, mask [B, L] bool)``, True = real token."""
        ...


def clean_prompt(prompt: str) -> str:
    """Replace control characters by spaces (see module docstring)."""
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in prompt)


def validate_prompts(prompt: str | Sequence[str | None] | None, batch_size: int | None = None,
                     name: str = "prompt") -> list[str | None] | None:
    """Check prompts and broadcast a single one over the batch.

    Args:
        prompt: ``None`` (no prompt), a ``str`` (shared by all rows) or one ``str``/``None`` per row.
        batch_size: expected number of rows, if known.
        name: argument name used in error messages.

    Returns:
        ``None`` or a list of cleaned prompts (``None`` entries = no prompt for that row).

    Raises:
        TypeError: a prompt is not a ``str`` (``bytes`` included).
        ValueError: empty/blank prompt, a prompt over :data:`MAX_PROMPT_BYTES`, a lone surrogate (not UTF-8), or a
            list of the wrong length.
    """
    if prompt is None:
        return None
    if isinstance(prompt, str):
        prompts: list = [prompt] * (batch_size or 1)
    elif isinstance(prompt, (bytes, bytearray)):
        raise TypeError(f"{name} must be a str, got {type(prompt).__name__}; decode it first (e.g. .decode('utf-8'))")
    elif isinstance(prompt, Sequence):
        prompts = list(prompt)
        if batch_size is not None and len(prompts) != batch_size:
            raise ValueError(f"{name} has {len(prompts)} prompts but the batch has {batch_size} rows; "
                             "expected one str for all rows or one per row")
    else:
        raise TypeError(f"{name} must be a str or a list of str, got {type(prompt).__name__}")
    out: list[str | None] = []
    for i, p in enumerate(prompts):
        where = f"{name}[{i}]" if not isinstance(prompt, str) else name
        if p is None:
            out.append(None)
            continue
        if not isinstance(p, str):
            raise TypeError(f"{where} must be a str, got {type(p).__name__}")
        try:
            size = len(p.encode("utf-8"))
        except UnicodeEncodeError as exc:  # lone surrogates, e.g. from bytes.decode(errors="surrogateescape")
            raise ValueError(f"{where} is not valid UTF-8 text: {p[exc.start:exc.end]!r} at index {exc.start} is a "
                             "lone surrogate; decode the bytes with errors='replace' first") from None
        if size > MAX_PROMPT_BYTES:
            raise ValueError(f"{where} is {size} bytes of UTF-8; the limit is MAX_PROMPT_BYTES={MAX_PROMPT_BYTES}")
        p = clean_prompt(p)
        if not p.strip():
            raise ValueError(f"{where} is empty or blank; expected a non-empty description (or None for no prompt)")
        out.append(p)
    return out


def hash_tokenize(prompts: list[str], *, vocab: int, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Word-hash tokenizer: lower-cased words and punctuation, each hashed (BLAKE2b) into ``[2, vocab)``.

    Every prompt starts with ``START_ID``; padding is ``PAD_ID``; prompts over ``max_tokens`` are truncated.

    Returns:
        ``(ids [B, L] int64, mask [B, L] bool)`` with ``L = max_tokens``.
    """
    ids = torch.zeros(len(prompts), max_tokens, dtype=torch.long)
    for i, prompt in enumerate(prompts):
        row = [START_ID]
        for word in _WORD_RE.findall(prompt.lower()):
            digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
            row.append(2 + int.from_bytes(digest, "little") % (vocab - 2))
        row = row[:max_tokens]
        ids[i, : len(row)] = torch.tensor(row)
    return ids, ids != PAD_ID


class _EncoderLayer(nn.Module):
    """Pre-norm transformer layer (self-attention over prompt tokens + MLP)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3x (B, nh, L, hd)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # (B, nh, L, hd)
        x = x + self.proj(attn.transpose(1, 2).reshape(B, L, D))
        return x + self.mlp(self.norm2(x))


class HashTextEncoder(nn.Module):
    """The built-in offline prompt encoder (see module docstring); implements :class:`TextEncoder`."""

    def __init__(self, *, width: int, max_tokens: int, vocab: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.width, self.max_tokens, self.vocab = width, max_tokens, vocab
        heads = hidden // 32 if hidden % 32 == 0 else 1
        self.embed = nn.Embedding(vocab, hidden)
        self.pos = nn.Parameter(torch.randn(max_tokens, hidden) * 0.02)
        self.layers = nn.ModuleList(_EncoderLayer(hidden, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, width)

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.pos.device
        ids, mask = hash_tokenize(prompts, vocab=self.vocab, max_tokens=self.max_tokens)
        ids, mask = ids.to(device), mask.to(device)
        x = self.embed(ids) + self.pos  # (B, L, hidden)
        for layer in self.layers:
            x = layer(x, mask)
        return self.out(self.norm(x)), mask
